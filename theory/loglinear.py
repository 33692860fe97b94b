"""Log-linear bandit policies and Rewarded Soups under function approximation (THEORY.md section 5).

    pi_theta(y|x) ∝ exp(theta . phi(x, y)),   pi_ref = pi_{theta_ref}

Features ``phi`` are ``[X, Y, d]``, parameters ``theta`` ``[K, d]``. If every reward
is realisable, ``r_i = psi_i . phi``, then ``pi*_w`` is in the class with
``theta = theta_ref + sum_i w_i psi_i / beta`` and parameter averaging of the
per-reward best-in-class parameters (``theory.mixing.mix_parameters``) is exact.
With misspecified rewards it is not; ``best_in_class`` finds the class's best.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax

from theory.checks import check_beta, check_weights, finite_array
from theory.gibbs import gibbs_log_policy
from theory.instances import Bandit


def _features(phi) -> np.ndarray:
    phi = finite_array(phi, "phi", ndim=3)
    if phi.shape[2] < 1:
        raise ValueError("phi: no feature dimension (d = 0)")
    return phi


def _theta(theta, d: int, field: str = "theta") -> np.ndarray:
    theta = finite_array(theta, field)
    if theta.ndim == 1:
        theta = theta[None]
    if theta.ndim != 2 or theta.shape[1] != d:
        raise ValueError(f"{field}: expected [d] or [K, d] with d = {d}, got shape {theta.shape}")
    return theta


def _log_policy(phi: np.ndarray, theta: np.ndarray) -> np.ndarray:
    return log_softmax(np.einsum("xyd,kd->kxy", phi, theta), axis=-1)  # (K, X, Y)


def loglinear_log_policy(phi, theta) -> np.ndarray:
    """``log pi_theta(y|x)``, ``[K, X, Y]``, for features ``phi`` ``[X, Y, d]`` and ``theta`` ``[K, d]``."""
    phi = _features(phi)
    return _log_policy(phi, _theta(theta, phi.shape[2]))


def feature_bandit(rng: np.random.Generator, contexts: int, responses: int, d: int, rewards: int,
                   misspecification: float) -> tuple:
    """A random log-linear bandit: ``(bandit, phi [X, Y, d], theta_ref [d], psi [m, d])``.

    ``phi``, ``theta_ref`` and ``psi`` are standard normal; rho is Dirichlet(1);
    ``r_i(x, y) = psi_i . phi(x, y) + misspecification * noise`` with standard normal
    noise, so the rewards are realisable exactly when ``misspecification = 0``.
    """
    for name, v in (("contexts", contexts), ("responses", responses), ("d", d), ("rewards", rewards)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name}: must be a positive integer, got {v!r}")
    if not (np.isfinite(misspecification) and misspecification >= 0):
        raise ValueError(f"misspecification: must be finite and >= 0, got {misspecification!r}")
    X, Y, m = contexts, responses, rewards
    phi = rng.normal(size=(X, Y, d))
    theta_ref = rng.normal(size=d)
    psi = rng.normal(size=(m, d))
    r = np.einsum("xyd,md->xym", phi, psi) + misspecification * rng.normal(size=(X, Y, m))
    bandit = Bandit.from_arrays(rng.dirichlet(np.ones(X)), phi @ theta_ref, r)
    return bandit, phi, theta_ref, psi


def realisable_optimum(theta_ref, psi, w, beta) -> np.ndarray:
    """Section 5, realisable rewards: ``theta*_w = theta_ref + sum_i w_i psi_i / beta``, ``[K, d]``.

    (Then ``theta . phi = log pi_ref + w.r / beta`` up to a per-context constant: P1.)
    """
    theta_ref = finite_array(theta_ref, "theta_ref", ndim=1)
    psi = finite_array(psi, "psi", ndim=2)
    if psi.shape[1] != theta_ref.size:
        raise ValueError(f"psi: rows have {psi.shape[1]} features, theta_ref has {theta_ref.size}")
    w = check_weights(w, psi.shape[0])
    return theta_ref[None] + w @ psi / check_beta(beta)


def kl_to_target_and_grad(theta: np.ndarray, phi: np.ndarray, rho: np.ndarray,
                          log_target: np.ndarray) -> tuple:
    """``f(theta) = E_rho KL(pi_theta || q)`` and its gradient, for one ``theta`` ``[d]``, ``q`` ``[X, Y]``.

    With ``g = log pi_theta - log q``, ``d f / d logit(x, y) = rho(x) pi(y|x) (g(x, y) - E_pi g)``
    (the softmax Jacobian; the ``sum_y pi d log pi`` term vanishes), so
    ``grad f = sum_x rho(x) sum_y pi(y|x) (g(x, y) - E_pi[g | x]) phi(x, y)``:
    the covariance of ``g`` and ``phi`` under ``pi_theta``.
    """
    log_pi = log_softmax(phi @ theta, axis=-1)  # (X, Y)
    pi = np.exp(log_pi)
    g = log_pi - log_target
    f = rho @ np.sum(pi * g, axis=-1)
    centred = pi * (g - np.sum(pi * g, axis=-1, keepdims=True))  # (X, Y)
    return f, np.einsum("x,xy,xyd->d", rho, centred, phi)


def _log_linear_fit(phi: np.ndarray, rho: np.ndarray, log_target: np.ndarray) -> np.ndarray:
    """Least-squares ``theta`` with ``theta . phi(x, .) ≈ log q(x, .)`` up to per-context constants.

    Exact when ``q`` is in the class; a starting point for ``best_in_class`` otherwise.
    """
    X, Y, d = phi.shape
    c_phi = phi - phi.mean(axis=1, keepdims=True)  # (X, Y, d), centred over responses
    c_log = log_target - log_target.mean(axis=1, keepdims=True)  # (X, Y)
    sw = np.sqrt(rho)[:, None]  # (X, 1)
    theta, *_ = np.linalg.lstsq((sw[..., None] * c_phi).reshape(X * Y, d), (sw * c_log).reshape(X * Y),
                                rcond=None)
    return theta


def best_in_class(bandit: Bandit, phi, w, beta, theta_init=None, restarts: int = 0,
                  rng: np.random.Generator | None = None) -> np.ndarray:
    """Best log-linear policy found for each weighting: ``argmin_theta E_rho KL(pi_theta || pi*_w)``, ``[K, d]``.

    By P1, ``J_w(pi*_w) - J_w(pi_theta) = beta E_rho KL(pi_theta || pi*_w)``, so this
    maximises ``J_w`` within the class. Solved per weighting by L-BFGS with the
    analytic gradient of ``kl_to_target_and_grad``.

    Caveat: this reverse-KL (information) projection is not convex in ``theta``. With
    realisable rewards the least-squares start is already the answer; with
    misspecified ones L-BFGS finds a local minimum, and different starts land in
    different basins: on 100 random instances (3 contexts, 6 responses, d = 3,
    misspecification 0.3 to 3, beta = 0.5) the search from the fit and from zero
    ended below the parameter average, an in-class point, at some weighting in 8. The search runs from
    the least-squares log-linear fit of ``log pi*_w``, from zero, from ``theta_init``
    (``[d]`` or ``[K, d]``) if given, and from ``restarts`` random perturbations of the
    fit drawn with ``rng``; the best end point is returned. Passing the averaged
    per-reward parameters as ``theta_init`` guarantees the answer is at least as good
    as parameter averaging, so a measured averaging gap is then a lower bound.
    """
    phi = _features(phi)
    X, Y, d = phi.shape
    if (X, Y) != bandit.ref_logp.shape:
        raise ValueError(f"phi: shape [X, Y] = [{X}, {Y}] differs from the bandit's {bandit.ref_logp.shape}")
    W = check_weights(w, bandit.m)
    beta = check_beta(beta)
    if isinstance(restarts, bool) or not isinstance(restarts, (int, np.integer)) or restarts < 0:
        raise ValueError(f"restarts: must be an integer >= 0, got {restarts!r}")
    if restarts and rng is None:
        raise ValueError("rng: a np.random.Generator is needed for random restarts")
    starts = [np.zeros((len(W), d))]
    if theta_init is not None:
        init = _theta(theta_init, d, "theta_init")
        if len(init) not in (1, len(W)):
            raise ValueError(f"theta_init: {len(init)} rows for {len(W)} weightings")
        starts.append(np.broadcast_to(init, (len(W), d)))
    rho = bandit.context_probs
    log_star = gibbs_log_policy(bandit, W, beta)  # (K, X, Y)
    thetas = np.empty((len(W), d))
    for k in range(len(W)):
        fit = _log_linear_fit(phi, rho, log_star[k])
        scale = max(1.0, float(np.linalg.norm(fit)) / np.sqrt(d))  # perturbations of the fit's size
        candidates = [fit] + [s[k] for s in starts] + [fit + scale * rng.normal(size=d) for _ in range(restarts)]
        best = None
        for theta0 in candidates:
            res = minimize(kl_to_target_and_grad, theta0, jac=True, method="L-BFGS-B",
                           args=(phi, rho, log_star[k]),
                           options={"maxiter": 10_000, "ftol": 1e-15, "gtol": 1e-12})
            if best is None or res.fun < best.fun:
                best = res
        thetas[k] = best.x
    return thetas
