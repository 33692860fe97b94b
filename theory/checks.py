"""Preconditions, checked once where data enters (STYLE.md principle 6).

Every refusal is a ``ValueError`` whose message starts with the name of the
offending field, so the command line can print it as one line.
"""
from __future__ import annotations

import numpy as np

SIMPLEX_TOL = 1e-6
BETA_RANGE = (1e-8, 1e12)  # every theory quantity is finite and meets its identities in this range
REWARD_MAX = 1e6  # |r| bound of an instance's rewards (same reason)
MAX_HORIZON = 100  # tree depth: the solvers loop over depths in Python
MAX_LEAVES = 10 ** 7  # V^T sequences of a tree (the solvers hold [K, V^T] arrays)
MAX_REWARDS = 32  # m: pairwise oscillations hold m(m-1)/2 arrays
MAX_WEIGHTINGS = 10 ** 4  # K: weightings of one grid or stack (fronts are [K, m], trees [K, V^T])
MAX_ENTRIES = 10 ** 8  # K times the sequences (or X * Y) of one solve: its largest array


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
    lo, hi = BETA_RANGE
    if not lo <= b <= hi:
        raise ValueError(f"{field}: {b:g} is outside the supported range [{lo:g}, {hi:g}] "
                         f"(outside it the exact quantities over- or underflow)")
    return b


def check_rewards_range(r: np.ndarray, field: str = "rewards") -> np.ndarray:
    """Rewards with ``|r| <= REWARD_MAX`` (the range where the identities are checked)."""
    if r.size and np.abs(r).max() > REWARD_MAX:
        raise ValueError(f"{field}: |r| = {np.abs(r).max():g} exceeds the supported {REWARD_MAX:g}")
    return r


def check_reward_count(m, field: str = "rewards") -> int:
    """Number of rewards ``1 <= m <= MAX_REWARDS``."""
    m = positive_int(m, field)
    if m > MAX_REWARDS:
        raise ValueError(f"{field}: m = {m} rewards exceeds the limit of {MAX_REWARDS}")
    return m


def check_bandit_size(contexts, responses) -> tuple:
    """``(X, Y)`` with ``X * Y <= MAX_LEAVES`` (the bandit solvers hold ``[K, X, Y]`` arrays)."""
    X, Y = positive_int(contexts, "contexts"), positive_int(responses, "responses")
    if X * Y > MAX_LEAVES:
        raise ValueError(f"responses: X * Y = {X} * {Y} exceeds the limit of {MAX_LEAVES:g}")
    return X, Y


def check_tree_size(vocab, horizon) -> tuple:
    """``(V, T)`` of a tree small enough to enumerate; checked before any V^T is computed or allocated."""
    V, T = positive_int(vocab, "vocab"), positive_int(horizon, "horizon")
    if T > MAX_HORIZON:
        raise ValueError(f"horizon: {T} exceeds the limit of {MAX_HORIZON} tokens")
    if V > MAX_LEAVES or V ** T > MAX_LEAVES:
        raise ValueError(f"vocab: V^T = {V}^{T} sequences exceeds the limit of {MAX_LEAVES:g}")
    return V, T


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
