"""Zero-shot mixing of trained experts on the misalignment sweep (THEORY.md P11, this package's extension).

Per seed and knob strength s (the sweep of ``clp_min.studies.exact_setups``: rewards (coverage, knob_s),
the enumerable task, one pi_ref per seed), two experts per regime are trained from pi_ref with the
exact gradient at the sweep models' full step budget (``steps``, Adam, cosine schedule, P prompts a step):

    "on_policy"   the exact objective J_{e_i} (each prefix weighted by the expert's own visitation)
    "remedy"      the exact objective averaged over a prefix distribution: sum_{t<T} E_{s_t ~ pi_ref} v(s_t),
                  v(s) the objective of the subtree at s (its maximiser is still pi*_{e_i}; every prefix
                  pi_ref reaches gets a gradient)

and evaluated exactly on the held-out prompts: per-token logit mixing and Rewarded Soups of the
trained experts, the ideal zero-shot (logit mixing of the exact optima), CLP full (the committed
sweep's numbers, ``results/clp_min/sweep``, not retrained), each expert's error on its own support
and under the mixture's visitation, and P11's bound (theory.trained_mixing) beside the regret.

    python -m clp_min.studies.zero_shot_trained --out results/clp_min/zero_shot_trained --seeds 0,1,2 --jobs 16
"""
from __future__ import annotations

import copy
import json
import math
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from clp_min import task as tk
from clp_min.conditioning import ParamConditioned, Unconditioned
from clp_min.oracle import exact_pg
from clp_min.run_folder import frozen
from clp_min.studies import exact_setups as es
from clp_min.studies import setups as su
from theory.trained_mixing import trained_mixing_gap
from theory.weights import simplex_grid

REGIMES = ("on_policy", "remedy")
COMMITTED_SWEEP = Path(__file__).resolve().parents[2] / "results" / "clp_min" / "sweep"


@dataclass(frozen=True)
class StudyScale:
    pretrain_steps: int = 800  # pi_ref's supervised steps (the sweep's)
    steps: int = 2000  # each expert's steps: the sweep CLP's full budget
    prompts_per_step: int = 16  # P per step (the sweep's)
    lr: float = 5e-3  # Adam, cosine schedule (the sweep's)
    strengths: tuple = tuple(float(s) for s in np.linspace(0, 1, 8))  # the sweep's knob strengths
    grid: int = 10  # simplex_grid resolution
    max_prompts: int = 0  # evaluate the first this many held-out prompts (0: all of them)


QUICK = StudyScale(pretrain_steps=20, steps=3, prompts_per_step=4, strengths=(0.0,), grid=2, max_prompts=3)


def _exact_scale(scale: StudyScale, seed: int) -> es.ExactScale:
    return replace(es.EXACT_SCALES["full"], seeds=(seed,), pretrain_steps=scale.pretrain_steps)


def reference_token_table(pi_ref, task: tk.TaskConfig, chunk: int = 256) -> torch.Tensor:
    """pi_ref's masked token log-probs of every producible response of every prompt, ``[X_all, N, T]``."""
    x = tk.all_prompts(task)
    with torch.no_grad():
        return torch.cat([exact_pg.token_log_probs(Unconditioned(pi_ref), None, x[i:i + chunk], task.vocab,
                                                   task.response_len)[0] for i in range(0, len(x), chunk)])


def prefix_averaged_objective(token_logp: torch.Tensor, ref_token_logp: torch.Tensor, r: torch.Tensor,
                              beta: float) -> torch.Tensor:
    """``sum_{t<T} E_{s_t ~ pi_ref} v(s_t)`` per prompt ``[P]`` (the remedy; t = 0 is J itself).

    ``v(s) = sum_{y below s} pi(y|s) [r(y) - beta log(pi(y|s) / pi_ref(y|s))]``; every response lies below
    exactly one prefix of each depth, so the sum runs over responses:
    ``sum_y sum_t pi_ref(y_<t) pi(y|y_<t) [r(y) - beta (S_t(y) - S^ref_t(y))]``, ``S_t`` the suffix sum of
    token log-probs from t. Args: ``token_logp``, ``ref_token_logp`` ``[P, N, T]`` (masked), ``r`` ``[P, N]``.
    """
    suffix = token_logp.flip(-1).cumsum(-1).flip(-1)  # (P, N, T): S_t
    suffix_ref = ref_token_logp.flip(-1).cumsum(-1).flip(-1)
    before_ref = ref_token_logp.cumsum(-1) - ref_token_logp  # (P, N, T): log pi_ref(y_<t)
    terms = (before_ref + suffix).exp() * (r[..., None] - beta * (suffix - suffix_ref))
    return terms.sum(dim=(1, 2))


def train_expert(pi_ref, task: tk.TaskConfig, regime: str, scale: StudyScale, seed: int,
                 ref_tokens: torch.Tensor) -> torch.nn.Module:
    """An expert for ``task``'s single reward, from a copy of pi_ref, exact gradient (section 0 / P11 remedy)."""
    table = exact_pg.ReferenceTable(pi_ref, task)
    policy = Unconditioned(copy.deepcopy(pi_ref))
    for p in policy.parameters():
        p.requires_grad_(True)
    policy.train()
    opt = torch.optim.Adam(policy.parameters(), lr=scale.lr, fused=True)
    g = torch.Generator().manual_seed(seed)
    V, T = task.vocab, task.response_len
    for step in range(scale.steps):
        for group in opt.param_groups:  # cosine, as clp_min.config.learning_rate
            group["lr"] = scale.lr * 0.5 * (1.0 + math.cos(math.pi * step / scale.steps))
        prompts = tk.draw_prompts(task, scale.prompts_per_step, g)  # (P, L)
        logp_ref, r, _ = table.lookup(prompts)  # (P, N), (P, N, 1)
        tok, _ = exact_pg.token_log_probs(policy, None, prompts, V, T)  # (P, N, T)
        if regime == "on_policy":
            J = exact_pg.exact_objective(tok.sum(-1), logp_ref, r.to(tok.dtype), torch.ones(len(prompts), 1), su.BETA)
        else:
            rows = ((prompts - 1) * table.place).sum(dim=1)  # (P,): ReferenceTable's row order
            J = prefix_averaged_objective(tok, ref_tokens[rows], r[..., 0].to(tok.dtype), su.BETA)
        opt.zero_grad(set_to_none=True)
        (-J.mean()).backward()
        opt.step()
    return frozen(policy.model)


def _expert_path(runs: Path, seed: int, name: str) -> Path:
    return runs / f"seed{seed}" / "zero_shot_trained" / f"{name}.pt"


def _training_fields(scale: dict) -> dict:
    """The fields of a ``StudyScale`` that change an expert (a cached expert is reused when these match)."""
    return {k: scale[k] for k in ("pretrain_steps", "steps", "prompts_per_step", "lr")}


def _expert_job(args) -> str:
    """Train one expert (or find it cached with the same spec); run in a worker process."""
    runs, seed, name, regime, reward, s, scale = args
    torch.set_num_threads(1)
    path = _expert_path(runs, seed, name)
    spec = {"regime": regime, "reward": reward, "strength": s, "scale": _training_fields(asdict(scale)), "seed": seed}
    if path.exists():
        saved = torch.load(path, weights_only=False)["spec"]
        if {**saved, "scale": _training_fields(saved["scale"])} == spec:
            return name
    pi_ref = su.reference_model(*es.reference_args(_exact_scale(scale, seed), seed, runs))
    task = tk.TaskConfig(**es.ENUM_TASK, rewards=(reward,), strength=s)
    model = train_expert(pi_ref, task, regime, scale, seed * 2 ** 20 + zlib.crc32(name.encode()) % 2 ** 20,
                         reference_token_table(pi_ref, task))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"spec": spec, "state": model.state_dict()}, path)
    return name


def expert_jobs(seed: int, scale: StudyScale, runs: Path) -> list:
    """Every expert of one seed: coverage and knob_s for each s, in each regime."""
    jobs = []
    for regime in REGIMES:
        jobs.append((runs, seed, f"{regime}_coverage", regime, "coverage", 0.0, scale))
        jobs += [(runs, seed, f"{regime}_knob_s{s:.4f}", regime, "knob", s, scale) for s in scale.strengths]
    return jobs


def _load_expert(pi_ref, runs: Path, seed: int, name: str):
    model = copy.deepcopy(pi_ref)
    model.load_state_dict(torch.load(_expert_path(runs, seed, name), weights_only=False)["state"])
    return frozen(model)


def _committed_clp(seed: int, s: float):
    path = COMMITTED_SWEEP / f"seed{seed}" / "sweep.json"
    if not path.exists():
        return None
    match = [t for t in json.loads(path.read_text())["tasks"] if abs(t["strength"] - s) < 1e-9]
    return match[0]["regret"]["CLP full"] if match else None


def p11_terms(trees: list, per_expert: list, W: np.ndarray, scale_w: np.ndarray) -> dict:
    """P11 (theory.trained_mixing) summed over prompts, normalised like the regrets (by the mean over prompts of
    ``J_w(pi*_w) - J_w(pi_ref)``, ``scale_w`` ``[K]``), then averaged over the grid (errors over interior w)."""
    res = [trained_mixing_gap(tree, [np.stack([e[p][t] for e in per_expert]) for t in range(tree.horizon)],
                              W, su.BETA) for p, tree in enumerate(trees)]
    mean = {k: np.mean([r[k] for r in res], axis=0) for k in res[0]}
    inner = (W > 0).all(axis=1)
    return {"regret": float(np.mean(mean["regret"] / scale_w)), "bound": float(np.mean(mean["bound"] / scale_w)),
            "ideal_regret": float(np.mean(mean["ideal_regret"] / scale_w)),
            "error_under_mixture": mean["error_under_mixture"][inner].mean(axis=0).tolist(),
            "kl_error_under_mixture": mean["kl_error_under_mixture"][inner].mean(axis=0).tolist(),
            "error_own": mean["error_own"].tolist(), "kl_error_own": mean["kl_error_own"].tolist(),
            "divergence_under_mixture": mean["divergence_under_mixture"][inner].mean(axis=0).tolist(),
            "divergence_own": mean["divergence_own"].tolist(),
            "bound_convex": float(np.mean(mean["bound_convex"] / scale_w))}


def evaluate_seed(seed: int, scale: StudyScale, runs: Path) -> dict:
    """Every method and P11 term at every strength, exactly, on the held-out prompts (experts already trained)."""
    es_scale = _exact_scale(scale, seed)
    pi_ref = su.reference_model(*es.reference_args(es_scale, seed, runs))
    W = simplex_grid(2, scale.grid)
    held = es.heldout_prompts(tk.TaskConfig(**es.ENUM_TASK))
    held = held[:scale.max_prompts] if scale.max_prompts else held
    ref_trees = es._trees(pi_ref, tk.TaskConfig(**es.ENUM_TASK, rewards=("coverage",)), held)
    rows = []
    for s in scale.strengths:
        task = tk.TaskConfig(**es.ENUM_TASK, rewards=("coverage", "knob"), strength=s)
        trees = es.retarget(ref_trees, task, held)
        row = {"strength": s, "eps_1": es.eps_depth1(trees)["max"], "clp_full_committed": _committed_clp(seed, s)}
        log_pi = {"ideal zero-shot": es.ideal_zero_shot(trees, W, su.BETA)}
        per = {}
        for regime in REGIMES:
            experts = [_load_expert(pi_ref, runs, seed, f"{regime}_coverage"),
                       _load_expert(pi_ref, runs, seed, f"{regime}_knob_s{s:.4f}")]
            per[regime] = es.expert_log_policies(experts, task, held)
            log_pi[f"logit mixing ({regime})"] = es.logit_mix_log_policies(per[regime], W)
            log_pi[f"Rewarded Soups ({regime})"] = es.policy_log_policies(
                frozen(ParamConditioned.from_experts(experts, "full")), task, held, W)
        res = es.exact_regrets(trees, log_pi, W)
        row["regret"] = res["mean_normalised_regret"]
        scale_w = res["optimal"]["objective"] - res["reference"]["objective"]  # (K,)
        for regime in REGIMES:
            row[regime] = {"expert_regret": {r: es.expert_regret(trees, e, i, 2)
                                             for i, (r, e) in enumerate(zip(task.rewards, per[regime]))},
                           **p11_terms(trees, per[regime], W, scale_w)}
        rows.append(row)
    return {"seed": seed, "scale": asdict(scale), "beta": su.BETA, "prompts": len(held), "weights": W,
            "tasks": rows}


def _reference_job(args):
    seed, scale, runs = args
    torch.set_num_threads(1)
    su.reference_model(*es.reference_args(_exact_scale(scale, seed), seed, runs))


def _evaluate_job(args) -> dict:
    seed, scale, runs = args
    torch.set_num_threads(1)
    return su._jsonable(evaluate_seed(seed, scale, runs))


def run(out, seeds, scale: StudyScale, runs, jobs: int = 1) -> list:
    """Pretrain pi_ref per seed, train every expert, evaluate each seed (each stage on ``jobs`` processes);
    writes ``seed*.json``, ``report.md`` and ``regret_vs_s.png`` under ``out``."""
    out, runs = Path(out), Path(runs)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    stages = [(_reference_job, [(seed, scale, runs) for seed in seeds]),
              (_expert_job, [j for seed in seeds for j in expert_jobs(seed, scale, runs)]),
              (_evaluate_job, [(seed, scale, runs) for seed in seeds])]
    wall = {}
    for (fn, todo), name in zip(stages, ("pretrain", "train_experts", "evaluate")):
        t = time.perf_counter()
        if jobs > 1:
            with ProcessPoolExecutor(jobs) as pool:
                done = list(pool.map(fn, todo))
        else:
            done = [fn(j) for j in todo]
        wall[name] = time.perf_counter() - t
    results = done
    for r in results:
        r["wall_s"] = {**wall, "total": time.perf_counter() - start, "jobs": jobs, "seeds": list(seeds)}
        (out / f"seed{r['seed']}.json").write_text(json.dumps(r, indent=1))
    write_report(results, out)
    return results


def ranking_lines(results: list) -> list:
    """Over every (seed, s, regime) cell: Spearman of the trained mixture's excess over the ideal with the experts'
    mean ``D`` under the mixture's visitation and under their own (P11 (g); a line each, none below 3 cells)."""
    from scipy.stats import spearmanr

    cells = [(t["regret"][f"logit mixing ({g})"] - t["regret"]["ideal zero-shot"],
              np.mean(t[g]["divergence_under_mixture"]), np.mean(t[g]["divergence_own"]))
             for r in results for t in r["tasks"] for g in REGIMES]
    if len(cells) < 3:
        return []
    excess, mix, own = np.array(cells).T
    return ["## What the regret follows", "",
            f"Over the {len(cells)} (seed, s, regime) cells, Spearman rank correlation of logit mixing's regret minus "
            f"the ideal's with the experts' mean D under the mixture's visitation: "
            f"{spearmanr(excess, mix).statistic:.2f}; under their own visitation: "
            f"{spearmanr(excess, own).statistic:.2f}.",
            ""]


def write_report(results: list, out: Path) -> None:
    """``report.md`` (one table per seed) and ``regret_vs_s.png`` (mean over seeds, the bound dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = ["# Zero-shot mixing of trained experts on the misalignment sweep", "",
             f"Scale: `{results[0]['scale']}`; {results[0]['prompts']} held-out prompts; seeds "
             f"{[r['seed'] for r in results]}. Average normalised regret over the grid (exact). CLP full: the "
             "committed sweep's number (results/clp_min/sweep; not retrained here). Experts: trained by this study "
             "from pi_ref (on_policy: J_{e_i}; remedy: J averaged over pi_ref's prefixes). P11 bound: the minimum of "
             "(d)-(g) (THEORY.md). Errors of each expert (coverage, knob) from its optimum, summed over depth: "
             "D_i (P11 (g), nats) under its own visitation and tokens (= KL_seq(pi_i ‖ pi*_i)) and under the trained "
             "mixture's (interior weightings); then the mixture's Hilbert distance d_i (KL(pi* ‖ pi_i) in "
             "brackets).", ""]
    for r in results:
        lines += [f"## seed {r['seed']}", "", "| s | eps_1 | ideal | CLP full | regime | logit mixing | P11 bound | "
                  "Rewarded Soups | expert regret (cov, knob) | D own (cov, knob) | D under mixture (cov, knob) | "
                  "Hilbert (KL) under mixture (cov, knob) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for t in r["tasks"]:
            clp = "—" if t["clp_full_committed"] is None else f"{t['clp_full_committed']:.4f}"
            for regime in REGIMES:
                x = t[regime]
                pair = lambda a, b: f"{a[0]:.2f} ({b[0]:.2f}), {a[1]:.2f} ({b[1]:.2f})"  # noqa: E731
                lines.append(f"| {t['strength']:.3f} | {t['eps_1']:.3f} | {t['regret']['ideal zero-shot']:.1e} | "
                             f"{clp} | {regime} | {t['regret'][f'logit mixing ({regime})']:.4f} | {x['bound']:.4f} | "
                             f"{t['regret'][f'Rewarded Soups ({regime})']:.4f} | "
                             f"{x['expert_regret']['coverage']:.4f}, {x['expert_regret']['knob']:.4f} | "
                             f"{x['divergence_own'][0]:.3f}, {x['divergence_own'][1]:.3f} | "
                             f"{x['divergence_under_mixture'][0]:.3f}, {x['divergence_under_mixture'][1]:.3f} | "
                             f"{pair(x['error_under_mixture'], x['kl_error_under_mixture'])} |")
        lines.append("")
    lines += ranking_lines(results)
    (out / "report.md").write_text("\n".join(lines) + "\n")

    s = np.array([t["strength"] for t in results[0]["tasks"]])
    mean = lambda f: np.mean([[f(t) for t in r["tasks"]] for r in results], axis=0)  # noqa: E731
    fig, ax = plt.subplots(figsize=(6, 4.2))
    ax.plot(s, mean(lambda t: t["regret"]["logit mixing (on_policy)"]), "o-", label="logit mixing (trained)")
    ax.plot(s, mean(lambda t: t["on_policy"]["bound"]), "--", color="C0", label="P11 bound (logit mixing)")
    ax.plot(s, mean(lambda t: t["regret"]["Rewarded Soups (on_policy)"]), "s-", label="Rewarded Soups (trained)")
    ax.plot(s, np.maximum(mean(lambda t: t["regret"]["ideal zero-shot"]), 1e-16), "^-", label="ideal zero-shot")
    clp = [[t["clp_full_committed"] for t in r["tasks"]] for r in results]
    if all(c is not None for row in clp for c in row):
        ax.plot(s, np.mean(clp, axis=0), "d-", label="CLP full (committed sweep)")
    ax.plot(s, mean(lambda t: t["regret"]["logit mixing (remedy)"]), "x:", label="logit mixing, remedy experts")
    ax.set(xlabel="knob strength s", ylabel="average normalised regret (exact)",
           title=f"trained zero-shot vs s ({len(results)} seed{'s' if len(results) > 1 else ''})")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "regret_vs_s.png", dpi=100)
    plt.close(fig)
