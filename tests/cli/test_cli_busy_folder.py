"""A second writer is refused at once: ``clp train`` and ``clp reproduce`` test their --out folder's
lock from the raw arguments, before their parsers import torch (which alone takes seconds)."""
import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROBE = ("import sys; from clp_cli.main import main; rc = main(sys.argv[1:]); "
         "print('rc', rc, 'torch', 'torch' in sys.modules)")


@pytest.mark.parametrize("command", [["train", "--steps", "1"], ["reproduce", "--quick"]])
@pytest.mark.parametrize("spelling", ["--out", "--out="])
def test_a_held_folder_is_refused_before_torch_is_imported(tmp_path, command, spelling):
    out = tmp_path / "run"
    out.mkdir()
    fd = os.open(out / ".clp.lock", os.O_RDWR | os.O_CREAT, 0o644)  # this test process is the first writer
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    try:
        where = [f"--out={out}"] if spelling == "--out=" else ["--out", str(out)]
        proc = subprocess.run([sys.executable, "-c", PROBE, *command, *where], cwd=ROOT, capture_output=True,
                              text=True, timeout=120)
    finally:
        os.close(fd)
    assert proc.stdout.split() == ["rc", "2", "torch", "False"], (proc.stdout, proc.stderr)
    assert proc.stderr.strip() == (f"clp: error: out: {out} is in use by process {os.getpid()}, another clp command "
                                   "writing there; wait for it to end or choose another folder")
    assert sorted(p.name for p in out.iterdir()) == [".clp.lock"]  # nothing written


def test_a_free_folder_passes_the_early_check(tmp_path):
    from clp_cli.main import refuse_busy_folder

    refuse_busy_folder(["train", "--out", str(tmp_path)])  # no lock file: nothing to refuse
    (tmp_path / ".clp.lock").write_text("12345\n")  # a lock file left by a finished writer: not held
    refuse_busy_folder(["train", "--out", str(tmp_path)])
