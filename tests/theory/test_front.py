"""theory.front: the exact and zero-shot fronts and their measures against independent computations.

Catches the mutation "hypervolume reference R(pi_ref) -> 0" (issue 11), which the suite missed:
R(pi_ref) is computed here by hand from the bandit's arrays, and the hypervolumes from a
2-D sweep written here, not by theory.pareto.
"""
import numpy as np

from theory.front import exact_and_zero_shot_front
from theory.gibbs import gibbs_log_policy
from theory.instances import Bandit
from theory.random_instances import random_bandit


def _hypervolume_2d(points: np.ndarray, ref: np.ndarray) -> float:
    """Area dominated by ``points`` ``[K, 2]`` above ``ref`` (maximisation), by a sweep over R_1."""
    pts = points[np.all(points > ref, axis=1)]
    area, best_y = 0.0, ref[1]
    for x, y in sorted(map(tuple, pts), reverse=True):  # decreasing R_1
        if y > best_y:
            area += (x - ref[0]) * (y - best_y)
            best_y = y
    return area


def _bandit() -> Bandit:
    """Rewards that agree in part (so the fronts dominate R(pi_ref)), shifted away from 0."""
    b = random_bandit(np.random.default_rng(3), contexts=2, responses=6, rewards=2)
    r = b.rewards.copy()
    r[..., 1] = 0.6 * r[..., 0] + 0.8 * r[..., 1] + 2.0  # R_2 far from 0: a reference of 0 gives another volume
    r[..., 0] += 1.0
    return Bandit.from_arrays(b.context_probs, b.ref_logp, r)


def test_reference_point_is_r_of_pi_ref_and_hypervolumes_match_a_sweep():
    bandit, beta = _bandit(), 0.5
    front = exact_and_zero_shot_front(bandit, beta, points=11)
    ref_r = np.einsum("x,xy,xym->m", bandit.context_probs, np.exp(bandit.ref_logp), bandit.rewards)
    np.testing.assert_allclose(front["reference"]["rewards"], ref_r, rtol=1e-12)
    # the exact front by hand: Gibbs policies at each grid weighting
    W = front["weights"]
    pi = np.exp(gibbs_log_policy(bandit, W, beta))  # (K, X, Y)
    Z = np.einsum("x,kxy,xym->km", bandit.context_probs, pi, bandit.rewards)
    np.testing.assert_allclose(front["solution"]["optimal"]["rewards"], Z, rtol=1e-10)
    hv = _hypervolume_2d(Z, ref_r)
    assert hv > 0.05  # informative: the front dominates R(pi_ref) by a visible area
    assert abs(hv - _hypervolume_2d(Z, np.zeros(2))) > 0.5  # and the reference matters
    np.testing.assert_allclose(front["measures"]["hypervolume_exact"], hv, rtol=1e-9)
    A = front["solution"]["logit_mix"]["rewards"]
    np.testing.assert_allclose(front["measures"]["hypervolume_zero_shot"], _hypervolume_2d(A, ref_r), rtol=1e-9)


def test_points_over_the_limit_are_refused_before_the_grid_is_built():
    import pytest

    bandit = random_bandit(np.random.default_rng(0), rewards=3)
    with pytest.raises(ValueError, match="^points: a grid of resolution 99999 on 3 rewards has .* over the limit"):
        exact_and_zero_shot_front(bandit, 1.0, points=100000)
