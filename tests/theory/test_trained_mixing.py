"""P11, P12: zero-shot mixing of trained experts. Regrets, the decomposition and the bounds
against brute-force enumeration of the sequences (tests/fixtures/brute_force.py: no soft values,
no theory code), and the tightness of the bounds' constants."""
import itertools

import numpy as np
import pytest
from hypothesis import given, strategies as st
from scipy.special import log_softmax, logsumexp

from fixtures.brute_force import ref_sequence_logp, sequence_logp_from_conditionals, solve_tree, \
    token_conditionals
from strategies import betas, simplex_stack, trees
from theory import tree as tr
from theory.instances import Bandit, Tree
from theory.loglinear import feature_bandit, loglinear_log_policy, realisable_optimum
from theory.mixing import mix_parameters
from theory.trained_mixing import bandit_mixing_gap, feature_distance_bound, mixture_divergence, trained_mixing_gap


def _noisy_experts(tree: Tree, beta: float, seed: int) -> list:
    """The exact per-reward optima with normal logit noise of a log-uniform size in [1e-3, 3]."""
    rng = np.random.default_rng(seed)
    noise = 10 ** rng.uniform(-3, 0.5)
    return [log_softmax(lp + noise * rng.normal(size=lp.shape), axis=-1)
            for lp in tr.per_reward_token_policies(tree, beta)]


def _conditionals(tree: Tree, experts: list, i: int) -> dict:
    """Expert i as ``{prefix tuple: log-probs [V]}`` (prefix index = its base-V number)."""
    V = tree.vocab
    return {s: experts[t][i, sum(a * V ** (t - 1 - k) for k, a in enumerate(s))]
            for t in range(tree.horizon) for s in itertools.product(range(V), repeat=t)}


def _brute(tree: Tree, experts: list, w: np.ndarray, beta: float) -> dict:
    """Regret, ideal gap and KL(q || q*) of one weighting ``w`` ``[m]`` by enumerating sequences."""
    inst, V, T = tree.to_json(), tree.vocab, tree.horizon
    log_ref = ref_sequence_logp(inst)
    trained = [_conditionals(tree, experts, i) for i in range(tree.m)]
    exact = [token_conditionals(log_softmax(log_ref + tree.rewards[:, i] / beta), V, T) for i in range(tree.m)]

    def mixture(cond):  # logit mixing, prefix by prefix, then the sequence law
        mix = {s: log_softmax(sum(w[i] * cond[i][s] for i in range(tree.m))) for s in cond[0]}
        return sequence_logp_from_conditionals(mix, V, T)

    log_q, log_q_star = mixture(trained), mixture(exact)
    q = np.exp(log_q)
    J_q = q @ tree.rewards @ w - beta * q @ (log_q - log_ref)
    ref = solve_tree(inst, w, beta)
    return {"regret": ref["optimal"]["objective"] - J_q, "ideal_regret": ref["gap"],
            "kl_to_ideal": q @ (log_q - log_q_star)}


def _tol(tree: Tree, beta: float) -> float:
    return 1e-8 * (1 + np.abs(tree.rewards).max() + beta) * (1 + 1 / beta)


@given(trees(max_V=3, max_T=3, max_m=3), betas(), st.integers(0, 2 ** 32 - 1), st.data())
def test_p11_regret_and_decomposition_equal_brute_force_enumeration(tree, beta, seed, data):
    """(a) and (b). Catches: a wrong sign of the visitation term, the ideal's visitation used for the
    trained one, H without its beta, the regret under the ideal's visitation (each tried by hand)."""
    w = data.draw(simplex_stack(2, tree.m))
    experts = _noisy_experts(tree, beta, seed)
    got = trained_mixing_gap(tree, experts, w, beta)
    for k in range(len(w)):
        want = _brute(tree, experts, w[k], beta)
        tol = _tol(tree, beta)
        np.testing.assert_allclose(got["regret"][k], want["regret"], rtol=1e-7, atol=tol)
        np.testing.assert_allclose(got["ideal_regret"][k], want["ideal_regret"], rtol=1e-7, atol=tol)
        np.testing.assert_allclose(got["kl_to_ideal"][k], want["kl_to_ideal"], rtol=1e-7, atol=tol / beta)
        # (b): Delta^tr = Delta^id + beta KL_seq(q || q*) + visitation term, the first three by enumeration
        np.testing.assert_allclose(want["ideal_regret"] + beta * want["kl_to_ideal"] + got["visitation_term"][k],
                                   want["regret"], rtol=1e-7, atol=tol)


@given(trees(max_V=3, max_T=3, max_m=3), betas(), st.integers(0, 2 ** 32 - 1), st.data())
def test_p11_bounds_hold_against_brute_force_regret(tree, beta, seed, data):
    """(d) and (e) on every instance. Catches: osc G dropped from (d), the sqrt(E/2) cross term
    dropped from (e), 1/8 replaced by 1/16, d_w with w_i^2 for w_i (tried by hand)."""
    w = data.draw(simplex_stack(3, tree.m))
    experts = _noisy_experts(tree, beta, seed)
    got = trained_mixing_gap(tree, experts, w, beta)
    for k in range(len(w)):
        regret = _brute(tree, experts, w[k], beta)["regret"]
        assert got["bound_stepwise"][k] >= regret - _tol(tree, beta)
        assert got["bound_ideal"][k] >= regret - _tol(tree, beta)
        assert got["bound_jeffreys"][k] >= regret - _tol(tree, beta)
        assert got["bound_convex"][k] >= regret - _tol(tree, beta)
    np.testing.assert_array_equal(got["bound"], np.minimum.reduce([got["bound_stepwise"], got["bound_ideal"],
                                                                   got["bound_jeffreys"], got["bound_convex"]]))


@given(trees(max_V=3, max_T=3, max_m=3), betas(), st.integers(0, 2 ** 32 - 1), st.data())
def test_p11g_identity_equals_brute_force_kl_to_the_ideal(tree, beta, seed, data):
    """(g)'s identity KL(q || q*) = log E_q e^{-f} + E_q f, summed under q's visitation, against
    KL_seq(q || q*) by enumerating sequences. Catches the E_q f term dropped, e^{+f} for e^{-f},
    f with w_i^2 (each tried by hand)."""
    w = data.draw(simplex_stack(2, tree.m))
    experts = _noisy_experts(tree, beta, seed)
    got = trained_mixing_gap(tree, experts, w, beta)
    for k in range(len(w)):
        want = _brute(tree, experts, w[k], beta)["kl_to_ideal"]
        np.testing.assert_allclose(got["kl_to_ideal_from_errors"][k], want, rtol=1e-7, atol=_tol(tree, beta) / beta)


def _same_optimum(tree: Tree) -> Tree:
    """Rewards r_1 + c_i: the per-reward optima coincide (aligned, P8)."""
    return Tree.from_arrays(tree.vocab, tree.horizon, np.concatenate(tree.ref_logp),
                            tree.rewards[:, :1] + np.arange(tree.m)[None])


@given(trees(max_V=3, max_T=3, max_m=3), betas(), st.integers(0, 2 ** 32 - 1), st.data())
def test_p11g_is_the_regret_when_the_experts_errors_coincide(tree, beta, seed, data):
    """One optimum, the same trained expert for every reward (errors of any size): Jensen's step is an
    equality, so beta E_D equals the brute-force regret. Catches D_i without its centring term, a
    factor 1/2, the divergence taken under q* instead of q (tried by hand)."""
    tree = _same_optimum(tree)
    rng = np.random.default_rng(seed)
    one = [log_softmax(lp[:1] + rng.uniform(0.1, 2.0) * rng.normal(size=lp[:1].shape), axis=-1)
           for lp in tr.per_reward_token_policies(tree, beta)]
    experts = [np.repeat(lp, tree.m, axis=0) for lp in one]
    w = data.draw(simplex_stack(2, tree.m))
    got = trained_mixing_gap(tree, experts, w, beta)
    for k in range(len(w)):
        regret = _brute(tree, experts, w[k], beta)["regret"]
        np.testing.assert_allclose(got["bound_convex"][k], regret, rtol=1e-7, atol=_tol(tree, beta))


def test_p11g_small_error_ratio_is_one_over_w_when_one_expert_errs():
    """Tightness: expert 1 exact, expert 2 off by eps g: regret -> w_2^2 Var_q(g) eps^2 / 2 and
    beta E_D -> w_2 Var_q(g) eps^2 / 2, so bound / regret -> 1 / w_2. Catches D_i scaled by w_i
    inside (exact, ratio 1) and the Jeffreys form in its place (ratio 2)."""
    beta = 0.5
    tree = _two_token_tree([0.3, 0.7])
    ref = tree.ref_logp[0]
    experts = [np.stack([ref, log_softmax(ref + np.array([0.0, 1e-4]), axis=-1)])]
    for w2 in (0.2, 0.5, 0.9):
        got = trained_mixing_gap(tree, experts, np.array([[1 - w2, w2]]), beta)
        np.testing.assert_allclose(got["bound_convex"][0] / got["regret"][0], 1 / w2, rtol=1e-3)


def test_p11g_divergence_with_the_experts_own_tokens_is_its_kl():
    """D_i measured with pi_i's own tokens is KL(pi_i || pi*_i) (by hand with plain sums); with another
    policy's tokens it is not. Catches log E e^{+e} for log E e^{-e} and a dropped mean."""
    rng = np.random.default_rng(3)
    star = log_softmax(rng.normal(size=(2, 4, 5)), axis=-1)  # (m, S, V)
    mine = log_softmax(star + rng.normal(size=star.shape), axis=-1)
    D = mixture_divergence(mine[:1], mine - star)  # expert 0's own tokens, (1, m, S)
    p, p_star = np.exp(mine[0]), np.exp(star[0])
    np.testing.assert_allclose(D[0, 0], (p * np.log(p / p_star)).sum(axis=-1), rtol=1e-12)
    q = np.exp(mine[1])  # expert 1's tokens: by hand log sum_a q pi*/pi - sum_a q log(pi*/pi)
    want = np.log((q * p_star / p).sum(axis=-1)) - (q * np.log(p_star / p)).sum(axis=-1)
    np.testing.assert_allclose(mixture_divergence(mine[1:], mine - star)[0, 0], want, rtol=1e-12)
    assert np.all(np.abs(want - (p * np.log(p / p_star)).sum(axis=-1)) > 1e-3)


def _two_token_tree(ref_probs) -> Tree:
    """V = 2, T = 1, rewards 0 for both objectives: pi*_w = pi_ref for every w (aligned)."""
    return Tree.from_arrays(2, 1, np.log(np.asarray(ref_probs))[None], np.zeros((2, 2)))


def _off_by(tree: Tree, d: float) -> list:
    """Expert 0 exact (= pi_ref), expert 1 = pi_ref tilted by (0, d): Hilbert distance d."""
    ref = tree.ref_logp[0]  # (1, 2)
    return [np.stack([ref, log_softmax(ref + np.array([0.0, d]), axis=-1)])]


def test_p11_per_state_constants_are_attained():
    """(c)'s 1/8 as d -> 0 (uniform pi_ref) and its linear term as d -> infinity: bound / regret -> 1.
    Catches 1/8 -> 1/4 (ratio 0.5) and a dropped beta in the rate."""
    beta, w = 0.7, np.array([[0.0, 1.0]])
    tree = _two_token_tree([0.5, 0.5])
    rate = lambda got: np.minimum(got["bound_stepwise"], got["bound_ideal"])  # noqa: E731 (c)'s rate, summed
    small = trained_mixing_gap(tree, _off_by(tree, 1e-3), w, beta)
    assert 0.999 < small["regret"][0] / rate(small)[0] <= 1.0
    d = 200.0  # the worst pi_ref for the linear term puts mass ~ d e^{-d} on the tilted token
    ratios = []
    for log_p in np.linspace(-d - 10, -d + 10, 81):
        tree = _two_token_tree([1 - np.exp(log_p), np.exp(log_p)])
        got = trained_mixing_gap(tree, _off_by(tree, d), w, beta)
        assert got["regret"][0] <= rate(got)[0] * (1 + 1e-12)
        ratios.append(got["regret"][0] / rate(got)[0])
    assert 0.95 < max(ratios) <= 1.0  # 1 - O(log d / d)


@given(trees(max_V=3, max_T=3, max_m=3), betas(), st.integers(0, 2 ** 32 - 1), st.data())
def test_p11_jeffreys_bound_is_twice_the_regret_for_small_errors_under_alignment(tree, beta, seed, data):
    """(f) under alignment (rewards r_1 + c_i: the optima coincide) with errors of size 1e-4:
    regret / bound -> 1/2. Catches c_i taken under q alone (no q* term) and a missing beta."""
    tree = Tree.from_arrays(tree.vocab, tree.horizon, np.concatenate(tree.ref_logp),
                            tree.rewards[:, :1] + np.arange(tree.m)[None])
    rng = np.random.default_rng(seed)
    experts = [log_softmax(lp + 1e-4 * rng.normal(size=lp.shape), axis=-1)
               for lp in tr.per_reward_token_policies(tree, beta)]
    w = data.draw(simplex_stack(2, tree.m))
    got = trained_mixing_gap(tree, experts, w, beta)
    ok = got["regret"] > 1e-15  # below that the regret is rounding
    np.testing.assert_allclose(got["regret"][ok] / got["bound_jeffreys"][ok], 0.5, atol=2e-3)


def test_p11_the_mixtures_visitation_not_the_experts_is_what_counts():
    """An expert exact wherever it goes and untrained (= pi_ref) below the prefix it never takes.

    V = 2, T = 2; r_1 - r_2 depends on the first token only (aligned below the root: the ideal
    zero-shot is exact, P6). Reward 2 pays 5 for subtree 1, so pi*_2 almost never enters subtree 0;
    the trained expert 2 equals pi*_2 except in subtree 0, where it kept pi_ref (uniform). At
    w = (1/2, 1/2) the mixture enters subtree 0 (reward 1 pays -5 in subtree 1). Its regret is known
    in closed form there: at prefix (0,) both rewards pay (1, 0), so pi*_w(.|0) = (1, e^-10)/Z and
    q(.|0) ∝ (pi*_1(.|0) * uniform)^(1/2) = (1, e^-5)/Z'. The expert's own-visitation error is ~0,
    so a P11 bound taken under the expert's visitation would be far below the regret.
    """
    beta = 0.1
    r = np.array([[1.0, 1.0], [0.0, 0.0], [-5.0, 5.0], [-5.0, 5.0]])  # leaves 00, 01, 10, 11
    tree = Tree.from_arrays(2, 2, np.zeros((3, 2)), r)
    star = tr.per_reward_token_policies(tree, beta)
    experts = [star[0].copy(), star[1].copy()]
    experts[1][1, 0] = tree.ref_logp[1][0]  # expert 2 at prefix (0,): pi_ref instead of pi*_2
    w = np.array([[0.5, 0.5]])
    got = trained_mixing_gap(tree, experts, w, beta)
    assert np.isclose(got["ideal_regret"][0], 0.0, atol=1e-12)  # P6: aligned below the root
    assert tr.prefix_probs(tree, [lp[1:] for lp in star])[1][0, 0] < 1e-17  # pi*_2 almost never enters subtree 0
    assert got["own_regret"][1] < 1e-15 and got["error_own"][1] < 1e-15  # exact where it goes
    q_root = tr.prefix_probs(tree, tr.zero_shot_token_policy(tree, w, beta, experts=experts))[1][0, 0]
    q, p = np.array([1.0, np.exp(-5)]), np.array([1.0, np.exp(-10)])
    q, p = q / q.sum(), p / p.sum()
    np.testing.assert_allclose(got["regret"][0], beta * q_root * (q @ np.log(q / p)), rtol=1e-9)
    np.testing.assert_allclose(got["error_under_mixture"][0, 1], q_root * 10.0, rtol=1e-9)  # d_2(0,) = 10
    assert got["regret"][0] <= got["bound"][0]
    own = beta * got["error_own"][1] * w[0, 1]  # the bound's linear form under the expert's own visitation
    assert own < got["regret"][0] / 100


def test_no_kl_of_an_expert_from_its_optimum_bounds_the_mixture():
    """THEORY.md P11's remark, in numbers: KLs ~1e-4 and 1e-5, mixture KL 0.67, Hilbert distance 11.5."""
    beta = 1.0
    tiny, small = 1e-10, 1e-5
    # expert optima as if their rewards favoured opposite tokens: check P12 with the experts' own optima
    log_star = np.log([[[1 - tiny, tiny]], [[tiny, 1 - tiny]]])  # (m, X, Y)
    r = beta * (log_star - np.log(0.5)).transpose(1, 2, 0)  # rewards whose Gibbs optima are log_star
    bandit = Bandit.from_arrays([1.0], [[0.0, 0.0]], r)
    experts = log_star.copy()
    experts[0, 0] = np.log([1 - small, small])
    got = bandit_mixing_gap(bandit, experts, np.array([[0.5, 0.5]]), beta)
    p, p_star = np.exp(experts[0, 0]), np.exp(log_star[0, 0])
    assert p @ np.log(p / p_star) < 2e-4 and p_star @ np.log(p_star / p) < 2e-5
    np.testing.assert_allclose(got["regret"][0], 0.6718, atol=1e-4)
    np.testing.assert_allclose(got["d"][0, 0], np.log(small / tiny) - np.log((1 - small) / (1 - tiny)), rtol=1e-12)
    assert got["regret"][0] <= got["bound"][0]
    # (g)'s divergence sees the rare token through the mixture: D_1 = 5.72 nats (plain sums here)
    q = np.array([np.sqrt((1 - small) * tiny), np.sqrt(small * (1 - tiny))])
    q /= q.sum()  # the mixture (0.0032, 0.9968)
    ratio = p_star / p
    np.testing.assert_allclose(got["D"][0, 0, 0], np.log(q @ ratio) - q @ np.log(ratio), rtol=1e-9)
    np.testing.assert_allclose(got["D"][0, 0, 0], 5.72, atol=0.01)
    assert got["regret"][0] <= got["bound_convex"][0] <= 0.5 * beta * 5.73


@given(st.integers(0, 2 ** 32 - 1), betas(), st.data())
def test_p12_soup_of_loglinear_experts_is_their_logit_mixture_and_obeys_the_bound(seed, beta, data):
    """Realisable log-linear bandit, experts theta*_i + delta_i. The soup's regret computed by hand
    (Gibbs optimum and soup policy, no theory.trained_mixing) equals P12's regret and is below its
    bound; the Hilbert distances are below the feature bound. Catches the bound taken with
    d_w without beta in the rate, and a feature bound without the diameter (tried by hand)."""
    rng = np.random.default_rng(seed)
    bandit, phi, theta_ref, psi = feature_bandit(rng, contexts=3, responses=5, d=3, rewards=2,
                                                 misspecification=0.0)
    theta_star = realisable_optimum(theta_ref, psi, np.eye(2), beta)  # (m, d)
    delta = 10 ** rng.uniform(-3, 0.5) * rng.normal(size=theta_star.shape)
    thetas = theta_star + delta
    w = data.draw(simplex_stack(3, 2))
    soup = loglinear_log_policy(phi, mix_parameters(thetas, w))  # (K, X, Y)
    # by hand: pi*_w ∝ pi_ref exp(w.r/beta); regret = J(pi*) - J(soup)
    log_opt = log_softmax(bandit.ref_logp[None] + np.einsum("xym,km->kxy", bandit.rewards, w) / beta, axis=-1)
    J = lambda lp: (bandit.context_probs * (np.exp(lp) * (np.einsum("xym,km->kxy", bandit.rewards, w)
                                                            - beta * (lp - bandit.ref_logp[None]))).sum(-1)).sum(-1)
    want = J(log_opt) - J(soup)
    got = bandit_mixing_gap(bandit, loglinear_log_policy(phi, thetas), w, beta)
    tol = 1e-9 * (1 + np.abs(bandit.rewards).max()) * (1 + 1 / beta)
    np.testing.assert_allclose(got["regret"], want, rtol=1e-7, atol=tol)
    assert np.all(got["bound"] >= want - tol)
    assert np.all(feature_distance_bound(phi, delta) >= got["d"] * (1 - 1e-12))


def test_bad_experts_are_refused_with_the_field_named():
    tree = Tree.from_arrays(2, 1, np.zeros((1, 2)), np.zeros((2, 2)))
    ok = [np.log(np.full((2, 1, 2), 0.5))]
    w = np.array([[0.5, 0.5]])
    with pytest.raises(ValueError, match=r"^experts\[0\]: rows are not normalised"):
        trained_mixing_gap(tree, [ok[0] + 1.0], w, 1.0)
    with pytest.raises(ValueError, match=r"^experts\[0\]: contains NaN or infinite"):
        trained_mixing_gap(tree, [np.array([[[0.0, -np.inf]], [[-np.log(2), -np.log(2)]]])], w, 1.0)
    with pytest.raises(ValueError, match=r"^experts\[0\]: expected shape"):
        trained_mixing_gap(tree, [ok[0][:1]], w, 1.0)
    with pytest.raises(ValueError, match=r"^w: "):
        trained_mixing_gap(tree, ok, np.array([[0.5, 0.6]]), 1.0)
