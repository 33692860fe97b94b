"""A generic conic solver as an independent route to the bandit optimum (THEORY.md P1, P2).

Both problems are convex in the table ``pi[X, Y]`` and cvxpy writes the KL terms
(``rel_entr(p, q) = p log(p/q)``) with the exponential cone:

    regularised:     max_pi  E_rho[ E_pi w.r ] - beta E_rho KL(pi || pi_ref)     (P1; value beta E log Z)
    KL-constrained:  max_pi  w . R(pi)  s.t.  E_rho KL(pi || pi_ref) <= budget    (P2's cross-check)

Solvers are tried in turn and the first ``optimal`` status answers: Clarabel
(interior point) with tolerances tightened to 1e-12, then ECOS at its default
tolerances, then Clarabel at its default tolerances (1e-8; tables less accurate,
see below). The answer records which one solved it; if none reports ``optimal``
a RuntimeError names every status. The tables come back as the solver left them:
entries may be off the simplex by the solver's tolerance (nothing is clipped or
renormalised).

Contexts with ``rho(x) = 0`` do not enter either objective (any row is optimal
there); they are left out of the problem and returned as ``pi_ref``.
"""
from __future__ import annotations

import warnings

import cvxpy as cp
import numpy as np

from theory.checks import check_beta, check_weights, finite_array
from theory.instances import Bandit

# Measured on 600 random bandits (tests/theory/test_solver.py's strategies, beta from 1e-2 to 1e2): at 1e-12
# (static regularisation lowered from 1e-8 to 1e-10) Clarabel answers about 3 problems in 4 with tables
# within 1e-7 of the closed form; the rest end 'optimal_inaccurate' and ECOS at its default
# tolerances (1e-8) answers (tighter ECOS tolerances fail outright). Objectives then stay within
# ~1e-7, but the objective is flat to second order at the optimum, so tables can be off by ~1e-5
# (worst seen 8e-6). On larger problems (|Y| = 1000, small beta) ECOS can fail too; Clarabel at
# its defaults then answers (objective within ~1e-8, tables ~1e-5; bench/theory.py's instances).
CLARABEL_TOL = {"tol_gap_abs": 1e-12, "tol_gap_rel": 1e-12, "tol_feas": 1e-12, "tol_ktratio": 1e-10,
                "static_regularization_constant": 1e-10, "max_iter": 400}
ECOS_TOL = {"abstol": 1e-8, "reltol": 1e-8, "feastol": 1e-8, "max_iters": 400}
CLARABEL_DEFAULT_TOL = {"max_iter": 400}


def _one_weighting(bandit: Bandit, w) -> np.ndarray:
    W = check_weights(w, bandit.m)
    if len(W) != 1:
        raise ValueError(f"weights: one weighting [m] expected, got a stack of {len(W)}")
    return W[0]


def _solve(problem: cp.Problem) -> str:
    statuses = []
    attempts = (("CLARABEL", cp.CLARABEL, CLARABEL_TOL), ("ECOS", cp.ECOS, ECOS_TOL),
                ("CLARABEL (default tolerances)", cp.CLARABEL, CLARABEL_DEFAULT_TOL))
    for label, name, opts in attempts:
        try:
            with warnings.catch_warnings():  # "may be inaccurate": the status says so and is handled here
                warnings.simplefilter("ignore", UserWarning)
                problem.solve(solver=name, **opts)
            status = problem.status
        except cp.error.SolverError as err:
            status = f"error ({err})"
        statuses.append(f"{label}: {status}")
        if status == cp.OPTIMAL:
            return label
    raise RuntimeError("conic solvers failed: " + "; ".join(statuses))


def _table(bandit: Bandit, pi: cp.Variable, keep: np.ndarray) -> np.ndarray:
    full = np.exp(bandit.ref_logp)  # (X, Y); rows with rho = 0 stay pi_ref
    full[keep] = pi.value
    return full


def solve_regularised_cvx(bandit: Bandit, w, beta) -> dict:
    """P1 by conic programming: ``max_pi E_rho[E_pi w.r] - beta E_rho KL(pi || pi_ref)`` for one ``w`` ``[m]``.

    The objective is divided by beta so its scale does not depend on beta; ``objective``
    is reported in the original units (compare with ``beta E_rho log Z_w``).
    Returns ``{"policy": [X, Y], "objective": float, "status": str, "solver": str}``.
    """
    w, beta = _one_weighting(bandit, w), check_beta(beta)
    keep = bandit.context_probs > 0
    rho = bandit.context_probs[keep]
    ref = np.exp(bandit.ref_logp[keep])  # (X', Y)
    u = bandit.rewards[keep] @ w / beta  # (X', Y): w.r / beta
    pi = cp.Variable(ref.shape, nonneg=True)
    scaled = cp.sum(cp.multiply(rho[:, None] * u, pi)) - cp.sum(rho @ cp.rel_entr(pi, ref))
    problem = cp.Problem(cp.Maximize(scaled), [cp.sum(pi, axis=1) == 1])
    solver = _solve(problem)
    return {"policy": _table(bandit, pi, keep), "objective": beta * float(problem.value),
            "status": problem.status, "solver": solver}


def solve_kl_constrained_cvx(bandit: Bandit, w, kl_budget) -> dict:
    """P2's cross-check: ``max_pi w . R(pi)  s.t.  E_rho KL(pi || pi_ref) <= kl_budget`` for one ``w`` ``[m]``.

    Returns ``{"policy": [X, Y], "objective": float (= w . R), "status": str, "solver": str}``.
    """
    w = _one_weighting(bandit, w)
    budget = float(finite_array(kl_budget, "kl_budget", ndim=0))
    if budget < 0:
        raise ValueError(f"kl_budget: must be >= 0, got {budget!r}")
    keep = bandit.context_probs > 0
    rho = bandit.context_probs[keep]
    ref = np.exp(bandit.ref_logp[keep])  # (X', Y)
    wr = bandit.rewards[keep] @ w  # (X', Y)
    pi = cp.Variable(ref.shape, nonneg=True)
    kl = cp.sum(rho @ cp.rel_entr(pi, ref))
    problem = cp.Problem(cp.Maximize(cp.sum(cp.multiply(rho[:, None] * wr, pi))),
                         [cp.sum(pi, axis=1) == 1, kl <= budget])
    solver = _solve(problem)
    return {"policy": _table(bandit, pi, keep), "objective": float(problem.value),
            "status": problem.status, "solver": solver}
