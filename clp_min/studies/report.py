"""``clp reproduce``'s report: report.md and report.json from the targets, the claims and the fronts.

The claims are run here (theory.claims, toy.claims); the setups by ``clp_min.studies.reproduce``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from clp_min.studies import exact_setups as xs

EXACT_SETUPS = xs.SETUP_NAMES  # the enumerable setups trained with the exact gradient (clp_min.studies.exact_setups)


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def write_report(out: Path, theory_rows: list, toy_rows: list, target_rows: list, results: dict,
                 header: str) -> Path:
    """``report.md`` and ``report.json`` under ``out``; figures are referenced by relative path."""
    lines = ["# clp reproduce", "", header, "", "## clp_min targets", "",
             "| target | measured | value | rule | met | per seed |", "|---|---|---|---|---|---|"]
    for r in target_rows:
        met = "INFO" if r["met"] is None else ("met" if r["met"] else "NOT met")
        seeds = "" if r["per_seed"] is None else ", ".join(_fmt(float(v)) for v in r["per_seed"])
        lines.append(f"| {r['target']} | {r['measured']} | {r['value']:.4g} | {r['rule']} | {met} | {seeds} |")
    lines += ["", "## Fronts (seed 0)", ""]
    for setup, runs in results.items():
        if setup == "sweep" and runs:
            lines.append("![sweep](sweep/regret_vs_eps.png)")
        elif runs:
            if setup != "enum_exact":
                lines.append(f"![{setup}]({setup}/seed{runs[0]['seed']}/fronts.png)")
            if setup.startswith("enum"):
                lines.append(f"![{setup} exact]({setup}/seed{runs[0]['seed']}/fronts_exact.png)")
    lines += ["", "## Per-method measures (mean over seeds)", ""]
    for setup, runs in results.items():
        if not runs or setup in EXACT_SETUPS:
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
