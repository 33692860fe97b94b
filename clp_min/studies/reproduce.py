"""``clp reproduce``: theory claims, toy claims and the clp_min setups in one report.

Trained models are cached and reused; ``jobs > 1`` runs everything as one task graph
(``clp_min.studies.jobs``): pi_refs, trainings, each setup's evaluation once its runs are trained,
the mechanisms study's parts once their setup's front is written, and the claims.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path

from clp_min.studies import exact_setups as xs
from clp_min.studies import setups as su
from clp_min.studies.jobs import run_graph
from clp_min.studies.report import EXACT_SETUPS, run_theory, run_toy, write_report
from clp_min.studies.setups import SETUPS
from clp_min.studies.targets import targets
from theory.output_folder import output_folder

# what a reproduce writes under OUT: the report, each setup's folder, the claims, the study, the runs cache
REPRODUCE_FILES = ("report.md", "report.json", "toy", "mechanisms", "runs", *SETUPS, *EXACT_SETUPS)


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
    """A worker's part of the mechanisms study at one seed, beside its setup's saved front (written first)."""
    from clp_min.studies import mechanisms_study as ms

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
    evaluation at each seed once its runs are trained; each part of the mechanisms study once its runs and
    its setup's front are there. Setups whose every front is reused (``reuse_fronts``) are left out."""
    from clp_min.studies import jobs as jb
    from clp_min.studies import mechanisms_study as ms

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
              mechanisms: bool = True, resume: bool = False, overwrite: bool = False) -> dict:
    """Everything, written under ``out``, held for the whole reproduce (theory.output_folder): an ``out``
    that holds results or runs (``REPRODUCE_FILES``) is refused unless ``resume`` (reuse its finished
    runs; ``reuse_fronts`` implies it) or ``overwrite`` (results and ``out/runs`` replaced by a fresh
    reproduce). This process holds ``out``'s lock; with ``jobs > 1`` the workers write under it
    without taking it, and each training holds its own run folder. Returns ``{"targets", "report"}``."""
    with output_folder(out, REPRODUCE_FILES, resume=resume or reuse_fronts, overwrite=overwrite):
        return _reproduce(out, quick, progress, setups, with_claims, runs, seeds, reuse_fronts, jobs, mechanisms)


def _reproduce(out, quick: bool, progress: bool, setups, with_claims: bool, runs, seeds, reuse_fronts: bool,
               jobs: int, mechanisms: bool) -> dict:
    """``reproduce`` inside its held folder.

    Trained models are cached under ``runs`` (default ``out/runs``; rerunning reuses finished ones).
    ``seeds`` overrides the scale's seeds; ``reuse_fronts`` reads a setup's ``front.json``
    instead of re-evaluating when it was written at the same scale (evaluation is seeded,
    so re-evaluating gives the same numbers). ``jobs > 1`` trains the setups' runs first
    in that many processes (clp_min.studies.jobs); the evaluation then finds them cached.
    ``mechanisms`` (with setups enum_exact, two or enum) adds the mechanisms study (clp_min.studies.mechanisms_study)
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
    if jobs > 1:  # claims, trainings, evaluations and the study's parts as one graph (clp_min.studies.jobs.run_graph)
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
        from clp_min.studies import mechanisms_study, mechanisms_tables

        start = time.perf_counter()
        mech_results = mechanisms_study.run(results, scale, out / "mechanisms", out / "runs" if runs is None else runs,
                                            progress, jobs, exact_scale)
        mech_text = mechanisms_tables.report(mech_results, out / "mechanisms")
        seconds["mechanisms study"] = time.perf_counter() - start
    rows = targets(results)
    smoke = ("**Smoke run (`--quick`)**: one seed, short runs; it checks that everything runs. Its targets are "
             "not expected to be met (the full run's are: docs/results.md).\n\n") if quick else ""
    header = (smoke + f"Scale: `{scale}`; beta = {su.BETA}; model {su.MODEL}. Training weightings: {su.TRAIN_WEIGHTS}.\n\n"
              f"Exact-oracle scale (enum_exact, sweep; clp_min/studies/exact_setups.py): `{exact_scale}`; model "
              f"{xs.MODEL}; exact gradient (clp_min/oracle/exact_pg.py); evaluation on every held-out prompt "
              f"(clp_min.task.is_heldout), never drawn in training.\n\n"
              "Setups: (a) `kl` one reward (coverage), KL weight steered; (b) `two` coverage + brevity; "
              "(c) `three` coverage + brevity + order; `enum` = (b) with V = 4, T = 4, evaluated exactly; "
              "`enum_large` = `enum` with a 2-layer, 64-wide model at the same RL steps (clp_min/studies/setups.py; both "
              "trained by RLOO); `enum_exact` = `enum` trained with the exact gradient on training prompts only "
              f"(its RLOO baseline at {exact_scale.rloo_steps} of {exact_scale.steps} steps: an RLOO step costs "
              "about twice an exact one); "
              "`sweep` = the misalignment knob, rewards (coverage, knob_s) (clp_min/studies/exact_setups.py).\n\n"
              "Rewards: R_1 = coverage, R_2 = brevity, R_3 = order (clp_min/task.py); all in [0, 1]; "
              "knob_s = (1 - s)(coverage + 2 [empty]) + s brevity.\n\n"
              "Comparisons: in the enumerable setups the target is the exact regret (CLP's "
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
        path.write_text(path.read_text() + "\n## Other conditioning mechanisms\n\n" + mech_text
                        + "".join(f"\n![{p}](mechanisms/{p})" for p in ("comparison.png", "w_distribution.png")
                                  if (out / "mechanisms" / p).exists()) + "\n"
                        + "\nDetails: [mechanisms/report.md](mechanisms/report.md)\n")
    return {"targets": rows, "report": str(path)}
