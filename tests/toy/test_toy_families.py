"""toy.families and toy.weightings: instance families and weighting samplers."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from theory import tree as tr
from theory.solve import solve_tree
from theory.weights import simplex_grid
from toy.families import subtree_aligned_tree, subtree_constant_tree
from toy.weightings import DISTRIBUTIONS, sample_weightings


@given(st.sampled_from(DISTRIBUTIONS), st.integers(1, 5), st.integers(1, 50), st.floats(0.05, 5.0),
       st.floats(0.0, 1.0), st.integers(0, 2 ** 32 - 1))
def test_samplers_stay_on_the_simplex(D, m, K, alpha, p_vertex, seed):
    w = sample_weightings(np.random.default_rng(seed), D, K, m, alpha=alpha, p_vertex=p_vertex)
    assert w.shape == (K, m)
    assert np.all(w >= 0)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)


def test_vertices_are_drawn():
    w = sample_weightings(np.random.default_rng(0), "uniform+vertices", 200, 3, p_vertex=0.5)
    share = np.mean(np.isclose(w.max(axis=1), 1.0))
    assert 0.35 < share < 0.65  # Binomial(200, 0.5): these bounds are ~4 standard deviations


@given(st.integers(2, 3), st.integers(1, 3), st.integers(2, 3), st.floats(0.0, 2.0), st.integers(0, 10 ** 6))
def test_subtree_aligned_tree_misalignment_below_depth(V, T, m, eps, seed):
    depth = seed % (T + 1)
    tree = subtree_aligned_tree(np.random.default_rng(seed), V, T, m, depth=depth, eps=eps)
    for t in range(depth, T + 1):
        assert tr.misalignment(tree)[t].max() <= eps / 1.0 + 1e-12  # |u_i - u_j| <= 1, so eps(s) <= eps


@given(st.integers(2, 3), st.integers(1, 3), st.integers(2, 3), st.integers(0, 10 ** 6), st.floats(0.05, 5.0))
def test_aligned_below_root_makes_zero_shot_exact(V, T, m, seed, beta):
    """P6: G_w(s a) = 0 for every child of the root, so the mixture is exact, although eps(root) > 0."""
    tree = subtree_aligned_tree(np.random.default_rng(seed), V, T, m, depth=1, eps=0.0)
    gap = solve_tree(tree, simplex_grid(m, 4), beta)["gap"]
    assert np.abs(gap).max() < 1e-9 * (1 + np.abs(tree.rewards).max())


def test_subtree_constant_tree_depends_on_the_first_tokens_only():
    tree = subtree_constant_tree(np.random.default_rng(0), vocab=3, horizon=3, rewards=2, depth=1)
    r = tree.rewards.reshape(3, 9, 2)  # (first token, continuation, m)
    assert np.all(r == r[:, :1])
    assert len(np.unique(r[:, 0, 0])) == 3


@pytest.mark.parametrize("call,field", [
    (lambda: sample_weightings(np.random.default_rng(0), "beta", 3, 2), "D"),
    (lambda: subtree_aligned_tree(np.random.default_rng(0), 2, 2, 2, depth=3), "depth"),
    (lambda: subtree_aligned_tree(np.random.default_rng(0), 2, 2, 2, eps=-1.0), "eps"),
])
def test_bad_input_is_refused(call, field):
    with pytest.raises(ValueError, match=f"^{field}:"):
        call()
