"""The oracle kit: exact checks of any policy under the project's convention, each with numbers and PASS/FAIL.

    exact_regret(policy, pi_ref, task, prompts, W, beta)   exact R, K, J_w and normalised regret against
                                                           pi*_w on an enumerable task (P1, P5, section 6)
    sampler_check(policy, w, prompt, N)                    the cached sampler's log-probs equal one full pass
    logit_scope_check(experts, W, idx)                     scope "logit" mixing equals logit mixing (P3)

``policy(w, idx, cache=None) -> (logits, cache)`` is any conditioned policy
(``ParamConditioned``, ``InputConditioned``, ``Unconditioned(model)``), a Hugging Face
model included once wrapped as ``clp_min.interop.hf.HFCausalLM``; ``pi_ref`` and the experts are
plain models ``model(idx, cache=None) -> (logits, cache)``. Each check returns a
``Check``: ``passed``, the ``value`` compared with ``tol``, and its ``numbers``; use
``check.assert_pass()`` in a test suite, ``print(check)`` for one line.

Shape letters: K weightings, m rewards, P prompts, B batch, T tokens, V vocabulary.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from clp_min.oracle import exact
from clp_min import task as tk
from clp_min.conditioning import ParamConditioned
from clp_min.mixing import check_w
from clp_min.decoding import _pair, sample, sequence_logprobs
from theory import pareto
from theory.checks import check_beta
from theory.mixing import logit_mix


@dataclass
class Check:
    name: str
    passed: bool
    value: float  # the number compared with tol
    tol: float
    numbers: dict = field(default_factory=dict)

    def __str__(self):
        return f"{'PASS' if self.passed else 'FAIL'} {self.name}: {self.value:.3g} (tol {self.tol:g})"

    def assert_pass(self) -> None:
        if not self.passed:
            raise AssertionError(str(self))


def _check_tol(tol) -> float:
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not np.isfinite(tol) or tol < 0:
        raise ValueError(f"tol: must be a finite number >= 0, got {tol!r}")
    return float(tol)


def _check_tokens(idx, V: int | None, field: str, low: int = 0, length: int | None = None) -> torch.Tensor:
    """A non-empty ``[B, N]`` tensor of integer token ids in ``[low, V - 1]`` (and ``N == length`` if given)."""
    if not isinstance(idx, torch.Tensor) or idx.dim() != 2:
        raise ValueError(f"{field}: expected a [B, N] tensor of token ids, got "
                         f"{tuple(idx.shape) if isinstance(idx, torch.Tensor) else type(idx).__name__}")
    if idx.is_floating_point() or idx.is_complex() or idx.dtype == torch.bool:
        raise ValueError(f"{field}: expected integer token ids, got {idx.dtype}")
    if idx.size(0) == 0 or idx.size(1) == 0:
        raise ValueError(f"{field}: empty batch of shape {tuple(idx.shape)}; give at least one row of tokens")
    if length is not None and idx.size(1) != length:
        raise ValueError(f"{field}: the task's prompts have length {length}, got {idx.size(1)} tokens per row")
    lo, hi = int(idx.min()), int(idx.max())
    if lo < low or (V is not None and hi > V - 1):
        raise ValueError(f"{field}: token ids must lie in [{low}, {'V - 1' if V is None else V - 1}], "
                         f"got {lo} .. {hi}")
    return idx


def _check_W(W, m: int, what: str, field: str = "W") -> np.ndarray:
    """Weightings ``[K, m]`` (one ``[m]`` is K = 1), K >= 1, each on the simplex (never renormalised)."""
    try:
        W = np.asarray(W, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{field}: expected weightings [K, m] of numbers") from None
    W = W[None] if W.ndim == 1 else W  # (K, m)
    if W.ndim != 2 or W.shape[0] == 0:
        raise ValueError(f"{field}: expected weightings [K, m] with K >= 1, got shape {W.shape}")
    if W.shape[1] != m:
        raise ValueError(f"{field}: has {W.shape[1]} entries per weighting, {what}")
    for w in W:
        check_w(torch.as_tensor(w), m, field)
    return W


def _logprobs(model_or_policy, w=None):
    """``idx [B, N] -> [B, N, V]`` float64 normalised next-token log-probs (no gradients)."""
    @torch.no_grad()
    def f(idx):
        out = model_or_policy(idx) if w is None else model_or_policy(w, idx)
        return F.log_softmax(_pair(out)[0].double(), dim=-1)
    return f


def exact_regret(policy, pi_ref, task: tk.TaskConfig, prompts: torch.Tensor, W, beta: float,
                 tol: float = 0.05, reward_fn=None) -> Check:
    """Exact ``R`` ``[K, m]``, ``K`` ``[K]``, ``J_w`` ``[K]`` of ``policy`` at each weighting of ``W`` ``[K, m]``,
    and its normalised regret ``(J_w(pi*_w) - J_w(pi)) / (J_w(pi*_w) - J_w(pi_ref))`` (THEORY.md section 6).

    Every response of ``task`` (``V^T`` leaves, token 0 ends a response) is enumerated for
    each prompt of ``prompts`` ``[P, L]`` (contexts uniform over them); ``pi*_w`` is the exact
    optimum of ``theory.tree`` (P5) relative to ``pi_ref``; rewards are the task's or
    ``reward_fn(prompts [B, L], responses [B, T]) -> [B, m]``. PASS when the largest
    normalised regret over ``W`` is at most ``tol`` (0.05: the project's target).
    """
    if not isinstance(task, tk.TaskConfig):
        raise ValueError(f"task: expected a clp_min.task.TaskConfig, got {type(task).__name__}")
    beta, tol = check_beta(beta), _check_tol(tol)
    # the task's prompts: L tokens each, content tokens 1 .. V-1 (clp_min.task.sample_prompts)
    prompts = _check_tokens(prompts, task.vocab, "prompts", low=1, length=task.prompt_len)
    m = task.m if reward_fn is None else _reward_count(reward_fn, task, prompts)
    W = _check_W(W, m, f"the task has m = {m} rewards")  # (K, m)
    if getattr(policy, "m", m) != m:
        raise ValueError(f"policy: conditioned on m = {policy.m} weights, the task has m = {m} rewards")
    ref = _logprobs(pi_ref)
    V = ref(prompts[:1]).size(-1)
    if V != task.vocab:
        raise ValueError(f"task: vocab {task.vocab} differs from the models' {V} logits per token")
    trees = exact.prompt_trees(ref, task, prompts, reward_fn)
    optimal = exact.optimal_stats(trees, W, beta)
    reference = exact.reference_stats(trees, W, beta)
    log_pi = exact.method_log_policies(lambda w, idx: _logprobs(policy, torch.as_tensor(w))(idx), task, prompts, W)
    stats = exact.policy_stats(trees, log_pi, W, beta)
    regret = pareto.normalised_regret(optimal["objective"], stats["objective"], reference["objective"])
    numbers = {"W": W, "rewards": stats["rewards"], "kl": stats["kl"], "objective": stats["objective"],
               "optimal_objective": optimal["objective"], "reference_objective": reference["objective"],
               "normalised_regret": regret}
    value = float(regret.max())
    return Check("exact normalised regret (max over W)", value <= tol, value, tol, numbers)


def _reward_count(reward_fn, task: tk.TaskConfig, prompts: torch.Tensor) -> int:
    """m of a caller's ``reward_fn``: the columns of its ``[B, m]`` answer for one response."""
    r = np.asarray(reward_fn(prompts[:1], tk.all_responses(task)[:1]), dtype=np.float64)
    if r.ndim != 2 or r.shape[0] != 1 or r.shape[1] < 1:
        raise ValueError(f"reward_fn: must return rewards [B, m] for B pairs, got shape {r.shape} for 1")
    return r.shape[1]


def _vocab(model, *w) -> int:
    """V of a model or policy: the width of its logits at one token."""
    with torch.no_grad():
        return _pair(model(*w, torch.zeros(1, 1, dtype=torch.long)))[0].size(-1)


def sampler_check(policy, w, prompt: torch.Tensor, max_new_tokens: int, generator=None, tol: float = 1e-5) -> Check:
    """The log-probs ``clp_min.decoding.sample`` reports (one cached call per token) against
    ``sequence_logprobs`` (one full pass without a cache), ``[B, N]``.

    A cache that is silently dropped or misplaced (a keyword swallowed by ``**kwargs``,
    wrong positions) makes them differ. PASS when the largest difference is at most
    ``tol`` (1e-5 allows float32 rounding; float64 models agree to ~1e-12).
    """
    tol = _check_tol(tol)
    if hasattr(policy, "m"):  # a conditioned policy: w must fit its m copies (Unconditioned ignores w)
        check_w(w, policy.m, "w")
    w_row = w if torch.as_tensor(w).dim() == 1 else torch.as_tensor(w)[:1]  # one row for the width probe
    prompt = _check_tokens(prompt, _vocab(policy, w_row), "prompt")
    out = sample(policy, w, prompt, max_new_tokens, generator=generator)
    with torch.no_grad():
        full = sequence_logprobs(policy, w, prompt, out.tokens)
    diff = (out.logprobs.double() - full.double()).abs()  # (B, N)
    value = float(diff.max())
    return Check("sampler log-probs = full pass", value <= tol, value, tol,
                 {"tokens": out.tokens, "sampled_logprobs": out.logprobs, "full_pass_logprobs": full,
                  "model_calls": out.model_calls})


def logit_scope_check(experts, W, idx: torch.Tensor, tol: float = 1e-5, **options) -> Check:
    """P3 for the last layer: ``ParamConditioned.from_experts(experts, "logit", **options)`` at ``w``
    against ``theory.mixing.logit_mix`` of the experts' log-probs, at every position of ``idx`` ``[B, T]``.

    The hidden state is shared, so mixing the unembedding mixes the logits: the two agree
    exactly when only ``lm_head`` differs between the experts (untied). A tied embedding
    mixed whole (``mix_tied=True``) changes the input too, and the check fails.
    PASS when the largest log-prob difference over ``W`` ``[K, m]`` is at most ``tol``.
    """
    experts = list(experts)
    if not experts:
        raise ValueError("experts: empty; give the m expert models that are mixed")
    tol = _check_tol(tol)
    W = _check_W(W, len(experts), f"there are {len(experts)} experts")  # (K, m)
    idx = _check_tokens(idx, _vocab(experts[0]), "idx")
    pc = ParamConditioned.from_experts(experts, "logit", **options)
    log_pis = np.stack([_logprobs(e)(idx).numpy() for e in experts])  # (m, B, T, V)
    expected = logit_mix(log_pis, W)  # (K, B, T, V)
    got = np.stack([_logprobs(pc, torch.as_tensor(w))(idx).numpy() for w in W])  # (K, B, T, V)
    diff = np.abs(got - expected).max(axis=(1, 2, 3))  # (K,)
    value = float(diff.max())
    return Check("scope 'logit' = logit mixing (P3)", value <= tol, value, tol, {"W": W, "max_abs_diff": diff})
