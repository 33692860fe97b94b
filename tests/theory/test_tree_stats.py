"""theory.tree_stats: the one-pass closed forms against the token-policy route of theory.tree
(P5 policies, per-token mixture, chain-rule KL), by blocks of weightings; its log-sum-exp
against scipy's."""
import numpy as np
from hypothesis import given, strategies as st
from scipy.special import logsumexp

from strategies import betas, simplex_stack, trees
from theory import tree as tr
from theory.tree_stats import optimum_and_mixture_stats


def _token_route(tree, w, beta):
    """Build pi*_w and pi^mix_w token by token and evaluate them (the pre-existing route)."""
    log_star = tr.optimal_token_policy(tree, w, beta)
    log_mix = tr.zero_shot_token_policy(tree, w, beta)
    V_i = tr.per_reward_soft_values(tree, beta)
    V_w = tr.soft_values_w(tree, w, beta)
    return {"optimal": tr.sequence_stats(tree, log_star, w, beta),
            "logit_mix": tr.sequence_stats(tree, log_mix, w, beta),
            "kl_mix_to_opt": np.sum(tr.stepwise_kl(tree, log_mix, log_star), axis=0),
            "log_partition": V_w[0][:, 0] / beta,
            "holder_gap_root": (w @ V_i[0] - V_w[0])[:, 0]}


@given(trees(), betas(), st.data(), st.sampled_from([None, 1, 2]))
def test_equals_the_token_policy_route(tree, beta, data, block):
    w = data.draw(simplex_stack(3, tree.m))
    got = optimum_and_mixture_stats(tree, w, beta, block=block)
    want = _token_route(tree, w, beta)
    scale = 1 + np.abs(tree.rewards).max()
    atol = 1e-9 * scale * (1 + 1 / beta)
    for point in ("optimal", "logit_mix"):
        for key in ("rewards", "kl", "objective"):
            np.testing.assert_allclose(got[point][key], want[point][key], rtol=1e-9, atol=atol,
                                       err_msg=f"{point}.{key}")
    for key in ("kl_mix_to_opt", "log_partition", "holder_gap_root"):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-9, atol=atol, err_msg=key)


def test_logsumexp_rows_equals_scipy_and_keeps_minus_infinity():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 4, 5)) * 50
    x[1, :, 2] = -np.inf  # an all -inf column
    x[2, 0, 0] = -np.inf
    got = tr.logsumexp_rows(x)
    np.testing.assert_allclose(got, logsumexp(x, axis=1), rtol=1e-14, atol=1e-12)
    assert got[1, 2] == -np.inf
    np.testing.assert_allclose(tr.logsumexp_siblings(x.transpose(0, 2, 1)), got, rtol=0, atol=0)
