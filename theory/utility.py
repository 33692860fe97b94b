"""Utilities of the expected reward vector (THEORY.md section 7): value, (super)gradient, curvature.

A utility ``U`` maps ``R [..., m]`` (expected rewards) to a number ``[...]``. Each class
declares whether it is concave (the solvers of ``theory.utility_solvers`` refuse one
that is not) and whether it is differentiable (the fixed point ``g <- grad U`` then
has a Jacobian; Tchebycheff has only supergradients and is solved through its
dual weights instead). ``cvx(R)`` writes the same function for cvxpy on one
context's ``R [m]`` (an affine cvxpy expression).

    Nash          U = sum_i a_i log(R_i - z_i)                    (a > 0; defined for R > z)
    Tchebycheff   U = min_i lam_i (R_i - z_i)                     (lam > 0; not differentiable at ties)
    soft-min      U = -tau log sum_i exp(-lam_i (R_i - z_i) / tau)  (tau > 0; -> Tchebycheff as tau -> 0)
    quadratic     U = -1/2 (R - c)^T A (R - c)                    (A symmetric; concave iff A is PSD)
"""
from __future__ import annotations

from dataclasses import dataclass

import cvxpy as cp
import numpy as np
from scipy.special import logsumexp, softmax

from theory.checks import finite_array

UTILITIES = ("nash", "tchebycheff", "softmin", "quadratic")
PSD_TOL = 1e-12  # smallest eigenvalue of A, relative to its largest, that still counts as >= 0


def _vector(value, m: int, field: str, positive: bool = False) -> np.ndarray:
    arr = finite_array(value, field, ndim=1)
    if arr.shape != (m,):
        raise ValueError(f"{field}: expected {m} entries (one per reward), got {arr.size}")
    if positive and np.any(arr <= 0):
        raise ValueError(f"{field}: entries must be > 0, got {arr.min():g}")
    return arr


@dataclass(frozen=True)
class Nash:
    z: np.ndarray  # [m] disagreement point; U is defined where R > z
    a: np.ndarray  # [m] weights > 0
    name = "nash"
    concave = True
    smooth = True

    @property
    def m(self) -> int:
        return len(self.z)

    def in_domain(self, R: np.ndarray) -> np.ndarray:
        return np.all(R > self.z, axis=-1)

    def value(self, R):
        return np.sum(self.a * np.log(R - self.z), axis=-1)

    def grad(self, R):
        return self.a / (R - self.z)

    def hessian(self, R):  # [..., m, m]
        return np.vectorize(np.diag, signature="(m)->(m,m)")(-self.a / (R - self.z) ** 2)

    def cvx(self, R):
        return cp.sum(cp.multiply(self.a, cp.log(R - self.z)))


@dataclass(frozen=True)
class Tchebycheff:
    z: np.ndarray  # [m] reference point
    lam: np.ndarray  # [m] weights > 0
    name = "tchebycheff"
    concave = True
    smooth = False

    @property
    def m(self) -> int:
        return len(self.z)

    def in_domain(self, R):
        return np.ones(np.shape(R)[:-1], dtype=bool)

    def value(self, R):
        return np.min(self.lam * (R - self.z), axis=-1)

    def grad(self, R):
        """A supergradient: ``lam_k e_k`` at the first minimising ``k``."""
        u = self.lam * (R - self.z)
        return self.lam * np.eye(len(self.z))[np.argmin(u, axis=-1)]

    def cvx(self, R):
        return cp.min(cp.multiply(self.lam, R - self.z))


@dataclass(frozen=True)
class SoftMin:
    z: np.ndarray  # [m]
    lam: np.ndarray  # [m] > 0
    tau: float  # > 0: temperature; Tchebycheff - tau log m <= U <= Tchebycheff
    name = "softmin"
    concave = True
    smooth = True

    @property
    def m(self) -> int:
        return len(self.z)

    def in_domain(self, R):
        return np.ones(np.shape(R)[:-1], dtype=bool)

    def value(self, R):
        return -self.tau * logsumexp(-self.lam * (R - self.z) / self.tau, axis=-1)

    def grad(self, R):  # lam_i s_i with s = softmax(-u / tau)
        return self.lam * softmax(-self.lam * (R - self.z) / self.tau, axis=-1)

    def hessian(self, R):  # -(1/tau) diag(lam) (diag(s) - s s^T) diag(lam)
        s = softmax(-self.lam * (R - self.z) / self.tau, axis=-1)  # (..., m)
        cov = np.vectorize(np.diag, signature="(m)->(m,m)")(s) - s[..., :, None] * s[..., None, :]
        return -cov * np.outer(self.lam, self.lam) / self.tau

    def cvx(self, R):
        return -self.tau * cp.log_sum_exp(-cp.multiply(self.lam, R - self.z) / self.tau)


@dataclass(frozen=True)
class Quadratic:
    c: np.ndarray  # [m] target (the bliss point)
    A: np.ndarray  # [m, m] symmetric curvature
    name = "quadratic"
    smooth = True

    @property
    def m(self) -> int:
        return len(self.c)

    @property
    def concave(self) -> bool:
        eig = np.linalg.eigvalsh(self.A)
        return bool(eig[0] >= -PSD_TOL * max(1.0, abs(eig[-1])))

    def in_domain(self, R):
        return np.ones(np.shape(R)[:-1], dtype=bool)

    def value(self, R):
        d = R - self.c
        return -0.5 * np.einsum("...i,ij,...j->...", d, self.A, d)

    def grad(self, R):
        return -(R - self.c) @ self.A

    def hessian(self, R):
        return np.broadcast_to(-self.A, np.shape(R)[:-1] + self.A.shape)

    def cvx(self, R):
        # A = L L^T (eigen square root; A is PSD here, checked by the solver first)
        eig, vec = np.linalg.eigh(self.A)
        L = vec * np.sqrt(np.clip(eig, 0.0, None))  # clip only rounding below PSD_TOL
        return -0.5 * cp.sum_squares(L.T @ (R - self.c))


def make_utility(name: str, m: int, z=None, lam=None, a=None, tau=None, c=None, A=None):
    """Build and validate a utility by name; missing parameters take their defaults.

    Defaults: ``z = 0``, ``lam = a = 1``, ``tau = 0.1``, ``c = 0``, ``A = I``.
    """
    if name not in UTILITIES:
        raise ValueError(f"utility: unknown {name!r}; choose from {', '.join(UTILITIES)}")
    z = _vector(np.zeros(m) if z is None else z, m, "z")
    if name == "nash":
        return Nash(z, _vector(np.ones(m) if a is None else a, m, "a", positive=True))
    if name == "quadratic":
        A = np.eye(m) if A is None else finite_array(A, "A", ndim=2)
        if A.shape != (m, m):
            raise ValueError(f"A: expected shape [{m}, {m}], got {list(A.shape)}")
        if not np.allclose(A, A.T, rtol=0, atol=1e-12 * max(1.0, np.abs(A).max())):
            raise ValueError("A: must be symmetric")
        return Quadratic(_vector(np.zeros(m) if c is None else c, m, "c"), A)
    lam = _vector(np.ones(m) if lam is None else lam, m, "lam", positive=True)
    if name == "tchebycheff":
        return Tchebycheff(z, lam)
    tau = 0.1 if tau is None else float(finite_array(tau, "tau", ndim=0))
    if tau <= 0:
        raise ValueError(f"tau: must be > 0, got {tau:g}")
    return SoftMin(z, lam, tau)


def check_concave(utility) -> None:
    """Refuse a utility that is not concave: the conic program and the fixed point both need it.

    Without concavity the first-order condition only finds stationary points, and the
    program is not convex (THEORY.md section 7).
    """
    if not utility.concave:
        detail = ""
        if isinstance(utility, Quadratic):
            detail = f" (A has eigenvalue {np.linalg.eigvalsh(utility.A)[0]:g} < 0)"
        raise ValueError(f"utility: {utility.name}{detail} is not concave; the solvers of "
                         "max U(R) - beta KL need a concave U (otherwise the first-order condition "
                         "only finds stationary points)")
