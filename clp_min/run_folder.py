"""The run folder of ``clp train``: what a run writes besides its policy, and how it is read back.

Files under ``out`` (clp_min.train): ``ref.safetensors`` (pi_ref), ``policy.safetensors`` (policy and
provenance), ``train_state.safetensors`` (+ ``.prev`` while a checkpoint is written), ``log.json``.
Provenance: pi_ref's path is recorded relative to the run folder when inside it (a moved folder
stays self-contained) with its sha256, checked at every load; a resumed configuration is compared
field by field with the saved one (``RESUMABLE`` fields may change).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from clp_min.checkpoint import canonical_safetensors, load_checkpoint, write_atomic
from clp_min.config import RESUMABLE, TrainConfig
from clp_min.model import GPT


def save_train_state(path: Path, optimizer, generator: torch.Generator, step: int) -> None:
    """Optimizer state and torch.Generator state as safetensors (no code runs on load)."""
    state = optimizer.state_dict()
    tensors = {"generator": generator.get_state()}
    for i, s in state["state"].items():
        for key, t in s.items():
            tensors[f"state.{i}.{key}"] = torch.as_tensor(t).contiguous().cpu()
    meta = {"step": str(step), "param_groups": json.dumps(state["param_groups"])}
    write_atomic(path, canonical_safetensors(st_save(tensors, metadata=meta)))


def _read_train_state(path: Path) -> tuple:
    """``(step, tensors, metadata)`` of a train state file."""
    try:
        data = path.read_bytes()
        tensors = st_load(data)
        n = int.from_bytes(data[:8], "little")
        meta = json.loads(data[8:8 + n])["__metadata__"]
        return int(meta["step"]), tensors, meta
    except (OSError, SafetensorError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"resume: cannot read {path} ({err})") from None


def load_train_state(out: Path, optimizer, generator: torch.Generator, step: int) -> int:
    """Restore the train state of ``step`` (``train_state`` or, after an interrupted write, ``.prev``)."""
    paths = [out / "train_state.safetensors", out / "train_state.prev.safetensors"]
    found = [p for p in paths if p.exists()]
    if not found:
        raise ValueError(f"resume: {paths[0]} is missing")
    states = [_read_train_state(p) for p in found]
    matching = [s for s in states if s[0] == step]
    if not matching:
        raise ValueError(f"resume: policy is at step {step} but train_state at {states[0][0]}")
    _, tensors, meta = matching[0]
    state = {}
    for name, t in tensors.items():
        if name.startswith("state."):
            _, i, key = name.split(".", 2)
            state.setdefault(int(i), {})[key] = t
    try:
        optimizer.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
    except (ValueError, KeyError, RuntimeError) as err:
        raise ValueError(f"resume: the saved optimizer state does not fit this policy ({err})") from None
    generator.set_state(tensors["generator"])
    return step


def file_sha256(path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError as err:
        raise ValueError(f"ref: cannot read {path}: {err.strerror}") from None
    return h.hexdigest()


def load_reference(path, sha256: str | None = None) -> GPT:
    """A frozen pi_ref from a checkpoint; with ``sha256``, refuses a file other than the recorded one."""
    if sha256 is not None and file_sha256(path) != sha256:
        raise ValueError(f"ref: {path} is not the pi_ref this run was trained with (sha256 differs)")
    model, _ = load_checkpoint(path)
    if not isinstance(model, GPT):
        raise ValueError(f"ref: {path} holds a {type(model).__name__}, expected a plain GPT")
    return frozen(model)


def check_reference_architecture(pi_ref: GPT, cfg: TrainConfig, path) -> None:
    """Refuse a pi_ref whose architecture disagrees with the config, naming the first field that differs."""
    task = cfg.task()
    want = {"vocab": task.vocab, "n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_embd": cfg.n_embd}
    have = {"vocab": pi_ref.config.vocab_size, "n_layer": pi_ref.config.n_layer,
            "n_head": pi_ref.config.n_head, "n_embd": pi_ref.config.n_embd}
    for name in want:
        if want[name] != have[name]:
            raise ValueError(f"{name}: the config asks for {want[name]} but ref {path} has {have[name]}")
    if pi_ref.config.block_size < task.prompt_len + task.response_len:
        raise ValueError(f"prompt_len: ref {path} holds {pi_ref.config.block_size} positions, fewer than "
                         f"prompt_len + response_len = {task.prompt_len + task.response_len}")


def _ref_location(ref_path: Path, out: Path) -> str:
    """pi_ref's path as recorded: relative to the run folder when inside it, else absolute."""
    try:
        return str(ref_path.resolve().relative_to(out.resolve()))
    except ValueError:
        return str(ref_path.resolve())


def _resolve_ref(meta: dict, out: Path) -> Path:
    ref = Path(meta["ref"])
    return ref if ref.is_absolute() else out / ref


def saved_config(out) -> dict:
    """The train config saved in ``out/policy.safetensors`` (a dict)."""
    path = Path(out) / "policy.safetensors"
    if not path.exists():
        raise ValueError(f"resume: {path} is missing (nothing to resume)")
    _, meta = load_checkpoint(path)
    if not isinstance(meta, dict) or "train" not in meta:
        raise ValueError(f"resume: {path} is not a policy written by clp train")
    return meta["train"]


def resume_config(out, given: dict) -> TrainConfig:
    """The saved config of the run in ``out`` with the fields in ``given`` put over it (resume=True)."""
    return TrainConfig.from_dict({**saved_config(out), **given, "out": str(out), "resume": True})


def frozen(model: torch.nn.Module) -> torch.nn.Module:
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def load_trained(out) -> tuple:
    """``(policy, pi_ref, cfg)`` of a finished or interrupted run in ``out``.

    pi_ref is found relative to ``out`` (runs written before provenance was recorded:
    its old path) and must match the recorded sha256, so a moved folder is self-contained.
    """
    out = Path(out)
    policy, meta = load_checkpoint(out / "policy.safetensors")
    if not isinstance(meta, dict) or "train" not in meta or "ref" not in meta:
        raise ValueError(f"run_dir: {out / 'policy.safetensors'} is not a policy written by clp train")
    cfg = TrainConfig.from_dict(meta["train"])
    return frozen(policy), load_reference(_resolve_ref(meta, out), meta.get("ref_sha256")), cfg


def _write_log(out: Path, cfg: TrainConfig, history: list) -> None:
    write_atomic(out / "log.json", json.dumps({"config": asdict(cfg), "history": history}, indent=1).encode())


def _check_unchanged(saved: dict, cfg: TrainConfig) -> None:
    """Refuse a resumed config that differs from the saved one outside ``RESUMABLE``, naming the field."""
    now = asdict(cfg)
    old = asdict(TrainConfig.from_dict(saved))
    for name in now:
        if name not in RESUMABLE and now[name] != old[name]:
            raise ValueError(f"{name}: the run in {cfg.out} was trained with {old[name]!r}; resuming with "
                             f"{now[name]!r} would change it (start a new run, or leave {name} as it was)")
