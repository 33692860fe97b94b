"""Token trees: soft values and token-level optimum (P5), per-token mixing and the Hölder gap
(P6, P7, P8), the P10 counterexample; against sequence-level enumeration of the leaves."""
import numpy as np
from hypothesis import given, strategies as st
from scipy.special import log_softmax

from fixtures.brute_force import ref_sequence_logp, solve_tree as brute_force_solve_tree
from strategies import aligned_trees, betas, extreme_betas, logits, rewards, simplex_stack, trees
from theory import tree as tr
from theory.instances import Tree
from theory.random_instances import p10_tree
from theory.solve import solve_tree


def _tol(tree: Tree, beta: float) -> float:
    return 1e-9 * (1 + np.abs(tree.rewards).max() + beta)


def _log_tol(tree: Tree, beta: float) -> float:
    """Tolerance for log-probabilities, whose size is about range(r) * T / beta."""
    return 1e-9 * (1 + tree.horizon * np.ptp(tree.rewards) / beta)


def _gibbs_leaves(tree: Tree, w: np.ndarray, beta: float) -> np.ndarray:
    """P1 on whole sequences by enumeration: log pi_ref(y) + w.r(y)/beta - log Z, ``[K, V^T]``."""
    log_ref = ref_sequence_logp(tree.to_json())  # (V^T,)
    return log_softmax(log_ref[None] + w @ tree.rewards.T / beta, axis=-1)


@given(trees(), betas(), st.data())
def test_p5_token_optimum_has_the_gibbs_sequence_law(tree, beta, data):
    w = data.draw(simplex_stack(3, tree.m))
    log_star = tr.optimal_token_policy(tree, w, beta)
    np.testing.assert_allclose(tr.leaf_log_probs(tree, log_star), _gibbs_leaves(tree, w, beta),
                               rtol=0, atol=_log_tol(tree, beta))
    # P5 written as in THEORY.md: log pi_ref + (V(sa) - V(s))/beta
    V_w = tr.soft_values_w(tree, w, beta)
    for t in range(tree.horizon):
        child = V_w[t + 1].reshape(len(w), -1, tree.vocab)  # (K, V^t, V)
        formula = tree.ref_logp[t][None] + (child - V_w[t][:, :, None]) / beta
        np.testing.assert_allclose(log_star[t], formula, rtol=0, atol=_log_tol(tree, beta))


@given(trees(max_V=3, max_T=3, max_m=3), betas(), st.data())
def test_solve_tree_equals_brute_force_enumeration(tree, beta, data):
    w = data.draw(simplex_stack(2, tree.m))
    got = solve_tree(tree, w, beta)
    tol = _tol(tree, beta) * (1 + 1 / beta)  # J - J differences of numbers ~ r, logs ~ r/beta
    for k in range(len(w)):
        want = brute_force_solve_tree(tree.to_json(), w[k], beta)
        for point in ("optimal", "logit_mix"):
            for key in ("rewards", "kl", "objective"):
                scale = beta if key == "kl" else 1.0  # a KL error of tol/beta is an objective error of tol
                np.testing.assert_allclose(got[point][key][k], want[point][key], rtol=1e-9,
                                           atol=tol / scale, err_msg=f"{point}.{key}")
        np.testing.assert_allclose(got["gap"][k], want["gap"], rtol=1e-9, atol=tol)
        np.testing.assert_allclose(got["holder_gap_root"][k], want["holder_gap_root"], rtol=1e-9, atol=tol)
        np.testing.assert_allclose(got["log_partition"][k], want["log_partition"], rtol=1e-9, atol=tol / beta)
        np.testing.assert_allclose(got["misalignment_root"], want["misalignment_root"], rtol=1e-12)


@given(trees(), betas(), st.data())
def test_p6_mixture_is_the_optimum_tilted_by_the_holder_gap(tree, beta, data):
    w = data.draw(simplex_stack(3, tree.m))
    log_mix = tr.zero_shot_token_policy(tree, w, beta)
    log_star = tr.optimal_token_policy(tree, w, beta)
    G = tr.holder_gap(tree, w, beta)
    for t in range(tree.horizon):
        G_child = G[t + 1].reshape(len(w), -1, tree.vocab)  # (K, V^t, V)
        tilted = log_softmax(log_star[t] + G_child / beta, axis=-1)  # P6
        np.testing.assert_allclose(log_mix[t], tilted, rtol=0, atol=_log_tol(tree, beta))
        # optimal at s iff G(s.) constant: osc_a log(mix/star) equals osc_a G(sa) / beta exactly
        ratio = log_mix[t] - log_star[t]
        np.testing.assert_allclose(np.ptp(ratio, axis=-1), np.ptp(G_child, axis=-1) / beta,
                                   rtol=1e-7, atol=_log_tol(tree, beta))
    # the mixture formula of section 3: ∝ pi_ref exp(sum_i w_i V_i(sa) / beta)
    V_i = tr.per_reward_soft_values(tree, beta)
    for t in range(tree.horizon):
        child = np.tensordot(w, V_i[t + 1], axes=(1, 0)).reshape(len(w), -1, tree.vocab)  # (K, V^t, V)
        np.testing.assert_allclose(log_mix[t], log_softmax(tree.ref_logp[t][None] + child / beta, axis=-1),
                                   rtol=0, atol=_log_tol(tree, beta))


@given(trees(), betas(), st.data())
def test_p7_gap_is_beta_times_sequence_kl(tree, beta, data):
    w = data.draw(simplex_stack(3, tree.m))
    out = solve_tree(tree, w, beta)
    log_mix = tr.zero_shot_token_policy(tree, w, beta)
    log_star = tr.optimal_token_policy(tree, w, beta)
    stepwise = np.sum(tr.stepwise_kl(tree, log_mix, log_star), axis=0)
    # leaf-level KL(mix || star) with pi* enumerated as a Gibbs law over sequences
    log_mix_leaves = tr.leaf_log_probs(tree, log_mix)
    p = np.exp(log_mix_leaves)
    leaf_kl = np.where(p > 0, p * (log_mix_leaves - _gibbs_leaves(tree, w, beta)), 0).sum(axis=1)
    tol = _tol(tree, beta)
    np.testing.assert_allclose(out["gap"], beta * stepwise, rtol=1e-8, atol=tol)
    np.testing.assert_allclose(out["gap"], beta * leaf_kl, rtol=1e-8, atol=tol)
    np.testing.assert_allclose(out["kl_mix_to_opt"], leaf_kl, rtol=1e-8, atol=tol / beta)
    assert np.all(out["gap"] >= -tol)


@given(trees(), betas(), st.data())
def test_holder_gap_is_nonnegative_and_zero_at_leaves_and_last_token_mixture_is_optimal(tree, beta, data):
    w = data.draw(simplex_stack(4, tree.m))
    G = tr.holder_gap(tree, w, beta)
    tol = _tol(tree, beta)
    for G_t in G:
        assert G_t.min() >= -tol
    np.testing.assert_allclose(G[-1], 0, atol=tol)
    last = tree.horizon - 1
    np.testing.assert_allclose(tr.zero_shot_token_policy(tree, w, beta)[last],
                               tr.optimal_token_policy(tree, w, beta)[last], rtol=0, atol=_log_tol(tree, beta))


@given(aligned_trees(), betas(), st.data())
def test_p8_aligned_trees_have_zero_holder_gap_and_an_optimal_mixture(tree, beta, data):
    w = data.draw(simplex_stack(3, tree.m))
    assert all(np.all(eps == 0) for eps in tr.misalignment(tree))
    tol = _tol(tree, beta)
    for G_t in tr.holder_gap(tree, w, beta):
        np.testing.assert_allclose(G_t, 0, atol=tol)
    out = solve_tree(tree, w, beta)
    np.testing.assert_allclose(out["gap"], 0, atol=tol)
    for mix, star in zip(tr.zero_shot_token_policy(tree, w, beta), tr.optimal_token_policy(tree, w, beta)):
        np.testing.assert_allclose(mix, star, rtol=0, atol=_log_tol(tree, beta))


@st.composite
def partly_aligned_trees(draw):
    """A random tree whose first root subtree (token 0) is exactly aligned: r_i = base + c_i there."""
    tree = draw(trees(max_T=3, min_m=2))
    V, T, m = tree.vocab, tree.horizon, tree.m
    n = V ** (T - 1)  # leaves below the first root child
    base = np.round(draw(rewards(n, 1)) * 64) / 64  # dyadic, so base + c is exact
    c = np.round(draw(rewards(1, m)) * 64) / 64
    r = tree.rewards.copy()
    r[:n] = base + c
    return Tree.from_arrays(V, T, np.concatenate(tree.ref_logp), r)


@given(partly_aligned_trees(), betas(), st.data())
def test_p8_on_an_aligned_subtree_only(tree, beta, data):
    w = data.draw(simplex_stack(3, tree.m))
    eps = tr.misalignment(tree)
    G = tr.holder_gap(tree, w, beta)
    log_mix = tr.zero_shot_token_policy(tree, w, beta)
    log_star = tr.optimal_token_policy(tree, w, beta)
    tol = _tol(tree, beta)
    for t in range(1, tree.horizon + 1):
        below = slice(0, tree.vocab ** (t - 1))  # prefixes starting with token 0
        assert np.all(eps[t][below] == 0)
        np.testing.assert_allclose(G[t][:, below], 0, atol=tol)
        if t < tree.horizon:
            np.testing.assert_allclose(log_mix[t][:, below], log_star[t][:, below], atol=_log_tol(tree, beta))


@given(st.data(), extreme_betas())
def test_finite_at_extreme_beta_and_large_rewards(data, beta):
    V, T, m = 3, 3, 2
    N = sum(V ** t for t in range(T))
    tree = Tree.from_arrays(V, T, data.draw(logits(N, V)), data.draw(rewards(V ** T, m, scale=1e3)))
    for b in (beta, 1e-4, 1e4):
        out = solve_tree(tree, data.draw(simplex_stack(3, m)), b)
        for key, value in out.items():
            for v in (value.values() if isinstance(value, dict) else [value]):
                assert np.all(np.isfinite(v)), key
        assert np.all(out["gap"] >= -1e-9 * 1e3)


@given(trees(), betas(), st.data())
def test_batched_over_weightings_equals_one_at_a_time(tree, beta, data):
    w = data.draw(simplex_stack(4, tree.m))
    batched = solve_tree(tree, w, beta)
    for k in range(len(w)):
        single = solve_tree(tree, w[k:k + 1], beta)
        for key in ("gap", "kl_mix_to_opt", "holder_gap_root", "log_partition"):
            np.testing.assert_allclose(batched[key][k], single[key][0], rtol=1e-12, atol=1e-12)
        for point in ("optimal", "logit_mix"):
            for key in ("rewards", "kl", "objective"):
                np.testing.assert_allclose(batched[point][key][k], single[point][key][0], rtol=1e-12, atol=1e-12)


def test_p10_zero_shot_mixing_is_dominated():
    c, beta = 0.8, 0.05
    out = solve_tree(p10_tree(c), np.array([[0.5, 0.5]]), beta)
    mix, opt = out["logit_mix"]["rewards"][0], out["optimal"]["rewards"][0]
    # closed forms: root mixture picks A with odds exp((V_1(A)+V_2(A))/2 - (c)) / ... (enumerated here)
    V_A = beta * np.log((np.exp(1 / beta) + 1) / 2)  # V_1(A) = V_2(A); V_i(B) = c
    p_A = 1 / (1 + np.exp(c / beta - V_A / beta))  # mixture at the root, equal weights
    # in A the last token is the optimum for w.r = 1/2 on both leaves: uniform, reward (1/2, 1/2)
    np.testing.assert_allclose(mix, p_A * 0.5 + (1 - p_A) * c, rtol=1e-12)
    # optimum: Gibbs over the 4 leaves with w.r = (1/2, 1/2, c, c)
    z = np.exp(np.array([0.5, 0.5, c, c]) / beta)
    np.testing.assert_allclose(opt, (z @ p10_tree(c).rewards) / z.sum(), rtol=1e-12)
    np.testing.assert_allclose(mix, 0.51, atol=0.02)
    np.testing.assert_allclose(opt, 0.80, atol=0.02)
    assert np.all(mix < c)  # (c, c) dominates the zero-shot point
    assert np.all(mix < 0.6) and np.all(opt > 0.75)
