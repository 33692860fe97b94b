"""Checkpoints: one safetensors file holding tensors and JSON metadata; loading executes no code.

    save_checkpoint(path, model_or_wrapper, config)      # config: any JSON-serialisable dict
    model, config = load_checkpoint(path)

File layout (safetensors): the state dict (tied tensors stored once) and, in the
header's ``__metadata__``::

    format  "clp_min.checkpoint/1"
    spec    JSON tree describing how to rebuild the module, e.g.
            {"class": "ParamConditioned", "m": 2, "scope": "attn",
             "module": {"class": "InputConditioned", "m": 2, "mode": "prefix",
                        "model": {"class": "GPT", "config": {...GPTConfig...}}}}
    config  the caller's JSON config
    sha256  digest of the tensor payload (names, dtypes, shapes, bytes, sorted by name)

Only the classes GPT, InputConditioned, ParamConditioned (its options and scoped
parameter names recorded), Unconditioned and HFCausalLM can be rebuilt, from their
constructor arguments; nothing is unpickled or evaluated. A transformers model is
rebuilt from its recorded class and ``config.to_dict()`` by
``AutoModelForCausalLM.from_config`` only for a class transformers maps to that config
(no ``trust_remote_code``), with its peft adapters re-attached (``clp_min.hf``).
Writes are atomic: a temporary file in the same directory, fsync, then ``os.replace``.
A truncated or tampered file is refused with a ValueError naming the file.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from clp_min.conditioning import ParamConditioned, Unconditioned
from clp_min.hf import HFCausalLM, build_hf, hf_spec
from clp_min.input_cond import InputConditioned
from clp_min.model import GPT, GPTConfig

FORMAT = "clp_min.checkpoint/1"
PARAM_OPTIONS = ("untie", "mix_tied", "frozen", "lora_mix")  # ParamConditioned's constructor options


class Checkpoint(NamedTuple):
    model: nn.Module
    config: dict


def module_spec(module: nn.Module) -> dict:
    """The JSON-able constructor arguments that rebuild ``module`` (without its tensors)."""
    if isinstance(module, GPT):
        return {"class": "GPT", "config": asdict(module.config)}
    if isinstance(module, InputConditioned):
        return {"class": "InputConditioned", "m": module.m, "mode": module.mode, "model": module_spec(module.model)}
    if isinstance(module, ParamConditioned):
        return {"class": "ParamConditioned", "m": module.m, "scope": module.scope, "names": module.names,
                **{k: getattr(module, k) for k in PARAM_OPTIONS}, "module": module_spec(module.base)}
    if isinstance(module, HFCausalLM):
        return hf_spec(module)
    if isinstance(module, Unconditioned):
        return {"class": "Unconditioned", "model": module_spec(module.model)}
    raise ValueError(f"model: cannot checkpoint a {type(module).__name__}; "
                     f"expected GPT, InputConditioned, ParamConditioned, Unconditioned or HFCausalLM")


def build_from_spec(spec: dict) -> nn.Module:
    """Inverse of ``module_spec`` (fresh parameters; the caller loads the tensors)."""
    kind = spec.get("class") if isinstance(spec, dict) else None
    if kind == "GPT":
        return GPT(GPTConfig(**spec["config"]))
    if kind == "InputConditioned":
        return InputConditioned(build_from_spec(spec["model"]), spec["m"], spec["mode"])
    if kind == "ParamConditioned":
        scope = spec["scope"] if isinstance(spec["scope"], str) else list(spec["scope"])
        wrapper = ParamConditioned.from_base(build_from_spec(spec["module"]), spec["m"], scope,
                                             **{k: spec[k] for k in PARAM_OPTIONS})
        if wrapper.names != spec["names"]:  # thetas are stored by position; the names say what each one is
            raise ValueError(f"checkpoint: scope {scope!r} selects {wrapper.names} in the rebuilt module, "
                             f"the checkpoint recorded {spec['names']}")
        return wrapper
    if kind == "HFCausalLM":
        return build_hf(spec)
    if kind == "Unconditioned":
        return Unconditioned(build_from_spec(spec["model"]))
    raise ValueError(f"checkpoint: unknown module class {kind!r} in spec")


def _unique_tensors(module: nn.Module) -> dict:
    """State dict with tied tensors kept once (under the first name)."""
    seen, out = set(), {}
    for name, t in module.state_dict().items():
        key = (t.data_ptr(), t.dtype, tuple(t.shape))
        if key not in seen:
            seen.add(key)
            out[name] = t.detach().contiguous().cpu()
    return out


def payload_sha256(tensors: dict) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(json.dumps([name, str(t.dtype), list(t.shape)]).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(path, model_or_wrapper: nn.Module, config: dict) -> None:
    """Write ``model_or_wrapper`` and ``config`` to ``path`` atomically."""
    try:
        config_json = json.dumps(config)
    except (TypeError, ValueError) as err:
        raise ValueError(f"config: not JSON-serialisable ({err})") from None
    tensors = _unique_tensors(model_or_wrapper)
    metadata = {"format": FORMAT, "spec": json.dumps(module_spec(model_or_wrapper)),
                "config": config_json, "sha256": payload_sha256(tensors)}
    data = st_save(tensors, metadata=metadata)
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _read_metadata(data: bytes, path) -> dict:
    if len(data) < 8:
        raise ValueError(f"checkpoint: {path} is truncated ({len(data)} bytes)")
    (n,) = struct.unpack("<Q", data[:8])
    if 8 + n > len(data):
        raise ValueError(f"checkpoint: {path} is truncated (header of {n} bytes, file of {len(data)})")
    try:
        header = json.loads(data[8:8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError(f"checkpoint: {path} has a corrupt header (not JSON)") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"checkpoint: {path} is not a {FORMAT} file")
    for key in ("spec", "config", "sha256"):
        if key not in meta:
            raise ValueError(f"checkpoint: {path} metadata lacks {key!r}")
    return meta


def load_checkpoint(path) -> Checkpoint:
    """Rebuild the module saved at ``path``; refuses truncated, tampered or foreign files."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise ValueError(f"checkpoint: cannot read {path}: {err.strerror}") from None
    meta = _read_metadata(data, path)
    try:
        tensors = st_load(data)
    except SafetensorError as err:
        raise ValueError(f"checkpoint: {path} is truncated or corrupt ({err})") from None
    if payload_sha256(tensors) != meta["sha256"]:
        raise ValueError(f"checkpoint: {path} tensor payload does not match its sha256 (tampered or corrupt)")
    try:
        spec, config = json.loads(meta["spec"]), json.loads(meta["config"])
    except json.JSONDecodeError:
        raise ValueError(f"checkpoint: {path} metadata is not valid JSON") from None
    with torch.random.fork_rng(devices=[]):  # building initialises parameters; leave the caller's RNG alone
        try:
            model = build_from_spec(spec)
        except (TypeError, KeyError) as err:
            raise ValueError(f"checkpoint: {path} spec is malformed ({err})") from None
    expected = _unique_tensors(model)
    if expected.keys() != tensors.keys():
        name = sorted(expected.keys() ^ tensors.keys())[0]
        raise ValueError(f"checkpoint: {path} tensor {name} does not match the module described by its spec")
    for name, t in expected.items():
        if t.shape != tensors[name].shape:
            raise ValueError(f"checkpoint: {path} tensor {name} has shape {tuple(tensors[name].shape)}, "
                             f"the spec's module expects {tuple(t.shape)}")
    model.load_state_dict(tensors, strict=False)  # tied aliases are filled through their shared tensor
    return Checkpoint(model, config)
