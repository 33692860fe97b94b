"""The utility-steering study at a tiny scale: its exact optimum by an independent route, its numbers, its parts."""
import json

import numpy as np
import pytest
import torch

from clp_min import task as tk
from clp_min.config import TrainConfig
from clp_min.oracle import exact
from clp_min.studies import setups as su
from clp_min.studies import utility_steering as us
from theory.utility_fixed_point import solve_population_fixed_point


def test_kl_steering_with_two_rewards_prepends_one_zero_column():
    """(w_0, w_1, w_2) . (0, r_1, r_2): a zeros_like(r) would prepend m columns (the old one-reward form)."""
    cfg = TrainConfig(rewards=("coverage", "brevity"), steer="kl").validate()
    assert cfg.m == 3
    task = cfg.task()
    x = tk.draw_prompts(task, 4, torch.Generator().manual_seed(0))
    y = tk.all_responses(tk.TaskConfig(vocab=task.vocab, prompt_len=1, response_len=task.response_len))[:4]
    r, v = tk.rewards(task, x, y), tk.reward_vectors(task, x, y, True)
    assert v.shape == (4, 3) and torch.equal(v[:, 0], torch.zeros(4)) and torch.equal(v[:, 1:], r)


@pytest.mark.parametrize("g, expected", [((0.8, 0.6), (0.6, 0.4)), ((-0.1, 0.3), (0.0, 0.3)), ((0.2, 0.3), (0.2, 0.3))])
def test_projection_onto_the_trained_conditionings(g, expected):
    h, moved = us._project(np.array(g))
    np.testing.assert_allclose(h, expected, atol=1e-12)
    assert moved == (tuple(g) != tuple(expected))


def test_quick_study_optimum_is_the_tree_gibbs_policy_and_numbers_are_sane(tmp_path):
    scale = us.SCALES["quick"]
    res = us.run_seed(0, scale, tmp_path / "out", tmp_path / "runs")
    assert json.loads((tmp_path / "out" / "seed0" / "utility_steering.json").read_text())["seed"] == 0
    # independent route to the optimum: the trees' own pi*_w at the simplex form (w, beta/|g|_1) (soft values, P5)
    pi_ref = su.reference_model(*us.es.reference_args(scale, 0, tmp_path / "runs"))
    task = tk.TaskConfig(**us.es.ENUM_TASK, rewards=us.REWARDS)
    trees = us.es._trees(pi_ref, task, us.es.heldout_prompts(task))
    R_ref = np.asarray(res["R_ref"])
    for name, U in us.utilities(R_ref).items():
        row = res["utilities"][name]
        opt = row["optimum"]
        assert row["reachable"] and opt["residual"] < 1e-9
        s = exact.optimal_stats(trees, np.asarray(opt["w"])[None], opt["beta_eff"])
        J = U.value(s["rewards"][0]) - su.BETA * s["kl"][0]  # the objective at beta, of pi* at beta_eff
        assert abs(J - opt["objective"]) < 1e-9
        for method, m in row["methods"].items():
            assert np.isfinite(m["regret"]) and m["regret"] >= -1e-9, method  # nothing beats the optimum
        steered = row["methods"]["steered"]
        assert steered["residual_history"][-1] <= steered["residual_history"][0] + 1e-12
    # and the population optimum again, from a shared-g solve on the bandit of full responses
    again = solve_population_fixed_point(us.population_bandit(trees), us.utilities(R_ref)["nash"], su.BETA)
    assert abs(again["objective"] - res["utilities"]["nash"]["optimum"]["objective"]) < 1e-12
    summary = us.summarise([res])
    assert set(summary) == {"nash", "softmin", "quadratic"}
    assert "| nash | steered |" in us.markdown([res], summary)
