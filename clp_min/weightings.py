"""The training distribution D of weightings: one weighting per prompt ``[P, m]`` (THEORY.md section 4).

Multi-task training draws ``w ~ D`` for each prompt; the samplers themselves (Dirichlet, and a
Dirichlet mixed with the simplex's vertices) live in ``theory.weights``. Randomness is the ``rng``
argument (a ``numpy.random.Generator``).
"""
from __future__ import annotations

import numpy as np

from theory.weights import sample_dirichlet, sample_with_vertices

WEIGHTINGS = ("dirichlet", "uniform", "vertices", "fixed", "adaptive")  # adaptive: AdaptiveSampler below


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
    if kind == "adaptive":
        raise ValueError("weights: adaptive draws through AdaptiveSampler, which keeps state across steps")
    raise ValueError(f"weights: unknown kind {kind!r}; choose from {WEIGHTINGS}")


# ---- adaptive: more training weight where the policy is currently worst -------------------------------
# The statistic needs no oracle: for a prompt x and weighting w, the soft advantage
#     A(y) = w . r(x, y) - beta log(pi(y|x) / pi_ref(y|x))
# is constant in y exactly when pi(.|x) is the Gibbs optimum pi*_w (P1), and near it
#     J_w(pi*_w) - J_w(pi) = beta KL(pi || pi*_w) ~ Var_pi[A] / (2 beta)
# (second order in log(pi / pi*_w) = (A - beta log Z) / beta). The training step already holds A for
# its responses: all of them with the exact gradient (Var_pi exact), n samples with RLOO (sample variance).
CELL_RESOLUTION = {2: 10, 3: 4}  # anchors: simplex_grid(m, n) (11 for m = 2, 15 for m = 3); 2 otherwise
FLOOR = 0.25  # share of prompts whose cell is drawn uniformly (every cell keeps being visited)
EMA = 0.9  # per-cell running mean of the statistic: S_k <- EMA S_k + (1 - EMA) mean of the new values
INITIAL = 1.0  # S_k before a cell's first visit (optimistic: unvisited cells are drawn first)


class AdaptiveSampler:
    """``weights=adaptive``: cells around the anchors of a simplex grid (nearest anchor), a cell drawn with
    probability ``q_k = FLOOR / K + (1 - FLOOR) S_k / sum_j S_j``, then ``w ~ Dirichlet(alpha)`` restricted
    to that cell (rejection); ``S_k`` is the running mean of ``Var_pi[A] / (2 beta)`` over the prompts
    trained in cell k (module comment), an oracle-free estimate of the regret there."""

    def __init__(self, m: int, alpha: float = 1.0, state: dict | None = None):
        from theory.weights import simplex_grid

        self.m, self.alpha = m, alpha
        self.anchors = simplex_grid(m, CELL_RESOLUTION.get(m, 2))  # (K, m)
        K = len(self.anchors)
        self.S = np.full(K, INITIAL) if state is None else np.asarray(state["S"], dtype=np.float64)
        self.visits = np.zeros(K, dtype=np.int64) if state is None else np.asarray(state["visits"], dtype=np.int64)
        if self.S.shape != (K,) or self.visits.shape != (K,):
            raise ValueError(f"weighting_state: {len(self.S)} cells saved, this sampler has {K}")

    def probabilities(self) -> np.ndarray:
        """``q [K]`` over the cells."""
        return FLOOR / len(self.S) + (1 - FLOOR) * self.S / self.S.sum()

    def cell_of(self, w: np.ndarray) -> np.ndarray:
        """Nearest anchor of each weighting ``[P, m] -> [P]``."""
        return np.argmin(((w[:, None, :] - self.anchors[None]) ** 2).sum(-1), axis=1)

    def draw(self, rng: np.random.Generator, P: int) -> tuple:
        """``(w [P, m], cells [P])``."""
        cells = rng.choice(len(self.S), size=P, p=self.probabilities())
        w = np.empty((P, self.m))
        todo = np.arange(P)
        while len(todo):  # rejection: about K draws per prompt
            cand = sample_dirichlet(rng, len(todo), self.m, self.alpha)
            hit = self.cell_of(cand) == cells[todo]
            w[todo[hit]] = cand[hit]
            todo = todo[~hit]
        return w, cells

    def update(self, cells: np.ndarray, stat: np.ndarray) -> None:
        """Fold the step's per-prompt statistic ``[P]`` into its cells' running means."""
        for k in np.unique(cells):
            self.S[k] = EMA * self.S[k] + (1 - EMA) * float(np.mean(stat[cells == k]))
            self.visits[k] += int(np.sum(cells == k))

    def state(self) -> dict:
        return {"S": self.S.tolist(), "visits": self.visits.tolist()}
