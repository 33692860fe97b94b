"""``clp reproduce``: theory claims, toy claims and the clp_min setups in one report.

The targets of issue 5 are pure functions of the per-seed results (bsuite style);
each row says the measured value, the target and whether it is met. Targets are
the issue's, never tuned: a target not met is reported with its number.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from clp_min import setups as su
from theory import pareto


def _row(target: str, measured: str, value: float, rule: str, met: bool | None, per_seed=None) -> dict:
    return {"target": target, "measured": measured, "value": float(value), "rule": rule,
            "met": None if met is None else bool(met), "per_seed": per_seed}


def _hv(res: dict, name: str) -> float:
    return res["measures"]["methods"][name]["hypervolume"]


def hypervolumes_with_kl(stats: dict) -> dict:
    """HV of every method's points ``(R_1 .. R_m, -K)`` (THEORY.md P2's m + 1 objectives).

    ``stats``: ``{method: {"rewards" [K, m], "kl" [K]}}``; reference point ``(0 .. 0, -1.1 K_max)``
    with ``K_max`` the largest KL of any method here. Reported beside the reward-space
    hypervolume, which ignores what each point pays in KL.
    """
    k_max = max(float(np.max(s["kl"])) for s in stats.values())
    m = np.asarray(next(iter(stats.values()))["rewards"]).shape[1]
    ref = np.append(np.zeros(m), -1.1 * k_max)
    return {n: pareto.hypervolume(np.column_stack([np.asarray(s["rewards"]), -np.asarray(s["kl"])]), ref)
            for n, s in stats.items()}


def targets(results: dict) -> list:
    """Rows for every target (and reported numbers) from ``{setup: [result per seed]}``."""
    rows = []
    for setup in ("two", "three"):
        runs = results.get(setup, [])
        if not runs:
            continue
        for scope in su.CLP_SCOPES:
            diff = [_hv(r, f"CLP {scope}") - _hv(r, "Rewarded Soups") for r in runs]
            rows.append(_row(f"({'b' if setup == 'two' else 'c'}) CLP {scope} front dominates Rewarded Soups",
                             "min over seeds of HV(CLP) - HV(RS), Monte Carlo", min(diff),
                             "> 0 on every seed", min(diff) > 0, diff))
        for scope in su.CLP_SCOPES:
            hvk = [hypervolumes_with_kl(r["monte_carlo"]) for r in runs]
            diff = [h[f"CLP {scope}"] - h["Rewarded Soups"] for h in hvk]
            rows.append(_row(f"({'b' if setup == 'two' else 'c'}) CLP {scope} against Rewarded Soups in (R, -K)",
                             "min over seeds of HV(CLP) - HV(RS) on (R_1..R_m, -K), Monte Carlo", min(diff),
                             "report", None, diff))
        for scope in su.CLP_SCOPES:
            diff = [r["measures"]["methods"][f"CLP {scope}"]["total_spread"]
                    - r["measures"]["methods"]["input"]["total_spread"] for r in runs]
            rows.append(_row(f"({'b' if setup == 'two' else 'c'}) CLP {scope} steers more widely than input",
                             "min over seeds of sum_i spread(R_i) CLP - input", min(diff),
                             "> 0 on every seed", min(diff) > 0, diff))
    for enum in ("enum", "enum_large"):
        runs = results.get(enum, [])
        if not runs:
            continue
        best = [min(r["exact"]["mean_normalised_regret"][f"CLP {s}"] for s in su.CLP_SCOPES) for r in runs]
        rows.append(_row(f"({enum}) best CLP's average normalised regret", "max over seeds of min over scopes, exact",
                         max(best), "< 0.05 on every seed", max(best) < 0.05, best))
        hvk = [hypervolumes_with_kl(r["exact"]["methods"]) for r in runs]
        for scope in su.CLP_SCOPES:
            for key, label in (("measures", "R"), (None, "(R, -K)")):
                if key:
                    diff = [r["exact"]["measures"]["methods"][f"CLP {scope}"]["hypervolume"]
                            - r["exact"]["measures"]["methods"]["Rewarded Soups"]["hypervolume"] for r in runs]
                else:
                    diff = [h[f"CLP {scope}"] - h["Rewarded Soups"] for h in hvk]
                rows.append(_row(f"({enum}) CLP {scope} against Rewarded Soups in {label}",
                                 f"min over seeds of HV(CLP) - HV(RS) on {label}, exact", min(diff),
                                 "report", None, diff))
        for name in runs[0]["exact"]["mean_normalised_regret"]:
            vals = [r["exact"]["mean_normalised_regret"][name] for r in runs]
            rows.append(_row(f"({enum}) {name}: average normalised regret", "mean over seeds, exact",
                             float(np.mean(vals)), "report", None, vals))
    runs = results.get("kl", [])
    if runs:
        clp = max(r["monte_carlo"]["CLP full (KL)"]["model_calls_per_token"] for r in runs)
        rea = min(r["monte_carlo"]["realignment"]["model_calls_per_token"] for r in runs)
        rows.append(_row("(a) CLP decodes with one model call per token", "model calls per token (max over seeds)",
                         clp, "== 1", clp == 1))
        rows.append(_row("(a) realignment needs two model calls per token", "model calls per token (min over seeds)",
                         rea, "== 2", rea == 2))
        diff = [_hv(r, "CLP full (KL)") - _hv(r, "realignment") for r in runs]
        rows.append(_row("(a) CLP (KL) front against realignment", "min over seeds of HV(CLP) - HV(realign), (R, -K)",
                         min(diff), "report", None, diff))
    return rows


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def write_report(out: Path, theory_rows: list, toy_rows: list, target_rows: list, results: dict,
                 header: str) -> Path:
    """``report.md`` and ``report.json`` under ``out``; figures are referenced by relative path."""
    lines = ["# clp reproduce", "", header, "", "## clp_min targets (issue 5)", "",
             "| target | measured | value | rule | met | per seed |", "|---|---|---|---|---|---|"]
    for r in target_rows:
        met = "INFO" if r["met"] is None else ("met" if r["met"] else "NOT met")
        seeds = "" if r["per_seed"] is None else ", ".join(_fmt(float(v)) for v in r["per_seed"])
        lines.append(f"| {r['target']} | {r['measured']} | {r['value']:.4g} | {r['rule']} | {met} | {seeds} |")
    lines += ["", "## Fronts (seed 0)", ""]
    for setup, runs in results.items():
        if runs:
            lines.append(f"![{setup}]({setup}/seed{runs[0]['seed']}/fronts.png)")
            if setup.startswith("enum"):
                lines.append(f"![{setup} exact]({setup}/seed{runs[0]['seed']}/fronts_exact.png)")
    lines += ["", "## Per-method measures (mean over seeds)", ""]
    for setup, runs in results.items():
        if not runs:
            continue
        lines += [f"### setup {setup}", "", "| method | hypervolume | total spread | rank corr. (mean) | calls/token |",
                  "|---|---|---|---|---|"]
        for name in runs[0]["measures"]["methods"]:
            hv = np.mean([r["measures"]["methods"][name]["hypervolume"] for r in runs])
            sp = [r["measures"]["methods"][name]["total_spread"] for r in runs]
            rc = [np.nanmean(r["measures"]["methods"][name]["rank_correlation"]) for r in runs
                  if r["measures"]["methods"][name]["rank_correlation"] is not None]
            calls = runs[0]["monte_carlo"][name]["model_calls_per_token"]
            lines.append(f"| {name} | {hv:.4g} | {np.mean(sp) if None not in sp else float('nan'):.4g} | "
                         f"{np.mean(rc) if rc else float('nan'):.3g} | {calls:g} |")
        lines.append("")
    lines += ["## Theory claims", ""]
    if theory_rows:
        lines += ["| claim | measured | value | threshold | status |", "|---|---|---|---|---|"]
        for r in theory_rows:
            lines.append(f"| {r['claim']} | {r['measured']} | {_fmt(r['value'])} | {r['threshold']} | "
                         f"{'PASS' if r['passed'] else 'FAIL'} |")
    else:
        lines.append("(not run: theory.claims.run_theory_claims is not available)")
    lines += ["", "## Toy claims", ""]
    if toy_rows:
        lines += ["| id | claim | value | threshold | status |", "|---|---|---|---|---|"]
        for c in toy_rows:
            lines.append(f"| {c['id']} | {c['statement']} | {_fmt(c['value'])} | {c['threshold']} | {c['status']} |")
        lines.append("\nFull toy report: [toy/report.md](toy/report.md)")
    else:
        lines.append("(not run: toy.claims is not available)")
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    (out / "report.json").write_text(json.dumps({"targets": target_rows, "theory": theory_rows, "toy": toy_rows},
                                                indent=1, default=str) + "\n")
    return path


def summary_table(rows: list) -> str:
    """The targets as a short markdown table (for README / docs): target, value, rule, met."""
    lines = ["| target | value | rule | met |", "|---|---|---|---|"]
    for r in rows:
        if r["met"] is None:
            continue
        lines.append(f"| {r['target']} | {r['value']:.4g} | {r['rule']} | {'yes' if r['met'] else '**no**'} |")
    return "\n".join(lines) + "\n"


def run_theory(quick: bool) -> list:
    try:
        from theory.claims import run_theory_claims
    except ImportError:
        return []
    return run_theory_claims(seed=0, quick=quick)


def run_toy(quick: bool, out: Path, progress: bool) -> list:
    try:
        from toy.claims import run_claims
        from toy.experiments import ToyConfig
    except ImportError:
        return []
    cfg = ToyConfig.quick(0) if quick else ToyConfig.full(0)
    return [{"id": c.id, "statement": c.statement, "value": c.value, "threshold": c.threshold,
             "status": c.status} for c in run_claims(cfg, out, progress=progress)]


def _front(name, seed, scale, out: Path, progress, runs, reuse: bool) -> dict:
    path = out / name / f"seed{seed}" / "front.json"
    if reuse and path.exists():
        saved = json.loads(path.read_text())
        same = {k: v for k, v in json.loads(json.dumps(asdict(scale))).items() if k != "seeds"}
        if {k: v for k, v in saved["scale"].items() if k != "seeds"} == same:
            return saved
    return su.run_setup(name, seed, scale, out, progress, runs)


def reproduce(out, quick: bool, progress: bool = False, setups=("kl", "two", "three", "enum", "enum_large"),
              with_claims: bool = True, runs=None, seeds=None, reuse_fronts: bool = False, jobs: int = 1) -> dict:
    """Everything, written under ``out``; returns ``{"targets", "report"}``.

    Trained models are cached under ``runs`` (default ``out/runs``; rerunning reuses finished ones).
    ``seeds`` overrides the scale's seeds; ``reuse_fronts`` reads a setup's ``front.json``
    instead of re-evaluating when it was written at the same scale (evaluation is seeded,
    so re-evaluating gives the same numbers). ``jobs > 1`` trains the setups' runs first
    in that many processes (clp_min.jobs); the evaluation then finds them cached.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    scale = su.SCALES["quick" if quick else "full"]
    if seeds is not None:
        scale = replace(scale, seeds=tuple(seeds))
    seconds = {}
    start = time.perf_counter()
    theory_rows = run_theory(quick) if with_claims else []
    seconds["theory claims"] = time.perf_counter() - start
    start = time.perf_counter()
    toy_rows = run_toy(quick, out / "toy", progress) if with_claims else []
    seconds["toy claims"] = time.perf_counter() - start
    if jobs > 1:
        from clp_min.jobs import train_all

        start = time.perf_counter()
        train_all(setups, scale, out / "runs" if runs is None else runs, jobs, progress)
        seconds[f"training ({jobs} jobs)"] = time.perf_counter() - start
    results = {}
    for name in setups:
        start = time.perf_counter()
        results[name] = [_front(name, seed, scale, out, progress, runs, reuse_fronts) for seed in scale.seeds]
        seconds[f"setup {name}" + (" (front.json reused)" if reuse_fronts else "")] = time.perf_counter() - start
    rows = targets(results)
    header = (f"Scale: `{scale}`; beta = {su.BETA}; model {su.MODEL}. Training weightings: {su.TRAIN_WEIGHTS}.\n\n"
              "Setups: (a) `kl` one reward (coverage), KL weight steered; (b) `two` coverage + brevity; "
              "(c) `three` coverage + brevity + order; `enum` = (b) with V = 4, T = 4, evaluated exactly; "
              "`enum_large` = `enum` with a 2-layer, 64-wide model and 3x the RL steps (clp_min/setups.py).\n\n"
              "Rewards: R_1 = coverage, R_2 = brevity, R_3 = order (clp_min/task.py); all in [0, 1].\n\n"
              "Hypervolume (HV) reference point: the worst reward vector 0; for (a) (R, -K) with (0, -1.1 K_max), "
              "K_max the largest KL of any method in that seed. The targets use the reward-space HV at fixed "
              "beta (THEORY.md section 6); the INFO rows 'in (R, -K)' add -K as an objective (P2's m + 1 "
              "objectives, reference (0 .. 0, -1.1 K_max)), since the reward-space HV ignores what each point "
              "pays in KL. Monte Carlo HVs carry sampling noise (each reward's standard error is in front.json). "
              "Spread: max - min of each reward over the weighting grid; 'steers more widely' compares the "
              "sum of the spreads.\n\n"
              "Wall time: " + ", ".join(f"{k} {v:.0f}s" for k, v in seconds.items()))
    path = write_report(out, theory_rows, toy_rows, rows, results, header)
    return {"targets": rows, "report": str(path)}
