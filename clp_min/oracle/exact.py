"""Exact evaluation in the enumerable configuration: each prompt is a ``theory.instances.Tree``.

With a tiny vocabulary ``V`` and response length ``T`` every response can be
listed (``V^T`` leaves), so for each held-out prompt ``x``:

- the tree's ``ref_logits`` are the trained ``pi_ref``'s next-token log-probs at
  every prefix (rows ordered by length, then lexicographically: DESIGN.md);
- its ``rewards`` are the task's rewards of every response (lexicographic);
- after an EOS, decoding is forced (EOS with probability 1), written as the row
  ``[0, -FORCED, ..., -FORCED]``: the other children get probability exp(-1e9) = 0,
  and all leaves below share one reward, so every policy (pi*_w included) keeps it.

Then ``theory.tree`` gives the exact ``pi*_w`` (P5) and any method's exact
``R``, ``K`` and ``J_w`` (``sequence_stats``) with no sampling noise. Contexts are
the held-out prompts with equal probability, so every quantity is the mean over
prompts.

Shape letters: P prompts, K weightings, V vocabulary, T response length, m rewards.
"""
from __future__ import annotations

import numpy as np
import torch

from clp_min import task as tk
from theory.instances import Tree
from theory.tree import optimal_token_policy, sequence_stats

FORCED = 1e9  # log-prob gap of the forced EOS row (finite, as Tree requires)
MAX_LEAVES = 4096  # V^T above this is not "enumerable" here


def _check_enumerable(cfg: tk.TaskConfig) -> None:
    if cfg.vocab ** cfg.response_len > MAX_LEAVES:
        raise ValueError(f"response_len: V^T = {cfg.vocab}^{cfg.response_len} responses is too many to "
                         f"enumerate (limit {MAX_LEAVES})")


def _prefix_rows(cfg: tk.TaskConfig) -> tuple:
    """For each depth t < T: the row of the padded sequence that holds prefix j, and whether j has an EOS."""
    V, T = cfg.vocab, cfg.response_len
    seqs = tk.all_responses(tk.TaskConfig(vocab=V, prompt_len=1, response_len=T - 1)) if T > 1 else None
    rows, ended = [], []
    for t in range(T):
        j = np.arange(V ** t)
        rows.append(j * V ** (T - 1 - t))  # prefix j followed by EOS padding (= zeros)
        digits = [(j // V ** (t - 1 - u)) % V for u in range(t)]
        ended.append(np.any(np.stack(digits) == tk.EOS, axis=0) if t else np.zeros(1, dtype=bool))
    return seqs, rows, ended


def prefix_logprobs(next_token_logprobs, cfg: tk.TaskConfig, prompts: torch.Tensor) -> list:
    """A policy's token distributions at every prefix, per prompt: list over P of lists by depth ``[V^t, V]``.

    Args:
        next_token_logprobs: ``f(idx [B, N]) -> [B, N, V]`` normalised log-probs at each position
            (one fixed weighting; float64 numpy or torch).
        prompts: ``[P, L]``.
    """
    _check_enumerable(cfg)
    V, T = cfg.vocab, cfg.response_len
    P, L = prompts.shape
    seqs, rows, ended = _prefix_rows(cfg)
    n = 1 if seqs is None else seqs.size(0)  # V^(T-1) padded sequences cover every prefix
    idx = prompts.repeat_interleave(n, dim=0)  # (P*n, L)
    if seqs is not None:
        idx = torch.cat([idx, seqs.repeat(P, 1)], dim=1)  # (P*n, L+T-1)
    logp = next_token_logprobs(idx)
    logp = np.asarray(logp.detach().double() if isinstance(logp, torch.Tensor) else logp, dtype=np.float64)
    logp = logp.reshape(P, n, L + T - 1, V)[:, :, L - 1:]  # (P, n, T, V): position t predicts token t
    forced = np.full(V, -FORCED)
    forced[tk.EOS] = 0.0
    out = []
    for p in range(P):
        by_depth = []
        for t in range(T):
            rows_t = logp[p, rows[t], t].copy()  # (V^t, V)
            rows_t[ended[t]] = forced
            by_depth.append(rows_t)
        out.append(by_depth)
    return out


def prompt_trees(ref_next_token_logprobs, cfg: tk.TaskConfig, prompts: torch.Tensor,
                 reward_fn=None) -> list:
    """One ``Tree`` per prompt from pi_ref's log-probs and the task's rewards (or ``reward_fn``'s, ``[B, m]``)."""
    reward_fn = reward_fn or (lambda x, y: tk.rewards(cfg, x, y))
    leaves = tk.all_responses(cfg)  # (V^T, T)
    trees = []
    for p, ref_rows in enumerate(prefix_logprobs(ref_next_token_logprobs, cfg, prompts)):
        r = reward_fn(prompts[p:p + 1].expand(leaves.size(0), -1), leaves)  # (V^T, m)
        trees.append(Tree.from_arrays(cfg.vocab, cfg.response_len, np.concatenate(ref_rows),
                                      np.asarray(r, dtype=np.float64)))
    return trees


def policy_stats(trees: list, log_pi: list, W: np.ndarray, beta: float) -> dict:
    """Exact mean over prompts of ``R`` ``[K, m]``, ``K`` ``[K]`` and ``J_w`` ``[K]``.

    ``log_pi[p]`` is prompt p's token policy by depth, ``[K, V^t, V]``.
    """
    stats = [sequence_stats(tree, lp, W, beta) for tree, lp in zip(trees, log_pi)]
    return {key: np.mean([s[key] for s in stats], axis=0) for key in ("rewards", "kl", "objective")}


def optimal_stats(trees: list, W: np.ndarray, beta: float) -> dict:
    """The exact optimum pi*_w of every prompt's tree (P5), averaged over prompts."""
    return policy_stats(trees, [optimal_token_policy(tree, W, beta) for tree in trees], W, beta)


def reference_stats(trees: list, W: np.ndarray, beta: float) -> dict:
    """pi_ref itself: ``R(pi_ref)``, ``K = 0``, ``J_w(pi_ref) = w . R(pi_ref)``."""
    log_ref = [[np.repeat(lp[None], len(W), axis=0) for lp in tree.ref_logp] for tree in trees]
    return policy_stats(trees, log_ref, W, beta)


def method_log_policies(next_token_logprobs_at, cfg: tk.TaskConfig, prompts: torch.Tensor, W: np.ndarray) -> list:
    """A method's token policy at each weighting: per prompt, by depth, ``[K, V^t, V]``.

    ``next_token_logprobs_at(w [m], idx) -> [B, N, V]``.
    """
    per_w = [prefix_logprobs(lambda idx, w=w: next_token_logprobs_at(w, idx), cfg, prompts) for w in W]
    P, T = prompts.size(0), cfg.response_len
    return [[np.stack([per_w[k][p][t] for k in range(len(W))]) for t in range(T)] for p in range(P)]
