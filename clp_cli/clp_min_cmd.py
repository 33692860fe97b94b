"""`clp train`, `clp eval`, `clp reproduce` (clp_min, issue 5). Entry points only: no math lives here.

    clp train --conditioning attn --steps 300 --out runs/clp   # every TrainConfig field is an option
    clp train --out runs/clp --steps 600 --resume              # continue exactly where it stopped
    clp eval runs/clp --grid 10 --out runs/clp/eval             # front, measures (JSON + PNG)
    clp reproduce [--quick] [--out DIR]                          # theory + toy claims + setups, one report
"""
from __future__ import annotations

import json
import sys
from dataclasses import MISSING, fields
from pathlib import Path


def add_parsers(groups) -> None:
    from clp_min.train import TrainConfig, field_help

    helps = field_help()
    train = groups.add_parser("train", help="train a conditioned policy (clp_min) with multi-task RL")
    for f in fields(TrainConfig):
        default = f.default if f.default is not MISSING else None
        if f.type in ("bool", bool):
            train.add_argument(f"--{f.name}", action="store_true", help=helps[f.name])
        else:
            shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
            train.add_argument(f"--{f.name}", default=None, metavar=f.name.upper(),
                               help=f"{helps[f.name]} (default: {shown})")
    train.set_defaults(run=run_train)

    ev = groups.add_parser("eval", help="Monte Carlo front of a trained run (exact too when enumerable)")
    ev.add_argument("run_dir", help="folder written by clp train")
    ev.add_argument("--grid", type=int, default=10, help="simplex_grid resolution n (m = 2: n + 1 weightings)")
    ev.add_argument("--prompts", type=int, default=128, help="held-out prompts")
    ev.add_argument("--samples", type=int, default=4, help="responses per prompt and weighting")
    ev.add_argument("--seed", type=int, default=0, help="seed of the held-out prompts and samples")
    ev.add_argument("--out", default=None, help="output folder (default RUN_DIR/eval)")
    ev.set_defaults(run=run_eval)

    rep = groups.add_parser("reproduce", help="theory claims, toy claims and clp_min setups (a)(b)(c), enum, enum_large, "
                                 "enum_exact, sweep: one report")
    rep.add_argument("--quick", action="store_true", help="one seed, short runs (under 10 minutes on 2 CPU cores)")
    rep.add_argument("--out", default="runs/reproduce", help="folder for report.md, report.json, figures")
    rep.add_argument("--runs", default=None, help="folder caching trained models (default OUT/runs)")
    rep.add_argument("--setups", default="kl,two,three,enum,enum_large,enum_exact,sweep",
                     help="comma-separated subset of kl,two,three,enum,enum_large,enum_exact,sweep")
    rep.add_argument("--no-claims", action="store_true", help="skip the theory and toy claims")
    rep.add_argument("--seeds", default=None, help="comma-separated seeds (default: 0,1,2; --quick: 0)")
    rep.add_argument("--reuse-fronts", action="store_true",
                     help="read each setup's front.json when written at the same scale instead of re-evaluating")
    rep.set_defaults(run=run_reproduce)


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


def run_train(args) -> int:
    import torch

    from clp_min.train import TrainConfig, train

    torch.set_num_threads(1)
    given = {}
    for f in fields(TrainConfig):
        value = getattr(args, f.name)
        if f.type in ("bool", bool):
            if value:
                given[f.name] = True
        elif value is not None:
            given[f.name] = _parse_field(f, value)
    cfg = TrainConfig(**given).validate()
    log = train(cfg, progress=sys.stderr.isatty())
    last = log["history"][-1] if log["history"] else {}
    print(json.dumps({"out": cfg.out, "step": cfg.steps, **last}))
    return 0


def run_eval(args) -> int:
    import torch

    from clp_min.evaluate import evaluate_run

    torch.set_num_threads(1)
    for name in ("grid", "prompts", "samples"):
        if getattr(args, name) < (2 if name == "prompts" else 1):
            raise ValueError(f"{name}: too small ({getattr(args, name)})")
    out = Path(args.out) if args.out else Path(args.run_dir) / "eval"
    summary = evaluate_run(args.run_dir, out, args.grid, args.prompts, args.samples, args.seed)
    print(json.dumps(summary))
    return 0


def run_reproduce(args) -> int:
    import torch

    from clp_min.report import EXACT_SETUPS, reproduce
    from clp_min.setups import SETUPS

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
    res = reproduce(args.out, args.quick, progress=sys.stderr.isatty(), setups=tuple(names),
                    with_claims=not args.no_claims, runs=args.runs, seeds=seeds, reuse_fronts=args.reuse_fronts)
    for r in res["targets"]:
        status = "INFO" if r["met"] is None else ("met" if r["met"] else "NOT met")
        print(f"{status:7}  {r['target']}: {r['value']:.4g} ({r['rule']})")
    print(f"report: {res['report']}")
    return 0
