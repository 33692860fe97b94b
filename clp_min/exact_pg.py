"""Exact policy gradient in the enumerable configuration (issue 9): ``J_w`` summed over every response.

With ``V^T <= clp_min.exact.MAX_LEAVES`` the objective of section 0,

    J_w(x) = sum_y pi(y|x) [w . r(x, y) - beta (log pi(y|x) - log pi_ref(y|x))],

is a finite sum, so it and its gradient need no sampling. The sum runs over the
*producible* responses: content tokens, then EOS to the end (after an EOS decoding
is forced, so any other continuation has probability 0, as in ``clp_min.exact``).
``log pi(y|x)`` is the sum of the chosen tokens' log-probs (``task.decision_mask``:
up to and including the first EOS; forced EOS tokens contribute ``log 1 = 0``).

One padded pass gives every prefix's next-token distribution (``clp_min.exact``'s
trick): each producible prefix of length ``T - 1`` (EOS-padded) is one row, and
the row of a shorter prefix ``s`` is ``s`` followed by EOS padding, itself a
producible length-``T - 1`` sequence. So a prompt costs ``N_{T-1}`` sequences, with
``N_t = sum_{k<=t} (V-1)^k`` (V = 4, T = 4: 40 sequences, 121 responses).

Autograd through ``sum_y pi(y|x) [...]`` gives ``grad J_w`` exactly (the KL
term's ``E[grad log pi] = 0`` part included). The batch's loss is
``- mean_x J_{w_x}(x)`` with one weighting per prompt.

Shape letters: P prompts, N producible responses, n padded prefixes, L prompt
length, T response length, V vocabulary, m rewards.
"""
from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from clp_min import task as tk
from clp_min.conditioning import Unconditioned
from clp_min.exact import MAX_LEAVES
from clp_min.rl import draw_prompts, reward_vectors


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
    """The padded prefixes ``[n, T-1]`` and, for each response and depth, the row holding its prefix ``[N, T]``."""
    Y = producible_responses(V, T)  # (N, T)
    prefixes = producible_responses(V, T - 1) if T > 1 else torch.zeros(1, 0, dtype=torch.int64)  # (n, T-1)
    row_of = {tuple(p.tolist()): i for i, p in enumerate(prefixes)}
    pad = [tk.EOS] * (T - 1)
    rows = torch.tensor([[row_of[tuple((y[:t].tolist() + pad)[:T - 1])] for t in range(T)] for y in Y])
    return Y, prefixes, rows


def response_log_probs(policy, w: torch.Tensor, prompts: torch.Tensor, V: int, T: int) -> tuple:
    """``log pi(y | x)`` of every producible response, differentiable, ``[P, N]``; and the responses ``[N, T]``.

    Args:
        policy: ``policy(w, idx) -> (logits, cache)``; ``w`` ``[P, m]`` one weighting per prompt
            (ignored by an unconditioned policy).
        prompts: ``[P, L]``.
    """
    Y, prefixes, rows = (t.to(prompts.device) for t in _gather_plan(V, T))
    P, L = prompts.shape
    n = prefixes.size(0)
    idx = torch.cat([prompts.repeat_interleave(n, dim=0), prefixes.repeat(P, 1)], dim=1)  # (P*n, L+T-1)
    if isinstance(policy, Unconditioned):  # no weighting: one call for the whole batch
        logits, _ = policy(None, idx)  # (P*n, L+T-1, V)
    else:  # one call per prompt at its weighting w [m] (mixes the parameters once per prompt, not per row)
        logits = torch.cat([policy(w[p], idx[p * n:(p + 1) * n])[0] for p in range(P)])
    logp = F.log_softmax(logits, dim=-1).view(P, n, L + T - 1, V)[:, :, L - 1:]  # (P, n, T, V)
    depth = torch.arange(T, device=rows.device).expand_as(rows)  # (N, T)
    token_logp = logp[:, rows, depth, Y]  # (P, N, T): log pi(y_t | x, y_<t)
    return (token_logp * tk.decision_mask(Y)).sum(dim=-1), Y


def exact_objective(logp: torch.Tensor, logp_ref: torch.Tensor, r: torch.Tensor, w: torch.Tensor,
                    beta: float) -> torch.Tensor:
    """``J_w(x) = sum_y pi(y|x) [w . r(x, y) - beta (log pi - log pi_ref)]``, ``[P]`` (section 0).

    Args: ``logp``, ``logp_ref`` ``[P, N]`` over all producible responses; ``r`` ``[P, N, m]``; ``w`` ``[P, m]``.
    """
    pi = logp.exp()  # (P, N)
    return (pi * ((r * w[:, None, :]).sum(-1) - beta * (logp - logp_ref))).sum(dim=1)


def batch_objective(policy, pi_ref, cfg: tk.TaskConfig, prompts: torch.Tensor, w: torch.Tensor, beta: float,
                    steer_kl: bool = False) -> dict:
    """Exact ``J_w`` per prompt ``[P]`` (differentiable), its rewards ``[P, m]`` and KL ``[P]``.

    ``w`` is ``[P, m]``; with ``steer_kl`` the single reward R becomes ``(0, R)`` (clp_min.rl).
    """
    V, T = cfg.vocab, cfg.response_len
    logp, Y = response_log_probs(policy, w, prompts, V, T)  # (P, N)
    with torch.no_grad():
        logp_ref, _ = response_log_probs(Unconditioned(pi_ref), w, prompts, V, T)
        P, N = logp.shape
        x = prompts.repeat_interleave(N, dim=0)  # (P*N, L)
        r_task = tk.rewards(cfg, x, Y.repeat(P, 1)).view(P, N, -1).to(logp.dtype)  # (P, N, m_task)
        r = reward_vectors(cfg, x, Y.repeat(P, 1), steer_kl).view(P, N, -1).to(logp.dtype)
    J = exact_objective(logp, logp_ref.to(logp.dtype), r, w.to(logp.dtype), beta)  # (P,)
    pi = logp.detach().exp()
    kl = (pi * (logp.detach() - logp_ref)).sum(dim=1)
    return {"objective": J, "rewards": torch.einsum("pn,pnm->pm", pi, r_task), "kl": kl}


def exact_step(policy, pi_ref, optimizer, cfg: tk.TaskConfig, w_prompts: np.ndarray, beta: float,
               generator, steer_kl: bool = False) -> dict:
    """One Adam step on ``- mean_x J_{w_x}(x)`` over ``P = len(w_prompts)`` fresh training prompts.

    Same contract and statistics as ``clp_min.rl.rl_step`` (which estimates this gradient by RLOO).
    """
    P = w_prompts.shape[0]
    device = next(pi_ref.parameters()).device
    prompts = draw_prompts(cfg, P, generator).to(device)  # (P, L) training prompts
    w = torch.from_numpy(w_prompts).float().to(device)  # (P, m)
    out = batch_objective(policy, pi_ref, cfg, prompts, w, beta, steer_kl)
    loss = -out["objective"].mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {"loss": loss.item(), "objective": -loss.item(), "kl": out["kl"].mean().item(),
            "rewards": out["rewards"].mean(dim=0).tolist()}
