"""Front measures (THEORY.md section 6): hand-geometry answers and hypothesis properties."""
import numpy as np
import pytest
from hypothesis import given, strategies as st
from strategies import rewards, simplex_stack

from theory import pareto
from theory.weights import simplex_grid


def _hv_2d_sweep(P, ref):
    """Independent 2-D hypervolume (maximise): sweep the x-axis, height = best y to the right."""
    P = P[np.all(P > ref, axis=1)]
    xs = np.sort(np.unique(np.concatenate([[ref[0]], P[:, 0]])))
    area = 0.0
    for lo, hi in zip(xs[:-1], xs[1:]):
        above = P[P[:, 0] >= hi]
        if len(above):
            area += (hi - lo) * (above[:, 1].max() - ref[1])
    return area


def _nondominated_brute(P):
    ge = np.all(P[None, :, :] >= P[:, None, :], axis=-1)  # (N, N): row point weakly below column point
    gt = np.any(P[None, :, :] > P[:, None, :], axis=-1)
    return ~np.any(ge & gt, axis=1)


# --- hand-sized known answers -------------------------------------------------------------

def test_hypervolume_staircase():
    # columns [0,1], [1,2], [2,3] have heights 3, 2, 1
    assert pareto.hypervolume([[1, 3], [2, 2], [3, 1]], [0, 0]) == pytest.approx(6.0, abs=1e-12)


@pytest.mark.parametrize("n", [1, 2, 5, 20])
def test_hypervolume_points_on_a_line(n):
    # points (i/n, 1 - i/n): column ((i-1)/n, i/n] has height 1 - i/n, total (n - 1) / (2n)
    i = np.arange(n + 1)
    P = np.stack([i / n, 1 - i / n], axis=1)
    assert pareto.hypervolume(P, [0, 0]) == pytest.approx((n - 1) / (2 * n), abs=1e-12)


def test_hypervolume_3d_inclusion_exclusion():
    a, b = np.array([2.0, 1.0, 3.0]), np.array([1.0, 2.0, 1.0])
    expected = np.prod(a) + np.prod(b) - np.prod(np.minimum(a, b))
    assert pareto.hypervolume([a, b], [0, 0, 0]) == pytest.approx(expected, abs=1e-12)


def test_relative_hypervolume_of_the_front_is_zero_and_of_nothing_is_one():
    Z = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]])
    assert pareto.relative_hypervolume(Z, Z, [0, 0]) == pytest.approx(0.0, abs=1e-12)
    assert pareto.relative_hypervolume([[-1.0, -1.0]], Z, [0, 0]) == pytest.approx(1.0, abs=1e-12)
    # (2, 2) alone: 4 of 6
    assert pareto.relative_hypervolume([[2.0, 2.0]], Z, [0, 0]) == pytest.approx(1 - 4 / 6, abs=1e-12)


def test_pareto_filter_hand_set():
    P = [[1, 1], [0, 2], [0, 1], [2, 0], [1, 1], [0.5, 0.5]]
    assert pareto.pareto_filter(P).tolist() == [True, True, False, True, True, False]


@pytest.mark.parametrize("delta", [0.01, 0.1, 0.3])
def test_shifted_front_indicators_equal_the_shift(delta):
    # well-separated front (spacing 1 > delta), so each z's nearest shifted point is its own
    Z = np.stack([np.arange(5.0), 4 - np.arange(5.0)], axis=1)
    one_axis = Z - delta * np.array([1.0, 0.0])
    diagonal = Z - delta
    assert pareto.igd_plus(one_axis, Z) == pytest.approx(delta, abs=1e-12)
    assert pareto.epsilon_additive(one_axis, Z) == pytest.approx(delta, abs=1e-12)
    assert pareto.igd_plus(diagonal, Z) == pytest.approx(delta * np.sqrt(2), abs=1e-12)
    assert pareto.epsilon_additive(diagonal, Z) == pytest.approx(delta, abs=1e-12)
    assert pareto.epsilon_additive(Z + delta, Z) == pytest.approx(-delta, abs=1e-12)
    assert pareto.igd_plus(Z + delta, Z) == 0.0
    W = simplex_grid(2, 10)  # w . (z - delta 1) = w . z - delta on the simplex
    assert pareto.max_utility_loss(diagonal, Z, W) == pytest.approx(delta, abs=1e-12)
    assert pareto.expected_utility(Z, W) - pareto.expected_utility(diagonal, W) == pytest.approx(delta, abs=1e-12)


def test_expected_utility_of_two_vertices():
    W = simplex_grid(2, 2)  # (0,1), (1/2,1/2), (1,0): utilities 1, 1/2, 1
    assert pareto.expected_utility([[1, 0], [0, 1]], W) == pytest.approx(5 / 6, abs=1e-12)


def test_regret_and_normalised_regret():
    J_opt, J, J_ref = np.array([2.0, 1.0]), np.array([1.5, 1.0]), np.array([0.0, 0.5])
    assert pareto.regret(J_opt, J).tolist() == [0.5, 0.0]
    assert pareto.normalised_regret(J_opt, J, J_ref).tolist() == [0.25, 0.0]
    with pytest.raises(ValueError, match="J_ref"):
        pareto.normalised_regret(J_opt, J, J_opt)


def test_steerability_of_perfect_and_reversed_steering():
    W = simplex_grid(2, 10)
    s = pareto.steerability(W, 3 * W - 1)  # any increasing affine map of w: u = w after normalising
    np.testing.assert_allclose(s["spread"], [3.0, 3.0], atol=1e-12)
    np.testing.assert_allclose(s["rank_correlation"], [1.0, 1.0], atol=1e-12)
    assert s["inner_product"] == pytest.approx(np.mean(np.sum(W ** 2, axis=1)), abs=1e-12)
    assert s["angle"] == pytest.approx(0.0, abs=1e-6)
    r = pareto.steerability(W, W[:, ::-1])
    np.testing.assert_allclose(r["rank_correlation"], [-1.0, -1.0], atol=1e-12)
    # u = (1 - w_1, w_1) is orthogonal to w at the vertices; the mean angle exceeds the perfect one
    assert r["angle"] > 0.5
    flat = pareto.steerability(W, np.ones_like(W))
    assert np.all(np.isnan(flat["rank_correlation"])) and flat["spread"].tolist() == [0.0, 0.0]


def test_dominated_share_of_a_constructed_set():
    A = [[0, 0], [1, 1], [2, 0], [0.5, 0.5]]
    B = [[1, 1], [0.5, 0.5]]
    # (0,0) dominated; (1,1) only equal; (2,0) not; (0.5,0.5) dominated by (1,1)
    assert pareto.dominated_share(A, B) == pytest.approx(0.5)
    assert pareto.dominated_share(B, B) == pytest.approx(0.5)


@pytest.mark.parametrize("call, field", [
    (lambda: pareto.hypervolume([[1.0, np.nan]], [0, 0]), "points"),
    (lambda: pareto.hypervolume([[1.0, 2.0]], [0, 0, 0]), "ref"),
    (lambda: pareto.igd_plus([[1.0, 2.0]], [[1.0, 2.0, 3.0]]), "front"),
    (lambda: pareto.hypervolume(np.zeros((0, 2)), [0, 0]), "points"),
    (lambda: pareto.steerability(np.ones((3, 2)) / 2, np.ones((2, 2))), "R"),
    (lambda: pareto.expected_utility([[1.0, 2.0]], [[1.0]]), "W"),
    (lambda: pareto.regret([1.0, 2.0], [1.0]), "J"),
])
def test_bad_input_names_the_field(call, field):
    with pytest.raises(ValueError, match=f"^{field}:"):
        call()


# --- properties ---------------------------------------------------------------------------

points_2d = st.integers(1, 8).flatmap(lambda n: rewards(n, 2))
points_3d = st.integers(1, 8).flatmap(lambda n: rewards(n, 3))
REF2 = np.array([-4.0, -4.0])  # strategies.rewards lie in [-3, 3]
REF3 = np.array([-4.0, -4.0, -4.0])


@given(points_2d)
def test_hypervolume_2d_agrees_with_a_sweep(P):
    assert pareto.hypervolume(P, REF2) == pytest.approx(_hv_2d_sweep(P, REF2), rel=1e-12, abs=1e-12)


@given(points_3d, rewards(1, 3))
def test_hypervolume_monotone_under_adding_a_point(P, q):
    assert pareto.hypervolume(np.vstack([P, q]), REF3) >= pareto.hypervolume(P, REF3) - 1e-12


@given(points_3d, st.data())
def test_hypervolume_invariant_to_dominated_points(P, data):
    idx = data.draw(st.integers(0, len(P) - 1))
    shift = data.draw(rewards(3, scale=1.0)) ** 2  # >= 0 in every coordinate
    worse = P[idx] - shift
    assert pareto.hypervolume(np.vstack([P, worse]), REF3) == pytest.approx(
        pareto.hypervolume(P, REF3), rel=1e-12, abs=1e-12)


@given(points_3d)
def test_pareto_filter_agrees_with_brute_force(P):
    assert pareto.pareto_filter(P).tolist() == _nondominated_brute(P).tolist()
    # every point is either on the filtered front or dominated by it
    front = P[pareto.pareto_filter(P)]
    off = P[~pareto.pareto_filter(P)]
    if len(off):
        assert pareto.dominated_share(off, front) == 1.0


@given(points_2d, points_2d)
def test_a_superset_of_the_front_scores_perfectly(Z, extra):
    A = np.vstack([Z, extra])
    assert pareto.igd_plus(A, Z) == 0.0
    assert pareto.epsilon_additive(A, Z) <= 0.0
    assert pareto.max_utility_loss(A, Z, simplex_grid(2, 8)) <= 1e-12
    assert pareto.relative_hypervolume(A, Z, REF2 - 1) <= 1e-12


@given(simplex_stack(6, 2), rewards(6, 2))
def test_steerability_is_bounded(W, R):
    s = pareto.steerability(W, R)
    assert np.all(s["spread"] >= 0)
    rc = s["rank_correlation"][~np.isnan(s["rank_correlation"])]
    assert np.all(np.abs(rc) <= 1 + 1e-12)
    assert 0 <= s["inner_product"] <= 1 + 1e-12
    assert np.isnan(s["angle"]) or 0 <= s["angle"] <= np.pi / 2 + 1e-12
