"""clp_min.studies.mechanisms_study: measures on hand-sized inputs, and the study run through clp reproduce at a tiny scale."""
import json
from pathlib import Path

import numpy as np
import pytest

from clp_min.studies import exact_setups as xs
from clp_min.studies import mechanisms_study as ms
from clp_min.studies import setups as su
from clp_min.studies.reproduce import reproduce
from theory.weights import simplex_grid

TINY = su.Scale(seeds=(0,), pretrain_steps=20, steps=3, prompts_per_step=4, samples_per_prompt=2, eval_prompts=4,
                eval_samples=2, exact_prompts=2, grid=2)
TINY_EXACT = xs.ExactScale(seeds=(0,), pretrain_steps=20, steps=2, rloo_steps=2, prompts_per_step=2, lr=3e-3, sweep_steps=1,
                           sweep_prompts_per_step=2, sweep_expert_steps=1, strengths=(0.0,), grid=2)


def test_regions_of_the_m2_grid():
    W = simplex_grid(2, 10)  # w_1 = 0, .1, .., 1
    r = ms.regions(W)
    assert W[r["near vertices"], 0].tolist() == [0.0, 0.1, 0.2, 0.8, 0.9, 1.0]
    assert W[r["interior"], 0].tolist() == [0.3, 0.4, 0.5, 0.6, 0.7]


def test_exact_measures_hand_case():
    W = np.array([[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]])
    stats = {"a": {"rewards": [[0.1, 0.9], [0.5, 0.5], [0.9, 0.2]], "kl": [0.2, 0.1, 0.3]}}
    m = ms.exact_measures(W, stats, {"a": [0.1, 0.5, 0.3]})["a"]
    assert m["mean_regret"] == pytest.approx(0.3) and m["worst_regret"] == pytest.approx(0.5)
    assert m["regret_by_region"] == pytest.approx({"near vertices": 0.2, "interior": 0.5})
    assert m["rank_correlation"] == pytest.approx(1.0)  # R_1 rises with w_1, R_2 with w_2
    # one point: HV of (R, -K) boxes against (0, 0, -1.1 * 0.3), the union of three boxes by hand
    boxes = [(0.1, 0.9, 0.33 - 0.2), (0.5, 0.5, 0.33 - 0.1), (0.9, 0.2, 0.33 - 0.3)]
    grid = np.linspace(0, 1, 401)[:-1] + 1 / 800  # midpoint rule on the (R_1, R_2) square
    X, Y = np.meshgrid(grid, grid, indexing="ij")
    height = np.zeros_like(X)
    for a, b, h in boxes:
        height = np.maximum(height, np.where((X < a) & (Y < b), h, 0.0))
    assert m["hypervolume_R_negK"] == pytest.approx(height.sum() / 400 ** 2, abs=2e-3)


def test_study_runs_in_reproduce(tmp_path, monkeypatch):
    """clp reproduce (setups enum_exact, two, enum) runs the study: tables, figures, per-seed JSON;
    baselines are the setups' numbers unchanged; a front.json from another pi_ref is refused."""
    monkeypatch.setitem(su.SCALES, "quick", TINY)
    monkeypatch.setitem(xs.EXACT_SCALES, "quick", TINY_EXACT)
    heldout = xs.heldout_prompts
    monkeypatch.setattr(xs, "heldout_prompts", lambda task: heldout(task)[:4])  # 4 of the 84 trees: time
    out = tmp_path / "rep"
    reproduce(out, quick=True, setups=("enum_exact", "two", "enum"), with_claims=False)
    report = (out / "report.md").read_text()
    assert "## Other conditioning mechanisms\n" in report
    assert "Smoke run (`--quick`)" in report  # a quick run says what it is
    for f in ("report.md", "comparison.png", "w_distribution.png", "enum/seed0.json", "two/seed0.json",
              "enum_exact/seed0.json", "w_dist/seed0.json"):
        assert (out / "mechanisms" / f).exists(), f
    seed0 = {p: json.loads((out / "mechanisms" / p / "seed0.json").read_text()) for p in ms.PARTS}
    front = json.loads((out / "enum" / "seed0" / "front.json").read_text())
    xfront = json.loads((out / "enum_exact" / "seed0" / "front.json").read_text())
    for name in ("CLP full", "CLP attn", "CLP logit", "Rewarded Soups", "logit mixing", "input"):
        assert seed0["enum"]["stats"][name] == front["exact"]["methods"][name]
    for name in ("CLP full", "CLP full (RLOO)", "Rewarded Soups", "logit mixing"):
        assert seed0["enum_exact"]["stats"][name] == xfront["exact"]["methods"][name]
    assert report.count("| SVD-LoRA |") == 3  # one row per part
    for name in ms.MECHANISMS:
        K = len(seed0["enum"]["weights"])
        r = seed0["enum"]["measures"][name]
        near = ms.regions(np.asarray(seed0["enum"]["weights"]))["near vertices"]
        mean = (near.sum() * r["regret_by_region"]["near vertices"] + (~near).sum() * r["regret_by_region"]["interior"]) / K
        assert r["mean_regret"] == pytest.approx(mean)
    for name in ms.W_DISTRIBUTIONS:
        assert f"| {name} |" in report
    # the setups' default distribution is the setups' own CLP attn run: the same exact regret
    np.testing.assert_allclose(seed0["w_dist"]["normalised_regret"]["Dirichlet 1 + 25% vertices"],
                               front["exact"]["normalised_regret"]["CLP attn"], rtol=0, atol=1e-12)
    assert ms.run_part("enum", front, TINY, 0, out / "mechanisms", out / "runs") == seed0["enum"]  # reused
    # a re-evaluated setup front (other numbers for the methods the part copies) is not reused: recomputed
    moved = json.loads(json.dumps(front))
    moved["exact"]["methods"]["CLP full"]["objective"][0] += 1e-3
    redone = ms.run_part("enum", moved, TINY, 0, out / "mechanisms", out / "runs")
    assert redone["stats"]["CLP full"]["objective"][0] == moved["exact"]["methods"]["CLP full"]["objective"][0]
    assert redone["provenance"]["front_sha256"] != seed0["enum"]["provenance"]["front_sha256"]
    ms.run_part("enum", front, TINY, 0, out / "mechanisms", out / "runs")  # back to the setup's own front
    front["exact"]["reference"]["objective"][0] += 1e-6
    with pytest.raises(ValueError, match="^fronts:"):
        ms.compare_enum(front, TINY, 0, out / "runs", False)
    xfront["exact"]["reference"]["objective"][0] += 1e-6
    with pytest.raises(ValueError, match="^fronts:"):
        ms.compare_enum_exact(xfront, TINY_EXACT, 0, out / "runs", False)
    # a retrained policy (another file) is not reused either
    first = next(iter(ms.MECHANISMS))
    pol = Path(ms.mechanism_configs("enum", TINY, 0, out / "runs")[first].out) / "policy.safetensors"
    pol.write_bytes(pol.read_bytes() + b" ")  # a different file (only hashed here, never loaded)
    runs_now = ms.provenance("enum", front, TINY, 0, out / "runs")["runs_sha256"]
    assert runs_now[first] != seed0["enum"]["provenance"]["runs_sha256"][first]
    assert all(runs_now[n] == seed0["enum"]["provenance"]["runs_sha256"][n] for n in runs_now if n != first)
