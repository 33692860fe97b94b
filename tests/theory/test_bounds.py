"""P9: the bounds on the Hölder gap and on the zero-shot gap hold on every instance, and their
constants are approached in the limits THEORY.md names (beta -> 0, resp. D/beta -> 0)."""
import numpy as np
import pytest
from hypothesis import given, strategies as st
from scipy.special import log_softmax

from strategies import betas, logits, rewards, simplex_stack, trees
from theory import bounds, tree as tr
from theory.instances import Tree
from theory.random_instances import random_tree
from theory.solve import solve_tree


def _slack(tree: Tree) -> float:
    return 1e-9 * (1 + np.abs(tree.rewards).max())


def _check_all_bounds(tree: Tree, w: np.ndarray, beta: float) -> None:
    slack = _slack(tree)
    G = tr.holder_gap(tree, w, beta)
    pairwise = bounds.holder_gap_pairwise_bound(tree, w)
    by_eps = bounds.holder_gap_eps_bound(tree, w)
    for t in range(tree.horizon + 1):
        assert G[t].shape == pairwise[t].shape == by_eps[t].shape == (len(w), tree.vocab ** t)
        assert np.all(G[t] <= pairwise[t] + slack)
        assert np.all(pairwise[t] <= by_eps[t] + slack)
    if tree.m == 2:
        for G_t, b in zip(G, bounds.holder_gap_beta_bound(tree, w, beta)):
            assert np.all(G_t <= b + slack)
    gap = solve_tree(tree, w, beta)["gap"]
    stepwise = bounds.gap_stepwise_bound(tree, w, beta)
    alignment = bounds.gap_alignment_bound(tree, w, beta)
    assert gap.shape == stepwise.shape == alignment.shape == (len(w),)
    assert np.all(gap <= stepwise + slack)
    assert np.all(stepwise <= alignment + slack)


@given(trees(), betas(), st.data())
def test_p9_bounds_hold_on_random_trees(tree, beta, data):
    _check_all_bounds(tree, data.draw(simplex_stack(4, tree.m)), beta)


@given(st.integers(0, 2 ** 32 - 1), st.floats(0, 3), betas(), st.data())
def test_p9_bounds_hold_on_near_aligned_trees(seed, eps, beta, data):
    tree = random_tree(np.random.default_rng(seed), vocab=3, horizon=3, rewards=2, misalignment=eps)
    w = data.draw(simplex_stack(4, 2))
    _check_all_bounds(tree, w, beta)
    # alignment as a rate: the root Hölder gap is at most (1 - |w|^2) eps
    G_root = tr.holder_gap(tree, w, beta)[0][:, 0]
    assert np.all(G_root <= (1 - (w ** 2).sum(axis=1)) * eps + _slack(tree))


@given(logits(5), rewards(5, 1), betas())
def test_p9_one_step_hoeffding_bound(log_p, g, beta):
    log_p, g = log_softmax(log_p), g[:, 0]
    log_q = log_softmax(log_p + g / beta)  # q ∝ p exp(g / beta)
    q = np.exp(log_q)
    kl = np.sum(np.where(q > 0, q * (log_q - log_p), 0))
    assert beta * kl <= bounds.hoeffding_kl_bound(g, beta) + 1e-12 * (1 + np.abs(g).max())


def test_one_reward_bounds_are_zero_and_beta_bound_needs_two_rewards():
    tree = random_tree(np.random.default_rng(0), vocab=2, horizon=2, rewards=1)
    w = np.ones((2, 1))
    for b in bounds.holder_gap_pairwise_bound(tree, w) + bounds.holder_gap_eps_bound(tree, w):
        assert np.all(b == 0)
    assert np.all(bounds.gap_alignment_bound(tree, w, 0.1) == 0)
    with pytest.raises(ValueError, match="^rewards:"):
        bounds.holder_gap_beta_bound(random_tree(np.random.default_rng(0), rewards=3), np.ones((1, 3)) / 3, 0.1)


def test_bounds_batched_equal_one_at_a_time():
    tree = random_tree(np.random.default_rng(1), vocab=3, horizon=3, rewards=3)
    w = np.random.default_rng(2).dirichlet(np.ones(3), size=5)
    for k in range(len(w)):
        one = w[k:k + 1]
        for gap_bound in (bounds.gap_stepwise_bound, bounds.gap_alignment_bound):
            np.testing.assert_allclose(gap_bound(tree, w, 0.3)[k], gap_bound(tree, one, 0.3)[0], rtol=1e-12)
        for state_bound in (bounds.holder_gap_pairwise_bound, bounds.holder_gap_eps_bound):
            for a, b in zip(state_bound(tree, w), state_bound(tree, one)):
                np.testing.assert_allclose(a[k], b[0], rtol=1e-12)


# Tightness: each constant is approached in its limit (measured, not assumed).

def _two_leaf_tree(r) -> Tree:
    """V = 2, T = 1, uniform reference, leaf rewards ``r`` ``[2, 2]``."""
    return Tree.from_arrays(2, 1, np.zeros((1, 2)), r)


def test_pairwise_bound_is_approached_as_beta_goes_to_zero():
    # leaves (1, 0) and (0, 1), w = (1/2, 1/2): G(root) -> 1/2 = w_1 w_2 osc(r_1 - r_2)
    tree = _two_leaf_tree([[1.0, 0.0], [0.0, 1.0]])
    w = np.array([[0.5, 0.5]])
    ratios = [tr.holder_gap(tree, w, beta)[0][0, 0] / bounds.holder_gap_pairwise_bound(tree, w)[0][0, 0]
              for beta in (1e-1, 1e-2, 1e-3)]
    assert np.all(np.diff(ratios) > 0) and ratios[-1] > 0.99  # 1 - 2 beta log 2 for this instance
    np.testing.assert_allclose(ratios[-1], 1 - 2e-3 * np.log(2), rtol=1e-6)


def test_beta_bound_d_squared_over_8_beta_is_approached_as_d_over_beta_goes_to_zero():
    # r_1 = 0 and r_2 = +-D/2 with equal reference mass: psi'' = D^2/4 is attained
    D, lam = 1e-2, 0.3
    tree = _two_leaf_tree([[0.0, D / 2], [0.0, -D / 2]])
    w = np.array([[lam, 1 - lam]])
    ratios = []
    for beta in (D, 10 * D, 100 * D):
        bound = bounds.holder_gap_beta_bound(tree, w, beta)[0][0, 0]
        np.testing.assert_allclose(bound, lam * (1 - lam) * min(D, D ** 2 / (8 * beta)))
        ratios.append(tr.holder_gap(tree, w, beta)[0][0, 0] / bound)
    assert np.all(np.diff(ratios) > 0) and ratios[-1] > 0.999


def test_hoeffding_constant_one_eighth_is_approached():
    # two-point g = (0, d) under uniform p, beta >> d: beta KL(q || p) / (d^2 / (8 beta)) -> 1
    d, log_p = 1.0, np.log([0.5, 0.5])
    g = np.array([0.0, d])
    ratios = []
    for beta in (1.0, 10.0, 100.0):
        log_q = log_softmax(log_p + g / beta)
        kl = np.sum(np.exp(log_q) * (log_q - log_p))
        ratios.append(beta * kl / bounds.hoeffding_kl_bound(g, beta))
    assert np.all(np.diff(ratios) > 0) and ratios[-1] > 0.999
