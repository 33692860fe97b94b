"""Weighting distributions ``D`` for multi-task training, by name (THEORY.md section 4).

A thin naming layer over ``theory.weights`` (where the samplers live):

    "uniform"          Dirichlet(1, ..., 1), uniform on the simplex
    "dirichlet"        Dirichlet(alpha)
    "uniform+vertices" uniform mixed with the vertices e_i (probability p_vertex)
    "dirichlet+vertices"
"""
from __future__ import annotations

import numpy as np

from theory.weights import sample_dirichlet, sample_with_vertices

DISTRIBUTIONS = ("uniform", "dirichlet", "uniform+vertices", "dirichlet+vertices")


def sample_weightings(rng: np.random.Generator, D: str, K: int, m: int, alpha: float = 0.5,
                      p_vertex: float = 0.25) -> np.ndarray:
    """``K`` weightings ``[K, m]`` from the distribution named ``D`` (``alpha`` used by the Dirichlet ones)."""
    if D not in DISTRIBUTIONS:
        raise ValueError(f"D: unknown weighting distribution {D!r}; choose from {', '.join(DISTRIBUTIONS)}")
    a = 1.0 if D.startswith("uniform") else alpha
    if D.endswith("+vertices"):
        return sample_with_vertices(rng, K, m, a, p_vertex)
    return sample_dirichlet(rng, K, m, a)
