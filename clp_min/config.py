"""The configuration of ``clp train``: one dataclass, each field with its one-line help (cleanrl).

``TrainConfig`` holds the task, the model, the conditioning mechanism, the training distribution of
``w`` and the optimisation; ``validate`` refuses a bad field with one line naming it. The comment
after each field is its help text (``field_help``, read by the command line), so the two never
disagree. ``learning_rate`` is a pure function of the step, so a resumed run needs no scheduler state.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from clp_min import weightings
from clp_min.interop import distributed
from clp_min.mechanisms import FROZEN_BASE
from clp_min.mechanisms.svd_lora import parse_layers
from clp_min.oracle import exact_pg
from clp_min.task import TaskConfig
from theory.checks import check_beta, check_weights

PRETRAIN_SEED_OFFSET = 10_000
# parameter mixing over a scope of clp_min.scope.SCOPES, input conditioning, both, or a
# mechanism on a frozen base (clp_min.mechanisms.FROZEN_BASE)
CONDITIONINGS = ("none", "full", "attn", "logit", "input", "input+full", "input+attn", "input+logit", *FROZEN_BASE)
STEERS = ("rewards", "kl")
LR_SCHEDULES = ("constant", "cosine")
ESTIMATORS = ("rloo", "exact")
RESUMABLE = ("out", "resume", "steps", "log_every", "ckpt_every", "device")  # may differ when resuming


def learning_rate(cfg: "TrainConfig", step: int) -> float:
    """The learning rate of step ``step`` (0-based); a pure function of the step, so resume needs no state."""
    if cfg.lr_schedule == "cosine":
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * step / cfg.steps))
    return cfg.lr


@dataclass
class TrainConfig:
    out: str = "runs/train"  # output directory: pi_ref, checkpoints, log.json
    seed: int = 0  # seeds initialisation, prompts/samples (torch.Generator) and weightings (numpy)
    # task (clp_min.task.TaskConfig)
    vocab: int = 10  # V: EOS plus V-1 content tokens (at most 65536)
    prompt_len: int = 6  # L: prompt tokens (at most 512)
    response_len: int = 5  # T: maximum response tokens (at most 512)
    p_keep: float = 0.5  # reference process: keep probability of each prompt token
    p_noise: float = 0.1  # reference process: replacement probability of a kept token
    rewards: tuple = ("coverage", "brevity")  # reward names (coverage, brevity, order, knob), in order
    strength: float = 1.0  # s of the "knob" reward (clp_min.task): 0 aligned below the root .. 1 = brevity
    # model (pi_ref and the policy share it)
    n_layer: int = 1  # transformer blocks
    n_head: int = 2  # attention heads
    n_embd: int = 32  # residual width
    ref: str = ""  # pi_ref checkpoint to start from; empty: pretrain one into OUT/ref.safetensors
    pretrain_steps: int = 600  # supervised steps for pi_ref
    pretrain_batch: int = 64  # sequences per pretraining step
    pretrain_lr: float = 3e-3  # AdamW learning rate for pretraining
    # method
    conditioning: str = "attn"  # none (single objective) | full | attn | logit | input | input+<scope> | svd_lora | soft_tokens | prompt_tokens
    lora_rank: int = 4  # svd_lora: r learned singular values per adapted layer (m more are s * w)
    lora_layers: str = "attn"  # svd_lora: adapted layers, '+'-joined groups of attn, mlp, logit
    soft_tokens: int = 4  # soft_tokens: n learned prompt rows per reward, mixed by w and prepended
    prompt_grid: int = 4  # prompt_tokens: G, each w_i written as the nearest of 0, 1/G, .., 1
    steer: str = "rewards"  # rewards: w weights the m rewards; kl: w = (w_0, w_1..w_m) over the KL term and the rewards, objective sum_i w_i R_i - beta K (one reward: w = (1-lam, lam))
    weights: str = "dirichlet"  # training distribution of w: dirichlet | uniform | vertices | fixed | adaptive (more weight where Var of the soft advantage, an oracle-free regret estimate, is largest; clp_min.weightings)
    alpha: float = 1.0  # Dirichlet concentration
    p_vertex: float = 0.25  # for weights=vertices: probability of drawing a vertex e_i
    fixed_w: tuple = ()  # for weights=fixed: the one weighting, comma-separated, e.g. 1.0,0.0
    beta: float = 0.1  # KL weight, in [1e-8, 1e12]
    # optimisation
    steps: int = 300  # total RL steps
    prompts_per_step: int = 16  # P: prompts (and weightings) per step
    samples_per_prompt: int = 4  # n: responses per prompt (leave-one-out baseline needs n >= 2)
    estimator: str = "rloo"  # rloo (sampled, clp_min.rl) | exact (every response, clp_min.oracle.exact_pg; V^T <= 4096)
    lr: float = 3e-3  # Adam learning rate
    lr_schedule: str = "constant"  # constant | cosine (lr * (1 + cos(pi step / steps)) / 2, a function of the step)
    log_every: int = 25  # steps between entries of log.json
    ckpt_every: int = 100  # steps between checkpoints (one is always written at the end)
    device: str = "auto"  # auto (cuda when available) | cpu | cuda
    streams: str = "shared"  # shared: one stream for the run | prompt: one per (seed, step, prompt), for --nproc > 1
    resume: bool = False  # continue from OUT's checkpoint with the same random streams; other fields come from the run, changed ones are refused (steps, log_every, ckpt_every, device may change)

    def task(self) -> TaskConfig:
        return TaskConfig(vocab=self.vocab, prompt_len=self.prompt_len, response_len=self.response_len,
                          p_keep=self.p_keep, p_noise=self.p_noise, rewards=tuple(self.rewards),
                          strength=self.strength)

    @property
    def m(self) -> int:
        """Number of policy copies / entries of w: m rewards, or m + 1 when steering the KL weight too."""
        return len(self.rewards) + 1 if self.steer == "kl" else len(self.rewards)

    def validate(self) -> "TrainConfig":
        """Refuse a bad configuration with a ValueError naming the field; returns self."""
        task = self.task()  # checks the task fields
        if not isinstance(self.out, str) or not self.out.strip():
            raise ValueError(f"out: empty folder name, got {self.out!r}")
        ints = ("seed", "n_layer", "n_head", "n_embd", "pretrain_steps", "pretrain_batch", "steps",
                "prompts_per_step", "samples_per_prompt", "log_every", "ckpt_every", "lora_rank",
                "soft_tokens", "prompt_grid")
        for name in ints:
            value = getattr(self, name)
            low = 0 if name in ("seed", "lora_rank") else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}: must be an integer >= {low}, got {value!r}")
        if self.samples_per_prompt < 2:
            raise ValueError(f"samples_per_prompt: the leave-one-out baseline needs >= 2, "
                             f"got {self.samples_per_prompt}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_head: {self.n_head} does not divide n_embd = {self.n_embd}")
        for name in ("pretrain_lr", "lr", "alpha"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0:
                raise ValueError(f"{name}: must be finite and > 0, got {value!r}")
        if not isinstance(self.p_vertex, (int, float)) or not 0 <= self.p_vertex <= 1:
            raise ValueError(f"p_vertex: must lie in [0, 1], got {self.p_vertex!r}")
        check_beta(self.beta, "beta")
        if self.conditioning not in CONDITIONINGS:
            raise ValueError(f"conditioning: unknown {self.conditioning!r}; choose from {CONDITIONINGS}")
        parse_layers(self.lora_layers)
        if self.device not in distributed.DEVICES:
            raise ValueError(f"device: unknown {self.device!r}; choose from {distributed.DEVICES}")
        if self.streams not in distributed.STREAMS:
            raise ValueError(f"streams: unknown {self.streams!r}; choose from {distributed.STREAMS}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule: unknown {self.lr_schedule!r}; choose from {LR_SCHEDULES}")
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator: unknown {self.estimator!r}; choose from {ESTIMATORS}")
        if self.estimator == "exact":
            exact_pg.check_enumerable(task)
        if self.steer not in STEERS:
            raise ValueError(f"steer: unknown {self.steer!r}; choose from {STEERS}")
        if self.weights not in weightings.WEIGHTINGS:
            raise ValueError(f"weights: unknown {self.weights!r}; choose from {weightings.WEIGHTINGS}")
        if self.weights == "adaptive" and self.streams != "shared":
            raise ValueError("weights: adaptive keeps one sampler state for the run; it needs streams=shared "
                             "(one process)")
        if self.weights == "fixed":
            check_weights(self.fixed_w, self.m, "fixed_w")
        elif len(self.fixed_w):
            raise ValueError(f"fixed_w: only used with weights=fixed, got weights={self.weights!r}")
        if self.conditioning == "none" and self.weights != "fixed":
            raise ValueError("conditioning: 'none' (single objective) needs weights=fixed and fixed_w")
        return self

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        for key in d:
            if key not in known:
                raise ValueError(f"{key}: not a training setting")
        d = {k: (tuple(v) if k in ("rewards", "fixed_w") else v) for k, v in d.items()}
        return cls(**d)


def field_help() -> dict:
    """``{field: its one-line help}``, read from the comments of ``TrainConfig`` (one source of truth)."""
    import inspect
    import re

    pattern = re.compile(r"^\s+(\w+): [^=]+=.*?#\s*(.+)$")
    return {m.group(1): m.group(2) for m in map(pattern.match, inspect.getsource(TrainConfig).splitlines()) if m}
