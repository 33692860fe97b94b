"""Preconditions, checked once where data enters (STYLE.md principle 6).

Every refusal is a ``ValueError`` whose message starts with the name of the
offending field, so the command line can print it as one line.
"""
from __future__ import annotations

import numpy as np

SIMPLEX_TOL = 1e-6


def finite_array(value, field: str, ndim: int | None = None) -> np.ndarray:
    """``value`` as a float64 array; refuses ragged, non-numeric or non-finite input."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{field}: not a rectangular array of numbers") from None
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{field}: expected {ndim} dimensions, got {arr.ndim} (shape {arr.shape})")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{field}: contains NaN or infinite values")
    return arr


def positive_int(value, field: str) -> int:
    """A positive integer (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{field}: must be a positive integer, got {value!r}")
    return int(value)


def check_beta(beta, field: str = "beta") -> float:
    """KL weight: a finite number > 0."""
    try:
        b = float(beta)
    except (TypeError, ValueError):
        raise ValueError(f"{field}: not a number: {beta!r}") from None
    if not np.isfinite(b) or b <= 0:
        raise ValueError(f"{field}: must be finite and > 0, got {beta!r}")
    return b


def check_weights(w, m: int, field: str = "weights") -> np.ndarray:
    """A weighting ``[m]`` or a stack ``[K, m]`` on the simplex, returned as ``[K, m]``.

    Refused (never renormalised or clipped): wrong length, non-finite, negative,
    or not summing to 1 within ``SIMPLEX_TOL``.
    """
    arr = finite_array(w, field)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"{field}: expected a weighting [m] or a stack [K, m], got shape {arr.shape}")
    if arr.shape[1] != m:
        raise ValueError(f"{field}: expected {m} entries per weighting (one per reward), got {arr.shape[1]}")
    if np.any(arr < 0):
        raise ValueError(f"{field}: negative entry {arr.min():g}; a weighting lies on the simplex")
    sums = arr.sum(axis=1)
    worst = np.abs(sums - 1).max()
    if worst > SIMPLEX_TOL:
        raise ValueError(f"{field}: entries sum to {sums[np.abs(sums - 1).argmax()]:.9g}, not 1 "
                         f"(tolerance {SIMPLEX_TOL:g})")
    return arr


def check_probability_vector(p, field: str) -> np.ndarray:
    """A probability vector: finite, non-negative, sums to 1 within ``SIMPLEX_TOL``."""
    arr = finite_array(p, field, ndim=1)
    if arr.size == 0:
        raise ValueError(f"{field}: empty")
    if np.any(arr < 0):
        raise ValueError(f"{field}: negative probability {arr.min():g}")
    if abs(arr.sum() - 1) > SIMPLEX_TOL:
        raise ValueError(f"{field}: sums to {arr.sum():.9g}, not 1 (tolerance {SIMPLEX_TOL:g})")
    return arr


def check_lam(lam, field: str = "lam") -> np.ndarray:
    """KL-weight mixing coefficients ``[K]``, each finite and > 0."""
    arr = np.atleast_1d(finite_array(lam, field))
    if arr.ndim != 1:
        raise ValueError(f"{field}: expected a number or a 1-D array, got shape {arr.shape}")
    if np.any(arr <= 0):
        raise ValueError(f"{field}: must be > 0, got {arr.min():g}")
    return arr
