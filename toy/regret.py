"""Regret of a conditioned policy against theory's exact optimum, on a grid of weightings (section 6).

Evaluated with numpy through ``theory.tree`` (not through the torch objective
used for training), so training and evaluation are independent routes.
"""
from __future__ import annotations

import numpy as np

from theory import tree as tr
from theory.instances import Tree
from theory.pareto import normalised_regret, regret


def optimal_values(tree: Tree, w: np.ndarray, beta: float) -> np.ndarray:
    """P1/P5: ``J_w(pi*_w) = V_w(root)``, ``[K]``."""
    return tr.soft_values_w(tree, w, beta)[0][:, 0]


def reference_values(tree: Tree, w: np.ndarray) -> np.ndarray:
    """``J_w(pi_ref) = w . R(pi_ref)`` (its KL is 0), ``[K]``."""
    ref = [np.broadcast_to(lp[None], (1,) + lp.shape) for lp in tree.ref_logp]
    R_ref = tr.sequence_stats(tree, ref, np.ones((1, tree.m)) / tree.m, 1.0)["rewards"]  # (1, m)
    return w @ R_ref[0]


def grid_regret(tree: Tree, log_pi: list, w: np.ndarray, beta: float) -> dict:
    """Regret and normalised regret of token policies ``log_pi`` (by depth ``[K, V^t, V]``) at ``w`` ``[K, m]``.

    Returns ``rewards [K, m]``, ``kl [K]``, ``J``, ``J_opt``, ``J_ref``, ``regret``,
    ``normalised`` (each ``[K]``), and their ``avg`` / ``worst`` over the grid.
    """
    stats = tr.sequence_stats(tree, log_pi, w, beta)
    J_opt, J_ref = optimal_values(tree, w, beta), reference_values(tree, w)
    delta = regret(J_opt, stats["objective"])
    norm = normalised_regret(J_opt, stats["objective"], J_ref)
    return {"rewards": stats["rewards"], "kl": stats["kl"], "J": stats["objective"], "J_opt": J_opt,
            "J_ref": J_ref, "regret": delta, "normalised": norm,
            "avg_regret": float(delta.mean()), "worst_regret": float(delta.max()),
            "avg_normalised": float(norm.mean()), "worst_normalised": float(norm.max())}
