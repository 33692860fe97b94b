"""Conditioned token policies ``w -> pi_theta(w)`` on a tree (THEORY.md sections 3, 4, P10).

Each policy is an ``nn.Module`` whose ``forward(w)`` takes weightings ``[K, m]``
and returns normalised log-probabilities by depth, ``[K, V^t, V]`` for
t = 0..T-1 (the layout of ``theory.tree``). All prefixes of all depths are
handled at once as ``N = sum_t V^t`` rows, ordered by depth then index.

- ``LinearCLP``: tabular logits ``theta_0 + sum_i w_i theta_i`` (logits linear in w);
  at its zero-shot initialisation it is per-token zero-shot mixing.
- ``MixedNet``: nonlinear CLP; a prefix's one-hot input goes through a hidden
  layer whose weight matrix is mixed, ``W(w) = sum_i w_i W_i``, then tanh.
- ``InputNet``: the same network with ``w`` as an extra input.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from theory import tree as tr
from theory.instances import Tree


def _split_by_depth(rows: torch.Tensor, V: int, T: int) -> list:
    """``[K, N, V]`` -> list by depth of ``[K, V^t, V]``."""
    return list(torch.split(rows, [V ** t for t in range(T)], dim=1))


def _all_prefix_ref_logp(tree: Tree) -> torch.Tensor:
    return torch.as_tensor(np.concatenate(tree.ref_logp), dtype=torch.float64)  # (N, V)


class LinearCLP(nn.Module):
    """Linear CLP: ``logits(s, w) = theta_0(s) + sum_i w_i theta_i(s)`` (tabular, section 4).

    ``init="zero_shot"``: ``theta_0 = 0``, ``theta_i = log pi*_{e_i}``, which makes the
    policy the per-token zero-shot mixture for every w (theory.tree.zero_shot_token_policy).
    ``init="random"``: that point plus normal noise of size ``noise`` (seeded by ``generator``).
    """

    def __init__(self, tree: Tree, beta: float, init: str = "zero_shot", noise: float = 1.0,
                 generator: torch.Generator | None = None):
        super().__init__()
        if init not in ("zero_shot", "random"):
            raise ValueError(f"init: must be 'zero_shot' or 'random', got {init!r}")
        self.V, self.T = tree.vocab, tree.horizon
        experts = tr.per_reward_token_policies(tree, beta)  # T arrays (m, V^t, V)
        thetas = torch.as_tensor(np.concatenate(experts, axis=1), dtype=torch.float64)  # (m, N, V)
        theta_0 = torch.zeros(thetas.shape[1:], dtype=torch.float64)  # (N, V)
        if init == "random":
            thetas = thetas + noise * torch.randn(thetas.shape, generator=generator, dtype=torch.float64)
            theta_0 = theta_0 + noise * torch.randn(theta_0.shape, generator=generator, dtype=torch.float64)
        self.theta_0 = nn.Parameter(theta_0)
        self.thetas = nn.Parameter(thetas)

    def forward(self, w: torch.Tensor) -> list:
        # parameter mixing theta(w) = sum_i w_i theta_i (torch twin of theory.mixing.mix_parameters)
        logits = self.theta_0 + torch.einsum("km,mnv->knv", w, self.thetas)  # (K, N, V)
        return _split_by_depth(torch.log_softmax(logits, dim=-1), self.V, self.T)


class _PrefixNet(nn.Module):
    """Shared part of the two networks: ``logits = log pi_ref(s) + U^T tanh(h(s, w)) + b(s)``.

    Starting from ``log pi_ref`` makes a network with ``U = 0`` the reference policy,
    and keeps beta-scaled logits within reach of a small hidden layer.
    """

    def __init__(self, tree: Tree, hidden: int, generator: torch.Generator | None):
        super().__init__()
        self.V, self.T = tree.vocab, tree.horizon
        self.register_buffer("ref_logp", _all_prefix_ref_logp(tree))  # (N, V)
        N = self.ref_logp.shape[0]
        self.U = nn.Parameter(torch.randn(hidden, self.V, generator=generator, dtype=torch.float64)
                              / np.sqrt(hidden))
        self.b = nn.Parameter(torch.zeros(N, self.V, dtype=torch.float64))

    def pre_activation(self, w: torch.Tensor) -> torch.Tensor:  # (K, N, H)
        raise NotImplementedError

    def forward(self, w: torch.Tensor) -> list:
        h = torch.tanh(self.pre_activation(w))  # (K, N, H)
        logits = self.ref_logp + h @ self.U + self.b  # (K, N, V)
        return _split_by_depth(torch.log_softmax(logits, dim=-1), self.V, self.T)


class MixedNet(_PrefixNet):
    """Nonlinear CLP: hidden weights mixed by w, ``h(s, w) = sum_i w_i W_i[s] + c`` (P10, section 4).

    The policy is a nonlinear function of the mixed parameters, so its logits are
    nonlinear in w while the conditioning itself stays parameter-space.
    """

    def __init__(self, tree: Tree, hidden: int = 16, scale: float = 1.0,
                 generator: torch.Generator | None = None):
        super().__init__(tree, hidden, generator)
        N, m = self.ref_logp.shape[0], tree.m
        self.W = nn.Parameter(scale * torch.randn(m, N, hidden, generator=generator, dtype=torch.float64))
        self.c = nn.Parameter(torch.zeros(hidden, dtype=torch.float64))

    def pre_activation(self, w: torch.Tensor) -> torch.Tensor:
        return torch.einsum("km,mnh->knh", w, self.W) + self.c  # (K, N, H)


class InputNet(_PrefixNet):
    """Input conditioning ("prompting"): ``h(s, w) = E[s] + A^T w + c``, w fed as an input (section 4)."""

    def __init__(self, tree: Tree, hidden: int = 16, scale: float = 1.0,
                 generator: torch.Generator | None = None):
        super().__init__(tree, hidden, generator)
        N, m = self.ref_logp.shape[0], tree.m
        self.E = nn.Parameter(scale * torch.randn(N, hidden, generator=generator, dtype=torch.float64))
        self.A = nn.Parameter(scale * torch.randn(m, hidden, generator=generator, dtype=torch.float64))
        self.c = nn.Parameter(torch.zeros(hidden, dtype=torch.float64))

    def pre_activation(self, w: torch.Tensor) -> torch.Tensor:
        return self.E[None] + (w @ self.A)[:, None, :] + self.c  # (K, N, H)


class Expert(nn.Module):
    """A per-reward expert: tabular logits ``log pi_ref(s) + theta(s)``, ``theta = 0`` at the start (P11).

    It ignores ``w`` (it is trained at one vertex ``e_i``); started at pi_ref, trained on
    its own samples, its conditionals move only where it goes (THEORY.md P11).
    """

    def __init__(self, tree: Tree):
        super().__init__()
        self.V, self.T = tree.vocab, tree.horizon
        self.register_buffer("ref_logp", _all_prefix_ref_logp(tree))  # (N, V)
        self.theta = nn.Parameter(torch.zeros_like(self.ref_logp))

    def forward(self, w: torch.Tensor) -> list:
        logits = (self.ref_logp + self.theta).expand(w.shape[0], -1, -1)  # (K, N, V)
        return _split_by_depth(torch.log_softmax(logits, dim=-1), self.V, self.T)


class Oracle(nn.Module):
    """The per-weighting optimum ``pi*_w`` (P5), computed by theory; it has no parameters."""

    def __init__(self, tree: Tree, beta: float):
        super().__init__()
        self.tree, self.beta = tree, beta

    def forward(self, w: torch.Tensor) -> list:
        log_star = tr.optimal_token_policy(self.tree, w.detach().numpy(), self.beta)
        return [torch.as_tensor(lp, dtype=torch.float64) for lp in log_star]


def make_policy(kind: str, tree: Tree, beta: float, seed: int = 0, hidden: int = 16) -> nn.Module:
    """Build a conditioned policy by name: ``zero_shot`` / ``linear`` (zero-shot init),
    ``linear_random``, ``mixed_net``, ``input_net``, ``oracle``."""
    g = torch.Generator().manual_seed(seed)
    if kind in ("zero_shot", "linear"):
        return LinearCLP(tree, beta)
    if kind == "linear_random":
        return LinearCLP(tree, beta, init="random", generator=g)
    if kind == "mixed_net":
        return MixedNet(tree, hidden, generator=g)
    if kind == "input_net":
        return InputNet(tree, hidden, generator=g)
    if kind == "oracle":
        return Oracle(tree, beta)
    raise ValueError(f"policy: unknown kind {kind!r} (zero_shot, linear, linear_random, mixed_net, "
                     f"input_net, oracle)")
