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

from clp_min import exact_setups as xs
from clp_min import setups as su
from clp_min.jobs import run_graph
from theory import pareto


def _row(target: str, measured: str, value: float, rule: str, met: bool | None, per_seed=None, id=None) -> dict:
    row = {"target": target, "measured": measured, "value": float(value), "rule": rule,
           "met": None if met is None else bool(met), "per_seed": per_seed}
    return row if id is None else {"id": id, **row}


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
        tag = "b" if setup == "two" else "c"
        hvk = [hypervolumes_with_kl(r["monte_carlo"]) for r in runs]
        for scope in su.CLP_SCOPES:  # issue 9 item 5: the (R, -K) hypervolume (P2) is the target
            diff = [h[f"CLP {scope}"] - h["Rewarded Soups"] for h in hvk]
            rows.append(_row(f"({tag}) CLP {scope} front dominates Rewarded Soups in (R, -K)",
                             "min over seeds of HV(CLP) - HV(RS) on (R_1..R_m, -K), Monte Carlo", min(diff),
                             "> 0 on every seed", min(diff) > 0, diff, id=f"{setup}-hv-RK-{scope}"))
        for scope in su.CLP_SCOPES:
            diff = [_hv(r, f"CLP {scope}") - _hv(r, "Rewarded Soups") for r in runs]
            rows.append(_row(f"({tag}) CLP {scope} against Rewarded Soups in reward space",
                             "min over seeds of HV(CLP) - HV(RS), Monte Carlo (ignores KL)", min(diff),
                             "report", None, diff, id=f"{setup}-hv-R-{scope}"))
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
        regret = [r["exact"]["mean_normalised_regret"] for r in runs]
        for scope in su.CLP_SCOPES:  # issue 9 item 5: the exact regret comparison is the target
            margin = [min(g["Rewarded Soups"], g["logit mixing"]) - g[f"CLP {scope}"] for g in regret]
            rows.append(_row(f"({enum}) CLP {scope} regret below Rewarded Soups' and logit mixing's",
                             "min over seeds of min(regret RS, regret logit mixing) - regret CLP, exact",
                             min(margin), "> 0 on every seed", min(margin) > 0, margin,
                             id=f"{enum}-regret-{scope}"))
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
    rows += oracle_targets(results.get("enum_exact", []), results.get("sweep", []))
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


T1_GAP, T2_RATIO, T3_RHO_ZS, T3_RHO_GAP, T4_REGRET, IDEAL_TOL = 0.01, 0.3, 0.8, 0.6, 0.01, 1e-9
ZERO_SHOT = ("ideal zero-shot", "logit mixing", "Rewarded Soups")


def _spearman(a, b) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def oracle_targets(enum_runs: list, sweep_runs: list) -> list:
    """Issue 9's rows T1-T4 (thresholds fixed in the issue, before any run) and their INFO rows."""
    rows = []
    if enum_runs:
        full = [r["exact"]["mean_normalised_regret"]["CLP full"] for r in enum_runs]
        rows.append(_row("T4-oracle: enumerable CLP full converges (held-out prompts)",
                         "exact average normalised regret of CLP full, exact gradient, held-out prompts",
                         max(full), f"<= {T4_REGRET} on every seed", max(full) <= T4_REGRET, full, id="T4-oracle"))
        regret = [r["exact"]["mean_normalised_regret"] for r in enum_runs]
        clp_names = [n for n in regret[0] if n.startswith("CLP") and "RLOO" not in n]
        for name in clp_names:  # issue 9 item 5: the exact regret comparison is the target
            margin = [min(g["Rewarded Soups"], g["logit mixing"]) - g[name] for g in regret]
            rows.append(_row(f"(enum_exact) {name} regret below Rewarded Soups' and logit mixing's",
                             "min over seeds of min(regret RS, regret logit mixing) - regret CLP, exact, held-out",
                             min(margin), "> 0 on every seed", min(margin) > 0, margin,
                             id=f"enum_exact-regret-below-zero-shot-{name.split()[-1]}"))
        for name in enum_runs[0]["exact"]["mean_normalised_regret"]:
            vals = [r["exact"]["mean_normalised_regret"][name] for r in enum_runs]
            rows.append(_row(f"(enum_exact) {name}: average normalised regret, held-out prompts",
                             "mean over seeds, exact", float(np.mean(vals)), "report", None, vals,
                             id=f"enum_exact-regret-{name}"))
            gap = [r["exact"]["mean_normalised_regret"][name] - r["train_prompts_regret"][name] for r in enum_runs]
            rows.append(_row(f"(enum_exact) {name}: generalisation gap", "held-out minus training-prompt regret",
                             float(np.mean(gap)), "report", None, gap, id=f"enum_exact-gap-{name}"))
        for reward in enum_runs[0]["exact"].get("expert_regret", {}):
            vals = [r["exact"]["expert_regret"][reward] for r in enum_runs]
            rows.append(_row(f"(enum_exact) expert {reward}: regret on its own objective", "exact, held-out prompts, "
                             "at its vertex (the experts of RS and logit mixing)", float(np.mean(vals)), "report",
                             None, vals, id=f"enum_exact-expert-regret-{reward}"))
    if not sweep_runs:
        return rows
    first = [r["tasks"][0] for r in sweep_runs]  # eps_1 = 0 (strength 0)
    last = [r["tasks"][-1] for r in sweep_runs]  # the most misaligned task
    ideal0 = [t["regret"]["ideal zero-shot"] for t in first]
    gap1 = [t["regret"]["CLP full"] - min(t["regret"][n] for n in ZERO_SHOT) for t in first]
    spread = [min(t["optimal_spread"]) for t in first]
    met = max(ideal0) <= IDEAL_TOL and min(spread) > 0 and max(gap1) <= T1_GAP and max(t["eps_1"] for t in first) == 0
    rows.append(_row("T1-aligned: at eps_1 = 0 zero-shot is exact and CLP is as good",
                     f"CLP regret minus the best zero-shot method's (ideal, logit mixing, RS); ideal zero-shot "
                     f"regret max {max(ideal0):.2g}; front spread min over rewards {min(spread):.3g}",
                     max(gap1), f"ideal <= {IDEAL_TOL:g}, spread > 0, CLP - best <= {T1_GAP} on every seed",
                     met, gap1, id="T1-aligned"))
    ratio = [t["regret"]["CLP full"] / t["regret"]["ideal zero-shot"] for t in last]
    rows.append(_row(f"T2-misaligned: CLP beats the ideal zero-shot at eps_1 = {np.mean([t['eps_1'] for t in last]):.3g}",
                     "regret(CLP full) / regret(ideal zero-shot) at the most misaligned task", max(ratio),
                     f"<= {T2_RATIO} on every seed", max(ratio) <= T2_RATIO, ratio, id="T2-misaligned"))
    rho_zs, rho_gap = [], []
    for r in sweep_runs:
        eps = [t["eps_1"] for t in r["tasks"]]
        rho_zs.append(_spearman(eps, [t["regret"]["ideal zero-shot"] for t in r["tasks"]]))
        rho_gap.append(_spearman(eps, [t["regret"]["ideal zero-shot"] - t["regret"]["CLP full"] for t in r["tasks"]]))
    rows.append(_row("T3-monotone: zero-shot regret and CLP's advantage grow with eps_1",
                     f"Spearman(eps_1, ideal zero-shot regret) per seed {[round(v, 3) for v in rho_zs]}; "
                     f"Spearman(eps_1, ideal zero-shot - CLP) per seed {[round(v, 3) for v in rho_gap]}",
                     min(min(rho_zs) - T3_RHO_ZS, min(rho_gap) - T3_RHO_GAP),
                     f"rho_zs >= {T3_RHO_ZS} and rho_gap >= {T3_RHO_GAP} on every seed (value: smallest margin)",
                     min(rho_zs) >= T3_RHO_ZS and min(rho_gap) >= T3_RHO_GAP,
                     [min(a - T3_RHO_ZS, b - T3_RHO_GAP) for a, b in zip(rho_zs, rho_gap)], id="T3-monotone"))
    for k, t in enumerate(sweep_runs[0]["tasks"]):
        for name in t["regret"]:
            vals = [r["tasks"][k]["regret"][name] for r in sweep_runs]
            rows.append(_row(f"(sweep) s = {t['strength']:.3g}, eps_1 = {t['eps_1']:.3g}: {name}",
                             "average normalised regret, exact, held-out prompts (mean over seeds)",
                             float(np.mean(vals)), "report", None, vals, id=f"sweep-s{t['strength']:.3f}-{name}"))
        for reward in t.get("expert_regret", {}):
            vals = [r["tasks"][k]["expert_regret"][reward] for r in sweep_runs]
            rows.append(_row(f"(sweep) s = {t['strength']:.3g}: expert {reward}, regret on its own objective",
                             "exact, held-out prompts, at its vertex (mean over seeds)", float(np.mean(vals)),
                             "report", None, vals, id=f"sweep-s{t['strength']:.3f}-expert-{reward}"))
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


EXACT_SETUPS = xs.SETUP_NAMES  # clp_min.exact_setups (issue 9)


def _saved(name, seed, scale, out: Path):
    """A setup's saved result at one seed when it was written at ``scale`` (seeds aside), else ``None``."""
    path = out / name / f"seed{seed}" / ("sweep.json" if name == "sweep" else "front.json")
    if not path.exists():
        return None
    saved = json.loads(path.read_text())
    same = {k: v for k, v in json.loads(json.dumps(asdict(scale))).items() if k != "seeds"}
    return saved if {k: v for k, v in saved["scale"].items() if k != "seeds"} == same else None


def _exact_run(name, seed, scale, out: Path, runs, reuse: bool) -> dict:
    saved = _saved(name, seed, scale, out) if reuse else None
    if saved is not None:
        return saved
    run = xs.run_sweep if name == "sweep" else xs.run_enum_exact
    return run(seed, scale, out, out / "runs" if runs is None else runs)


def _front(name, seed, scale, out: Path, progress, runs, reuse: bool) -> dict:
    saved = _saved(name, seed, scale, out) if reuse else None
    if saved is not None:
        return saved
    return su.run_setup(name, seed, scale, out, progress, runs)


def _claims(quick: bool, toy_out: Path, progress: bool = False) -> tuple:
    """``(theory rows, toy rows, seconds of each)``."""
    start = time.perf_counter()
    theory_rows = run_theory(quick)
    mid = time.perf_counter()
    toy_rows = run_toy(quick, toy_out, progress)
    return theory_rows, toy_rows, {"theory claims": mid - start, "toy claims": time.perf_counter() - mid}


def _evaluate(name: str, seed: int, scale, out: Path, runs: Path) -> None:
    """A worker's evaluation of one setup at one seed; it writes front.json (sweep.json), read back later."""
    if name in EXACT_SETUPS:
        (xs.run_sweep if name == "sweep" else xs.run_enum_exact)(seed, scale, out, runs)
    else:
        su.run_setup(name, seed, scale, out, False, runs)


def _mechanism_part(part: str, seed: int, scale, out: Path, runs: Path) -> None:
    """A worker's part of issue 14's study at one seed, beside its setup's saved front (written first)."""
    from clp_min import mechanisms_study as ms

    front = _saved(ms.SETUP_OF[part], seed, scale, out)
    if front is None:
        raise ValueError(f"mechanisms: no front.json of {ms.SETUP_OF[part]} seed {seed} at this scale under {out}")
    ms.run_part(part, front, scale, seed, out / "mechanisms", runs)


def _setup_ref_args(name: str, scale, seed: int, runs: Path) -> tuple:
    """``reference_model`` args of a setup's pi_ref at one seed."""
    return xs.reference_args(scale, seed, runs) if name in EXACT_SETUPS else su.reference_args(name, scale, seed, runs)


def _setup_runs(name: str, scale, seed: int, runs: Path) -> tuple:
    """``(pi_ref path, [run folders])`` that a setup's evaluation at one seed reads."""
    if name in EXACT_SETUPS:
        cfgs = (xs.sweep_configs if name == "sweep" else xs.enum_exact_configs)(scale, seed, runs)
    else:
        cfgs = su.run_configs(name, scale, seed, runs)
    return str(_setup_ref_args(name, scale, seed, runs)[-1]), [c.out for c in cfgs.values()]


def _reproduce_tasks(setups, scale, exact_scale, out: Path, runs: Path, quick: bool, with_claims: bool,
                     reuse_fronts: bool, mechanisms: bool) -> list:
    """The graph of ``reproduce --jobs N``: the claims; every pi_ref and run to train; each setup's
    evaluation at each seed once its runs are trained; each part of issue 14's study once its runs and
    its setup's front are there. Setups whose every front is reused (``reuse_fronts``) are left out."""
    from clp_min import jobs as jb
    from clp_min import mechanisms_study as ms

    def sc_of(name):
        return exact_scale if name in EXACT_SETUPS else scale

    names = [n for n in setups
             if not (reuse_fronts and all(_saved(n, seed, sc_of(n), out) is not None for seed in sc_of(n).seeds))]
    refs, cfgs = jb.planned_all(names, scale, runs, exact_scale)
    parts = [p for p in ms.PARTS if mechanisms and ms.SETUP_OF[p] in setups]
    part_runs = {}
    for part in parts:
        for seed in sc_of(ms.SETUP_OF[part]).seeds:
            part_cfgs = ms.part_configs(part, sc_of(ms.SETUP_OF[part]), seed, runs)
            part_runs[part, seed] = [c.out for c in part_cfgs.values()]
            cfgs.update({c.out: c for c in part_cfgs.values()})
            ref = part_cfgs[next(iter(part_cfgs))].ref
            if ref not in refs:  # its setup's results are reused: its pi_ref was not planned above
                refs[ref] = _setup_ref_args(ms.SETUP_OF[part], sc_of(ms.SETUP_OF[part]), seed, runs)
    tasks = jb.training_tasks(refs, cfgs)
    if with_claims:
        tasks.append(jb.Task("claims", _claims, (quick, out / "toy"), cost=1000.0))
    for name in names:
        for seed in sc_of(name).seeds:
            ref, outs = _setup_runs(name, sc_of(name), seed, runs)
            tasks.append(jb.Task(f"eval {name} {seed}", _evaluate, (name, seed, sc_of(name), out, runs),
                                 frozenset({f"ref {ref}", *(f"train {o}" for o in outs)})))
    keys = {t.key for t in tasks}
    for (part, seed), outs in part_runs.items():
        setup_eval = f"eval {ms.SETUP_OF[part]} {seed}"
        tasks.append(jb.Task(f"mechanisms {part} {seed}", _mechanism_part,
                             (part, seed, sc_of(ms.SETUP_OF[part]), out, runs),
                             frozenset({*(f"train {o}" for o in outs), *({setup_eval} & keys)})))
    return tasks


def reproduce(out, quick: bool, progress: bool = False,
              setups=("kl", "two", "three", "enum", "enum_large", "enum_exact", "sweep"),
              with_claims: bool = True, runs=None, seeds=None, reuse_fronts: bool = False, jobs: int = 1,
              mechanisms: bool = True) -> dict:
    """Everything, written under ``out``; returns ``{"targets", "report"}``.

    Trained models are cached under ``runs`` (default ``out/runs``; rerunning reuses finished ones).
    ``seeds`` overrides the scale's seeds; ``reuse_fronts`` reads a setup's ``front.json``
    instead of re-evaluating when it was written at the same scale (evaluation is seeded,
    so re-evaluating gives the same numbers). ``jobs > 1`` trains the setups' runs first
    in that many processes (clp_min.jobs); the evaluation then finds them cached.
    ``mechanisms`` (with setups enum_exact, two or enum) adds issue 14's study (clp_min.mechanisms_study)
    under ``out/mechanisms`` and its tables to the report.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    scale = su.SCALES["quick" if quick else "full"]
    exact_scale = xs.EXACT_SCALES["quick" if quick else "full"]
    if seeds is not None:
        scale = replace(scale, seeds=tuple(seeds))
        exact_scale = replace(exact_scale, seeds=tuple(seeds))
    seconds = {}
    if jobs > 1:  # claims, trainings, evaluations and the study's parts as one graph (clp_min.jobs.run_graph)
        start = time.perf_counter()
        mech = mechanisms and bool(set(setups) & {"enum_exact", "two", "enum"})
        tasks = _reproduce_tasks(setups, scale, exact_scale, out, out / "runs" if runs is None else runs, quick,
                                 with_claims, reuse_fronts, mech)
        done = run_graph(tasks, jobs, progress)
        theory_rows, toy_rows, claim_seconds = done.get("claims", ([], [], {}))
        seconds.update({f"{k} (in the pool)": v for k, v in claim_seconds.items()})
        seconds[f"training and evaluation ({jobs} jobs)"] = time.perf_counter() - start
        reuse_fronts, jobs = True, 1  # every result was just written: read back below, nothing left to train
    else:
        theory_rows, toy_rows, claim_seconds = _claims(quick, out / "toy", progress) if with_claims else ([], [], {})
        seconds.update(claim_seconds)
    results = {}
    for name in setups:
        start = time.perf_counter()
        if name in EXACT_SETUPS:
            results[name] = [_exact_run(name, seed, exact_scale, out, runs, reuse_fronts)
                             for seed in exact_scale.seeds]
        else:
            results[name] = [_front(name, seed, scale, out, progress, runs, reuse_fronts) for seed in scale.seeds]
        seconds[f"setup {name}" + (" (front.json reused)" if reuse_fronts else "")] = time.perf_counter() - start
    if results.get("sweep"):
        xs.plot_sweep(results["sweep"], out / "sweep" / "regret_vs_eps.png")
    mech_text = None
    if mechanisms and set(setups) & {"enum_exact", "two", "enum"}:
        from clp_min import mechanisms_study

        start = time.perf_counter()
        mech_text = mechanisms_study.run(results, scale, out / "mechanisms", out / "runs" if runs is None else runs,
                                         progress, jobs, exact_scale)
        seconds["mechanisms (issue 14)"] = time.perf_counter() - start
    rows = targets(results)
    header = (f"Scale: `{scale}`; beta = {su.BETA}; model {su.MODEL}. Training weightings: {su.TRAIN_WEIGHTS}.\n\n"
              f"Exact-oracle scale (enum_exact, sweep; clp_min/exact_setups.py): `{exact_scale}`; model "
              f"{xs.MODEL}; exact gradient (clp_min/exact_pg.py); evaluation on every held-out prompt "
              f"(clp_min.task.is_heldout), never drawn in training.\n\n"
              "Setups: (a) `kl` one reward (coverage), KL weight steered; (b) `two` coverage + brevity; "
              "(c) `three` coverage + brevity + order; `enum` = (b) with V = 4, T = 4, evaluated exactly; "
              "`enum_large` = `enum` with a 2-layer, 64-wide model at the same RL steps (clp_min/setups.py; both "
              "trained by RLOO); `enum_exact` = `enum` trained with the exact gradient on training prompts only "
              f"(its RLOO baseline at {exact_scale.rloo_steps} of {exact_scale.steps} steps: an RLOO step costs "
              "about twice an exact one); "
              "`sweep` = the misalignment knob, rewards (coverage, knob_s) (clp_min/exact_setups.py).\n\n"
              "Rewards: R_1 = coverage, R_2 = brevity, R_3 = order (clp_min/task.py); all in [0, 1]; "
              "knob_s = (1 - s)(coverage + 2 [empty]) + s brevity.\n\n"
              "Comparisons (issue 9 item 5): in the enumerable setups the target is the exact regret (CLP's "
              "below Rewarded Soups' and logit mixing's on every seed); in the Monte Carlo setups it is the "
              "hypervolume in (R_1 .. R_m, -K) (P2's m + 1 objectives) with reference point (0 .. 0, -1.1 K_max), "
              "K_max the largest KL of any method's point in that seed; the reward-space hypervolume (reference: "
              "the worst reward vector 0) is INFO, since it ignores what each point pays in KL; for (a) the "
              "points are (R, -K) with reference (0, -1.1 K_max). Monte Carlo HVs carry sampling noise (each "
              "reward's standard error is in front.json). "
              "Spread: max - min of each reward over the weighting grid; 'steers more widely' compares the "
              "sum of the spreads.\n\n"
              "Wall time: " + ", ".join(f"{k} {v:.0f}s" for k, v in seconds.items()))
    path = write_report(out, theory_rows, toy_rows, rows, results, header)
    if mech_text is not None:
        path.write_text(path.read_text() + "\n## Other conditioning mechanisms (issue 14)\n\n" + mech_text
                        + "".join(f"\n![{p}](mechanisms/{p})" for p in ("comparison.png", "w_distribution.png")
                                  if (out / "mechanisms" / p).exists()) + "\n"
                        + "\nDetails: [mechanisms/report.md](mechanisms/report.md)\n")
    return {"targets": rows, "report": str(path)}
