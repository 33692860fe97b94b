"""E8 (non-linear scalarisation) through `clp toy run E8 --quick`, and its claims on hand-made rows."""
import json

from clp_cli.main import main
from toy.claims import e8_claims


def test_quick_e8_passes_and_writes_its_files(tmp_path):
    assert main(["toy", "run", "E8", "--quick", "--out", str(tmp_path)]) == 0
    rows = {r["id"]: r for r in json.loads((tmp_path / "claims.json").read_text())}
    assert {"E8a", "E8b", "E8c-bandit", "E8c-aligned", "E8c-misaligned", "E8-solvers"} <= set(rows)
    assert all(r["status"] in ("PASS", "INFO") for r in rows.values())
    assert rows["E8b"]["value"] > 1e-6 and rows["E8a"]["value"] <= 1e-6
    assert (tmp_path / "E8_nonlinear_scalarisation.png").stat().st_size > 0
    results = json.loads((tmp_path / "E8.json").read_text())
    assert {x["family"] for x in results["rows"]} == {"bandit", "misaligned_tree", "aligned_tree"}
    assert {x["utility"] for x in results["rows"]} == {"nash", "tchebycheff", "softmin", "quadratic"}


def _row(family, **kw):
    base = {"family": family, "utility": "nash", "solvers_objective_diff": 0.0, "fixed_point_objective": 1.0,
            "solvers_policy_diff": 0.0, "first_order_residual": 0.0, "family_vs_cvx": 0.0,
            "fixed_beta_regret": 0.1, "zero_shot_regret": 0.0}
    return base | kw


def test_claims_fail_when_the_numbers_say_so():
    """A fixed-beta family that reached the optimum (regret 0), or an exact zero-shot mixture on
    misaligned trees, must read FAIL, not PASS."""
    rows = [_row("bandit", fixed_beta_regret=0.0), _row("aligned_tree", fixed_beta_regret=0.0),
            _row("misaligned_tree", fixed_beta_regret=0.0, zero_shot_regret=0.0)]
    status = {c.id: c.status for c in e8_claims({"rows": rows})}
    assert status["E8b"] == "FAIL" and status["E8c-misaligned"] == "FAIL" and status["E8a"] == "PASS"
    rows = [_row("bandit", family_vs_cvx=1e-3), _row("aligned_tree", zero_shot_regret=1e-3),
            _row("misaligned_tree", zero_shot_regret=1e-2)]
    status = {c.id: c.status for c in e8_claims({"rows": rows})}
    assert status["E8a"] == "FAIL" and status["E8c-aligned"] == "FAIL" and status["E8c-misaligned"] == "PASS"
