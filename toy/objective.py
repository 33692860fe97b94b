"""Exact multi-task objective ``E_{w~D}[J_w(pi_theta(w))]`` on an enumerable tree, in PyTorch.

    J_w(pi) = w . R(pi) - beta KL_seq(pi || pi_ref)          (THEORY.md section 0)

This mirrors ``theory.tree.sequence_stats`` (numpy) in torch so that autograd
gives exact gradients; tests check the two routes agree. The expectation over
``D`` is an average over a given stack of weightings ``w`` ``[K, m]`` (a sample
from ``D`` drawn once by the caller), so the training objective is deterministic.
"""
from __future__ import annotations

import numpy as np
import torch

from theory import tree as tr
from theory.instances import Tree


class TreeTensors:
    """The constants of a tree as float64 tensors: leaf rewards and reference sequence log-probs."""

    def __init__(self, tree: Tree):
        self.tree = tree
        self.rewards = torch.as_tensor(tree.rewards, dtype=torch.float64)  # (V^T, m)
        log_ref = tr.leaf_log_probs(tree, tr.reference_token_policy(tree))  # (1, V^T)
        self.log_ref = torch.as_tensor(log_ref, dtype=torch.float64)
        self.ref_logp = [torch.as_tensor(lp, dtype=torch.float64) for lp in tree.ref_logp]  # [V^t, V]


def leaf_log_probs(log_pi: list) -> torch.Tensor:
    """Sequence log-probabilities ``[K, V^T]`` of a token policy given by depth as ``[K, V^t, V]``."""
    K = log_pi[0].shape[0]
    log_p = torch.zeros(K, 1, dtype=log_pi[0].dtype)
    for lp in log_pi:
        log_p = (log_p[:, :, None] + lp).reshape(K, -1)  # (K, V^t, V) -> (K, V^(t+1))
    return log_p


def sequence_objective(tt: TreeTensors, log_pi: list, w: torch.Tensor, beta: float) -> dict:
    """Exact ``R`` ``[K, m]``, ``KL`` ``[K]`` and ``J_w`` ``[K]`` of token policies ``log_pi`` (differentiable)."""
    log_p = leaf_log_probs(log_pi)  # (K, V^T)
    p = log_p.exp()
    R = p @ tt.rewards  # (K, m)
    kl = (p * (log_p - tt.log_ref)).sum(dim=1)  # log_p is finite (log_softmax), so no 0 log 0 case
    return {"rewards": R, "kl": kl, "objective": (w * R).sum(dim=1) - beta * kl}


def multitask_objective(tt: TreeTensors, policy, w: torch.Tensor, beta: float) -> torch.Tensor:
    """Section 4: the average of ``J_w(pi_theta(w))`` over the weightings ``w`` ``[K, m]`` (a scalar)."""
    return sequence_objective(tt, policy(w), w, beta)["objective"].mean()


def prefix_values(tt: TreeTensors, log_pi: list, w: torch.Tensor, beta: float) -> list:
    """The objective from every prefix, ``v(s) = E_pi[ w.r - beta sum_{t' >= t} log(pi/pi_ref) | s ]``, by depth ``[K, V^t]``.

        v(leaf) = w.r,   v(s) = sum_a pi(a|s) [ v(sa) - beta log(pi(a|s) / pi_ref(a|s)) ]

    ``v(root) = J_w(pi)`` (section 0). For every s the maximiser of ``v(s)`` over the
    subtree is pi*_w there (P5), so averaging ``v`` over any prefix distribution keeps
    pi*_w as the maximiser while giving every prefix with weight > 0 a gradient.
    """
    K, V = w.shape[0], tt.tree.vocab
    v = w @ tt.rewards.T  # (K, V^T)
    values = [v]
    for t in reversed(range(len(log_pi))):
        lp = log_pi[t]  # (K, V^t, V)
        v = (lp.exp() * (v.reshape(K, -1, V) - beta * (lp - tt.ref_logp[t]))).sum(dim=-1)  # (K, V^t)
        values.insert(0, v)
    return values


def prefix_averaged_objective(tt: TreeTensors, policy, w: torch.Tensor, beta: float, mu: list) -> torch.Tensor:
    """``mean_k sum_{t<T} sum_s mu_t(s) v_{w_k}(s)`` for prefix weights ``mu`` by depth ``[V^t]`` (a scalar).

    The remedy of P11: experts trained on this objective are trained at every prefix
    ``mu`` covers, not only where they go themselves.
    """
    values = prefix_values(tt, policy(w), w, beta)
    return sum((values[t] * mu[t]).sum(dim=1) for t in range(len(mu))).mean()


def policy_log_probs(policy, w: np.ndarray) -> list:
    """Evaluate a conditioned policy at weightings ``w`` ``[K, m]``: numpy log-probs by depth ``[K, V^t, V]``."""
    with torch.no_grad():
        return [lp.numpy() for lp in policy(torch.as_tensor(w, dtype=torch.float64))]
