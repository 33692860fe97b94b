"""Weighting grids and samplers on the simplex Delta_m: the one place they live.

Randomness is an argument (``rng: np.random.Generator``).
"""
from __future__ import annotations

import itertools
import math

import numpy as np

from theory.checks import MAX_WEIGHTINGS


def simplex_grid(m: int, n: int, field: str = "grid") -> np.ndarray:
    """All weightings with entries in {0, 1/n, ..., 1} summing to 1, ``[K, m]``.

    K = C(n + m - 1, m - 1); for m = 2 this is ``n + 1`` points from (0, 1) to (1, 0),
    ordered by increasing w_1.
    """
    if m < 1 or n < 1:
        raise ValueError(f"simplex_grid: need m >= 1 and n >= 1, got m={m}, n={n}")
    K = math.comb(n + m - 1, m - 1)  # counted before anything is built
    if K > MAX_WEIGHTINGS:
        raise ValueError(f"{field}: a grid of resolution {n} on {m} rewards has {K} weightings, "
                         f"over the limit of {MAX_WEIGHTINGS}")
    # stars and bars: choose m-1 bar positions among n+m-1 slots
    rows = []
    for bars in itertools.combinations(range(n + m - 1), m - 1):
        edges = (-1,) + bars + (n + m - 1,)
        rows.append([edges[i + 1] - edges[i] - 1 for i in range(m)])
    grid = np.array(rows, dtype=np.float64) / n
    return grid[np.lexsort(grid.T[::-1])]


def sample_dirichlet(rng: np.random.Generator, K: int, m: int, alpha: float = 1.0) -> np.ndarray:
    """K weightings from Dirichlet(alpha, ..., alpha); alpha = 1 is uniform on the simplex."""
    if alpha <= 0:
        raise ValueError(f"alpha: must be > 0, got {alpha}")
    return rng.dirichlet(np.full(m, float(alpha)), size=K)


def sample_with_vertices(rng: np.random.Generator, K: int, m: int, alpha: float = 1.0,
                         p_vertex: float = 0.25) -> np.ndarray:
    """Dirichlet(alpha) mixed with the vertices: each draw is a uniform vertex e_i with prob. p_vertex."""
    if not 0 <= p_vertex <= 1:
        raise ValueError(f"p_vertex: must lie in [0, 1], got {p_vertex}")
    w = sample_dirichlet(rng, K, m, alpha)
    at_vertex = rng.random(K) < p_vertex
    w[at_vertex] = np.eye(m)[rng.integers(m, size=at_vertex.sum())]
    return w
