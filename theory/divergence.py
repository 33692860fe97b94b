"""KL divergences and the Hölder gap written as sums of non-negative terms (docs/limits.md).

``KL(p || q) = sum_y p log(p/q)`` summed naively carries rounding of either sign,
and a gap ``beta * KL`` multiplies that noise by beta (1e12 turns 1e-16 into
-1e-4). Written with ``d = log q - log p`` as

    KL(p || q) = sum_y [ p (expm1(d) - d) ]  +  sum_{y: p = 0} q        (when sum p = sum q = 1)

every term is >= 0 in floating point too (``expm1(d) >= d``), so a KL, and beta
times it, is never negative. Where ``d >= 1`` the term is written ``q - p - p d``
(``p expm1(d)`` would overflow for d > 709; there ``q - p(1 + d) >= 0.26 q``,
far above rounding). The same trick gives the root Hölder gap (THEORY.md
section 3) from the sequence-level experts ``q_i = pi*_{e_i}``:

    G_w(root) = sum_i w_i V_i - V_w = -beta log sum_y prod_i q_i(y)^{w_i} = -beta log1p(-S),
    S = sum_y g(y) sum_i w_i (expm1(d_i) - d_i),  g = exp(sum_i w_i log q_i),  d_i = log q_i - log g,

by AM-GM term by term (``sum_i w_i d_i = 0``), so ``S >= 0`` and ``G >= 0``. A
sequence with ``g = 0`` contributes ``sum_i w_i q_i``. When ``S > 1/2`` (then
``Z = 1 - S <= 1/2`` is far from 1, no cancellation) ``G = -beta logsumexp(log g)``
directly, which stays finite when Z underflows.
"""
from __future__ import annotations

import numpy as np
from scipy.special import logsumexp


def kl_nonneg(log_p: np.ndarray, log_q: np.ndarray, axis: int = -1) -> np.ndarray:
    """KL(p || q) along ``axis`` as a sum of non-negative terms; ``log_p``, ``log_q`` normalised."""
    p, q = np.exp(log_p), np.exp(log_q)
    with np.errstate(invalid="ignore", over="ignore"):
        d = log_q - log_p
        small = np.where(d < 1, d, 0.0)
        terms = np.where(p > 0, np.where(d < 1, p * (np.expm1(small) - small), q - p - p * d), q)  # (..., Y)
    return terms.sum(axis=axis)


def holder_gap_nonneg(w: np.ndarray, log_q: np.ndarray, beta: float) -> np.ndarray:
    """``G_w = -beta log sum_y prod_i q_i(y)^{w_i} >= 0`` for ``w`` ``[K, m]`` and experts ``log_q`` ``[m, Y]``.

    One expert at a time, so the largest temporaries are ``[K, Y]`` (a quarter of the
    cost of the ``[K, m, Y]`` form at m = 2; theory.tree_stats calls it on 4^10 leaves).
    """
    K, Y = len(w), log_q.shape[1]
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        log_g = np.zeros((K, Y))
        for i in range(len(log_q)):  # sum_i w_i log q_i with 0 * -inf = 0
            rows = w[:, i] > 0
            if rows.all():
                log_g += w[:, i:i + 1] * log_q[i]
            elif rows.any():
                log_g[rows] += w[rows, i:i + 1] * log_q[i]
        g = np.exp(log_g)  # (K, Y)
        excess = np.zeros((K, Y))
        for i in range(len(log_q)):
            rows = w[:, i] > 0
            if not rows.any():
                continue
            d = log_q[i] - log_g  # (K, Y)
            small = np.minimum(d, 1.0)
            terms = np.expm1(small)
            terms -= small
            terms *= g  # g (e^d - 1 - d) >= 0 where d < 1
            if not (d < 1).all():
                terms = np.where(d < 1, terms, np.exp(log_q[i]) - g - g * d)
            if rows.all():
                excess += w[:, i:i + 1] * terms
            else:
                excess[rows] += w[rows, i:i + 1] * terms[rows]
        if (g > 0).all():
            S = excess.sum(axis=1)  # (K,)
        else:
            a = np.einsum("km,my->ky", w, np.exp(log_q))  # (K, Y): the arithmetic mean where g = 0
            S = np.where(g > 0, excess, a).sum(axis=1)
        near_one = -np.log1p(-S)
    return beta * np.where(S <= 0.5, near_one, -logsumexp(log_g, axis=1))


def chain_rule_kl(probs: list, log_p: list, log_q: list) -> np.ndarray:
    """KL_seq(p || q) ``[K]`` by the chain rule, ``sum_t E_{s_t ~ p} KL(p(.|s_t) || q(.|s_t))``, each term >= 0.

    ``probs`` is p's state distribution by depth (``theory.tree.prefix_probs``), ``[K, V^t]``.
    """
    return sum((probs[t] * kl_nonneg(log_p[t], log_q[t])).sum(axis=1) for t in range(len(log_p)))


def hilbert_distance(log_p: np.ndarray, log_q: np.ndarray, axis: int = -1) -> np.ndarray:
    """Hilbert's projective distance ``osc_y log(p(y)/q(y)) = max_y log(p/q) - min_y log(p/q)`` along ``axis``.

    A metric on the open simplex (THEORY.md P11). It is the one error measure of an
    expert that bounds the error of a logit mixture: ``osc(sum_i w_i e_i) <= sum_i w_i osc(e_i)``,
    while no KL between an expert and its optimum does (P11, remark). ``log_p``, ``log_q``
    finite (normalisation is irrelevant: constants cancel in the oscillation).
    """
    d = log_p - log_q
    return d.max(axis=axis) - d.min(axis=axis)
