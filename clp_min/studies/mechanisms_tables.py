"""The mechanisms study's tables, figures and report.md, as pure functions of its per-seed results.

``results``: ``{part: [per-seed dict of clp_min.studies.mechanisms_study.run_part]}``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from clp_min.studies import mechanisms_study as ms
from clp_min.studies.mechanisms_study import MECHANISMS, NEAR_VERTEX, W_DIST_SCOPE


def _cell(vals: list, fmt: str = ".3f") -> str:
    """Mean over seeds, then the per-seed values."""
    return f"{np.mean(vals):{fmt}} ({', '.join(f'{v:{fmt}}' for v in vals)})"


TITLES = {"w_dist": f"Training distribution of w: CLP {W_DIST_SCOPE}, enum (RLOO), exact regret by region",
          "enum_exact": "Enumerable configuration, exact gradient (enum_exact; exact on every held-out prompt)",
          "two": "Setup (b): coverage and brevity (RLOO; Monte Carlo)",
          "enum": "Enumerable configuration, RLOO (enum; exact on the setup's prompts)"}


def _table(runs: list, first: str, columns: list, parameters: bool = True) -> list:
    """Markdown rows: one per method, ``columns`` as ``(header, key path into its measures, format)``."""
    def value(measures, path):
        for key in path:
            measures = measures[key]
        return measures

    head = [first] + (["trainable parameters"] if parameters else []) + [c[0] for c in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in runs[0]["measures"]:
        m = [r["measures"][name] for r in runs]
        cells = [name] + ([str(runs[0]["parameters"].get(name, ""))] if parameters else [])
        cells += [_cell([value(x, path) for x in m], fmt) for _, path, fmt in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


EXACT_COLUMNS = [("mean normalised regret", ("mean_regret",), ".3f"),
                 ("worst regret over the grid", ("worst_regret",), ".3f"),
                 ("rank corr. (w_i, R_i)", ("rank_correlation",), ".3f"),
                 ("HV in (R, -K)", ("hypervolume_R_negK",), ".4f")]
MC_COLUMNS = [("HV (rewards)", ("hypervolume",), ".4f"),
              ("HV in (R, -K)", ("hypervolume_R_negK",), ".4f"),
              ("rank corr. (w_i, R_i)", ("rank_correlation",), ".3f")]
W_DIST_COLUMNS = [("mean normalised regret", ("mean_regret",), ".3f"),
                  ("near vertices", ("regret_by_region", "near vertices"), ".3f"),
                  ("interior", ("regret_by_region", "interior"), ".3f"),
                  ("worst", ("worst_regret",), ".3f")]


def _part_table(part: str, runs: list) -> list:
    if part == "two":
        return _table(runs, "method", MC_COLUMNS)
    if part == "w_dist":
        return ([f"Regions: near vertices = max_i w_i >= {NEAR_VERTEX}, interior = the rest of the grid.", ""]
                + _table(runs, "training distribution", W_DIST_COLUMNS, parameters=False))
    return _table(runs, "method", EXACT_COLUMNS)


def tables(results: dict) -> str:
    """Markdown: one comparison table per part (``{part: [result per seed]}``) and the w ablation."""
    lines = ["Cells: mean over seeds (per-seed values). Parameters: trainable, per method.", ""]
    for part, runs in results.items():
        lines += [f"### {TITLES[part]}, seeds {[r['seed'] for r in runs]}", ""]
        lines += _part_table(part, runs) + [""]
    return "\n".join(lines) + "\n"


def figures(results: dict, out) -> list:
    """comparison.png (exact fronts at the first seed; mean regret per method) and w_distribution.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out, pngs = Path(out), []
    part = next((p for p in ("enum_exact", "enum") if p in results), None)
    if part is not None:
        runs = results[part]
        fig, (ax, bx) = plt.subplots(1, 2, figsize=(11.5, 4.5))
        for name, s in runs[0]["stats"].items():
            R = np.asarray(s["rewards"])
            ax.plot(R[:, 0], R[:, 1], "o-" if name in MECHANISMS else ".--", ms=3, lw=1, label=name)
        opt = np.asarray(runs[0]["optimal"]["rewards"])
        ax.plot(opt[:, 0], opt[:, 1], "k-", lw=1.5, label="exact pi*_w")
        ax.set_xlabel("R_1 coverage")
        ax.set_ylabel("R_2 brevity")
        ax.set_title(f"{part}, seed {runs[0]['seed']}: exact fronts")
        ax.legend(fontsize=6)
        names = list(runs[0]["measures"])
        for k, name in enumerate(names):
            vals = [r["measures"][name]["mean_regret"] for r in runs]
            bx.bar(k, np.mean(vals), color="C1" if name in MECHANISMS else "C0")
            bx.plot([k] * len(vals), vals, "k.", ms=4)
        bx.set_xticks(range(len(names)), names, rotation=40, ha="right", fontsize=7)
        bx.set_ylabel("exact mean normalised regret (dots: seeds)")
        bx.set_title(part)
        fig.tight_layout()
        fig.savefig(out / "comparison.png", dpi=110)
        plt.close(fig)
        pngs.append("comparison.png")
    if "w_dist" in results:
        runs = results["w_dist"]
        fig, ax = plt.subplots(figsize=(6.5, 4.3))
        W = np.asarray(runs[0]["weights"])
        for name in runs[0]["normalised_regret"]:
            reg = np.mean([r["normalised_regret"][name] for r in runs], axis=0)
            ax.plot(W[:, 0], reg, "o-", ms=3, label=name)
        for x in (1 - NEAR_VERTEX, NEAR_VERTEX):
            ax.axvline(x, color="gray", lw=0.8, ls=":")
        ax.set_xlabel("w_1 (coverage); dotted: region boundaries")
        ax.set_ylabel("exact normalised regret (mean over seeds)")
        ax.set_title(f"CLP {W_DIST_SCOPE} (enum, RLOO): training distribution of w")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "w_distribution.png", dpi=110)
        plt.close(fig)
        pngs.append("w_distribution.png")
    return pngs


def report(results: dict, out) -> str:
    """``OUT/report.md`` and the figures from ``{part: [result per seed]}``; returns the tables' markdown."""
    text = tables(results)
    pngs = figures(results, out)
    (Path(out) / "report.md").write_text("# Other conditioning mechanisms and the training distribution of w\n\n"
                                         + ms.__doc__.split("\n\n", 1)[1] + "\n" + text + "\n"
                                         + "\n".join(f"![{p}]({p})" for p in pngs) + "\n")
    return text
