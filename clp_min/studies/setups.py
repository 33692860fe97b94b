"""The paper's three setups and the enumerable configuration, as data plus one runner.

    (a) "kl"    one reward (coverage), steering the KL weight: CLP trained on
                lam R - beta K against decoding-time realignment of (pi_ref, pi_R).
    (b) "two"   coverage and brevity at fixed beta: CLP full / attn / logit against
                Rewarded Soups, per-token logit mixing and input conditioning.
    (c) "three" coverage, brevity and order at fixed beta, on a simplex grid.
    "enum"      setup (b) in a vocabulary of 4 and responses of 4 tokens, so every
                response is listed and ``clp_min.oracle.exact`` gives each method's exact
                rewards, KL and normalised regret against the exact pi*_w.
    "enum_large" the same with a 2-layer, 64-wide model, at the same RL steps, so the two
                differ in the model only. Added after the first full run: there even the
                single-objective coverage model stayed at normalised regret ~0.33 at its own
                vertex; a probe (one seed, coverage only) gave 0.17 with this model at 800
                steps and 0.05 at 2400 steps. It ran at 3x the steps until the compute
                budget; the converging reference is now clp_min.studies.exact_setups' enum_exact
                (same model and task, exact gradient).

Setups (a)-(c) share, per seed, one pi_ref and the single-objective finetuned
models (same task, same beta); every run is cached in its folder and retrained
only when its configuration changes. Seeds: 0, 1, 2 (full), 0 (quick).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from clp_min.studies import evaluate as ev
from clp_min.checkpoint import load_checkpoint, save_checkpoint
from clp_min.conditioning import ParamConditioned, Unconditioned
from clp_min.model import GPT
from clp_min.pretrain import model_config, pretrain
from clp_min.task import TaskConfig, sample_prompts
from clp_min.config import PRETRAIN_SEED_OFFSET, TrainConfig
from clp_min.run_folder import frozen, load_reference
from clp_min.train import train
from theory.weights import simplex_grid

HELDOUT_SEED_OFFSET = 20_000  # held-out prompts and evaluation samples use their own stream
CLP_SCOPES = ("full", "attn", "logit")


@dataclass(frozen=True)
class Scale:
    seeds: tuple  # seeds to run
    pretrain_steps: int  # supervised steps of pi_ref
    steps: int  # RL steps of every trained method
    prompts_per_step: int  # P per RL step
    samples_per_prompt: int  # n per prompt
    eval_prompts: int  # held-out prompts for Monte Carlo fronts
    eval_samples: int  # responses per held-out prompt and weighting
    exact_prompts: int  # held-out prompts (trees) in the enumerable configuration
    grid: int  # simplex_grid resolution n (m = 2: n + 1 points)


SCALES = {
    "full": Scale(seeds=(0, 1, 2), pretrain_steps=800, steps=800, prompts_per_step=16, samples_per_prompt=4,
                  eval_prompts=128, eval_samples=4, exact_prompts=64, grid=10),
    "quick": Scale(seeds=(0,), pretrain_steps=300, steps=60, prompts_per_step=16, samples_per_prompt=4,
                   eval_prompts=32, eval_samples=2, exact_prompts=16, grid=4),
}

SMALL_TASK = dict(vocab=10, prompt_len=6, response_len=5, p_keep=0.5, p_noise=0.1)
ENUM_TASK = dict(vocab=4, prompt_len=6, response_len=4, p_keep=0.5, p_noise=0.1)
SETUPS = {
    "kl": dict(task=SMALL_TASK, rewards=("coverage",), steer="kl"),
    "two": dict(task=SMALL_TASK, rewards=("coverage", "brevity"), steer="rewards"),
    "three": dict(task=SMALL_TASK, rewards=("coverage", "brevity", "order"), steer="rewards"),
    "enum": dict(task=ENUM_TASK, rewards=("coverage", "brevity"), steer="rewards"),
    # the enumerable configuration again with a larger model (see the module doc)
    "enum_large": dict(task=ENUM_TASK, rewards=("coverage", "brevity"), steer="rewards",
                       model=dict(n_layer=2, n_head=2, n_embd=64)),
}
MODEL = dict(n_layer=1, n_head=2, n_embd=32)  # every setup's model unless it names its own
BETA = 0.1
LR_SCHEDULE = "cosine"
TRAIN_WEIGHTS = dict(weights="vertices", alpha=1.0, p_vertex=0.25)  # uniform Dirichlet mixed with the vertices


def reference_model(task_kw: dict, model_kw: dict, scale: Scale, seed: int, path: Path) -> GPT:
    """pi_ref for a task (pretrained once per seed and cached; the rewards play no part)."""
    task = TaskConfig(**task_kw)
    spec = {"task": task_kw, "model": model_kw, "pretrain_steps": scale.pretrain_steps, "seed": seed}
    if path.exists() and load_checkpoint(path).config == spec:
        return load_reference(path)
    torch.manual_seed(seed)
    model = GPT(model_config(task, **model_kw))
    pretrain(model, task, scale.pretrain_steps, 64, 3e-3, torch.Generator().manual_seed(seed + PRETRAIN_SEED_OFFSET))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, model, spec)
    return load_reference(path)


def trained(cfg: TrainConfig, progress: bool):
    """The policy of ``cfg``, trained now unless ``cfg.out`` already holds the finished run (a cache keyed
    by configuration: a run of another configuration or unfinished there is replaced)."""
    path = Path(cfg.out) / "policy.safetensors"
    if path.exists():
        policy, meta = load_checkpoint(path)
        if meta["train"] == json.loads(json.dumps(asdict(cfg))) and meta["step"] == cfg.steps:
            return frozen(policy)
    train(cfg, progress, overwrite=True)
    return frozen(load_checkpoint(path).model)


def _config(setup: dict, scale: Scale, seed: int, ref_path: Path, out: Path, **kw) -> TrainConfig:
    steps = scale.steps * setup.get("steps_factor", 1)
    return TrainConfig(out=str(out), seed=seed, **setup["task"], rewards=kw.pop("rewards", setup["rewards"]),
                       **setup.get("model", MODEL), ref=str(ref_path), pretrain_steps=scale.pretrain_steps,
                       beta=BETA, steps=steps, prompts_per_step=scale.prompts_per_step,
                       samples_per_prompt=scale.samples_per_prompt, lr_schedule=LR_SCHEDULE,
                       log_every=max(1, steps // 10), ckpt_every=max(1, steps // 2), **kw)


def _base(name: str, seed: int, runs) -> Path:
    """The folder of a setup's runs at one seed (setups on the same task share it)."""
    return Path(runs) / f"seed{seed}" / ("small" if SETUPS[name]["task"] is SMALL_TASK else name)


def reference_args(name: str, scale: Scale, seed: int, runs) -> tuple:
    """The arguments of ``reference_model`` for a setup at one seed."""
    setup = SETUPS[name]
    return setup["task"], setup.get("model", MODEL), scale, seed, _base(name, seed, runs) / "ref.safetensors"


def run_configs(name: str, scale: Scale, seed: int, runs) -> dict:
    """``{method or ft_<reward>: TrainConfig}`` of every run a setup trains (each needs only pi_ref)."""
    setup = SETUPS[name]
    base = _base(name, seed, runs)
    ref_path = base / "ref.safetensors"
    rewards = setup["rewards"]
    cfgs = {}
    for reward in rewards:  # single-objective pi_i at beta, shared by the setups of this task
        cfgs[f"ft_{reward}"] = _config(setup, scale, seed, ref_path, base / f"ft_{reward}", rewards=(reward,),
                                       conditioning="none", weights="fixed", fixed_w=(1.0,))
    if setup["steer"] == "kl":
        cfgs["CLP full (KL)"] = _config(setup, scale, seed, ref_path, base / "kl_clp_full", conditioning="full",
                                        steer="kl", **TRAIN_WEIGHTS)
        return cfgs
    tag = "-".join(rewards)
    for scope in CLP_SCOPES:
        cfgs[f"CLP {scope}"] = _config(setup, scale, seed, ref_path, base / f"{tag}_clp_{scope}",
                                       conditioning=scope, **TRAIN_WEIGHTS)
    cfgs["input"] = _config(setup, scale, seed, ref_path, base / f"{tag}_input", conditioning="input",
                            **TRAIN_WEIGHTS)
    return cfgs


def build_methods(name: str, scale: Scale, seed: int, runs: Path, progress: bool) -> tuple:
    """Train (or load) every method of a setup under ``runs``; returns ``(methods, pi_ref, task)``."""
    setup = SETUPS[name]
    pi_ref = reference_model(*reference_args(name, scale, seed, runs))
    rewards = setup["rewards"]
    cfgs = run_configs(name, scale, seed, runs)
    methods = {}
    if setup["steer"] == "kl":
        methods["CLP full (KL)"] = ev.policy_method("CLP full (KL)", trained(cfgs["CLP full (KL)"], progress))
        methods["realignment"] = ev.realign_method("realignment", pi_ref,
                                                   trained(cfgs[f"ft_{rewards[0]}"], progress).model)
    else:
        experts = [trained(cfgs[f"ft_{r}"], progress).model for r in rewards]
        for scope in CLP_SCOPES:
            methods[f"CLP {scope}"] = ev.policy_method(f"CLP {scope}", trained(cfgs[f"CLP {scope}"], progress))
        soups = frozen(ParamConditioned.from_experts(experts, "full"))  # never trained: Rewarded Soups
        methods["Rewarded Soups"] = ev.policy_method("Rewarded Soups", soups)
        methods["logit mixing"] = ev.logit_mix_method("logit mixing", experts)
        methods["input"] = ev.policy_method("input", trained(cfgs["input"], progress))
    return methods, pi_ref, TrainConfig(**setup["task"], rewards=rewards).task()


def grid(name: str, scale: Scale) -> np.ndarray:
    """Weightings to evaluate ``[K, m]``; for KL steering ``(1 - lam, lam)`` with lam > 0."""
    if SETUPS[name]["steer"] == "kl":
        return simplex_grid(2, scale.grid)[:-1]  # drops lam = 0 (pi_ref itself; realignment needs lam > 0)
    m = len(SETUPS[name]["rewards"])
    return simplex_grid(m, scale.grid if m == 2 else max(2, scale.grid // 2))


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def run_setup(name: str, seed: int, scale: Scale, root, progress: bool = False, runs=None) -> dict:
    """Train, evaluate and measure one setup at one seed; writes ``root/name/seed*/front.json`` and figures.

    Trained models are cached under ``runs`` (default ``root/runs``).
    """
    if name not in SETUPS:
        raise ValueError(f"setup: unknown {name!r}; choose from {sorted(SETUPS)}")
    root = Path(root)
    setup = SETUPS[name]
    steer_kl = setup["steer"] == "kl"
    methods, pi_ref, task = build_methods(name, scale, seed, root / "runs" if runs is None else runs, progress)
    W = grid(name, scale)
    gen = torch.Generator().manual_seed(seed + HELDOUT_SEED_OFFSET)
    prompts = sample_prompts(task, scale.eval_prompts, gen)
    ref_method = ev.policy_method("pi_ref", Unconditioned(pi_ref))
    mc = {n: ev.mc_front(mth, task, pi_ref, W, prompts, scale.eval_samples, BETA, gen, steer_kl)
          for n, mth in methods.items()}
    mc_ref = ev.mc_front(ref_method, task, pi_ref, W[:1], prompts, scale.eval_samples, BETA, gen, steer_kl)
    out = root / name / f"seed{seed}"
    out.mkdir(parents=True, exist_ok=True)
    clp = [n for n in methods if n.startswith("CLP")]
    baselines = [n for n in methods if not n.startswith("CLP")]
    if steer_kl:
        points = {n: ev.front_points(r, True) for n, r in mc.items()}
        k_max = max(float(r["kl"].max()) for r in mc.values())
        ref_point = np.array([0.0, -1.1 * k_max])  # (worst reward, -1.1 K_max)
        measures = ev.front_measures(points, W, ref_point, clp, baselines)
        measures["k_max"] = k_max
    else:
        ref_point = np.zeros(W.shape[1])  # the worst reward vector (every reward lies in [0, 1])
        measures = ev.front_measures({n: r["rewards"] for n, r in mc.items()}, W, ref_point, clp, baselines)
    result = {"setup": name, "seed": seed, "scale": asdict(scale), "beta": BETA, "task": asdict(task),
              "weights": W, "reference": {"rewards": mc_ref["rewards"][0], "rewards_se": mc_ref["rewards_se"][0]},
              "monte_carlo": mc, "measures": measures}
    ev.plot_fronts(mc, out / "fronts.png", f"setup {name}, seed {seed} (Monte Carlo, 1 s.e. bars)",
                   steer_kl=steer_kl, ref_point=None if steer_kl else mc_ref["rewards"][0])
    if setup["task"] is ENUM_TASK:
        gen = torch.Generator().manual_seed(seed + HELDOUT_SEED_OFFSET + 1)
        result["exact"] = ev.exact_front(methods, pi_ref, task, W, sample_prompts(task, scale.exact_prompts, gen),
                                         BETA, out / "fronts_exact.png")
    (out / "front.json").write_text(json.dumps(_jsonable(result), indent=1))
    return _jsonable(result)
