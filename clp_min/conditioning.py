"""Parameter-space conditioning (CLP, THEORY.md section 4): one wrapper for any ``nn.Module``.

The parameters chosen by a *scope* get ``m`` copies ``theta_1 .. theta_m``; the
module runs with

    theta_c(w) = sum_i w_i theta_i                      (mix_parameters, the one place)

and every other parameter is shared and stored once. Built from ``m`` per-reward
finetuned experts and never trained further, the wrapper *is* Rewarded Soups
(THEORY.md P3, section 5): there is one code path for both.

    pc = ParamConditioned.from_base(gpt, m=2, scope="attn")     # all copies = gpt
    pc = ParamConditioned.from_experts([gpt_1, gpt_2], "full")  # Rewarded Soups
    logits, cache = pc(w, idx, cache=None)    # w: [m] for the batch, or [B, m] per example
    plain = pc.policy_at(w)                   # an ordinary module with theta_c(w) loaded

Scopes (clp_min.scope): ``"full"``, ``"attn"``, ``"logit"``, ``"lora"`` or a list of
parameter-name patterns; frozen parameters stay frozen (``frozen="mix"``, default), are
left out (``"skip"``) or get trainable copies (``"train"``).

Tied weights. A parameter shared by two names (a GPT's token embedding and unembedding,
transformers' ``tie_word_embeddings``) that a scope selects under one name only (scope
``"logit"``) is refused unless the caller chooses: ``untie=True`` gives the unmatched
name its own unmixed copy and mixes only the unembedding (then parameter mixing equals
logit mixing exactly, P3), ``mix_tied=True`` mixes the shared matrix, which changes the
input embedding as well. The wrapper never unties silently.

LoRA (peft). With ``lora_mix="delta"`` (default) each selected pair ``lora_A``/``lora_B``
is mixed as a weight change, ``Delta W(w) = sum_i w_i B_i A_i`` (mix_lora_delta): the
soup of the merged experts, and for LoRA on ``lm_head`` logit mixing. ``lora_mix="factors"``
mixes each factor, ``(sum_i w_i B_i)(sum_i w_i A_i)`` (what Rewarded Soups' code does
when averaging LoRA weights), which is not linear in ``w``. Under ``"delta"``, ``policy_at``
exports LoRA factors of rank ``m r``.

Per-example weightings ``[B, m]`` run without a copy of the scoped weights per example
(clp_min.per_example): grouped by weighting, one batched product per scoped layer
(``"layers"``, RLOO's layout), or mixing the scoped layers' outputs (``"outputs"``),
for modules whose scoped parameters sit on ``nn.Linear`` / ``nn.Embedding`` /
``nn.LayerNorm``; any other module runs once per distinct weighting (``"groups"``) or
through ``torch.func.vmap`` over ``functional_call`` with one weight copy per example
(``"vmap"``). Every tensor in the arguments must be batched on dim 0 (``idx``, the KV
cache, a prefix); each example gets exactly what it would get run alone.
``ParamConditioned.per_example_path`` says which path runs and why.

Decoding at fixed weightings mixes once: ``with pc.fixed(w) as model:`` yields a plain
``model(idx, cache)`` (``decoding.sample`` uses it through ``at_weighting``).
In train mode each group (``groups``) or example (``vmap``, ``randomness="different"``)
draws its own dropout mask; ``layers`` and ``outputs`` run one call, one mask.

Combining with input conditioning: wrap an ``InputConditioned`` module
(``ParamConditioned.from_base(InputConditioned(gpt, m, "prefix"), m, "attn")``);
a module with ``takes_w = True`` receives ``w`` as its first argument.

Every conditioned policy follows one convention: ``policy(w, idx, cache=None) -> (logits, cache)``;
``Unconditioned`` gives a plain model that convention (it ignores ``w``).
"""
from __future__ import annotations

import copy
from contextlib import contextmanager

import torch
import torch.nn as nn
from torch.func import functional_call, vmap
from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten

from clp_min.per_example import (check_batched, equal_runs, equal_sizes, group_order, group_rows, mixable,
                                 mixing_layers, mixing_outputs, permute_batch, run_grouped)
from clp_min.mixing import MixParameters, check_w, mix_lora_delta, mix_parameters
from clp_min.scope import LORA_MIX, _lora_pairs, _owner, _tied_outside, _untie_configs, resolve_scope

class ParamConditioned(nn.Module):
    """``module`` run with its scoped parameters mixed as ``theta_c(w) = sum_i w_i theta_i``.

    Options:
        untie: a selected parameter tied to a name the scope does not match (scope
            ``"logit"`` on tied embeddings) gets its own unmixed copy under that name;
            only the matched names are mixed (pure unembedding mixing, P3).
        mix_tied: mix such a tied parameter whole (the input embedding changes too).
            Without either, such a scope is refused.
        frozen: what a scope does with frozen parameters (``requires_grad=False``):
            ``"mix"`` selects them like any other and their copies stay frozen (default),
            ``"skip"`` never selects them (they stay shared and frozen), ``"train"`` selects
            them with trainable copies.
        lora_mix: ``"delta"`` mixes each peft LoRA pair's weight change, ``sum_i w_i B_i A_i``
            (mix_lora_delta); ``"factors"`` mixes the factors one by one,
            ``(sum_i w_i B_i)(sum_i w_i A_i)``.

    Attributes: ``base`` (the module without its scoped parameters, holding the shared
    ones), ``thetas`` (one ``[m, ...]`` parameter per scoped name, copy i at index i),
    ``names`` (the scoped canonical names, aligned with ``thetas``), ``m``, ``scope``,
    and the options above.
    """

    def __init__(self, module: nn.Module, m: int, scope, untie: bool = False, mix_tied: bool = False,
                 frozen: str = "mix", lora_mix: str = "delta"):
        super().__init__()
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise ValueError(f"m: must be a positive integer, got {m!r}")
        if untie and mix_tied:
            raise ValueError("untie: untie=True and mix_tied=True exclude each other")
        if lora_mix not in LORA_MIX:
            raise ValueError(f"lora_mix: must be one of {LORA_MIX}, got {lora_mix!r}")
        self.m, self.scope, self.untie, self.mix_tied, self.frozen, self.lora_mix = \
            m, scope, bool(untie), bool(mix_tied), frozen, lora_mix
        chosen = resolve_scope(module, scope, frozen)
        tied = _tied_outside(scope, chosen)
        if tied and not (untie or mix_tied):
            name = next(iter(tied))
            inside = [a for a in chosen[name] if a not in tied[name]]
            raise ValueError(f"scope: {scope!r} selects {inside[0]}, which is tied to {tied[name][0]}; mixing it "
                             f"would change both. Pass untie=True (mix only {inside[0]}) or mix_tied=True")
        self.base = copy.deepcopy(module)
        self.aliases = {}
        for name, names in chosen.items():
            if untie and name in tied:
                p = self.base.get_parameter(name)
                for alias in tied[name]:  # its own copy, shared across w, as trainable as before
                    owner, attr = _owner(self.base, alias)
                    owner.register_parameter(attr, nn.Parameter(p.detach().clone(), requires_grad=p.requires_grad))
                names = [a for a in names if a not in tied[name]]
                name = names[0]
            self.aliases[name] = names
        if untie and tied:
            _untie_configs(self.base)
        self.names = list(self.aliases)
        self.lora_pairs = _lora_pairs(self.names) if lora_mix == "delta" else {}
        thetas = []
        for name in self.names:
            p = self.base.get_parameter(name)
            thetas.append(nn.Parameter(p.detach().unsqueeze(0).repeat(m, *[1] * p.dim()),  # (m, ...)
                                       requires_grad=p.requires_grad or frozen == "train"))
            for alias in self.aliases[name]:
                owner, attr = _owner(self.base, alias)
                delattr(owner, attr)  # stored once, in thetas
        self.thetas = nn.ParameterList(thetas)
        self.takes_w_inner = getattr(module, "takes_w", False)
        # Layers whose outputs can be mixed per example (clp_min.per_example); not under LoRA's
        # delta mixing, whose mixed factors (rank m r) are not a per-layer mixture of the copies.
        self._owners = {} if self.lora_pairs else mixable(self.base, [a for n in self.names for a in self.aliases[n]])
        self.per_example = "auto"  # or "layers", "outputs", "groups", "vmap": see per_example_path

    @classmethod
    def from_base(cls, module: nn.Module, m: int, scope, **options) -> "ParamConditioned":
        """All m copies start at ``module``'s parameters (``module`` itself is not modified)."""
        return cls(module, m, scope, **options)

    @classmethod
    def from_experts(cls, modules, scope, **options) -> "ParamConditioned":
        """Copy i is expert i's scoped parameters; shared parameters must agree across experts.

        Built this way and never trained, the wrapper is Rewarded Soups (P3).
        """
        modules = list(modules)
        if not modules:
            raise ValueError("modules: no experts given")
        ref = dict(modules[0].named_parameters())
        for j, other in enumerate(modules[1:], start=1):
            params = dict(other.named_parameters())
            if params.keys() != ref.keys():
                name = sorted(params.keys() ^ ref.keys())[0]
                raise ValueError(f"modules: parameter {name} is in one expert but not in expert {j}")
            for name, p in ref.items():
                if params[name].shape != p.shape:
                    raise ValueError(f"modules: parameter {name} has shape {tuple(params[name].shape)} "
                                     f"in expert {j} but {tuple(p.shape)} in expert 0")
        wrapper = cls(modules[0], len(modules), scope, **options)
        for j, other in enumerate(modules[1:], start=1):
            for name, p in other.named_parameters():
                if name not in wrapper.aliases and not torch.equal(p, ref[name]):
                    raise ValueError(f"modules: shared parameter {name} differs between expert 0 and "
                                     f"expert {j}; with scope {scope!r} only scoped parameters may differ")
        with torch.no_grad():
            for k, name in enumerate(wrapper.names):
                wrapper.thetas[k].copy_(torch.stack([e.get_parameter(name).detach() for e in modules]))
        return wrapper

    def mixed_parameters(self, w: torch.Tensor) -> dict:
        """``{alias: theta_c(w)}`` for every scoped name and alias; ``w`` ``[m]`` or ``[G, m]``, already checked.

        LoRA pairs under ``lora_mix="delta"`` get the rank-``m r`` factors of mix_lora_delta; for
        ``w [m]`` every other scoped tensor is mixed by one fused node (MixParameters).
        """
        thetas = dict(zip(self.names, self.thetas))
        mixed = {}
        for name, theta in thetas.items():
            if name in self.lora_pairs:
                b_name = self.lora_pairs[name]
                mixed[name], mixed[b_name] = mix_lora_delta(theta, thetas[b_name], w.to(theta.dtype))
        plain = [name for name in self.names if name not in mixed]
        dtypes = {thetas[name].dtype for name in plain}
        if w.dim() == 1 and len(dtypes) == 1:  # the training and decoding case
            mixed.update(zip(plain, MixParameters.apply(w.to(dtypes.pop()), *[thetas[n] for n in plain])))
        else:
            mixed.update((name, mix_parameters(thetas[name], w.to(thetas[name].dtype))) for name in plain)
        return {alias: mixed[name] for name in self.names for alias in self.aliases[name]}

    @property
    def accepts_tree(self) -> bool:  # forward passes tree= (model.TokenTree) on when the module takes it
        return getattr(self.base, "accepts_tree", False)

    def forward(self, w, *args, **kwargs):
        """Run the module at ``theta_c(w)``; ``w`` is ``[m]`` (whole batch) or ``[B, m]`` (per example)."""
        w = check_w(w, self.m).to(self.thetas[0].device)
        if self.takes_w_inner:
            args, kwargs = (w, *args), {**kwargs, "checked": True}
        if w.dim() == 1:
            return functional_call(self.base, self.mixed_parameters(w), tuple(args), kwargs)
        return self._per_example(w, args, kwargs)

    def per_example_path(self, rows: list) -> str:
        """How ``w [B, m]`` with distinct weightings at ``rows`` runs (clp_min.per_example):

            "layers"   every scoped parameter on a mixable layer and the groups of one size
                       (RLOO): each scoped layer is one batched product over the groups;
            "outputs"  every scoped parameter on a mixable layer: mix the layers' outputs;
            "groups"   any module, at most B/2 distinct weightings: one call per group;
            "vmap"     any module: one weight copy per example.

        ``self.per_example = "auto"`` picks in that order, by what bench/clp_min.py measured
        on the GPT (forward + backward, B = 16); set it to a path name to force one
        (``"layers"`` on groups of different sizes runs ``"outputs"``).
        """
        B = sum(r.numel() for r in rows)
        if self.per_example not in ("auto", "layers", "outputs", "groups", "vmap"):
            raise ValueError(f"per_example: must be 'auto', 'layers', 'outputs', 'groups' or 'vmap', "
                             f"got {self.per_example!r}")
        if self.per_example in ("layers", "outputs") and not self._owners:
            raise ValueError(f"per_example: {self.per_example!r} needs every scoped parameter on an "
                             f"nn.Linear, nn.Embedding or nn.LayerNorm; use 'groups' or 'vmap'")
        if self.per_example == "layers" and not equal_sizes(rows):
            return "outputs"  # groups of different sizes: one batched product cannot hold them
        if self.per_example != "auto":
            return self.per_example
        if self._owners:
            return "layers" if equal_sizes(rows) and len(rows) < B else "outputs"
        return "groups" if 2 * len(rows) <= B else "vmap"

    def _block_runs(self, w):
        """``[G, m]``: the weightings of ``w``'s G < B contiguous equal blocks (RLOO's layout, ``equal_runs``)
        when the scoped layers can run them as one batched product, else None."""
        if not self._owners or self.per_example not in ("auto", "layers"):
            return None
        runs = equal_runs(w)
        return runs if runs is not None and runs.size(0) < w.size(0) else None

    def _per_example(self, w, args, kwargs):
        B = w.size(0)
        check_batched(tree_flatten((tuple(args), kwargs))[0], B)
        runs = self._block_runs(w)
        if runs is not None:  # RLOO's layout: no grouping, no permutation
            with mixing_layers(self.base, self._owners, self.mixed_parameters(runs), runs.size(0),
                               B // runs.size(0)):
                return self.base(*args, **kwargs)
        distinct, rows = group_rows(w)
        path = self.per_example_path(rows)
        if path == "layers":
            perm, back = group_order(rows)
            args, kwargs = permute_batch((tuple(args), kwargs), perm)
            with mixing_layers(self.base, self._owners, self.mixed_parameters(distinct), len(rows), B // len(rows)):
                return permute_batch(self.base(*args, **kwargs), back)
        if path == "outputs":
            with mixing_outputs(self.base, self._owners, self._owner_thetas(w.dtype), w):
                return self.base(*args, **kwargs)
        if path == "groups":
            return run_grouped(lambda g, a, k: functional_call(self.base, self.mixed_parameters(distinct[g]), a, k),
                               rows, args, kwargs)
        return self._vmap(w, args, kwargs)

    def _owner_thetas(self, dtype) -> dict:
        """``{owner path: {attr: [m, ...]}}`` over every alias of every scoped name."""
        out = {}
        for name, theta in zip(self.names, self.thetas):
            for alias in self.aliases[name]:
                path, _, attr = alias.rpartition(".")
                out.setdefault(path, {})[attr] = theta.to(dtype)
        return out

    def _vmap(self, w, args, kwargs):
        """One copy of the scoped weights per example, through ``torch.func.vmap``."""
        params = self.mixed_parameters(w)  # (B, ...) per name
        leaves, spec = tree_flatten((tuple(args), kwargs))
        batched = [isinstance(x, torch.Tensor) for x in leaves]

        def one_example(params_b, *tensors_b):
            it = iter(tensors_b)
            leaves_b = [next(it).unsqueeze(0) if b else x for x, b in zip(leaves, batched)]  # batch of 1
            args_b, kwargs_b = tree_unflatten(leaves_b, spec)
            out = functional_call(self.base, params_b, args_b, kwargs_b)
            return tree_map(lambda t: t.squeeze(0) if isinstance(t, torch.Tensor) else t, out)

        tensors = [x for x, b in zip(leaves, batched) if b]
        return vmap(one_example, randomness="different")(params, *tensors)

    @contextmanager
    def fixed(self, w):
        """Mix once for a whole decoding: yields ``model(idx, cache=None, **kw) -> (logits, cache)`` at ``w``.

        ``w [m]``: the mixed parameters are set on ``base`` for the duration of the block
        (one plain forward per call, nothing re-mixed, no copy of the module); ``w [B, m]``:
        mixed once per distinct weighting, each call runs the groups (clp_min.per_example).
        Same numbers as calling the wrapper with ``w`` at every step; not re-entrant.
        """
        w = check_w(w, self.m).to(self.thetas[0].device)
        pre = (w,) if self.takes_w_inner else ()
        extra = {"checked": True} if self.takes_w_inner else {}
        if w.dim() == 1:
            with _attached(self.base, self.mixed_parameters(w)):
                yield lambda *args, **kwargs: self.base(*pre, *args, **kwargs, **extra)
            return
        check_batched([w], w.size(0))
        runs = self._block_runs(w)
        if runs is not None and runs.size(0) > 1:  # RLOO's layout (as _per_example): no regrouping
            def in_runs(*args, **kwargs):
                check_batched(tree_flatten((args, kwargs))[0], w.size(0))
                return self.base(*pre, *args, **kwargs, **extra)
            with mixing_layers(self.base, self._owners, self.mixed_parameters(runs), runs.size(0),
                               w.size(0) // runs.size(0)):
                yield in_runs
            return
        distinct, rows = group_rows(w)
        if len(rows) == 1:
            def one(*args, **kwargs):
                check_batched(tree_flatten((args, kwargs))[0], w.size(0))
                return self.base(*pre, *args, **kwargs, **extra)
            with _attached(self.base, self.mixed_parameters(distinct[0])):
                yield one
            return
        if self.per_example_path(rows) == "layers":
            perm, back = group_order(rows)
            mixed = self.mixed_parameters(distinct)  # (G, ...) per name

            def model(*args, **kwargs):
                check_batched(tree_flatten((args, kwargs))[0], w.size(0))
                args, kwargs = permute_batch(((*pre, *args), {**kwargs, **extra}), perm)
                return permute_batch(self.base(*args, **kwargs), back)
            with mixing_layers(self.base, self._owners, mixed, len(rows), w.size(0) // len(rows)):
                yield model
            return
        mixed = [self.mixed_parameters(distinct[g]) for g in range(len(rows))]

        def model(*args, **kwargs):
            args, kwargs = (*pre, *args), {**kwargs, **extra}
            check_batched(tree_flatten((args, kwargs))[0], w.size(0))
            return run_grouped(lambda g, a, k: functional_call(self.base, mixed[g], a, k), rows, args, kwargs)
        yield model

    @torch.no_grad()
    def policy_at(self, w) -> nn.Module:
        """The plain module with ``theta_c(w)`` loaded (a deep copy; ties preserved); ``w`` is ``[m]``."""
        w = check_w(w, self.m)
        if w.dim() != 1:
            raise ValueError(f"w: policy_at takes one weighting [m], got shape {tuple(w.shape)}")
        module = copy.deepcopy(self.base)
        for name, mixed in self.mixed_parameters(w.to(self.thetas[0].device)).items():
            if name not in self.aliases:
                continue
            p = nn.Parameter(mixed.detach().clone())
            for alias in self.aliases[name]:
                owner, attr = _owner(module, alias)
                owner.register_parameter(attr, p)
        return module


@contextmanager
def _attached(module: nn.Module, params: dict):
    """Set ``{alias: tensor}`` as plain attributes of ``module`` (where the scoped parameters were) for a block."""
    owners = [(*_owner(module, name), t) for name, t in params.items()]
    try:
        for owner, attr, t in owners:
            owner.__dict__[attr] = t  # a plain attribute where the parameter was
        yield
    finally:
        for owner, attr, _ in owners:
            owner.__dict__.pop(attr, None)


@contextmanager
def at_weighting(policy, w):
    """Yields ``model(idx, cache=None, **kw) -> (logits, cache)``: ``policy`` at a fixed ``w`` for many calls.

    A ``ParamConditioned`` policy mixes once (``ParamConditioned.fixed``); any other
    conditioned policy is called with ``w`` each time.
    """
    if isinstance(policy, ParamConditioned):
        with policy.fixed(w) as model:
            yield model
    else:
        yield lambda *args, **kwargs: policy(w, *args, **kwargs)


class Unconditioned(nn.Module):
    """A plain model under the conditioned-policy convention: ``policy(w, idx, cache) = model(idx, cache)``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    @property
    def accepts_tree(self) -> bool:  # forward takes tree= (model.TokenTree) when the model does
        return getattr(self.model, "accepts_tree", False)

    def forward(self, w, idx, cache=None, **kwargs):
        return self.model(idx, cache=cache, **kwargs)
