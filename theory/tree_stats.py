"""Exact (R, KL, J) of the token-level optimum and the per-token zero-shot mixture on a tree,
in one upward pass over the leaves (THEORY.md section 3, P5 to P7).

Both policies have closed-form sequence laws, so no token policy ``[K, V^t, V]`` is built:

    optimum (P5 = P1 on sequences)   log pi*_w(y)  = log pi_ref(y) + w.r(y)/beta - log Z_w
    mixture                          log pi^mix(y) = log pi_ref(y) + w.r(y)/beta + C(s_{T-1}(y))

with ``U_t = w . V_i / beta`` at depth t (V_i the per-reward soft values), the mixture's
normaliser ``L_t(s) = log sum_a pi_ref(a|s) exp(U_{t+1}(sa))`` and the prefix term
``C(s_t) = sum_{u=1..t} U_u(s_u) - sum_{u=0..t} L_u(s_u)``: per token
``pi^mix(a|s) ∝ pi_ref(a|s) exp(sum_i w_i V_i(sa)/beta)`` (section 3), multiplied along
the path. At depth T-1, ``U_T = w.r/beta`` so ``L_{T-1} = V_w/beta``: the one grouped
log-sum-exp over all leaves is shared by both policies. Then, exactly,

    KL(pi* || pi_ref)   = w.R*/beta - log Z_w
    KL(mix || pi_ref)   = w.R^mix/beta + E_mix[C]
    KL(mix || pi*)      = E_mix[C] + log Z_w      (so gap = beta KL(mix || pi*), P7)

The KLs to pi_ref are differences of numbers of size |r|/beta and log Z, so they carry
rounding of about ``eps (|r|/beta + |log Z|)`` of either sign, and ``beta KL`` about
``beta eps |log Z|``: theory.solve.solve_tree uses this module where that is far below
its tolerances (``beta <= 1e3`` and ``|r|/beta <= 1e6``), the token route elsewhere.
Both laws have the same last-token conditionals, so KL(mix || pi*) is the KL of their
marginals over prefixes of length T-1, summed as non-negative terms (theory.divergence,
never negative in floating point); the root Hölder gap likewise (``holder_gap_nonneg``
on the experts' closed-form sequence laws, the one pass that is m times the leaves).

Cost: the leaves are visited by one matrix product (``w.r``), one grouped log-sum-exp and
two exponentials (one per policy) with their products with ``r``; every other array is
``1/V`` of that or less. Leaves are laid out sibling-major (``[V, V^(T-1)]``, leaf
``s*V + a`` at ``[a, s]``), so sibling reductions run over contiguous rows instead of
a short strided axis. Weightings are taken ``block`` at a time: peak memory is about
``2 * block * V^T`` float64 for the pass and ten ``[rows, m, V^T]`` for the root Hölder gap
(``holder_gap_nonneg``), about 0.3 GiB at 4^10 leaves (bench/theory.py measures it).
"""
from __future__ import annotations

import numpy as np

from theory import tree as tr
from theory.divergence import holder_gap_nonneg, kl_nonneg
from theory.tree import logsumexp_rows, logsumexp_siblings
from theory.instances import Tree


def _prefix_log_ref(tree: Tree) -> np.ndarray:
    """``log pi_ref(s)`` for every prefix s of length T-1, ``[V^(T-1)]``."""
    log_p = np.zeros(1)
    for t in range(tree.horizon - 1):
        log_p = (log_p[:, None] + tree.ref_logp[t]).reshape(-1)  # (V^(t+1),)
    return log_p


def optimum_and_mixture_stats(tree: Tree, w: np.ndarray, beta: float, block: int | None = None) -> dict:
    """Exact statistics of pi*_w and pi^mix_w, ``[K]`` or ``[K, m]`` each.

    Args:
        w: ``[K, m]`` weightings (checked by the caller).
        block: weightings per pass; default keeps ``block * V^T <= 2^22`` (32 MiB per array).
    Returns ``{"optimal": {rewards [K, m], kl, objective}, "logit_mix": {...}, "kl_mix_to_opt",
    "log_partition" (log Z_w = V_w(root)/beta), "holder_gap_root"}``.
    """
    V, T, (N, m) = tree.vocab, tree.horizon, tree.rewards.shape
    n = N // V  # prefixes of length T-1
    r_sib = np.ascontiguousarray(tree.rewards.reshape(n, V, m).transpose(1, 0, 2)).reshape(N, m)  # (V*n, m)
    ref_sib = np.ascontiguousarray(tree.ref_logp[T - 1].T)  # (V, n)
    log_ref_prefix = _prefix_log_ref(tree)  # (n,)
    V_i = tr.per_reward_soft_values(tree, beta)  # (m, V^t) by depth
    block = max(1, 2 ** 22 // N) if block is None else block
    parts = [_block_stats(tree, w[k:k + block], beta, r_sib, ref_sib, log_ref_prefix, V_i)
             for k in range(0, len(w), block)]
    out = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    wR_opt = np.einsum("km,km->k", w, out["R_opt"])
    wR_mix = np.einsum("km,km->k", w, out["R_mix"])
    M, log_Z, E_C = out["M"], out["log_Z_shifted"], out["E_mix_C_shifted"]
    kl_opt, kl_mix = (wR_opt - M) / beta - log_Z, (wR_mix - M) / beta + E_C
    # the experts' sequence laws log pi*_{e_i}(y) = log pi_ref(y) + (r_i(y) - V_i(root))/beta, [m, V^T]
    log_ref_leaf = (log_ref_prefix[:, None] + tree.ref_logp[T - 1]).reshape(N)
    log_q = log_ref_leaf[None] + (tree.rewards.T - V_i[0]) / beta
    rows = max(1, 2 ** 22 // (m * N))  # holder_gap_nonneg holds about ten [rows, m, V^T] arrays
    G = np.concatenate([holder_gap_nonneg(w[k:k + rows], log_q, beta) for k in range(0, len(w), rows)])
    return {"optimal": {"rewards": out["R_opt"], "kl": kl_opt, "objective": wR_opt - beta * kl_opt},
            "logit_mix": {"rewards": out["R_mix"], "kl": kl_mix, "objective": wR_mix - beta * kl_mix},
            "kl_mix_to_opt": out["kl_mix_to_opt"],
            "log_partition": out["V_w_root"] / beta,
            "holder_gap_root": G}


def _block_stats(tree, w, beta, r_sib, ref_sib, log_ref_prefix, V_i) -> dict:
    """Shifted by ``M = max_y w.r(y)`` before dividing by beta (log Z' = log Z - M/beta, C' = C + M/beta),
    so log-probabilities near the mode keep their digits when ``r / beta`` is large."""
    V, T = tree.vocab, tree.horizon
    K, (N, m) = len(w), r_sib.shape
    n = N // V
    q = w @ r_sib.T  # (K, V*n): w.r(sa), sibling-major
    M = q.max(axis=1)  # (K,)
    M = np.where(np.abs(M) > beta, M, 0.0)  # shift only where w.r/beta is large at the mode
    q -= M[:, None]
    q /= beta
    q = q.reshape(K, V, n)
    q += ref_sib[None]  # (K, V, n): (w.r(sa) - M)/beta + log pi_ref(a|s)
    L_last = logsumexp_rows(q)  # (K, n): (V_w(s) - M)/beta = L'_{T-1}(s), shared by both policies
    # optimum: (V_w - M)/beta up to the root, and V_w itself as theory.tree.soft_values computes it
    # (the same operations, so log_partition matches that route to rounding even near 0)
    v, V_w = L_last, beta * L_last + M[:, None]
    for t in reversed(range(T - 1)):
        v = logsumexp_siblings(tree.ref_logp[t][None] + v.reshape(K, V ** t, V))  # (K, V^t)
        V_w = beta * logsumexp_siblings(tree.ref_logp[t][None] + V_w.reshape(K, V ** t, V) / beta)
    log_Z = v[:, 0]  # log Z - M/beta
    # mixture: the prefix term C'(s_{T-1}) from the root down
    U = [None] + [(w @ V_i[t] - M[:, None]) / beta for t in range(1, T)]  # (K, V^t) for t = 1..T-1
    C = np.zeros((K, 1))
    for t in range(T):
        if t > 0:
            C = np.repeat(C, V, axis=1) + U[t]  # (K, V^t)
        L_t = L_last if t == T - 1 else logsumexp_siblings(tree.ref_logp[t][None] + U[t + 1].reshape(K, V ** t, V))
        C -= L_t
    # leaves: each law's log-probabilities and rewards; KL to pi_ref in closed form (module doc)
    log_p = q + (log_ref_prefix[None] - log_Z[:, None])[:, None, :]  # (K, V, n): log pi*_w(y)
    R_opt = np.exp(log_p, out=log_p).reshape(K, N) @ r_sib  # (K, m)
    D_mix = log_ref_prefix[None] + C  # (K, n): log pi^mix(y) = q(y) + D_mix(parent)
    np.add(q, D_mix[:, None, :], out=log_p)
    R_mix = np.exp(log_p, out=log_p).reshape(K, N) @ r_sib  # (K, m)
    log_P_mix = D_mix + L_last  # (K, n): log pi^mix of each prefix of length T-1
    log_P_opt = log_ref_prefix[None] - log_Z[:, None] + L_last  # (K, n): the same for pi*
    # Both laws have the same last-token conditionals (∝ exp(q)), so by the chain rule
    # KL_seq(mix || opt) is the KL of these marginals: a sum of terms >= 0 (theory.divergence).
    return {"R_opt": R_opt, "R_mix": R_mix, "M": M, "log_Z_shifted": log_Z, "V_w_root": V_w[:, 0],
            "E_mix_C_shifted": np.einsum("kn,kn->k", np.exp(log_P_mix), C),
            "kl_mix_to_opt": kl_nonneg(log_P_mix, log_P_opt)}
