"""Bandits: the Gibbs optimum (P1, P2), exact zero-shot mixing (P3), KL conditioning (P4)."""
import numpy as np
from hypothesis import given, strategies as st
from scipy.special import log_softmax

from strategies import bandits, betas, extreme_betas, logits, rewards, simplex, simplex_stack
from theory import gibbs
from theory.instances import Bandit
from theory.mixing import kl_weight_mix, logit_mix, mix_parameters
from theory.solve import solve_bandit


def _tol(bandit: Bandit, beta: float) -> float:
    """1e-9 relative to the size of the numbers involved (rewards, and rewards/beta inside logs)."""
    r = np.abs(bandit.rewards).max()
    return 1e-9 * (1 + r + beta)


def _random_policies(data, bandit: Bandit, n: int, log_star: np.ndarray | None = None) -> np.ndarray:
    """``n`` policies ``[n, X, Y]``: random ones, and (if given) perturbations of ``log_star`` at several scales."""
    X, Y = bandit.ref_logp.shape
    out = [log_softmax(data.draw(logits(X, Y)), axis=-1) for _ in range(n)]
    if log_star is not None:
        for size in (1e-3, 1e-1, 1.0):
            out.append(log_softmax(log_star + size * data.draw(logits(X, Y)) / 5, axis=-1))
    return np.stack(out)


@given(bandits(), betas(), st.data())
def test_p1_optimal_value_and_regret_identity(bandit, beta, data):
    w = data.draw(simplex_stack(3, bandit.m))
    log_star = gibbs.gibbs_log_policy(bandit, w, beta)  # (K, X, Y)
    star = gibbs.bandit_stats(bandit, log_star, w, beta)
    tol = _tol(bandit, beta)
    # P1: J_w(pi*_w) = beta E_rho log Z_w
    np.testing.assert_allclose(star["objective"], gibbs.optimal_value(bandit, w, beta), rtol=0, atol=tol)
    # P1: J_w(pi*) - J_w(pi) = beta E_rho KL(pi || pi*_w) for random policies pi
    for log_pi in _random_policies(data, bandit, 3):
        pis = np.broadcast_to(log_pi, log_star.shape)
        J = gibbs.bandit_stats(bandit, pis, w, beta)["objective"]
        np.testing.assert_allclose(star["objective"] - J, beta * gibbs.kl_to(bandit, pis, log_star),
                                   rtol=1e-9, atol=tol)


@given(bandits(), betas(), st.data())
def test_p2_optimum_is_pareto_optimal_against_random_and_nearby_policies(bandit, beta, data):
    w = data.draw(simplex(bandit.m))[None]  # (1, m), vertices included
    log_star = gibbs.gibbs_log_policy(bandit, w, beta)[0]  # (X, Y)
    star = gibbs.bandit_stats(bandit, log_star[None], w, beta)
    candidates = np.concatenate([_random_policies(data, bandit, 4, log_star), log_star[None]])  # (n, X, Y)
    stats = gibbs.bandit_stats(bandit, candidates, np.repeat(w, len(candidates), 0), beta)
    # how far each candidate is from weakly dominating pi*_w in (R_1 .. R_m, -K)
    shortfall = np.maximum((star["rewards"] - stats["rewards"]).max(axis=1), stats["kl"] - star["kl"])
    kl_to_star = gibbs.kl_to(bandit, candidates, np.broadcast_to(log_star, candidates.shape))
    tol = _tol(bandit, beta)
    # P1 + P2: beta KL(pi || pi*) = w.(R* - R) + beta (K - K*) <= (1 + beta) shortfall, so no
    # candidate dominates strictly, and one that dominates weakly is pi*_w itself.
    assert np.all(shortfall >= -tol)
    assert np.all(beta * kl_to_star <= (1 + beta) * np.maximum(shortfall, 0) + tol)
    assert abs(shortfall[-1]) <= tol  # pi*_w is in the candidate list and ties with itself


@given(bandits(), betas(), st.data())
def test_batched_over_weightings_equals_one_at_a_time(bandit, beta, data):
    w = data.draw(simplex_stack(4, bandit.m))
    batched = solve_bandit(bandit, w, beta)
    for k in range(len(w)):
        single = solve_bandit(bandit, w[k:k + 1], beta)
        for key in ("gap", "log_partition"):
            np.testing.assert_allclose(batched[key][k], single[key][0], rtol=1e-12, atol=1e-12)
        for point in ("optimal", "logit_mix"):
            for key in ("rewards", "kl", "objective"):
                np.testing.assert_allclose(batched[point][key][k], single[point][key][0], rtol=1e-12, atol=1e-12)


@given(bandits(), betas(), st.data())
def test_p3_logit_mix_of_per_reward_optima_is_the_optimum(bandit, beta, data):
    w = data.draw(simplex_stack(3, bandit.m))
    experts = gibbs.per_reward_log_policies(bandit, beta)  # (m, X, Y)
    mixed = logit_mix(experts, w)
    star = gibbs.gibbs_log_policy(bandit, w, beta)
    spread = np.abs(bandit.rewards).max() / beta  # log-probabilities are of this size
    np.testing.assert_allclose(mixed, star, rtol=0, atol=1e-9 * (1 + spread))
    assert np.all(np.abs(solve_bandit(bandit, w, beta)["gap"]) < 1e-9)
    # Rewarded Soups on a softmax table: each expert's parameters are its logits plus an
    # arbitrary per-context constant; averaging parameters = logit mixing up to a constant.
    X = bandit.ref_logp.shape[0]
    shifts = data.draw(logits(bandit.m, X))[:, :, None]  # (m, X, 1)
    theta = mix_parameters(experts + shifts, w)  # (K, X, Y)
    np.testing.assert_allclose(log_softmax(theta, axis=-1), star, rtol=0, atol=1e-9 * (1 + spread))
    offset = theta - mixed  # constant over responses y
    np.testing.assert_allclose(offset - offset[..., :1], 0, atol=1e-9 * (1 + spread))


@given(bandits(max_m=1), betas(), st.lists(st.floats(0.05, 3.0), min_size=1, max_size=4))
def test_p4_kl_weight_mixing_gives_the_optimum_at_beta_over_lam(bandit, beta, lams):
    lam = np.array(lams)
    log_star = gibbs.gibbs_log_policy(bandit, np.ones((1, 1)), beta)[0]  # (X, Y)
    mixed = kl_weight_mix(bandit.ref_logp, log_star, lam)  # (K, X, Y)
    for k, l in enumerate(lam):
        direct = gibbs.gibbs_log_policy(bandit, np.ones((1, 1)), beta / l)[0]
        spread = np.abs(bandit.rewards).max() * l / beta
        np.testing.assert_allclose(mixed[k], direct, rtol=0, atol=1e-9 * (1 + spread))


def test_hand_sized_gibbs_policy():
    # two responses, uniform reference, reward (0, 1), beta = 1: pi* = (1, e)/(1 + e)
    bandit = Bandit.from_arrays([1.0], [[0.0, 0.0]], [[[0.0], [1.0]]])
    pi = np.exp(gibbs.gibbs_log_policy(bandit, np.ones((1, 1)), 1.0))[0, 0]
    np.testing.assert_allclose(pi, [1 / (1 + np.e), np.e / (1 + np.e)], rtol=1e-15)
    np.testing.assert_allclose(gibbs.optimal_value(bandit, np.ones((1, 1)), 1.0), np.log((1 + np.e) / 2))


@given(st.data(), extreme_betas())
def test_finite_at_extreme_beta_and_large_rewards(data, beta):
    X, Y, m = 2, 4, 3
    bandit = Bandit.from_arrays(data.draw(simplex(X)), data.draw(logits(X, Y)),
                                data.draw(rewards(X, Y, m, scale=1e3)))
    for b in (beta, 1e-4, 1e4):
        out = solve_bandit(bandit, data.draw(simplex_stack(3, m)), b)
        for value in (out["gap"], out["log_partition"], *out["optimal"].values(), *out["logit_mix"].values()):
            assert np.all(np.isfinite(value))
        assert np.all(out["optimal"]["kl"] >= -1e-9)
