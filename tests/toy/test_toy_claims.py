"""`clp toy claims --quick` through the command-line entry point, and the report writer."""
import json

from clp_cli.main import main
from toy.claims import Claim, _claim, write_report


def test_quick_claims_pass(tmp_path):
    assert main(["toy", "claims", "--quick", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "claims.json").read_text())
    assert rows and all(r["status"] in ("PASS", "INFO") for r in rows)
    assert {r["id"][:2] for r in rows} == {"E1", "E2", "E3", "E4", "E5", "E6", "E7", "E8"}
    report = (tmp_path / "report.md").read_text()
    assert "| id | claim | measured | threshold | value | status |" in report
    for name in ("E1", "E2", "E3", "E4", "E5", "E6", "E7", "E8"):
        assert (tmp_path / f"{name}.json").exists()
    assert len(list(tmp_path.glob("*.png"))) == 8


def test_unknown_experiment_exits_2(tmp_path, capsys):
    assert main(["toy", "run", "E9", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("clp: error: experiments:") and "\n" not in err


def test_failing_claim_is_reported_as_fail(tmp_path):
    claims = [_claim("X1", "a statement", "a number", "<=", 1.0, 2.0),
              _claim("X2", "another", "a number", ">=", 1.0, 2.0),
              _claim("X3", "info", "a number", None, 0, 3.0)]
    assert [c.status for c in claims] == ["FAIL", "PASS", "INFO"]
    write_report(claims, tmp_path, [], "header")
    report = (tmp_path / "report.md").read_text()
    assert "**1 passed, 1 failed**" in report
    assert "| X1 | a statement | a number | <= 1 | 2 | FAIL |" in report
    assert isinstance(claims[0], Claim)
