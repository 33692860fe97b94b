"""`clp train`, `clp eval`, `clp reproduce` (clp_min). Entry points only: no math lives here.

    clp train --conditioning attn --steps 300 --out runs/clp   # every TrainConfig field is an option
    clp train --out runs/clp --steps 600 --resume              # continue exactly where it stopped
    clp train --nproc 2 --streams prompt --out runs/ddp        # data-parallel: torchrun with 2 processes
    clp eval runs/clp --grid 10 --out runs/clp/eval             # front, measures (JSON + PNG)
    clp reproduce [--quick] [--out DIR]                          # theory + toy claims + setups, one report
"""
from __future__ import annotations

import json
import sys
from dataclasses import MISSING, fields
from pathlib import Path

from clp_cli.paths import check_output_folder, output_dir, output_folder


def add_parsers(groups, with_train_options: bool = True) -> None:
    """``with_train_options=False`` (clp theory / clp toy) skips reading TrainConfig, which imports torch."""
    train = groups.add_parser("train", help="train a conditioned policy (clp_min) with multi-task RL")
    if with_train_options:
        _add_train_options(train)
    train.set_defaults(run=run_train)
    _add_eval_and_reproduce(groups)


def _add_train_options(train) -> None:
    from clp_min.config import TrainConfig, field_help

    helps = field_help()
    for f in fields(TrainConfig):
        default = f.default if f.default is not MISSING else None
        if f.type in ("bool", bool):
            train.add_argument(f"--{f.name}", action="store_true", help=helps[f.name])
        else:
            shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
            train.add_argument(f"--{f.name}", default=None, metavar=f.name.upper(),
                               help=f"{helps[f.name]} (default: {shown})")
    train.add_argument("--overwrite", action="store_true",
                       help="replace the run in OUT (refused without it or --resume); the old files are put back "
                            "if the new run fails and deleted when it ends (docs/limits.md)")
    train.add_argument("--nproc", type=int, default=None, metavar="N",
                       help="launch N data-parallel processes on this machine through torch.distributed.run "
                            "(needs --streams prompt when N > 1); under torchrun leave it out (default: one "
                            "process, no launcher)")


def _add_eval_and_reproduce(groups) -> None:
    ev = groups.add_parser("eval", help="Monte Carlo front of a trained run (exact too when enumerable)")
    ev.add_argument("run_dir", help="folder written by clp train")
    ev.add_argument("--grid", type=int, default=10, help="simplex_grid resolution n (m = 2: n + 1 weightings; at most 10000 weightings)")
    ev.add_argument("--prompts", type=int, default=128, help="held-out prompts (never drawn in training)")
    ev.add_argument("--samples", type=int, default=4, help="responses per prompt and weighting")
    ev.add_argument("--seed", type=int, default=0, help="seed of the held-out prompts and samples")
    ev.add_argument("--out", default=None, help="output folder (default: RUN_DIR/eval)")
    ev.add_argument("--overwrite", action="store_true", help="replace the front already in the output folder")
    ev.set_defaults(run=run_eval)

    rep = groups.add_parser("reproduce", help="theory and toy claims and the clp_min setups (kl, two, three, enum, "
                                 "enum_large, enum_exact, sweep): one report")
    rep.add_argument("--quick", action="store_true",
                     help="a smoke run: one seed, short runs (about 3 minutes on 2 cores); it checks that "
                          "everything runs, not the full run's targets, which it is not expected to meet")
    rep.add_argument("--out", default="runs/reproduce", help="folder for report.md, report.json, figures")
    rep.add_argument("--runs", default=None, help="folder caching trained models (default: OUT/runs)")
    rep.add_argument("--resume", action="store_true",
                     help="continue in an OUT that holds results: reuse its finished runs (cached by configuration, "
                          "provenance-checked), retrain the others, write the report again")
    rep.add_argument("--overwrite", action="store_true",
                     help="replace OUT's results and its runs cache (OUT/runs) with a fresh reproduce; the old ones "
                          "are put back if it fails and deleted when it ends")
    rep.add_argument("--setups", default="kl,two,three,enum,enum_large,enum_exact,sweep",
                     help="comma-separated subset of kl,two,three,enum,enum_large,enum_exact,sweep")
    rep.add_argument("--no-claims", action="store_true", help="skip the theory and toy claims")
    rep.add_argument("--seeds", default=None, help="comma-separated seeds (default: 0,1,2; --quick: 0)")
    rep.add_argument("--reuse-fronts", action="store_true",
                     help="read each setup's front.json when written at the same scale instead of re-evaluating "
                          "(implies --resume)")
    rep.add_argument("--jobs", type=int, default=1,
                     help="worker processes running the reproduce as one task graph: pi_refs, trainings, each "
                          "setup's evaluation once its runs are trained, the claims; the full run with "
                          "--jobs 2 takes about 80 minutes on 2 cores")
    rep.add_argument("--no-mechanisms", action="store_true",
                     help="skip the mechanisms study (SVD-LoRA, soft tokens, prompts; training distribution of w)")
    rep.set_defaults(run=run_reproduce)

    studies = {  # command: (module in clp_min.studies, help, what its runs cache)
        "utility-steering": ("utility_steering", "steer a KL-steered CLP to non-linear utilities on the enumerable "
                             "task; exact regret against the optimum", "the trained CLP"),
        "adaptive-w": ("adaptive_w", "the adaptive weighting sampler against the fixed training distributions, "
                       "exact regret on the enumerable task", "the trained CLPs"),
    }
    for command, (module, help_text, cached) in studies.items():
        st = groups.add_parser(command, help=help_text)
        st.add_argument("--scale", default="small", choices=["quick", "small", "full"],
                        help="quick: a smoke run; small: 500 RL steps per CLP; full: enum_exact's 2000")
        st.add_argument("--seeds", default=None, help="comma-separated seeds (default: the scale's)")
        st.add_argument("--out", default=f"runs/{module}", help="folder for per-seed JSON and summary.md")
        st.add_argument("--runs", default=None, help=f"folder caching pi_ref and {cached} (default: OUT/runs)")
        st.add_argument("--jobs", type=int, default=1, help="worker processes, one seed each")
        st.add_argument("--overwrite", action="store_true",
                        help="replace the summary and per-seed JSON already in OUT")
        st.set_defaults(run=run_study, study=module)

    zs = groups.add_parser("zero-shot", help="zero-shot mixing of trained experts on the misalignment sweep "
                                             "(on-policy experts and the remedy, exact regret, P11's bound)")
    zs.add_argument("--seeds", default="0", help="comma-separated seeds")
    zs.add_argument("--strengths", default=None, help="comma-separated knob strengths (default: the sweep's 8)")
    zs.add_argument("--steps", type=int, default=None, help="steps per expert (default: the sweep CLP's 2000)")
    zs.add_argument("--quick", action="store_true", help="tiny configuration: a smoke run of seconds")
    zs.add_argument("--out", default="runs/zero_shot", help="folder for seed*.json, report.md, regret_vs_s.png")
    zs.add_argument("--runs", default=None, help="folder caching pi_ref and the trained experts (default: OUT/runs)")
    zs.add_argument("--jobs", type=int, default=1, help="worker processes (pretraining, experts, evaluation); "
                                                       "three seeds take about 85 core-minutes")
    zs.add_argument("--overwrite", action="store_true", help="replace the results already in OUT")
    zs.set_defaults(run=run_zero_shot)


def _parse_field(f, text: str):
    """One TrainConfig option from text; refuses with the field's name."""
    kind = f.type if isinstance(f.type, str) else f.type.__name__
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
        if kind == "tuple":
            items = [t.strip() for t in text.split(",") if t.strip()]
            return tuple(float(t) for t in items) if f.name == "fixed_w" else tuple(items)
    except ValueError:
        raise ValueError(f"{f.name}: cannot read {text!r} as {kind}") from None
    return text


def _launch_train(args, given: dict, cfg) -> int:
    """``--nproc N``: check what can be checked here, then run this command in N processes."""
    from clp_min.interop import distributed
    from clp_min.train import RUN_FILES

    if args.nproc < 1:
        raise ValueError(f"nproc: must be an integer >= 1, got {args.nproc}")
    if args.nproc > 1 and cfg.streams != "prompt":
        raise ValueError(f"streams: {args.nproc} processes need --streams prompt (each prompt its own stream)")
    distributed.local_prompts(cfg.prompts_per_step, 0, args.nproc)  # refuses P not divisible by N
    check_output_folder(cfg.out, RUN_FILES, cfg.resume, args.overwrite)  # rank 0 then holds the folder
    if cfg.resume:
        from clp_min.checkpoint import load_checkpoint

        saved = load_checkpoint(Path(cfg.out) / "policy.safetensors").config.get("world_size", 1)
        if saved != args.nproc:
            raise ValueError(f"resume: {cfg.out} was trained by {saved} processes, this run has {args.nproc}; "
                             f"resume with the same number (clp train --nproc)")
    argv = ["train", "--overwrite"] if args.overwrite else ["train"]
    for name, value in given.items():
        if value is True:
            argv.append(f"--{name}")
        else:
            argv += [f"--{name}", ",".join(map(str, value)) if isinstance(value, tuple) else str(value)]
    return distributed.launch(args.nproc, argv)


def run_train(args) -> int:
    import torch

    from clp_min.interop import distributed
    from clp_min.config import TrainConfig
    from clp_min.run_folder import resume_config
    from clp_min.train import train

    torch.set_num_threads(1)
    given = {}
    for f in fields(TrainConfig):
        value = getattr(args, f.name)
        if f.type in ("bool", bool):
            if value:
                given[f.name] = True
        elif value is not None:
            given[f.name] = _parse_field(f, value)
    if given.get("resume"):  # fields not given come from the saved run; changed ones are refused
        cfg = resume_config(given.get("out", TrainConfig.out), given).validate()
    else:
        cfg = TrainConfig(**given).validate()
    output_dir(cfg.out)  # a file in the way or no write access: refused before pretraining
    if args.nproc is not None:
        return _launch_train(args, given, cfg)
    try:
        log = train(cfg, progress=True, overwrite=args.overwrite)  # progress on stderr, also when redirected
    except RuntimeError as err:
        if not distributed.lost_peer(err):
            raise
        return 1  # another process of the run ended: the launcher names it in one line
    finally:
        writer = distributed.teardown()
    last = log["history"][-1] if log["history"] else {}
    if writer:
        print(json.dumps({"out": cfg.out, "step": cfg.steps, **last}))
    return 0


def run_eval(args) -> int:
    import torch

    from clp_min.studies.evaluate import EVAL_FILES, evaluate_run

    torch.set_num_threads(1)
    for name in ("grid", "prompts", "samples"):
        if getattr(args, name) < (2 if name == "prompts" else 1):
            raise ValueError(f"{name}: too small ({getattr(args, name)})")
    if not Path(args.run_dir).is_dir():
        raise ValueError(f"run_dir: {args.run_dir} is not a folder")
    out = Path(args.run_dir) / "eval" if args.out is None else args.out
    with output_folder(out, EVAL_FILES, overwrite=args.overwrite) as out:
        summary = evaluate_run(args.run_dir, out, args.grid, args.prompts, args.samples, args.seed)
    print(json.dumps(summary))
    return 0


STUDY_FILES = ("summary.json", "summary.md", "seed*")  # what utility-steering and adaptive-w write in OUT


def _seeds(text):
    if text is None:
        return None
    try:
        seeds = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"seeds: expected comma-separated integers, got {text!r}") from None
    if not seeds or min(seeds) < 0:
        raise ValueError(f"seeds: expected non-negative integers, got {text!r}")
    return seeds


def run_study(args) -> int:
    """``clp utility-steering`` and ``clp adaptive-w``: a study's seeds, then its summary (``args.study``)."""
    import importlib

    import torch

    study = importlib.import_module(f"clp_min.studies.{args.study}")
    torch.set_num_threads(1)
    seeds = _seeds(args.seeds)
    if args.jobs < 1:
        raise ValueError(f"jobs: must be an integer >= 1, got {args.jobs}")
    with output_folder(args.out, STUDY_FILES, overwrite=args.overwrite) as out:
        study.run_study(args.scale, seeds, out, args.runs or out / "runs", args.jobs)
    print((out / "summary.md").read_text())
    return 0


def run_zero_shot(args) -> int:
    from dataclasses import replace

    import torch

    from clp_min.studies import zero_shot_trained as zst

    torch.set_num_threads(1)
    seeds = _seeds(args.seeds)
    if args.jobs < 1:
        raise ValueError(f"jobs: must be an integer >= 1, got {args.jobs}")
    scale = zst.QUICK if args.quick else zst.StudyScale()
    if args.steps is not None:
        if args.steps < 1:
            raise ValueError(f"steps: must be an integer >= 1, got {args.steps}")
        scale = replace(scale, steps=args.steps)
    if args.strengths:
        try:
            strengths = tuple(float(x) for x in args.strengths.split(","))
        except ValueError:
            raise ValueError(f"strengths: expected comma-separated numbers, got {args.strengths!r}") from None
        if not all(0 <= x <= 1 for x in strengths):
            raise ValueError(f"strengths: each knob strength must lie in [0, 1], got {args.strengths!r}")
        scale = replace(scale, strengths=strengths)
    with output_folder(args.out, ("seed*.json", "report.md", "regret_vs_s.png"), overwrite=args.overwrite) as out:
        zst.run(out, seeds, scale, args.runs or out / "runs", args.jobs)
    print(f"report: {out / 'report.md'}")
    return 0


def run_reproduce(args) -> int:
    import torch

    from clp_min.studies.report import EXACT_SETUPS
    from clp_min.studies.reproduce import REPRODUCE_FILES, reproduce
    from clp_min.studies.setups import SETUPS

    torch.set_num_threads(1)
    names = [s.strip() for s in args.setups.split(",") if s.strip()]
    for name in names:
        if name not in SETUPS and name not in EXACT_SETUPS:
            raise ValueError(f"setups: unknown {name!r}; choose from {', '.join([*SETUPS, *EXACT_SETUPS])}")
    seeds = None
    if args.seeds is not None:
        try:
            seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        except ValueError:
            raise ValueError(f"seeds: expected comma-separated integers, got {args.seeds!r}") from None
        if not seeds or min(seeds) < 0:
            raise ValueError(f"seeds: expected non-negative integers, got {args.seeds!r}")
    if args.jobs < 1:
        raise ValueError(f"jobs: must be an integer >= 1, got {args.jobs}")
    check_output_folder(args.out, REPRODUCE_FILES, args.resume or args.reuse_fronts, args.overwrite)  # before any output
    if args.quick:
        print("clp reproduce --quick: a smoke run (one seed, short runs): it checks that everything runs; "
              "its targets are not expected to be met (the full run's are)", file=sys.stderr)
    res = reproduce(args.out, args.quick, progress=True, setups=tuple(names),
                    with_claims=not args.no_claims, runs=args.runs, seeds=seeds, reuse_fronts=args.reuse_fronts,
                    jobs=args.jobs, mechanisms=not args.no_mechanisms,
                    resume=args.resume or args.reuse_fronts, overwrite=args.overwrite)
    for r in res["targets"]:
        status = "INFO" if r["met"] is None else ("met" if r["met"] else "NOT met")
        print(f"{status:7}  {r['target']}: {r['value']:.4g} ({r['rule']})")
    if args.quick:
        print("(smoke run: 'NOT met' rows are expected at this scale; the full run's results are in docs/results.md)")
    print(f"report: {res['report']}")
    return 0
