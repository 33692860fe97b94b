"""Exact policy gradient in the enumerable configuration: ``J_w`` summed over every response.

With ``V^T <= clp_min.oracle.exact.MAX_LEAVES`` the objective of section 0,

    J_w(x) = sum_y pi(y|x) [w . r(x, y) - beta (log pi(y|x) - log pi_ref(y|x))],

is a finite sum, so it and its gradient need no sampling. The sum runs over the
*producible* responses: content tokens, then EOS to the end (after an EOS decoding
is forced, so any other continuation has probability 0, as in ``clp_min.oracle.exact``).
``log pi(y|x)`` is the sum of the chosen tokens' log-probs (``task.decision_mask``:
up to and including the first EOS; forced EOS tokens contribute ``log 1 = 0``).

Only content prefixes need a distribution (after an EOS decoding is forced), so a
prompt costs ``L + sum_{1<=t<T} (V-1)^t`` token positions (V = 4, T = 4: 6 + 39 = 45;
a single padded pass of every EOS-padded prefix costs 40 x 9 = 360). Two routes give
the same distributions (tested), under the cache convention
``policy(w, idx, cache) -> (logits, cache)``:

    tree    (policies with ``accepts_tree``: the GPT and every clp_min wrapper of it)
            one call: each prompt followed by every content prefix's last token, as
            one token tree (``model.TokenTree``: the prompt a chain at positions
            ``0 .. L-1``, a prefix of length ``t`` at ``L + t - 1``, attending to the
            prompt and to its own ancestors). One batch row per prompt, so a
            per-example weighting costs no regrouping.
    depth   (any other policy, e.g. a Hugging Face model): ``T`` calls, depth by depth,
            each on the ``(V-1)^t`` content prefixes of length ``t`` per prompt with
            the parent's key/value cache repeated for its ``V-1`` children.

pi_ref's log-probs and the rewards depend on the prompt only, so a training run computes
them once for every prompt of the task (``ReferenceTable``, when there are at most
``MAX_TABLE_PROMPTS``) and each step looks its prompts up instead of running pi_ref.

Autograd through ``sum_y pi(y|x) [...]`` gives ``grad J_w`` exactly (the KL
term's ``E[grad log pi] = 0`` part included). The batch's loss is
``- mean_x J_{w_x}(x)`` with one weighting per prompt.

Shape letters: P prompts, N producible responses, R content prefixes, L prompt
length, T response length, V vocabulary, m rewards.
"""
from __future__ import annotations

import functools
import itertools

import numpy as np
import torch
import torch.nn.functional as F

from clp_min import task as tk
from clp_min.conditioning import Unconditioned
from clp_min.oracle.exact import FORCED, MAX_LEAVES
from clp_min.model import TokenTree
from clp_min.task import draw_prompts, reward_vectors


def check_enumerable(cfg: tk.TaskConfig) -> None:
    """Refuse a task whose ``V^T`` responses are too many to list."""
    if cfg.vocab ** cfg.response_len > MAX_LEAVES:
        raise ValueError(f"estimator: exact needs V^T <= {MAX_LEAVES} responses, got "
                         f"{cfg.vocab}^{cfg.response_len} = {cfg.vocab ** cfg.response_len}")


def producible_responses(V: int, T: int) -> torch.Tensor:
    """Responses with no content token after an EOS, lexicographic, ``[N, T]``."""
    y = tk.all_responses(tk.TaskConfig(vocab=V, prompt_len=1, response_len=T))  # (V^T, T)
    return y[(tk.decision_mask(y) | (y == tk.EOS)).all(dim=1)]


@functools.lru_cache(maxsize=8)
def _gather_plan(V: int, T: int) -> tuple:
    """The responses ``[N, T]`` and, for each response and depth, its prefix's row among all content prefixes.

    Rows list the content prefixes by depth, each depth in lexicographic order: depth ``t`` holds rows
    ``offset_t .. offset_t + (V-1)^t - 1`` with ``offset_t = sum_{k<t} (V-1)^k``, and the prefix
    ``(c_1 .. c_t)`` (tokens ``1 .. V-1``) sits at ``offset_t + sum_k (c_k - 1) (V-1)^(t-k)``. A position
    after the first EOS is forced and masked out (``task.decision_mask``); it points at row 0.
    """
    Y = producible_responses(V, T)  # (N, T)
    decided = tk.decision_mask(Y)  # (N, T): up to and including the first EOS
    C = V - 1
    offsets = [sum(C ** k for k in range(t)) for t in range(T)]
    rows = torch.zeros(Y.shape, dtype=torch.int64)
    index = torch.zeros(Y.size(0), dtype=torch.int64)  # rank of y_<t among depth-t content prefixes
    for t in range(T):
        rows[:, t] = torch.where(decided[:, t], offsets[t] + index, 0)
        index = index * C + (Y[:, t] - 1).clamp(min=0)
    return Y, rows


def _repeat_rows(cache, k: int):
    """Each batch row of a key/value cache repeated ``k`` times in place (its ``k`` children follow it)."""
    return tuple(tuple(t.repeat_interleave(k, dim=0) for t in layer) for layer in cache)


@functools.lru_cache(maxsize=8)
def content_tree(V: int, T: int) -> tuple:
    """The content prefixes of length ``1 .. T-1`` as one token tree, in ``_gather_plan``'s row order
    (shifted by one: the empty prefix is the prompt's last position).

    Returns ``(tokens [R-1], TokenTree)``: each prefix's last token, its depth ``t - 1``, and which
    prefixes it sees (its own prefixes, itself included).
    """
    prefixes = [c for t in range(1, T) for c in itertools.product(range(1, V), repeat=t)]  # depth, then lexicographic
    row = {c: i for i, c in enumerate(prefixes)}
    visible = torch.zeros(len(prefixes), len(prefixes), dtype=torch.bool)
    for i, c in enumerate(prefixes):
        visible[i, [row[c[:k]] for k in range(1, len(c) + 1)]] = True
    tokens = torch.tensor([c[-1] for c in prefixes], dtype=torch.long)
    return tokens, TokenTree(torch.tensor([len(c) - 1 for c in prefixes], dtype=torch.long), visible)


@functools.lru_cache(maxsize=8)
def prompt_and_content_tree(V: int, T: int, L: int, device: torch.device = torch.device("cpu")) -> tuple:
    """``content_tree`` below a prompt of ``L`` tokens, as one tree on ``device``: ``(content tokens [R-1],
    TokenTree [L+R-1])`` with the prompt a chain (depths ``0 .. L-1``) that every content prefix sees."""
    tokens, tree = content_tree(V, T)
    R = tokens.numel()
    visible = torch.zeros(L + R, L + R, dtype=torch.bool)
    visible[:L, :L] = torch.tril(torch.ones(L, L, dtype=torch.bool))
    visible[L:, :L] = True
    visible[L:, L:] = tree.visible
    return tokens.to(device), TokenTree(torch.cat([torch.arange(L), L + tree.depth]).to(device), visible.to(device))


def accepts_tree(policy) -> bool:
    """Whether ``policy`` (or the module inside a DistributedDataParallel) takes ``tree=``."""
    return bool(getattr(getattr(policy, "module", policy), "accepts_tree", False))


def prefix_logits(policy, w, prompts: torch.Tensor, V: int, T: int, route: str = "auto") -> torch.Tensor:
    """Next-token logits after every content prefix, differentiable, ``[P, sum_{t<T} (V-1)^t, V]``.

    Rows are ordered as in ``_gather_plan``. ``w`` is ``[P, m]`` (or ``None`` for an unconditioned policy);
    each prefix row gets its prompt's weighting. ``route``: "tree", "depth" or "auto" (tree when the
    policy accepts it; module docstring).
    """
    if route not in ("auto", "tree", "depth"):
        raise ValueError(f"route: must be 'auto', 'tree' or 'depth', got {route!r}")
    if route == "tree" or (route == "auto" and accepts_tree(policy)):
        L = prompts.size(1)
        tokens, tree = prompt_and_content_tree(V, T, L, prompts.device)
        idx = torch.cat([prompts, tokens.expand(prompts.size(0), -1)], dim=1)  # (P, L+R-1)
        logits, _ = policy(w, idx, tree=tree)  # (P, L+R-1, V)
        return logits[:, L - 1:]  # after the prompt, then after each content prefix
    P = prompts.size(0)
    logits, cache = policy(w, prompts)  # (P, L, V): the last position is the first token's distribution
    out = [logits[:, -1:]]  # (P, 1, V)
    content = torch.arange(1, V, device=prompts.device)  # (V-1,)
    for t in range(1, T):
        n = (V - 1) ** t  # content prefixes of length t per prompt
        cache = _repeat_rows(cache, V - 1)  # (P * n, ...) each prefix's parent state, once per child
        idx = content.repeat(P * n // (V - 1))[:, None]  # (P * n, 1): the last token of each prefix
        w_rows = None if w is None else w.repeat_interleave(n, dim=0)
        logits, cache = policy(w_rows, idx, cache)  # (P * n, 1, V)
        out.append(logits[:, -1].view(P, n, V))
    return torch.cat(out, dim=1)


def prefix_log_probs(policy, w, prompts: torch.Tensor, V: int, T: int, route: str = "auto") -> torch.Tensor:
    """Next-token log-probs after every content prefix, differentiable, ``[P, sum_{t<T} (V-1)^t, V]``
    (``prefix_logits`` normalised)."""
    return F.log_softmax(prefix_logits(policy, w, prompts, V, T, route), dim=-1)


@functools.lru_cache(maxsize=8)
def _all_prefix_rows(V: int, T: int) -> tuple:
    """For each depth ``t``, every prefix ``j < V^t`` (base-V digits, as ``clp_min.oracle.exact.prefix_logprobs``
    lists them): its content prefix's row (``_gather_plan``'s order; 0 where it holds an EOS) and whether
    it holds an EOS."""
    C = V - 1
    rows, ended = [], []
    for t in range(T):
        digits = [(np.arange(V ** t) // V ** (t - 1 - u)) % V for u in range(t)]  # most significant first
        rank = np.zeros(V ** t, dtype=np.int64)
        for d in digits:
            rank = rank * C + np.maximum(d - 1, 0)
        has_eos = np.any(np.stack(digits) == tk.EOS, axis=0) if t else np.zeros(1, dtype=bool)
        rows.append(np.where(has_eos, 0, sum(C ** k for k in range(t)) + rank))
        ended.append(has_eos)
    return rows, ended


@torch.no_grad()
def token_policies(policy, cfg: tk.TaskConfig, prompts: torch.Tensor, W: np.ndarray, route: str = "auto") -> list:
    """A conditioned policy's token policy at each weighting of ``W`` ``[K, m]``, in the layout of
    ``clp_min.oracle.exact.method_log_policies``: per prompt, by depth, ``[K, V^t, V]`` float64 log-probs (a prefix
    holding an EOS gets the forced distribution). One call per weighting (the tree route when the policy
    accepts it); normalised in float64 like ``clp_min.studies.evaluate.policy_method``."""
    check_enumerable(cfg)
    V, T, P = cfg.vocab, cfg.response_len, prompts.size(0)
    dtype = next(policy.parameters()).dtype
    per_w = np.stack([F.log_softmax(prefix_logits(policy, torch.as_tensor(w, dtype=dtype).expand(P, -1), prompts,
                                                  V, T, route).double(), dim=-1).numpy() for w in W], axis=1)
    forced = np.full(V, -FORCED)
    forced[tk.EOS] = 0.0
    rows, ended = _all_prefix_rows(V, T)
    out = []
    for p in range(P):
        by_depth = []
        for t in range(T):
            d = per_w[p][:, rows[t]]  # (K, V^t, V)
            d[:, ended[t]] = forced
            by_depth.append(d)
        out.append(by_depth)
    return out


def token_log_probs(policy, w: torch.Tensor, prompts: torch.Tensor, V: int, T: int, route: str = "auto") -> tuple:
    """``log pi(y_t | x, y_<t)`` of every producible response, masked to its decisions (a forced EOS gives 0),
    differentiable, ``[P, N, T]``; and the responses ``[N, T]``. Arguments as ``response_log_probs``."""
    Y, rows = (t.to(prompts.device) for t in _gather_plan(V, T))
    logp = prefix_log_probs(policy, w, prompts, V, T, route)  # (P, R, V)
    return logp[:, rows, Y] * tk.decision_mask(Y), Y  # (P, N, T)


def response_log_probs(policy, w: torch.Tensor, prompts: torch.Tensor, V: int, T: int, route: str = "auto") -> tuple:
    """``log pi(y | x)`` of every producible response, differentiable, ``[P, N]``; and the responses ``[N, T]``.

    Args:
        policy: ``policy(w, idx, cache=None) -> (logits, cache)``; ``w`` ``[B, m]`` one weighting per row
            (ignored by an unconditioned policy).
        w: ``[P, m]``, one weighting per prompt.
        prompts: ``[P, L]``.
        route: "auto", "tree" or "depth" (``prefix_log_probs``).
    """
    token_logp, Y = token_log_probs(policy, w, prompts, V, T, route)  # (P, N, T)
    return token_logp.sum(dim=-1), Y


def exact_objective(logp: torch.Tensor, logp_ref: torch.Tensor, r: torch.Tensor, w: torch.Tensor,
                    beta: float) -> torch.Tensor:
    """``J_w(x) = sum_y pi(y|x) [w . r(x, y) - beta (log pi - log pi_ref)]``, ``[P]`` (section 0).

    Args: ``logp``, ``logp_ref`` ``[P, N]`` over all producible responses; ``r`` ``[P, N, m]``; ``w`` ``[P, m]``.
    """
    pi = logp.exp()  # (P, N)
    return (pi * ((r * w[:, None, :]).sum(-1) - beta * (logp - logp_ref))).sum(dim=1)


MAX_TABLE_PROMPTS = 4096  # ReferenceTable holds every prompt's row up to this many prompts


def _prompt_count(cfg: tk.TaskConfig) -> int:
    """Prompts of the task: ``L`` content tokens ``1 .. V-1`` (``tk.all_prompts``)."""
    return (cfg.vocab - 1) ** cfg.prompt_len


def _reference_terms(pi_ref, cfg: tk.TaskConfig, prompts: torch.Tensor, steer_kl: bool) -> tuple:
    """``log pi_ref(y|x)`` ``[P, N]``, the task's rewards ``[P, N, m_task]`` and the trained reward vectors
    ``[P, N, m]`` of every producible response (no gradient)."""
    with torch.no_grad():
        logp_ref, Y = response_log_probs(Unconditioned(pi_ref), None, prompts, cfg.vocab, cfg.response_len)
        P, N = logp_ref.shape
        x, y = prompts.repeat_interleave(N, dim=0), Y.repeat(P, 1)  # (P*N, L), (P*N, T)
        return (logp_ref, tk.rewards(cfg, x, y).view(P, N, -1), reward_vectors(cfg, x, y, steer_kl).view(P, N, -1))


class ReferenceTable:
    """``_reference_terms`` of every prompt of a task, computed once (in fixed chunks, so a row does not
    depend on which prompts a step drew: resuming a run stays exact). ``lookup(prompts)`` gives a batch's.

    Prompts are content tokens ``1 .. V-1``; ``tk.all_prompts`` lists them in lexicographic order, so a
    prompt's row is its tokens read as a base ``V-1`` number.
    """

    def __init__(self, pi_ref, cfg: tk.TaskConfig, steer_kl: bool = False, chunk: int = 256):
        n = _prompt_count(cfg)
        if n > MAX_TABLE_PROMPTS:
            raise ValueError(f"prompt_len: a reference table lists every prompt, at most {MAX_TABLE_PROMPTS}; "
                             f"got {cfg.vocab - 1}^{cfg.prompt_len} = {n}")
        self.cfg, self.steer_kl = cfg, steer_kl
        device = next(pi_ref.parameters()).device
        x = tk.all_prompts(cfg).to(device)
        parts = [_reference_terms(pi_ref, cfg, x[i:i + chunk], steer_kl) for i in range(0, len(x), chunk)]
        self.logp_ref, self.r_task, self.r = (torch.cat(t) for t in zip(*parts))
        self.place = (cfg.vocab - 1) ** torch.arange(cfg.prompt_len - 1, -1, -1, device=device)  # (L,)

    @classmethod
    def for_task(cls, pi_ref, cfg: tk.TaskConfig, steer_kl: bool = False):
        """The table, or ``None`` when the task has more than ``MAX_TABLE_PROMPTS`` prompts."""
        if _prompt_count(cfg) > MAX_TABLE_PROMPTS:
            return None
        return cls(pi_ref, cfg, steer_kl)

    def lookup(self, prompts: torch.Tensor) -> tuple:
        """``(logp_ref [P, N], r_task [P, N, m_task], r [P, N, m])`` of ``prompts [P, L]``."""
        rows = ((prompts - 1) * self.place).sum(dim=1)  # (P,)
        return self.logp_ref[rows], self.r_task[rows], self.r[rows]


def batch_objective(policy, pi_ref, cfg: tk.TaskConfig, prompts: torch.Tensor, w: torch.Tensor, beta: float,
                    steer_kl: bool = False, route: str = "auto", table: ReferenceTable | None = None) -> dict:
    """Exact ``J_w`` per prompt ``[P]`` (differentiable), its rewards ``[P, m]`` and KL ``[P]``.

    ``w`` is ``[P, m]``; with ``steer_kl`` the single reward R becomes ``(0, R)`` (clp_min.rl).
    ``route``: how the policy's token distributions are computed (``prefix_log_probs``). ``table``:
    pi_ref's terms looked up instead of computed (made from the same ``pi_ref``, task and ``steer_kl``).
    """
    V, T = cfg.vocab, cfg.response_len
    logp, Y = response_log_probs(policy, w, prompts, V, T, route)  # (P, N)
    if table is not None:
        if table.cfg != cfg or table.steer_kl != steer_kl:
            raise ValueError("table: made for another task or steering than this objective's")
        logp_ref, r_task, r = table.lookup(prompts)
    else:
        logp_ref, r_task, r = _reference_terms(pi_ref, cfg, prompts, steer_kl)
    r_task, r = r_task.to(logp.dtype), r.to(logp.dtype)  # (P, N, m_task), (P, N, m)
    J = exact_objective(logp, logp_ref.to(logp.dtype), r, w.to(logp.dtype), beta)  # (P,)
    pi = logp.detach().exp()
    kl = (pi * (logp.detach() - logp_ref)).sum(dim=1)
    # soft advantage A = w.r - beta log(pi / pi_ref), constant iff pi = pi*_w (clp_min.weightings, adaptive)
    A = torch.einsum("pnm,pm->pn", r, w.to(logp.dtype)) - beta * (logp.detach() - logp_ref.to(logp.dtype))
    var_A = (pi * (A - (pi * A).sum(dim=1, keepdim=True)) ** 2).sum(dim=1)  # (P,) exact Var_pi[A]
    return {"objective": J, "rewards": torch.einsum("pn,pnm->pm", pi, r_task), "kl": kl, "soft_advantage_var": var_A}


def exact_step(policy, pi_ref, optimizer, cfg: tk.TaskConfig, w_prompts: np.ndarray, beta: float,
               generator, steer_kl: bool = False, route: str = "auto", table: ReferenceTable | None = None) -> dict:
    """One Adam step on ``- mean_x J_{w_x}(x)`` over ``P = len(w_prompts)`` fresh training prompts.

    Same contract and statistics as ``clp_min.rl.rl_step`` (which estimates this gradient by RLOO);
    ``per_prompt["soft_advantage_var"]`` ``[P]`` is the exact ``Var_pi[A]`` (not logged; adaptive weightings).
    ``table``: pi_ref's terms of every prompt, computed once per run (``ReferenceTable``).
    """
    P = w_prompts.shape[0]
    device = next(pi_ref.parameters()).device
    prompts = draw_prompts(cfg, P, generator).to(device)  # (P, L) training prompts
    w = torch.from_numpy(w_prompts).float().to(device)  # (P, m)
    out = batch_objective(policy, pi_ref, cfg, prompts, w, beta, steer_kl, route, table)
    loss = -out["objective"].mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {"loss": loss.item(), "objective": -loss.item(), "kl": out["kl"].mean().item(),
            "rewards": out["rewards"].mean(dim=0).tolist(),
            "per_prompt": {"soft_advantage_var": out["soft_advantage_var"].cpu().numpy()}}
