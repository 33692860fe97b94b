"""Personalized-Soups-style prompts: the weighting written into the prompt as tokens.

The prompt states each reward's weight as a word from a small fixed grid
``0, 1/G, .., 1`` (Jang et al. 2023, "Personalized Soups", prompt baseline; in the
CLP paper the zero-shot prompting baseline). Row ``i`` of the written prompt is the
token "reward i" plus the token "level q_i",

    q_i(w) = round(G w_i)                        (weight_levels; nearest level, ties to even)
    row_i  = R_i + Q_{q_i(w)}                     R [m, C], Q [G + 1, C] learned

placed before the tokens of a frozen GPT as ``m`` position-free prefix rows
(clp_min.mechanisms.soft_tokens.position_free_prefix). Writing ``w`` with finite precision is
the mechanism: weightings that round to the same levels get the same prompt
(documented here, not a silent change: ``weight_levels`` is the whole rule).
Trainable parameters: ``(m + G + 1) C``.

Personalized Soups trains on binary preferences only: ``clp train --conditioning
prompt_tokens --weights vertices --p_vertex 1`` draws only vertices ``e_i``, so the
prompt only ever holds levels ``0`` and ``G``; asked for an interior weighting, the
policy reads level words it never trained on (their rows keep their initial values:
the synthetic vocabulary has no pretrained number words whose meaning could carry
over). That is the zero-shot question this baseline answers.
"""
from __future__ import annotations

from dataclasses import asdict

import torch
import torch.nn as nn

from clp_min.mixing import check_w
from clp_min.model import GPT
from clp_min.mechanisms.soft_tokens import base_config, check_batch, frozen_prefix_model
from theory.checks import positive_int


def weight_levels(w: torch.Tensor, G: int) -> torch.Tensor:
    """The written levels ``q_i = round(G w_i)`` in ``0 .. G``, ``[m]`` or ``[B, m]`` int64 (``w`` checked)."""
    return torch.round(w.double() * G).long()


class PromptTokens(nn.Module):
    """A frozen GPT after the written prompt ``R_i + Q_{q_i(w)}``, i = 1 .. m; ``forward(w, idx, cache=None)``.

    Attributes: ``R`` ``[m, C]`` (reward words), ``Q`` ``[G + 1, C]`` (level words),
    ``model`` (the frozen base with ``m`` position-free prefix rows), ``m``, ``grid`` (G).
    """

    def __init__(self, model: GPT, m: int, grid: int = 4):
        super().__init__()
        for name, value in (("m", m), ("prompt_grid", grid)):
            positive_int(value, name)
        self.m, self.grid = m, grid
        self.model = frozen_prefix_model(model, m)
        C = model.config.n_embd
        self.R = nn.Parameter(0.02 * torch.randn(m, C))  # the GPT's embedding init scale
        self.Q = nn.Parameter(0.02 * torch.randn(grid + 1, C))

    @classmethod
    def from_config(cls, model: GPT, cfg) -> "PromptTokens":
        """Built by ``clp train`` (``cfg``: clp_min.config.TrainConfig) on a copy of pi_ref."""
        return cls(model, cfg.m, cfg.prompt_grid)

    def spec(self, module_spec) -> dict:
        """Checkpoint constructor arguments: the GPT before its prefix rows were added."""
        return {"m": self.m, "grid": self.grid,
                "model": {"class": "GPT", "config": asdict(base_config(self.model, self.m))}}

    @classmethod
    def from_spec(cls, spec: dict, build) -> "PromptTokens":
        return cls(build(spec["model"]), spec["m"], spec["grid"])

    def prompt(self, w: torch.Tensor) -> torch.Tensor:
        """The written prompt's rows ``[m, C]`` or ``[B, m, C]`` for a checked ``w``."""
        return self.R + self.Q[weight_levels(w, self.grid).to(self.Q.device)]  # (.., m, C)

    accepts_tree = True  # forward takes tree= (model.TokenTree); the nodes see the written prompt

    def forward(self, w, idx, cache=None, tree=None):
        """``w`` ``[m]`` (whole batch) or ``[B, m]``; the prompt is added on the first call only."""
        w = check_w(w, self.m)
        check_batch(w, idx)
        if cache is not None:
            return self.model(idx, cache=cache, tree=tree)
        return self.model(idx, prefix=self.prompt(w).expand(idx.size(0), -1, -1), tree=tree)
