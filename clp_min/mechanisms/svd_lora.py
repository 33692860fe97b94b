"""Panacea-style conditioning: one SVD-LoRA adapter per layer whose singular values carry ``w``.

Panacea (Zhong et al. 2024, "Panacea: Pareto Alignment via Preference Adaptation
for LLMs", section 4) adapts a frozen weight ``W0 [out, in]`` with an SVD-shaped
low-rank update (AdaLoRA's ``P Lambda Q``) and writes the preference vector into
part of the singular values, scaled by a learned per-layer factor ``s``:

    W(w)       = W0 + Delta W(w)
    Delta W(w) = U diag(lam(w)) V^T,   U [out, r + m],  V [in, r + m]      (svd_lora_delta)
    lam(w)     = (sigma_1 .. sigma_r, s w_1 .. s w_m)                       (singular_values)

so ``Delta W`` is affine in ``w``: at ``w = e_i`` it is
``sum_j sigma_j u_j v_j^T + s u_{r+i} v_{r+i}^T``. One adapter serves every ``w``.

Trainable parameters per adapted layer: ``U``, ``V``, ``sigma``, ``s``, that is
``(out + in) (r + m) + r + 1``; the base model is frozen (``requires_grad=False``).
Initialisation: ``sigma = 0`` and ``s = 0``, so the initial policy is the base at
every ``w`` (as every CLP policy starts at pi_ref); ``U``, ``V`` Gaussian with columns
of norm about 1. Left out from Panacea: AdaLoRA's orthogonality regulariser on
``U``, ``V`` and its rank pruning (no official code to compare against exists).

Layers (``layers``): ``+``-joined groups of ``attn`` (``c_attn`` and ``attn.c_proj``
of every block), ``mlp`` (``c_fc``, ``mlp.c_proj``), ``logit`` (the unembedding
``lm_head``). With ``logit`` alone the hidden states do not depend on ``w``, so the
logits are affine in ``w`` (tested).

    policy = SVDLoRA(gpt, m=2, rank=4, layers="attn+mlp")
    logits, cache = policy(w, idx, cache=None)     # w: [m], or [B, m] per example

Per-example weightings ``[B, m]`` give per-example singular values ``[B, r + m]``;
the low-rank term ``((x V) * lam) U^T`` is computed per example without forming
any ``[B, out, in]`` matrix. The KV cache holds keys and values computed with the
adapted weights, so incremental decoding matches one full pass (tested).
"""
from __future__ import annotations

import copy
import math
from dataclasses import asdict
from fnmatch import fnmatch

import torch
import torch.nn as nn
from torch.func import functional_call

from clp_min.mixing import check_w

GROUPS = {
    "attn": ("*.attn.c_attn", "*.attn.c_proj"),
    "mlp": ("*.mlp.c_fc", "*.mlp.c_proj"),
    "logit": ("lm_head",),
}


def singular_values(sigma: torch.Tensor, scale: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``lam(w) = (sigma_1 .. sigma_r, s w_1 .. s w_m)``: ``[r + m]`` for ``w [m]``, ``[B, r + m]`` for ``w [B, m]``."""
    return torch.cat([sigma.expand(*w.shape[:-1], -1), scale * w], dim=-1)


def svd_lora_delta(U: torch.Tensor, lam: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """``Delta W = U diag(lam) V^T``: ``U [out, k]``, ``lam [k]`` or ``[B, k]``, ``V [in, k]`` -> ``[(B,) out, in]``."""
    return torch.einsum("ok,...k,ik->...oi", U, lam, V)


def low_rank_apply(x: torch.Tensor, U: torch.Tensor, lam: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """``x Delta W^T`` without forming ``Delta W``: ``x [B, T, in]``, ``lam [k]`` or ``[B, k]`` -> ``[B, T, out]``."""
    h = x @ V  # (B, T, k)
    if lam.dim() == 2:
        lam = lam[:, None, :]  # (B, 1, k): one set of singular values per example
    return (h * lam) @ U.T  # (B, T, out)


def parse_layers(layers: str) -> tuple:
    """``"attn+mlp"`` -> ``("attn", "mlp")``; refuses an unknown or repeated group, naming ``lora_layers``."""
    groups = tuple(g.strip() for g in str(layers).split("+"))
    for g in groups:
        if g not in GROUPS:
            raise ValueError(f"lora_layers: unknown group {g!r} in {layers!r}; join groups of "
                             f"{sorted(GROUPS)} with '+'")
    if len(set(groups)) != len(groups):
        raise ValueError(f"lora_layers: repeated group in {layers!r}")
    return groups


class SVDLoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus ``x Delta W^T``; ``lam`` is the singular-value vector of the current call.

    ``lam`` is a non-persistent buffer (zeros: the plain base layer); ``SVDLoRA.forward``
    supplies ``lam(w)`` for one call through ``torch.func.functional_call``.
    """

    def __init__(self, base: nn.Linear, rank: int, m: int):
        super().__init__()
        self.base = base
        out_features, in_features = base.weight.shape
        k = rank + m
        self.U = nn.Parameter(torch.randn(out_features, k) / math.sqrt(out_features))
        self.V = nn.Parameter(torch.randn(in_features, k) / math.sqrt(in_features))
        self.sigma = nn.Parameter(torch.zeros(rank))
        self.scale = nn.Parameter(torch.zeros(()))  # s, the learned per-layer factor of w
        self.register_buffer("lam", torch.zeros(k), persistent=False)

    def forward(self, x):
        return self.base(x) + low_rank_apply(x, self.U, self.lam, self.V)


class SVDLoRA(nn.Module):
    """A frozen GPT with SVD-LoRA adapters on ``layers``; ``forward(w, idx, cache=None) -> (logits, cache)``.

    Attributes: ``model`` (the GPT, its adapted ``nn.Linear`` modules replaced by
    ``SVDLoRALinear``), ``targets`` (their module names), ``m``, ``rank``, ``layers``.
    """

    def __init__(self, model: nn.Module, m: int, rank: int = 4, layers: str = "attn"):
        super().__init__()
        for name, value, low in (("m", m, 1), ("lora_rank", rank, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}: must be an integer >= {low}, got {value!r}")
        patterns = [p for g in parse_layers(layers) for p in GROUPS[g]]
        self.m, self.rank, self.layers = m, rank, layers
        self.model = copy.deepcopy(model)
        for p in self.model.parameters():
            p.requires_grad_(False)  # the base stays frozen
        self.targets = [name for name, mod in self.model.named_modules()
                        if isinstance(mod, nn.Linear) and any(fnmatch(name, pat) for pat in patterns)]
        if not self.targets:
            raise ValueError(f"lora_layers: {layers!r} matches no linear layer of {type(model).__name__}")
        for name in self.targets:
            path, _, attr = name.rpartition(".")
            owner = self.model.get_submodule(path) if path else self.model
            setattr(owner, attr, SVDLoRALinear(getattr(owner, attr), rank, m))

    @classmethod
    def from_config(cls, model: nn.Module, cfg) -> "SVDLoRA":
        """Built by ``clp train`` (``cfg``: clp_min.config.TrainConfig) on a copy of pi_ref."""
        return cls(model, cfg.m, cfg.lora_rank, cfg.lora_layers)

    def spec(self, module_spec) -> dict:
        """Checkpoint constructor arguments: the GPT's config (adapters are rebuilt from rank and layers)."""
        return {"m": self.m, "rank": self.rank, "layers": self.layers,
                "model": {"class": "GPT", "config": asdict(self.model.config)}}

    @classmethod
    def from_spec(cls, spec: dict, build) -> "SVDLoRA":
        return cls(build(spec["model"]), spec["m"], spec["rank"], spec["layers"])

    def adapters(self):
        """``(name, SVDLoRALinear)`` pairs, in ``targets`` order."""
        return [(name, self.model.get_submodule(name)) for name in self.targets]

    accepts_tree = True  # forward takes tree= (model.TokenTree)

    def forward(self, w, idx, cache=None, tree=None):
        """Logits at ``W0 + Delta W(w)`` in every adapted layer; ``w`` is ``[m]`` or ``[B, m]``."""
        w = check_w(w, self.m)
        if w.dim() == 2 and w.size(0) != idx.size(0):
            raise ValueError(f"w: {w.size(0)} per-example weightings for a batch of {idx.size(0)}")
        lams = {}
        for name, layer in self.adapters():
            lams[f"{name}.lam"] = singular_values(layer.sigma, layer.scale, w.to(layer.U.device, layer.U.dtype))
        return functional_call(self.model, lams, (idx,), {"cache": cache, "tree": tree})
