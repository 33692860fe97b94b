"""Faults a run survives (theory.output_folder, clp_min.train, clp_min.checkpoint): each test starts a real
``clp train`` and hurts it the way a user's machine would.

Before the guard: ``clp train --out run`` onto a finished run exited 0 and replaced it; two writers on
one folder both exited 0, the folder ending with the second's policy and log. What already held
(SIGKILL then ``--resume`` equals an uninterrupted run) is kept here as a test.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from clp_cli.main import main
from clp_min.checkpoint import load_checkpoint
from clp_min.config import TrainConfig
from clp_min.train import train
from theory.output_folder import held_by

ROOT = Path(__file__).resolve().parents[3]
TINY = dict(vocab=5, prompt_len=3, response_len=3, n_layer=1, n_head=2, n_embd=8, pretrain_steps=5,
            pretrain_batch=8, prompts_per_step=2, samples_per_prompt=2, steps=4, log_every=1, ckpt_every=1,
            conditioning="attn", beta=0.1)
FILES = ("ref.safetensors", "policy.safetensors", "train_state.safetensors", "log.json")


def _flags(**kw) -> list:
    return [f"--{k}={v}" for k, v in {**TINY, **kw}.items()]


def _clp(argv: list, hook: str = "") -> subprocess.Popen:
    """``clp ARGV`` in a new process; ``hook`` runs first in it (a kill or a pause at a chosen point)."""
    code = f"import sys\n{hook}\nfrom clp_cli.main import main\nsys.exit(main({argv!r}))\n"
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})


def _tensors(out: Path) -> dict:
    """The policy's and the train state's tensors of a run folder."""
    from safetensors.torch import load_file

    policy = load_checkpoint(out / "policy.safetensors").model.state_dict()
    return {**{f"policy.{k}": v for k, v in policy.items()},
            **{f"state.{k}": v for k, v in load_file(out / "train_state.safetensors").items()}}


def _assert_same_tensors(a: Path, b: Path) -> None:
    ta, tb = _tensors(a), _tensors(b)
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> Path:
    """The undisturbed 4-step run every disturbed one must end equal to."""
    out = tmp_path_factory.mktemp("faults") / "whole"
    train(TrainConfig(out=str(out), **TINY), progress=False)
    return out


KILL_MID_STEP = """
import os, signal, clp_min.rl as rl
real, calls = rl.rl_step, []
def rl_step(*a, **k):
    calls.append(1)
    if len(calls) == 3:  # during step 3, after the checkpoint of step 2
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*a, **k)
rl.rl_step = rl_step
"""
KILL_MID_CHECKPOINT = """
import os, signal, clp_min.checkpoint as ck
real, calls = ck.write_atomic, []
def write_atomic(path, data):
    if path.name == "policy.safetensors":
        calls.append(1)
        if len(calls) == 3:  # step 3: train_state written, the policy not yet
            os.kill(os.getpid(), signal.SIGKILL)
    real(path, data)
ck.write_atomic = write_atomic
"""


def test_sigkill_mid_run_then_resume_equals_the_uninterrupted_run(whole, tmp_path):
    outs = {name: tmp_path / name for name in ("mid_step", "mid_checkpoint")}
    procs = {name: _clp(["train", "--out", str(outs[name]), *_flags()], hook)
             for name, hook in (("mid_step", KILL_MID_STEP), ("mid_checkpoint", KILL_MID_CHECKPOINT))}
    for name, proc in procs.items():
        proc.communicate(timeout=120)
        assert proc.returncode == -signal.SIGKILL, name
        assert held_by(outs[name]) is None  # no stale lock
        assert load_checkpoint(outs[name] / "policy.safetensors").config["step"] == 2
        assert main(["train", "--out", str(outs[name]), "--resume"]) == 0
        _assert_same_tensors(outs[name], whole)


PAUSE_AT_STEP_2 = """
import time, pathlib, clp_min.rl as rl
real, calls = rl.rl_step, []
def rl_step(*a, **k):
    calls.append(1)
    if len(calls) == 2:
        print("paused", flush=True)
        while not pathlib.Path({go!r}).exists():
            time.sleep(0.02)
    return real(*a, **k)
rl.rl_step = rl_step
"""


def test_a_second_writer_is_refused_at_once_and_the_first_is_unharmed(whole, tmp_path, capsys):
    out, go = tmp_path / "run", tmp_path / "go"
    first = _clp(["train", "--out", str(out), *_flags()], PAUSE_AT_STEP_2.format(go=str(go)))
    try:
        assert first.stdout.readline().strip() == "paused"  # holding the folder, in the middle of its run
        start = time.perf_counter()
        assert main(["train", "--out", str(out), *_flags(steps=2)]) == 2  # the user's wrong format string
        seconds = time.perf_counter() - start
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"clp: error: out: {out} is in use by process {first.pid},"), err
        assert first.poll() is None  # refused while the first still runs: it did not wait for it
        print(f"second writer refused in {seconds:.3f} s")  # bench/ measures; shown with -s
    finally:
        go.touch()
    _, first_err = first.communicate(timeout=120)
    assert first.returncode == 0, first_err
    _assert_same_tensors(out, whole)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="finds a write's file through /proc")
@pytest.mark.parametrize("target", ["train_state.safetensors", "policy.safetensors", "log.json"])
def test_a_failing_write_keeps_the_last_checkpoint_and_the_run_resumes(whole, tmp_path, monkeypatch, capsys, target):
    """A full disk at each write of step 3's checkpoint: one line naming the file, exit status 2, the last
    complete checkpoint loadable, no temporary left behind; a resume then ends equal to the undisturbed run."""
    out = tmp_path / "run"
    train(TrainConfig(out=str(out), **{**TINY, "steps": 2}), progress=False)
    real_fsync = os.fsync

    def fsync(fd):
        name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        if name.startswith(f".{target}.") and json.loads((out / "log.json").read_text())["history"][-1]["step"] == 3:
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    assert main(["train", "--out", str(out), "--resume", "--steps", "4"]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()  # the progress bar (on stderr), closed, then the error on its own line
    assert [x for x in lines if "clp:" in x] == lines[-1:] == [f"clp: error: {out / target}: No space left on device"]
    assert "Traceback" not in err
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]
    step = load_checkpoint(out / "policy.safetensors").config["step"]
    assert step == (3 if target == "log.json" else 2)
    assert main(["train", "--out", str(out), "--resume", "--steps", "4"]) == 0
    _assert_same_tensors(out, whole)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_run_folder_is_refused_before_any_work(whole, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(whole, out)
    before = {f: (out / f).read_bytes() for f in FILES}
    out.chmod(0o555)
    try:
        assert main(["train", "--out", str(out), "--resume", "--steps", "5"]) == 2
    finally:
        out.chmod(0o755)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"clp: error: out: {out} is not writable"]
    assert before == {f: (out / f).read_bytes() for f in FILES}


def test_train_onto_a_finished_run_is_refused_and_overwrite_replaces_it(whole, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(whole, out)
    before = {f: (out / f).read_bytes() for f in FILES}
    assert main(["train", "--out", str(out), *_flags(steps=2)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"clp: error: out: {out} already holds log.json, policy.safetensors")
    assert "--resume" in err[0] and "--overwrite" in err[0]
    assert before == {f: (out / f).read_bytes() for f in FILES}  # every byte of the old run in place
    with pytest.raises(ValueError, match="^out: .* already holds"):  # a Python sweep script is held to it too
        train(TrainConfig(out=str(out), **{**TINY, "steps": 2}), progress=False)
    (out / "eval").mkdir()
    (out / "eval" / "front.json").write_text("the old front")
    assert main(["eval", str(out), "--grid", "1", "--prompts", "2", "--samples", "1"]) == 2  # clp eval: its own files
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"clp: error: out: {out / 'eval'} already holds front.json; replace them with --overwrite "
                   f"(or choose another folder)"]
    with pytest.raises(ValueError, match="^ref: .* lies in .*copy it elsewhere first"):  # it would replace its own pi_ref
        train(TrainConfig(out=str(out), ref=str(out / "ref.safetensors"), **{**TINY, "steps": 2}), overwrite=True)
    assert main(["train", "--out", str(out), *_flags(steps=2), "--overwrite"]) == 0
    assert load_checkpoint(out / "policy.safetensors").config["step"] == 2
    assert sorted(os.listdir(out)) == sorted([".clp.lock", *FILES])  # the old run's backup is gone
