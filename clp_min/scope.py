"""Scopes: which parameters of a module parameter-space conditioning mixes (THEORY.md section 4).

A scope is a name of ``SCOPES`` or a list of fnmatch patterns matched against every parameter
name, aliases included (tied parameters have several names). ``"full"`` every parameter;
``"attn"`` the attention projections (this project's GPT, transformers GPT-2, Llama-style
``self_attn.{q,k,v,o}_proj``); ``"logit"`` the unembedding; ``"lora"`` the peft LoRA factors.
A scope that matches no parameter is refused with the names it saw; ``describe_scope`` lists
what a scope selects. Frozen parameters are kept, left out (``frozen="skip"``) or made
trainable as copies (``frozen="train"``): ``FROZEN``.
"""
from __future__ import annotations

import re
from fnmatch import fnmatch

import torch.nn as nn

SCOPES = {
    "full": ["*"],
    "attn": ["*.attn.c_attn.*", "*.attn.c_proj.*",  # clp_min GPT, transformers GPT-2
             "*.self_attn.q_proj.*", "*.self_attn.k_proj.*",  # Llama, Mistral, Qwen, ...
             "*.self_attn.v_proj.*", "*.self_attn.o_proj.*"],
    "logit": ["lm_head.*", "*.lm_head.*"],
    "lora": ["*.lora_A.*", "*.lora_B.*", "*.lora_embedding_A.*", "*.lora_embedding_B.*"],  # peft LoRA factors
}
FROZEN = ("skip", "mix", "train")
LORA_MIX = ("delta", "factors")
_LORA = re.compile(r"^(.*\.lora_(?:embedding_)?)([AB])(\..+)$")  # prefix, factor, adapter (and .weight)


def scope_patterns(scope) -> list:
    """The fnmatch patterns of a scope name (``SCOPES``) or of a list of patterns."""
    if isinstance(scope, str):
        if scope not in SCOPES:
            raise ValueError(f"scope: unknown scope {scope!r}; use one of {sorted(SCOPES)} "
                             f"or a list of parameter-name patterns")
        return SCOPES[scope]
    patterns = list(scope) if isinstance(scope, (list, tuple)) else []
    if not patterns or not all(isinstance(p, str) for p in patterns):
        raise ValueError(f"scope: expected a scope name or a non-empty list of patterns, got {scope!r}")
    return patterns


def _name_shapes(module: nn.Module, limit: int = 12) -> str:
    """Distinct parameter names with layer numbers written ``*`` (what a user needs to write a pattern)."""
    seen = list(dict.fromkeys(re.sub(r"\.\d+\.", ".*.", n) for n, _ in module.named_parameters()))
    return ", ".join(seen[:limit]) + (f", ... ({len(seen)} in all)" if len(seen) > limit else "")


def resolve_scope(module: nn.Module, scope, frozen: str = "mix") -> dict:
    """The parameters a scope selects: ``{canonical name: [every alias name]}``.

    The canonical name is the one ``named_parameters()`` reports; tied parameters
    have more than one alias and are selected whole if any alias matches.
    Frozen parameters (``requires_grad=False``, e.g. the base weights under peft LoRA)
    are left out when ``frozen="skip"``.
    """
    patterns = scope_patterns(scope)
    if frozen not in FROZEN:
        raise ValueError(f"frozen: must be one of {FROZEN}, got {frozen!r}")
    aliases = {}
    for name, p in module.named_parameters(remove_duplicate=False):
        aliases.setdefault(id(p), []).append(name)
    chosen, skipped = {}, 0
    for name, p in module.named_parameters():
        if any(fnmatch(alias, pat) for alias in aliases[id(p)] for pat in patterns):
            if p.requires_grad or frozen != "skip":
                chosen[name] = aliases[id(p)]
            else:
                skipped += 1
    if not chosen:
        why = (f" except {skipped} frozen ones (frozen='skip' leaves them out)" if skipped
               else f"; its parameters are named like: {_name_shapes(module)}")
        raise ValueError(f"scope: {scope!r} matches no parameter of {type(module).__name__}{why}")
    return chosen


def _tied_outside(scope, chosen: dict) -> dict:
    """``{name: [aliases the scope does not match]}`` for selected parameters tied to unselected names."""
    patterns = scope_patterns(scope)
    out = {}
    for name, names in chosen.items():
        outside = [a for a in names if not any(fnmatch(a, pat) for pat in patterns)]
        if outside:
            out[name] = outside
    return out


def describe_scope(module: nn.Module, scope, frozen: str = "mix") -> str:
    """What ``scope`` selects in ``module``, one line per parameter (name, shape, aliases), for printing."""
    chosen = resolve_scope(module, scope, frozen)
    tied = _tied_outside(scope, chosen)
    lines = []
    for name, names in chosen.items():
        p = module.get_parameter(name)
        note = f"  tied to {', '.join(tied[name])} (needs untie=True or mix_tied=True)" if name in tied else ""
        lines.append(f"{name} {tuple(p.shape)}{'' if p.requires_grad else ' frozen'}{note}")
    total = sum(module.get_parameter(n).numel() for n in chosen)
    lines.append(f"{len(chosen)} tensors, {total} of {sum(p.numel() for p in module.parameters())} "
                 f"parameters selected by scope {scope!r}")
    return "\n".join(lines)


def _owner(module: nn.Module, name: str):
    path, _, attr = name.rpartition(".")
    return (module.get_submodule(path) if path else module), attr


def _untie_configs(module: nn.Module) -> None:
    """Tell transformers configs inside ``module`` that its embeddings are now untied (save/reload keep it)."""
    for sub in module.modules():
        config = getattr(sub, "config", None)
        if getattr(config, "tie_word_embeddings", False) is True:
            config.tie_word_embeddings = False


def _lora_pairs(names: list) -> dict:
    """``{lora_A name: lora_B name}`` for every peft LoRA pair among ``names``; a lone factor is refused."""
    pairs = {}
    for name in names:
        match = _LORA.match(name)
        if match is None:
            continue
        prefix, factor, rest = match.groups()
        partner = f"{prefix}{'B' if factor == 'A' else 'A'}{rest}"
        if partner not in names:
            raise ValueError(f"scope: selects LoRA factor {name} but not {partner}; lora_mix='delta' mixes "
                             f"B_i A_i and needs both (or pass lora_mix='factors')")
        if factor == "A":
            pairs[name] = partner
    return pairs
