"""Checkpoints: one safetensors file holding tensors and JSON metadata; loading executes no code.

    save_checkpoint(path, model_or_wrapper, config)      # config: any JSON-serialisable dict
    model, config = load_checkpoint(path)

File layout (safetensors): the state dict (tied tensors stored once) and, in the
header's ``__metadata__``::

    format  "clp_min.checkpoint/2"
    spec    JSON tree describing how to rebuild the module, e.g.
            {"class": "ParamConditioned", "m": 2, "scope": "attn",
             "module": {"class": "InputConditioned", "m": 2, "mode": "prefix",
                        "model": {"class": "GPT", "config": {...GPTConfig...}}}}
    config  the caller's JSON config
    sha256  digest of format, spec and config and of the tensor payload (names,
            dtypes, shapes, bytes, sorted by name): editing any of them is detected

Only the classes GPT, ParamConditioned (its options and scoped parameter names
recorded), Unconditioned, HFCausalLM and the mechanisms of ``clp_min.mechanisms.BY_CLASS``
(InputConditioned, SVDLoRA, SoftTokens, PromptTokens) can be rebuilt, from their
constructor arguments; nothing is unpickled or evaluated. A transformers model is
rebuilt from its recorded class and ``config.to_dict()`` by
``AutoModelForCausalLM.from_config`` only for a class transformers maps to that config
(no ``trust_remote_code``), with its peft adapters re-attached (``clp_min.interop.hf``).
Before anything is allocated the spec is checked: at most ``MAX_SPEC_DEPTH`` levels
of nesting, ``m <= MAX_M``, the mechanisms' sizes ``<= MAX_MECHANISM_SIZE`` and
GPTConfig's size limits (clp_min.model; the sizes in a
transformers config are not limited before ``from_config`` allocates).
The header is written canonically (keys sorted, compact JSON), so identical
modules and configs give byte-identical files. Writes are atomic: a temporary
file in the same directory (given the usual umask permissions), fsync, then
``os.replace``. A truncated or tampered file is refused with a ValueError naming the file.
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
from clp_min.interop.hf import HFCausalLM, build_hf, hf_spec
from clp_min.mechanisms import BY_CLASS
from clp_min.model import GPT, GPTConfig

FORMAT = "clp_min.checkpoint/2"
MAX_SPEC_DEPTH = 8  # nesting of module specs (the deepest real one has 4 levels)
MAX_M = 64  # policy copies / entries of w in a spec
MAX_MECHANISM_SIZE = 4096  # rank, n_tokens, grid of the frozen-base mechanisms in a spec
PARAM_OPTIONS = ("untie", "mix_tied", "frozen", "lora_mix")  # ParamConditioned's constructor options


class Checkpoint(NamedTuple):
    model: nn.Module
    config: dict


def module_spec(module: nn.Module) -> dict:
    """The JSON-able constructor arguments that rebuild ``module`` (without its tensors)."""
    if isinstance(module, GPT):
        return {"class": "GPT", "config": asdict(module.config)}
    if isinstance(module, ParamConditioned):
        return {"class": "ParamConditioned", "m": module.m, "scope": module.scope, "names": module.names,
                **{k: getattr(module, k) for k in PARAM_OPTIONS}, "module": module_spec(module.base)}
    if isinstance(module, HFCausalLM):
        return hf_spec(module)
    if isinstance(module, Unconditioned):
        return {"class": "Unconditioned", "model": module_spec(module.model)}
    for name, cls in BY_CLASS.items():  # clp_min.mechanisms
        if isinstance(module, cls):
            return {"class": name, **module.spec(module_spec)}
    raise ValueError(f"model: cannot checkpoint a {type(module).__name__}; "
                     f"expected GPT, ParamConditioned, Unconditioned, HFCausalLM or one of {sorted(BY_CLASS)}")


def check_spec(spec, depth: int = 0) -> None:
    """Sizes and nesting of a spec, checked before ``build_from_spec`` allocates anything."""
    if depth > MAX_SPEC_DEPTH:
        raise ValueError(f"spec: nested deeper than {MAX_SPEC_DEPTH} modules")
    if not isinstance(spec, dict):
        raise ValueError(f"spec: expected a JSON object, got {type(spec).__name__}")
    if "m" in spec and (isinstance(spec["m"], bool) or not isinstance(spec["m"], int) or not 1 <= spec["m"] <= MAX_M):
        raise ValueError(f"spec: m must be an integer in [1, {MAX_M}], got {spec['m']!r}")
    for key in ("rank", "n_tokens", "grid"):
        v = spec.get(key, 0)
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_MECHANISM_SIZE:
            raise ValueError(f"spec: {key} must be an integer in [0, {MAX_MECHANISM_SIZE}], got {v!r}")
    if spec.get("class") == "GPT":
        if not isinstance(spec.get("config"), dict):
            raise ValueError("spec: GPT without a config object")
        GPTConfig(**spec["config"])  # its __post_init__ checks every size against the limits
    for key in ("model", "module"):
        if key in spec:
            check_spec(spec[key], depth + 1)


def build_from_spec(spec: dict) -> nn.Module:
    """Inverse of ``module_spec`` (fresh parameters; the caller loads the tensors)."""
    check_spec(spec)
    return _build(spec)


def _build(spec: dict) -> nn.Module:
    kind = spec.get("class") if isinstance(spec, dict) else None
    if kind == "GPT":
        return GPT(GPTConfig(**spec["config"]))
    if kind == "ParamConditioned":
        scope = spec["scope"] if isinstance(spec["scope"], str) else list(spec["scope"])
        wrapper = ParamConditioned.from_base(_build(spec["module"]), spec["m"], scope,
                                             **{k: spec[k] for k in PARAM_OPTIONS})
        if wrapper.names != spec["names"]:  # thetas are stored by position; the names say what each one is
            raise ValueError(f"checkpoint: scope {scope!r} selects {wrapper.names} in the rebuilt module, "
                             f"the checkpoint recorded {spec['names']}")
        return wrapper
    if kind == "HFCausalLM":
        return build_hf(spec)
    if kind == "Unconditioned":
        return Unconditioned(_build(spec["model"]))
    if kind in BY_CLASS:  # clp_min.mechanisms
        return BY_CLASS[kind].from_spec(spec, _build)
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


def payload_sha256(tensors: dict, metadata: dict) -> str:
    """sha256 over the metadata fields (all but the digest itself) and the tensors, in a fixed order."""
    h = hashlib.sha256()
    h.update(json.dumps({k: v for k, v in metadata.items() if k != "sha256"}, sort_keys=True).encode())
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
    metadata = {"format": FORMAT, "spec": json.dumps(module_spec(model_or_wrapper)), "config": config_json}
    metadata["sha256"] = payload_sha256(tensors, metadata)
    write_atomic(path, canonical_safetensors(st_save(tensors, metadata=metadata)))


def canonical_safetensors(data: bytes) -> bytes:
    """The same safetensors file with its header as sorted, compact JSON (safetensors itself
    writes the metadata in hash-map order, which varies between processes)."""
    (n,) = struct.unpack("<Q", data[:8])
    header = json.dumps(json.loads(data[8:8 + n]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # keep the tensor data 8-byte aligned, as safetensors does
    return struct.pack("<Q", len(header)) + header + data[8 + n:]


def write_atomic(path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, with the permissions the umask gives a new file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # mode 0600
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:  # a full disk, a read-only folder: one line naming the file; the old one stays
        os.unlink(tmp)
        raise OSError(err.errno, err.strerror or str(err), str(path)) from None
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
    except RecursionError:
        raise ValueError(f"checkpoint: {path} header nests JSON too deeply") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if isinstance(meta, dict) and meta.get("format") == "clp_min.checkpoint/1":
        raise ValueError(f"checkpoint: {path} is an older clp_min.checkpoint/1 file, whose sha256 does not "
                         f"cover its metadata; write it again (retrain) to get {FORMAT}")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"checkpoint: {path} is not a {FORMAT} file")
    for key in ("spec", "config", "sha256"):
        if key not in meta:
            raise ValueError(f"checkpoint: {path} metadata lacks {key!r}")
    return {k: meta[k] for k in ("format", "spec", "config", "sha256")}


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
    if payload_sha256(tensors, meta) != meta["sha256"]:
        raise ValueError(f"checkpoint: {path} does not match its sha256 (metadata or tensors tampered or corrupt)")
    try:
        spec, config = json.loads(meta["spec"]), json.loads(meta["config"])
    except json.JSONDecodeError:
        raise ValueError(f"checkpoint: {path} metadata is not valid JSON") from None
    except RecursionError:
        raise ValueError(f"checkpoint: {path} metadata nests JSON too deeply") from None
    try:
        check_spec(spec)  # sizes and depth, before anything is allocated
    except (TypeError, ValueError) as err:
        raise ValueError(f"checkpoint: {path} {err}") from None
    with torch.random.fork_rng(devices=[]):  # building initialises parameters; leave the caller's RNG alone
        try:
            model = _build(spec)
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
