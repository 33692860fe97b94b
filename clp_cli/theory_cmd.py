"""`clp theory solve | front | utility | claims | random`: the exact oracle on JSON instances (DESIGN.md)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from clp_cli.paths import check_output_folder, output_folder
from theory.checks import (BETA_RANGE, MAX_HORIZON, MAX_LEAVES, MAX_REWARDS, MAX_WEIGHTINGS, check_beta,
                           check_weights)

UTILITY_FILES = ("utility.json", "utility.png")  # what `clp theory utility --out` writes
BETA_HELP = f"KL weight beta in [{BETA_RANGE[0]:g}, {BETA_RANGE[1]:g}]"


def add_parser(groups) -> None:
    theory = groups.add_parser("theory", help="exact optima, zero-shot mixtures and fronts of JSON instances")
    cmds = theory.add_subparsers(dest="command", required=True)

    solve = cmds.add_parser("solve", help="optimum, zero-shot mixture and gap at one weighting")
    solve.add_argument("instance", help="instance JSON file (bandit or tree, DESIGN.md format)")
    solve.add_argument("--weights", required=True, help="weighting on the simplex, e.g. 0.3,0.7")
    solve.add_argument("--beta", required=True, help=BETA_HELP)
    solve.set_defaults(run=run_solve)

    front = cmds.add_parser("front", help="exact front vs zero-shot front on a weighting grid (JSON + PNG)")
    front.add_argument("instance", help="instance JSON file")
    front.add_argument("--beta", required=True, help=BETA_HELP)
    front.add_argument("--points", type=int, default=21,
                       help=f"grid points per simplex edge (default 21; at most {MAX_WEIGHTINGS} weightings in all)")
    front.add_argument("--out", default="runs/theory-front", help="folder for front.json and front.png")
    front.add_argument("--overwrite", action="store_true", help="replace the front.json and front.png already in OUT")
    front.set_defaults(run=run_front)

    claims = cmds.add_parser("claims", help="check the exact statements on random instances: PASS/FAIL")
    claims.add_argument("--quick", action="store_true", help="fewer random instances")
    claims.add_argument("--seed", type=int, default=0, help="random seed")
    claims.add_argument("--out", default=None, help="also write theory_claims.json here (default: print only)")
    claims.add_argument("--overwrite", action="store_true", help="replace the theory_claims.json already in OUT")
    claims.set_defaults(run=run_claims)

    util = cmds.add_parser("utility", help="optimum of max U(R(pi)) - beta KL for non-linear utilities U "
                                           "(cvxpy and the fixed point g = grad U), and the linear weightings")
    util.add_argument("instance", help="instance JSON file (bandit or tree)")
    util.add_argument("--utility", required=True,
                      help="one or more of nash, tchebycheff, softmin, quadratic, comma-separated")
    util.add_argument("--beta", required=True, help=BETA_HELP)
    util.add_argument("--z", default=None, help="reference point z [m] of nash, tchebycheff, softmin "
                                                "(default: pi_ref's expected rewards minus 1, lowest context)")
    util.add_argument("--lam", default=None, help="weights lam [m] > 0 of tchebycheff and softmin (default 1)")
    util.add_argument("--tau", default=None, help="softmin temperature > 0 (default 0.1)")
    util.add_argument("--target", default=None, help="quadratic: bliss point c [m] (default: best reward + 1)")
    util.add_argument("--curvature", default=None,
                      help="quadratic: curvature A as m*m numbers, row by row (default: identity)")
    util.add_argument("--points", type=int, default=21, help="grid points of the fixed-beta front (default 21)")
    util.add_argument("--out", default=None, help="also write utility.json and utility.png (m = 2) here; "
                                                  "refused if they already exist (default: print only)")
    util.add_argument("--overwrite", action="store_true", help="replace the utility.json and utility.png already in OUT")
    util.set_defaults(run=run_utility)

    rand = cmds.add_parser("random", help="print a random instance as JSON")
    rand.add_argument("kind", choices=["bandit", "tree"], help="instance kind")
    rand.add_argument("--seed", type=int, default=0, help="random seed")
    rand.add_argument("--rewards", type=int, default=2, help=f"number of rewards m (at most {MAX_REWARDS})")
    rand.add_argument("--vocab", type=int, default=3, help=f"tree: vocabulary size V (V^T at most {MAX_LEAVES:g})")
    rand.add_argument("--horizon", type=int, default=3, help=f"tree: number of tokens T (at most {MAX_HORIZON})")
    rand.add_argument("--contexts", type=int, default=1, help=f"bandit: number of contexts X (X * Y at most {MAX_LEAVES:g})")
    rand.add_argument("--responses", type=int, default=5, help="bandit: number of responses Y")
    rand.add_argument("--scale", type=float, default=1.0, help="reward scale")
    rand.add_argument("--misalignment", type=float, default=None,
                      help="build an aligned family with exactly this misalignment eps (>= 0) (default: an unstructured random instance)")
    rand.set_defaults(run=run_random)


def parse_weights(text: str, m: int) -> np.ndarray:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"weights: not a comma-separated list of numbers: {text!r}") from None
    return check_weights(values, m)


def parse_numbers(text, field: str):
    """A comma-separated list of numbers, or None when the option was not given."""
    if text is None:
        return None
    try:
        return [float(v) for v in str(text).split(",")]
    except ValueError:
        raise ValueError(f"{field}: not a comma-separated list of numbers: {text!r}") from None


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return obj


def _first(sol: dict) -> dict:
    """The single weighting's answer out of a batched K = 1 solution."""
    return {k: _first(v) if isinstance(v, dict) else (v[0] if isinstance(v, np.ndarray) else v)
            for k, v in sol.items()}


def run_solve(args) -> int:
    from theory.instances import load_instance
    from theory.solve import solve

    instance = load_instance(args.instance)
    beta = check_beta(args.beta)
    w = parse_weights(args.weights, instance.m)
    print(json.dumps(_jsonable(_first(solve(instance, w, beta))), indent=2))
    return 0


def run_front(args) -> int:
    from theory.front import exact_and_zero_shot_front, plot_front
    from theory.instances import load_instance

    instance = load_instance(args.instance)
    beta = check_beta(args.beta)
    with output_folder(args.out, ("front.json", "front.png"), overwrite=args.overwrite) as out:
        front = exact_and_zero_shot_front(instance, beta, args.points)
        (out / "front.json").write_text(json.dumps(_jsonable(front), indent=1))
        plot_front(front, out / "front.png", title=f"{Path(args.instance).name}, beta = {beta:g}")
    print(json.dumps(_jsonable(front["measures"]), indent=2))
    print(f"wrote {out / 'front.json'} and {out / 'front.png'}", file=sys.stderr)
    return 0


def run_utility(args) -> int:
    from theory.instances import load_instance
    from theory.utility import UTILITIES, make_utility
    from theory.utility_problem import reference_rewards, sequence_view
    from theory.utility_report import plot_utility_front, utility_report

    names = [n.strip() for n in args.utility.split(",")]
    for name in names:
        if name not in UTILITIES:
            raise ValueError(f"utility: unknown {name!r}; choose from {', '.join(UTILITIES)}")
    if len(set(names)) != len(names):
        raise ValueError(f"utility: {args.utility!r} names a utility twice")
    if args.points < 2:
        raise ValueError(f"points: need at least 2 grid points, got {args.points}")
    if args.out is not None:  # refused before any work (theory.output_folder)
        check_output_folder(args.out, UTILITY_FILES, overwrite=args.overwrite)
    instance = load_instance(args.instance)
    beta = check_beta(args.beta)
    m = instance.m
    z = parse_numbers(args.z, "z")
    z = reference_rewards(instance).min(axis=0) - 1.0 if z is None else z
    target = parse_numbers(args.target, "target")
    target = sequence_view(instance)[2].max(axis=(0, 1)) + 1.0 if target is None else target
    A = parse_numbers(args.curvature, "curvature")
    if A is not None:
        if len(A) != m * m:
            raise ValueError(f"curvature: expected m*m = {m * m} numbers (row by row), got {len(A)}")
        A = [A[i * m:(i + 1) * m] for i in range(m)]
    tau = parse_numbers(args.tau, "tau")
    if tau is not None and len(tau) != 1:
        raise ValueError(f"tau: expected one number, got {len(tau)}")
    utilities = {name: make_utility(name, m, z=z, lam=parse_numbers(args.lam, "lam"),
                                    tau=None if tau is None else tau[0], c=target, A=A) for name in names}
    if args.out is None:
        report = utility_report(instance, utilities, beta, args.points)
    else:
        with output_folder(args.out, UTILITY_FILES, overwrite=args.overwrite) as out:
            report = utility_report(instance, utilities, beta, args.points)
            report["parameters"] = {name: dict(vars(U)) for name, U in utilities.items()}
            (out / "utility.json").write_text(json.dumps(_jsonable(report), indent=1))
            if m == 2:
                plot_utility_front(report, out / "utility.png", title=f"{Path(args.instance).name}, beta = "
                                   f"{beta:g}: non-linear optima vs linear weightings")
        written = [out / f for f in UTILITY_FILES if (out / f).exists()]
        print("wrote " + " and ".join(str(p) for p in written), file=sys.stderr)
    summary = {name: {k: row[k] for k in ("objective", "rewards", "kl", "g", "w", "beta_eff", "agreement",
                                          "fixed_point", "cvxpy")} | ({"best_fixed_beta": row["best_fixed_beta"]}
                                                                      if "best_fixed_beta" in row else {})
               for name, row in report["utilities"].items()}
    print(json.dumps(_jsonable(summary), indent=1))
    return 0


def run_random(args) -> int:
    from theory.random_instances import random_bandit, random_tree

    if args.seed < 0:
        raise ValueError(f"seed: must be >= 0, got {args.seed}")
    rng = np.random.default_rng(args.seed)
    if args.kind == "bandit":
        inst = random_bandit(rng, contexts=args.contexts, responses=args.responses, rewards=args.rewards,
                             scale=args.scale, misalignment=args.misalignment)
    else:
        inst = random_tree(rng, vocab=args.vocab, horizon=args.horizon, rewards=args.rewards,
                           scale=args.scale, misalignment=args.misalignment)
    print(json.dumps(inst.to_json()))
    return 0


def run_claims(args) -> int:
    from contextlib import nullcontext

    from theory.claims import run_theory_claims

    if args.seed < 0:
        raise ValueError(f"seed: must be >= 0, got {args.seed}")
    folder = nullcontext() if args.out is None else \
        output_folder(args.out, ("theory_claims.json",), overwrite=args.overwrite)
    with folder as out:
        rows = run_theory_claims(seed=args.seed, quick=args.quick)
        for row in rows:
            value = row["value"] if isinstance(row["value"], str) else f"{row['value']:.3g}"
            print(f"{'PASS' if row['passed'] else 'FAIL'}  {row['claim']}: {row['measured']} = {value} "
                  f"(threshold {row['threshold']})")
        if out is not None:
            (out / "theory_claims.json").write_text(json.dumps(rows, indent=1))
    return 0 if all(row["passed"] for row in rows) else 1
