"""The adaptive weighting sampler against the fixed training distributions, judged exactly.

On the enumerable task (coverage, brevity; V = 4, T = 4; clp_min.studies.exact_setups) CLP full is
trained with the exact gradient at equal steps and prompts per step under three training
distributions of ``w``: ``uniform`` (Dirichlet(1)), ``vertices`` (Dirichlet(1) with a quarter of the
draws at a vertex: the project's default mixture) and ``adaptive`` (clp_min.weightings.AdaptiveSampler:
cells drawn by the running mean of ``Var_pi[A] / (2 beta)``, no oracle). Each is evaluated exactly on
every held-out prompt over ``simplex_grid(2, grid)``: the average and the worst normalised regret
(clp_min.studies.exact_setups.exact_regrets). The question: does the adaptive sampler lower both at
equal steps, on every seed?
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from clp_min import task as tk
from clp_min.checkpoint import load_checkpoint
from clp_min.studies import exact_setups as es
from clp_min.studies import setups as su
from clp_min.studies.jobs import map_seeds
from theory.weights import simplex_grid

REWARDS = ("coverage", "brevity")
DISTRIBUTIONS = {"uniform": dict(weights="uniform"), "vertices": dict(su.TRAIN_WEIGHTS),
                 "adaptive": dict(weights="adaptive")}


@dataclass(frozen=True)
class AdaptiveScale:
    seeds: tuple  # seeds to run
    pretrain_steps: int  # supervised steps of pi_ref (shared with the other exact studies at the same value)
    steps: int  # exact-gradient RL steps of every CLP (equal for the three distributions)
    prompts_per_step: int  # P per RL step
    lr: float  # Adam learning rate (cosine schedule)
    grid: int  # evaluation grid resolution (grid + 1 weightings)


SCALES = {
    "full": AdaptiveScale(seeds=(0, 1, 2), pretrain_steps=800, steps=2000, prompts_per_step=32, lr=5e-3, grid=10),
    # the smallest honest scale on 2 shared cores: a quarter of enum_exact's steps
    "small": AdaptiveScale(seeds=(0, 1, 2), pretrain_steps=800, steps=500, prompts_per_step=32, lr=5e-3, grid=10),
    "quick": AdaptiveScale(seeds=(0,), pretrain_steps=20, steps=6, prompts_per_step=4, lr=3e-3, grid=4),
}


def configs(scale: AdaptiveScale, seed: int, runs) -> dict:
    ref_path = es.reference_args(scale, seed, runs)[-1]
    base = Path(runs) / f"seed{seed}" / "adaptive_w"
    return {name: es._config(scale, seed, ref_path, base / f"clp_full_{name}", scale.steps, rewards=REWARDS,
                             conditioning="full", estimator="exact", **kw) for name, kw in DISTRIBUTIONS.items()}


def run_seed(seed: int, scale: AdaptiveScale, root, runs) -> dict:
    """Train (or reuse) the three CLPs of ``seed`` and evaluate them exactly; writes its JSON."""
    start = time.perf_counter()
    pi_ref = su.reference_model(*es.reference_args(scale, seed, runs))
    cfgs = configs(scale, seed, runs)
    seconds, policies = {}, {}
    for name, cfg in cfgs.items():
        t = time.perf_counter()
        policies[name] = su.trained(cfg, False)
        seconds[name] = time.perf_counter() - t
    task = tk.TaskConfig(**es.ENUM_TASK, rewards=REWARDS)
    held = es.heldout_prompts(task)
    trees = es._trees(pi_ref, task, held)
    W = simplex_grid(2, scale.grid)
    res = es.exact_regrets(trees, {n: es.policy_log_policies(p, task, held, W) for n, p in policies.items()}, W)
    meta = load_checkpoint(Path(cfgs["adaptive"].out) / "policy.safetensors").config
    result = {"study": "adaptive_w", "seed": seed, "scale": asdict(scale), "beta": su.BETA, "weights": W,
              "heldout_prompts": len(held), "seconds": {"train": seconds, "total": time.perf_counter() - start},
              "normalised_regret": res["normalised_regret"],
              "average": res["mean_normalised_regret"],
              "worst": {n: float(np.max(r)) for n, r in res["normalised_regret"].items()},
              "adaptive_state": meta.get("weighting_state")}
    out = Path(root) / f"seed{seed}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "adaptive_w.json").write_text(json.dumps(su._jsonable(result), indent=1))
    return su._jsonable(result)


def summarise(results: list) -> dict:
    """Per distribution: average and worst normalised regret per seed and their means; whether adaptive
    is below both fixed distributions on both measures on every seed (``met``)."""
    out = {n: {"average": [r["average"][n] for r in results], "worst": [r["worst"][n] for r in results]}
           for n in DISTRIBUTIONS}
    for v in out.values():
        v["mean_average"], v["mean_worst"] = float(np.mean(v["average"])), float(np.mean(v["worst"]))
    fixed = [n for n in DISTRIBUTIONS if n != "adaptive"]
    met = all(out["adaptive"][k][i] < out[f][k][i] for k in ("average", "worst") for f in fixed
              for i in range(len(results)))
    return {"distributions": out, "met_on_every_seed": met,
            "met_on_the_mean": all(out["adaptive"][f"mean_{k}"] < out[f][f"mean_{k}"] for k in ("average", "worst")
                                   for f in fixed)}


def markdown(results: list, summary: dict) -> str:
    lines = [f"Seeds {[r['seed'] for r in results]}; scale {results[0]['scale']}; beta = {results[0]['beta']}; "
             f"{results[0]['heldout_prompts']} held-out prompts, {len(results[0]['weights'])} weightings; "
             "training seconds per seed: "
             + "; ".join(", ".join(f"{n} {s:.0f}" for n, s in r["seconds"]["train"].items()) for r in results), "",
             "| training distribution of w | average normalised regret (per seed) | mean | worst normalised regret "
             "(per seed) | mean |", "|---|---|---|---|---|"]
    for n, v in summary["distributions"].items():
        lines.append(f"| {n} | {', '.join(f'{x:.4g}' for x in v['average'])} | {v['mean_average']:.4g} | "
                     f"{', '.join(f'{x:.4g}' for x in v['worst'])} | {v['mean_worst']:.4g} |")
    lines += ["", f"Adaptive below both fixed distributions on both measures: on every seed "
              f"{summary['met_on_every_seed']}; on the mean over seeds {summary['met_on_the_mean']}."]
    return "\n".join(lines) + "\n"


def run_study(scale_name: str, seeds, root, runs, jobs: int = 1) -> dict:
    """Every seed (``jobs`` worker processes, one seed each), then ``summary.json`` and ``summary.md``."""
    scale = SCALES[scale_name]
    seeds = tuple(scale.seeds if seeds is None else seeds)
    root = Path(root)
    results = map_seeds(run_seed, seeds, scale, root, runs, jobs)
    summary = summarise(results)
    (root / "summary.json").write_text(json.dumps(su._jsonable({"scale": scale_name, "seeds": seeds, **summary}),
                                                  indent=1))
    (root / "summary.md").write_text(markdown(results, summary))
    return summary
