"""Log-linear policies and Rewarded Soups under function approximation (THEORY.md section 5)."""
import numpy as np
import pytest
from hypothesis import given, strategies as st
from strategies import betas, simplex_stack

from theory import gibbs, loglinear as ll
from theory.mixing import mix_parameters

seeds = st.integers(0, 2 ** 32 - 1)


def _J(bandit, phi, theta, W, beta):
    return gibbs.bandit_stats(bandit, ll.loglinear_log_policy(phi, theta), W, beta)["objective"]


@given(seeds, st.floats(0.0, 3.0))
def test_gradient_matches_central_differences(seed, mis):
    rng = np.random.default_rng(seed)
    bandit, phi, theta_ref, _ = ll.feature_bandit(rng, 2, 5, 3, 2, mis)
    log_q = gibbs.gibbs_log_policy(bandit, np.array([[0.3, 0.7]]), 0.7)[0]
    theta = rng.normal(size=3)
    _, grad = ll.kl_to_target_and_grad(theta, phi, bandit.context_probs, log_q)
    h = 1e-6
    fd = np.array([(ll.kl_to_target_and_grad(theta + h * e, phi, bandit.context_probs, log_q)[0]
                    - ll.kl_to_target_and_grad(theta - h * e, phi, bandit.context_probs, log_q)[0]) / (2 * h)
                   for e in np.eye(3)])
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)


@given(seeds, betas(), simplex_stack(3, 2))
def test_realisable_closed_form_is_the_gibbs_policy(seed, beta, W):
    rng = np.random.default_rng(seed)
    bandit, phi, theta_ref, psi = ll.feature_bandit(rng, 3, 6, 4, 2, 0.0)
    theta = ll.realisable_optimum(theta_ref, psi, W, beta)
    np.testing.assert_allclose(ll.loglinear_log_policy(phi, theta), gibbs.gibbs_log_policy(bandit, W, beta),
                               atol=1e-9 * max(1.0, 1 / beta))


@given(seeds, st.floats(0.1, 10.0), simplex_stack(3, 2))
def test_realisable_best_in_class_and_averaging_are_exact(seed, beta, W):
    rng = np.random.default_rng(seed)
    bandit, phi, theta_ref, psi = ll.feature_bandit(rng, 3, 6, 4, 2, 0.0)
    theta_best = ll.best_in_class(bandit, phi, W, beta)
    # theta itself is compared through its policy: near-deterministic policies (small beta) leave
    # directions of theta along which KL changes below rounding, so theta is not pinned to 1e-6
    log_best = ll.loglinear_log_policy(phi, theta_best)
    log_closed = ll.loglinear_log_policy(phi, ll.realisable_optimum(theta_ref, psi, W, beta))
    assert np.all(gibbs.kl_to(bandit, log_best, log_closed) <= 1e-12)
    theta_avg = mix_parameters(ll.best_in_class(bandit, phi, np.eye(2), beta), W)
    J_opt = gibbs.optimal_value(bandit, W, beta)  # P1, closed form
    np.testing.assert_allclose(_J(bandit, phi, theta_avg, W, beta), J_opt, atol=1e-9)
    np.testing.assert_allclose(_J(bandit, phi, theta_best, W, beta), J_opt, atol=1e-9)


@given(seeds, st.floats(0.3, 3.0))
def test_misspecified_best_in_class_is_stationary_and_beats_averaging(seed, mis):
    rng = np.random.default_rng(seed)
    bandit, phi, _, _ = ll.feature_bandit(rng, 3, 6, 3, 2, mis)
    beta = 0.5
    W = np.array([[1.0, 0.0], [0.5, 0.5], [0.2, 0.8], [0.0, 1.0]])
    theta_avg = mix_parameters(ll.best_in_class(bandit, phi, np.eye(2), beta), W)
    # the search is local (non-convex projection): the average is one of its starts, so the
    # measured gap is a lower bound on the true one and must be >= 0
    theta_best = ll.best_in_class(bandit, phi, W, beta, theta_init=theta_avg)
    J_best, J_avg = _J(bandit, phi, theta_best, W, beta), _J(bandit, phi, theta_avg, W, beta)
    assert np.all(J_best - J_avg >= -1e-12), J_best - J_avg
    assert np.all(gibbs.optimal_value(bandit, W, beta) >= J_best - 1e-12)  # the class is a subset
    # first-order optimality, by central differences of J_w(pi_theta) from gibbs.bandit_stats
    # (independent of the analytic gradient): grad J = -beta grad KL = 0 at a minimiser
    h = 1e-5
    for k in range(len(W)):
        grad = [(_J(bandit, phi, theta_best[k:k + 1] + h * e, W[k:k + 1], beta)
                 - _J(bandit, phi, theta_best[k:k + 1] - h * e, W[k:k + 1], beta))[0] / (2 * h)
                for e in np.eye(3)]
        np.testing.assert_allclose(grad, 0.0, atol=1e-6)


def test_misspecification_opens_a_gap():
    # the measured quantity of section 5: a gap that is 0 when realisable and positive otherwise
    rng = np.random.default_rng(0)
    W = np.array([[0.5, 0.5]])
    gaps = []
    for mis in (0.0, 1.0):
        bandit, phi, _, _ = ll.feature_bandit(rng, 3, 8, 3, 2, mis)
        avg = mix_parameters(ll.best_in_class(bandit, phi, np.eye(2), 0.5), W)
        best = ll.best_in_class(bandit, phi, W, 0.5, theta_init=avg)
        gaps.append(float((_J(bandit, phi, best, W, 0.5) - _J(bandit, phi, avg, W, 0.5))[0]))
    assert abs(gaps[0]) < 1e-9 and gaps[1] > 1e-6, gaps


def test_random_restarts_reach_a_better_basin():
    rng = np.random.default_rng(989)  # an instance whose fit and zero starts miss the best basin
    bandit, phi, _, _ = ll.feature_bandit(rng, 3, 6, 3, 2, 1.0)
    W = np.array([[0.5, 0.5], [0.2, 0.8]])
    plain = _J(bandit, phi, ll.best_in_class(bandit, phi, W, 0.5), W, 0.5)
    theta = ll.best_in_class(bandit, phi, W, 0.5, restarts=4, rng=np.random.default_rng(1))
    more = _J(bandit, phi, theta, W, 0.5)
    assert np.all(more >= plain - 1e-12) and more[0] > plain[0] + 1e-3, more - plain


def test_bad_input_names_the_field():
    rng = np.random.default_rng(0)
    bandit, phi, theta_ref, psi = ll.feature_bandit(rng, 2, 4, 3, 2, 0.0)
    with pytest.raises(ValueError, match="^phi:"):
        ll.best_in_class(bandit, phi[:, :3], [0.5, 0.5], 1.0)
    with pytest.raises(ValueError, match="^theta:"):
        ll.loglinear_log_policy(phi, np.ones(4))
    with pytest.raises(ValueError, match="^weights:"):
        ll.realisable_optimum(theta_ref, psi, [0.5, 0.6], 1.0)
    with pytest.raises(ValueError, match="^beta:"):
        ll.best_in_class(bandit, phi, [0.5, 0.5], 0.0)
    with pytest.raises(ValueError, match="^misspecification:"):
        ll.feature_bandit(rng, 2, 4, 3, 2, -1.0)
    with pytest.raises(ValueError, match="^rng:"):
        ll.best_in_class(bandit, phi, [0.5, 0.5], 1.0, restarts=2)
    with pytest.raises(ValueError, match="^theta_init:"):
        ll.best_in_class(bandit, phi, [[0.5, 0.5]] * 3, 1.0, theta_init=np.zeros((2, 3)))
