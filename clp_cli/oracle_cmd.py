"""``clp oracle trl``: TRL's GRPO and RLOO losses checked against the exact gradient of J_w (entry point only).

Writes ``table.json``, ``table.md`` and ``bias.png`` under ``--out``; refuses a folder that already holds
them unless ``--overwrite``; progress on stderr. Needs the ``trl`` extra (``pip install -e ".[trl]"``).
"""
from __future__ import annotations

import sys

from clp_cli.paths import output_dir


def add_parser(groups) -> None:
    oracle = groups.add_parser("oracle", help="check an outside trainer against the exact oracle")
    sub = oracle.add_subparsers(dest="oracle_command", required=True)
    p = sub.add_parser("trl", help="bias table of TRL's GRPO and RLOO losses against the exact gradient of J_w")
    p.add_argument("--out", required=True, help="output folder (table.json, table.md, bias.png)")
    p.add_argument("--scale", default="reduced", choices=("tiny", "reduced", "full"),
                   help="which rows and settings: tiny (2 cells), reduced (30), full (304)")
    p.add_argument("--n-batches", type=int, default=400, help="sampled batches per cell (a multiple of --groups)")
    p.add_argument("--groups", type=int, default=20, help="batch groups for the standard errors")
    p.add_argument("--beta", type=float, default=0.5, help="KL weight of the beta > 0 rows")
    p.add_argument("--model", default="gpt2", choices=("gpt2", "llama"), help="tiny transformers model built locally")
    p.add_argument("--seed", type=int, default=0, help="seed of the models, prompts and samples")
    p.add_argument("--jobs", type=int, default=1, help="processes, one cell each at a time")
    p.add_argument("--overwrite", action="store_true", help="replace results already in --out")
    p.set_defaults(run=run_trl)


def run_trl(args) -> int:
    from clp_min.studies import trl_check as tc
    from clp_min.studies import trl_report as tr

    out = output_dir(args.out)
    present = [f for f in tr.FILES if (out / f).exists()]
    if present and not args.overwrite:
        raise ValueError(f"out: {out / present[0]} exists (use --overwrite to replace it)")
    cfg = tc.StudyConfig(n_batches=args.n_batches, groups=args.groups, beta=args.beta, model=args.model,
                         seed=args.seed)
    cfg, cells = tr.plan(args.scale, cfg)
    if cfg.n_batches % cfg.groups or cfg.groups < 3:
        raise ValueError(f"n-batches: {cfg.n_batches} must be a multiple of groups = {cfg.groups} (>= 3)")

    def progress(done, total):
        print(f"\rclp oracle trl: {done}/{total} cells", end="\n" if done == total else "", file=sys.stderr,
              flush=True)

    table = tr.run_table(cfg, cells, args.jobs, progress)
    tr.write(table, out)
    print(f"wrote {out / 'table.md'}", file=sys.stderr)
    return 0
