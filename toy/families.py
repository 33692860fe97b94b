"""Seeded instance families for the experiments (THEORY.md sections 2, 3, 5, P10).

Random bandits and trees with a prescribed root misalignment, the P10 tree and
log-linear feature bandits come from ``theory.random_instances`` and
``theory.loglinear``. This file adds the one family ``theory`` does not have:
trees aligned *below a depth* ("rewards equal up to per-subtree constants").
"""
from __future__ import annotations

import numpy as np

from theory.checks import positive_int
from theory.instances import Tree


def subtree_aligned_tree(rng: np.random.Generator, vocab: int = 3, horizon: int = 3, rewards: int = 2,
                         depth: int = 1, eps: float = 0.0, scale: float = 1.0) -> Tree:
    """Rewards equal up to per-subtree constants, plus perturbations of size ``eps``.

        r_i(y) = base(y) + c_i(y_{<=depth}) + eps * u_i(y),   u_i ~ U[-1/2, 1/2]

    ``c_i`` is constant on each subtree rooted at depth ``depth``, so below those
    prefixes ``r_i - r_j`` varies only through ``u``: ``eps(s) <= eps`` for every
    ``s`` at depth >= ``depth`` (= 0 when ``eps = 0``, where P8 applies there).
    Above that depth the constants differ between subtrees, so the per-reward
    optima disagree about which subtree to enter. With ``depth <= 1`` and
    ``eps = 0`` the zero-shot mixture is exact everywhere (P6: ``G_w(s a) = 0`` for
    every child of the root); with ``depth >= 2`` it is not in general.
    """
    V, T, m = positive_int(vocab, "vocab"), positive_int(horizon, "horizon"), positive_int(rewards, "rewards")
    if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or not 0 <= depth <= T:
        raise ValueError(f"depth: must be an integer in [0, horizon = {T}], got {depth!r}")
    if not (np.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps: must be finite and >= 0, got {eps!r}")
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"scale: must be finite and > 0, got {scale!r}")
    N = sum(V ** t for t in range(T))
    ref_logits = rng.normal(size=(N, V))
    base = scale * rng.normal(size=(V ** T, 1))  # (V^T, 1)
    c = scale * rng.normal(size=(V ** depth, 1, m))  # (V^depth, 1, m): one constant per subtree
    c = np.broadcast_to(c, (V ** depth, V ** (T - depth), m)).reshape(V ** T, m)  # leaves are grouped by prefix
    u = rng.uniform(-0.5, 0.5, size=(V ** T, m))
    return Tree.from_arrays(V, T, ref_logits, base + c + eps * u)


def subtree_constant_tree(rng: np.random.Generator, vocab: int = 3, horizon: int = 3, rewards: int = 1,
                          depth: int = 1, scale: float = 1.0) -> Tree:
    """Rewards that depend only on the first ``depth`` tokens (constant on every subtree at that depth).

    Below those prefixes every reward is constant, which is the equality case of
    Lyapunov's inequality in KL-weight steering (section 5) and of Hölder's in P8.
    """
    V, T, m = positive_int(vocab, "vocab"), positive_int(horizon, "horizon"), positive_int(rewards, "rewards")
    if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or not 0 <= depth <= T:
        raise ValueError(f"depth: must be an integer in [0, horizon = {T}], got {depth!r}")
    N = sum(V ** t for t in range(T))
    ref_logits = rng.normal(size=(N, V))
    r = scale * rng.normal(size=(V ** depth, m))  # (V^depth, m)
    return Tree.from_arrays(V, T, ref_logits, np.repeat(r, V ** (T - depth), axis=0))  # (V^T, m)


def two_support_tree(rng: np.random.Generator, vocab: int = 3, horizon: int = 3, margin: float = 1.0,
                     ref_entry: float = 0.05, scale: float = 1.0) -> Tree:
    """Aligned below the root, with the two experts' optima on different first tokens (THEORY.md P11).

        r_1(y) = base(y) + margin [a_1 = 0],   r_2(y) = base(y) + margin [a_1 = V - 1]

    ``r_1 - r_2`` depends on the first token only, so the ideal zero-shot is exact (P6),
    and below every first token the two optima coincide. pi_ref enters subtree 0 with
    probability ``ref_entry`` (the rest uniform at the root, normal logits below): the
    expert of reward 2 seldom goes there, the mixture at ``w_1 > w_2`` does. The
    enumerable transformer task at misalignment 0 in miniature (coverage vs knob).
    """
    V, T = positive_int(vocab, "vocab"), positive_int(horizon, "horizon")
    if V < 2 or T < 2:
        raise ValueError(f"vocab, horizon: need V >= 2 and T >= 2, got {V}, {T}")
    for name, v in (("margin", margin), ("scale", scale)):
        if not (np.isfinite(v) and v > 0):
            raise ValueError(f"{name}: must be finite and > 0, got {v!r}")
    if not (np.isfinite(ref_entry) and 0 < ref_entry < 1):
        raise ValueError(f"ref_entry: must lie in (0, 1), got {ref_entry!r}")
    N = sum(V ** t for t in range(T))
    ref_logits = rng.normal(size=(N, V))
    ref_logits[0] = np.log(np.r_[ref_entry, np.full(V - 1, (1 - ref_entry) / (V - 1))])
    first = np.repeat(np.arange(V), V ** (T - 1))  # (V^T,): first token of each leaf
    base = scale * rng.normal(size=V ** T)
    r = np.stack([base + margin * (first == 0), base + margin * (first == V - 1)], axis=1)  # (V^T, 2)
    return Tree.from_arrays(V, T, ref_logits, r)
