"""On-policy policy gradient for conditioned policies (multi-task training, THEORY.md section 4).

For each prompt ``x`` a weighting ``w`` is drawn, ``n`` responses ``y_1 .. y_n``
are sampled from ``pi_theta(w)``, and each gets the per-sequence KL-regularised
reward (the scalarised objective ``J_w`` of section 0, one sample at a time)

    R_j = w . r(x, y_j) - beta * (log pi_theta(w)(y_j|x) - log pi_ref(y_j|x)),

with ``pi_ref`` frozen. The leave-one-out baseline (RLOO; Kool et al. 2019,
Ahmadian et al. 2024) ``b_j = mean_{l != j} R_l`` keeps the estimate unbiased, and

    loss = - mean_j (R_j - b_j) * log pi_theta(w)(y_j|x)

is a stochastic gradient of ``- E_{w ~ D} J_w(pi_theta(w))``. (The KL term's
second part, ``E[grad log pi] = 0``, needs no sample.)

Single-objective finetuning is the same step with a fixed ``w = e_i`` and an
unconditioned policy. KL-weight steering (setup (a)) is the same step with
``m = 2``, ``w = (1 - lam, lam)`` and the reward vector ``(0, R)``: then
``w . r = lam * R`` and the objective is ``lam * R - beta * K``, whose optimum is
the Gibbs policy at KL weight ``beta / lam`` (P1), the target of realignment (P4).

Shape letters: P prompts per step, n samples per prompt, B = P * n, T response
tokens, m rewards.
"""
from __future__ import annotations

import numpy as np
import torch

from clp_min import task as tk
from clp_min.conditioning import Unconditioned
from clp_min.decoding import sample, sequence_logprobs
from clp_min.task import draw_prompts, reward_vectors

def pad_responses(tokens: torch.Tensor, T: int) -> torch.Tensor:
    """Decoding stops once every sequence has ended; pad to ``[B, T]`` with the forced EOS."""
    B, N = tokens.shape
    if N == T:
        return tokens
    return torch.cat([tokens, torch.full((B, T - N), tk.EOS, dtype=tokens.dtype, device=tokens.device)], dim=1)


def response_logprobs(policy, w: torch.Tensor, prompts: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
    """Sequence log-probabilities ``[B]``: the sum over the chosen tokens (up to the first EOS)."""
    logp = sequence_logprobs(policy, w, prompts, responses)  # (B, T)
    return (logp * tk.decision_mask(responses)).sum(dim=1)


def leave_one_out_advantages(R: torch.Tensor) -> torch.Tensor:
    """``A_j = R_j - mean_{l != j} R_l`` within each prompt's group; ``R`` is ``[P, n]`` with n >= 2."""
    n = R.size(1)
    return R - (R.sum(dim=1, keepdim=True) - R) / (n - 1)


def rl_step(policy, pi_ref, optimizer, cfg: tk.TaskConfig, w_prompts: np.ndarray, n: int, beta: float,
            generator: torch.Generator, steer_kl: bool = False) -> dict:
    """One RLOO update of ``policy`` on ``P = len(w_prompts)`` fresh training prompts with ``n`` samples each.

    Args:
        policy: conditioned policy ``policy(w, idx, cache) -> (logits, cache)`` being trained.
        pi_ref: the frozen reference, a plain GPT.
        w_prompts: ``[P, m]`` one weighting per prompt (already drawn and checked).
        generator: one torch.Generator for prompts and samples, or P of them, one per prompt
            (per-prompt streams, clp_min.interop.distributed).
    Returns: scalar statistics of the batch (rewards ``[m]`` means, KL, objective, loss), and
        ``per_prompt``: ``{"soft_advantage_var": [P]}`` (not logged).
    """
    P = w_prompts.shape[0]
    device = next(pi_ref.parameters()).device
    prompts = draw_prompts(cfg, P, generator).repeat_interleave(n, dim=0).to(device)  # (B, L)
    w = torch.from_numpy(w_prompts).float().repeat_interleave(n, dim=0).to(device)  # (B, m)
    responses = pad_responses(sample(policy, w, prompts, cfg.response_len, generator=generator,
                                     eos=tk.EOS).tokens, cfg.response_len)  # (B, T)
    logp = response_logprobs(policy, w, prompts, responses)  # (B,) differentiable
    with torch.no_grad():
        logp_ref = response_logprobs(Unconditioned(pi_ref), w, prompts, responses)
        r = reward_vectors(cfg, prompts.cpu(), responses.cpu(), steer_kl).float().to(device)  # (B, m)
        kl = logp.detach() - logp_ref  # single-sample estimate of the sequence KL
        R = (w * r).sum(dim=1) - beta * kl  # (B,)
        A = leave_one_out_advantages(R.view(P, n)).view(-1)  # (B,)
    loss = -(A * logp).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {"loss": loss.item(), "objective": R.mean().item(), "kl": kl.mean().item(),
            "rewards": r.mean(dim=0).tolist(),
            # R is the soft advantage A = w.r - beta log(pi / pi_ref) of each sample: its sample variance
            # per prompt estimates Var_pi[A] (clp_min.weightings, adaptive; not logged)
            "per_prompt": {"soft_advantage_var": R.view(P, n).var(dim=1).cpu().numpy()}}
