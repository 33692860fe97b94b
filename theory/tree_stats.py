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

Cost: the leaves are visited by one matrix product (``w.r``), one grouped log-sum-exp and
two exponentials (one per policy) with their products with ``r``; every other array is
``1/V`` of that or less. Leaves are laid out sibling-major (``[V, V^(T-1)]``, leaf
``s*V + a`` at ``[a, s]``), so sibling reductions run over contiguous rows instead of
a short strided axis. Weightings are taken ``block`` at a time: peak memory is about
``2 * block * V^T`` float64 (plus K-independent arrays of the tree's size).
"""
from __future__ import annotations

import numpy as np

from theory import tree as tr
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
    M, log_Z, E_C = out["M"], out["log_Z_shifted"], out["E_mix_C_shifted"]
    wR_opt = np.einsum("km,km->k", w, out["R_opt"])
    wR_mix = np.einsum("km,km->k", w, out["R_mix"])
    kl_opt, kl_mix = (wR_opt - M) / beta - log_Z, (wR_mix - M) / beta + E_C
    return {"optimal": {"rewards": out["R_opt"], "kl": kl_opt, "objective": wR_opt - beta * kl_opt},
            "logit_mix": {"rewards": out["R_mix"], "kl": kl_mix, "objective": wR_mix - beta * kl_mix},
            "kl_mix_to_opt": E_C + log_Z,
            "log_partition": log_Z + M / beta,
            "holder_gap_root": (w @ V_i[0][:, 0] - M) - beta * log_Z}


def _block_stats(tree, w, beta, r_sib, ref_sib, log_ref_prefix, V_i) -> dict:
    """Shifted by ``M = max_y w.r(y)`` before dividing by beta (log Z' = log Z - M/beta, C' = C + M/beta),
    so log-probabilities near the mode keep their digits when ``r / beta`` is large."""
    V, T = tree.vocab, tree.horizon
    K, (N, m) = len(w), r_sib.shape
    n = N // V
    q = w @ r_sib.T  # (K, V*n): w.r(sa), sibling-major
    M = q.max(axis=1)  # (K,)
    q -= M[:, None]
    q /= beta
    q = q.reshape(K, V, n)
    q += ref_sib[None]  # (K, V, n): (w.r(sa) - M)/beta + log pi_ref(a|s)
    L_last = logsumexp_rows(q)  # (K, n): (V_w(s) - M)/beta = L'_{T-1}(s), shared by both policies
    # optimum: (V_w - M)/beta up to the root
    v = L_last
    for t in reversed(range(T - 1)):
        v = logsumexp_siblings(tree.ref_logp[t][None] + v.reshape(K, V ** t, V))  # (K, V^t)
    log_Z = v[:, 0]  # log Z - M/beta
    # mixture: the prefix term C'(s_{T-1}) from the root down
    U = [None] + [(w @ V_i[t] - M[:, None]) / beta for t in range(1, T)]  # (K, V^t) for t = 1..T-1
    C = np.zeros((K, 1))
    for t in range(T):
        if t > 0:
            C = np.repeat(C, V, axis=1) + U[t]  # (K, V^t)
        L_t = L_last if t == T - 1 else logsumexp_siblings(tree.ref_logp[t][None] + U[t + 1].reshape(K, V ** t, V))
        C -= L_t
    # leaves: two exponentials, each times r
    p = np.empty_like(q)
    np.add(q, (log_ref_prefix[None] - log_Z[:, None])[:, None, :], out=p)
    R_opt = np.exp(p, out=p).reshape(K, N) @ r_sib  # (K, m)
    D_mix = log_ref_prefix[None] + C  # (K, n): log pi^mix(y) = q(y) + D_mix(parent)
    np.add(q, D_mix[:, None, :], out=p)
    R_mix = np.exp(p, out=p).reshape(K, N) @ r_sib  # (K, m)
    P_mix = np.exp(D_mix + L_last)  # (K, n): pi^mix of each prefix of length T-1
    return {"R_opt": R_opt, "R_mix": R_mix, "M": M, "log_Z_shifted": log_Z,
            "E_mix_C_shifted": np.einsum("kn,kn->k", P_mix, C)}
