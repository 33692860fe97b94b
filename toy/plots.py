"""Figures for E1..E8 (matplotlib, Agg backend): one function per experiment, results dict -> PNG path."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

DPI = 80  # keeps the committed PNGs small


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path.name


def plot_e1(r: dict, out: Path) -> str:
    fig, ax = plt.subplots(1, 2, figsize=(8, 3))
    for a, key, title in ((ax[0], "max_abs_gap", "P3: zero-shot gap"),
                          (ax[1], "kl_weight_max_abs_logp_error", "P4: KL-weight identity error")):
        a.hist(np.log10(np.maximum(np.asarray(r[key]), 1e-18)), bins=30)
        a.set(title=title, xlabel="log10 max abs error per bandit", ylabel="bandits")
    return _save(fig, out / "E1_bandit_exactness.png")


def plot_e2(r: dict, out: Path) -> str:
    rows = [x for x in r["rows"] if x["family"] == "random"]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.4))
    for beta, marker in zip(sorted({x["beta"] for x in rows}), "os^"):
        sel = [x for x in rows if x["beta"] == beta]
        eps = np.array([x["eps"] for x in sel]) * np.exp(np.random.default_rng(0).normal(0, 0.05, len(sel)))
        ax[0].scatter(np.maximum(eps, 1e-4), np.maximum([x["avg_gap"] for x in sel], 1e-18), marker=marker,
                      s=12, label=f"beta = {beta:g}")
        ratio = [x["tightness_alignment"] for x in sel]
        ax[1].scatter(np.maximum(eps, 1e-4), np.maximum(ratio, 1e-12), marker=marker, s=12, label=f"beta = {beta:g}")
    ax[0].set(xscale="log", yscale="log", xlabel="root misalignment eps (0 drawn at 1e-4)",
              ylabel="average zero-shot gap", title=f"Spearman = {r['spearman_eps_gap']:.2f}")
    ax[1].set(xscale="log", yscale="log", xlabel="eps", ylabel="max gap / P9 alignment bound", title="bound tightness")
    ax[0].legend(fontsize=7)
    return _save(fig, out / "E2_gap_vs_misalignment.png")


def plot_e3(r: dict, out: Path) -> str:
    w1 = np.asarray(r["w1"])
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    best = lambda runs: min(runs, key=lambda s: s["avg_normalised"])  # noqa: E731
    curves = {"zero-shot": r["zero_shot"], "linear CLP (best, grid)": r["linear_best"],
              "linear CLP (trained on D)": r["linear_on_D"], "nonlinear CLP (best init)": best(r["mixed_net_exact"]),
              "input conditioning (best init)": best(r["input_net_exact"]),
              "nonlinear CLP, REINFORCE": best(r["mixed_net_reinforce"])}
    for name, s in curves.items():
        ax[0].plot(w1, s["regret"], marker=".", label=name)
    ax[0].set(xlabel="w_1", ylabel="regret J(pi*_w) - J(pi)", title="P10: regret across the grid")
    ax[0].legend(fontsize=7)
    for name, s in (("optimum", r["oracle"]), ("zero-shot", r["zero_shot"]), ("linear CLP", r["linear_best"]),
                    ("nonlinear CLP", best(r["mixed_net_exact"]))):
        R = np.asarray(s["rewards"])
        ax[1].plot(R[:, 0], R[:, 1], marker=".", label=name)
    c = r["c"]
    ax[1].scatter([c], [c], color="k", marker="*", s=80, label=f"(c, c) = ({c}, {c})")
    ax[1].set(xlabel="R_1", ylabel="R_2", title="reward front reached")
    ax[1].legend(fontsize=7)
    return _save(fig, out / "E3_p10.png")


def plot_e4(r: dict, out: Path) -> str:
    fig, ax = plt.subplots(figsize=(4.5, 4))
    for fam, marker in (("aligned", "o"), ("aligned_below_root", "s"), ("misaligned", "^")):
        sel = [x for x in r["rows"] if x["family"] == fam]
        zs = np.maximum([x["zero_shot"]["avg_regret"] for x in sel], 1e-16)
        lin = np.maximum([x["linear"]["avg_regret"] for x in sel], 1e-16)
        ax.scatter(zs, lin, marker=marker, s=16, label=fam)
        sam = [x for x in sel if "linear_reinforce" in x]
        if sam:
            ax.scatter(np.maximum([x["zero_shot"]["avg_regret"] for x in sam], 1e-16),
                       np.maximum([x["linear_reinforce"]["avg_regret"] for x in sam], 1e-16),
                       marker=marker, s=30, facecolors="none", edgecolors="k")
    lim = [1e-16, 1]
    ax.plot(lim, lim, "k--", lw=0.8)
    ax.set(xscale="log", yscale="log", xlabel="zero-shot average regret",
           ylabel="linear CLP average regret", title="E4 (hollow: REINFORCE)")
    ax.legend(fontsize=7)
    return _save(fig, out / "E4_training_vs_alignment.png")


def plot_e5(r: dict, out: Path) -> str:
    rows = r["rows"]
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    s = np.array([x["misspecification"] for x in rows])
    ax.scatter(np.maximum(s, 1e-2), np.maximum([x["avg_gap"] for x in rows], 1e-16), s=14,
               label="best in class - soup")
    ax.scatter(np.maximum(s, 1e-2), np.maximum([x["avg_class_gap"] for x in rows], 1e-16), s=14, marker="x",
               label="optimum - best in class")
    ax.set(xscale="log", yscale="log", xlabel="misspecification (0 drawn at 1e-2)", ylabel="average gap",
           title="E5: Rewarded Soups, log-linear bandits")
    ax.legend(fontsize=7)
    return _save(fig, out / "E5_rewarded_soups.png")


def plot_e6(r: dict, out: Path) -> str:
    lams = np.asarray(r["lams"])
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    for fam, color in zip(sorted({x["family"] for x in r["rows"]}), ("C0", "C1", "C2")):
        for k, x in enumerate(x for x in r["rows"] if x["family"] == fam):
            ax.plot(lams, np.maximum(np.abs(x["gap"]), 1e-17), color=color, alpha=0.6,
                    label=fam if k == 0 else None)
    ax.set(xscale="log", yscale="log", xlabel="lam", ylabel="|gap| to pi*_{beta/lam}",
           title="E6: per-token KL-weight steering")
    ax.legend(fontsize=7)
    return _save(fig, out / "E6_kl_steering.png")


def plot_e7(r: dict, out: Path) -> str:
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.4))
    top = max(x["drift"] for x in r["rows"])
    kinds = (("on_policy", 0.0, "C0", "on-policy"), ("on_policy+drift", top, "C3", f"on-policy, drift {top:g}"),
             ("coverage", 0.0, "C1", "coverage (remedy)"))
    for regime, drift, color, label in kinds:
        for family, marker in (("two_supports", "o"), ("aligned", "s")):
            sel = [x for x in r["rows"] if x["family"] == family and x["regime"] == regime and x["drift"] == drift]
            if not sel:
                continue
            reg = np.concatenate([x["regret"] for x in sel])
            bnd = np.concatenate([x["bound"] for x in sel])
            ax[0].scatter(np.maximum(reg, 1e-12), np.maximum(bnd, 1e-12), s=8, marker=marker, color=color,
                          label=f"{label}, {family}")
            if family == "two_supports":
                ax[1].plot(r["w1"], np.mean([x["normalised"] for x in sel], axis=0), color=color, label=label)
    lo, hi = ax[0].get_xlim()
    ax[0].plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax[0].set(xscale="log", yscale="log", xlabel="regret of the trained mixture", ylabel="P11 bound",
              title="P11: bound vs regret (every w)")
    ax[0].legend(fontsize=5)
    ax[1].set(xlabel="w_1", ylabel="normalised regret (mean over trees)", title="two-support trees")
    ax[1].legend(fontsize=7)
    return _save(fig, out / "E7_trained_experts.png")


def plot_e8(r: dict, out: Path) -> str:
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
    utilities = sorted({x["utility"] for x in r["rows"]})
    fams = ("bandit", "misaligned_tree", "aligned_tree")
    for k, u in enumerate(utilities):
        for j, fam in enumerate(fams):
            rows = [x for x in r["rows"] if x["utility"] == u and x["family"] == fam and "fixed_beta_regret" in x]
            pos = k * (len(fams) + 1) + j
            ax[0].scatter([pos] * len(rows), [max(x["fixed_beta_regret"], 1e-17) for x in rows], color=f"C{j}",
                          s=12, label=fam if k == 0 else None)
            ax[1].scatter([pos] * len(rows), [max(abs(x["zero_shot_regret"]), 1e-17) for x in rows],
                          color=f"C{j}", s=12, label=fam if k == 0 else None)
    ticks = [k * (len(fams) + 1) + 1 for k in range(len(utilities))]
    for a, title in ((ax[0], "(b) best fixed-beta simplex w"), (ax[1], "(c) zero-shot mix at (w, beta/|g|)")):
        a.set(yscale="log", ylabel="regret vs non-linear optimum", title=title)
        a.set_xticks(ticks, utilities, fontsize=8)
    ax[0].legend(fontsize=7)
    return _save(fig, out / "E8_nonlinear_scalarisation.png")


PLOTS = {"E1": plot_e1, "E2": plot_e2, "E3": plot_e3, "E4": plot_e4, "E5": plot_e5, "E6": plot_e6,
         "E7": plot_e7, "E8": plot_e8}
