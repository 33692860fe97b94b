"""cvxpy (exponential cone) against the closed form (THEORY.md P1, P2).

Measured (600 random, not derandomized, draws of each strategy below, beta in
[1e-2, 1e2]): the regularised objective is within 4e-8 of beta E log Z (relative
to max(1, |J|)) and the KL-constrained w.R within 4e-7. Tables are compared row
by row weighted by rho(x) (a row's error grows like 1/rho(x), since the objective
weighs that row by rho(x)); they agree to 1e-7 when Clarabel at 1e-12 answers,
but the objective is flat to second order, so an 'optimal' answer at looser
tolerances (ECOS, or Clarabel at 1e-10) can be off by sqrt of its tolerance:
worst seen 8.1e-6 (regularised) and 1.7e-6 (constrained), above 1e-6 in 7 of 600
regularised draws. The 1e-6 target for tables is therefore not met; tables are
asserted to 5e-5. Rows with rho(x) = 0 are not part of the problem (returned as pi_ref).
"""
import numpy as np
import pytest
from hypothesis import assume, given, note, settings, strategies as st
from strategies import bandits, betas, simplex

from theory import gibbs, solver
from theory.random_instances import random_bandit


@st.composite
def random_bandit_and_w(draw):
    """Seeded ``random_bandit``s (normal rewards): every draw has a non-degenerate KL budget.
    (``bandits()`` also draws element-wise corner cases, where the budget can be 0.)"""
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    bandit = random_bandit(rng, contexts=draw(st.integers(1, 3)), responses=draw(st.integers(2, 6)),
                           rewards=draw(st.integers(1, 3)))
    return bandit, draw(simplex(bandit.m))


bandit_and_w = st.one_of(
    bandits(max_X=3, max_Y=5, max_m=3).flatmap(lambda b: simplex(b.m).map(lambda w: (b, w))),
    random_bandit_and_w())


@settings(max_examples=20)
@given(bandit_and_w, betas())
def test_regularised_problem_matches_the_gibbs_policy(bw, beta):
    bandit, w = bw
    note(f"instance: {bandit.to_json()}")
    out = solver.solve_regularised_cvx(bandit, w, beta)
    note(f"answered by {out['solver']}")
    J_opt = gibbs.optimal_value(bandit, w[None], beta)[0]  # P1: beta E_rho log Z_w
    assert out["objective"] == pytest.approx(J_opt, abs=1e-6 * max(1.0, abs(J_opt)))
    pi_star = np.exp(gibbs.gibbs_log_policy(bandit, w[None], beta)[0])  # (X, Y)
    rho = bandit.context_probs[:, None]
    assert np.max(rho * np.abs(out["policy"] - pi_star)) <= 5e-5  # measured max 8.1e-6 (module doc)
    assert out["solver"] in ("CLARABEL", "ECOS") and out["status"] == "optimal"  # never the loose last resort


@settings(max_examples=20)
@given(random_bandit_and_w(), betas())
def test_kl_constrained_problem_at_the_gibbs_budget_returns_the_gibbs_point(bw, beta):
    # P2 cross-check: pi*_w solves max w.R s.t. K <= K(pi*_w)
    bandit, w = bw
    log_star = gibbs.gibbs_log_policy(bandit, w[None], beta)  # (1, X, Y)
    stats = gibbs.bandit_stats(bandit, log_star, w[None], beta)
    budget = stats["kl"][0]
    assume(budget > 1e-6)  # budget 0 (w.r constant in every context) leaves no interior: Slater fails
    out = solver.solve_kl_constrained_cvx(bandit, w, budget)
    wR = float(w @ stats["rewards"][0])
    assert out["objective"] == pytest.approx(wR, abs=1e-6 * max(1.0, abs(wR)))
    rho = bandit.context_probs[:, None]
    assert np.max(rho * np.abs(out["policy"] - np.exp(log_star[0]))) <= 5e-5  # measured max 1.7e-6


def test_fallbacks_in_order_and_failure_names_every_status(monkeypatch):
    bandit = random_bandit(np.random.default_rng(0), contexts=2, responses=4, rewards=2)
    w = np.array([0.5, 0.5])
    J_opt = gibbs.optimal_value(bandit, w[None], 1.0)[0]
    monkeypatch.setattr(solver, "CLARABEL_TOL", {"max_iter": 1})  # tight Clarabel cannot finish
    out = solver.solve_regularised_cvx(bandit, w, 1.0)
    assert out["solver"] == "ECOS" and out["objective"] == pytest.approx(J_opt, abs=1e-6)
    monkeypatch.setattr(solver, "ECOS_TOL", {"max_iters": 1})
    out = solver.solve_regularised_cvx(bandit, w, 1.0)
    assert out["solver"] == "CLARABEL (default tolerances)"
    assert out["objective"] == pytest.approx(J_opt, abs=1e-6)
    monkeypatch.setattr(solver, "CLARABEL_DEFAULT_TOL", {"max_iter": 1})
    with pytest.raises(RuntimeError, match="CLARABEL: .*ECOS: .*CLARABEL \\(default tolerances\\): "):
        solver.solve_regularised_cvx(bandit, w, 1.0)


def test_bad_input_names_the_field():
    bandit = random_bandit(np.random.default_rng(0), contexts=2, responses=4, rewards=2)
    with pytest.raises(ValueError, match="^weights:"):
        solver.solve_regularised_cvx(bandit, [[0.5, 0.5], [1.0, 0.0]], 1.0)
    with pytest.raises(ValueError, match="^beta:"):
        solver.solve_regularised_cvx(bandit, [0.5, 0.5], 0.0)
    with pytest.raises(ValueError, match="^kl_budget:"):
        solver.solve_kl_constrained_cvx(bandit, [0.5, 0.5], -0.1)
