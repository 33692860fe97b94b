"""Stand-ins for per-reward finetuned experts, shared by the conditioning tests."""
from __future__ import annotations

import copy

import torch

from clp_min.scope import resolve_scope


def perturbed_experts(base: torch.nn.Module, scope, m: int, seed: int = 0, scale: float = 0.3) -> list:
    """``m`` deep copies of ``base`` that differ only in the parameters ``scope`` selects.

    Expert i adds ``scale * N(0, 1)`` noise (its own seeded generator) to every scoped
    parameter, so shared parameters agree exactly, as ``ParamConditioned.from_experts`` requires.
    """
    experts = []
    for i in range(m):
        e = copy.deepcopy(base)
        g = torch.Generator().manual_seed(100 * seed + i)
        with torch.no_grad():
            for name in resolve_scope(base, scope):
                p = e.get_parameter(name)
                p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
        experts.append(e)
    return experts
