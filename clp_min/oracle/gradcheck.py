"""Gradient check: does a sampled loss's expected gradient equal the exact gradient of the objective it names?

    check = gradient_check(loss_fn, policy, pi_ref, task, prompts, w, beta, n_batches=400)
    print(check.verdict)

``loss_fn(prompts [P, L], w [P, m], generator) -> scalar loss`` is any trainer's loss on one
freshly sampled batch (it samples its completions from the policy with ``generator``, or
seeds its own sampler from it). The check averages its gradient over ``n_batches``
independent batches at fixed prompts and weightings, and compares the mean
``E[g_hat]`` with the exact gradient of

    - mean_x J_{w_x}(x),   J_w(x) = sum_y pi(y|x) [w . r(x, y) - beta (log pi(y|x) - log pi_ref(y|x))]

(section 0 of THEORY.md; the sign is the loss's: a correct loss has ``E[g_hat] = g``). The
sum runs over every response of the enumerable task: the producible responses and their
decided tokens (``task.decision_mask``), or with ``fixed_length`` all ``V^T`` sequences with
every token decided (a trainer whose end-of-sequence token never occurs).

Monte Carlo error (``compare``). The ``n`` gradients are split into ``G`` groups of equal size
with means ``m_j``; with ``d_j = m_j - g``,

    U = sum_{j != k} d_j . d_k / (G (G - 1))

is an unbiased estimate of ``||E[g_hat] - g||^2`` (a U-statistic: the sampling noise of
``||mean - g||^2`` cancels), and its standard error comes from the delete-one-group
jackknife. The verdict is "unbiased within k SE" when ``U <= k SE(U)``, else the measured
relative bias ``sqrt(U) / ||g||`` with its delta-method SE. Cosine, the projection scale
``E[g_hat] . g / ||g||^2`` and the best-rescaled direction error ``min_c ||c E[g_hat] - g|| / ||g||
= sin angle`` are read from the plain mean and carry its noise (``noise``: the mean's expected
distance to its expectation, relative to ``||g||``).

Shape letters: P prompts, L prompt length, N responses, T response length, V vocabulary,
m rewards, G groups, D parameters.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from clp_min import task as tk
from clp_min.mixing import check_w
from clp_min.decoding import _pair
from clp_min.oracle.exact_pg import check_enumerable, exact_objective, producible_responses


@dataclass
class GradCheck:
    n_batches: int
    groups: int
    k: float
    cosine: float  # cos(E[g_hat], g)
    scale: float  # E[g_hat] . g / ||g||^2
    direction_error: float  # min_c ||c E[g_hat] - g|| / ||g||
    rel_bias: float  # sqrt(max(U, 0)) / ||g||
    rel_bias_se: float  # delta method, U floored at SE(U)
    bias_sq: float  # U, unbiased estimate of ||E[g_hat] - g||^2 / ||g||^2
    bias_sq_se: float  # its jackknife SE (relative to ||g||^2)
    noise: float  # sqrt(E||mean - E[g_hat]||^2) / ||g||
    unbiased: bool
    verdict: str

    def as_dict(self) -> dict:
        return asdict(self)


def check_inputs(task: tk.TaskConfig, prompts: torch.Tensor, w, beta: float) -> tuple:
    """Prompts ``[P, L]`` of content tokens, ``w`` ``[P, m]`` on the simplex, ``beta >= 0``; one-line errors."""
    check_enumerable(task)
    if not isinstance(prompts, torch.Tensor) or prompts.dim() != 2 or prompts.dtype.is_floating_point:
        raise ValueError(f"prompts: expected an integer tensor [P, L], got {getattr(prompts, 'shape', prompts)!r}")
    if prompts.size(1) != task.prompt_len:
        raise ValueError(f"prompts: {prompts.size(1)} tokens per prompt, the task's prompt_len is {task.prompt_len}")
    if prompts.numel() == 0 or prompts.min() < 1 or prompts.max() >= task.vocab:
        raise ValueError(f"prompts: tokens must be content tokens 1 .. {task.vocab - 1}")
    w = check_w(w, task.m, "w")
    if w.dim() != 2 or w.size(0) != prompts.size(0):
        raise ValueError(f"w: expected one weighting per prompt [{prompts.size(0)}, {task.m}], got {tuple(w.shape)}")
    try:
        beta = float(beta)
    except (TypeError, ValueError):
        raise ValueError(f"beta: not a number: {beta!r}") from None
    if not math.isfinite(beta) or beta < 0:
        raise ValueError(f"beta: must be finite and >= 0, got {beta!r}")
    return prompts, w, beta


def responses(task: tk.TaskConfig, fixed_length: bool = False) -> tuple:
    """Every response the sum runs over ``[N, T]`` and its decided tokens ``[N, T]`` (module doc)."""
    V, T = task.vocab, task.response_len
    if fixed_length:
        Y = tk.all_responses(task)
        return Y, torch.ones_like(Y, dtype=torch.bool)
    Y = producible_responses(V, T)
    return Y, tk.decision_mask(Y)


def response_logprobs(policy, w, prompts: torch.Tensor, Y: torch.Tensor, mask: torch.Tensor) -> tuple:
    """``log pi(y|x)`` ``[P, N]`` of every response by one full pass each (no cache, no token tree), and the
    token log-probs ``[P, N, T, V]``. ``policy(w, idx)`` conditioned (``w`` ``[B, m]``), or ``w=None`` and a plain
    ``model(idx)``."""
    P, L = prompts.shape
    N, T = Y.shape
    idx = torch.cat([prompts.repeat_interleave(N, dim=0), Y.repeat(P, 1)], dim=1)  # (P*N, L+T)
    out = policy(idx) if w is None else policy(w.repeat_interleave(N, dim=0), idx)
    logits = _pair(out)[0][:, L - 1:L + T - 1]  # (P*N, T, V): position L-1+t predicts y_t
    logp_all = F.log_softmax(logits.double(), dim=-1)
    token = logp_all.gather(-1, Y.repeat(P, 1)[..., None])[..., 0]  # (P*N, T)
    return (token * mask.repeat(P, 1)).sum(-1).view(P, N), logp_all.view(P, N, T, -1)


def batch_objective(policy, pi_ref, task: tk.TaskConfig, prompts: torch.Tensor, w, beta: float,
                    fixed_length: bool = False, ref_sees_w: bool = False) -> torch.Tensor:
    """Exact ``J_{w_x}(x)`` per prompt ``[P]``, differentiable in the policy (``exact_pg.exact_objective``).

    ``ref_sees_w``: ``pi_ref(w, idx)`` is called with the weighting (a reference that reads the same written
    prompt as the policy, as TRL's does: ``clp_min.studies.trl_e2e``); else ``pi_ref(idx)``.
    """
    prompts, w, beta = check_inputs(task, prompts, w, beta)
    Y, mask = responses(task, fixed_length)
    P, N = prompts.size(0), Y.size(0)
    logp, _ = response_logprobs(policy, w.float(), prompts, Y, mask)
    with torch.no_grad():
        logp_ref, _ = response_logprobs(pi_ref, w.float() if ref_sees_w else None, prompts, Y, mask)
        r = tk.rewards(task, prompts.repeat_interleave(N, dim=0), Y.repeat(P, 1)).view(P, N, -1)
    return exact_objective(logp, logp_ref, r, w.double(), beta)


def flat_grad(loss: torch.Tensor, params: list) -> torch.Tensor:
    """``d loss / d params`` as one float64 vector ``[D]`` (zeros for parameters the loss does not reach)."""
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1).double() for g, p in zip(grads, params)])


def exact_gradient(policy, pi_ref, task, prompts, w, beta, params=None, fixed_length=False) -> torch.Tensor:
    """``g = grad(- mean_x J_{w_x}(x))`` ``[D]`` over ``params`` (default: the policy's trainable ones)."""
    params = params if params is not None else [p for p in policy.parameters() if p.requires_grad]
    return flat_grad(-batch_objective(policy, pi_ref, task, prompts, w, beta, fixed_length).mean(), params)


def sampled_gradients(loss_fn, params, prompts, w, n_batches: int, groups: int, seed: int = 0,
                      progress=None) -> torch.Tensor:
    """Group means ``[G, D]`` of the gradients of ``n_batches`` independent batches (batch ``b``'s generator is
    seeded ``seed + b``; batch ``b`` joins group ``b % G``)."""
    if isinstance(n_batches, bool) or not isinstance(n_batches, int) or n_batches < 1:
        raise ValueError(f"n_batches: must be a positive integer, got {n_batches!r}")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 3:
        raise ValueError(f"groups: must be an integer >= 3 (the jackknife deletes one of them), got {groups!r}")
    if n_batches % groups:
        raise ValueError(f"n_batches: {n_batches} is not a multiple of groups = {groups}")
    sums = None
    for b in range(n_batches):
        g = flat_grad(loss_fn(prompts, w, torch.Generator().manual_seed(seed + b)), params)
        sums = torch.zeros(groups, g.numel(), dtype=torch.float64) if sums is None else sums
        sums[b % groups] += g
        if progress is not None:
            progress(b + 1, n_batches)
    return sums / (n_batches // groups)


def compare(group_means: torch.Tensor, g: torch.Tensor, k: float = 3.0, n_batches: int | None = None) -> GradCheck:
    """The statistics of the module doc: group means ``[G, D]`` against a target gradient ``g`` ``[D]``."""
    if not k > 0:
        raise ValueError(f"k: must be > 0, got {k!r}")
    M, g = group_means.double(), g.double()
    G = M.size(0)
    g_sq = float(g @ g)
    if not g_sq > 0 or not math.isfinite(g_sq):
        raise ValueError("g: the exact gradient is zero or not finite; nothing to compare with")
    d = M - g  # (G, D)
    gram = (d @ d.T).numpy()  # (G, G)
    row, total, diag = gram.sum(1), gram.sum(), np.trace(gram)

    def u_stat(total_, diag_, n):  # sum_{j != k} d_j . d_k / (n (n - 1))
        return (total_ - diag_) / (n * (n - 1))

    U = u_stat(total, diag, G)
    loo = u_stat(total - 2 * row + np.diag(gram), diag - np.diag(gram), G - 1)  # (G,) one group deleted
    se = math.sqrt((G - 1) / G * float(((loo - loo.mean()) ** 2).sum()))
    mean = M.mean(0)
    cos = float(mean @ g) / math.sqrt(float(mean @ mean) * g_sq) if float(mean @ mean) > 0 else 0.0
    noise = math.sqrt(float(((M - mean) ** 2).sum()) / (G - 1) / G / g_sq)
    U_rel, se_rel = U / g_sq, se / g_sq
    rel_bias = math.sqrt(max(U_rel, 0.0))
    rel_bias_se = se_rel / (2 * math.sqrt(max(U_rel, se_rel))) if se_rel > 0 else 0.0
    unbiased = U_rel <= k * se_rel + 1e-12  # 1e-12: float rounding of an exact (noise-free) estimator
    if unbiased:
        verdict = f"unbiased within {k:g} SE (relative bias < {math.sqrt(max(U_rel, 0) + k * se_rel):.3g})"
    else:
        verdict = f"biased: relative bias {rel_bias:.3g} +- {rel_bias_se:.2g} ({U_rel / se_rel:.1f} SE)" \
            if se_rel > 0 else f"biased: relative bias {rel_bias:.3g} (no sampling noise)"
    return GradCheck(n_batches or G, G, k, cos, float(mean @ g) / g_sq, math.sqrt(max(0.0, 1 - cos ** 2)),
                     rel_bias, rel_bias_se, U_rel, se_rel, noise, bool(unbiased), verdict)


def gradient_check(loss_fn, policy, pi_ref, task, prompts, w, beta, n_batches: int = 400, groups: int = 20,
                   k: float = 3.0, seed: int = 0, fixed_length: bool = False, params=None,
                   progress=None) -> GradCheck:
    """Compare ``loss_fn``'s mean gradient over ``n_batches`` sampled batches with the exact ``g`` (module doc).

    Args:
        loss_fn: ``(prompts [P, L], w [P, m], generator) -> scalar loss`` on one freshly sampled batch.
        policy: the trained policy, ``policy(w, idx) -> logits`` (conditioned; ``Unconditioned(model)`` for a
            plain one, ``clp_min.interop.hf.HFCausalLM`` for a Hugging Face model), the one ``loss_fn`` samples from.
        pi_ref: the reference, ``pi_ref(idx) -> logits``.
        prompts: ``[P, L]`` content tokens; ``w``: ``[P, m]`` one weighting per prompt; ``beta >= 0``.
        fixed_length: sum over all ``V^T`` sequences, every token decided (module doc).
    """
    prompts, w, beta = check_inputs(task, prompts, w, beta)
    params = params if params is not None else [p for p in policy.parameters() if p.requires_grad]
    g = exact_gradient(policy, pi_ref, task, prompts, w, beta, params, fixed_length)
    means = sampled_gradients(loss_fn, params, prompts, w, n_batches, groups, seed, progress)
    return compare(means, g, k, n_batches)
