"""The non-linear problem ``max_pi U(R(pi)) - beta KL(pi || pi_ref)`` seen per context (THEORY.md section 7).

A bandit is solved context by context (``R`` is the context's expected reward
vector); a tree is solved at the level of full sequences, so its rows are the
``V^T`` leaves of the single root context with the reference's sequence law
``pi_ref(y) = prod_t pi_ref(a_t | s_t)`` (theory.tree.leaf_log_probs) and ``R`` the
expected reward over full sequences. The Gibbs policy of a tree at a weighting
``g`` is the tree's soft-value optimum at weighting ``g`` (P5:
``theory.tree.optimal_token_policy`` takes any ``g``, on the simplex or not).

Shapes: X contexts (1 for a tree), Y responses (V^T leaves for a tree), m rewards.
"""
from __future__ import annotations

import numpy as np
from scipy.special import log_softmax

from theory import tree as tr
from theory.checks import check_beta
from theory.divergence import kl_nonneg
from theory.instances import Bandit, Tree
from theory.utility import check_concave


def sequence_view(instance: Bandit | Tree) -> tuple:
    """``(rho [X], log_ref [X, Y], r [X, Y, m])``: the instance as rows of full responses."""
    if isinstance(instance, Tree):
        log_ref = tr.leaf_log_probs(instance, tr.reference_token_policy(instance))  # (1, V^T)
        return np.ones(1), log_ref, instance.rewards[None]
    return instance.context_probs, instance.ref_logp, instance.rewards


def gibbs_rows(log_ref: np.ndarray, r: np.ndarray, g: np.ndarray, beta: float) -> np.ndarray:
    """Section 7 / P1 at an unnormalised weighting: ``log pi_g ∝ log pi_ref + g.r / beta``, ``[X, Y]``.

    ``g`` is ``[X, m]`` (one weighting per context; it need not lie on the simplex).
    """
    return log_softmax(log_ref + np.einsum("xym,xm->xy", r, g) / beta, axis=-1)


def row_values(log_ref, r, log_pi, utility, beta: float) -> dict:
    """Exact ``R [X, m]``, ``KL [X]`` and ``U(R) - beta KL`` ``[X]`` of row policies ``log_pi [X, Y]``.

    Outside U's domain (Nash with ``R_i <= z_i``) the objective is ``-inf``.
    """
    R = np.einsum("xy,xym->xm", np.exp(log_pi), r)
    kl = kl_nonneg(log_pi, log_ref)  # (X,), a sum of terms >= 0
    inside = utility.in_domain(R)
    with np.errstate(divide="ignore", invalid="ignore"):
        U = np.where(inside, utility.value(np.where(inside[:, None], R, _inside_point(utility, R))), -np.inf)
    return {"rewards": R, "kl": kl, "utility": U, "objective": U - beta * kl}


def _inside_point(utility, R: np.ndarray) -> np.ndarray:
    """A point inside U's domain (``z + 1``), only used to fill rows outside it before masking."""
    return np.broadcast_to(getattr(utility, "z", np.zeros(utility.m)) + 1.0, R.shape)


def check_problem(instance, utility, beta) -> float:
    """Preconditions shared by both solvers: matching m, a concave U finite at pi_ref, beta in range."""
    if utility.m != instance.m:
        raise ValueError(f"utility: built for {utility.m} rewards, the instance has m = {instance.m}")
    check_concave(utility)
    R_ref = reference_rewards(instance)  # (X, m)
    outside = ~utility.in_domain(R_ref)
    if np.any(outside):  # Nash: both solvers start from (or need) a feasible point; pi_ref is the natural one
        x = int(np.argmax(outside))
        raise ValueError(f"z: pi_ref's expected rewards {np.round(R_ref[x], 6).tolist()} in context {x} are not "
                         f"all above z = {utility.z.tolist()} (U must be finite at pi_ref: the disagreement "
                         "point lies below the reference's outcome)")
    return check_beta(beta)


def tree_token_policy(tree: Tree, g: np.ndarray, beta: float) -> list:
    """The tree's token policy at weighting ``g [m]`` (P5 with soft values at ``g.r``), by depth ``[1, V^t, V]``."""
    return tr.optimal_token_policy(tree, np.asarray(g, dtype=np.float64)[None], beta)


def simplex_form(g: np.ndarray, beta: float) -> dict:
    """Section 7: Gibbs at ``g >= 0`` is Gibbs at ``w = g / |g|_1`` with KL weight ``beta / |g|_1``.

    ``g`` is ``[X, m]``; rows with a negative entry (possible for a non-increasing U)
    have no simplex form and get NaN there (``on_simplex`` says which).
    """
    s = np.abs(g).sum(axis=-1)  # (X,)
    ok = np.all(g >= 0, axis=-1) & (s > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(ok[:, None], g / s[:, None], np.nan)
        beta_eff = np.where(ok, beta / s, np.nan)
    return {"w": w, "beta_eff": beta_eff, "g_l1": s, "on_simplex": ok}


def reference_rewards(instance: Bandit | Tree) -> np.ndarray:
    """``R(pi_ref)`` per context, ``[X, m]`` (a tree: over full sequences)."""
    _, log_ref, r = sequence_view(instance)
    return np.einsum("xy,xym->xm", np.exp(log_ref), r)
