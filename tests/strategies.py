"""Shared bounded hypothesis strategies, named after the shapes they draw (STYLE.md principle 9).

Import them as ``from strategies import simplex, trees`` (pytest puts ``tests/``
on ``sys.path`` because it holds ``conftest.py`` and no ``__init__.py``).
Every strategy returns numpy float64 arrays or instances from ``theory.instances``;
every value is bounded, so the identities of THEORY.md can be asserted to ~1e-9.

    simplex(m)              [m]        a weighting: interior mostly, vertices and edges (exact zeros) 10% each
    simplex_stack(K, m)     [K, m]     K weightings, each from simplex(m)
    logits(*shape)          shape      unnormalised log-probabilities in [-LOGIT, LOGIT]
    rewards(*shape)         shape      rewards in [-scale, scale], last axis m
    betas()                 float      KL weight, log-uniform in [1e-2, 1e2] (for identities)
    extreme_betas()         float      KL weight, log-uniform in [1e-4, 1e4] (for finiteness)
    bandits(max_X, max_Y, max_m)       Bandit with X <= max_X, 2 <= Y <= max_Y, m <= max_m
    trees(max_V, max_T, max_m)         Tree with 2 <= V <= max_V, min_T <= T <= max_T, min_m <= m <= max_m
    aligned_trees(max_V, max_T, max_m) Tree with r_i = base + c_i exactly (eps = 0 everywhere)

Informative draws (issue 11): left to itself hypothesis fills arrays with one
repeated value and shrinks towards 0, so most drawn trees had constant rewards,
zero misalignment, vertex weightings, beta exactly 1 and a zero gap (the
identities then read 0 = 0). Arrays are therefore drawn element by element
(``fill=st.nothing()``), continuous values come from a drawn seed through numpy
(so they are spread out; shrinking still goes to seed 0), and trees default to
``T >= 2`` and ``m >= 2`` (with T = 1 or m = 1 the zero-shot gap is exactly 0).
``tests/theory/test_strategies.py`` measures the share of degenerate draws (<= 20%).
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


def _spread(lo: float, hi: float, shape=()):
    """Values uniform in ``[lo, hi]`` from a drawn seed (hypothesis alone favours the ends and 0)."""
    return st.integers(0, 2 ** 32 - 1).map(lambda seed: np.random.default_rng(seed).uniform(lo, hi, size=shape))


def _weighting(seed: int, m: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    u = rng.random()
    if m == 1 or u < 0.1:  # a vertex
        return np.eye(m)[rng.integers(m)]
    raw = rng.uniform(0.05, 1.0, size=m)
    if u < 0.2 and m >= 3:  # an edge: one coordinate exactly 0 (for m = 2 that is a vertex)
        raw[rng.integers(m)] = 0.0
    return raw / raw.sum()


def simplex(m: int):
    """A weighting ``[m]`` on the simplex: interior 80% (90% for m = 2), a vertex 10%, on an edge (an exact zero, m >= 3) 10%."""
    return st.integers(0, 2 ** 32 - 1).map(lambda seed: _weighting(seed, m))


@st.composite
def simplex_stack(draw, K: int, m: int) -> np.ndarray:
    """``K`` weightings ``[K, m]``, each drawn by ``simplex(m)``."""
    return np.stack([draw(simplex(m)) for _ in range(K)])


def logits(*shape: int):
    """Logits of the given shape (last axis: the choices), bounded by ``LOGIT``; every entry drawn."""
    return hnp.arrays(np.float64, shape, elements=_floats(-LOGIT, LOGIT), fill=st.nothing())


def rewards(*shape: int, scale: float = SCALE):
    """Rewards of the given shape (last axis: the m objectives), in ``[-scale, scale]``, spread out.

    Mostly uniform draws (through a seed); one draw in five element by element from
    hypothesis, so hand-shaped corner cases (ties, bounds) still occur.
    """
    return st.one_of(_spread(-scale, scale, shape), _spread(-scale, scale, shape), _spread(-scale, scale, shape),
                     _spread(-scale, scale, shape),
                     hnp.arrays(np.float64, shape, elements=_floats(-scale, scale), fill=st.nothing()))


def betas():
    """A KL weight, log-uniform in ``[1e-2, 1e2]``: the range where identities are asserted."""
    return _spread(-2.0, 2.0).map(lambda u: float(10.0 ** u))


def extreme_betas():
    """A KL weight, log-uniform in ``[1e-4, 1e4]``: the range where results must stay finite."""
    return _spread(-4.0, 4.0).map(lambda u: float(10.0 ** u))


@st.composite
def bandits(draw, max_X: int = 3, max_Y: int = 5, max_m: int = 3, min_m: int = 1,
            scale: float = SCALE) -> Bandit:
    """A contextual bandit with ``1 <= X <= max_X``, ``2 <= Y <= max_Y``, ``min_m <= m <= max_m``.

    Context probabilities come from ``simplex(X)``, so some contexts may have probability 0.
    """
    X = draw(st.integers(1, max_X))
    Y = draw(st.integers(2, max_Y))
    m = draw(st.integers(min(min_m, max_m), max_m))
    return Bandit.from_arrays(draw(simplex(X)), draw(logits(X, Y)), draw(rewards(X, Y, m, scale=scale)))


def _tree_shape(draw, max_V: int, max_T: int, max_m: int, min_m: int, min_T: int = 1) -> tuple:
    V = draw(st.integers(2, max_V))
    T = draw(st.integers(min(min_T, max_T), max_T))
    m = draw(st.integers(min(min_m, max_m), max_m))
    N = sum(V ** t for t in range(T))
    return V, T, m, N


@st.composite
def trees(draw, max_V: int = 3, max_T: int = 3, max_m: int = 3, min_m: int = 2,
          scale: float = SCALE, min_T: int = 2) -> Tree:
    """A token tree with ``2 <= V <= max_V``, ``min_T <= T <= max_T``, ``min_m <= m <= max_m`` (<= 27 leaves by default).

    ``min_T`` and ``min_m`` are lowered to ``max_T``, ``max_m`` when those are smaller.
    """
    V, T, m, N = _tree_shape(draw, max_V, max_T, max_m, min_m, min_T)
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
    base = draw(hnp.arrays(np.int64, V ** T, elements=st.integers(-n, n), fill=st.nothing())) * _DYADIC  # (V^T,)
    c = draw(hnp.arrays(np.int64, m, elements=st.integers(-n, n), fill=st.nothing())) * _DYADIC  # (m,)
    return Tree.from_arrays(V, T, draw(logits(N, V)), base[:, None] + c[None, :])
