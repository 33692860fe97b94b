"""Shared bounded hypothesis strategies, named after the shapes they draw (STYLE.md principle 9).

Import them as ``from strategies import simplex, trees`` (pytest puts ``tests/``
on ``sys.path`` because it holds ``conftest.py`` and no ``__init__.py``).
Every strategy returns numpy float64 arrays or instances from ``theory.instances``;
every value is bounded, so the identities of THEORY.md can be asserted to ~1e-9.

    simplex(m)              [m]        a weighting; vertices and edges (exact zeros) included
    simplex_stack(K, m)     [K, m]     K weightings, each from simplex(m)
    logits(*shape)          shape      unnormalised log-probabilities in [-LOGIT, LOGIT]
    rewards(*shape)         shape      rewards in [-scale, scale], last axis m
    betas()                 float      KL weight, log-uniform in [1e-2, 1e2] (for identities)
    extreme_betas()         float      KL weight, log-uniform in [1e-4, 1e4] (for finiteness)
    bandits(max_X, max_Y, max_m)       Bandit with X <= max_X, 2 <= Y <= max_Y, m <= max_m
    trees(max_V, max_T, max_m)         Tree with 2 <= V <= max_V, 1 <= T <= max_T, m <= max_m
    aligned_trees(max_V, max_T, max_m) Tree with r_i = base + c_i exactly (eps = 0 everywhere)
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from theory.instances import Bandit, Tree

LOGIT = 5.0  # bound on drawn logits
SCALE = 3.0  # default bound on drawn rewards
_DYADIC = 2.0 ** -10  # grid for exactly aligned rewards (sums of grid points are exact)


def _floats(lo: float, hi: float):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, allow_subnormal=False)


@st.composite
def simplex(draw, m: int) -> np.ndarray:
    """A weighting ``[m]`` on the simplex: sometimes a vertex, sometimes on an edge (exact zeros)."""
    kind = draw(st.sampled_from(["vertex", "interior", "edge"]))
    if kind == "vertex":
        return np.eye(m)[draw(st.integers(0, m - 1))]
    lo = 0.0 if kind == "edge" else 1e-3
    raw = draw(hnp.arrays(np.float64, m, elements=st.one_of(st.just(lo), _floats(1e-3, 1.0))))
    if raw.sum() == 0:
        return np.eye(m)[draw(st.integers(0, m - 1))]
    return raw / raw.sum()


@st.composite
def simplex_stack(draw, K: int, m: int) -> np.ndarray:
    """``K`` weightings ``[K, m]``, each drawn by ``simplex(m)``."""
    return np.stack([draw(simplex(m)) for _ in range(K)])


def logits(*shape: int):
    """Logits of the given shape (last axis: the choices), bounded by ``LOGIT``."""
    return hnp.arrays(np.float64, shape, elements=_floats(-LOGIT, LOGIT))


def rewards(*shape: int, scale: float = SCALE):
    """Rewards of the given shape (last axis: the m objectives), in ``[-scale, scale]``."""
    return hnp.arrays(np.float64, shape, elements=_floats(-scale, scale))


def betas():
    """A KL weight, log-uniform-ish in ``[1e-2, 1e2]``: the range where identities are asserted."""
    return _floats(-2.0, 2.0).map(lambda u: 10.0 ** u)


def extreme_betas():
    """A KL weight, log-uniform-ish in ``[1e-4, 1e4]``: the range where results must stay finite."""
    return _floats(-4.0, 4.0).map(lambda u: 10.0 ** u)


@st.composite
def bandits(draw, max_X: int = 3, max_Y: int = 5, max_m: int = 3, min_m: int = 1,
            scale: float = SCALE) -> Bandit:
    """A contextual bandit with ``1 <= X <= max_X``, ``2 <= Y <= max_Y``, ``min_m <= m <= max_m``.

    Context probabilities come from ``simplex(X)``, so some contexts may have probability 0.
    """
    X = draw(st.integers(1, max_X))
    Y = draw(st.integers(2, max_Y))
    m = draw(st.integers(min_m, max_m))
    return Bandit.from_arrays(draw(simplex(X)), draw(logits(X, Y)), draw(rewards(X, Y, m, scale=scale)))


def _tree_shape(draw, max_V: int, max_T: int, max_m: int, min_m: int) -> tuple:
    V = draw(st.integers(2, max_V))
    T = draw(st.integers(1, max_T))
    m = draw(st.integers(min_m, max_m))
    N = sum(V ** t for t in range(T))
    return V, T, m, N


@st.composite
def trees(draw, max_V: int = 3, max_T: int = 3, max_m: int = 3, min_m: int = 1,
          scale: float = SCALE) -> Tree:
    """A token tree with ``2 <= V <= max_V``, ``1 <= T <= max_T``, ``min_m <= m <= max_m`` (<= 27 leaves by default)."""
    V, T, m, N = _tree_shape(draw, max_V, max_T, max_m, min_m)
    return Tree.from_arrays(V, T, draw(logits(N, V)), draw(rewards(V ** T, m, scale=scale)))


@st.composite
def aligned_trees(draw, max_V: int = 3, max_T: int = 3, max_m: int = 3, min_m: int = 2,
                  scale: float = SCALE) -> Tree:
    """A tree whose rewards are ``r_i = base + c_i`` with base and c on a dyadic grid.

    The sums are exact in floating point, so ``r_i - r_j`` is exactly constant and
    ``eps(s) = 0`` at every state: the per-reward optimal policies coincide (P8).
    """
    V, T, m, N = _tree_shape(draw, max_V, max_T, max_m, min_m)
    n = int(scale / _DYADIC)
    base = draw(hnp.arrays(np.int64, V ** T, elements=st.integers(-n, n))) * _DYADIC  # (V^T,)
    c = draw(hnp.arrays(np.int64, m, elements=st.integers(-n, n))) * _DYADIC  # (m,)
    return Tree.from_arrays(V, T, draw(logits(N, V)), base[:, None] + c[None, :])
