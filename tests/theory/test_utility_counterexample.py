"""The kept counterexample (tests/fixtures/utility_counterexample.json): the fixed-beta simplex family
does not contain the non-linear optimum, while the (w, beta) family does. Re-derived here by cvxpy and
linear algebra, not read back from the file's own numbers alone."""
import json
from pathlib import Path

import numpy as np
from scipy.special import log_softmax

from theory.instances import instance_from_json
from theory.utility import make_utility
from theory.utility_cvx import solve_utility_cvx
from theory.utility_family import fixed_beta_objective, fixed_beta_residual

DATA = json.loads((Path(__file__).parents[1] / "fixtures" / "utility_counterexample.json").read_text())


def _setup():
    bandit = instance_from_json(DATA["instance"])
    return bandit, make_utility(DATA["utility"]["name"], bandit.m, z=DATA["utility"]["z"]), DATA["beta"]


def test_stored_optimum_is_the_cvxpy_optimum_and_gibbs_at_g_with_norm_not_one():
    bandit, U, beta = _setup()
    cvx = solve_utility_cvx(bandit, U, beta)
    exp = DATA["expected"]
    assert abs(cvx["expected_objective"] - exp["objective"]) <= 1e-6
    np.testing.assert_allclose(cvx["policy"][0], exp["policy"], rtol=0, atol=1e-4)
    g = np.asarray(exp["g"])
    np.testing.assert_allclose(g, U.grad(cvx["rewards"][0]), rtol=0, atol=1e-4)  # g = grad U(R*)
    gibbs = np.exp(log_softmax(bandit.ref_logp[0] + bandit.rewards[0] @ g / beta))
    np.testing.assert_allclose(gibbs, exp["policy"], rtol=0, atol=1e-9)
    assert abs(g.sum() - 1) > 0.5  # far off the simplex: |g|_1 = 2.33


def test_no_simplex_weighting_at_the_fixed_beta_reaches_it():
    """Exact certificate: log pi* - log pi_ref is not w.r / beta + c for any w with sum w = 1
    (three responses, affinely independent rewards), so the least-squares residual is positive.
    Catches a family residual that forgets the sum-to-one constraint (it would then be 0)."""
    bandit, U, beta = _setup()
    cvx = solve_utility_cvx(bandit, U, beta)
    log_pi = np.log(np.clip(cvx["policy"][0], 1e-300, None))
    res = fixed_beta_residual(log_pi, bandit.ref_logp[0], bandit.rewards[0], beta)
    assert res > 0.5 and abs(res - DATA["expected"]["fixed_beta_residual"]) < 1e-3
    # unconstrained, the same fit is exact (residual ~ cvxpy's table error): the optimum is Gibbs at g
    design = np.column_stack([bandit.rewards[0] / beta, np.ones(3)])
    coef, *_ = np.linalg.lstsq(design, log_pi - bandit.ref_logp[0], rcond=None)
    np.testing.assert_allclose(coef[:2], DATA["expected"]["g"], rtol=0, atol=1e-3)
    # and the best fixed-beta weighting loses a clear amount (a dense grid; the stored value used Brent)
    best = max(fixed_beta_objective(bandit, U, np.array([a, 1 - a]), beta) for a in np.linspace(0, 1, 2001))
    regret = cvx["expected_objective"] - best
    assert regret > 0.1 and abs(regret - DATA["expected"]["fixed_beta_regret"]) < 1e-4


def test_the_w_beta_family_reaches_it():
    bandit, U, beta = _setup()
    exp = DATA["expected"]
    w, b = np.asarray(exp["w"]), exp["beta_eff"]
    assert abs(w.sum() - 1) < 1e-12 and np.all(w > 0)
    pi = np.exp(log_softmax(bandit.ref_logp[0] + bandit.rewards[0] @ w / b))
    np.testing.assert_allclose(pi, exp["policy"], rtol=0, atol=1e-12)
    assert abs(solve_utility_cvx(bandit, U, beta)["expected_objective"] - exp["objective"]) <= 1e-6
