"""Input conditioning (the prompting baseline, THEORY.md section 4): ``w`` is part of the input.

    e(w) = W_e w + b_e                       (WeightEmbedding, learned, [B, C])
    mode "prefix": e(w) is one extra input row before the tokens (position 0; tokens start at 1)
    mode "add":    e(w) is added to every token's input embedding

``InputConditioned(model, m, mode)`` wraps a ``GPT`` and follows the conditioned-policy
convention ``policy(w, idx, cache=None) -> (logits, cache)``. In prefix mode the prefix
enters only on the first call (``cache is None``); later calls find it in the cache.
In add mode every call adds ``e(w)``, so incremental decoding matches a full pass.

Combined with parameter conditioning: ``ParamConditioned.from_base(InputConditioned(gpt, m, mode), m, scope)``;
``takes_w = True`` tells ``ParamConditioned`` to pass ``w`` on (already checked).
"""
from __future__ import annotations

import torch.nn as nn

from clp_min.mixing import check_w

MODES = ("prefix", "add")


class WeightEmbedding(nn.Module):
    """Maps weightings ``[B, m]`` to a learned embedding: ``[B, 1, C]`` (prefix) or ``[B, C]`` (add)."""

    def __init__(self, m: int, n_embd: int, mode: str = "prefix"):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode: must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.proj = nn.Linear(m, n_embd)
        nn.init.normal_(self.proj.weight, std=0.02)
        nn.init.zeros_(self.proj.bias)

    def forward(self, w):
        e = self.proj(w)  # (B, C)
        return e[:, None, :] if self.mode == "prefix" else e  # (B, 1, C) or (B, C)


class InputConditioned(nn.Module):
    """A GPT with ``w`` fed as input; ``forward(w, idx, cache=None) -> (logits, cache)``."""

    takes_w = True

    def __init__(self, model: nn.Module, m: int, mode: str = "prefix"):
        super().__init__()
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise ValueError(f"m: must be a positive integer, got {m!r}")
        self.m, self.mode = m, mode
        self.model = model
        self.embed = WeightEmbedding(m, model.config.n_embd, mode)

    def spec(self, module_spec) -> dict:
        """Checkpoint constructor arguments; the inner model's own spec from ``module_spec``."""
        return {"m": self.m, "mode": self.mode, "model": module_spec(self.model)}

    @classmethod
    def from_spec(cls, spec: dict, build) -> "InputConditioned":
        return cls(build(spec["model"]), spec["m"], spec["mode"])

    @property
    def accepts_tree(self) -> bool:  # forward takes tree= (model.TokenTree) when the model does
        return getattr(self.model, "accepts_tree", False)

    def forward(self, w, idx, cache=None, checked: bool = False, tree=None):
        """``w`` ``[m]`` (whole batch) or ``[B, m]``; ``checked=True`` skips validation (ParamConditioned did it)."""
        if not checked:
            w = check_w(w, self.m)
        w = w.to(self.embed.proj.weight.dtype)
        if w.dim() == 1:
            w = w.expand(idx.size(0), self.m)  # (B, m)
        e = self.embed(w)
        if self.mode == "prefix":
            return self.model(idx, cache=cache, prefix=e if cache is None else None, tree=tree)
        return self.model(idx, cache=cache, input_add=e, tree=tree)
