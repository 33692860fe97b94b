"""Bounds on the Hölder gap and on the zero-shot mixing gap (THEORY.md P9).

Like ``theory.tree``, per-state bounds are lists by depth t = 0..T of arrays
``[K, V^t]`` batched over weightings ``w`` ``[K, m]``; gap bounds are ``[K]``.
"""
from __future__ import annotations

import numpy as np

from theory import tree as tr
from theory.instances import Tree


def kl_rate(osc: np.ndarray, beta: float) -> np.ndarray:
    """P9's per-step rate ``min(osc^2 / (8 beta), osc)``: bounds ``beta KL(q || p)`` for ``q ∝ p exp(g/beta)``, ``osc = osc(g)``."""
    return np.minimum(osc ** 2 / (8 * beta), osc)  # P9


def hoeffding_kl_bound(g: np.ndarray, beta: float) -> np.ndarray:
    """P9, one step: for ``q ∝ p exp(g/beta)``, ``beta KL(q || p) <= min(osc(g)^2 / (8 beta), osc(g))``.

    ``g`` is ``[..., V]`` (osc over the last axis); returns ``[...]``. The first
    term is Hoeffding's lemma (1/8 cannot be improved), the second Jensen.
    """
    return kl_rate(g.max(axis=-1) - g.min(axis=-1), beta)


def holder_gap_pairwise_bound(tree: Tree, w: np.ndarray) -> list:
    """P9: ``G_w(s) <= sum_{i<j} w_i w_j osc_s(r_i - r_j)``, by depth ``[K, V^t]``."""
    pairs, osc = tr.pairwise_oscillation(tree)  # osc[t]: (P, V^t)
    if not pairs:
        return [np.zeros((w.shape[0], tree.vocab ** t)) for t in range(tree.horizon + 1)]
    i, j = np.array(pairs).T
    coef = w[:, i] * w[:, j]  # (K, P)
    return [coef @ o for o in osc]  # P9


def holder_gap_eps_bound(tree: Tree, w: np.ndarray) -> list:
    """P9: ``G_w(s) <= (1 - |w|^2) eps(s)``, by depth ``[K, V^t]``.

    Follows from the pairwise bound: ``sum_{i<j} w_i w_j = (1 - |w|^2) / 2`` and ``osc_s <= 2 eps(s)``.
    """
    spread = 1 - np.sum(w ** 2, axis=1)  # (K,)
    return [spread[:, None] * eps[None] for eps in tr.misalignment(tree)]  # P9


def holder_gap_beta_bound(tree: Tree, w: np.ndarray, beta: float) -> list:
    """P9, m = 2, ``w = (lam, 1 - lam)``, ``D = 2 eps``: ``G_w(s) <= lam (1-lam) min(D, D^2 / (8 beta))``.

    By depth ``[K, V^t]``. The D^2/(8 beta) constant is attained as D/beta -> 0.
    """
    if tree.m != 2:
        raise ValueError(f"rewards: the beta-dependent bound needs m = 2 rewards, got {tree.m}")
    lam = w[:, 0]
    coef = (lam * (1 - lam))[:, None]  # (K, 1)
    return [coef * np.minimum(2 * eps, (2 * eps) ** 2 / (8 * beta))[None]  # P9
            for eps in tr.misalignment(tree)]


def _stepwise(tree: Tree, w: np.ndarray, beta: float, child_osc) -> np.ndarray:
    """``sum_{t <= T-2} E_{s_t ~ pi^mix} min(b(s_t)^2 / (8 beta), b(s_t))`` with ``b = child_osc(t)`` ``[K, V^t]``.

    The last step (t = T-1) contributes nothing: there the mixture equals pi*_w.
    """
    probs = tr.prefix_probs(tree, tr.zero_shot_token_policy(tree, w, beta))  # [K, V^t] by depth
    total = np.zeros(w.shape[0])
    for t in range(tree.horizon - 1):
        total += (probs[t] * kl_rate(child_osc(t), beta)).sum(axis=1)  # child_osc(t): (K, V^t)
    return total


def gap_stepwise_bound(tree: Tree, w: np.ndarray, beta: float) -> np.ndarray:
    """P9: ``Delta(w) <= sum_{t <= T-2} E_{s_t ~ pi^mix} min(osc_a G_w(s_t a)^2/(8 beta), osc_a G_w(s_t a))``, ``[K]``.

    By P6 the mixture at s_t is pi*_w tilted by ``exp(G_w(s_t a)/beta)``, so each
    term of P7's chain rule obeys ``hoeffding_kl_bound``.
    """
    G = tr.holder_gap(tree, w, beta)
    V = tree.vocab

    def osc_children(t):
        child = G[t + 1].reshape(w.shape[0], V ** t, V)  # (K, V^t, V)
        return child.max(axis=-1) - child.min(axis=-1)

    return _stepwise(tree, w, beta, osc_children)


def gap_alignment_bound(tree: Tree, w: np.ndarray, beta: float) -> np.ndarray:
    """P9, alignment as a rate: ``gap_stepwise_bound`` with ``osc_a G_w(s_t a)`` replaced by
    ``max_a (1 - |w|^2) eps(s_t a)`` (valid since ``G >= 0`` gives ``osc <= max``), ``[K]``."""
    bound = holder_gap_eps_bound(tree, w)
    V = tree.vocab

    def max_children(t):
        return bound[t + 1].reshape(w.shape[0], V ** t, V).max(axis=-1)  # (K, V^t)

    return _stepwise(tree, w, beta, max_children)
