"""Measures of fronts (THEORY.md section 6). Maximisation throughout.

A *point* is one method's outcome at one weighting, e.g. ``(R_1 .. R_m)`` at a
fixed beta, or ``(R, -K)`` when steering the KL weight (negate K yourself, so
that every coordinate is maximised). A *front* ``Z`` is the exact one.

The indicators (hypervolume, IGD+, additive epsilon, non-dominance) come from
moocore (López-Ibáñez et al., the C library pymoo also calls) with
``maximise=True``; written here by hand is only what no library offers:
expected utility, maximum utility loss, regret, steerability and dominated share.
"""
from __future__ import annotations

import moocore
import numpy as np
from scipy.stats import spearmanr

from theory.checks import finite_array


def _points(points, field: str, d: int | None = None) -> np.ndarray:
    arr = finite_array(points, field, ndim=2)
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{field}: expected a non-empty array of points [N, d], got shape {arr.shape}")
    if d is not None and arr.shape[1] != d:
        raise ValueError(f"{field}: points have {arr.shape[1]} coordinates, expected {d}")
    return arr


def _ref(ref, d: int) -> np.ndarray:
    arr = finite_array(ref, "ref", ndim=1)
    if arr.size != d:
        raise ValueError(f"ref: reference point has {arr.size} coordinates, points have {d}")
    return arr


def pareto_filter(points) -> np.ndarray:
    """Mask ``[N]`` of the non-dominated points of ``points`` ``[N, d]`` (maximise).

    A point is dominated when another is >= in every coordinate and > in one.
    Duplicates of a non-dominated point are all kept (``keep_weakly=True``).
    """
    P = _points(points, "points")
    return moocore.is_nondominated(P, maximise=True, keep_weakly=True)


def hypervolume(points, ref) -> float:
    """Volume of the region dominated by ``points`` ``[N, d]`` and dominating ``ref`` ``[d]``.

    Points that do not strictly dominate ``ref`` contribute nothing.
    """
    P = _points(points, "points")
    return float(moocore.hypervolume(P, ref=_ref(ref, P.shape[1]), maximise=True))


def relative_hypervolume(points, front, ref) -> float:
    """``1 - HV(A) / HV(Z)``: 0 when ``A`` covers the exact front ``Z``, 1 when it covers nothing."""
    A = _points(points, "points")
    Z = _points(front, "front", A.shape[1])
    hv_Z = hypervolume(Z, ref)
    if hv_Z <= 0:
        raise ValueError("front: its hypervolume w.r.t. ref is 0; choose a ref the front dominates")
    return 1.0 - hypervolume(A, ref) / hv_Z


def igd_plus(points, front) -> float:
    """IGD+ of ``A`` against ``Z`` (Ishibuchi et al. 2015):
    ``mean_{z in Z} min_{a in A} || max(z - a, 0) ||_2`` (Pareto-compliant)."""
    A = _points(points, "points")
    Z = _points(front, "front", A.shape[1])
    return float(moocore.igd_plus(A, ref=Z, maximise=True))


def epsilon_additive(points, front) -> float:
    """Additive epsilon indicator ``max_{z in Z} min_{a in A} max_k (z_k - a_k)``: the least
    amount added to every coordinate of ``A`` so that it weakly dominates ``Z`` (<= 0 if it already does)."""
    A = _points(points, "points")
    Z = _points(front, "front", A.shape[1])
    return float(moocore.epsilon_additive(A, ref=Z, maximise=True))


def _weights(W, d: int) -> np.ndarray:
    return _points(W, "W", d)


def expected_utility(points, W) -> float:
    """``mean_{w in W} max_{p in A} w . p`` over a weighting grid ``W`` ``[K, d]`` (linear utilities)."""
    A = _points(points, "points")
    W = _weights(W, A.shape[1])
    return float(np.mean((W @ A.T).max(axis=1)))  # (K, N) -> (K,)


def max_utility_loss(points, front, W) -> float:
    """``max_{w in W} [ max_{z in Z} w . z - max_{a in A} w . a ]``: the worst utility lost against ``Z``."""
    A = _points(points, "points")
    Z = _points(front, "front", A.shape[1])
    W = _weights(W, A.shape[1])
    return float(np.max((W @ Z.T).max(axis=1) - (W @ A.T).max(axis=1)))


def regret(J_opt, J) -> np.ndarray:
    """``Delta(w) = J_w(pi*_w) - J_w(pi)`` elementwise (section 6)."""
    J_opt = finite_array(J_opt, "J_opt")
    J = finite_array(J, "J")
    if J.shape != J_opt.shape:
        raise ValueError(f"J: shape {J.shape} differs from J_opt's {J_opt.shape}")
    return J_opt - J


def normalised_regret(J_opt, J, J_ref) -> np.ndarray:
    """``Delta(w) / (J_w(pi*_w) - J_w(pi_ref))`` elementwise (section 6): 0 optimal, 1 as bad as pi_ref.

    Refused where the denominator is not > 0 (then pi_ref is already optimal and the ratio is undefined).
    """
    delta = regret(J_opt, J)
    J_ref = finite_array(J_ref, "J_ref")
    if J_ref.shape != delta.shape:
        raise ValueError(f"J_ref: shape {J_ref.shape} differs from J_opt's {delta.shape}")
    scale = np.asarray(J_opt, dtype=np.float64) - J_ref
    if np.any(scale <= 0):
        raise ValueError(f"J_ref: J_opt - J_ref must be > 0, got {scale.min():g} (pi_ref optimal there)")
    return delta / scale


def steerability(W, R) -> dict:
    """How well weightings ``W`` ``[K, m]`` steer the rewards ``R`` ``[K, m]`` reached (section 6).

    Returns:
        spread ``[m]``: max - min of each reward over the grid.
        rank_correlation ``[m]``: Spearman correlation between ``w_i`` and ``R_i``
            (1 = perfectly monotone steering; NaN when either is constant).
        inner_product: mean over the grid of ``w . u``, and
        angle: mean angle (radians) between ``w`` and ``u``, where ``u`` is the reward
            vector reached, min-max normalised per reward over the grid to [0, 1]
            (so rewards of different scales are comparable; a reward with zero
            spread normalises to 0). Grid points with ``u = 0`` are left out of the angle.
    """
    W = _points(W, "W")
    R = _points(R, "R")
    if R.shape != W.shape:
        raise ValueError(f"R: shape {R.shape} differs from W's {W.shape} (one reward vector per weighting)")
    lo, hi = R.min(axis=0), R.max(axis=0)
    spread = hi - lo
    u = np.where(spread > 0, (R - lo) / np.where(spread > 0, spread, 1.0), 0.0)  # (K, m) in [0, 1]
    rank = np.array([spearmanr(W[:, i], R[:, i]).statistic
                     if np.ptp(W[:, i]) > 0 and spread[i] > 0 else np.nan for i in range(W.shape[1])])
    dot = np.einsum("km,km->k", W, u)
    norms = np.linalg.norm(W, axis=1) * np.linalg.norm(u, axis=1)
    ok = norms > 0
    angle = np.arccos(np.clip(dot[ok] / norms[ok], -1.0, 1.0))  # clip: rounding only
    return {"spread": spread, "rank_correlation": rank, "inner_product": float(dot.mean()),
            "angle": float(angle.mean()) if ok.any() else float("nan")}


def dominated_share(A, B) -> float:
    """Share of ``A``'s points weakly dominated by some point of ``B`` and not equal to it (maximise)."""
    A = _points(A, "A")
    B = _points(B, "B", A.shape[1])
    ge = np.all(B[None, :, :] >= A[:, None, :], axis=-1)  # (N_A, N_B)
    gt = np.any(B[None, :, :] > A[:, None, :], axis=-1)
    return float(np.mean(np.any(ge & gt, axis=1)))
