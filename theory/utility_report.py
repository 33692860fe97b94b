"""Where each utility's optimum sits against the linear weightings (THEORY.md section 7): numbers and figure.

``utility_report`` solves the non-linear problem by both routes for each utility,
records their agreement, the optimum's simplex form ``(w, beta_eff)``, the best
simplex weighting at the fixed ``beta`` (m = 2) and the fixed-beta front
``w -> R(pi*_w)`` on a grid; ``plot_utility_front`` draws them (m = 2).
"""
from __future__ import annotations

import numpy as np

from theory.solve import solve
from theory.utility_cvx import solve_utility_cvx
from theory.utility_family import best_fixed_beta_weighting, fixed_beta_objective
from theory.utility_fixed_point import solve_utility_fixed_point
from theory.weights import simplex_grid


def _rewards(sol: dict, rho: np.ndarray) -> np.ndarray:
    return rho @ sol["rewards"]  # (m,): E_rho of the per-context expected rewards


def utility_report(instance, utilities: dict, beta: float, points: int = 21) -> dict:
    """``{"beta", "front": {"w": [K, m], "rewards": [K, m], "kl": [K]}, "utilities": {name: {...}}}``."""
    from theory.utility_problem import sequence_view

    rho = sequence_view(instance)[0]
    W = simplex_grid(instance.m, points - 1, field="points")
    front = solve(instance, W, beta)["optimal"]
    out = {"beta": beta, "front": {"w": W, "rewards": front["rewards"], "kl": front["kl"]}, "utilities": {}}
    for name, U in utilities.items():
        cvx = solve_utility_cvx(instance, U, beta)
        fp = solve_utility_fixed_point(instance, U, beta)
        row = {"objective": fp["expected_objective"], "rewards": _rewards(fp, rho), "kl": float(rho @ fp["kl"]),
               "g": fp["g"], "w": fp["w"], "beta_eff": fp["beta_eff"], "g_l1": fp["g_l1"],
               "fixed_point": {"solver": fp["solver"], "iterations": fp["iterations"],
                               "first_order_residual": float(fp["residual"].max())},
               "cvxpy": {"solver": cvx["solver"], "status": cvx["status"], "objective": cvx["expected_objective"]},
               "agreement": {"objective_diff": abs(cvx["expected_objective"] - fp["expected_objective"]),
                             "policy_max_diff": float(np.max(np.abs(cvx["policy"] - fp["policy"])))}}
        row["fixed_beta_regret_on_grid"] = fp["expected_objective"] - np.array(
            [fixed_beta_objective(instance, U, w, beta) for w in W])  # (K,): regret of pi*_w at beta under U
        if len(rho) == 1 and fp["on_simplex"][0]:  # one context: the front at the optimum's own KL weight
            row["front_at_beta_eff"] = solve(instance, W, float(fp["beta_eff"][0]))["optimal"]["rewards"]
        if instance.m == 2:
            best = best_fixed_beta_weighting(instance, U, beta)
            pts = solve(instance, best["w"][None], beta)["optimal"]
            row["best_fixed_beta"] = {"w": best["w"], "objective": best["objective"],
                                      "regret": fp["expected_objective"] - best["objective"],
                                      "rewards": pts["rewards"][0]}
        out["utilities"][name] = row
    return out


def plot_utility_front(report: dict, path, title: str = "") -> None:
    """PNG (m = 2). Left: the front ``w -> R(pi*_w)`` at the fixed beta with its linear weightings
    (dots), each utility's optimum (star) on the front of its own KL weight ``beta/|g|_1``
    (dashed) and its best fixed-beta weighting (diamond). Right: each linear weighting's
    regret under each utility: never 0 when the optimum is off the fixed-beta front."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    F = report["front"]
    W, R = np.asarray(F["w"]), np.asarray(F["rewards"])
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4.6))
    ax0.plot(R[:, 0], R[:, 1], "-", color="0.6", lw=1, zorder=1)
    ax0.scatter(R[:, 0], R[:, 1], c=W[:, 0], cmap="viridis", s=14, zorder=2,
                label=f"linear weightings pi*_w at beta = {report['beta']:g} (colour: w_1)")
    for k, (name, row) in enumerate(report["utilities"].items()):
        color, r = f"C{k + 1}", np.asarray(row["rewards"])
        beta_eff = np.atleast_1d(row["beta_eff"])[0]
        if "front_at_beta_eff" in row:
            Fe = np.asarray(row["front_at_beta_eff"])
            ax0.plot(Fe[:, 0], Fe[:, 1], "--", color=color, lw=0.8, zorder=1)
        ax0.scatter(*r, marker="*", s=170, color=color, edgecolor="k", zorder=4,
                    label=f"{name}: optimum at w = {np.round(np.atleast_2d(row['w'])[0], 3).tolist()}, "
                          f"KL weight beta/|g| = {beta_eff:.3g} (dashed: that front)")
        if "best_fixed_beta" in row:
            b = row["best_fixed_beta"]
            ax0.scatter(*b["rewards"], marker="D", s=40, facecolor="none", edgecolor=color, lw=1.5, zorder=3,
                        label=f"{name}: best fixed-beta w_1 = {b['w'][0]:.3f}, regret {b['regret']:.3g}")
        ax1.plot(W[:, 0], np.maximum(np.asarray(row["fixed_beta_regret_on_grid"]), 1e-16), "o-", ms=3,
                 color=color, label=name)
    ax0.set(xlabel="R_1", ylabel="R_2")
    ax1.set(xlabel="w_1 (linear weighting at the fixed beta)", ylabel="regret under U vs the non-linear optimum",
            yscale="log")
    ax1.legend(fontsize=8)
    fig.legend(*ax0.get_legend_handles_labels(), fontsize=7, loc="lower center", ncol=2, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.22, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)
