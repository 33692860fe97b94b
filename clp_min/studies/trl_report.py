"""The TRL bias table: cells run over processes, then JSON, markdown and a figure (``clp oracle trl``).

Scales (``SCALES``): ``tiny`` (two cells, a smoke test), ``reduced`` (the rows of
``trl_check.reduced_rows`` at the four settings: 44 cells) and ``full`` (every row of ``trl_check.all_rows`` at all four settings:
304 cells). Cost measured on a shared 2-core machine: median 11.4 s per cell of 400 batches (4 s to
39 s; 15.5 s median in a busier run; RLOO's batches cost about twice GRPO's), so ``--scale full
--n-batches 600 --jobs 16`` needs about 304 x 17-23 s / 16 = 5.5-7.5 minutes on 16 such cores.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import platform
import time
from dataclasses import asdict, replace

from clp_min.studies import trl_check as tc

SCALES = ("tiny", "reduced", "full")
FILES = ("table.json", "table.md", "bias.png")


def plan(scale: str, cfg: tc.StudyConfig) -> tuple:
    """``(cfg, [(row, setting)])`` of a scale; ``tiny`` is the smoke test's two cells."""
    if scale not in SCALES:
        raise ValueError(f"scale: unknown {scale!r}; choose from {SCALES}")
    if scale == "full":
        return cfg, [(r, s) for r in tc.all_rows(cfg.beta) for s in tc.settings()]
    if scale == "reduced":
        return cfg, [(r, s) for r in tc.reduced_rows(cfg.beta) for s in tc.settings()]
    small = replace(cfg, n_batches=min(cfg.n_batches, 6 * 3), groups=3)
    return small, [(tc.Row("rloo", cfg.beta), tc.Setting("variable", "misaligned")),
                   (tc.Row("grpo", cfg.beta, "grpo", "none", True, "sum_then_normalize"),
                    tc.Setting("fixed", "misaligned"))]


def _cell(job):
    cfg, row, setting = job
    start = time.perf_counter()
    out = tc.run_cell(cfg, row, setting)
    out["seconds"] = time.perf_counter() - start
    return out


def run_table(cfg: tc.StudyConfig, cells: list, jobs: int = 1, progress=None) -> dict:
    """Every cell (in ``jobs`` processes, one torch thread each), with provenance."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs: must be a positive integer, got {jobs!r}")
    work = [(cfg, row, setting) for row, setting in cells]
    start = time.perf_counter()
    results = []
    if jobs == 1:
        for i, job in enumerate(work):
            results.append(_cell(job))
            if progress:
                progress(i + 1, len(work))
    else:
        with multiprocessing.get_context("spawn").Pool(jobs) as pool:
            for i, out in enumerate(pool.imap(_cell, work)):
                results.append(out)
                if progress:
                    progress(i + 1, len(work))
    import trl

    return {"config": asdict(cfg), "cells": results, "wall_seconds": time.perf_counter() - start,
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "jobs": jobs,
                        "python": platform.python_version(), "trl": trl.__version__}}


def _pm(x: float, se: float) -> str:
    return f"{x:.3f} ± {se:.3f}"


def markdown(table: dict) -> str:
    """One line per cell: predicted and measured columns with standard errors."""
    c = table["config"]
    lines = ["# TRL losses against the exact gradient of J_w\n",
             f"V = {c['vocab']}, L = {c['prompt_len']}, T = {c['response_len']}, {c['prompts']} prompts x "
             f"G = {c['G']} completions, {c['model']} (1 layer), {c['n_batches']} sampled batches per cell, SE by "
             f"{c['groups']} batch groups (jackknife), verdicts at {c['k']:g} SE. Machine: "
             f"{table['machine']['cpus']} CPUs, {table['machine']['jobs']} processes, "
             f"{table['wall_seconds']:.0f} s; trl {table['machine']['trl']}.\n",
             "rel bias = ||E[g_hat] - g|| / ||g|| against the exact gradient g of -mean J_w (± SE; 0 when the "
             "noise-corrected estimate is negative); direction error = min_c ||c E[g_hat] - g|| / ||g|| (noisy: "
             "read it against RLOO's); 'vs prediction' compares the measured mean gradient with the predicted one "
             "(docs/checking_a_trainer.md).\n",
             "| configuration | lengths | rewards | predicted | pred. rel bias | pred. scale | measured cos | "
             "measured scale | direction error | measured rel bias | verdict | vs prediction |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for cell in table["cells"]:
        m, p = cell["measured"], cell.get("predicted")
        vp = cell.get("vs_prediction")
        vs = "-" if vp is None else ("matches" if vp["unbiased"] else "differs") + \
            f" ({_pm(vp['rel_bias'], vp['rel_bias_se'])})"
        p_bias, p_scale = ("-", "-") if p is None else (f"{p['rel_bias']:.3f}", f"{p['scale']:.3f}")
        lines.append(f"| {cell['name']} | {cell['setting']['lengths']} | {cell['setting']['alignment']} | "
                     f"{cell['prediction']} | {p_bias} | {p_scale} | {m['cosine']:.3f} | {m['scale']:.3f} | "
                     f"{m['direction_error']:.3f} | "
                     f"{_pm(m['rel_bias'], m['rel_bias_se'])} | {m['verdict']} | {vs} |")
    return "\n".join(lines) + "\n"


def figure(table: dict, path) -> None:
    """Per cell: measured relative bias (± SE) with the prediction as a marker where one exists, and the direction
    error left after the best rescaling (a right direction with a smaller step has a large bias and no such error)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = table["cells"]
    labels = [f"{c['name'].replace('sum_then_normalize', '').replace('kl_correction', 'corr')} "
              f"[{c['setting']['lengths']}, {c['setting']['alignment']}]" for c in cells]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 0.26 * len(cells) + 1.4), sharey=True,
                                  gridspec_kw={"width_ratios": [2, 1]})
    y = list(range(len(cells)))
    ax.errorbar([c["measured"]["rel_bias"] for c in cells], y,
                xerr=[c["measured"]["rel_bias_se"] for c in cells], fmt="o", ms=4, label="measured (± SE)")
    pred = [(i, c["predicted"]["rel_bias"]) for i, c in enumerate(cells) if "predicted" in c]
    if pred:
        ax.plot([p for _, p in pred], [i for i, _ in pred], "x", color="red", label="predicted")
    ax2.plot([c["measured"]["direction_error"] for c in cells], y, "s", ms=4, color="gray")
    ax.set_yticks(y, labels, fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel("relative bias ||E[g_hat] - g|| / ||g||", fontsize=8)
    ax2.set_xlabel("direction error after best rescaling", fontsize=8)
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def write(table: dict, out) -> None:
    (out / "table.json").write_text(json.dumps(table, indent=1) + "\n")
    (out / "table.md").write_text(markdown(table))
    figure(table, out / "bias.png")
