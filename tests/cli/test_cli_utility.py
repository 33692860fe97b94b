"""`clp theory utility` through the real entry point: answers, files, and one-line refusals (exit 2)."""
import json
from pathlib import Path

import pytest

from clp_cli.main import main

FIXTURE = Path(__file__).parents[1] / "fixtures" / "utility_counterexample.json"


@pytest.fixture
def instance(tmp_path):
    data = json.loads(FIXTURE.read_text())
    path = tmp_path / "instance.json"
    path.write_text(json.dumps(data["instance"]))
    return path, data


def test_utility_reproduces_the_counterexample_and_writes_its_files(instance, tmp_path, capsys):
    path, data = instance
    z = ",".join(repr(v) for v in data["utility"]["z"])
    out = tmp_path / "out"
    args = ["theory", "utility", str(path), "--utility", "nash,softmin", "--z", z, "--beta", repr(data["beta"]),
            "--out", str(out)]
    assert main(args) == 0
    got = json.loads(capsys.readouterr().out)
    nash = got["nash"]
    assert abs(nash["objective"] - data["expected"]["objective"]) < 1e-9
    assert abs(nash["best_fixed_beta"]["regret"] - data["expected"]["fixed_beta_regret"]) < 1e-9
    assert nash["agreement"]["objective_diff"] < 1e-6 and nash["cvxpy"]["status"] == "optimal"
    assert (out / "utility.json").is_file() and (out / "utility.png").stat().st_size > 0
    assert set(json.loads((out / "utility.json").read_text())["utilities"]) == {"nash", "softmin"}
    assert main(args) == 2  # the folder already holds the files: refused, not overwritten
    err = capsys.readouterr().err.strip()
    assert err.startswith("clp: error: out:") and "already holds" in err and "utility.json" in err and "\n" not in err
    assert main(args + ["--overwrite"]) == 0  # the shared guard's --overwrite replaces them


@pytest.mark.parametrize("extra, field", [
    (["--utility", "leximin"], "utility: unknown 'leximin'"),
    (["--utility", "quadratic", "--curvature", "1,0,0,-1"], "utility: quadratic (A has eigenvalue -1 < 0) is not concave"),
    (["--utility", "quadratic", "--curvature", "1,0,0"], "curvature: expected m*m = 4 numbers"),
    (["--utility", "tchebycheff", "--lam", "1,-1"], "lam: entries must be > 0"),
    (["--utility", "softmin", "--tau", "x"], "tau: not a comma-separated list"),
    (["--utility", "nash", "--z", "5,5"], "z: pi_ref's expected rewards"),
])
def test_bad_input_is_one_line_naming_the_field(instance, capsys, extra, field):
    path, _ = instance
    assert main(["theory", "utility", str(path), "--beta", "0.5", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err == err.splitlines()[0] and err.startswith("clp: error: " + field.split(":")[0])
    assert field in err
