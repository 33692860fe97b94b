"""The command line never prints a traceback for bad input or an OS problem, and refuses
unbounded work before allocating (issue 11). Each case was a traceback or a hang before:
``random tree --vocab 1 --horizon 1e9`` (hang: the node count was summed before any check),
``--points 100000`` on m = 3 (MemoryError after 2 minutes), ``--prompt_len 1000000`` (1 TB
causal mask), 100,000-deep JSON (RecursionError), unwritable or blocked output folders,
``--out ""`` (wrote into the current folder), ``toy claims --seed=-1`` (did not name the field).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from clp_cli.main import main

ROOT = Path(__file__).resolve().parents[2]


def _refused(capsys, argv, field: str) -> str:
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, (rc, err)
    assert err.startswith(f"clp: error: {field}") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.fixture
def bandit3(tmp_path, capsys):
    assert main(["theory", "random", "bandit", "--rewards", "3"]) == 0
    path = tmp_path / "b3.json"
    path.write_text(capsys.readouterr().out)
    return path


def test_huge_trees_are_refused_before_any_work(tmp_path, capsys):
    _refused(capsys, ["theory", "random", "tree", "--vocab", "1", "--horizon", "1000000000"], "horizon: ")
    _refused(capsys, ["theory", "random", "tree", "--vocab", "10", "--horizon", "9"], "vocab: V^T")
    _refused(capsys, ["theory", "random", "tree", "--rewards", "1000000"], "rewards: ")
    _refused(capsys, ["theory", "random", "bandit", "--contexts", "100000", "--responses", "100000"], "responses: ")
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"kind": "tree", "vocab": 1, "horizon": 10 ** 9, "ref_logits": [], "rewards": []}))
    _refused(capsys, ["theory", "solve", str(path), "--weights", "1", "--beta", "1"], "horizon: ")


def test_points_limit_and_out_folder_problems(bandit3, tmp_path, capsys):
    _refused(capsys, ["theory", "front", str(bandit3), "--beta", "1", "--points", "100000",
                      "--out", str(tmp_path / "f")], "points: ")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _refused(capsys, ["theory", "front", str(bandit3), "--beta", "1", "--out", str(blocker)], "out: ")
    _refused(capsys, ["theory", "front", str(bandit3), "--beta", "1", "--out", str(blocker / "sub")], "out: ")
    _refused(capsys, ["theory", "front", str(bandit3), "--beta", "1", "--out", ""], "out: empty")
    _refused(capsys, ["toy", "claims", "--quick", "--out", str(blocker)], "out: ")
    _refused(capsys, ["toy", "claims", "--quick", "--seed=-1"], "seed: ")
    _refused(capsys, ["theory", "claims", "--seed=-1"], "seed: ")
    _refused(capsys, ["train", "--out", "", "--steps", "1"], "out: ")
    _refused(capsys, ["train", "--out", str(blocker), "--steps", "1", "--pretrain_steps", "1"], "out: ")
    _refused(capsys, ["eval", str(tmp_path / "missing")], "run_dir: ")
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        _refused(capsys, ["theory", "front", str(bandit3), "--beta", "1", "--out", str(locked)], "out: ")


def test_bad_instance_files_are_one_line(tmp_path, capsys):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    _refused(capsys, ["theory", "solve", str(deep), "--weights", "1", "--beta", "1"], "instance: ")
    _refused(capsys, ["theory", "solve", str(tmp_path), "--weights", "1", "--beta", "1"], "instance: ")
    _refused(capsys, ["theory", "solve", str(tmp_path / "nope.json"), "--weights", "1", "--beta", "1"], "instance: ")
    binary = tmp_path / "bin.json"
    binary.write_bytes(b"\xff\xfe\x00")
    _refused(capsys, ["theory", "solve", str(binary), "--weights", "1", "--beta", "1"], "instance: ")


def test_beta_range_on_the_command_line(bandit3, capsys):
    for beta in ("1e-310", "1e15", "1e300"):
        _refused(capsys, ["theory", "solve", str(bandit3), "--weights", "0.2,0.3,0.5", "--beta", beta], "beta: ")
    for beta in ("1e-8", "1e12"):
        assert main(["theory", "solve", str(bandit3), "--weights", "0.2,0.3,0.5", "--beta", beta]) == 0
        out = json.loads(capsys.readouterr().out)
        assert 0 <= out["gap"] <= 1e-9 and all(map(lambda v: v == v, out["logit_mix"]["rewards"]))


def test_prompt_len_and_vocab_limits(capsys):
    _refused(capsys, ["train", "--prompt_len", "1000000", "--out", "unused"], "prompt_len: ")
    _refused(capsys, ["train", "--vocab", "1000000000", "--out", "unused"], "vocab: ")
    assert not Path("unused").exists()


def test_theory_commands_do_not_import_torch(bandit3):
    code = ("import sys; from clp_cli.main import main; "
            f"rc = main(['theory', 'solve', {str(bandit3)!r}, '--weights', '0.2,0.3,0.5', '--beta', '1']); "
            "assert rc == 0; assert 'torch' not in sys.modules, 'torch imported'")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_limits_are_stated_in_help(capsys):
    for argv, text in ((["theory", "front", "--help"], "at most 10000 weightings"),
                       (["theory", "random", "--help"], "at most 100"),
                       (["theory", "solve", "--help"], "[1e-08, 1e+12]"),
                       (["train", "--help"], "at most 512"),
                       (["eval", "--help"], "at most 10000 weightings")):
        with pytest.raises(SystemExit):
            main(argv)
        assert text in " ".join(capsys.readouterr().out.split()), argv
