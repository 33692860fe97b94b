"""Per-example weightings ``w [B, m]`` without a copy of the scoped weights per example.

Three exact ways to run ``theta_c(w_b) = sum_i w_bi theta_i`` for every example b at once:

    layers   the batch is G groups of n rows with one weighting each (RLOO's n samples
             per weighting; ``equal_runs`` / ``group_rows``): every scoped layer runs
             its G mixed copies as one batched product ``[G, n*.., in] @ [G, in, out]``.
             Cost: the plain model plus G copies of the scoped weights (G = B/n).
    outputs  mix the outputs of the scoped layers instead of their weights,
             ``y_b = sum_i w_bi f(x_b; theta_i)``, any weightings. One module call; a
             scoped matrix costs m matrix products (one, with the m copies stacked).
    groups   any module whose tensor arguments and outputs are batched on dim 0: one
             call per distinct weighting at its mixed parameters (``run_grouped``).

``layers`` and ``outputs`` are exact because every supported layer (``nn.Linear``,
``nn.Embedding``, ``nn.LayerNorm``: ``MIXABLE``) is affine in its parameters and
``sum_i w_bi = 1``; they replace the scoped layers' ``forward`` on the instances for
the duration of one call. ``torch.func.vmap`` with one weight copy per example
(``ParamConditioned._vmap``) stays as the fourth way; ``ParamConditioned.per_example_path``
chooses by what bench/clp_min.py measures.
"""
from __future__ import annotations

import functools
import math
from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils._pytree import tree_flatten, tree_unflatten

# Layers whose output is affine in their parameters: (type, parameter names).
MIXABLE = {nn.Linear: ("weight", "bias"), nn.Embedding: ("weight",), nn.LayerNorm: ("weight", "bias")}


def group_rows(w: torch.Tensor) -> tuple:
    """Distinct weightings ``[G, m]`` (in order of first appearance) and, for each, its rows ``[n_g]``."""
    distinct, inverse = torch.unique(w, dim=0, return_inverse=True)  # sorted; (G, m), (B,)
    first = torch.full((distinct.size(0),), w.size(0), dtype=torch.long, device=w.device)
    first = first.scatter_reduce(0, inverse, torch.arange(w.size(0), device=w.device), "amin")
    order = torch.argsort(first)  # groups in order of first appearance
    rows = [torch.nonzero(inverse == g).squeeze(1) for g in order.tolist()]
    return distinct[order], rows


def check_batched(leaves: list, B: int) -> list:
    """Which leaves are tensors batched on dim 0; refuses a tensor whose dim 0 is not ``B``."""
    batched = [isinstance(x, torch.Tensor) for x in leaves]
    for x, b in zip(leaves, batched):
        if b and (x.dim() == 0 or x.size(0) != B):
            raise ValueError(f"w: {B} per-example weightings but an input has shape {tuple(x.shape)} "
                             f"(every tensor argument must have batch size {B} on dim 0)")
    return batched


def run_grouped(call, rows: list, args: tuple, kwargs: dict):
    """``call(g, args_g, kwargs_g)`` on each group's rows, outputs put back in batch order.

    ``rows`` partitions ``range(B)``; every tensor argument is batched on dim 0 (checked
    by the caller). Output tensors must be batched on dim 0 (a tuple of caches is fine);
    other output leaves (``None``, numbers) are taken from the first group.
    """
    leaves, spec = tree_flatten((tuple(args), kwargs))
    if len(rows) == 1:
        return call(0, *tree_unflatten(leaves, spec))
    outs = []
    for g, r in enumerate(rows):
        leaves_g = [x.index_select(0, r) if isinstance(x, torch.Tensor) else x for x in leaves]
        outs.append(tree_flatten(call(g, *tree_unflatten(leaves_g, spec))))
    merged = []
    for k, first in enumerate(outs[0][0]):
        if isinstance(first, torch.Tensor):
            if first.dim() == 0:
                raise ValueError("w: per-example weightings need every output tensor batched on dim 0, "
                                 "got a scalar output")
            merged.append(torch.cat([o[0][k] for o in outs]))  # (B, ..) in group order
        else:
            merged.append(first)
    return permute_batch(tree_unflatten(merged, outs[0][1]), group_order(rows)[1])


def mixable(module: nn.Module, names: list) -> dict:
    """``{owner path: [parameter attributes]}`` if every scoped name sits on a mixable layer, else ``{}``."""
    owners = {}
    for name in names:
        path, _, attr = name.rpartition(".")
        owner = module.get_submodule(path) if path else module
        if attr not in MIXABLE.get(type(owner), ()):
            return {}
        if isinstance(owner, nn.Embedding) and (owner.padding_idx is not None or owner.max_norm is not None
                                                or owner.scale_grad_by_freq or owner.sparse):
            return {}  # these options act on rows of one table
        owners.setdefault(path, []).append(attr)
    return owners


def _mix_rows(y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``sum_i w_bi y[b, ..., i, :]`` for ``y [B, ..., m, D]`` and ``w [B, m]`` -> ``[B, ..., D]``."""
    wb = w.view(w.size(0), *[1] * (y.dim() - 3), w.size(1), 1)  # (B, 1.., m, 1)
    return (y * wb).sum(-2)


def _rows(x: torch.Tensor, w: torch.Tensor, layer: str) -> torch.Tensor:
    """``x`` with the batch on dim 0: a 1-D input (positions) is shared by the batch, ``[1, ...]``.

    A 2-D or larger input must have the batch on dim 0 (an unbatched one whose dim 0
    happens to equal B cannot be told apart: use the ``groups`` path for such modules).
    """
    if x.dim() == 1:
        return x[None]
    if x.size(0) != w.size(0):
        raise ValueError(f"w: {w.size(0)} per-example weightings but layer {layer} gets input "
                         f"{tuple(x.shape)} (outputs mixing needs the batch on dim 0)")
    return x


def _linear(layer, w, theta: dict, shared: nn.Module):
    """``y_b = sum_i w_bi (x_b W_i^T + b_i)``: one product with the m copies stacked ``[m*out, in]``."""
    def forward(x):
        x = _rows(x, w, layer)
        W = theta.get("weight")
        if W is None:  # weight shared, bias scoped
            y = F.linear(x, shared.weight)
        else:
            m, out, inp = W.shape
            y = _mix_rows(F.linear(x, W.reshape(m * out, inp)).unflatten(-1, (m, out)), w)  # (B, .., out)
        b = theta.get("bias")
        if b is not None:
            y = y + (w @ b).view(w.size(0), *[1] * (y.dim() - 2), -1)  # mixed bias (B, 1.., out)
        elif "weight" in theta and shared.bias is not None:
            y = y + shared.bias
        return y
    return forward


def _embedding(layer, w, theta: dict, module: nn.Embedding):
    def forward(idx):
        idx = _rows(idx, w, layer)
        E = theta["weight"]  # (m, V, C)
        m, V, C = E.shape
        e = F.embedding(idx, E.transpose(0, 1).reshape(V, m * C))  # (B, .., m*C)
        return _mix_rows(e.unflatten(-1, (m, C)), w)  # (B, .., C)
    return forward


def _layer_norm(layer, w, theta: dict, module: nn.LayerNorm):
    def forward(x):
        x = _rows(x, w, layer)
        y = F.layer_norm(x, module.normalized_shape, None, None, module.eps)
        shape = (w.size(0), *[1] * (x.dim() - 1 - len(module.normalized_shape)), *module.normalized_shape)
        g = theta.get("weight", module.weight if "weight" not in theta else None)
        b = theta.get("bias", module.bias if "bias" not in theta else None)
        if g is not None:
            y = y * ((w @ g.flatten(1)).view(shape) if "weight" in theta else g)
        if b is not None:
            y = y + ((w @ b.flatten(1)).view(shape) if "bias" in theta else b)
        return y
    return forward


_FORWARDS = {nn.Linear: _linear, nn.Embedding: _embedding, nn.LayerNorm: _layer_norm}


def equal_runs(w: torch.Tensor):
    """``[G, m]`` if ``w [B, m]`` is G contiguous blocks of n equal rows (``repeat_interleave``, RLOO), else None.

    n is the largest block size that fits: the gcd of the lengths of the runs of equal rows, so two
    neighbouring prompts that drew the same weighting (a vertex, twice) still give blocks of n, and the
    same weighting may appear in several blocks. None when that gcd is 1 (no blocks of two or more rows).
    Cheaper than ``group_rows``.
    """
    B = w.size(0)
    change = (w[1:] != w[:-1]).any(1)  # (B-1,): row b+1 starts a run
    starts = [0, *(torch.nonzero(change).squeeze(1) + 1).tolist(), B]
    n = functools.reduce(math.gcd, (b - a for a, b in zip(starts, starts[1:])))
    if n == 1 and B > 1:
        return None
    return w[::n]


def equal_sizes(rows: list) -> bool:
    """True if every group has the same number of rows (RLOO: n samples per weighting)."""
    return all(r.numel() == rows[0].numel() for r in rows)


def permute_batch(tree, perm: torch.Tensor | None):
    """Every tensor leaf of ``tree`` with its dim-0 rows reordered by ``perm`` (``None``: unchanged)."""
    if perm is None:
        return tree
    leaves, spec = tree_flatten(tree)
    return tree_unflatten([x.index_select(0, perm) if isinstance(x, torch.Tensor) else x for x in leaves], spec)


def group_order(rows: list) -> tuple:
    """``(perm, back)``: ``x[perm]`` puts the groups contiguous in order, ``y[back]`` undoes it; ``None`` if already so."""
    perm = torch.cat(rows)  # (B,)
    if torch.equal(perm, torch.arange(perm.numel(), device=perm.device)):
        return None, None
    back = torch.empty_like(perm)
    back[perm] = torch.arange(perm.numel(), device=perm.device)
    return perm, back


def _grouped(x: torch.Tensor, G: int, n: int, layer: str) -> torch.Tensor:
    """``x [B, ...]`` as ``[G, n, ...]``; a 1-D input (positions) is shared, ``[1, 1, ...]``."""
    if x.dim() == 1:
        return x[None, None]
    if x.size(0) != G * n:
        raise ValueError(f"w: {G * n} per-example weightings but layer {layer} gets input {tuple(x.shape)} "
                         f"(layer mixing needs the batch on dim 0)")
    return x.unflatten(0, (G, n))


def _ungrouped(y: torch.Tensor, G: int, n: int) -> torch.Tensor:
    """``[G, n or 1, ...]`` back to ``[B, ...]`` (a shared input's output repeated over its group)."""
    return y.expand(G, n, *y.shape[2:]).flatten(0, 1)


def _group_linear(layer, mixed: dict, shared: nn.Module, G: int, n: int):
    """Group g's rows times its mixed matrix: one batched product ``[G, n*.., in] @ [G, in, out]``."""
    def forward(x):
        xg = _grouped(x, G, n, layer)  # (G, n, .., in) or (1, 1, in)
        W = mixed["weight"] if "weight" in mixed else shared.weight  # (G, out, in) or (out, in)
        b = mixed["bias"] if "bias" in mixed else shared.bias  # (G, out), (out,) or None
        flat = xg.reshape(xg.size(0), -1, xg.size(-1))  # (G or 1, n*.., in)
        y = flat @ W.transpose(-1, -2)  # (G, n*.., out)
        if b is not None:
            y = y + (b[:, None, :] if b.dim() == 2 else b)
        y = y.view(y.size(0), *xg.shape[1:-1], y.size(-1))  # (G, n, .., out)
        return _ungrouped(y, G, n)
    return forward


def _group_embedding(layer, mixed: dict, module: nn.Embedding, G: int, n: int):
    def forward(idx):
        E = mixed["weight"]  # (G, V, C)
        V, C = E.shape[1:]
        ig = _grouped(idx, G, n, layer)  # (G, n, ..) or (1, 1, T)
        offset = (torch.arange(G, device=idx.device) * V).view(G, *[1] * (ig.dim() - 1))  # row of table g
        return _ungrouped(F.embedding(ig + offset, E.reshape(G * V, C)), G, n)  # (B, .., C)
    return forward


def _group_layer_norm(layer, mixed: dict, module: nn.LayerNorm, G: int, n: int):
    def forward(x):
        y = _grouped(F.layer_norm(x, module.normalized_shape, None, None, module.eps), G, n, layer)
        shape = (G, *[1] * (y.dim() - 1 - len(module.normalized_shape)), *module.normalized_shape)
        g = mixed["weight"].view(shape) if "weight" in mixed else module.weight
        b = mixed["bias"].view(shape) if "bias" in mixed else module.bias
        if g is not None:
            y = y * g
        if b is not None:
            y = y + b
        return _ungrouped(y, G, n)
    return forward


_GROUP_FORWARDS = {nn.Linear: _group_linear, nn.Embedding: _group_embedding, nn.LayerNorm: _group_layer_norm}


@contextmanager
def mixing_layers(module: nn.Module, owners: dict, mixed: dict, G: int, n: int):
    """Within the block the scoped layers run each of ``G`` equal contiguous groups at its parameters.

    ``mixed`` ``{alias: [G, ...]}`` (``ParamConditioned.mixed_parameters`` of the ``G``
    distinct weightings); the batch is ``G`` groups of ``n`` rows, group g at rows
    ``g*n .. g*n+n-1``. A product per layer is one batched matrix product, so the
    cost is that of the plain model plus G copies of the scoped weights.
    """
    params = {path: {a: mixed[f"{path}.{a}" if path else a] for a in attrs} for path, attrs in owners.items()}
    with _patched(module, owners, lambda path, layer: _GROUP_FORWARDS[type(layer)](path, params[path], layer, G, n),
                  params):
        yield


@contextmanager
def _patched(module: nn.Module, owners: dict, make_forward, stacks: dict):
    """Replace each owner layer's ``forward`` for a block.

    The layer's scoped attributes (``weight``, ``bias``) are set to the stacked tensors
    ``[m or G, ...]`` meanwhile, so code that reads ``layer.weight.dtype`` works while a
    computation with them fails on its shape rather than using one copy silently.
    """
    layers = []
    try:
        for path, attrs in owners.items():
            layer = module.get_submodule(path) if path else module
            layers.append((layer, attrs))
            layer.forward = make_forward(path, layer)
            for a in attrs:
                layer.__dict__[a] = stacks[path][a]  # not setattr: a Parameter would be registered
        yield
    finally:
        for layer, attrs in layers:
            for a in ("forward", *attrs):
                layer.__dict__.pop(a, None)


@contextmanager
def mixing_outputs(module: nn.Module, owners: dict, thetas: dict, w: torch.Tensor):
    """Within the block the scoped layers of ``module`` mix their outputs with ``w [B, m]``.

    ``owners`` from ``mixable``; ``thetas`` ``{owner path: {attr: [m, ...]}}``. The layers'
    ``forward`` is replaced on the instances for the duration and restored after.
    """
    with _patched(module, owners, lambda path, layer: _FORWARDS[type(layer)](path, w, thetas[path], layer),
                  thetas):
        yield
