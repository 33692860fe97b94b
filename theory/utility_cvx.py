"""``max_pi U(R(pi)) - beta KL(pi || pi_ref)`` by conic programming (THEORY.md section 7, the cvxpy route).

For a concave ``U`` the program is convex in the table ``pi [X, Y]`` (one row per
context; the leaves of a tree as one row): ``U`` of an affine map of ``pi`` is
concave and ``KL`` is written with ``rel_entr`` (exponential cone). As in
``theory.solver`` the objective is divided by ``beta`` so its scale does not depend
on it, and the solvers are tried in the same order with the same status checks
(Clarabel at 1e-12, ECOS, Clarabel at its defaults; the answer names which one
solved it, a RuntimeError names every status when none does). Every context's own
problem is solved (the contexts are separable), including contexts with ``rho = 0``.
"""
from __future__ import annotations

import cvxpy as cp
import numpy as np

from theory.instances import Bandit, Tree
from theory.solver import _solve
from theory.utility_problem import check_problem, sequence_view


def solve_utility_cvx(instance: Bandit | Tree, utility, beta) -> dict:
    """Section 7 by cvxpy. Returns ``{"policy": [X, Y], "rewards": [X, m], "kl": [X], "objective": [X],
    "expected_objective": float (E_rho), "status": str, "solver": str}``.

    ``policy`` is the table as the solver left it (entries may be off the simplex by
    its tolerance; nothing is clipped); ``rewards``, ``kl`` and ``objective`` are the
    solver's own values of its table.
    """
    beta = check_problem(instance, utility, beta)
    rho, log_ref, r = sequence_view(instance)
    X, Y, m = r.shape
    ref = np.exp(log_ref)  # (X, Y)
    pi = cp.Variable((X, Y), nonneg=True)
    R = [pi[x] @ r[x] for x in range(X)]  # X affine expressions [m]
    scaled = sum(utility.cvx(R[x]) for x in range(X)) / beta - cp.sum(cp.rel_entr(pi, ref))
    problem = cp.Problem(cp.Maximize(scaled), [cp.sum(pi, axis=1) == 1])
    solver = _solve(problem)
    table = pi.value  # (X, Y)
    rewards = np.stack([R[x].value for x in range(X)])  # (X, m)
    kl = np.array([float(cp.sum(cp.rel_entr(pi[x], ref[x])).value) for x in range(X)])
    objective = np.array([float(utility.cvx(R[x]).value) for x in range(X)]) - beta * kl
    return {"policy": table, "rewards": rewards, "kl": kl, "objective": objective,
            "expected_objective": float(rho @ objective), "status": problem.status, "solver": solver}


def solve_population_cvx(instance: Bandit, utility, beta) -> dict:
    """``max_pi U(E_rho R_x(pi)) - beta E_rho KL_x`` by cvxpy (the population utility; any concave U).

    Returns ``{"policy": [X, Y], "rewards": [m], "kl": float, "objective": float, "status", "solver"}``.
    """
    beta = check_problem(instance, utility, beta)
    rho, log_ref, r = sequence_view(instance)
    X, Y, m = r.shape
    ref = np.exp(log_ref)
    pi = cp.Variable((X, Y), nonneg=True)
    R = sum(rho[x] * (pi[x] @ r[x]) for x in range(X))  # affine [m]
    kl = cp.sum(rho @ cp.rel_entr(pi, ref))
    problem = cp.Problem(cp.Maximize(utility.cvx(R) / beta - kl), [cp.sum(pi, axis=1) == 1])
    solver = _solve(problem)
    return {"policy": pi.value, "rewards": R.value, "kl": float(kl.value),
            "objective": float(utility.cvx(R).value) - beta * float(kl.value), "status": problem.status,
            "solver": solver}
