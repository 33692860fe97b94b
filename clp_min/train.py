"""``clp train``: multi-task RL training of a conditioned policy (or single-objective finetuning).

Order (cleanrl): configuration, setup (seeds, pi_ref), policy, loop, logging.

Files under ``out``::

    ref.safetensors          pi_ref (pretrained here unless ``ref`` names one)
    policy.safetensors       the policy; its config holds the train config, the step, the numpy rng
                             state and pi_ref's provenance: ``ref`` (relative to the run folder when
                             inside it, so a moved folder stays self-contained) and ``ref_sha256``
    train_state.safetensors  optimizer state and the torch.Generator state at the same step
    train_state.prev.safetensors  the previous one, kept while a checkpoint is being written
    log.json                 {"config", "history": [{"step", "loss", "objective", "kl", "rewards"}, ...]}

Resume (``resume=True``) reloads the three at the last checkpoint and continues
with the same random streams, so N + N steps equal 2N steps bit for bit on CPU.
Provenance: a resumed run refuses any configuration field that differs from the
saved one except ``RESUMABLE`` (naming the field); ``resume_config`` fills the
fields a caller did not give from the saved run. A given ``ref`` must have the
architecture of the flags; pi_ref's sha256 is recorded and checked at every load.
Identical runs write byte-identical checkpoint files (clp_min.checkpoint).
Random streams: ``torch.manual_seed(seed)`` for parameter initialisation, one
``torch.Generator`` (seed) for prompts and samples, one ``numpy`` Generator (seed)
for weightings; pretraining uses its own generator (seed + PRETRAIN_SEED_OFFSET).
With ``streams=prompt`` each prompt of each step has its own streams instead, derived
from (seed, step, global prompt index) (clp_min.distributed).

Data-parallel: under ``torchrun`` (``clp train --nproc N``) each of the W processes
takes P / W of the step's prompts and ``DistributedDataParallel`` averages the
gradients (clp_min.distributed); rank 0 alone pretrains pi_ref and writes files.
The checkpoint records W, and ``resume`` refuses a different one.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from tqdm import tqdm

from clp_min import distributed, exact_pg, rl
from clp_min.checkpoint import canonical_safetensors, load_checkpoint, save_checkpoint, write_atomic
from clp_min.conditioning import SCOPES, ParamConditioned, Unconditioned
from clp_min.input_cond import InputConditioned
from clp_min.model import GPT
from clp_min.pretrain import model_config, pretrain
from clp_min.prompt_tokens import PromptTokens
from clp_min.soft_tokens import SoftTokens
from clp_min.svd_lora import SVDLoRA, parse_layers
from clp_min.task import TaskConfig
from theory.checks import check_beta, check_weights

PRETRAIN_SEED_OFFSET = 10_000
CONDITIONINGS = ("none", "full", "attn", "logit", "input", "input+full", "input+attn", "input+logit",
                 "svd_lora", "soft_tokens", "prompt_tokens")  # the last three: frozen base (issue 14)
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
    steer: str = "rewards"  # rewards: w weights the m rewards; kl: one reward, w = (1-lam, lam), objective lam R - beta K
    weights: str = "dirichlet"  # training distribution of w: dirichlet | uniform | vertices | fixed
    alpha: float = 1.0  # Dirichlet concentration
    p_vertex: float = 0.25  # for weights=vertices: probability of drawing a vertex e_i
    fixed_w: tuple = ()  # for weights=fixed: the one weighting, e.g. (1.0, 0.0)
    beta: float = 0.1  # KL weight, in [1e-8, 1e12]
    # optimisation
    steps: int = 300  # total RL steps
    prompts_per_step: int = 16  # P: prompts (and weightings) per step
    samples_per_prompt: int = 4  # n: responses per prompt (leave-one-out baseline needs n >= 2)
    estimator: str = "rloo"  # rloo (sampled, clp_min.rl) | exact (every response, clp_min.exact_pg; V^T <= 4096)
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
        """Number of policy copies / entries of w: m rewards, or 2 when steering the KL weight."""
        return 2 if self.steer == "kl" else len(self.rewards)

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
        if self.steer == "kl" and task.m != 1:
            raise ValueError(f"rewards: steer=kl steers the KL weight of one reward, got {task.m} rewards")
        if self.weights not in rl.WEIGHTINGS:
            raise ValueError(f"weights: unknown {self.weights!r}; choose from {rl.WEIGHTINGS}")
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


def build_policy(cfg: TrainConfig, pi_ref: GPT) -> torch.nn.Module:
    """The trainable conditioned policy, starting at pi_ref (all copies equal to it); svd_lora,
    soft_tokens and prompt_tokens train only their own parameters on a frozen copy of pi_ref."""
    model = copy.deepcopy(pi_ref)
    # the mechanisms of issue 14 keep their base frozen: only their own parameters train
    if cfg.conditioning == "svd_lora":
        return SVDLoRA(model, cfg.m, cfg.lora_rank, cfg.lora_layers)
    if cfg.conditioning == "soft_tokens":
        return SoftTokens(model, cfg.m, cfg.soft_tokens)
    if cfg.conditioning == "prompt_tokens":
        return PromptTokens(model, cfg.m, cfg.prompt_grid)
    if cfg.conditioning == "none":
        policy = Unconditioned(model)
    else:
        inner = model
        if cfg.conditioning.startswith("input"):
            # "add": e(w) added to the token embeddings keeps the pretrained positions
            # (a prefix row would shift them, so the initial policy would not be pi_ref)
            inner = InputConditioned(model, cfg.m, "add")
        scope = cfg.conditioning.split("+")[-1]
        policy = ParamConditioned.from_base(inner, cfg.m, scope) if scope in SCOPES else inner
    for p in policy.parameters():
        p.requires_grad_(True)
    return policy


def save_train_state(path: Path, optimizer, generator: torch.Generator, step: int) -> None:
    """Optimizer state and torch.Generator state as safetensors (no code runs on load)."""
    state = optimizer.state_dict()
    tensors = {"generator": generator.get_state()}
    for i, s in state["state"].items():
        for key, t in s.items():
            tensors[f"state.{i}.{key}"] = torch.as_tensor(t).contiguous().cpu()
    meta = {"step": str(step), "param_groups": json.dumps(state["param_groups"])}
    write_atomic(path, canonical_safetensors(st_save(tensors, metadata=meta)))


def _read_train_state(path: Path) -> tuple:
    """``(step, tensors, metadata)`` of a train state file."""
    try:
        data = path.read_bytes()
        tensors = st_load(data)
        n = int.from_bytes(data[:8], "little")
        meta = json.loads(data[8:8 + n])["__metadata__"]
        return int(meta["step"]), tensors, meta
    except (OSError, SafetensorError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"resume: cannot read {path} ({err})") from None


def load_train_state(out: Path, optimizer, generator: torch.Generator, step: int) -> int:
    """Restore the train state of ``step`` (``train_state`` or, after an interrupted write, ``.prev``)."""
    paths = [out / "train_state.safetensors", out / "train_state.prev.safetensors"]
    found = [p for p in paths if p.exists()]
    if not found:
        raise ValueError(f"resume: {paths[0]} is missing")
    states = [_read_train_state(p) for p in found]
    matching = [s for s in states if s[0] == step]
    if not matching:
        raise ValueError(f"resume: policy is at step {step} but train_state at {states[0][0]}")
    _, tensors, meta = matching[0]
    state = {}
    for name, t in tensors.items():
        if name.startswith("state."):
            _, i, key = name.split(".", 2)
            state.setdefault(int(i), {})[key] = t
    try:
        optimizer.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
    except (ValueError, KeyError, RuntimeError) as err:
        raise ValueError(f"resume: the saved optimizer state does not fit this policy ({err})") from None
    generator.set_state(tensors["generator"])
    return step


def file_sha256(path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError as err:
        raise ValueError(f"ref: cannot read {path}: {err.strerror}") from None
    return h.hexdigest()


def load_reference(path, sha256: str | None = None) -> GPT:
    """A frozen pi_ref from a checkpoint; with ``sha256``, refuses a file other than the recorded one."""
    if sha256 is not None and file_sha256(path) != sha256:
        raise ValueError(f"ref: {path} is not the pi_ref this run was trained with (sha256 differs)")
    model, _ = load_checkpoint(path)
    if not isinstance(model, GPT):
        raise ValueError(f"ref: {path} holds a {type(model).__name__}, expected a plain GPT")
    return frozen(model)


def check_reference_architecture(pi_ref: GPT, cfg: "TrainConfig", path) -> None:
    """Refuse a pi_ref whose architecture disagrees with the config, naming the first field that differs."""
    task = cfg.task()
    want = {"vocab": task.vocab, "n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_embd": cfg.n_embd}
    have = {"vocab": pi_ref.config.vocab_size, "n_layer": pi_ref.config.n_layer,
            "n_head": pi_ref.config.n_head, "n_embd": pi_ref.config.n_embd}
    for name in want:
        if want[name] != have[name]:
            raise ValueError(f"{name}: the config asks for {want[name]} but ref {path} has {have[name]}")
    if pi_ref.config.block_size < task.prompt_len + task.response_len:
        raise ValueError(f"prompt_len: ref {path} holds {pi_ref.config.block_size} positions, fewer than "
                         f"prompt_len + response_len = {task.prompt_len + task.response_len}")


def _ref_location(ref_path: Path, out: Path) -> str:
    """pi_ref's path as recorded: relative to the run folder when inside it, else absolute."""
    try:
        return str(ref_path.resolve().relative_to(out.resolve()))
    except ValueError:
        return str(ref_path.resolve())


def _resolve_ref(meta: dict, out: Path) -> Path:
    ref = Path(meta["ref"])
    return ref if ref.is_absolute() else out / ref


def saved_config(out) -> dict:
    """The train config saved in ``out/policy.safetensors`` (a dict)."""
    path = Path(out) / "policy.safetensors"
    if not path.exists():
        raise ValueError(f"resume: {path} is missing (nothing to resume)")
    _, meta = load_checkpoint(path)
    if not isinstance(meta, dict) or "train" not in meta:
        raise ValueError(f"resume: {path} is not a policy written by clp train")
    return meta["train"]


def resume_config(out, given: dict) -> "TrainConfig":
    """The saved config of the run in ``out`` with the fields in ``given`` put over it (resume=True)."""
    return TrainConfig.from_dict({**saved_config(out), **given, "out": str(out), "resume": True})


def frozen(model: torch.nn.Module) -> torch.nn.Module:
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def load_trained(out) -> tuple:
    """``(policy, pi_ref, cfg)`` of a finished or interrupted run in ``out``.

    pi_ref is found relative to ``out`` (runs written before provenance was recorded:
    its old path) and must match the recorded sha256, so a moved folder is self-contained.
    """
    out = Path(out)
    policy, meta = load_checkpoint(out / "policy.safetensors")
    if not isinstance(meta, dict) or "train" not in meta or "ref" not in meta:
        raise ValueError(f"run_dir: {out / 'policy.safetensors'} is not a policy written by clp train")
    cfg = TrainConfig.from_dict(meta["train"])
    return frozen(policy), load_reference(_resolve_ref(meta, out), meta.get("ref_sha256")), cfg


def _write_log(out: Path, cfg: TrainConfig, history: list) -> None:
    write_atomic(out / "log.json", json.dumps({"config": asdict(cfg), "history": history}, indent=1).encode())


def _check_unchanged(saved: dict, cfg: TrainConfig) -> None:
    """Refuse a resumed config that differs from the saved one outside ``RESUMABLE``, naming the field."""
    now = asdict(cfg)
    old = asdict(TrainConfig.from_dict(saved))
    for name in now:
        if name not in RESUMABLE and now[name] != old[name]:
            raise ValueError(f"{name}: the run in {cfg.out} was trained with {old[name]!r}; resuming with "
                             f"{now[name]!r} would change it (start a new run, or leave {name} as it was)")


def step_streams(cfg: TrainConfig, step: int, local: range, rng: np.random.Generator,
                 generator: torch.Generator) -> tuple:
    """``(w [P_local, m], generator(s))`` of one step: the run's shared streams, or per-prompt ones."""
    def draw(r, P):
        return rl.draw_weightings(r, P, cfg.m, cfg.weights, cfg.alpha, cfg.p_vertex, cfg.fixed_w)

    if cfg.streams == "shared":
        return draw(rng, cfg.prompts_per_step), generator
    rngs, gens = distributed.prompt_streams(cfg.seed, step, local)
    return np.concatenate([draw(r, 1) for r in rngs]), gens  # (P_local, m)


def train(cfg: TrainConfig, progress: bool | None = None, stop_at: int | None = None) -> dict:
    """Run (or resume) training as configured; returns the log ``{"config", "history"}``.

    Under torchrun (module doc) every rank calls this; the process group is made here
    (``clp_min.distributed.setup``) and left to the caller to destroy.

    ``stop_at`` interrupts the run after that many steps (with a checkpoint), as a
    crash would; resuming continues exactly as the uninterrupted run. (With
    ``lr_schedule=cosine`` the schedule depends on ``steps``, so N steps of a
    2N-step run are not an N-step run: interrupt it instead.)
    """
    cfg.validate()
    task = cfg.task()
    out = Path(cfg.out)
    ctx = distributed.setup(cfg.device)
    if ctx.world_size > 1 and cfg.streams != "prompt":
        raise ValueError(f"streams: {ctx.world_size} processes need streams=prompt (each prompt its own stream)")
    local = distributed.local_prompts(cfg.prompts_per_step, ctx.rank, ctx.world_size)
    out.mkdir(parents=True, exist_ok=True)
    progress = (sys.stderr.isatty() if progress is None else progress) and ctx.writer
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)

    # pi_ref: given, or pretrained here once (a resumed run reuses the saved one)
    ref_path = Path(cfg.ref) if cfg.ref else out / "ref.safetensors"
    if not cfg.ref and not cfg.resume and ctx.writer:
        pi_ref = GPT(model_config(task, cfg.n_layer, cfg.n_head, cfg.n_embd))
        pretrain(pi_ref, task, cfg.pretrain_steps, cfg.pretrain_batch, cfg.pretrain_lr,
                 torch.Generator().manual_seed(cfg.seed + PRETRAIN_SEED_OFFSET), progress)
        save_checkpoint(ref_path, pi_ref, {"task": asdict(task)})
    distributed.barrier(ctx)  # the other ranks wait for rank 0's pi_ref
    saved = meta = None
    if cfg.resume:
        saved_config(out)  # refuses a missing or foreign policy file
        saved, meta = load_checkpoint(out / "policy.safetensors")
        _check_unchanged(meta["train"], cfg)
        ref_path = _resolve_ref(meta, out)
    pi_ref = load_reference(ref_path, None if meta is None else meta.get("ref_sha256"))
    check_reference_architecture(pi_ref, cfg, ref_path)
    ref_sha256 = file_sha256(ref_path)

    policy = build_policy(cfg, pi_ref).to(ctx.device)  # built on the CPU: the same initial draws on any device
    pi_ref = pi_ref.to(ctx.device)
    # fused: one kernel for every parameter (0.55 vs 2.2 ms per step for CLP full, 2 x 64 model, CPU)
    optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.lr, fused=True)
    start, history = 0, []
    if cfg.resume:
        if meta.get("world_size", 1) != ctx.world_size:
            raise ValueError(f"resume: {out} was trained by {meta.get('world_size', 1)} processes, this run has "
                             f"{ctx.world_size}; resume with the same number (clp train --nproc)")
        try:
            policy.load_state_dict(saved.state_dict())
        except RuntimeError:
            raise ValueError(f"conditioning: {out / 'policy.safetensors'} does not fit the policy this "
                             f"config builds") from None
        start = load_train_state(out, optimizer, generator, meta["step"])
        rng.bit_generator.state = meta["numpy_rng"]
        if not (out / "log.json").exists():
            raise ValueError(f"resume: {out / 'log.json'} is missing; the run's history cannot continue")
        history = [h for h in json.loads((out / "log.json").read_text())["history"] if h["step"] <= start]
        if start > cfg.steps:
            raise ValueError(f"steps: the checkpoint is already at step {start} > {cfg.steps}")

    def checkpoint(step):
        if not ctx.writer:
            return
        state, prev = out / "train_state.safetensors", out / "train_state.prev.safetensors"
        if state.exists():
            os.replace(state, prev)  # until the policy of `step` is written, prev matches the saved policy
        save_train_state(state, optimizer, generator, step)
        save_checkpoint(out / "policy.safetensors", policy,
                        {"train": asdict(cfg), "ref": _ref_location(ref_path, out), "ref_sha256": ref_sha256,
                         "step": step, "numpy_rng": rng.bit_generator.state, "world_size": ctx.world_size})
        prev.unlink(missing_ok=True)
        _write_log(out, cfg, history)

    policy.train()
    ddp_policy = distributed.wrap(policy, ctx)  # averages gradients over the ranks (W > 1)
    end = cfg.steps if stop_at is None else min(cfg.steps, stop_at)
    # pi_ref's log-probs and rewards of every prompt, once (exact_pg.ReferenceTable; None for a large prompt set)
    table = exact_pg.ReferenceTable.for_task(pi_ref, task, cfg.steer == "kl") if cfg.estimator == "exact" else None
    bar = tqdm(range(start, end), desc=f"train {cfg.conditioning}", disable=not progress)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(cfg, step)
        w, gen = step_streams(cfg, step, local, rng, generator)
        if cfg.estimator == "exact":
            stats = exact_pg.exact_step(ddp_policy, pi_ref, optimizer, task, w, cfg.beta, gen,
                                        steer_kl=cfg.steer == "kl", table=table)
        else:
            stats = rl.rl_step(ddp_policy, pi_ref, optimizer, task, w, cfg.samples_per_prompt, cfg.beta,
                               gen, steer_kl=cfg.steer == "kl")
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            history.append({"step": done, **distributed.mean_over_ranks(stats, ctx)})
            bar.set_postfix(objective=f"{history[-1]['objective']:.3f}", kl=f"{history[-1]['kl']:.3f}")
            if ctx.writer:
                _write_log(out, cfg, history)
        if done % cfg.ckpt_every == 0 or done == end:
            checkpoint(done)
    if start == end:
        checkpoint(start)
    return {"config": asdict(cfg), "history": history}
