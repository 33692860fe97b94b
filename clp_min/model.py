"""A small decoder-only transformer (nanoGPT layout) with a key/value cache.

    logits, cache = GPT(config)(idx, cache=None, prefix=None, input_add=None)

Shapes: B batch, T new tokens, P prefix embeddings, L positions already in the
cache, C = n_embd, V = vocab_size, nh = n_head, hs = C // nh.

Positions. Position numbers count every input row, prefix included: a prefix
``[B, P, C]`` takes positions ``0 .. P-1`` and the tokens ``P .. P+T-1``. With a
cache of length L (prefix rows included) the new tokens take ``L .. L+T-1``, so
feeding a sequence in pieces through the cache gives the same logits as one full
pass (tested). ``L + P + T`` must not exceed ``block_size``.

The cache is a plain tuple, one ``(k, v)`` pair per layer, each ``[B, nh, L, hs]``;
``forward`` never mutates it and returns the extended one. Being a tuple of
tensors batched on dim 0, it passes through ``torch.func.vmap`` (used by
``clp_min.conditioning`` for per-example weightings).

Token trees (``tree=TokenTree(depth, visible)``): the ``T`` new tokens are nodes of a tree
hanging below the cache (and the prefix, if any), not one sequence. Token ``i`` takes position
``L + P + depth[i]`` and attends to every cached and prefix row and to the new tokens ``j`` with
``visible[i, j]`` (its ancestors and itself). One call then gives the logits after every
node, as if each root-to-node path had been fed through the cache on its own (tested;
clp_min.oracle.exact_pg lists every response this way).

Tied weights (``tie_weights=True``): ``lm_head.weight`` is the same Parameter as
``transformer.wte.weight`` (nanoGPT). ``named_parameters()`` lists it once, as
``transformer.wte.weight``; with ``remove_duplicate=False`` both names appear.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


MAX_VOCAB = 2 ** 17  # bounded work: checked before anything is allocated (README, "Limits")
MAX_BLOCK = 4096  # the causal mask is [block_size, block_size]
MAX_PARAMS = 10 ** 8  # (V + block_size) C + 12 n_layer C^2, about 400 MB of float32


def check_token_ids(idx, vocab_size: int, field: str = "idx") -> None:
    """Token ids enter here: an integer tensor with every id in ``[0, vocab_size)``."""
    if not isinstance(idx, torch.Tensor):
        raise ValueError(f"{field}: expected a torch.Tensor of token ids, got {type(idx).__name__}")
    while torch._C._functorch.is_batchedtensor(idx):  # under vmap (per-example w): check the whole batch
        idx = torch._C._functorch.get_unwrapped(idx)
    if idx.dtype.is_floating_point or idx.dtype.is_complex or idx.dtype == torch.bool:
        raise ValueError(f"{field}: token ids must be an integer tensor, got dtype {idx.dtype}")
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= vocab_size):
        raise ValueError(f"{field}: token ids must lie in [0, {vocab_size}), got min {int(idx.min())}, "
                         f"max {int(idx.max())}")


def check_same_vocab(models, field: str = "models") -> None:
    """Models mixed token by token must share one vocabulary (``config.vocab_size`` where they have one)."""
    sizes = [getattr(getattr(m, "config", None), "vocab_size", None) for m in models]
    known = {v for v in sizes if v is not None}
    if len(known) > 1:
        raise ValueError(f"{field}: vocabularies differ ({', '.join(str(v) for v in sizes)}); "
                         f"token-level mixing needs one vocabulary")


@dataclass
class GPTConfig:
    vocab_size: int  # V, number of token ids
    block_size: int  # most positions in one sequence (prefix rows + tokens)
    n_layer: int = 2  # transformer blocks
    n_head: int = 2  # attention heads per block; must divide n_embd
    n_embd: int = 32  # C, width of the residual stream
    tie_weights: bool = True  # unembedding lm_head shares the token embedding matrix

    def __post_init__(self):
        for field in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{field}: must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_head: {self.n_head} does not divide n_embd = {self.n_embd}")
        if self.vocab_size > MAX_VOCAB:
            raise ValueError(f"vocab_size: {self.vocab_size} exceeds the limit of {MAX_VOCAB}")
        if self.block_size > MAX_BLOCK:
            raise ValueError(f"block_size: {self.block_size} positions exceed the limit of {MAX_BLOCK}")
        C = self.n_embd
        params = (self.vocab_size + self.block_size) * C + 12 * self.n_layer * C * C
        if params > MAX_PARAMS:
            raise ValueError(f"n_embd: about {params:.3g} parameters (n_layer {self.n_layer}, n_embd {C}) "
                             f"exceed the limit of {MAX_PARAMS:g}")


@dataclass(frozen=True)
class TokenTree:
    """New tokens as tree nodes: positions ``L + depth`` ``[T]``, attention ``visible`` ``[T, T]`` (bool).

    ``visible[i, j]`` is True when node ``j`` is an ancestor of node ``i`` or ``i`` itself. It is not a
    tensor itself, so per-example wrappers (clp_min.per_example) pass it through unbatched.
    """
    depth: torch.Tensor
    visible: torch.Tensor

    def __post_init__(self):
        T = self.depth.size(0)
        if self.depth.dim() != 1 or self.visible.shape != (T, T) or self.visible.dtype != torch.bool:
            raise ValueError(f"tree: needs depth [T] and a bool visible [T, T], got {tuple(self.depth.shape)} "
                             f"and {tuple(self.visible.shape)} ({self.visible.dtype})")
        if not bool(self.visible.diagonal().all()):
            raise ValueError("tree: every node must see itself (visible[i, i])")


class CausalSelfAttention(nn.Module):

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # q, k, v projections
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)  # output projection
        mask = torch.tril(torch.ones(config.block_size, config.block_size, dtype=torch.bool))
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x, kv=None, mask=None):
        """``mask`` ``[T, L+T]`` (bool, True: attend) replaces the causal mask (token trees)."""
        B, T, C = x.size()
        hs = C // self.n_head
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        if kv is not None:
            k = torch.cat([kv[0], k], dim=2)  # (B, nh, L+T, hs)
            v = torch.cat([kv[1], v], dim=2)  # (B, nh, L+T, hs)
        S = k.size(2)  # L + T keys; query t sits at position L + t
        att = (q @ k.transpose(-2, -1)) / math.sqrt(hs)  # (B, nh, T, L+T)
        att = att.masked_fill(~(self.mask[S - T:S, :S] if mask is None else mask), float("-inf"))
        att = F.softmax(att, dim=-1)
        y = att @ v  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.c_proj(y), (k, v)


class MLP(nn.Module):

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x)))


class Block(nn.Module):
    """Pre-norm residual block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x, kv=None, mask=None):
        a, kv = self.attn(self.ln_1(x), kv, mask)
        x = x + a
        x = x + self.mlp(self.ln_2(x))
        return x, kv


class GPT(nn.Module):

    accepts_tree = True  # forward takes tree=TokenTree (clp_min.oracle.exact_pg asks)

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),  # token embedding
            wpe=nn.Embedding(config.block_size, config.n_embd),  # learned positions
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)  # unembedding
        self.apply(self._init_weights)
        if config.tie_weights:
            self.lm_head.weight = self.transformer.wte.weight

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx, cache=None, prefix=None, input_add=None, tree=None):
        """Logits of the next token at every token position, and the extended cache.

        Args:
            idx: ``[B, T]`` token ids.
            cache: ``None`` or the tuple returned by a previous call (``n_layer`` pairs ``[B, nh, L, hs]``).
            prefix: ``None`` or ``[B, P, C]`` embeddings placed before the tokens (input
                conditioning); they enter the cache but get no logits.
            input_add: ``None`` or ``[B, C]`` added to every token's input embedding.
            tree: ``None`` or a ``TokenTree`` over the ``T`` new tokens (a prefix, if any, comes first as
                usual and every node sees it).
        Returns:
            ``(logits [B, T, V], cache)``.
        """
        check_token_ids(idx, self.config.vocab_size)
        B, T = idx.size()
        x = self.transformer.wte(idx)  # (B, T, C)
        if input_add is not None:
            x = x + input_add[:, None, :]
        P = 0
        if prefix is not None:
            P = prefix.size(1)
            x = torch.cat([prefix.to(x.dtype), x], dim=1)  # (B, P+T, C)
        L = 0 if cache is None else cache[0][0].size(2)
        if tree is None and L + P + T > self.config.block_size:
            raise ValueError(f"idx: {L} cached + {P} prefix + {T} new positions exceed "
                             f"block_size = {self.config.block_size}")
        mask = None
        if tree is None:
            pos = torch.arange(L, L + P + T, device=idx.device)  # (P+T,)
        else:
            if tree.depth.size(0) != T:
                raise ValueError(f"tree: {tree.depth.size(0)} nodes for {T} new tokens")
            if L + P + int(tree.depth.max()) >= self.config.block_size:
                raise ValueError(f"tree: depth {int(tree.depth.max())} below {L + P} positions exceeds "
                                 f"block_size = {self.config.block_size}")
            dev = idx.device
            pos = torch.cat([torch.arange(L, L + P, device=dev), L + P + tree.depth.to(dev)])  # (P+T,)
            mask = torch.zeros(P + T, L + P + T, dtype=torch.bool, device=dev)  # the cache, then the prefix
            mask[:, :L + P] = True  # every new row sees the cache and the prefix ...
            mask[:P, L:L + P] = torch.tril(torch.ones(P, P, dtype=torch.bool, device=dev))  # ... causally
            mask[P:, L + P:] = tree.visible.to(dev)  # (P+T, L+P+T)
        x = x + self.transformer.wpe(pos)
        new_cache = []
        for i, block in enumerate(self.transformer.h):
            x, kv = block(x, None if cache is None else cache[i], mask)
            new_cache.append(kv)
        x = self.transformer.ln_f(x[:, P:])  # (B, T, C): no logits for prefix rows
        return self.lm_head(x), tuple(new_cache)
