"""The exact regularised front and the zero-shot front of an instance (THEORY.md P2, section 6).

``exact_and_zero_shot_front`` evaluates both on a simplex grid in one batched call
and scores the zero-shot front against the exact one with theory.pareto.
"""
from __future__ import annotations

import numpy as np

from theory import pareto
from theory.instances import Bandit, Tree
from theory.solve import reference_point, solve
from theory.weights import simplex_grid


def exact_and_zero_shot_front(instance: Bandit | Tree, beta: float, points: int) -> dict:
    """Both fronts on ``simplex_grid(m, points - 1)`` and the section-6 measures.

    The reference point of the hypervolume is R(pi_ref) (section 6's default).
    For m = 1 the grid is the single weighting (1,).
    """
    if points < 2:
        raise ValueError(f"points: need at least 2 grid points, got {points}")
    m = instance.m
    W = simplex_grid(m, points - 1, field="points")  # (K, m), K checked against MAX_WEIGHTINGS first
    sol = solve(instance, W, beta)
    Z, A = sol["optimal"]["rewards"], sol["logit_mix"]["rewards"]  # (K, m)
    ref = reference_point(instance, beta)
    J_ref = W @ ref["rewards"]  # K(pi_ref) = 0
    measures = {
        "hypervolume_exact": pareto.hypervolume(Z, ref["rewards"]),
        "hypervolume_zero_shot": pareto.hypervolume(A, ref["rewards"]),
        "relative_hypervolume_zero_shot": pareto.relative_hypervolume(A, Z, ref["rewards"]),
        "igd_plus_zero_shot": pareto.igd_plus(A, Z),
        "epsilon_additive_zero_shot": pareto.epsilon_additive(A, Z),
        "max_gap": float(sol["gap"].max()),
        "mean_normalised_regret_zero_shot": float(np.mean(pareto.normalised_regret(
            sol["optimal"]["objective"], sol["logit_mix"]["objective"], J_ref))),
    }
    return {"weights": W, "reference": ref, "solution": sol, "measures": measures}


def plot_front(front: dict, path, title: str = "") -> None:
    """PNG: exact front against the zero-shot front (R_1, R_2), and the gap Delta(w)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sol, W = front["solution"], front["weights"]
    Z, A = sol["optimal"]["rewards"], sol["logit_mix"]["rewards"]
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 4))
    if Z.shape[1] >= 2:
        ax0.plot(Z[:, 0], Z[:, 1], "o-", ms=4, label="exact front  pi*_w")
        ax0.plot(A[:, 0], A[:, 1], "x--", ms=6, label="zero-shot  pi^mix_w")
        r = front["reference"]["rewards"]
        ax0.plot(r[0], r[1], "k*", ms=10, label="pi_ref (HV reference)")
        ax0.set_xlabel("R_1")
        ax0.set_ylabel("R_2")
        if Z.shape[1] > 2:
            ax0.set_title("projection on (R_1, R_2)")
    else:
        ax0.plot(sol["optimal"]["kl"], Z[:, 0], "o-", label="exact")
        ax0.set_xlabel("KL")
        ax0.set_ylabel("R_1")
    ax0.legend(fontsize=8)
    ax1.plot(np.arange(len(W)) if W.shape[1] > 2 else W[:, 0], sol["gap"], "o-")
    ax1.set_xlabel("grid index" if W.shape[1] > 2 else "w_1")
    ax1.set_ylabel("gap  J_w(pi*_w) - J_w(pi^mix_w)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
