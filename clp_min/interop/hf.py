"""The one adapter that gives a Hugging Face causal LM the project's calling convention.

    lm = HFCausalLM(model)                    # any AutoModelForCausalLM model, or a peft model around one
    logits, cache = lm(idx, cache=None, attention_mask=None)

Shapes: B batch, T new tokens, L positions already in the cache, V vocabulary,
nh key/value heads, hs head size.

- ``idx`` ``[B, T]`` token ids; ``logits`` ``[B, T, V]``.
- ``cache``: ``None`` or the tuple returned by the previous call, one ``(k, v)`` pair
  per layer, each ``[B, nh, L, hs]``: plain tensors batched on dim 0, so the cache
  passes through ``torch.func.vmap`` (per-example weightings in
  ``clp_min.conditioning``) and is never mutated (a fresh transformers cache is
  built from it at each call). Positions continue from ``L``, as in ``clp_min.model``.
- ``attention_mask``: ``None`` or ``[B, L + T]`` (1 = attend, 0 = padding), the
  transformers convention: it covers the cached positions as well as the new ones. It is
  handed to the model as the equivalent 4-D additive mask (``additive_mask``), which
  transformers (>= 4.53, every model) uses as given and which passes through vmap; older
  versions get the 2-D mask, which their sdpa path cannot run under vmap. Positions are
  not shifted by padding (as in a plain transformers forward call).

The cache keyword. transformers 5.x names it ``cache``, 4.x ``past_key_values``; both
forwards also take ``**kwargs``, which silently swallow the other name (decoding then
runs without a cache and without an error). The keyword is read once from the
signature of the underlying model's ``forward`` (through a peft wrapper), and a model
naming neither is refused. Only key/value caches holding the full history are
supported: a sliding-window model (Mistral) runs while the sequence fits in its window
(then sliding-window attention is full attention) and is refused beyond it; caches of
other kinds (state-space layers) are refused at the first call.

Checkpoints. ``hf_spec`` records the model class, ``config.to_dict()`` and, for a peft
model, its adapter configurations; ``build_hf`` rebuilds the module from that record
through ``AutoModelForCausalLM.from_config`` for a class that transformers itself maps
to that config (no ``trust_remote_code``, nothing unpickled). ``clp_min.checkpoint``
calls both.

transformers and peft are optional (``pip install -e ".[hf]"``); they are imported
here only when a model is wrapped, rebuilt or called.
"""
from __future__ import annotations

import importlib.util
import inspect

import torch
import torch.nn as nn

FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
CACHE_KEYWORDS = ("cache", "past_key_values")  # transformers 5.x, 4.x


def _inner(model: nn.Module) -> nn.Module:
    """The transformers model inside a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def cache_keyword(model: nn.Module) -> str:
    """The name under which ``model``'s forward takes its key/value cache; never a ``**kwargs`` catch-all."""
    params = inspect.signature(_inner(model).forward).parameters
    named = [k for k in CACHE_KEYWORDS if k in params]
    if not named or "use_cache" not in params:
        raise ValueError(f"model: {type(_inner(model)).__name__}.forward names neither of {CACHE_KEYWORDS} "
                         f"together with use_cache; HFCausalLM needs a transformers causal LM")
    return named[0]


def _from_pairs(cache: tuple):
    """A transformers DynamicCache holding the ``(k, v)`` pairs (4.x and 5.x)."""
    from transformers import DynamicCache

    if hasattr(DynamicCache, "from_legacy_cache"):  # transformers < 4.56
        return DynamicCache.from_legacy_cache(cache)
    return DynamicCache(list(cache))


def _to_pairs(hf_cache) -> tuple:
    """The ``(k, v)`` pair of every layer of a transformers cache, ``[B, nh, L, hs]`` each."""
    if hf_cache is None:
        raise ValueError("model: returned no key/value cache although use_cache=True (transformers turns the "
                         "cache off under gradient checkpointing in training mode); call model.eval() first")
    if hasattr(hf_cache, "layers"):  # transformers >= 4.56
        for layer in hf_cache.layers:
            if type(layer).__name__ not in ("DynamicLayer", "DynamicSlidingWindowLayer"):
                raise ValueError(f"model: cache layer {type(layer).__name__} is not a key/value layer; "
                                 f"HFCausalLM supports attention models only")
            if getattr(layer, "cumulative_length", 0) > getattr(layer, "sliding_window", float("inf")) - 1:
                raise ValueError(f"model: {layer.cumulative_length} positions exceed the sliding window of "
                                 f"{layer.sliding_window}; HFCausalLM keeps full histories only")
        return tuple((layer.keys, layer.values) for layer in hf_cache.layers)
    legacy = hf_cache if isinstance(hf_cache, tuple) else hf_cache.to_legacy_cache()  # transformers < 4.56
    return tuple((k, v) for k, v in legacy)


def additive_mask(attention_mask: torch.Tensor, L: int, T: int, dtype: torch.dtype) -> torch.Tensor:
    """The causal and padding mask ``[B, 1, T, L+T]`` as transformers' 4-D additive form (0 or the dtype's min).

    Query ``t`` sits at position ``L + t`` and sees key ``s`` iff ``s <= L + t`` and
    ``attention_mask[b, s] == 1``. transformers uses a 4-D mask as given, for every
    attention implementation; built from a 2-D mask, its sdpa path branches on the mask's
    values, which ``torch.func.vmap`` (per-example weightings) cannot trace.
    """
    S = attention_mask.size(1)  # L + T, checked by the caller
    pos = torch.arange(S, device=attention_mask.device)
    causal = pos[None, :] <= L + pos[:T, None]  # (T, S)
    allowed = causal[None] & attention_mask.bool()[:, None, :]  # (B, T, S)
    zero = torch.zeros((), dtype=dtype, device=attention_mask.device)
    return torch.where(allowed, zero, torch.finfo(dtype).min)[:, None]  # (B, 1, T, S)


class HFCausalLM(nn.Module):
    """``model(idx, cache=None, attention_mask=None) -> (logits [B, T, V], cache)`` for a transformers causal LM.

    Attributes: ``model`` (the wrapped model, parameters named ``model.*``), ``cache_keyword``,
    ``four_d_masks`` (whether this transformers takes the 4-D mask).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        if isinstance(model, HFCausalLM):
            raise ValueError("model: already an HFCausalLM")
        self.cache_keyword = cache_keyword(model)
        self.four_d_masks = importlib.util.find_spec("transformers.masking_utils") is not None  # >= 4.53
        self.model = model

    def forward(self, idx, cache=None, attention_mask=None):
        kwargs = {self.cache_keyword: None if cache is None else _from_pairs(cache), "use_cache": True}
        if attention_mask is not None:
            L, T = (0 if cache is None else cache[0][0].size(2)), idx.size(1)
            if attention_mask.size(1) != L + T:
                raise ValueError(f"attention_mask: covers {attention_mask.size(1)} positions, expected {L} cached "
                                 f"+ {T} new = {L + T}")
            dtype = self.model.get_input_embeddings().weight.dtype
            kwargs["attention_mask"] = additive_mask(attention_mask, L, T, dtype) if self.four_d_masks \
                else attention_mask
        out = self.model(input_ids=idx, **kwargs)
        return out.logits, _to_pairs(out.past_key_values)


def hf_spec(lm: HFCausalLM) -> dict:
    """JSON-able record that rebuilds ``lm`` (without its tensors): class, config, peft adapters."""
    inner = _inner(lm.model)
    spec = {"class": "HFCausalLM", "model_class": type(inner).__name__, "config": inner.config.to_dict()}
    tensors = [t for t in (*inner.parameters(), *inner.buffers()) if t.is_floating_point()]
    if tensors:  # the config's dtype is not updated by model.double(); loading must not cast silently
        spec["dtype"] = str(tensors[0].dtype).removeprefix("torch.")
    if inner is not lm.model:
        spec["peft"] = {name: _peft_config_dict(cfg) for name, cfg in lm.model.peft_config.items()}
        spec["peft_active"] = lm.model.active_adapter
    return spec


def _peft_config_dict(cfg) -> dict:
    d = cfg.to_dict()
    return {k: (sorted(v) if isinstance(v, set) else v) for k, v in d.items()}


def build_hf(spec: dict) -> HFCausalLM:
    """Inverse of ``hf_spec``, fresh parameters; only classes transformers maps to the config's model type."""
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    config_dict = dict(spec["config"])
    model_type = config_dict.pop("model_type", None)
    allowed = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type)
    if allowed is None or spec["model_class"] not in ([allowed] if isinstance(allowed, str) else allowed):
        raise ValueError(f"checkpoint: model class {spec['model_class']!r} with model_type {model_type!r} is not "
                         f"a transformers causal LM (AutoModelForCausalLM maps it to {allowed!r})")
    config = AutoConfig.for_model(model_type, **config_dict)
    model = AutoModelForCausalLM.from_config(config, trust_remote_code=False)
    if type(model).__name__ != spec["model_class"]:
        raise ValueError(f"checkpoint: rebuilt {type(model).__name__}, the spec names {spec['model_class']}")
    if "dtype" in spec:
        if spec["dtype"] not in FLOAT_DTYPES:
            raise ValueError(f"checkpoint: dtype {spec['dtype']!r} is not one of {FLOAT_DTYPES}")
        model = model.to(getattr(torch, spec["dtype"]))
    if "peft" in spec:
        from peft import PeftConfig, get_peft_model

        adapters = list(spec["peft"].items())
        for k, (name, d) in enumerate(adapters):
            cfg = PeftConfig.from_peft_type(**d)
            if k == 0:
                model = get_peft_model(model, cfg, adapter_name=name)
            else:
                model.add_adapter(name, cfg)
        model.set_adapter(spec["peft_active"])
    return HFCausalLM(model)
