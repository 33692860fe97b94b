"""Which conditioned families contain the non-linear optimum (THEORY.md section 7, consequence for CLP).

The optimum is Gibbs at ``g = grad U`` with ``|g|_1`` in general not 1: it is the
simplex weighting ``g / |g|_1`` at KL weight ``beta / |g|_1``, a member of the
``(w, beta)``-conditioned family but in general not of the family ``{pi*_w : w in
Delta_m}`` at the fixed ``beta``. Two measures of the gap:

- ``fixed_beta_residual``: an exact linear-algebra certificate. ``pi`` is ``pi*_w``
  at ``beta`` iff ``log pi - log pi_ref = w.r / beta + c`` for some ``w`` with
  ``sum w = 1`` and a constant ``c``; the least-squares residual of that affine fit
  (over responses) is 0 iff some ``w`` in the affine hull of the simplex works, so a
  positive residual excludes the whole simplex family.
- ``best_fixed_beta_weighting``: the best ``w`` in the simplex at the fixed ``beta``
  under U and its objective (m = 2: a grid, then Brent's method on the best bracket).
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

from theory.utility_problem import gibbs_rows, row_values, sequence_view


def fixed_beta_residual(log_pi: np.ndarray, log_ref: np.ndarray, r: np.ndarray, beta: float) -> float:
    """RMS residual of ``log pi - log pi_ref = w.r / beta + c`` with ``sum w = 1`` (one context: ``[Y]``, ``[Y, m]``).

    Unknowns ``w_1 .. w_{m-1}`` and ``c`` (``w_m = 1 - sum of the others``); 0 iff ``pi`` is
    ``pi*_w`` at ``beta`` for some ``w`` in the simplex's affine hull.
    """
    y = log_pi - log_ref - r[:, -1] / beta  # (Y,): moves w_m = 1 - sum_i<m w_i to the left
    design = np.column_stack([(r[:, :-1] - r[:, -1:]) / beta, np.ones(len(y))])  # (Y, m)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    return float(np.sqrt(np.mean((design @ coef - y) ** 2)))


def fixed_beta_objective(instance, utility, w: np.ndarray, beta: float) -> float:
    """``E_rho[U(R(pi*_w)) - beta KL(pi*_w)]`` of the Gibbs policy at ``w [m]`` (same ``w`` in every context)."""
    rho, log_ref, r = sequence_view(instance)
    g = np.broadcast_to(w, (len(rho), len(w)))
    return float(rho @ row_values(log_ref, r, gibbs_rows(log_ref, r, g, beta), utility, beta)["objective"])


def best_fixed_beta_weighting(instance, utility, beta: float, points: int = 201) -> dict:
    """The best simplex weighting at the fixed ``beta`` (m = 2): ``{"w": [2], "objective": float}``.

    A grid of ``points`` values of ``w_1``, then Brent's method (xatol 1e-12) on the
    bracket around the best grid point; the better of the two is returned.
    """
    if instance.m != 2:
        raise ValueError(f"rewards: best_fixed_beta_weighting searches m = 2, got m = {instance.m}")
    grid = np.linspace(0.0, 1.0, points)
    vals = np.array([fixed_beta_objective(instance, utility, np.array([a, 1 - a]), beta) for a in grid])
    k = int(np.argmax(vals))
    lo, hi = grid[max(k - 1, 0)], grid[min(k + 1, points - 1)]
    res = minimize_scalar(lambda a: -fixed_beta_objective(instance, utility, np.array([a, 1 - a]), beta),
                          bounds=(lo, hi), method="bounded", options={"xatol": 1e-12})
    if -res.fun >= vals[k]:
        return {"w": np.array([res.x, 1 - res.x]), "objective": float(-res.fun)}
    return {"w": np.array([grid[k], 1 - grid[k]]), "objective": float(vals[k])}
