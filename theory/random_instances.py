"""Random instances, optionally with a prescribed misalignment (THEORY.md section 3).

An aligned family writes every reward as a shared base plus a per-reward
constant plus a perturbation, ``r_i = base + c_i + eps_scale * P_i``; the
perturbation is rescaled so that the misalignment equals the requested ``eps``
(``eps = 0``: the per-reward optimal policies coincide). Randomness is an
argument (``rng: np.random.Generator``).
"""
from __future__ import annotations

import numpy as np

from theory.checks import check_bandit_size, check_reward_count, check_tree_size
from theory.instances import Bandit, Tree


def _spread(r: np.ndarray) -> float:
    """``max_{i<j} (max - min over rows of (r_i - r_j)) / 2`` for rewards ``[n, m]``."""
    m = r.shape[1]
    if m < 2:
        return 0.0
    i, j = np.triu_indices(m, k=1)
    diff = r[:, i] - r[:, j]  # (n, P)
    return float((diff.max(axis=0) - diff.min(axis=0)).max() / 2)


def bandit_misalignment(bandit: Bandit) -> float:
    """Bandit misalignment ``max_x max_{i<j} osc_y(r_i - r_j)(x) / 2`` (the bandit analogue of eps)."""
    return max(_spread(r_x) for r_x in bandit.rewards)  # r_x: (Y, m)


def _check_scale(scale: float) -> float:
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale: must be finite and > 0, got {scale!r}")
    return float(scale)


def _check_misalignment(eps) -> float | None:
    if eps is None:
        return None
    if not np.isfinite(eps) or eps < 0:
        raise ValueError(f"misalignment: must be finite and >= 0, got {eps!r}")
    return float(eps)


def _aligned_rewards(rng: np.random.Generator, shape: tuple, m: int, scale: float, eps: float,
                     spread) -> np.ndarray:
    """``base + c + P`` of shape ``shape + (m,)`` with ``spread(P) = eps`` (to rounding).

    ``c`` is constant over the last axis of ``shape`` (responses or leaves), so it
    does not change any oscillation of ``r_i - r_j``.
    """
    base = scale * rng.normal(size=shape)[..., None]  # (..., n, 1)
    c = scale * rng.normal(size=shape[:-1] + (1, m))  # (..., 1, m)
    P = scale * rng.normal(size=shape + (m,))  # (..., n, m)
    current = spread(P)
    if eps > 0 and current == 0:
        raise ValueError(f"misalignment: {eps:g} > 0 is impossible with one reward or one response")
    P = P * (eps / current) if eps > 0 else np.zeros_like(P)
    return base + c + P


def random_bandit(rng: np.random.Generator, contexts: int = 1, responses: int = 5, rewards: int = 2,
                  scale: float = 1.0, misalignment: float | None = None) -> Bandit:
    """A random contextual bandit: Dirichlet(1) rho, normal ref logits, rewards of size ``scale``.

    With ``misalignment = eps`` the rewards form an aligned family whose
    ``bandit_misalignment`` equals ``eps`` (to rounding).
    """
    X, Y = check_bandit_size(contexts, responses)
    m, scale = check_reward_count(rewards), _check_scale(scale)
    eps = _check_misalignment(misalignment)
    rho = rng.dirichlet(np.ones(X))
    ref_logits = rng.normal(size=(X, Y))
    if eps is None:
        r = scale * rng.normal(size=(X, Y, m))
    else:
        r = _aligned_rewards(rng, (X, Y), m, scale, eps,
                             lambda P: max(_spread(P_x) for P_x in P))  # P: (X, Y, m)
    return Bandit.from_arrays(rho, ref_logits, r)


def random_tree(rng: np.random.Generator, vocab: int = 3, horizon: int = 3, rewards: int = 2,
                scale: float = 1.0, misalignment: float | None = None) -> Tree:
    """A random token tree: normal ref logits at every prefix, rewards of size ``scale`` at the leaves.

    With ``misalignment = eps`` the root misalignment ``theory.tree.misalignment(tree)[0][0]``
    equals ``eps`` (to rounding).
    """
    V, T = check_tree_size(vocab, horizon)  # before V^T is computed
    m, scale = check_reward_count(rewards), _check_scale(scale)
    eps = _check_misalignment(misalignment)
    N = sum(V ** t for t in range(T))
    ref_logits = rng.normal(size=(N, V))
    if eps is None:
        r = scale * rng.normal(size=(V ** T, m))
    else:
        r = _aligned_rewards(rng, (V ** T,), m, scale, eps, _spread)
    return Tree.from_arrays(V, T, ref_logits, r)


def p10_tree(c: float = 0.8) -> Tree:
    """THEORY.md P10: V = 2, T = 2, uniform pi_ref.

    Token 0 at the root is branch A, whose leaves pay (1, 0) and (0, 1); token 1
    is branch B, whose leaves both pay (c, c), with 1/2 < c < 1.
    """
    if not (np.isfinite(c) and 0.5 < c < 1):
        raise ValueError(f"c: must satisfy 1/2 < c < 1, got {c!r}")
    rewards = [[1.0, 0.0], [0.0, 1.0], [c, c], [c, c]]  # leaves 00, 01, 10, 11
    return Tree.from_arrays(2, 2, np.zeros((3, 2)), rewards)
