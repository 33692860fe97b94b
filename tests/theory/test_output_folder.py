"""The output-folder guard (theory.output_folder): refusal, lock, atomic --overwrite.

Before it: ``clp train --out run`` onto a finished run replaced it silently, and two writers on
one folder both exited 0, the second's files over the first's.
"""
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from theory.output_folder import (BACKUP, LOCK, _move_aside, _restore, check_output_folder, held_by,
                                  output_folder)

ROOT = Path(__file__).resolve().parents[2]
FILES = ("front.json", "front.png", "E[0-9]*.json")


def _contents(path: Path) -> dict:
    """Every file under ``path`` but the lock, with its bytes."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file() and p.name != LOCK}


def _old_run(path: Path) -> dict:
    path.mkdir()
    (path / "front.json").write_text('{"old": 1}')
    (path / "E1.json").write_text("[1]")
    (path / "notes.txt").write_text("the user's, not ours")
    return _contents(path)


def test_a_folder_holding_what_we_write_is_refused_and_left_as_it_was(tmp_path):
    old = _old_run(tmp_path / "out")
    with pytest.raises(ValueError) as err:
        with output_folder(tmp_path / "out", FILES, resume=False):
            (tmp_path / "out" / "front.json").write_text("new")  # never reached
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"out: {tmp_path / 'out'} already holds E1.json, front.json;")
    assert "--resume" in msg and "--overwrite" in msg
    assert _contents(tmp_path / "out") == old
    with pytest.raises(ValueError, match="replace them with --overwrite") as err:  # no --resume to offer
        check_output_folder(tmp_path / "out", FILES)
    assert "--resume" not in str(err.value)
    with output_folder(tmp_path / "out", FILES, resume=True) as out:  # continuing is allowed
        assert out == tmp_path / "out"
    with output_folder(tmp_path / "other", FILES):  # a new folder, or one holding only other files
        (tmp_path / "other" / "notes.txt").write_text("x")
    with output_folder(tmp_path / "other", FILES):
        pass
    with pytest.raises(ValueError, match="^overwrite: "):
        with output_folder(tmp_path / "out", FILES, resume=True, overwrite=True):
            pass


def test_a_second_writer_is_refused_at_once_naming_the_holder(tmp_path):
    with output_folder(tmp_path / "out", FILES):
        assert held_by(tmp_path / "out") == os.getpid()
        for attempt in (lambda: output_folder(tmp_path / "out", FILES).__enter__(),
                        lambda: check_output_folder(tmp_path / "out", FILES)):
            with pytest.raises(ValueError, match=f"^out: .* is in use by process {os.getpid()},"):
                attempt()
    assert held_by(tmp_path / "out") is None  # released at the end of the block
    with output_folder(tmp_path / "out", FILES):
        pass


def _overwrite_then_sleep(out: Path) -> subprocess.Popen:
    """Another process replacing ``out`` under --overwrite, stopped midway (one new file written)."""
    code = textwrap.dedent(f"""
        import sys, time
        from theory.output_folder import output_folder
        with output_folder({str(out)!r}, {FILES!r}, overwrite=True) as out:
            (out / "front.json").write_text("half of the new run")
            (out / "front.png").write_text("new only")
            print("ready", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_a_killed_writer_leaves_no_stale_lock_and_its_overwrite_is_undone(tmp_path, capsys):
    out = tmp_path / "out"
    old = _old_run(out)
    proc = _overwrite_then_sleep(out)
    try:
        assert held_by(out) == proc.pid and (out / BACKUP).is_dir()
        with pytest.raises(ValueError, match=f"is in use by process {proc.pid},"):
            with output_folder(out, FILES, overwrite=True):
                pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert held_by(out) is None  # the kernel dropped the killed process's lock
    with pytest.raises(ValueError, match="already holds E1.json, front.json;"):  # the old run is back
        with output_folder(out, FILES):
            pass
    assert "interrupted --overwrite" in capsys.readouterr().err
    assert _contents(out) == old


def test_overwrite_replaces_on_success_and_puts_the_old_files_back_on_failure(tmp_path):
    out = tmp_path / "out"
    old = _old_run(out)
    with pytest.raises(KeyboardInterrupt):
        with output_folder(out, FILES, overwrite=True):
            assert not (out / "front.json").exists() and (out / "notes.txt").exists()
            (out / "front.json").write_text("half")
            (out / "E2.json").write_text("new only")
            raise KeyboardInterrupt
    assert _contents(out) == old
    with output_folder(out, FILES, overwrite=True):
        (out / "front.json").write_text("new")
    assert _contents(out) == {"front.json": b"new", "notes.txt": b"the user's, not ours"}


def test_a_restore_that_is_itself_interrupted_is_finished_by_the_next(tmp_path):
    out = tmp_path / "out"
    old = _old_run(out)
    _move_aside(out, FILES, ["E1.json", "front.json"])
    (out / "front.json").write_text("new")
    (out / "front.png").write_text("new only")
    os.replace(out / BACKUP / "E1.json", out / "E1.json")  # the first restore was killed after one entry
    assert _restore(out)
    assert _contents(out) == old and not (out / BACKUP).exists()
    assert not _restore(out)


@pytest.mark.parametrize("argv", [["theory", "front", "{inst}", "--beta", "0.1", "--points", "3", "--out", "{out}"],
                                  ["toy", "run", "E1", "--quick", "--out", "{out}"]])
def test_theory_and_toy_commands_refuse_a_folder_holding_their_results(tmp_path, capsys, argv):
    from clp_cli.main import main

    out = tmp_path / "out"
    out.mkdir()
    (out / ("front.json" if argv[0] == "theory" else "claims.json")).write_text("old")
    inst = ROOT / "tests" / "fixtures" / "bandit_2contexts.json"
    argv = [a.format(inst=inst, out=out) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"clp: error: out: {out} already holds") and "--overwrite" in err[0]
    assert _contents(out) == {("front.json" if argv[0] == "theory" else "claims.json"): b"old"}
    if argv[0] == "theory":
        assert main(argv + ["--overwrite"]) == 0
        assert (out / "front.png").exists() and (out / "front.json").read_text() != "old"
