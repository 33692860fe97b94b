"""The training distribution D of weightings: one weighting per prompt ``[P, m]`` (THEORY.md section 4).

Multi-task training draws ``w ~ D`` for each prompt; the samplers themselves (Dirichlet, and a
Dirichlet mixed with the simplex's vertices) live in ``theory.weights``. Randomness is the ``rng``
argument (a ``numpy.random.Generator``).
"""
from __future__ import annotations

import numpy as np

from theory.weights import sample_dirichlet, sample_with_vertices

WEIGHTINGS = ("dirichlet", "uniform", "vertices", "fixed")


def draw_weightings(rng: np.random.Generator, P: int, m: int, kind: str, alpha: float = 1.0,
                    p_vertex: float = 0.25, fixed=None) -> np.ndarray:
    """One weighting per prompt ``[P, m]`` from the training distribution D (theory.weights)."""
    if kind == "dirichlet":
        return sample_dirichlet(rng, P, m, alpha)
    if kind == "uniform":
        return sample_dirichlet(rng, P, m, 1.0)
    if kind == "vertices":
        return sample_with_vertices(rng, P, m, alpha, p_vertex)
    if kind == "fixed":
        return np.repeat(np.asarray(fixed, dtype=np.float64)[None], P, axis=0)
    raise ValueError(f"weights: unknown kind {kind!r}; choose from {WEIGHTINGS}")
