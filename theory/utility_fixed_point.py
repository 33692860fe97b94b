"""``max_pi U(R(pi)) - beta KL`` by the fixed point ``g = grad U(R(pi_g))`` over Gibbs policies (THEORY.md section 7).

Every stationary point is ``pi_g ∝ pi_ref exp(g.r / beta)`` with ``g = grad U(R(pi_g))``.
Writing ``F(g) = g - grad U(R(pi_g))``, its Jacobian is ``I - H C`` with
``H = Hess U(R)`` (negative semidefinite for concave U) and ``C = Cov_{pi_g}(r) / beta``
(positive semidefinite, ``dR/dg``): the product ``-H C`` has real eigenvalues >= 0,
so ``I - H C`` is never singular and Newton's method on ``F`` is well posed everywhere.

- Smooth U (Nash, soft-min, quadratic): damped Newton on ``F``, started at
  ``g = grad U(R(pi_ref))`` (halved until ``R(pi_g)`` lies in U's domain); each step is halved until ``|F|^2`` decreases by
  Armijo's rule and ``R`` stays in U's domain. Converged when
  ``max|F| <= TOL (1 + max|g|)``; otherwise a RuntimeError (never a silent answer).
- Tchebycheff (supergradients only): ``g = mu * lam`` with ``mu`` in the simplex
  supported on the minimising rewards. By minimax, ``mu`` minimises the convex dual
  ``D(mu) = beta log Z(mu * lam) - sum_i mu_i lam_i z_i`` whose derivative along
  ``mu_1`` (m = 2) is ``u_1 - u_2``, ``u = lam (R(pi_g) - z)``: nondecreasing, so
  bisection is safe. For m > 2 this solver refuses (use ``solve_utility_cvx``): Newton
  and log-barrier paths on the dual over the simplex were tried and stalled near the
  simplex's faces at small beta, so no m > 2 route is offered rather than an unreliable one.
"""
from __future__ import annotations

import numpy as np

from theory.instances import Bandit, Tree
from theory.utility_problem import check_problem, gibbs_rows, row_values, sequence_view, simplex_form

TOL = 1e-11  # on max|F| relative to 1 + max|g|: a few hundred ulps of g
MAX_NEWTON = 200
ARMIJO = 1e-4
MIN_STEP = 2.0 ** -40


def _R_and_C(log_ref, r, g, beta):
    """``R [m]`` and ``C = Cov(r) / beta [m, m]`` of one context's Gibbs policy at ``g [m]``."""
    pi = np.exp(gibbs_rows(log_ref[None], r[None], g[None], beta)[0])  # (Y,)
    R = pi @ r
    d = r - R  # (Y, m)
    return R, (d * pi[:, None]).T @ d / beta


def _newton_context(log_ref, r, utility, beta, x: int) -> tuple:
    """Damped Newton on ``F(g) = g - grad U(R(pi_g))`` for one context; returns ``(g [m], iterations)``."""
    R0, _ = _R_and_C(log_ref, r, np.zeros(r.shape[-1]), beta)  # in U's domain (check_problem)

    def residual(g):
        R, C = _R_and_C(log_ref, r, g, beta)
        if not utility.in_domain(R):
            return None, None, None
        return g - utility.grad(R), R, C

    return _damped_newton(residual, utility.grad(R0), utility, f"in context {x}")


def _bisect_tchebycheff(log_ref, r, utility, beta, x: int) -> tuple:
    """Tchebycheff with m = 2: bisection on ``mu_1`` of the dual's derivative ``u_1 - u_2``."""
    lam, z = utility.lam, utility.z

    def h(mu):
        R, _ = _R_and_C(log_ref, r, lam * np.array([mu, 1 - mu]), beta)
        u = lam * (R - z)
        return u[0] - u[1]

    if h(0.0) >= 0:  # D increasing on [0, 1]: mu = 0, g = lam_2 e_2 (reward 2 is the minimum)
        return lam * np.array([0.0, 1.0]), 1
    if h(1.0) <= 0:
        return lam * np.array([1.0, 0.0]), 2
    lo, hi, it = 0.0, 1.0, 2
    while hi - lo > 1e-15 and it < 200:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if h(mid) < 0 else (lo, mid)
        it += 1
    mu = 0.5 * (lo + hi)
    return lam * np.array([mu, 1 - mu]), it


def _newton_shared(log_ref, r, rho, utility, beta) -> tuple:
    """Population utility: one ``g [m]`` for every context, ``F(g) = g - grad U(E_rho R_x(pi_g))``.

    The same damped Newton as ``_newton_context`` with ``R`` and ``C = dR/dg`` averaged over contexts.
    """
    def residual(g):
        parts = [_R_and_C(log_ref[x], r[x], g, beta) for x in range(len(rho))]
        R = sum(w * p[0] for w, p in zip(rho, parts))
        if not utility.in_domain(R):
            return None, None, None
        return g - utility.grad(R), R, sum(w * p[1] for w, p in zip(rho, parts))

    g = utility.grad(residual(np.zeros(r.shape[-1]))[1])  # R(pi_ref) is in U's domain (check_problem)
    return _damped_newton(residual, g, utility, "population utility")


def _damped_newton(residual, g, utility, where: str) -> tuple:
    """Damped Newton on ``F(g) = residual(g)[0]`` from ``g``; ``residual`` returns ``(F, R, C = dR/dg)``, or
    Nones when ``pi_g`` leaves U's domain. Jacobian ``I - H(R) C`` (never singular for concave U); Armijo
    backtracking on ``|F|^2``; convergence checked, else a RuntimeError naming ``where``.
    Returns ``(g [m], iterations)``."""
    F, R, C = residual(g)
    while F is None:  # pi_g left U's domain: shrink g towards 0 (g = 0 is pi_ref, inside it)
        g = g / 2
        F, R, C = residual(g)
    for it in range(MAX_NEWTON):
        if np.max(np.abs(F)) <= TOL * (1 + np.max(np.abs(g))):
            return g, it
        d = -np.linalg.solve(np.eye(len(g)) - utility.hessian(R) @ C, F)
        phi, t = F @ F, 1.0
        while t >= MIN_STEP:
            F_new, R_new, C_new = residual(g + t * d)
            if F_new is not None and F_new @ F_new <= (1 - 2 * ARMIJO * t) * phi:
                break
            t /= 2
        else:
            raise RuntimeError(f"fixed point: no decrease of |F| along the Newton step ({where}, "
                               f"max|F| = {np.max(np.abs(F)):.3g} after {it} iterations)")
        g, F, R, C = g + t * d, F_new, R_new, C_new
    raise RuntimeError(f"fixed point: not converged after {MAX_NEWTON} Newton steps ({where}, "
                       f"max|F| = {np.max(np.abs(F)):.3g})")


def solve_population_fixed_point(instance: Bandit, utility, beta) -> dict:
    """``max_pi U(E_rho R_x(pi)) - beta E_rho KL_x`` (one utility of the mean over contexts; smooth U).

    N1 holds on the product of the contexts' simplices, with one ``g = grad U(E_rho R)``
    shared by every context: ``pi(y|x) ∝ pi_ref(y|x) exp(g . r(x, y) / beta)``. Returns
    ``{"g": [m], "policy": [X, Y], "rewards": [m], "kl": float, "objective": float, "iterations",
    "residual", "w": [m], "beta_eff": float, "g_l1": float, "on_simplex": bool}``.
    """
    beta = check_problem(instance, utility, beta)
    if not utility.smooth:
        raise ValueError(f"utility: the population fixed point needs a differentiable U, got {utility.name}")
    rho, log_ref, r = sequence_view(instance)
    g, iterations = _newton_shared(log_ref, r, rho, utility, beta)
    X = len(rho)
    log_pi = gibbs_rows(log_ref, r, np.broadcast_to(g, (X, len(g))), beta)
    vals = row_values(log_ref, r, log_pi, utility, beta)
    R, kl = rho @ vals["rewards"], float(rho @ vals["kl"])
    objective = float(utility.value(R) - beta * kl)
    form = simplex_form(g[None], beta)
    return {"g": g, "policy": np.exp(log_pi), "rewards": R, "kl": kl, "objective": objective,
            "iterations": iterations, "residual": float(np.max(np.abs(g - utility.grad(R)))),
            "w": form["w"][0], "beta_eff": float(form["beta_eff"][0]), "g_l1": float(form["g_l1"][0]),
            "on_simplex": bool(form["on_simplex"][0])}


def solve_utility_fixed_point(instance: Bandit | Tree, utility, beta) -> dict:
    """Section 7 by the fixed point. Returns ``{"g": [X, m], "policy": [X, Y], "rewards": [X, m],
    "kl": [X], "objective": [X], "expected_objective": float, "iterations": [X], "residual": [X],
    "w": [X, m], "beta_eff": [X], "g_l1": [X], "on_simplex": [X], "solver": str}``.

    ``residual`` is ``max|g - s(R)|`` with ``s`` the supergradient of U at the answer
    (for Tchebycheff: the distance of ``g / lam`` from a weighting supported on the minimisers).
    """
    beta = check_problem(instance, utility, beta)
    rho, log_ref, r = sequence_view(instance)
    X, _, m = r.shape
    if not utility.smooth and m != 2:
        raise ValueError(f"utility: the fixed-point solver handles {utility.name} (not differentiable) "
                         f"for m = 2 only (bisection on its dual weight), got m = {m}; use the cvxpy solver")
    g, iterations = np.zeros((X, m)), np.zeros(X, dtype=int)
    for x in range(X):
        step = _newton_context if utility.smooth else _bisect_tchebycheff
        g[x], iterations[x] = step(log_ref[x], r[x], utility, beta, x)
    log_pi = gibbs_rows(log_ref, r, g, beta)
    vals = row_values(log_ref, r, log_pi, utility, beta)
    return {"g": g, "policy": np.exp(log_pi), **vals, "expected_objective": float(rho @ vals["objective"]),
            "iterations": iterations, "residual": first_order_residual(utility, vals["rewards"], g),
            **simplex_form(g, beta),
            "solver": "Newton on g = grad U(R(pi_g))" if utility.smooth else "bisection on the dual weight"}


def first_order_residual(utility, R: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``[X]``: how far ``g`` is from a (super)gradient of U at ``R [X, m]`` (0 at a fixed point).

    Smooth U: ``max|g - grad U(R)|``. Tchebycheff: ``g = lam mu`` must have ``mu`` on the
    simplex and ``mu_i > 0`` only where ``u_i = lam_i (R_i - z_i)`` is minimal; the residual
    is ``|sum mu - 1| + sum_i mu_i (u_i - min u)`` (>= 0, 0 exactly at a supergradient).
    """
    if utility.smooth:
        return np.max(np.abs(g - utility.grad(R)), axis=-1)
    mu = g / utility.lam
    u = utility.lam * (R - utility.z)
    return (np.abs(mu.sum(axis=-1) - 1) + np.sum(np.abs(mu) * (u - u.min(axis=-1, keepdims=True)), axis=-1)
            + np.sum(np.clip(-mu, 0, None), axis=-1))
