"""The enumerable configuration as an exact oracle: a converging reference and the misalignment sweep.

    "enum_exact"  coverage vs brevity with V = 4, T = 4 (every response listed), trained with the exact
                  gradient (clp_min.oracle.exact_pg) on training prompts only and evaluated exactly on the
                  held-out prompts (clp_min.task.is_heldout; all of them) and on as many training
                  prompts (the generalisation gap). Methods: CLP full / attn / logit (exact gradient),
                  CLP full trained by RLOO at the same prompts per step and about the same compute
                  time (``rloo_steps``; the cost of sampling variance), and the zero-shot methods of two single-objective experts
                  (exact gradient): Rewarded Soups and per-token logit mixing.
    "sweep"       the misalignment knob (clp_min.task reward ``knob``, strength s): rewards
                  (coverage, knob_s) for each s in ``strengths``. Per task: a knob expert and CLP full
                  (exact gradient; the coverage expert is shared by every task), evaluated exactly:
                  CLP full, logit mixing and Rewarded Soups of the trained experts, and logit mixing
                  of the exact per-reward optima (theory.tree.zero_shot_token_policy: the ideal
                  zero-shot, no training). ``eps_1`` = the largest eps(s) over depth-1 prefixes of
                  every held-out prompt's tree (theory.tree.misalignment); its mean over them is kept too.

Both share, per seed, one pi_ref (pretrained on the task's reference process; the rewards play no
part). Every regret is the exact average normalised regret over the weighting grid (clp_min.studies.evaluate).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from clp_min.studies import evaluate as ev
from clp_min.oracle import exact, exact_pg
from clp_min.studies import setups as su
from clp_min import task as tk
from clp_min.conditioning import ParamConditioned
from clp_min.config import TrainConfig
from clp_min.run_folder import frozen
from theory import pareto
from theory.instances import Tree
from theory.mixing import logit_mix
from theory.tree import misalignment, zero_shot_token_policy
from theory.weights import simplex_grid

SETUP_NAMES = ("enum_exact", "sweep")  # the setups this module runs (clp reproduce --setups)
ENUM_TASK = su.ENUM_TASK  # V = 4, L = 6, T = 4: 729 prompts, 121 producible responses
MODEL = dict(n_layer=2, n_head=2, n_embd=64)
TRAIN_SPLIT_SEED = 30_000
ENUM_EXACT_SCOPES = su.CLP_SCOPES  # CLP scopes of enum_exact: full, attn, logit  # which training prompts are evaluated beside the held-out ones


@dataclass(frozen=True)
class ExactScale:
    seeds: tuple  # seeds to run
    pretrain_steps: int  # supervised steps of pi_ref
    steps: int  # RL steps of every enum_exact method but the RLOO baseline (CLP, experts)
    rloo_steps: int  # RL steps of enum_exact's CLP full by RLOO
    prompts_per_step: int  # P per RL step
    lr: float  # Adam learning rate (cosine schedule)
    sweep_steps: int  # RL steps of each sweep CLP
    sweep_prompts_per_step: int  # P per RL step of every sweep model
    sweep_expert_steps: int  # RL steps of each sweep expert (coverage, knob_s)
    strengths: tuple  # knob strengths s of the sweep's tasks
    grid: int  # simplex_grid resolution (grid + 1 weightings)


EXACT_SCALES = {
    # chosen on seed 0 before seeds 1, 2 ran (docs/clp_min_results.md, "exploration log"): model, lr and
    # prompts per step so that CLP full converges at both ends of the sweep in 2000 steps; the sweep's
    # models take half the prompts per step and its experts a fifth of the steps, to fit the time budget
    # (every expert's regret is reported). The RLOO baseline takes half the steps: an RLOO step (n = 4
    # samples) cost 126 ms against the exact step's 69 ms (one thread, P = 32), so equal time, not equal steps
    "full": ExactScale(seeds=(0, 1, 2), pretrain_steps=800, steps=2000, rloo_steps=1000, prompts_per_step=32,
                       lr=5e-3, sweep_steps=2000, sweep_prompts_per_step=16, sweep_expert_steps=400,
                       strengths=tuple(float(s) for s in np.linspace(0, 1, 8)), grid=10),
    "quick": ExactScale(seeds=(0,), pretrain_steps=200, steps=40, rloo_steps=40, prompts_per_step=8, lr=3e-3,
                        sweep_steps=20, sweep_prompts_per_step=8, sweep_expert_steps=20,
                        strengths=(0.0, 0.5, 1.0), grid=2),
}


def heldout_prompts(task: tk.TaskConfig) -> torch.Tensor:
    """Every held-out prompt of the task ``[X, L]`` (never drawn in training)."""
    x = tk.all_prompts(task)
    return x[tk.is_heldout(x)]


def training_prompts(task: tk.TaskConfig, n: int, seed: int) -> torch.Tensor:
    """``n`` distinct training prompts, a fixed random subset (for the generalisation gap)."""
    x = tk.all_prompts(task)
    x = x[~tk.is_heldout(x)]
    return x[torch.randperm(len(x), generator=torch.Generator().manual_seed(TRAIN_SPLIT_SEED + seed))[:n]]


def _config(scale: ExactScale, seed: int, ref_path: Path, out: Path, steps: int, prompts: int | None = None,
            **kw) -> TrainConfig:
    return TrainConfig(out=str(out), seed=seed, **ENUM_TASK, **MODEL, ref=str(ref_path),
                       pretrain_steps=scale.pretrain_steps, beta=su.BETA, steps=steps,
                       prompts_per_step=scale.prompts_per_step if prompts is None else prompts, lr=scale.lr, lr_schedule=su.LR_SCHEDULE,
                       log_every=max(1, steps // 10), ckpt_every=steps, **kw)


def reference_args(scale: ExactScale, seed: int, runs) -> tuple:
    """``su.reference_model`` args of the seed's pi_ref, shared by enum_exact, the sweep and the study."""
    return ENUM_TASK, MODEL, scale, seed, Path(runs) / f"seed{seed}" / "enum_exact" / "ref.safetensors"


def _reference(scale: ExactScale, seed: int, runs: Path):
    args = reference_args(scale, seed, runs)
    return su.reference_model(*args), args[-1]  # uses scale.pretrain_steps


def ideal_zero_shot(trees: list, W: np.ndarray, beta: float) -> list:
    """Logit mixing of the exact per-reward optima pi*_{e_i} per tree, by depth ``[K, V^t, V]`` (section 3)."""
    return [zero_shot_token_policy(t, W, beta) for t in trees]


def eps_depth1(trees: list) -> dict:
    """``eps(s)`` over the depth-1 prefixes of every tree: the largest and the mean (THEORY.md section 3)."""
    eps = np.concatenate([misalignment(t)[1] for t in trees])  # (X * V,)
    return {"max": float(eps.max()), "mean": float(eps.mean())}


def _log_softmax_of(model):
    return lambda idx: F.log_softmax(model(idx)[0].double(), dim=-1)


def _trees(pi_ref, task: tk.TaskConfig, prompts: torch.Tensor) -> list:
    with torch.no_grad():
        return exact.prompt_trees(_log_softmax_of(pi_ref), task, prompts)


def retarget(trees: list, task: tk.TaskConfig, prompts: torch.Tensor) -> list:
    """The same pi_ref trees with ``task``'s rewards (the pi_ref pass is shared by every task of a sweep)."""
    Y = tk.all_responses(task)
    return [Tree.from_arrays(task.vocab, task.response_len, np.concatenate(t.ref_logp),
                             tk.rewards(task, prompts[p:p + 1].expand(len(Y), -1), Y).numpy())
            for p, t in enumerate(trees)]


def expert_log_policies(experts: list, task: tk.TaskConfig, prompts: torch.Tensor) -> list:
    """Each expert's exact token policy per prompt, by depth ``[V^t, V]``: list over experts of lists over prompts."""
    with torch.no_grad():
        return [exact.prefix_logprobs(_log_softmax_of(e), task, prompts) for e in experts]


def logit_mix_log_policies(per_expert: list, W: np.ndarray) -> list:
    """Per-token logit mixing of the experts' token policies, per prompt by depth ``[K, V^t, V]`` (section 2)."""
    return [[logit_mix(np.stack([e[p][t] for e in per_expert]), W) for t in range(len(per_expert[0][p]))]
            for p in range(len(per_expert[0]))]


def policy_log_policies(policy, task: tk.TaskConfig, prompts: torch.Tensor, W: np.ndarray) -> list:
    """A conditioned policy's token policy at every weighting, per prompt by depth ``[K, V^t, V]`` (one token-tree
    call per weighting; clp_min.oracle.exact_pg.token_policies)."""
    return exact_pg.token_policies(policy, task, prompts, W)


def exact_regrets(trees: list, log_policies: dict, W: np.ndarray) -> dict:
    """Exact stats and average normalised regret of each method (token policies per prompt) against pi*_w."""
    optimal = exact.optimal_stats(trees, W, su.BETA)
    reference = exact.reference_stats(trees, W, su.BETA)
    stats = {n: exact.policy_stats(trees, lp, W, su.BETA) for n, lp in log_policies.items()}
    regret = {n: pareto.normalised_regret(optimal["objective"], s["objective"], reference["objective"])
              for n, s in stats.items()}
    return {"optimal": optimal, "reference": reference, "methods": stats, "normalised_regret": regret,
            "mean_normalised_regret": {n: float(np.mean(r)) for n, r in regret.items()}}


def expert_regret(trees: list, expert: list, i: int, m: int) -> float:
    """An expert's exact normalised regret on its own objective, at its vertex ``e_i`` (its token policies per prompt)."""
    W = np.eye(m)[i:i + 1]
    return exact_regrets(trees, {"expert": [[d[None] for d in prompt] for prompt in expert]}, W)[
        "mean_normalised_regret"]["expert"]


def enum_exact_configs(scale: ExactScale, seed: int, runs) -> dict:
    """The training runs of ``enum_exact`` at one seed, ``{name: TrainConfig}`` (each cached in its folder)."""
    base = Path(runs) / f"seed{seed}" / "enum_exact"
    ref_path = reference_args(scale, seed, runs)[-1]
    two = ("coverage", "brevity")
    cfgs = {f"expert {r}": _config(scale, seed, ref_path, base / f"ft_{r}", scale.steps, rewards=(r,),
                                   conditioning="none", weights="fixed", fixed_w=(1.0,), estimator="exact")
            for r in two}
    for scope in ENUM_EXACT_SCOPES:
        cfgs[f"CLP {scope}"] = _config(scale, seed, ref_path, base / f"clp_{scope}", scale.steps, rewards=two,
                                       conditioning=scope, estimator="exact", **su.TRAIN_WEIGHTS)
    cfgs["CLP full (RLOO)"] = _config(scale, seed, ref_path, base / "clp_full_rloo", scale.rloo_steps, rewards=two,
                                      conditioning="full", estimator="rloo", **su.TRAIN_WEIGHTS)
    return cfgs


def run_enum_exact(seed: int, scale: ExactScale, root, runs) -> dict:
    """Train and evaluate ``enum_exact`` at one seed; writes ``root/enum_exact/seed*/front.json`` and a figure."""
    runs, root = Path(runs), Path(root)
    pi_ref, ref_path = _reference(scale, seed, runs)
    base = runs / f"seed{seed}" / "enum_exact"
    task = tk.TaskConfig(**ENUM_TASK, rewards=("coverage", "brevity"))
    cfgs = enum_exact_configs(scale, seed, runs)
    experts = [su.trained(cfgs[f"expert {r}"], False).model for r in task.rewards]
    policies = {name: su.trained(cfg, False) for name, cfg in cfgs.items() if name.startswith("CLP")}
    policies["Rewarded Soups"] = frozen(ParamConditioned.from_experts(experts, "full"))
    W = simplex_grid(2, scale.grid)
    out = root / "enum_exact" / f"seed{seed}"
    out.mkdir(parents=True, exist_ok=True)
    held = heldout_prompts(task)
    res = {}
    for split, prompts in (("heldout", held), ("train", training_prompts(task, len(held), seed))):
        trees = _trees(pi_ref, task, prompts)
        log_pi = {n: policy_log_policies(pol, task, prompts, W) for n, pol in policies.items()}
        per_expert = expert_log_policies(experts, task, prompts)
        log_pi["logit mixing"] = logit_mix_log_policies(per_expert, W)
        res[split] = exact_regrets(trees, log_pi, W)
        res[split]["expert_regret"] = {r: expert_regret(trees, e, i, 2)
                                       for i, (r, e) in enumerate(zip(task.rewards, per_expert))}
    ev.plot_fronts(res["heldout"]["methods"], out / "fronts_exact.png",
                   f"enum_exact, seed {seed}: exact fronts on held-out prompts",
                   exact_front=res["heldout"]["optimal"]["rewards"],
                   ref_point=res["heldout"]["reference"]["rewards"][0])
    result = {"setup": "enum_exact", "seed": seed, "scale": asdict(scale), "model": MODEL, "beta": su.BETA,
              "task": asdict(task), "weights": W, "prompts": {"heldout": len(held), "train": len(held)},
              "exact": res["heldout"], "train_prompts_regret": res["train"]["mean_normalised_regret"],
              "train_prompts_expert_regret": res["train"]["expert_regret"]}
    (out / "front.json").write_text(json.dumps(su._jsonable(result), indent=1))
    return su._jsonable(result)


def _tag(s: float) -> str:
    return f"s{s:.4f}"


def sweep_configs(scale: ExactScale, seed: int, runs) -> dict:
    """The training runs of the sweep at one seed, ``{name: TrainConfig}``: the shared coverage expert, and per
    strength ``s`` the knob expert ``knob s`` and ``CLP full s``."""
    base = Path(runs) / f"seed{seed}" / "sweep"
    ref_path = reference_args(scale, seed, runs)[-1]
    expert = dict(conditioning="none", weights="fixed", fixed_w=(1.0,), estimator="exact")
    P = scale.sweep_prompts_per_step
    cfgs = {"expert coverage": _config(scale, seed, ref_path, base / "ft_coverage", scale.sweep_expert_steps, P,
                                       rewards=("coverage",), **expert)}
    for s in scale.strengths:
        cfgs[f"knob {s}"] = _config(scale, seed, ref_path, base / f"ft_knob_{_tag(s)}", scale.sweep_expert_steps,
                                    P, rewards=("knob",), strength=s, **expert)
        cfgs[f"CLP full {s}"] = _config(scale, seed, ref_path, base / f"clp_full_{_tag(s)}", scale.sweep_steps, P,
                                        rewards=("coverage", "knob"), strength=s, conditioning="full",
                                        estimator="exact", **su.TRAIN_WEIGHTS)
    return cfgs


def planned(names, scale: ExactScale, runs) -> tuple:
    """``(pi_ref jobs {path: reference_model args}, run jobs {out: TrainConfig})`` of ``names`` (clp_min.studies.jobs)."""
    refs, cfgs = {}, {}
    for seed in scale.seeds:
        args = reference_args(scale, seed, runs)
        refs[str(args[-1])] = args
        for name in names:
            made = enum_exact_configs(scale, seed, runs) if name == "enum_exact" else sweep_configs(scale, seed, runs)
            cfgs.update({c.out: c for c in made.values()})
    return refs, cfgs


def run_sweep(seed: int, scale: ExactScale, root, runs) -> dict:
    """The misalignment sweep at one seed; writes ``root/sweep/seed*/sweep.json``."""
    runs, root = Path(runs), Path(root)
    pi_ref, ref_path = _reference(scale, seed, runs)
    cfgs = sweep_configs(scale, seed, runs)
    cover = su.trained(cfgs["expert coverage"], False).model
    W = simplex_grid(2, scale.grid)
    held = heldout_prompts(tk.TaskConfig(**ENUM_TASK))
    ref_trees = _trees(pi_ref, tk.TaskConfig(**ENUM_TASK, rewards=("coverage",)), held)
    cover_log_pi = expert_log_policies([cover], tk.TaskConfig(**ENUM_TASK), held)[0]
    tasks = []
    for s in scale.strengths:
        task = tk.TaskConfig(**ENUM_TASK, rewards=("coverage", "knob"), strength=s)
        knob = su.trained(cfgs[f"knob {s}"], False).model
        trees = retarget(ref_trees, task, held)
        experts = [cover_log_pi, expert_log_policies([knob], task, held)[0]]
        log_pi = {"CLP full": policy_log_policies(su.trained(cfgs[f"CLP full {s}"], False), task, held, W),
                  "Rewarded Soups": policy_log_policies(frozen(ParamConditioned.from_experts([cover, knob], "full")),
                                                        task, held, W),
                  "logit mixing": logit_mix_log_policies(experts, W),
                  "ideal zero-shot": ideal_zero_shot(trees, W, su.BETA)}
        res = exact_regrets(trees, log_pi, W)
        opt = res["optimal"]["rewards"]  # (K, 2)
        eps = eps_depth1(trees)
        tasks.append({"strength": s, "eps_1": eps["max"], "eps_1_mean": eps["mean"],
                      "regret": res["mean_normalised_regret"],
                      "expert_regret": {r: expert_regret(trees, e, i, 2)
                                        for i, (r, e) in enumerate(zip(task.rewards, experts))},
                      "optimal_spread": (opt.max(axis=0) - opt.min(axis=0)).tolist(),
                      "optimal_rewards": opt, "rewards": {n: m["rewards"] for n, m in res["methods"].items()}})
    result = {"setup": "sweep", "seed": seed, "scale": asdict(scale), "model": MODEL, "beta": su.BETA,
              "weights": W, "tasks": tasks}
    out = root / "sweep" / f"seed{seed}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps(su._jsonable(result), indent=1))
    return su._jsonable(result)


def plot_sweep(results: list, path) -> None:
    """Regret against eps_1 for CLP and each zero-shot method (mean over seeds, min-max bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    eps = np.mean([[t["eps_1"] for t in r["tasks"]] for r in results], axis=0)
    fig, ax = plt.subplots(figsize=(5.6, 4.2))
    for name in results[0]["tasks"][0]["regret"]:
        v = np.array([[t["regret"][name] for t in r["tasks"]] for r in results])  # (seeds, tasks)
        mean = v.mean(axis=0)
        ax.errorbar(eps, mean, yerr=[mean - v.min(axis=0), v.max(axis=0) - mean], fmt="o-", ms=3, lw=1,
                    capsize=2, label=name)
    ax.set_xlabel("eps_1 (largest eps(s) over depth-1 prefixes)")
    ax.set_ylabel("average normalised regret (exact)")
    ax.set_title(f"misalignment sweep ({len(results)} seed{'s' if len(results) > 1 else ''})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
