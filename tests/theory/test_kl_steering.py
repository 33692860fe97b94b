"""KL-weight steering in trees (THEORY.md P4, section 5): realigned policy vs the optimum at beta/lam."""
import numpy as np
import pytest
from hypothesis import given, strategies as st
from strategies import betas, extreme_betas, logits, rewards, trees

from theory import kl_steering as ks, tree as tr
from theory.instances import Tree

lams = st.lists(st.floats(0.05, 5.0), min_size=1, max_size=4).map(np.array)


def _direct_optimum(tree, lam, beta, i=0):
    """pi*_{beta/lam} computed at KL weight beta/lam itself, one lam at a time."""
    e = np.eye(tree.m)[i:i + 1]
    per_lam = [tr.optimal_token_policy(tree, e, beta / l) for l in lam]
    return [np.concatenate([p[t] for p in per_lam]) for t in range(tree.horizon)]


@given(trees(max_T=1), betas(), lams)
def test_bandit_realignment_is_exact(tree, beta, lam):
    # P4: in a one-step tree the realigned policy is pi*_{beta/lam} and the gap vanishes
    real = ks.realigned_token_policy(tree, lam, beta)
    np.testing.assert_allclose(real[0], _direct_optimum(tree, lam, beta)[0], atol=1e-9)
    out = ks.kl_steering_gap(tree, lam, beta)
    np.testing.assert_allclose(out["gap"], 0.0, atol=1e-9)


@given(trees(max_V=3, max_T=3), betas(), lams, st.data())
def test_tree_gap_is_nonnegative_identity_and_bounded(tree, beta, lam, data):
    i = data.draw(st.integers(0, tree.m - 1))
    out = ks.kl_steering_gap(tree, lam, beta, reward=i)
    tol = 1e-9 * max(1.0, np.abs(tree.rewards).max())
    assert np.all(out["gap"] >= -tol)
    np.testing.assert_allclose(out["gap"], out["beta_eff"] * out["kl_realigned_to_opt"], atol=tol)
    assert np.all(out["gap"] <= out["gap_bound"] + tol)
    assert np.all(out["lyapunov_holds"])
    # the optimum's J at beta/lam is the soft value at the root (P1/P5), computed at beta/lam directly
    direct = [tr.soft_values_w(tree, np.eye(tree.m)[i:i + 1], beta / l)[0][0, 0] for l in lam]
    np.testing.assert_allclose(out["optimal"]["objective"], direct, atol=tol)
    # and the optimum itself matches the direct route at beta/lam
    for got, want in zip(ks._scaled_optimum(tree, lam, beta, i)[1], _direct_optimum(tree, lam, beta, i)):
        np.testing.assert_allclose(got, want, atol=1e-9)


@given(st.integers(2, 3), st.integers(2, 3), betas(), lams, st.data())
def test_gap_vanishes_when_reward_is_constant_below_depth_one(V, T, beta, lam, data):
    # r depends on the first token only: Lyapunov holds with equality at every state of depth >= 1
    N = sum(V ** t for t in range(T))
    first = data.draw(rewards(V, 1))  # (V, 1)
    r = np.repeat(first, V ** (T - 1), axis=0)  # leaves are lexicographic: first token is the slowest digit
    tree = Tree.from_arrays(V, T, data.draw(logits(N, V)), r)
    out = ks.kl_steering_gap(tree, lam, beta)
    np.testing.assert_allclose(out["gap"], 0.0, atol=1e-9)
    for L_t in out["lyapunov_gap"][1:]:
        np.testing.assert_allclose(L_t, 0.0, atol=1e-9)


@given(trees(), betas())
def test_lam_one_is_the_optimum_itself(tree, beta):
    out = ks.kl_steering_gap(tree, [1.0], beta)
    np.testing.assert_allclose(out["gap"], 0.0, atol=1e-9)
    real = ks.realigned_token_policy(tree, [1.0], beta)
    for got, want in zip(real, tr.optimal_token_policy(tree, np.eye(tree.m)[:1], beta)):
        np.testing.assert_allclose(got, want, atol=1e-12)


def test_a_misaligned_tree_has_a_positive_gap():
    # P10's tree, reward 0: branch A pays (1 or 0), branch B pays c; not constant below the root
    from theory.random_instances import p10_tree
    out = ks.kl_steering_gap(p10_tree(), [0.25, 0.5, 2.0], 0.2)
    assert np.all(out["gap"] > 1e-6) and np.all(out["gap"] <= out["gap_bound"])


@given(trees(max_V=2, max_T=3, scale=1e3), extreme_betas(), lams)
def test_results_are_finite_at_extreme_betas(tree, beta, lam):
    out = ks.kl_steering_gap(tree, lam, beta)
    for key in ("gap", "kl_realigned_to_opt", "gap_bound", "lyapunov_root"):
        assert np.all(np.isfinite(out[key])), key


def test_bad_input_names_the_field():
    tree = Tree.from_arrays(2, 2, np.zeros((3, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="^reward:"):
        ks.kl_steering_gap(tree, [0.5], 1.0, reward=2)
    with pytest.raises(ValueError, match="^lam:"):
        ks.realigned_token_policy(tree, [0.0], 1.0)
    with pytest.raises(ValueError, match="^beta:"):
        ks.kl_steering_gap(tree, [0.5], -1.0)
