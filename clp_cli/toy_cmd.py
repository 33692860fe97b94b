"""`clp toy ...` commands: the simulations of toy/. No math lives here."""
from __future__ import annotations

from clp_cli.paths import output_folder

TOY_FILES = ("claims.json", "report.md", "E[0-9]*.json", "E[0-9]*.png")  # what toy.claims.run_claims writes


def add_parser(groups) -> None:
    toy = groups.add_parser("toy", help="toy simulations that check the claims of THEORY.md")
    sub = toy.add_subparsers(dest="toy_command", required=True)

    claims = sub.add_parser("claims", help="run E1..E8, write claims.json, report.md and figures; "
                                           "exit 1 if any claim fails")
    claims.add_argument("--quick", action="store_true", help="small sizes (about 15 seconds on 2 cores; the "
                                                             "full run takes about 2 minutes)")
    claims.add_argument("--out", default="runs/toy-claims", help="output directory")
    claims.add_argument("--seed", type=int, default=0, help="master seed")
    claims.add_argument("--overwrite", action="store_true", help="replace the results already in the output directory")
    claims.set_defaults(run=_claims)

    run = sub.add_parser("run", help="run some experiments only (their claims, JSON and figures)")
    run.add_argument("experiments", nargs="+", help="experiment names: E1 .. E8")
    run.add_argument("--quick", action="store_true", help="small sizes")
    run.add_argument("--out", default="runs/toy", help="output directory")
    run.add_argument("--seed", type=int, default=0, help="master seed")
    run.add_argument("--overwrite", action="store_true", help="replace the results already in the output directory")
    run.set_defaults(run=_claims)


def _claims(args) -> int:
    import torch

    from toy.claims import CLAIMS, run_claims
    from toy.experiments import ToyConfig

    torch.set_num_threads(1)
    if args.seed < 0:
        raise ValueError(f"seed: must be >= 0, got {args.seed}")
    names = getattr(args, "experiments", None)
    for name in names or []:
        if name not in CLAIMS:
            raise ValueError(f"experiments: unknown {name!r}; choose from {', '.join(CLAIMS)}")
    cfg = ToyConfig.quick(args.seed) if args.quick else ToyConfig.full(args.seed)
    with output_folder(args.out, TOY_FILES, overwrite=args.overwrite) as out:
        claims = run_claims(cfg, out, names, progress=True)  # progress on stderr, also when it is redirected
    width = max(len(c.id) for c in claims)
    for c in claims:
        print(f"{c.status:4}  {c.id:{width}}  {c.value:.4g} ({c.threshold})  {c.statement}")
    failed = [c.id for c in claims if c.passed is False]
    passed = sum(c.passed is True for c in claims)
    info = sum(c.passed is None for c in claims)  # INFO rows: reported numbers, not checks
    print(f"checks: {passed} PASS, {len(failed)} FAIL; {info} INFO rows; report: {out / 'report.md'}")
    return 1 if failed else 0
