"""A synthetic summarisation-like task with conflicting rewards, computed by code (no downloads).

Tokens: ``EOS = 0`` ends a response; ``1 .. V-1`` are content tokens.

- Prompt ``x``: ``L`` content tokens drawn uniformly and independently.
- Reference response (the data ``pi_ref`` is pretrained on, see ``reference_responses``):
  a noisy ordered subset of the prompt. Each prompt token is kept with
  probability ``p_keep``; a kept token is replaced by a uniform content token
  with probability ``p_noise`` (a "hallucination"); the kept tokens stay in the
  prompt's order, are cut at ``T`` tokens, and are followed by ``EOS`` when
  shorter than ``T``.
- Response ``y``: at most ``T`` tokens; everything from the first ``EOS`` on is
  ignored. ``y'`` is the part before the first ``EOS`` and ``n = |y'|``.

Rewards (each in [0, 1], higher is better), chosen to pull apart:

- ``coverage``  = |distinct(y') ∩ distinct(x)| / |distinct(x)|: share of the
  prompt's distinct tokens that the response mentions (wants long responses).
- ``brevity``   = 1 - n / T: shorter is better (the empty response scores 1).
- ``order``     = LCS(y', x) / T: the longest part of the response that follows
  the prompt's order (longest common subsequence), over the maximum length.
  Faithfulness of order: it rewards copying the prompt in order, repeated tokens
  included, so it conflicts with brevity and only partly agrees with coverage
  (which ignores order and repetition).
- ``knob``      = (1 - s) * (coverage + 2 [y' empty]) + s * brevity, with ``s = strength``
  in [0, 1]: the misalignment knob, paired with ``coverage``. Then
  ``coverage - knob = s (coverage - brevity) - 2 (1 - s) [y' empty]``; the second
  term depends on the first response token only (the response is empty iff
  ``y_1 = EOS``), so at ``s = 0`` the two rewards differ by a function of the
  first token (THEORY.md P6: zero-shot mixing is exact), yet the front is not a
  point: the empty response scores 2 on ``knob`` and 0 on ``coverage``, any other
  at most 1 on both (the bonus 2 > 1 makes the trade-off real). Below
  every depth-1 prefix ``eps(s) = s * eps(s)|_{s=1}``: misalignment grows linearly
  with ``s`` up to the coverage-vs-brevity task at ``s = 1``.

Held-out prompts (``is_heldout``): a fixed hash of the prompt's tokens puts
about one prompt in ``HELDOUT_EVERY`` in the evaluation split, for any V and L;
training draws only from the rest (``sample_prompts(..., split="train")``).

Shape letters: B batch, L prompt length, T response length, V vocabulary, m rewards.
Randomness is an argument (``torch.Generator``).
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch

EOS = 0
REWARDS = ("coverage", "brevity", "order", "knob")
MAX_VOCAB = 2 ** 16  # bounded work (README, "Limits"): checked before any allocation
MAX_LEN = 512  # prompt_len and response_len each (pi_ref's block is their sum)
HELDOUT_EVERY = 8  # about 1/8 of all prompts are held out for evaluation
SPLITS = ("any", "train", "heldout")


@dataclass(frozen=True)
class TaskConfig:
    vocab: int = 10  # V: token 0 is end-of-sequence, 1..V-1 are content tokens
    prompt_len: int = 6  # L: prompt tokens
    response_len: int = 5  # T: maximum response tokens (EOS included when shorter)
    p_keep: float = 0.5  # reference process: probability of keeping each prompt token
    p_noise: float = 0.1  # reference process: probability a kept token is replaced by a random one
    rewards: tuple = ("coverage", "brevity")  # names from REWARDS, in order; m = len(rewards)
    strength: float = 1.0  # s of the "knob" reward: 0 = aligned below the root, 1 = brevity

    def __post_init__(self):
        for name in ("vocab", "prompt_len", "response_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: must be a positive integer, got {value!r}")
        for name, limit in (("vocab", MAX_VOCAB), ("prompt_len", MAX_LEN), ("response_len", MAX_LEN)):
            if getattr(self, name) > limit:
                raise ValueError(f"{name}: {getattr(self, name)} exceeds the limit of {limit}")
        if self.vocab < 2:
            raise ValueError(f"vocab: need EOS and at least one content token, got {self.vocab}")
        for name in ("p_keep", "p_noise", "strength"):
            p = getattr(self, name)
            if not isinstance(p, (int, float)) or not 0 <= p <= 1:
                raise ValueError(f"{name}: must be a probability in [0, 1], got {p!r}")
        if isinstance(self.rewards, str) or len(self.rewards) == 0:
            raise ValueError(f"rewards: a non-empty list of names from {REWARDS}, got {self.rewards!r}")
        for name in self.rewards:
            if name not in REWARDS:
                raise ValueError(f"rewards: unknown reward {name!r}; choose from {REWARDS}")
        if len(set(self.rewards)) != len(self.rewards):
            raise ValueError(f"rewards: repeated name in {self.rewards!r}")
        object.__setattr__(self, "rewards", tuple(self.rewards))

    @property
    def m(self) -> int:
        return len(self.rewards)

    @classmethod
    def from_dict(cls, d: dict) -> "TaskConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"{sorted(unknown)[0]}: not a task setting")
        return cls(**{k: (tuple(v) if k == "rewards" else v) for k, v in d.items()})


def is_heldout(prompts: torch.Tensor) -> torch.Tensor:
    """``[B]`` bool: the prompt is in the evaluation split (fixed hash of its tokens, module doc).

    Hash: polynomial in the tokens with multiplier 1_000_003, reduced mod 2^31, then
    Knuth's multiplicative mix; held out iff the result is 0 mod ``HELDOUT_EVERY``.
    """
    h = torch.zeros(prompts.size(0), dtype=torch.int64)
    for t in range(prompts.size(1)):
        h = (h * 1_000_003 + prompts[:, t].to(torch.int64) + 1) % 2 ** 31
    h = (h * 2_654_435_761) % 2 ** 32
    return (h >> 7) % HELDOUT_EVERY == 0


def sample_prompts(cfg: TaskConfig, B: int, generator: torch.Generator, split: str = "any") -> torch.Tensor:
    """``B`` prompts ``[B, L]`` of uniform content tokens; ``split`` keeps only train or held-out ones.

    A split is drawn by rejection (redrawing the rejected rows), so it is uniform over its prompts.
    """
    if split not in SPLITS:
        raise ValueError(f"split: unknown {split!r}; choose from {SPLITS}")
    x = torch.randint(1, cfg.vocab, (B, cfg.prompt_len), generator=generator)
    if split == "any":
        return x
    bad = is_heldout(x) != (split == "heldout")
    while bad.any():
        x[bad] = torch.randint(1, cfg.vocab, (int(bad.sum()), cfg.prompt_len), generator=generator)
        bad = is_heldout(x) != (split == "heldout")
    return x


def all_prompts(cfg: TaskConfig) -> torch.Tensor:
    """Every prompt ``[(V-1)^L, L]`` in lexicographic order (small tasks only)."""
    C, L = cfg.vocab - 1, cfg.prompt_len
    index = torch.arange(C ** L)
    return torch.stack([(index // C ** (L - 1 - t)) % C + 1 for t in range(L)], dim=1)


def reference_responses(cfg: TaskConfig, prompts: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Draw one reference response ``[B, T]`` per prompt (the noisy ordered subset of the module doc)."""
    B, L = prompts.shape
    keep = torch.rand(B, L, generator=generator) < cfg.p_keep  # (B, L)
    noise = torch.rand(B, L, generator=generator) < cfg.p_noise
    random_tokens = torch.randint(1, cfg.vocab, (B, L), generator=generator)
    tokens = torch.where(noise, random_tokens, prompts)
    # kept tokens to the front, prompt order preserved (stable sort on "not kept")
    order = torch.sort((~keep).to(torch.int64), dim=1, stable=True).indices  # (B, L)
    tokens = torch.where(torch.gather(keep, 1, order), torch.gather(tokens, 1, order), EOS)
    T = cfg.response_len
    if L < T:
        tokens = torch.cat([tokens, torch.full((B, T - L), EOS, dtype=tokens.dtype)], dim=1)
    return tokens[:, :T]


def content_mask(responses: torch.Tensor) -> torch.Tensor:
    """``[B, T]`` bool: True before the first EOS (the tokens y' that count)."""
    return torch.cumprod((responses != EOS).to(torch.int64), dim=1).bool()


def decision_mask(responses: torch.Tensor) -> torch.Tensor:
    """``[B, T]`` bool: the tokens a policy chooses, up to and including the first EOS.

    After the first EOS decoding is forced (EOS with probability 1), so those
    positions carry no log-probability.
    """
    eos = (responses == EOS).to(torch.int64)
    return (torch.cumsum(eos, dim=1) - eos) == 0


def _token_sets(tokens: torch.Tensor, mask: torch.Tensor, V: int) -> torch.Tensor:
    """``[B, V]`` bool: which tokens occur where ``mask`` is True (EOS column cleared)."""
    onehot = torch.nn.functional.one_hot(tokens, V).bool() & mask[..., None]  # (B, T, V)
    present = onehot.any(dim=1)
    present[:, EOS] = False
    return present


def _coverage(prompts: torch.Tensor, responses: torch.Tensor, alive: torch.Tensor, V: int) -> torch.Tensor:
    """``[B]``: share of the prompt's distinct tokens that the response's live tokens mention."""
    in_prompt = _token_sets(prompts, torch.ones_like(prompts, dtype=torch.bool), V)  # (B, V)
    in_response = _token_sets(responses, alive, V)
    return (in_prompt & in_response).sum(1) / in_prompt.sum(1).to(torch.float64)


def longest_common_subsequence(a: torch.Tensor, a_mask: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """LCS length of ``a[i][a_mask[i]]`` and ``b[i]`` for each row, ``[B]`` (dynamic programme over T x L)."""
    B, T = a.shape
    L = b.shape[1]
    prev = torch.zeros(B, L + 1, dtype=torch.int64)  # LCS(a[:i], b[:j]) for the previous i
    for i in range(T):
        cur = torch.zeros_like(prev)
        match = (a[:, i, None] == b) & a_mask[:, i, None]  # (B, L)
        for j in range(L):
            cur[:, j + 1] = torch.where(match[:, j], prev[:, j] + 1, torch.maximum(prev[:, j + 1], cur[:, j]))
        prev = cur
    return prev[:, L]


def rewards(cfg: TaskConfig, prompts: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
    """The rewards of ``cfg.rewards`` (module doc), ``[B, m]`` float64.

    Args: ``prompts`` ``[B, L]``, ``responses`` ``[B, T]`` (tokens after the first EOS are ignored).
    """
    V, T = cfg.vocab, cfg.response_len
    alive = content_mask(responses)  # (B, T)
    n = alive.sum(dim=1).to(torch.float64)
    columns = []
    for name in cfg.rewards:
        if name == "coverage":
            columns.append(_coverage(prompts, responses, alive, V))
        elif name == "brevity":
            columns.append(1.0 - n / T)
        elif name == "knob":
            s, cov = cfg.strength, _coverage(prompts, responses, alive, V)
            columns.append((1 - s) * (cov + 2.0 * (n == 0).to(torch.float64)) + s * (1.0 - n / T))
        else:  # order
            columns.append(longest_common_subsequence(responses, alive, prompts).to(torch.float64) / T)
    return torch.stack(columns, dim=1)


def all_responses(cfg: TaskConfig) -> torch.Tensor:
    """Every token sequence of length T, lexicographic (base-V order), ``[V^T, T]``.

    This is the leaf order of ``theory.instances.Tree``.
    """
    V, T = cfg.vocab, cfg.response_len
    index = torch.arange(V ** T)
    digits = [(index // V ** (T - 1 - t)) % V for t in range(T)]
    return torch.stack(digits, dim=1)


def reward_vectors(cfg: TaskConfig, prompts: torch.Tensor, responses: torch.Tensor,
                   steer_kl: bool) -> torch.Tensor:
    """The task's rewards ``[B, m]``; for KL steering ``r`` becomes ``(0, r_1 .. r_m)`` ``[B, m + 1]``: the
    weighting ``(w_0, w_1 .. w_m)`` then scores ``sum_i w_i R_i - beta K``, whose optimum is the Gibbs policy of
    ``(w_1 .. w_m) / (1 - w_0)`` at KL weight ``beta / (1 - w_0)`` (THEORY.md P4, N2; one reward: ``(1-lam, lam)``)."""
    r = rewards(cfg, prompts, responses)
    return torch.cat([r.new_zeros(r.size(0), 1), r], dim=1) if steer_kl else r


def draw_prompts(cfg: TaskConfig, P: int, generator) -> torch.Tensor:
    """``[P, L]`` training prompts (never held out, ``task.is_heldout``) from one torch.Generator, or one
    prompt from each of P generators."""
    if isinstance(generator, (list, tuple)):
        return torch.cat([sample_prompts(cfg, 1, g, split="train") for g in generator])
    return sample_prompts(cfg, P, generator, split="train")
