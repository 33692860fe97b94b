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
    .clp.lock                the folder's lock, held by the writer for the whole run (theory.output_folder)

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
from (seed, step, global prompt index) (clp_min.interop.distributed).

Data-parallel: under ``torchrun`` (``clp train --nproc N``) each of the W processes
takes P / W of the step's prompts and ``DistributedDataParallel`` averages the
gradients (clp_min.interop.distributed); rank 0 alone pretrains pi_ref and writes files.
The checkpoint records W, and ``resume`` refuses a different one.
"""
from __future__ import annotations

import copy
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from clp_min import rl, weightings
from clp_min.checkpoint import load_checkpoint, save_checkpoint
from clp_min.conditioning import ParamConditioned, Unconditioned
from clp_min.scope import SCOPES
from clp_min.config import PRETRAIN_SEED_OFFSET, TrainConfig, learning_rate
from clp_min.interop import distributed
from clp_min.mechanisms import FROZEN_BASE
from clp_min.mechanisms.input_cond import InputConditioned
from clp_min.model import GPT
from clp_min.oracle import exact_pg
from clp_min.pretrain import model_config, pretrain
from clp_min.run_folder import (_check_unchanged, _ref_location, _resolve_ref, _write_log, check_reference_architecture,
                                file_sha256, load_reference, load_train_state, save_train_state, saved_config)
from theory.output_folder import output_folder

# what a run writes in its folder (module doc; RUN/eval is clp eval's, replaced with the run under overwrite)
RUN_FILES = ("ref.safetensors", "policy.safetensors", "train_state.safetensors", "train_state.prev.safetensors",
             "log.json", "eval")


def build_policy(cfg: TrainConfig, pi_ref: GPT) -> torch.nn.Module:
    """The trainable conditioned policy, starting at pi_ref (all copies equal to it); svd_lora,
    soft_tokens and prompt_tokens train only their own parameters on a frozen copy of pi_ref."""
    model = copy.deepcopy(pi_ref)
    if cfg.conditioning in FROZEN_BASE:  # the base stays frozen: only the mechanism's own parameters train
        return FROZEN_BASE[cfg.conditioning].from_config(model, cfg)
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


def step_streams(cfg: TrainConfig, step: int, local: range, rng: np.random.Generator,
                 generator: torch.Generator, sampler=None) -> tuple:
    """``(w [P_local, m], generator(s), cells)`` of one step: the run's shared streams, or per-prompt ones;
    ``cells`` is the adaptive sampler's cell of each prompt (None for the fixed distributions)."""
    if sampler is not None:  # weights=adaptive (streams=shared, checked by TrainConfig.validate)
        w, cells = sampler.draw(rng, cfg.prompts_per_step)
        return w, generator, cells

    def draw(r, P):
        return weightings.draw_weightings(r, P, cfg.m, cfg.weights, cfg.alpha, cfg.p_vertex, cfg.fixed_w)

    if cfg.streams == "shared":
        return draw(rng, cfg.prompts_per_step), generator, None
    rngs, gens = distributed.prompt_streams(cfg.seed, step, local)
    return np.concatenate([draw(r, 1) for r in rngs]), gens, None  # (P_local, m)


def train(cfg: TrainConfig, progress: bool | None = None, stop_at: int | None = None,
          overwrite: bool = False) -> dict:
    """Run (or resume) training as configured; returns the log ``{"config", "history"}``.

    Under torchrun (module doc) every rank calls this; the process group is made here
    (``clp_min.interop.distributed.setup``) and left to the caller to destroy.

    The run folder is held for the whole run by the writer (rank 0) alone
    (theory.output_folder): a folder holding a run is refused unless ``cfg.resume`` or
    ``overwrite`` (the old run moved aside, put back if this run fails, deleted when it
    ends), and a second writer is refused at once, naming this process. Python callers
    (sweep scripts) get the same protection as ``clp train``.

    ``stop_at`` interrupts the run after that many steps (with a checkpoint), as a
    crash would; resuming continues exactly as the uninterrupted run. (With
    ``lr_schedule=cosine`` the schedule depends on ``steps``, so N steps of a
    2N-step run are not an N-step run: interrupt it instead.)
    """
    cfg.validate()
    ctx = distributed.setup(cfg.device)
    if ctx.world_size > 1 and cfg.streams != "prompt":
        raise ValueError(f"streams: {ctx.world_size} processes need streams=prompt (each prompt its own stream)")
    if overwrite and cfg.ref and Path(cfg.ref).resolve().parent == Path(cfg.out).resolve() \
            and Path(cfg.ref).name in RUN_FILES:
        raise ValueError(f"ref: {cfg.ref} lies in {cfg.out}, whose run overwrite replaces; copy it elsewhere first")
    if not ctx.writer:  # the other ranks write nothing
        return _train(cfg, ctx, progress, stop_at)
    with output_folder(cfg.out, RUN_FILES, resume=cfg.resume, overwrite=overwrite):
        return _train(cfg, ctx, progress, stop_at)


def _train(cfg: TrainConfig, ctx: distributed.Context, progress: bool | None, stop_at: int | None) -> dict:
    task = cfg.task()
    out = Path(cfg.out)
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
    sampler = weightings.AdaptiveSampler(cfg.m, cfg.alpha) if cfg.weights == "adaptive" else None
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
        if sampler is not None:
            sampler = weightings.AdaptiveSampler(cfg.m, cfg.alpha, meta["weighting_state"])
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
                         "step": step, "numpy_rng": rng.bit_generator.state, "world_size": ctx.world_size,
                         **({"weighting_state": sampler.state()} if sampler is not None else {})})
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
        w, gen, cells = step_streams(cfg, step, local, rng, generator, sampler)
        if cfg.estimator == "exact":
            stats = exact_pg.exact_step(ddp_policy, pi_ref, optimizer, task, w, cfg.beta, gen,
                                        steer_kl=cfg.steer == "kl", table=table)
        else:
            stats = rl.rl_step(ddp_policy, pi_ref, optimizer, task, w, cfg.samples_per_prompt, cfg.beta,
                               gen, steer_kl=cfg.steer == "kl")
        per_prompt = stats.pop("per_prompt", {})  # per-prompt arrays are not logged
        if sampler is not None:  # the statistic Var_pi[A] / (2 beta) (clp_min.weightings)
            sampler.update(cells, per_prompt["soft_advantage_var"] / (2 * cfg.beta))
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
