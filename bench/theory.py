"""Speed of theory/'s exact solutions, as ratios (one run, CPU, one thread).

(a) closed form (``gibbs_log_policy`` + ``optimal_value``, P1) against the conic solver
    (``theory.solver.solve_regularised_cvx``: building the cvxpy problem and any solver
    attempts that end short of ``optimal`` before the one that answers are included) per
    bandit problem, one context, m = 2, at |Y| = 100 and |Y| = 1000;
(b) ``theory.solve.solve_tree`` (optimum, zero-shot mixture, gap and its ingredients) per
    leaf-weighting pair, against one bare ``scipy.special.logsumexp`` over an array of the
    same size ``[K, n_leaves]`` (reduced over sibling groups ``[K, n_leaves / V, V]``, the
    operation one level of soft values performs; the baseline), and against the
    fast one pass solve_tree itself uses (``theory.tree.logsumexp_rows`` over ``[K, V,
    n_leaves / V]``), on a tree of ~1e6 leaves and a small one; with the peak memory of
    one solve (``tracemalloc``, a separate untimed run).

    python bench/theory.py [--out DIR]

Prints two markdown tables and the goals table (ratio and goal); with ``--out`` also writes
``theory_bench.json``. Each case
is run once to warm up, then timed ``--repeats`` times (fewer for the big tree); the
minimum and the median are reported. Bandit ratios are taken between minima; the tree's
cases are timed in turn within each round and its ratios are medians of per-round ratios
(the machine is shared, so a ratio compares runs under the same load).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import tracemalloc
from dataclasses import asdict, dataclass
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and its name would shadow the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402
from scipy.special import logsumexp  # noqa: E402
from tqdm import tqdm  # noqa: E402

from theory import gibbs  # noqa: E402
from theory.random_instances import random_bandit, random_tree  # noqa: E402
from theory.solve import solve_tree  # noqa: E402
from theory.solver import solve_regularised_cvx  # noqa: E402
from theory.tree import logsumexp_rows  # noqa: E402
from theory.weights import sample_dirichlet  # noqa: E402


@dataclass
class BenchConfig:
    responses: tuple = (100, 1000)  # |Y| of the bandit problems in table (a)
    beta: float = 0.1  # KL weight everywhere
    weightings: int = 32  # K, weightings per tree solve
    big_tree: tuple = (4, 10)  # (V, T) of the big tree: 4^10 = 1,048,576 leaves
    small_tree: tuple = (4, 5)  # (V, T) of the small tree: 1024 leaves
    repeats: int = 7  # timed runs per case (the big tree gets max(2, repeats // 3))
    seed: int = 0  # numpy seed for instances and weightings
    out: str | None = None  # directory for theory_bench.json (optional)


def parse_args() -> BenchConfig:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=BenchConfig.repeats, help="timed runs per case")
    parser.add_argument("--seed", type=int, default=BenchConfig.seed, help="numpy seed")
    parser.add_argument("--out", type=str, default=None, help="directory for theory_bench.json")
    return BenchConfig(**vars(parser.parse_args()))


def timed(fn, repeats: int) -> dict:
    """Seconds per call: warm-up once, then ``repeats`` timed calls; ``{"min", "median"}``."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"min": min(times), "median": statistics.median(times)}


def round_robin(cases: dict, repeats: int) -> dict:
    """Seconds per call ``{name: [repeats]}``, the cases timed in turn within each round (after a warm-up).

    The machine is shared: a ratio taken within a round compares runs under the same load.
    """
    for fn in cases.values():
        fn()
    times = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def per_round_median(times: dict, name: str, ref: str) -> float:
    return statistics.median(a / b for a, b in zip(times[name], times[ref]))


def bandit_table(cfg: BenchConfig, rng: np.random.Generator, progress) -> list[dict]:
    rows = []
    w = np.array([[0.5, 0.5]])  # (1, m)
    for Y in cfg.responses:
        bandit = random_bandit(rng, contexts=1, responses=Y, rewards=2)

        def closed_form():
            gibbs.gibbs_log_policy(bandit, w, cfg.beta)
            gibbs.optimal_value(bandit, w, cfg.beta)

        closed = timed(closed_form, 20 * cfg.repeats)
        progress.update()
        answers = []
        conic = timed(lambda: answers.append(solve_regularised_cvx(bandit, w[0], cfg.beta)), cfg.repeats)
        progress.update()
        rows.append({"responses": Y, "closed_form_s": closed, "cvxpy_s": conic,
                     "solver": answers[-1]["solver"], "ratio": conic["min"] / closed["min"],
                     "objective_error": abs(answers[-1]["objective"]
                                            - gibbs.optimal_value(bandit, w, cfg.beta)[0])})
    return rows


def tree_table(cfg: BenchConfig, rng: np.random.Generator, progress) -> list[dict]:
    rows = []
    for (V, T), repeats in ((cfg.small_tree, cfg.repeats), (cfg.big_tree, max(2, cfg.repeats // 3))):
        tree = random_tree(rng, vocab=V, horizon=T, rewards=2)
        W = sample_dirichlet(rng, cfg.weightings, 2)  # (K, m)
        pairs = cfg.weightings * tree.n_leaves
        a = rng.normal(size=(cfg.weightings, tree.n_leaves // V, V))  # (K, n_leaves / V, V)
        a_rows = np.ascontiguousarray(a.transpose(0, 2, 1))  # (K, V, n_leaves / V)
        rounds = round_robin({"solve": lambda: solve_tree(tree, W, cfg.beta),
                              "bare": lambda: logsumexp(a, axis=-1),
                              "fast": lambda: logsumexp_rows(a_rows)}, repeats)
        solve, bare, fast = ({"min": min(rounds[k]), "median": statistics.median(rounds[k])}
                             for k in ("solve", "bare", "fast"))
        progress.update(2)
        tracemalloc.start()
        solve_tree(tree, W, cfg.beta)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        rows.append({"vocab": V, "horizon": T, "leaves": tree.n_leaves, "weightings": cfg.weightings,
                     "solve_s": solve, "logsumexp_s": bare, "fast_logsumexp_s": fast,
                     "solve_ns_per_pair": 1e9 * solve["min"] / pairs,
                     "logsumexp_ns_per_pair": 1e9 * bare["min"] / pairs,
                     "ratio": per_round_median(rounds, "solve", "bare"),
                     "ratio_to_fast": per_round_median(rounds, "solve", "fast"),
                     "peak_mib": peak / 2 ** 20, "array_mib": pairs * 8 / 2 ** 20})
    return rows


def issue_rows(bandits: list[dict], trees: list[dict]) -> list[dict]:
    """The issue table's theory lines: ``{"measure", "ratio", "goal", "met"}``."""
    rows = [{"measure": "closed form vs cvxpy per bandit, Y=" + "/".join(str(b["responses"]) for b in bandits),
             "ratio": " / ".join(f"{b['ratio']:.0f}x" for b in bandits), "goal": ">= 100",
             "met": all(b["ratio"] >= 100 for b in bandits)}]
    for t in reversed(trees):
        size = f"K={t['weightings']}, {t['vocab']}^{t['horizon']} leaves"
        rows.append({"measure": f"tree solve / one bare scipy logsumexp pass, {size}", "ratio": f"{t['ratio']:.2f}x",
                     "goal": "<= 2" if t["leaves"] >= 4 ** 10 else "(<= 2 at 4^10)", "met": t["ratio"] <= 2})
        rows.append({"measure": f"tree solve / one fast logsumexp pass (logsumexp_rows), {size}",
                     "ratio": f"{t['ratio_to_fast']:.2f}x", "goal": "(for the record)", "met": None})
    big = trees[-1]
    rows.append({"measure": f"tree solve peak memory, K={big['weightings']}, {big['vocab']}^{big['horizon']} leaves",
                 "ratio": f"{big['peak_mib']:.0f} MiB ({big['peak_mib'] / big['array_mib']:.2f}x one "
                          f"[K, leaves] float64 array)", "goal": "stated", "met": None})
    return rows


def main():
    cfg = parse_args()
    rng = np.random.default_rng(cfg.seed)
    with tqdm(total=2 * len(cfg.responses) + 4, disable=not sys.stderr.isatty(), desc="bench") as progress:
        bandits = bandit_table(cfg, rng, progress)
        trees = tree_table(cfg, rng, progress)

    print(f"## Bandit problem: closed form (P1) vs cvxpy (one context, m = 2, beta = {cfg.beta})\n")
    print("| Y | closed form min / median | cvxpy min / median | solver | ratio | |objective error| |")
    print("|---|---|---|---|---|---|")
    for r in bandits:
        c, s = r["closed_form_s"], r["cvxpy_s"]
        print(f"| {r['responses']} | {c['min'] * 1e6:.1f} / {c['median'] * 1e6:.1f} us "
              f"| {s['min'] * 1e3:.1f} / {s['median'] * 1e3:.1f} ms | {r['solver']} "
              f"| {r['ratio']:.0f}x | {r['objective_error']:.1e} |")
    print(f"\n## Tree: solve_tree vs one bare logsumexp over [K, n_leaves] (K = {cfg.weightings}, "
          f"m = 2, beta = {cfg.beta})\n")
    print("| V^T | leaves | solve_tree min / median | ns per leaf-weighting pair | scipy logsumexp min / median "
          "| ns per pair | ratio | fast logsumexp min | ratio | solve peak memory |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in trees:
        s, b, f = r["solve_s"], r["logsumexp_s"], r["fast_logsumexp_s"]
        print(f"| {r['vocab']}^{r['horizon']} | {r['leaves']} | {s['min'] * 1e3:.1f} / {s['median'] * 1e3:.1f} ms "
              f"| {r['solve_ns_per_pair']:.1f} | {b['min'] * 1e3:.2f} / {b['median'] * 1e3:.2f} ms "
              f"| {r['logsumexp_ns_per_pair']:.2f} | {r['ratio']:.2f}x | {f['min'] * 1e3:.2f} ms "
              f"| {r['ratio_to_fast']:.2f}x | {r['peak_mib']:.1f} MiB |")
    rows = issue_rows(bandits, trees)
    print("\n## Issue table (this run)\n")
    print("| measure | ratio | goal | met |\n|---|---|---|---|")
    for row in rows:
        met = "" if row["met"] is None else ("yes" if row["met"] else "NO")
        print(f"| {row['measure']} | {row['ratio']} | {row['goal']} | {met} |")
    if cfg.out:
        out = Path(cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "theory_bench.json").write_text(json.dumps(
            {"config": asdict(cfg), "bandit": bandits, "tree": trees, "issue_table": rows}, indent=2))


if __name__ == "__main__":
    main()
