"""Decoding with a key/value cache, the zero-shot decoding baselines, and exact sequence log-probs.

    sample(policy, w, prompt, N)             one conditioned policy, 1 model call per step
    logit_mix_sample(models, w, prompt, N)   pi^mix_w ∝ prod_i pi_i^{w_i} per token (THEORY.md sec. 2),
                                             m model calls per step
    realign_sample(ref, tuned, lam, ...)     (1 - lam) log pi_ref + lam log pi_tuned per token (P4),
                                             2 model calls per step
    sequence_logprobs(policy, w, prompt, response)   exact log pi(response_t | prefix), one full pass

``policy`` follows the convention ``policy(w, idx, cache=None) -> (logits, cache)``;
the baselines mix plain models ``model(idx, cache=None) -> (logits, cache)``. A Hugging
Face model gets that convention from ``clp_min.interop.hf.HFCausalLM``; its bare ``ModelOutput``
is refused. The
mixing itself is theory.mixing.logit_mix / kl_weight_mix (the one implementation;
float64 numpy, per step on ``[B, V]`` rows, which is cheap at this size).

``sample`` fixes the policy at ``w`` for the whole call (``conditioning.at_weighting``):
a ``ParamConditioned`` policy mixes its parameters once (once per distinct weighting
for ``w [B, m]``), then every step is one plain forward pass, with the same outputs as
mixing at every call (tested); bench/clp_min.py measures it against the unconditioned model.

A *step* feeds the prompt (first step) or the last sampled token (later steps)
through the cache, so N new tokens cost N calls per model. ``model_calls`` counts
forward calls summed over all models.

Log-probabilities returned by the samplers are those of the distribution each
token was drawn from (after temperature and top-k); at ``temperature=1, top_k=None``
they are the policy's own. After a sequence emits ``eos`` its remaining tokens are
``eos`` with log-prob 0 and ``mask`` False (the ``eos`` token itself is in the mask).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from clp_min.conditioning import at_weighting
from clp_min.mixing import check_w
from clp_min.model import check_same_vocab
from theory.checks import check_lam
from theory.mixing import kl_weight_mix, logit_mix


@dataclass
class Decoded:
    tokens: torch.Tensor  # [B, N] sampled token ids
    logprobs: torch.Tensor  # [B, N] log-prob of each token under the distribution it was drawn from
    #   (float64 for a float64 policy and for the mixing baselines, which mix in float64; else float32)
    model_calls: int  # forward calls, summed over models
    mask: torch.Tensor  # [B, N] True up to and including the first eos


def _log_probs(logits):
    """log_softmax over the last axis, in float64 for float64 models and float32 otherwise."""
    return F.log_softmax(logits if logits.dtype == torch.float64 else logits.float(), dim=-1)


def _pair(out):
    """A model call's ``(logits, cache)``; a transformers ``ModelOutput`` is refused, naming the adapter."""
    if not isinstance(out, tuple):
        raise ValueError(f"model: returned a {type(out).__name__}, not (logits, cache); wrap a Hugging Face "
                         f"model as clp_min.interop.hf.HFCausalLM(model)")
    return out


def _check_decode_args(prompt, max_new_tokens, temperature, top_k):
    if not isinstance(prompt, torch.Tensor) or prompt.dim() != 2 or prompt.size(1) < 1:
        raise ValueError("prompt: expected a [B, P] tensor of token ids with P >= 1")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens: must be a positive integer, got {max_new_tokens!r}")
    if not (np.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature: must be finite and > 0, got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k: must be None or a positive integer, got {top_k!r}")


def draw_tokens(probs: torch.Tensor, generator) -> torch.Tensor:
    """One token per row ``[B, 1]``. ``generator``: None, one torch.Generator, or a list of G
    generators, one per consecutive group of B / G rows (per-prompt streams, clp_min.interop.distributed).
    Draws happen on the generators' device (a CPU generator serves a CUDA model)."""
    gens = generator if isinstance(generator, (list, tuple)) else [generator]
    groups = probs.split(probs.size(0) // len(gens))  # G x (B / G, V)
    a = [torch.multinomial(p if g is None or g.device == p.device else p.to(g.device), 1, generator=g)
         for p, g in zip(groups, gens)]
    return torch.cat(a).to(probs.device)


def _decode(step, prompt, max_new_tokens, temperature, top_k, generator, eos, calls_per_step):
    """Shared loop. ``step(idx) -> [B, V]`` log-probs of the next token (cache kept by ``step``)."""
    _check_decode_args(prompt, max_new_tokens, temperature, top_k)
    B = prompt.size(0)
    tokens, logprobs, masks = [], [], []
    done = torch.zeros(B, dtype=torch.bool, device=prompt.device)
    idx = prompt
    for _ in range(max_new_tokens):
        logp = step(idx) / temperature  # (B, V)
        if top_k is not None and top_k < logp.size(-1):
            kth = torch.topk(logp, top_k, dim=-1).values[:, -1:]  # (B, 1)
            logp = logp.masked_fill(logp < kth, float("-inf"))
        logp = F.log_softmax(logp, dim=-1)
        a = draw_tokens(logp.exp(), generator)  # (B, 1)
        lp = logp.gather(1, a).squeeze(1)  # (B,)
        if eos is not None:
            a = a.masked_fill(done[:, None], eos)
            lp = lp.masked_fill(done, 0.0)
        tokens.append(a.squeeze(1))
        logprobs.append(lp)
        masks.append(~done)
        if eos is not None:
            done = done | (a.squeeze(1) == eos)
            if bool(done.all()):
                break
        idx = a
    return Decoded(torch.stack(tokens, 1), torch.stack(logprobs, 1),
                   calls_per_step * len(tokens), torch.stack(masks, 1))


@torch.no_grad()
def sample(policy, w, prompt, max_new_tokens: int, temperature: float = 1.0, top_k=None,
           generator=None, eos=None) -> Decoded:
    """Sample from a conditioned policy at weighting ``w`` (``[m]`` or ``[B, m]``) with a KV cache.

    The policy is fixed at ``w`` once for the whole call (``at_weighting``): a
    ``ParamConditioned`` policy mixes its parameters once (per distinct weighting),
    not at every step; the tokens and log-probs are those of calling it at every step.
    """
    _check_decode_args(prompt, max_new_tokens, temperature, top_k)
    state = {"cache": None}
    with at_weighting(policy, w) as model:
        def step(idx):
            logits, state["cache"] = _pair(model(idx, cache=state["cache"]))
            return _log_probs(logits[:, -1])  # (B, V)

        return _decode(step, prompt, max_new_tokens, temperature, top_k, generator, eos, 1)


def _mixed_step(models, w_rows):
    """A step that mixes the next-token log-probs of ``models`` with ``w_rows`` ``[B, m]`` (logit_mix)."""
    caches = [None] * len(models)

    def step(idx):
        log_pis = []
        for i, model in enumerate(models):
            logits, caches[i] = _pair(model(idx, cache=caches[i]))
            log_pis.append(F.log_softmax(logits[:, -1].double(), dim=-1))
        log_pis = torch.stack(log_pis).cpu().numpy()  # (m, B, V)
        B = log_pis.shape[1]
        if w_rows.shape[0] == 1:
            mixed = logit_mix(log_pis, w_rows)[0]  # (B, V)
        else:  # one weighting per example: the diagonal of the [K=B, B, V] stack
            mixed = logit_mix(log_pis, w_rows)[np.arange(B), np.arange(B)]  # (B, V)
        return torch.from_numpy(mixed).to(idx.device)  # float64, as theory computed it

    return step


@torch.no_grad()
def logit_mix_sample(models, w, prompt, max_new_tokens: int, temperature: float = 1.0, top_k=None,
                     generator=None, eos=None) -> Decoded:
    """Zero-shot per-token logit mixing of m plain models, ``pi^mix_w ∝ prod_i pi_i^{w_i}``; m calls per step."""
    models = list(models)
    if not models:
        raise ValueError("models: no models given")
    check_same_vocab(models)
    w_rows = check_w(w, len(models)).detach().cpu().double().numpy().reshape(-1, len(models))  # (1 or B, m)
    if w_rows.shape[0] not in (1, prompt.size(0)):
        raise ValueError(f"w: {w_rows.shape[0]} weightings for a batch of {prompt.size(0)} prompts")
    step = _mixed_step(models, w_rows)
    return _decode(step, prompt, max_new_tokens, temperature, top_k, generator, eos, len(models))


@torch.no_grad()
def realign_sample(ref, tuned, lam, prompt, max_new_tokens: int, temperature: float = 1.0, top_k=None,
                   generator=None, eos=None) -> Decoded:
    """Decoding-time realignment (P4): per token ``∝ pi_ref^{1-lam} pi_tuned^{lam}``; 2 calls per step.

    If ``tuned`` is the Gibbs policy at ``beta`` this is exactly the Gibbs policy at
    ``beta / lam`` on a one-token response (tested against theory.gibbs). Any ``lam > 0``
    is accepted (``lam > 1`` extrapolates, as in the realignment literature).
    """
    check_same_vocab([ref, tuned], "tuned")
    lam_arr = check_lam(lam, "lam")
    if lam_arr.size != 1:
        raise ValueError(f"lam: expected one number, got {lam_arr.size}")
    lam = float(lam_arr[0])
    caches = [None, None]

    def step(idx):
        log_pis = []
        for i, model in enumerate((ref, tuned)):
            logits, caches[i] = _pair(model(idx, cache=caches[i]))
            log_pis.append(F.log_softmax(logits[:, -1].double(), dim=-1).cpu().numpy())
        mixed = kl_weight_mix(log_pis[0], log_pis[1], np.array([lam]))[0]  # (B, V)
        return torch.from_numpy(mixed).to(idx.device)  # float64, as theory computed it

    return _decode(step, prompt, max_new_tokens, temperature, top_k, generator, eos, 2)


def sequence_logprobs(policy, w, prompt, response) -> torch.Tensor:
    """Exact ``log pi(response_t | prompt, response_<t)`` ``[B, N]`` from one full pass (differentiable)."""
    if prompt.dim() != 2 or response.dim() != 2 or prompt.size(0) != response.size(0):
        raise ValueError(f"response: expected prompt [B, P] and response [B, N] with the same B, got "
                         f"{tuple(prompt.shape)} and {tuple(response.shape)}")
    P, N = prompt.size(1), response.size(1)
    idx = torch.cat([prompt, response], dim=1)  # (B, P+N)
    logits, _ = _pair(policy(w, idx[:, :-1]))  # (B, P+N-1, V): position t predicts token t+1
    logp = _log_probs(logits[:, P - 1:])  # (B, N, V)
    return logp.gather(2, response[:, :, None]).squeeze(2)  # (B, N)
