"""clp_min.checkpoint: save, load and continue give identical results; bad files are refused."""
import os

import pytest
import torch

from clp_min.checkpoint import load_checkpoint, save_checkpoint
from clp_min.conditioning import ParamConditioned, Unconditioned
from clp_min.decoding import sample
from clp_min.mechanisms.input_cond import InputConditioned
from clp_min.model import GPT, GPTConfig

V = 7


def _gpt(seed=0, tie=True):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=V, block_size=12, n_layer=2, n_head=2, n_embd=8, tie_weights=tie))


def _policy(kind):
    """A model of each checkpointable kind, with distinct copies so that w matters."""
    if kind == "gpt":
        return _gpt(0)
    if kind == "untied":
        return _gpt(1, tie=False)
    if kind == "unconditioned":
        return Unconditioned(_gpt(2))
    torch.manual_seed(3)
    inner = InputConditioned(_gpt(3), 2, "prefix") if kind == "both" else _gpt(3)
    pc = ParamConditioned.from_base(inner, 2, "logit" if kind == "both" else ["*.attn.*", "*ln_f*"],
                                    mix_tied=kind == "both")
    with torch.no_grad():
        for theta in pc.thetas:
            theta[1].add_(torch.randn_like(theta[1]))
    return pc


def _call(model, idx, w=torch.tensor([0.3, 0.7])):
    return model(idx)[0] if isinstance(model, GPT) else model(w, idx)[0]


@pytest.mark.parametrize("kind", ["gpt", "untied", "unconditioned", "param", "both"])
def test_save_load_continue_identical(tmp_path, kind):
    model = _policy(kind)
    path = tmp_path / "ckpt.safetensors"
    config = {"lr": 0.1, "steps": [1, 2], "kind": kind}
    save_checkpoint(path, model, config)
    loaded, loaded_config = load_checkpoint(path)
    assert loaded_config == config and type(loaded) is type(model)
    idx = torch.randint(0, V, (3, 5), generator=torch.Generator().manual_seed(0))
    assert torch.equal(_call(loaded, idx), _call(model, idx))
    if kind == "gpt":
        assert loaded.lm_head.weight is loaded.transformer.wte.weight  # tie restored
    # continue: the same SGD steps on both give identical parameters and outputs
    for m in (model, loaded):
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        for _ in range(2):
            opt.zero_grad()
            _call(m, idx).square().mean().backward()
            opt.step()
    assert torch.equal(_call(loaded, idx), _call(model, idx))
    if kind != "gpt" and kind != "untied":  # and continue decoding
        a = sample(model, torch.tensor([0.5, 0.5]), idx, 4, generator=torch.Generator().manual_seed(1))
        b = sample(loaded, torch.tensor([0.5, 0.5]), idx, 4, generator=torch.Generator().manual_seed(1))
        assert torch.equal(a.tokens, b.tokens) and torch.equal(a.logprobs, b.logprobs)


def test_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.safetensors"
    save_checkpoint(path, _gpt(0), {"v": 1})
    assert os.listdir(tmp_path) == ["ckpt.safetensors"]  # no temporary left behind

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, _gpt(1), {"v": 2})
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["ckpt.safetensors"]
    assert load_checkpoint(path).config == {"v": 1}  # the old file is intact


def test_tampered_payload_is_refused(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    save_checkpoint(path, _policy("param"), {})
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x10  # flip one bit inside the last tensor
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="^checkpoint: .*sha256"):
        load_checkpoint(path)


@pytest.mark.parametrize("keep", [0, 4, 20, -10])
def test_truncated_file_is_refused(tmp_path, keep):
    path = tmp_path / "ckpt.safetensors"
    save_checkpoint(path, _gpt(0), {})
    data = path.read_bytes()
    path.write_bytes(data[:keep])
    with pytest.raises(ValueError, match="^checkpoint: .*truncated"):
        load_checkpoint(path)


def test_foreign_and_malformed_files_are_refused(tmp_path):
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"x": torch.zeros(2)}, str(foreign))
    with pytest.raises(ValueError, match="^checkpoint: .*not a clp_min.checkpoint/2 file"):
        load_checkpoint(foreign)
    with pytest.raises(ValueError, match="^checkpoint: cannot read"):
        load_checkpoint(tmp_path / "missing.safetensors")
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(ValueError, match="^checkpoint: .*corrupt header"):
        load_checkpoint(garbage)
    with pytest.raises(ValueError, match="^config: not JSON"):
        save_checkpoint(tmp_path / "c", _gpt(0), {"f": object()})
    with pytest.raises(ValueError, match="^model: cannot checkpoint a Linear"):
        save_checkpoint(tmp_path / "c", torch.nn.Linear(2, 2), {})


def test_spec_naming_an_unknown_class_is_refused(tmp_path):
    # the spec only names classes from a fixed list; anything else is refused, never imported
    import json

    from safetensors.torch import save_file

    from clp_min.checkpoint import FORMAT, payload_sha256
    tensors = {"x": torch.zeros(2)}
    meta = {"format": FORMAT, "spec": json.dumps({"class": "os.system", "config": {}}), "config": "{}",
            }
    meta["sha256"] = payload_sha256(tensors, meta)
    path = tmp_path / "evil.safetensors"
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(ValueError, match="^checkpoint: unknown module class 'os.system'"):
        load_checkpoint(path)
