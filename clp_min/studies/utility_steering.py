"""Steering a trained CLP to a non-linear utility, judged exactly (THEORY.md section 7, N1-N3).

On the enumerable task (coverage, brevity; V = 4, T = 4, clp_min.studies.exact_setups) one CLP
(``conditioning=full``, ``steer=kl``: conditioned on ``v = (v_0, v_1, v_2)`` over the KL term and the two
rewards, objective ``v_1 R_1 + v_2 R_2 - beta K``) is trained with the exact gradient on training
prompts. On the held-out prompts (every one, equal weight) the user's utility is the population
utility ``U(E_x R_x(pi)) - beta E_x KL_x`` (one conditioning for the whole prompt set). Its exact
optimum is the Gibbs policy at ``g* = grad U(R*)`` (theory.utility_fixed_point.solve_population_fixed_point
on the held-out trees as one bandit of full responses), i.e. the conditioning ``(1 - |g*|_1, g*)``
when ``|g*|_1 <= 1``.

Three ways to condition the CLP, each scored by its exact ``U(R) - beta K`` (clp_min.oracle.exact)
against the optimum:

- ``steered``: the fixed point on the CLP itself, ``g <- g + a (grad U(R_CLP(1 - |g|, g)) - g)`` with
  ``a = STEP``, from ``g*``; its first-order residual ``max|g - grad U(R_CLP)|`` is reported (the
  search is projected onto ``g >= 0, |g|_1 <= 1``, and says so when it had to);
- ``at the optimum's conditioning``: ``(1 - |g*|_1, g*)`` read off the exact solver, no search;
- ``best fixed beta``: the best ``(0, w)``, ``w`` on a grid (what a CLP conditioned on rewards only
  at ``beta`` offers); the same grid on the exact ``pi*_w`` gives that family's own floor;
- ``best conditioning of the CLP (grid)``: the best ``v`` on a grid of the whole simplex (what the
  CLP can do at best; the steered ``v`` needs no grid, only the CLP's expected rewards: exact here,
  sampled in practice).

Regrets are also normalised by ``OPT - U(R(pi_ref))`` (pi_ref's objective; its KL is 0).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from clp_min import task as tk
from clp_min.oracle import exact
from clp_min.studies import exact_setups as es
from clp_min.studies import setups as su
from clp_min.studies.jobs import map_seeds
from theory.instances import Bandit
from theory.tree import leaf_log_probs, reference_token_policy
from theory.utility import make_utility
from theory.utility_fixed_point import solve_population_fixed_point
from theory.weights import simplex_grid

REWARDS = ("coverage", "brevity")
STEP = 0.5  # damping of the CLP's fixed point (its Jacobian is unknown; the exact one's is I - H C)
TOL = 1e-6  # on max|g - grad U(R_CLP)|: far below the regrets that matter, above float32 noise


@dataclass(frozen=True)
class SteeringScale:
    seeds: tuple  # seeds to run
    pretrain_steps: int  # supervised steps of pi_ref (shared with enum_exact at the same value)
    steps: int  # exact-gradient RL steps of the KL-steered CLP
    prompts_per_step: int  # P per RL step
    lr: float  # Adam learning rate (cosine schedule)
    grid: int  # resolution of the fixed-beta grid over w
    max_iter: int  # iterations of the CLP's fixed point


SCALES = {
    # enum_exact's scale for the CLP (its pi_ref is shared at the same pretrain_steps)
    "full": SteeringScale(seeds=(0, 1, 2), pretrain_steps=800, steps=2000, prompts_per_step=32, lr=5e-3,
                          grid=50, max_iter=60),
    # the smallest honest scale on 2 shared cores: a quarter of the steps
    "small": SteeringScale(seeds=(0, 1, 2), pretrain_steps=400, steps=500, prompts_per_step=32, lr=5e-3,
                           grid=50, max_iter=60),
    "quick": SteeringScale(seeds=(0,), pretrain_steps=20, steps=4, prompts_per_step=4, lr=3e-3, grid=4,
                           max_iter=3),
}


def utilities(R_ref: np.ndarray) -> dict:
    """The utilities, set from pi_ref's mean rewards ``R_ref [2]`` before any training (|g*|_1 < 1 expected)."""
    return {"nash": make_utility("nash", 2, z=R_ref - 0.5, a=[0.15, 0.15]),
            "softmin": make_utility("softmin", 2, z=R_ref, lam=[0.6, 0.4], tau=0.05),
            "quadratic": make_utility("quadratic", 2, c=R_ref + 1.0, A=[[0.3, 0.1], [0.1, 0.3]])}


def population_bandit(trees: list) -> Bandit:
    """The held-out trees as one bandit of full responses: X prompts (equal weight), Y = V^T leaves."""
    log_ref = np.concatenate([leaf_log_probs(t, reference_token_policy(t)) for t in trees])  # (X, V^T)
    r = np.stack([t.rewards for t in trees])  # (X, V^T, m)
    return Bandit.from_arrays(np.full(len(trees), 1.0 / len(trees)), log_ref, r)


def clp_point(policy, task, prompts, trees, v: np.ndarray) -> tuple:
    """Exact mean ``(R [2], K)`` over the prompts of the CLP conditioned on ``v [3]``."""
    log_pi = es.policy_log_policies(policy, task, prompts, np.asarray(v, dtype=np.float64)[None])
    s = exact.policy_stats(trees, log_pi, np.zeros((1, 2)), su.BETA)
    return s["rewards"][0], float(s["kl"][0])


def _project(g: np.ndarray) -> tuple:
    """``g`` onto ``{g >= 0, |g|_1 <= 1}`` (the conditionings a KL-steered CLP was trained on)."""
    h = np.clip(g, 0.0, None)
    if h.sum() > 1:
        u = np.sort(h)[::-1]
        k = np.nonzero(u - (np.cumsum(u) - 1) / np.arange(1, len(u) + 1) > 0)[0][-1]
        h = np.clip(h - (np.cumsum(u)[k] - 1) / (k + 1), 0.0, None)
    return h, bool(np.any(h != g))


def steer(policy, task, prompts, trees, U, g0: np.ndarray, max_iter: int) -> dict:
    """The damped fixed point ``g <- g + STEP (grad U(R_CLP(1 - |g|, g)) - g)`` on the CLP's exact evaluation."""
    g, projected, history = np.asarray(g0, dtype=np.float64), False, []
    for it in range(max_iter):
        R, K = clp_point(policy, task, prompts, trees, np.concatenate([[1 - g.sum()], g]))
        residual = float(np.max(np.abs(g - U.grad(R)))) if U.in_domain(R) else float("inf")
        history.append(residual)
        if residual <= TOL:
            break
        g, hit = _project(g + STEP * (U.grad(R) - g))
        projected |= hit
    R, K = clp_point(policy, task, prompts, trees, np.concatenate([[1 - g.sum()], g]))
    return {"g": g, "rewards": R, "kl": K, "objective": float(U.value(R) - su.BETA * K),
            "residual": float(np.max(np.abs(g - U.grad(R)))), "iterations": len(history), "projected": projected,
            "residual_history": history}


def clp_config(scale: SteeringScale, seed: int, runs):
    ref_path = es.reference_args(scale, seed, runs)[-1]
    out = Path(runs) / f"seed{seed}" / "utility_steering" / "clp_full_kl"
    return es._config(scale, seed, ref_path, out, scale.steps, rewards=REWARDS, conditioning="full",
                      estimator="exact", steer="kl", **su.TRAIN_WEIGHTS)


def run_seed(seed: int, scale: SteeringScale, root, runs) -> dict:
    """Train (or reuse) pi_ref and the KL-steered CLP of ``seed``, steer it to each utility; writes its JSON."""
    start = time.perf_counter()
    pi_ref = su.reference_model(*es.reference_args(scale, seed, runs))
    policy = su.trained(clp_config(scale, seed, runs), False)
    trained_s = time.perf_counter() - start
    task = tk.TaskConfig(**es.ENUM_TASK, rewards=REWARDS)
    held = es.heldout_prompts(task)
    trees = es._trees(pi_ref, task, held)
    bandit = population_bandit(trees)
    W = simplex_grid(2, scale.grid)
    exact_fixed = exact.optimal_stats(trees, W, su.BETA)  # the exact pi*_w at beta on the grid
    R_ref = exact.reference_stats(trees, W[:1], su.BETA)["rewards"][0]
    clp_fixed = [clp_point(policy, task, held, trees, np.concatenate([[0.0], w])) for w in W]
    V3 = simplex_grid(3, scale.grid // 2)  # every conditioning (v_0, v_1, v_2) on a coarser grid
    clp_any = [clp_point(policy, task, held, trees, v) for v in V3]
    rows = {}
    for name, U in utilities(R_ref).items():
        opt = solve_population_fixed_point(bandit, U, su.BETA)
        J_ref = float(U.value(R_ref))
        row = {"optimum": {k: opt[k] for k in ("g", "w", "beta_eff", "g_l1", "rewards", "kl", "objective",
                                               "iterations", "residual")},
               "pi_ref_objective": J_ref}
        g_star = np.asarray(opt["g"])
        reachable = bool(opt["on_simplex"] and opt["g_l1"] <= 1)
        row["reachable"] = reachable
        cands = {}
        if reachable:
            R, K = clp_point(policy, task, held, trees, np.concatenate([[1 - g_star.sum()], g_star]))
            cands["at the optimum's conditioning"] = {"objective": float(U.value(R) - su.BETA * K),
                                                      "rewards": R, "kl": K}
            cands["steered"] = steer(policy, task, held, trees, U, g_star, scale.max_iter)
        J_clp = [float(U.value(R) - su.BETA * K) if U.in_domain(R) else -np.inf for R, K in clp_fixed]
        k = int(np.argmax(J_clp))
        cands["best fixed beta (CLP)"] = {"w": W[k], "objective": J_clp[k]}
        J_v = [float(U.value(R) - su.BETA * K) if U.in_domain(R) else -np.inf for R, K in clp_any]
        k = int(np.argmax(J_v))
        cands["best conditioning of the CLP (grid)"] = {"v": V3[k], "objective": J_v[k]}
        J_ex = [float(U.value(R) - su.BETA * K) if U.in_domain(R) else -np.inf
                for R, K in zip(exact_fixed["rewards"], exact_fixed["kl"])]
        k = int(np.argmax(J_ex))
        cands["best fixed beta (exact pi*_w)"] = {"w": W[k], "objective": J_ex[k]}
        for c in cands.values():
            c["regret"] = opt["objective"] - c["objective"]
            c["normalised_regret"] = c["regret"] / (opt["objective"] - J_ref)
        row["methods"] = cands
        rows[name] = row
    result = {"study": "utility_steering", "seed": seed, "scale": asdict(scale), "beta": su.BETA,
              "task": asdict(task), "model": es.MODEL, "heldout_prompts": len(held), "R_ref": R_ref,
              "seconds": {"train": trained_s, "total": time.perf_counter() - start}, "utilities": rows}
    out = Path(root) / f"seed{seed}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "utility_steering.json").write_text(json.dumps(su._jsonable(result), indent=1))
    return su._jsonable(result)


def summarise(results: list) -> dict:
    """Mean, min and max over seeds of each method's regret and normalised regret, per utility."""
    out = {}
    for name in results[0]["utilities"]:
        rows = [r["utilities"][name] for r in results]
        methods = {}
        for method in rows[0]["methods"]:
            reg = np.array([row["methods"][method]["regret"] for row in rows if method in row["methods"]])
            nreg = np.array([row["methods"][method]["normalised_regret"] for row in rows if method in row["methods"]])
            methods[method] = {"regret": reg.tolist(), "normalised_regret": nreg.tolist(),
                               "mean_regret": float(reg.mean()), "mean_normalised_regret": float(nreg.mean())}
        steered = [row["methods"]["steered"] for row in rows if "steered" in row["methods"]]
        out[name] = {"methods": methods, "g_l1": [row["optimum"]["g_l1"] for row in rows],
                     "beta_eff": [row["optimum"]["beta_eff"] for row in rows],
                     "reachable": [row["reachable"] for row in rows],
                     "steered_residual": [s["residual"] for s in steered],
                     "steered_projected": [s["projected"] for s in steered]}
    return out


def markdown(results: list, summary: dict) -> str:
    """The summary table (regret and normalised regret, mean [min, max] over seeds)."""
    scale = results[0]["scale"]
    lines = [f"Seeds {[r['seed'] for r in results]}; scale {scale}; beta = {results[0]['beta']}; "
             f"{results[0]['heldout_prompts']} held-out prompts; seconds per seed (train, total): "
             + ", ".join(f"{r['seconds']['train']:.0f}/{r['seconds']['total']:.0f}" for r in results), "",
             "| utility | method | exact regret, mean [min, max] | normalised regret, mean [min, max] |",
             "|---|---|---|---|"]
    for name, row in summary.items():
        for method, m in row["methods"].items():
            r, n = m["regret"], m["normalised_regret"]
            lines.append(f"| {name} | {method} | {np.mean(r):.4g} [{min(r):.3g}, {max(r):.3g}] | "
                         f"{np.mean(n):.4g} [{min(n):.3g}, {max(n):.3g}] |")
        lines.append(f"| {name} | (optimum: \\|g*\\|_1, KL weight) | "
                     + ", ".join(f"{a:.3f}, {b:.4f}" for a, b in zip(row["g_l1"], row["beta_eff"]))
                     + f" | steered residual {max(row['steered_residual'] or [float('nan')]):.2g}, "
                     f"projected {any(row['steered_projected'])} |")
    return "\n".join(lines) + "\n"


def run_study(scale_name: str, seeds, root, runs, jobs: int = 1) -> dict:
    """Every seed (``jobs`` worker processes), then ``summary.json`` and ``summary.md`` under ``root``."""
    scale = SCALES[scale_name]
    seeds = tuple(scale.seeds if seeds is None else seeds)
    root = Path(root)
    results = map_seeds(run_seed, seeds, scale, root, runs, jobs)
    summary = summarise(results)
    (root / "summary.json").write_text(json.dumps(su._jsonable({"scale": scale_name, "seeds": seeds,
                                                                 "summary": summary}), indent=1))
    (root / "summary.md").write_text(markdown(results, summary))
    return summary
