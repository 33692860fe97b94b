"""Smoke tests of `clp theory ...` through the real entry point, and its refusals.

Known answers come from the golden fixtures (computed by brute force, independently of theory/).
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clp_cli.main import main

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def run_cli(args, capsys):
    rc = main(args)
    out, err = capsys.readouterr()
    return rc, out, err


def test_solve_matches_fixture(capsys):
    expected = json.loads((FIXTURES / "tree_v2_t3.expected.json").read_text())
    w = expected["weights"][0]
    rc, out, _ = run_cli(["theory", "solve", str(FIXTURES / "tree_v2_t3.json"),
                          "--weights", ",".join(repr(v) for v in w), "--beta", repr(expected["beta"])], capsys)
    assert rc == 0
    got = json.loads(out)
    np.testing.assert_allclose(got["optimal"]["rewards"], expected["optimal"]["rewards"][0], atol=1e-9)
    np.testing.assert_allclose(got["logit_mix"]["objective"], expected["logit_mix"]["objective"][0], atol=1e-9)
    np.testing.assert_allclose(got["gap"], expected["gap"][0], atol=1e-9)
    assert set(got) >= {"kl_mix_to_opt", "holder_gap_root", "misalignment_root", "log_partition"}


def test_p10_instance_reports_dominated_zero_shot(capsys):
    rc, out, _ = run_cli(["theory", "solve", str(FIXTURES / "p10_tree.json"), "--weights", "0.5,0.5",
                          "--beta", "0.05"], capsys)
    got = json.loads(out)
    # THEORY.md P10: zero-shot goes to branch A (about 1/2 each), the optimum to B (about c = 0.8 each)
    np.testing.assert_allclose(got["logit_mix"]["rewards"], [0.51, 0.51], atol=0.01)
    np.testing.assert_allclose(got["optimal"]["rewards"], [0.80, 0.80], atol=0.01)


def test_random_bandit_roundtrip_has_zero_gap(tmp_path, capsys):
    rc, out, _ = run_cli(["theory", "random", "bandit", "--seed", "4", "--responses", "7", "--rewards", "3"], capsys)
    path = tmp_path / "b.json"
    path.write_text(out)
    rc, out, _ = run_cli(["theory", "solve", str(path), "--weights", "0.2,0.3,0.5", "--beta", "0.1"], capsys)
    assert rc == 0 and abs(json.loads(out)["gap"]) < 1e-9  # P3


def test_random_tree_with_misalignment(tmp_path, capsys):
    rc, out, _ = run_cli(["theory", "random", "tree", "--seed", "2", "--misalignment", "0.3"], capsys)
    path = tmp_path / "t.json"
    path.write_text(out)
    rc, out, _ = run_cli(["theory", "solve", str(path), "--weights", "0.5,0.5", "--beta", "0.2"], capsys)
    assert abs(json.loads(out)["misalignment_root"] - 0.3) < 1e-9


def test_front_writes_json_and_png(tmp_path, capsys):
    rc, out, _ = run_cli(["theory", "front", str(FIXTURES / "p10_tree.json"), "--beta", "0.05",
                          "--points", "11", "--out", str(tmp_path)], capsys)
    assert rc == 0
    front = json.loads((tmp_path / "front.json").read_text())
    assert len(front["weights"]) == 11
    assert (tmp_path / "front.png").stat().st_size > 1000
    measures = json.loads(out)
    # the zero-shot front is dominated on P10, so it loses hypervolume
    assert measures["hypervolume_zero_shot"] < measures["hypervolume_exact"]


@pytest.mark.parametrize("args, field", [
    (["solve", "{fx}/p10_tree.json", "--weights", "0.5,0.6", "--beta", "0.1"], "weights"),
    (["solve", "{fx}/p10_tree.json", "--weights", "-0.5,1.5", "--beta", "0.1"], "weights"),
    (["solve", "{fx}/p10_tree.json", "--weights", "1", "--beta", "0.1"], "weights"),
    (["solve", "{fx}/p10_tree.json", "--weights", "a,b", "--beta", "0.1"], "weights"),
    (["solve", "{fx}/p10_tree.json", "--weights", "0.5,0.5", "--beta", "0"], "beta"),
    (["solve", "{fx}/p10_tree.json", "--weights", "0.5,0.5", "--beta", "nan"], "beta"),
    (["solve", "{bad}", "--weights", "0.5,0.5", "--beta", "0.1"], "context_probs"),
    (["solve", "{missing}", "--weights", "0.5,0.5", "--beta", "0.1"], "instance"),
    (["front", "{fx}/p10_tree.json", "--beta", "0.1", "--points", "1"], "points"),
    (["random", "tree", "--misalignment", "-1"], "misalignment"),
])
def test_refusals_are_one_line_exit_2(tmp_path, args, field):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"kind": "bandit", "context_probs": [0.5, 0.6], "ref_logits": [[0, 0], [0, 0]],
                               "rewards": [[[1], [0]], [[0], [1]]]}))
    args = [a.format(fx=FIXTURES, bad=bad, missing=tmp_path / "nope.json") for a in args]
    proc = subprocess.run([sys.executable, "-m", "clp_cli.main", "theory", *args, "--out", str(tmp_path)]
                          if args[0] == "front" else [sys.executable, "-m", "clp_cli.main", "theory", *args],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert f"{field}:" in lines[0]


def test_theory_claims_quick_pass(tmp_path, capsys):
    rc, out, _ = run_cli(["theory", "claims", "--quick", "--out", str(tmp_path)], capsys)
    rows = json.loads((tmp_path / "theory_claims.json").read_text())
    assert rc == 0 and all(r["passed"] for r in rows) and out.count("PASS") == len(rows)
