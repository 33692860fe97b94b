"""Section 7: the cvxpy program and the fixed point over Gibbs policies agree; the optimum is Gibbs at grad U."""
import numpy as np
import pytest
from hypothesis import given, strategies as st
from scipy.special import log_softmax

from strategies import bandits, logits, trees
from theory import tree as tr
from theory.instances import Bandit
from theory.random_instances import random_bandit
from theory.utility import make_utility
from theory.utility_cvx import solve_utility_cvx
from theory.utility_fixed_point import solve_utility_fixed_point
from theory.utility_problem import gibbs_rows, reference_rewards, sequence_view, tree_token_policy

# Objectives: the conic solvers' accuracy (theory/solver.py measures ~1e-7 on the
# objective); tables ~1e-5 (the objective is flat to second order), so 1e-4 here.
OBJ_TOL, POLICY_TOL = 1e-6, 1e-4
SEEDS = st.integers(0, 2 ** 32 - 1)
BETAS = st.floats(-1.0, 1.0).map(lambda u: float(10.0 ** u))  # beta in [0.1, 10]


def _utility(name, instance, rng):
    m = instance.m
    R_ref = reference_rewards(instance).min(axis=0)
    z, lam = R_ref - rng.uniform(0.2, 1.5, m), rng.uniform(0.5, 2, m)
    B = rng.uniform(-1, 1, (m, m))
    c = sequence_view(instance)[2].max(axis=(0, 1)) + rng.uniform(-1, 1, m)  # g may be negative: allowed
    return make_utility(name, m, z=z, lam=lam, tau=rng.uniform(0.05, 0.5), c=c, A=B @ B.T + 0.05 * np.eye(m))


def _agree(instance, U, beta):
    cvx = solve_utility_cvx(instance, U, beta)
    fp = solve_utility_fixed_point(instance, U, beta)
    rho = sequence_view(instance)[0]
    assert abs(cvx["expected_objective"] - fp["expected_objective"]) <= OBJ_TOL * (1 + abs(fp["expected_objective"]))
    np.testing.assert_allclose(cvx["objective"], fp["objective"], rtol=0,
                               atol=OBJ_TOL * (1 + np.abs(fp["objective"]).max()))
    np.testing.assert_allclose(cvx["policy"], fp["policy"], rtol=0, atol=POLICY_TOL)
    assert cvx["solver"] and fp["solver"]
    assert np.all(np.isfinite(fp["g"])) and fp["residual"].max() <= 1e-9
    return cvx, fp, rho


@pytest.mark.parametrize("name", ["nash", "softmin", "quadratic", "tchebycheff"])
@given(instance=bandits(max_X=2, max_Y=5, max_m=2, min_m=2), beta=BETAS, seed=SEEDS)
def test_cvxpy_and_fixed_point_agree_on_bandits(name, instance, beta, seed):
    """Catches a missing 1/beta in the Gibbs tilt, a wrong Newton Jacobian, a flipped bisection."""
    _agree(instance, _utility(name, instance, np.random.default_rng(seed)), beta)


@pytest.mark.parametrize("name", ["nash", "softmin", "quadratic", "tchebycheff"])
@given(tree=trees(max_V=3, max_T=3, max_m=2), beta=BETAS, seed=SEEDS)
def test_cvxpy_and_fixed_point_agree_on_trees(name, tree, beta, seed):
    _agree(tree, _utility(name, tree, np.random.default_rng(seed)), beta)


@given(instance=bandits(max_X=2, max_Y=5, max_m=3, min_m=3), beta=BETAS, seed=SEEDS)
def test_three_rewards_smooth_utilities_agree(instance, beta, seed):
    rng = np.random.default_rng(seed)
    for name in ("nash", "softmin", "quadratic"):
        _agree(instance, _utility(name, instance, rng), beta)


@pytest.mark.parametrize("name", ["nash", "softmin", "quadratic"])
@given(instance=bandits(max_X=2, max_Y=5, max_m=2, min_m=2), beta=BETAS, seed=SEEDS)
def test_cvxpy_optimum_is_the_gibbs_policy_at_grad_U_of_its_own_rewards(name, instance, beta, seed):
    """First-order condition checked on the cvxpy answer alone (no fixed-point code):
    pi_cvx ∝ pi_ref exp(grad U(R(pi_cvx)) . r / beta). Catches a transposed gradient."""
    U = _utility(name, instance, np.random.default_rng(seed))
    cvx = solve_utility_cvx(instance, U, beta)
    g = U.grad(cvx["rewards"])  # (X, m)
    gibbs = np.exp(log_softmax(instance.ref_logp + np.einsum("xym,xm->xy", instance.rewards, g) / beta, axis=-1))
    # the map R -> Gibbs(grad U(R)) is Lipschitz with constant ~ |Hess U| |r|^2 / beta; tables are ~1e-5
    np.testing.assert_allclose(cvx["policy"], gibbs, rtol=0, atol=1e-3)


@given(tree=trees(max_V=3, max_T=3, max_m=3), g=logits(3), beta=BETAS)
def test_tree_token_policy_at_any_g_has_the_leaf_gibbs_law(tree, g, beta):
    """P5 at a weighting off the simplex: soft values at g.r give the sequence Gibbs law at g."""
    g = g[: tree.m]
    _, log_ref, r = sequence_view(tree)
    by_tokens = tr.leaf_log_probs(tree, tree_token_policy(tree, g, beta))  # (1, V^T)
    np.testing.assert_allclose(by_tokens, gibbs_rows(log_ref, r, g[None], beta), rtol=0, atol=1e-9)


def test_simplex_form_gives_the_same_policy():
    """Gibbs at g = Gibbs at (g / |g|_1, beta / |g|_1): the (w, beta) family holds the optimum."""
    bandit = random_bandit(np.random.default_rng(3), contexts=2, responses=5, rewards=2)
    U = make_utility("nash", 2, z=reference_rewards(bandit).min(axis=0) - 0.3)
    fp = solve_utility_fixed_point(bandit, U, 0.4)
    assert np.all(fp["on_simplex"]) and np.all(np.abs(fp["g_l1"] - 1) > 1e-3)
    for x in range(2):
        w, b = fp["w"][x], fp["beta_eff"][x]
        again = np.exp(log_softmax(bandit.ref_logp[x] + bandit.rewards[x] @ w / b))
        np.testing.assert_allclose(again, fp["policy"][x], rtol=0, atol=1e-12)


def test_refusals_are_one_line_and_name_the_field():
    bandit = random_bandit(np.random.default_rng(0), contexts=1, responses=4, rewards=2)
    bad = make_utility("quadratic", 2, A=[[1.0, 0.0], [0.0, -1.0]])
    for solver in (solve_utility_cvx, solve_utility_fixed_point):
        with pytest.raises(ValueError, match="^utility: quadratic .* is not concave"):
            solver(bandit, bad, 1.0)
        with pytest.raises(ValueError, match="^utility: built for 3 rewards"):
            solver(bandit, make_utility("nash", 3), 1.0)
        with pytest.raises(ValueError, match="^beta:"):
            solver(bandit, make_utility("nash", 2, z=[-9.0, -9.0]), 0.0)
    above = make_utility("nash", 2, z=reference_rewards(bandit)[0] + 0.1)
    with pytest.raises(ValueError, match="^z: pi_ref's expected rewards"):
        solve_utility_fixed_point(bandit, above, 1.0)
    three = Bandit.from_arrays([1.0], [[0.0, 0.0, 0.0]], np.eye(3)[None])
    with pytest.raises(ValueError, match="^utility: the fixed-point solver handles tchebycheff .* m = 2 only"):
        solve_utility_fixed_point(three, make_utility("tchebycheff", 3, z=[-1.0] * 3), 1.0)
    assert solve_utility_cvx(three, make_utility("tchebycheff", 3, z=[-1.0] * 3), 1.0)["solver"]


@pytest.mark.parametrize("name", ["nash", "softmin", "quadratic"])
@given(instance=bandits(max_X=3, max_Y=5, max_m=2, min_m=2), beta=BETAS, seed=SEEDS)
def test_population_utility_cvxpy_and_shared_g_fixed_point_agree(name, instance, beta, seed):
    """U of the mean over contexts: one g for every context. Catches a per-context g or an unweighted mean."""
    from theory.utility_cvx import solve_population_cvx
    from theory.utility_fixed_point import solve_population_fixed_point

    U = _utility(name, instance, np.random.default_rng(seed))
    cvx = solve_population_cvx(instance, U, beta)
    fp = solve_population_fixed_point(instance, U, beta)
    assert abs(cvx["objective"] - fp["objective"]) <= OBJ_TOL * (1 + abs(fp["objective"]))
    keep = instance.context_probs > 0  # rows with rho = 0 do not enter the population objective
    np.testing.assert_allclose(cvx["policy"][keep], fp["policy"][keep], rtol=0, atol=POLICY_TOL)
    assert fp["residual"] <= 1e-9
