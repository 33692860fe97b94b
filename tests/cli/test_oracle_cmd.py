"""``clp oracle trl`` at its tiny scale: files written, refusals as one line with status 2."""
import json

import pytest

pytest.importorskip("trl")

from clp_cli.main import main  # noqa: E402


def test_tiny_table_and_refusals(tmp_path, capsys):
    out = tmp_path / "trl"
    assert main(["oracle", "trl", "--out", str(out), "--scale", "tiny"]) == 0
    table = json.loads((out / "table.json").read_text())
    assert len(table["cells"]) == 2 and (out / "bias.png").stat().st_size > 0
    assert table["cells"][0]["name"] in (out / "table.md").read_text()
    capsys.readouterr()
    assert main(["oracle", "trl", "--out", str(out), "--scale", "tiny"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("clp: error: out:") and "--overwrite" in err[0]


@pytest.mark.parametrize("args, field", [(["--jobs", "0"], "jobs"), (["--n-batches", "401"], "n-batches")])
def test_bad_options_refused(tmp_path, capsys, args, field):
    assert main(["oracle", "trl", "--out", str(tmp_path / "x"), "--scale", "reduced", *args]) == 2
    assert capsys.readouterr().err.strip().startswith(f"clp: error: {field}:")


def test_e2e_smoke(tmp_path, capsys):
    """One training step of every method, written and parameter-mixed: the files, the regret at step 0 (= pi_ref)
    is 1 for every method (the mixed model starts at its reference), and the step moves every policy."""
    out = tmp_path / "e2e"
    assert main(["oracle", "trl-e2e", "--out", str(out), "--steps", "1", "--eval-every", "1"]) == 0
    result = json.loads((out / "e2e.json").read_text())
    assert len(result["runs"]) == 11 and (out / "regret.png").stat().st_size > 0
    assert [r["conditioning"] for r in result["runs"]].count("mixed") == 5
    for run in result["runs"]:
        assert run["curve"][0][1] == pytest.approx(1.0) and run["curve"][-1][0] == 1
        assert run["curve"][-1][1] != pytest.approx(1.0, abs=1e-6)
    assert "| mixed: clp_min exact | mixed |" in (out / "e2e.md").read_text()
    assert main(["oracle", "trl-e2e", "--out", str(out), "--steps", "4", "--eval-every", "3"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("clp: error: out:")
    assert main(["oracle", "trl-e2e", "--out", str(tmp_path / "x"), "--conditioning", "prompt"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("clp: error: conditioning:")
