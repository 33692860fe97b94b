"""``clp oracle trl``: TRL's GRPO and RLOO losses checked against the exact gradient of J_w (entry point only).

``clp oracle trl-e2e``: CLPs trained by TRL's own trainers, evaluated by exact regret.

Writes ``table.json``, ``table.md`` and ``bias.png`` under ``--out``; refuses a folder that already holds
them unless ``--overwrite``; progress on stderr. Needs the ``trl`` extra (``pip install -e ".[trl]"``).
"""
from __future__ import annotations

import sys

from clp_cli.paths import check_output_folder, output_folder


def add_parser(groups) -> None:
    oracle = groups.add_parser("oracle", help="check an outside trainer against the exact oracle")
    sub = oracle.add_subparsers(dest="oracle_command", required=True)
    p = sub.add_parser("trl", help="bias table of TRL's GRPO and RLOO losses against the exact gradient of J_w")
    p.add_argument("--out", required=True, help="output folder (table.json, table.md, bias.png)")
    p.add_argument("--scale", default="reduced", choices=("tiny", "reduced", "full"),
                   help="which rows and settings: tiny (2 cells), reduced (44), full (304)")
    p.add_argument("--n-batches", type=int, default=400, help="sampled batches per cell (a multiple of --groups)")
    p.add_argument("--groups", type=int, default=20, help="batch groups for the standard errors")
    p.add_argument("--beta", type=float, default=0.5, help="KL weight of the beta > 0 rows")
    p.add_argument("--model", default="gpt2", choices=("gpt2", "llama"), help="tiny transformers model built locally")
    p.add_argument("--seed", type=int, default=0, help="seed of the models, prompts and samples")
    p.add_argument("--jobs", type=int, default=1, help="processes, one cell each at a time")
    p.add_argument("--overwrite", action="store_true", help="replace results already in --out")
    p.set_defaults(run=run_trl)
    e = sub.add_parser("trl-e2e", help="CLPs trained by TRL's own trainers (weighting in the prompt, written or "
                                       "turned into mixed parameters), exact regret")
    e.add_argument("--out", required=True, help="output folder (e2e.json, e2e.md, regret.png)")
    e.add_argument("--steps", type=int, default=300, help="training steps of every method")
    e.add_argument("--eval-every", type=int, default=50, help="steps between exact evaluations")
    e.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate of every method (constant)")
    e.add_argument("--seed", type=int, default=0, help="seed of the models and the training draws")
    e.add_argument("--jobs", type=int, default=1, help="processes, one method each at a time")
    e.add_argument("--conditioning", default="both",
                   help="how the weighting reaches the model: written (a prompt token a plain GPT-2 reads), mixed "
                        "(the token is stripped and sets theta(w) = w_1 theta_1 + w_2 theta_2 of a parameter-mixed "
                        "GPT-2) or both (default)")
    e.add_argument("--overwrite", action="store_true", help="replace results already in --out")
    e.set_defaults(run=run_e2e)


def run_trl(args) -> int:
    from clp_min.studies import trl_check as tc
    from clp_min.studies import trl_report as tr

    check_output_folder(args.out, tr.FILES, overwrite=args.overwrite)  # refused before any work
    cfg = tc.StudyConfig(n_batches=args.n_batches, groups=args.groups, beta=args.beta, model=args.model,
                         seed=args.seed)
    cfg, cells = tr.plan(args.scale, cfg)
    if cfg.n_batches % cfg.groups or cfg.groups < 3:
        raise ValueError(f"n-batches: {cfg.n_batches} must be a multiple of groups = {cfg.groups} (>= 3)")

    def progress(done, total):
        print(f"\rclp oracle trl: {done}/{total} cells", end="\n" if done == total else "", file=sys.stderr,
              flush=True)

    with output_folder(args.out, tr.FILES, overwrite=args.overwrite) as out:  # locked while it runs
        table = tr.run_table(cfg, cells, args.jobs, progress)
        tr.write(table, out)
    print(f"wrote {out / 'table.md'}", file=sys.stderr)
    return 0


E2E_FILES = ("e2e.json", "e2e.md", "regret.png")


def run_e2e(args) -> int:
    import json
    import os
    import platform

    from clp_min.studies import trl_e2e

    check_output_folder(args.out, E2E_FILES, overwrite=args.overwrite)  # refused before any work
    for name in ("steps", "eval_every", "jobs"):
        if getattr(args, name) < 1:
            raise ValueError(f"{name.replace('_', '-')}: must be a positive integer, got {getattr(args, name)}")
    methods = trl_e2e.methods_of(args.conditioning)  # refuses an unknown conditioning
    if args.steps % args.eval_every:
        raise ValueError(f"eval-every: {args.eval_every} does not divide steps = {args.steps}")
    cfg = trl_e2e.E2EConfig(steps=args.steps, eval_every=args.eval_every, lr=args.lr, seed=args.seed)
    print(f"clp oracle trl-e2e: {len(methods)} methods x {cfg.steps} steps", file=sys.stderr, flush=True)
    with output_folder(args.out, E2E_FILES, overwrite=args.overwrite) as out:  # locked while it runs
        result = trl_e2e.run_all(cfg, args.jobs, lambda done, total: print(f"  {done}/{total} methods",
                                                                           file=sys.stderr, flush=True),
                                   args.conditioning)
        result["machine"] = f"{os.cpu_count()} CPUs, {args.jobs} processes, {platform.platform()}"
        (out / "e2e.json").write_text(json.dumps(result, indent=1) + "\n")
        (out / "e2e.md").write_text(trl_e2e.markdown(result))
        trl_e2e.figure(result, out / "regret.png")
    print(f"wrote {out / 'e2e.md'}", file=sys.stderr)
    return 0
