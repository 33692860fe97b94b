"""Soft-token conditioning: learned prompt embeddings per reward, mixed by ``w`` and prepended.

Each reward ``i`` owns ``n`` learned input rows ``E_i [n, C]`` (prompt tuning,
Lester et al. 2021). A weighting mixes them, as parameter mixing mixes weights
(the one implementation, ``clp_min.mixing.mix_parameters``):

    e(w) = sum_i w_i E_i   [n, C], or [B, n, C] for per-example w [B, m]

and ``e(w)`` is placed before the tokens of a frozen GPT. At a vertex ``w = e_i``
the prefix is exactly reward i's tokens ``E_i`` (tested). This is the conditioning
mechanism the CLP paper suggests trying next. Trainable parameters: ``m n C``.

Positions (``position_free_prefix``). ``GPT.forward`` numbers every input row,
prefix included, so n prefix rows would move the prompt from the positions pi_ref
was pretrained at (0 ..) to n .., which a frozen base cannot undo. The base is
therefore a copy of the GPT whose position table has n zero rows in front: the
prefix rows get no position embedding (the learned rows can hold one) and token
``t`` gets the pretrained ``wpe[t]``, on a full pass and through the KV cache alike
(the cache counts the prefix rows, and the table is shifted by exactly that many).

The prefix enters on the first call (``cache is None``); later calls find it in
the cache and ignore ``w``, so ``sample`` and ``sequence_logprobs`` see the same
prefix (tested: sampled log-probs equal a full pass's).
"""
from __future__ import annotations

import copy
from dataclasses import asdict, replace

import torch
import torch.nn as nn

from clp_min.mixing import check_w, mix_parameters
from clp_min.model import GPT
from theory.checks import positive_int


def position_free_prefix(model: GPT, n: int) -> GPT:
    """A copy of ``model`` whose first ``n`` rows take no position: ``block_size + n`` and
    ``wpe' = [0 (n rows); wpe]``, so after an n-row prefix token t sits at ``wpe[t]`` as before."""
    out = copy.deepcopy(model)
    out.config = replace(model.config, block_size=model.config.block_size + n)
    wpe = model.transformer.wpe.weight.detach()
    out.transformer.wpe = nn.Embedding(out.config.block_size, wpe.size(1)).to(wpe.device, wpe.dtype)
    with torch.no_grad():
        out.transformer.wpe.weight.copy_(torch.cat([torch.zeros_like(wpe[:n]), wpe]))  # (n + block_size, C)
    mask = torch.tril(torch.ones(out.config.block_size, out.config.block_size, dtype=torch.bool,
                                 device=wpe.device))
    for block in out.transformer.h:
        block.attn.mask = mask
    return out


def base_config(model: GPT, n: int):
    """The config of the GPT that ``position_free_prefix(., n)`` was made from (for checkpoints)."""
    return replace(model.config, block_size=model.config.block_size - n)


def frozen_prefix_model(model: GPT, n: int) -> GPT:
    """``position_free_prefix`` with every parameter frozen (the base of the prefix mechanisms)."""
    out = position_free_prefix(model, n)
    for p in out.parameters():
        p.requires_grad_(False)
    return out


def check_batch(w: torch.Tensor, idx: torch.Tensor) -> None:
    if w.dim() == 2 and w.size(0) != idx.size(0):
        raise ValueError(f"w: {w.size(0)} per-example weightings for a batch of {idx.size(0)}")


class SoftTokens(nn.Module):
    """A frozen GPT after ``e(w) = sum_i w_i E_i``; ``forward(w, idx, cache=None) -> (logits, cache)``.

    Attributes: ``E`` ``[m, n, C]`` (reward i's rows at ``E[i]``), ``model`` (the frozen
    base with position-free prefix rows), ``m``, ``n_tokens``.
    """

    def __init__(self, model: GPT, m: int, n_tokens: int = 4):
        super().__init__()
        for name, value in (("m", m), ("soft_tokens", n_tokens)):
            positive_int(value, name)
        self.m, self.n_tokens = m, n_tokens
        self.model = frozen_prefix_model(model, n_tokens)
        C = model.config.n_embd
        self.E = nn.Parameter(0.02 * torch.randn(m, n_tokens, C))  # the GPT's embedding init scale

    @classmethod
    def from_config(cls, model: GPT, cfg) -> "SoftTokens":
        """Built by ``clp train`` (``cfg``: clp_min.config.TrainConfig) on a copy of pi_ref."""
        return cls(model, cfg.m, cfg.soft_tokens)

    def spec(self, module_spec) -> dict:
        """Checkpoint constructor arguments: the GPT before its prefix rows were added."""
        return {"m": self.m, "n_tokens": self.n_tokens,
                "model": {"class": "GPT", "config": asdict(base_config(self.model, self.n_tokens))}}

    @classmethod
    def from_spec(cls, spec: dict, build) -> "SoftTokens":
        return cls(build(spec["model"]), spec["m"], spec["n_tokens"])

    accepts_tree = True  # forward takes tree= (model.TokenTree); the nodes see the prefix

    def forward(self, w, idx, cache=None, tree=None):
        """``w`` ``[m]`` (whole batch) or ``[B, m]``; the prefix is added on the first call only."""
        w = check_w(w, self.m)
        check_batch(w, idx)
        if cache is not None:
            return self.model(idx, cache=cache, tree=tree)
        prefix = mix_parameters(self.E, w.to(self.E.device, self.E.dtype))  # (n, C) or (B, n, C)
        return self.model(idx, prefix=prefix.expand(idx.size(0), -1, -1), tree=tree)
