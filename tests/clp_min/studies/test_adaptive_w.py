"""The adaptive-w study: a tiny end-to-end run through the command, and its verdict on hand-made numbers."""
import json

from clp_cli.main import main
from clp_min.studies import adaptive_w as aw


def test_quick_study_runs_and_reports(tmp_path, capsys):
    assert main(["adaptive-w", "--scale", "quick", "--out", str(tmp_path)]) == 0
    assert "| adaptive |" in capsys.readouterr().out
    res = json.loads((tmp_path / "seed0" / "adaptive_w.json").read_text())
    scale = aw.SCALES["quick"]
    assert set(res["average"]) == set(aw.DISTRIBUTIONS)
    for name in aw.DISTRIBUTIONS:
        assert 0 <= res["average"][name] <= res["worst"][name]  # regret >= 0 against the exact optimum
    assert sum(res["adaptive_state"]["visits"]) == scale.steps * scale.prompts_per_step  # every prompt counted
    assert json.loads((tmp_path / "summary.json").read_text())["seeds"] == [0]


def _res(avg, worst):
    return {"average": dict(zip(aw.DISTRIBUTIONS, avg)), "worst": dict(zip(aw.DISTRIBUTIONS, worst))}


def test_verdict_needs_both_measures_below_both_fixed_distributions():
    ok = aw.summarise([_res((0.3, 0.2, 0.1), (0.9, 0.8, 0.5)), _res((0.3, 0.2, 0.15), (0.9, 0.8, 0.7))])
    assert ok["met_on_every_seed"] and ok["met_on_the_mean"]
    worse_worst = aw.summarise([_res((0.3, 0.2, 0.1), (0.9, 0.8, 0.85))])
    assert not worse_worst["met_on_every_seed"] and not worse_worst["met_on_the_mean"]
    one_seed = aw.summarise([_res((0.3, 0.2, 0.1), (0.9, 0.8, 0.5)), _res((0.3, 0.2, 0.25), (0.9, 0.8, 0.5))])
    assert not one_seed["met_on_every_seed"] and one_seed["met_on_the_mean"]
