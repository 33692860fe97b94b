"""toy.train: multi-task training from the zero-shot point (THEORY.md section 4)."""
import numpy as np
import pytest
from hypothesis import given, strategies as st
from strategies import aligned_trees, betas, simplex_stack, trees

from theory import tree as tr
from theory.random_instances import p10_tree
from theory.weights import simplex_grid
from toy.objective import policy_log_probs
from toy.policies import LinearCLP
from toy.train import TrainConfig, train


@given(trees(max_V=3, max_T=3, max_m=3, min_m=2), betas(), st.data())
def test_training_from_zero_shot_never_lowers_the_training_objective(tree, beta, data):
    w = data.draw(simplex_stack(6, tree.m))
    policy = LinearCLP(tree, beta)
    hist = train(policy, tree, beta, w, TrainConfig(steps=40, lr=0.05))
    # initial = the zero-shot mixture's objective, computed independently by theory
    J_zs = tr.sequence_stats(tree, tr.zero_shot_token_policy(tree, w, beta), w, beta)["objective"].mean()
    tol = 1e-9 * (1 + abs(J_zs))
    assert abs(hist["initial"] - J_zs) <= tol
    J_final = tr.sequence_stats(tree, policy_log_probs(policy, w), w, beta)["objective"].mean()
    assert abs(hist["final"] - J_final) <= tol
    assert J_final >= J_zs - tol


@given(aligned_trees(max_V=3, max_T=3, max_m=3), betas(), st.data())
def test_aligned_training_stays_optimal(tree, beta, data):
    """P8: zero-shot is already optimal for every w, so exact training returns it unchanged in value.

    (Sampled training is not tested here: Adam with a constant step size bounces around an
    optimum with steps of ~lr whatever the gradient's size, so it only stays near it; E4
    measures how near.)
    """
    w = data.draw(simplex_stack(4, tree.m))
    J_opt = tr.soft_values_w(tree, w, beta)[0][:, 0]
    policy = LinearCLP(tree, beta)
    train(policy, tree, beta, w, TrainConfig(steps=20))
    J = tr.sequence_stats(tree, policy_log_probs(policy, w), w, beta)["objective"]
    assert np.abs(J_opt - J).max() <= 1e-9 * (1 + np.abs(J_opt).max())


def test_linear_clp_improves_on_p10_but_stays_above_the_optimum():
    """P10 by hand: at w = (1/2, 1/2) zero-shot goes to branch A (about (1/2, 1/2)); training moves mass to B."""
    tree, beta = p10_tree(0.8), 0.05
    grid = simplex_grid(2, 10)
    policy = LinearCLP(tree, beta)
    hist = train(policy, tree, beta, grid, TrainConfig(steps=200))
    assert hist["final"] > hist["initial"] + 0.01
    J_opt = tr.soft_values_w(tree, grid, beta)[0][:, 0]
    J = tr.sequence_stats(tree, policy_log_probs(policy, grid), grid, beta)["objective"]
    assert np.all(J <= J_opt + 1e-12)
    assert (J_opt - J).mean() > 1e-3  # P10: logits linear in w cannot be optimal on the whole grid
    half = np.array([[0.5, 0.5]])
    p_B_zero_shot = np.exp(tr.zero_shot_token_policy(tree, half, beta)[0][0, 0, 1])
    p_B_trained = np.exp(policy_log_probs(policy, half)[0][0, 0, 1])
    assert p_B_zero_shot < 0.5 < p_B_trained  # the optimum at w = (1/2, 1/2) takes B (c = 0.8 > ~1/2)


@pytest.mark.parametrize("field,kwargs", [("estimator", {"estimator": "sgd"}), ("steps", {"steps": -1})])
def test_bad_config_is_refused(field, kwargs):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**kwargs)
