"""The other conditioning mechanisms against CLP, and the training distribution of w.

    comparison  SVD-LoRA (Panacea), soft tokens, written prompts trained on every weighting and on
                vertices only (Personalized Soups), each trained like the setup's CLP runs (same
                pi_ref, task, beta, steps, weightings, estimator), in three parts:
                  "enum_exact" (clp_min.studies.exact_setups: exact gradient, 2 x 64 model, evaluated exactly
                               on every held-out prompt),
                  "two"        (setup (b), RLOO, Monte Carlo on the setup's held-out prompts),
                  "enum"       (clp_min.studies.setups: RLOO, 1 x 32 model, exact on the setup's prompts),
                beside the setup's own methods (CLP full / attn / logit, Rewarded Soups, logit mixing;
                input conditioning in "two" and "enum"; CLP full by RLOO in "enum_exact"), whose numbers
                are read from the setup's front.json of the same seed and scale (for the exact parts the
                exact reference statistics must agree: same pi_ref, same trees).
    w_dist      CLP attn in "enum" trained under Dirichlet(alpha) for alpha in 0.3, 1, 3, and under
                Dirichlet(1) with a share p of vertices, p in 0.25 (the setups' default), 0.5; exact
                normalised regret per weighting, averaged by simplex region.

Measures, per method and seed: exact average normalised regret and its worst case over the grid
(enum), steerability (Spearman rank correlation of w_i and R_i, mean over rewards; theory.pareto),
hypervolume in (R, -K) (clp_min.studies.targets.hypervolumes_with_kl: reference (0 .. 0, -1.1 K_max), K_max
over the methods of that seed), and the trainable parameters of each method (the parameter budget:
CLP trains every parameter of the policy, the mechanisms only their own; Rewarded Soups and logit
mixing count the m single-objective experts).

Regions of the simplex: "near vertices" where max_i w_i >= NEAR_VERTEX, "interior" elsewhere.
Per-seed results are written as ``OUT/<part>/seed{s}.json`` and reused when written at the same scale from the
same setup front and trained policies (``provenance``: sha256 of each).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from clp_min.studies import evaluate as ev
from clp_min.studies import exact_setups as xs
from clp_min.studies import setups as su
from clp_min.studies.targets import hypervolumes_with_kl
from clp_min import task as tk
from clp_min.model import GPT
from clp_min.pretrain import model_config
from clp_min.task import sample_prompts
from clp_min.run_folder import file_sha256
from clp_min.train import build_policy
from theory import pareto
from theory.weights import simplex_grid

MECHANISMS = {  # method: TrainConfig fields besides the setups' (prompt_grid is the evaluation grid's n)
    "SVD-LoRA": dict(conditioning="svd_lora", lora_rank=4, lora_layers="attn+mlp+logit"),
    "soft tokens": dict(conditioning="soft_tokens", soft_tokens=4),
    "prompt tokens": dict(conditioning="prompt_tokens"),
    "prompt tokens (vertices)": dict(conditioning="prompt_tokens", weights="vertices", p_vertex=1.0),
}
W_DISTRIBUTIONS = {  # CLP attn in "enum" under each training distribution of w
    "Dirichlet 0.3": dict(weights="dirichlet", alpha=0.3, p_vertex=0.25),
    "Dirichlet 1": dict(weights="dirichlet", alpha=1.0, p_vertex=0.25),
    "Dirichlet 3": dict(weights="dirichlet", alpha=3.0, p_vertex=0.25),
    "Dirichlet 1 + 25% vertices": su.TRAIN_WEIGHTS,  # the setups' own CLP attn run (shared folder)
    "Dirichlet 1 + 50% vertices": dict(weights="vertices", alpha=1.0, p_vertex=0.5),
}
W_DIST_SCOPE = "attn"
NEAR_VERTEX = 0.8
PARTS = ("enum_exact", "w_dist", "two", "enum")  # run in this order
SETUP_OF = {"enum_exact": "enum_exact", "w_dist": "enum", "two": "two", "enum": "enum"}  # whose front.json


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


def mechanism_configs(setup: str, scale: su.Scale, seed: int, runs) -> dict:
    """``{method: TrainConfig}`` of the mechanisms in a setup (same task, pi_ref, steps and weightings as CLP)."""
    base = su._base(setup, seed, runs)
    tag = "-".join(su.SETUPS[setup]["rewards"])
    return {name: su._config(su.SETUPS[setup], scale, seed, base / "ref.safetensors", base / f"{tag}_{_slug(name)}",
                             **{**su.TRAIN_WEIGHTS, "prompt_grid": scale.grid, **kw})
            for name, kw in MECHANISMS.items()}


def w_distribution_configs(scale: su.Scale, seed: int, runs) -> dict:
    """``{distribution: TrainConfig}`` of CLP attn in "enum"; the setups' default shares their folder."""
    base = su._base("enum", seed, runs)
    tag = "-".join(su.SETUPS["enum"]["rewards"])
    cfgs = {}
    for name, kw in W_DISTRIBUTIONS.items():
        out = base / (f"{tag}_clp_{W_DIST_SCOPE}" if kw is su.TRAIN_WEIGHTS else f"{tag}_wdist_{_slug(name)}")
        cfgs[name] = su._config(su.SETUPS["enum"], scale, seed, base / "ref.safetensors", out,
                                conditioning=W_DIST_SCOPE, **kw)
    return cfgs


def exact_mechanism_configs(xscale, seed: int, runs) -> dict:
    """``{method: TrainConfig}`` of the mechanisms in "enum_exact" (exact gradient, like its CLP runs)."""
    base = Path(runs) / f"seed{seed}" / "enum_exact"
    return {name: xs._config(xscale, seed, base / "ref.safetensors", base / _slug(name), xscale.steps,
                             rewards=("coverage", "brevity"), estimator="exact",
                             **{**su.TRAIN_WEIGHTS, "prompt_grid": xscale.grid, **kw})
            for name, kw in MECHANISMS.items()}


def part_configs(part: str, scale, seed: int, runs) -> dict:
    """``{method: TrainConfig}`` that a part trains at one seed (``scale``: an ExactScale for "enum_exact")."""
    if part == "enum_exact":
        return exact_mechanism_configs(scale, seed, runs)
    if part == "w_dist":
        return w_distribution_configs(scale, seed, runs)
    return mechanism_configs(part, scale, seed, runs)


def planned(scale: su.Scale, runs) -> tuple:
    """``(pi_ref args per path, {out: TrainConfig})`` of every run the study trains, all seeds."""
    refs, cfgs = {}, {}
    for seed in scale.seeds:
        for setup in ("enum", "two"):
            args = su.reference_args(setup, scale, seed, runs)
            refs[str(args[-1])] = args
            cfgs.update({c.out: c for c in mechanism_configs(setup, scale, seed, runs).values()})
        cfgs.update({c.out: c for c in w_distribution_configs(scale, seed, runs).values()})
    return refs, cfgs


def planned_exact(xscale, runs) -> tuple:
    """``(pi_ref args per path, {out: TrainConfig})`` of the study's runs in "enum_exact", all seeds."""
    refs, cfgs = {}, {}
    for seed in xscale.seeds:
        args = xs.reference_args(xscale, seed, runs)
        refs[str(args[-1])] = args
        cfgs.update({c.out: c for c in exact_mechanism_configs(xscale, seed, runs).values()})
    return refs, cfgs


def train_all(scale: su.Scale | None, runs, jobs: int, xscale=None) -> None:
    """Pretrain the pi_refs, then train every planned run (those of "two" and "enum" at ``scale``, of
    "enum_exact" at ``xscale``; ``None`` skips them), in ``jobs`` processes (clp_min.studies.jobs)."""
    from clp_min.studies import jobs as jb

    refs, cfgs = planned(scale, runs) if scale is not None else ({}, {})
    if xscale is not None:
        more_refs, more_cfgs = planned_exact(xscale, runs)
        refs.update(more_refs)
        cfgs.update(more_cfgs)
    jb.run_pool(refs, cfgs, jobs)


def trainable_count(cfg) -> int:
    """Trainable parameters of ``cfg``'s policy, built on a fresh GPT of its size."""
    task = cfg.task()
    policy = build_policy(cfg, GPT(model_config(task, cfg.n_layer, cfg.n_head, cfg.n_embd)))
    return int(sum(p.numel() for p in policy.parameters() if p.requires_grad))


def trainable_parameters(part: str, scale, seed: int, runs) -> dict:
    """Trainable parameters of every compared method of a part (experts: Rewarded Soups and logit mixing)."""
    if part == "w_dist":
        return {n: trainable_count(c) for n, c in w_distribution_configs(scale, seed, runs).items()}
    if part == "enum_exact":
        cfgs = {**xs.enum_exact_configs(scale, seed, runs), **exact_mechanism_configs(scale, seed, runs)}
    else:
        cfgs = {**su.run_configs(part, scale, seed, runs), **mechanism_configs(part, scale, seed, runs)}
    expert = [n for n in cfgs if n.startswith(("ft_", "expert "))]
    counts = {n: trainable_count(c) for n, c in cfgs.items() if n not in expert}
    counts["Rewarded Soups"] = counts["logit mixing"] = sum(trainable_count(cfgs[n]) for n in expert)
    return counts


def regions(W: np.ndarray) -> dict:
    """Boolean masks over the grid ``[K]``: near the vertices (max_i w_i >= NEAR_VERTEX) and the interior."""
    near = W.max(axis=1) >= NEAR_VERTEX
    return {"near vertices": near, "interior": ~near}


def exact_measures(W: np.ndarray, stats: dict, regret: dict) -> dict:
    """Per method: mean and worst normalised regret over the grid, by region too, steerability, HV in (R, -K)."""
    hvk = hypervolumes_with_kl(stats)
    out = {}
    for name, s in stats.items():
        r = np.asarray(regret[name])
        out[name] = {"mean_regret": float(r.mean()), "worst_regret": float(r.max()),
                     "regret_by_region": {k: float(r[mask].mean()) for k, mask in regions(W).items()},
                     "rank_correlation": float(np.nanmean(pareto.steerability(W, np.asarray(s["rewards"]))
                                                          ["rank_correlation"])),
                     "hypervolume_R_negK": hvk[name]}
    return out


def mc_measures(W: np.ndarray, stats: dict) -> dict:
    """Per method: reward-space HV (reference 0), HV in (R, -K), steerability (Monte Carlo)."""
    hvk = hypervolumes_with_kl(stats)
    return {name: {"hypervolume": pareto.hypervolume(np.asarray(s["rewards"]), np.zeros(W.shape[1])),
                   "hypervolume_R_negK": hvk[name],
                   "rank_correlation": float(np.nanmean(pareto.steerability(W, np.asarray(s["rewards"]))
                                                        ["rank_correlation"]))}
            for name, s in stats.items()}


def _check_same_reference(mine: dict, theirs: dict, setup: str, seed: int) -> None:
    a, b = np.asarray(mine["objective"]), np.asarray(theirs["objective"])
    if a.shape != b.shape or not np.allclose(a, b, rtol=0, atol=1e-9):
        raise ValueError(f"fronts: setup {setup} seed {seed}: the front.json's exact pi_ref statistics differ "
                         f"from this run's (another pi_ref or other trees); rerun the setup at this scale")


def _enum_eval(scale: su.Scale, seed: int, runs) -> tuple:
    """``(pi_ref, task, W, prompts)`` of "enum" at one seed: the setup's pi_ref, grid and exact prompts."""
    pi_ref = su.reference_model(*su.reference_args("enum", scale, seed, runs))
    task = su.TrainConfig(**su.ENUM_TASK, rewards=su.SETUPS["enum"]["rewards"]).task()
    prompts = sample_prompts(task, scale.exact_prompts, torch.Generator().manual_seed(
        seed + su.HELDOUT_SEED_OFFSET + 1))  # the setup's exact prompts (clp_min.studies.setups.run_setup)
    return pi_ref, task, su.grid("enum", scale), prompts


def compare_enum(front: dict, scale: su.Scale, seed: int, runs, progress: bool) -> dict:
    """The mechanisms in "enum", exact, beside the setup's methods from its ``front.json`` ``front``."""
    pi_ref, task, W, prompts = _enum_eval(scale, seed, runs)
    methods = {n: ev.policy_method(n, su.trained(c, progress))
               for n, c in mechanism_configs("enum", scale, seed, runs).items()}
    mine = ev.exact_front(methods, pi_ref, task, W, prompts, su.BETA)
    _check_same_reference(mine["reference"], front["exact"]["reference"], "enum", seed)
    stats = {**front["exact"]["methods"], **mine["methods"]}
    regret = {**front["exact"]["normalised_regret"], **mine["normalised_regret"]}
    return {"weights": W, "stats": stats, "optimal": mine["optimal"], "reference": mine["reference"],
            "measures": exact_measures(W, stats, regret), "normalised_regret": regret}


def compare_w_dist(front: dict, scale: su.Scale, seed: int, runs, progress: bool) -> dict:
    """CLP attn in "enum" under each training distribution of w, exact on the setup's prompts."""
    pi_ref, task, W, prompts = _enum_eval(scale, seed, runs)
    dist = {n: ev.policy_method(n, su.trained(c, progress)) for n, c in w_distribution_configs(scale, seed,
                                                                                                runs).items()}
    mine = ev.exact_front(dist, pi_ref, task, W, prompts, su.BETA)
    _check_same_reference(mine["reference"], front["exact"]["reference"], "enum", seed)
    return {"weights": W, "stats": mine["methods"], "normalised_regret": mine["normalised_regret"],
            "measures": exact_measures(W, mine["methods"], mine["normalised_regret"])}


def compare_enum_exact(front: dict, xscale, seed: int, runs, progress: bool) -> dict:
    """The mechanisms in "enum_exact" (exact gradient; exact on every held-out prompt) beside its methods."""
    pi_ref, _ = xs._reference(xscale, seed, runs)
    task = tk.TaskConfig(**xs.ENUM_TASK, rewards=("coverage", "brevity"))
    W = simplex_grid(2, xscale.grid)
    held = xs.heldout_prompts(task)
    log_pi = {n: xs.policy_log_policies(su.trained(c, progress), task, held, W)
              for n, c in exact_mechanism_configs(xscale, seed, runs).items()}
    mine = xs.exact_regrets(xs._trees(pi_ref, task, held), log_pi, W)
    _check_same_reference(mine["reference"], front["exact"]["reference"], "enum_exact", seed)
    stats = {**front["exact"]["methods"], **mine["methods"]}
    regret = {**front["exact"]["normalised_regret"], **mine["normalised_regret"]}
    return {"weights": W, "stats": stats, "optimal": mine["optimal"], "reference": mine["reference"],
            "measures": exact_measures(W, stats, regret), "normalised_regret": regret}


def compare_two(front: dict, scale: su.Scale, seed: int, runs, progress: bool) -> dict:
    """The mechanisms in setup (b), Monte Carlo on the setup's held-out prompts, beside its methods."""
    pi_ref = su.reference_model(*su.reference_args("two", scale, seed, runs))
    task = su.TrainConfig(**su.SETUPS["two"]["task"], rewards=su.SETUPS["two"]["rewards"]).task()
    W = su.grid("two", scale)
    gen = torch.Generator().manual_seed(seed + su.HELDOUT_SEED_OFFSET)
    prompts = sample_prompts(task, scale.eval_prompts, gen)  # the setup's held-out prompts; samples differ
    mc = {n: ev.mc_front(ev.policy_method(n, su.trained(c, progress)), task, pi_ref, W, prompts,
                         scale.eval_samples, su.BETA, gen)
          for n, c in mechanism_configs("two", scale, seed, runs).items()}
    stats = {**front["monte_carlo"], **mc}
    return {"weights": W, "stats": stats, "measures": mc_measures(W, stats)}


def provenance(part: str, front: dict, scale, seed: int, runs) -> dict:
    """What a part's result is made of: its setup's front (sha256 of its canonical JSON, whose methods the
    part copies) and each of the part's trained policies (file sha256; ``None`` where not trained)."""
    blob = json.dumps(su._jsonable(front), sort_keys=True).encode()
    files = {n: Path(c.out) / "policy.safetensors" for n, c in part_configs(part, scale, seed, runs).items()}
    return {"front_sha256": hashlib.sha256(blob).hexdigest(),
            "runs_sha256": {n: file_sha256(f) if f.exists() else None for n, f in files.items()}}


def run_part(part: str, front: dict, scale, seed: int, out, runs, progress: bool = False) -> dict:
    """One part at one seed (``front``: its setup's front.json at this seed; ``scale``: the setup's scale,
    an ExactScale for "enum_exact"); written to ``OUT/part/seed{s}.json`` and reused when written at the
    same scale from the same front and the same trained policies (``provenance``), recomputed otherwise."""
    path = Path(out) / part / f"seed{seed}.json"
    same = {k: v for k, v in su._jsonable(asdict(scale)).items() if k != "seeds"}
    if path.exists():
        saved = json.loads(path.read_text())
        if ({k: v for k, v in saved["scale"].items() if k != "seeds"} == same
                and saved.get("provenance") == provenance(part, front, scale, seed, runs)):
            return saved
    compare = {"enum_exact": compare_enum_exact, "w_dist": compare_w_dist, "two": compare_two,
               "enum": compare_enum}[part]
    result = {"part": part, "seed": seed, "scale": asdict(scale),
              **compare(front, scale, seed, runs, progress),
              "parameters": trainable_parameters(part, scale, seed, runs)}
    result["provenance"] = provenance(part, front, scale, seed, runs)  # after compare: its runs are trained
    result = su._jsonable(result)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    return result


def run(fronts: dict, scale: su.Scale, out, runs, progress: bool = False, jobs: int = 1, xscale=None) -> str:
    """Every part whose setup is in ``fronts`` (``{setup: [front.json per seed]}``, as clp_min.studies.reproduce gathers
    them; "enum_exact" needs ``xscale``, its ExactScale) at every seed of its scale; writes
    ``OUT/<part>/seed*.json``; returns ``{part: [per-seed results]}`` (clp_min.studies.mechanisms_tables
    writes the report and figures from them). ``jobs > 1`` first trains the
    runs of "two" and "enum" in that many processes; evaluation finds them cached."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if jobs > 1:
        train_all(scale if {"enum", "two"} <= set(fronts) else None, runs, jobs,
                  xscale if "enum_exact" in fronts else None)
    results = {}
    for part in PARTS:
        if SETUP_OF[part] not in fronts or (part == "enum_exact" and xscale is None):
            continue
        sc = xscale if part == "enum_exact" else scale
        results[part] = [run_part(part, fronts[SETUP_OF[part]][k], sc, seed, out, runs, progress)
                         for k, seed in enumerate(sc.seeds)]
    return results
