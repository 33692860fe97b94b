"""Provenance and integrity of clp_min runs (issue 11): each test reproduces a defect the issue lists.

Before the fixes: a moved run folder evaluated another run's pi_ref (regret 1.54 instead of 1.06);
``--resume --lr 0.5 --beta 2.0`` continued with the new values and rewrote the run's config;
``--ref`` with other ``--n_layer/--n_head`` trained the ref's architecture but recorded the flags;
a checkpoint whose metadata was edited loaded (the sha256 covered the tensors only); the
header's metadata order varied between runs; files were written mode 0600; a resume interrupted
between the train_state and policy writes could not continue; a deleted log.json, swapped
policy/ref files or another conditioning on resume gave tracebacks.
"""
import json
import os
import shutil
import struct

import pytest
import torch

from clp_cli.main import main
from clp_min.checkpoint import canonical_safetensors, load_checkpoint, payload_sha256
from clp_min.config import TrainConfig
from clp_min.run_folder import load_trained
from clp_min.train import train

TINY = dict(vocab=5, prompt_len=3, response_len=3, n_layer=1, n_head=2, n_embd=8, pretrain_steps=5,
            pretrain_batch=8, prompts_per_step=2, samples_per_prompt=2, steps=2, log_every=1, ckpt_every=1,
            conditioning="attn", beta=0.1)


def _run(out, **kw) -> TrainConfig:
    cfg = TrainConfig(out=str(out), **{**TINY, **kw})
    train(cfg, progress=False)
    return cfg


def _state(module) -> dict:
    return {k: v.clone() for k, v in module.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One finished tiny run (read-only for the tests that use it; they copy it to change it)."""
    out = tmp_path_factory.mktemp("prov") / "run"
    _run(out)
    return out


def _copy(run, tmp_path, name="copy"):
    dst = tmp_path / name
    shutil.copytree(run, dst)
    return dst


def _rewrite_metadata(path, edit) -> None:
    """Change the header's metadata in place (the tensors untouched), as a hand edit would."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    edit(header["__metadata__"])
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n:])


def test_moved_run_uses_its_own_reference(tmp_path):
    orig, moved = tmp_path / "orig", tmp_path / "moved"
    _run(orig, seed=0)
    ref0 = _state(load_checkpoint(orig / "ref.safetensors").model)
    shutil.move(str(orig), str(moved))
    _run(orig, seed=1)  # another run where the old relative path pointed
    ref1 = _state(load_checkpoint(orig / "ref.safetensors").model)
    assert not _same(ref0, ref1)
    _, pi_ref, _ = load_trained(moved)
    assert _same(_state(pi_ref), ref0)
    # from another working folder too
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path / "orig")
        assert _same(_state(load_trained(moved)[1]), ref0)
    finally:
        os.chdir(cwd)
    # a different ref put in its place is refused by the recorded sha256
    shutil.copy(orig / "ref.safetensors", moved / "ref.safetensors")
    with pytest.raises(ValueError, match="^ref: .*sha256 differs"):
        load_trained(moved)


def test_resume_refuses_changed_fields_naming_them(run, tmp_path, capsys):
    out = _copy(run, tmp_path)
    for field, value in (("lr", 0.5), ("beta", 2.0), ("conditioning", "full"), ("seed", 3)):
        with pytest.raises(ValueError, match=f"^{field}: the run in .* was trained with"):
            train(TrainConfig(out=str(out), **{**TINY, field: value, "resume": True}), progress=False)
    assert main(["train", "--out", str(out), "--resume", "--lr", "0.5", "--beta", "2.0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("clp: error: beta: ") and err.count("\n") == 1
    # the log's config is untouched; a permitted change (more steps) keeps every other field from the run
    assert json.loads((out / "log.json").read_text())["config"]["lr"] == TrainConfig.lr
    assert main(["train", "--out", str(out), "--resume", "--steps", "3"]) == 0
    capsys.readouterr()
    config = json.loads((out / "log.json").read_text())["config"]
    assert config["steps"] == 3 and config["n_embd"] == TINY["n_embd"] and config["beta"] == TINY["beta"]


def test_ref_with_another_architecture_is_refused(run, tmp_path):
    with pytest.raises(ValueError, match="^n_layer: the config asks for 3 but ref .* has 1"):
        _run(tmp_path / "r", ref=str(run / "ref.safetensors"), n_layer=3, n_head=4)
    with pytest.raises(ValueError, match="^n_head: the config asks for 4 but ref .* has 2"):
        _run(tmp_path / "r", ref=str(run / "ref.safetensors"), n_head=4)
    cfg = _run(tmp_path / "ok", ref=str(run / "ref.safetensors"))  # matching architecture: accepted
    assert load_trained(cfg.out)[2].n_layer == 1


def test_edited_metadata_is_refused(run, tmp_path):
    out = _copy(run, tmp_path)

    def edit(meta):
        config = json.loads(meta["config"])
        config["train"]["beta"] = 5.0
        meta["config"] = json.dumps(config)

    _rewrite_metadata(out / "policy.safetensors", edit)
    with pytest.raises(ValueError, match="^checkpoint: .* does not match its sha256"):
        load_trained(out)


def _crafted(path, spec) -> None:
    """A checkpoint with a valid sha256 over a hostile spec (anyone can compute the digest)."""
    from safetensors.torch import save

    tensors = {"x": torch.zeros(1)}
    meta = {"format": "clp_min.checkpoint/2", "spec": json.dumps(spec), "config": "{}"}
    meta["sha256"] = payload_sha256(tensors, meta)
    path.write_bytes(save(tensors, metadata=meta))


def test_spec_sizes_and_depth_are_checked_before_allocation(tmp_path):
    huge = {"class": "GPT", "config": {"vocab_size": 10 ** 9, "block_size": 8, "n_layer": 1, "n_head": 1,
                                       "n_embd": 128}}
    _crafted(tmp_path / "huge", huge)
    with pytest.raises(ValueError, match="^checkpoint: .* vocab_size: 1000000000 exceeds the limit"):
        load_checkpoint(tmp_path / "huge")
    deep = {"class": "GPT", "config": {}}
    for _ in range(10 ** 5):
        deep = {"class": "Unconditioned", "model": deep}
    try:
        _crafted(tmp_path / "deep", deep)
    except RecursionError:  # json.dumps itself cannot write it; write the text by hand
        text = '{"class": "Unconditioned", "model": ' * 10 ** 5 + '{}' + "}" * 10 ** 5
        meta = {"format": "clp_min.checkpoint/2", "spec": text, "config": "{}"}
        from safetensors.torch import save
        meta["sha256"] = payload_sha256({"x": torch.zeros(1)}, meta)
        (tmp_path / "deep").write_bytes(save({"x": torch.zeros(1)}, metadata=meta))
    with pytest.raises(ValueError, match="^checkpoint: .*(too deeply|deeper than)"):
        load_checkpoint(tmp_path / "deep")
    # a header nested 1e5 deep (not even a valid checkpoint): one line, no RecursionError
    raw = b"[" * 10 ** 5 + b"]" * 10 ** 5
    (tmp_path / "nested").write_bytes(struct.pack("<Q", len(raw)) + raw)
    with pytest.raises(ValueError, match="^checkpoint: "):
        load_checkpoint(tmp_path / "nested")


def test_identical_runs_write_byte_identical_files(tmp_path, monkeypatch):
    """Same command in two folders: every checkpoint file (and log.json) is byte-identical."""
    files = ("ref.safetensors", "policy.safetensors", "train_state.safetensors", "log.json")
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)
        _run("run")
    for f in files:
        assert (tmp_path / "a" / "run" / f).read_bytes() == (tmp_path / "b" / "run" / f).read_bytes(), f
    # the header is canonical: writing it again changes nothing
    data = (tmp_path / "a" / "run" / "policy.safetensors").read_bytes()
    assert canonical_safetensors(data) == data


def test_files_get_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        _run(tmp_path / "run")
    finally:
        os.umask(old)
    for f in ("ref.safetensors", "policy.safetensors", "train_state.safetensors", "log.json"):
        assert (tmp_path / "run" / f).stat().st_mode & 0o777 == 0o644, f


def test_resume_after_a_crash_between_train_state_and_policy_writes(tmp_path, monkeypatch):
    import clp_min.train as train_mod

    whole = _run(tmp_path / "whole", steps=3)
    real = train_mod.save_checkpoint

    def crash_at_step_2(path, module, config):
        if config.get("step") == 2:
            raise KeyboardInterrupt  # the process dies after train_state of step 2 was written
        real(path, module, config)

    monkeypatch.setattr(train_mod, "save_checkpoint", crash_at_step_2)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "split", steps=3)
    monkeypatch.setattr(train_mod, "save_checkpoint", real)
    train(TrainConfig(out=str(tmp_path / "split"), **{**TINY, "steps": 3, "resume": True}), progress=False)
    a = load_checkpoint(tmp_path / "split" / "policy.safetensors").model
    b = load_checkpoint(tmp_path / "whole" / "policy.safetensors").model
    assert _same(_state(a), _state(b)) and whole.steps == 3


def test_resume_without_log_json_and_swapped_files_are_one_line_refusals(run, tmp_path, capsys):
    out = _copy(run, tmp_path)
    (out / "log.json").unlink()
    with pytest.raises(ValueError, match="^resume: .*log.json is missing"):
        train(TrainConfig(out=str(out), **{**TINY, "steps": 3, "resume": True}), progress=False)
    swapped = _copy(run, tmp_path, "swapped")
    policy, ref = swapped / "policy.safetensors", swapped / "ref.safetensors"
    tmp = swapped / "tmp"
    policy.rename(tmp)
    ref.rename(policy)
    tmp.rename(ref)
    with pytest.raises(ValueError, match="^run_dir: .*not a policy written by clp train"):
        load_trained(swapped)
    assert main(["eval", str(swapped), "--grid", "1", "--prompts", "2", "--samples", "1"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
