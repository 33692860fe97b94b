"""E7: zero-shot mixing of trained experts under alignment (THEORY.md P11).

Per-reward experts are tabular token policies started at pi_ref and trained
with exact gradients of ``J_{e_i}`` ("on_policy": each prefix gets the gradient
its own visitation gives it), or of the same objective averaged over every
prefix ("coverage": ``toy.objective.prefix_averaged_objective`` with ``mu``
uniform over the prefixes of each depth, the remedy). Trees are aligned
(``r_i = base + c_i``) or aligned below the root (``r_i - r_j`` depends on the first
token only): in both the ideal zero-shot is exact (P8, P6), so all of the
trained mixture's regret is the experts' doing. Everything is measured by
``theory.trained_mixing`` against theory's exact optimum.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr
from tqdm import tqdm

from theory.random_instances import random_tree
from theory.trained_mixing import trained_mixing_gap
from theory.weights import simplex_grid
from toy.families import two_support_tree
from toy.objective import policy_log_probs
from toy.policies import Expert
from toy.regret import optimal_values, reference_values
from toy.train import TrainConfig, train

REGIMES = ("on_policy", "coverage")


def coverage_weights(V: int, T: int) -> list:
    """``mu``: uniform over the prefixes of each depth t < T, ``[V^t]`` by depth."""
    return [np.full(V ** t, 1.0 / V ** t) for t in range(T)]


def train_experts(tree, beta: float, regime: str, config: TrainConfig) -> list:
    """The m experts, each trained at its vertex ``e_i`` from pi_ref; log-probs by depth ``[m, V^t, V]``.

    Both regimes take exact gradients with plain gradient steps (``config``), so a prefix
    learns in proportion to its weight in the objective: its visitation by the expert
    itself ("on_policy") or ``coverage_weights`` ("coverage").
    """
    mu = coverage_weights(tree.vocab, tree.horizon) if regime == "coverage" else None
    experts = []
    for i in range(tree.m):
        e_i = np.eye(tree.m)[i:i + 1]  # (1, m)
        policy = Expert(tree)
        train(policy, tree, beta, e_i, config, mu=mu)
        experts.append(policy_log_probs(policy, e_i))
    return [np.concatenate([x[t] for x in experts]) for t in range(tree.horizon)]


def evaluate(tree, experts: list, beta: float, grid: np.ndarray) -> dict:
    """P11's quantities on the grid, normalised by ``J_w(pi*_w) - J_w(pi_ref)`` where the claim needs it."""
    res = trained_mixing_gap(tree, experts, grid, beta)
    scale = optimal_values(tree, grid, beta) - reference_values(tree, grid)  # (K,) > 0 off ties
    vertices = np.eye(tree.m)
    vertex_scale = optimal_values(tree, vertices, beta) - reference_values(tree, vertices)  # (m,)
    weighted = (grid * res["error_under_mixture"]).sum(axis=1)  # (K,): sum_i w_i sum_t E_q d_i
    inner = (grid > 0).all(axis=1)  # the mixtures proper (vertices are the experts themselves)
    return {"regret": res["regret"], "bound": res["bound"], "normalised": res["regret"] / scale,
            "avg_normalised": float((res["regret"] / scale).mean()),
            "avg_regret": float(res["regret"].mean()), "avg_bound": float(res["bound"].mean()),
            "avg_inner_regret": float(res["regret"][inner].mean()),
            "max_ideal_regret": float(res["ideal_regret"].max()),
            "own_normalised": res["own_regret"] / vertex_scale,
            "error_own": res["error_own"], "error_under_mixture": res["error_under_mixture"],
            "avg_error_under_mixture": float(weighted[inner].mean()),
            "avg_error_own": float(res["error_own"].mean())}


def e7_trained_experts(cfg, progress: bool = True) -> dict:
    """E7: on-policy experts vs coverage experts on aligned trees; P11's bound on every instance."""
    rng = np.random.default_rng([cfg.seed, 7])
    grid = simplex_grid(2, cfg.e7_grid)
    config = TrainConfig(steps=cfg.e7_steps, lr=cfg.e7_lr, optimizer="sgd", log_every=cfg.e7_steps)
    makers = {"two_supports": lambda: two_support_tree(rng, vocab=3, horizon=3, margin=cfg.e7_margin,
                                                       ref_entry=cfg.e7_ref_entry, scale=cfg.e7_scale),
              "aligned": lambda: random_tree(rng, vocab=3, horizon=3, rewards=2, scale=cfg.e7_scale,
                                             misalignment=0.0)}
    jobs = [(f, k) for f in makers for k in range(cfg.e7_trees)]
    rows = []
    for family, k in tqdm(jobs, desc="E7 trees", disable=not progress, leave=False):
        tree = makers[family]()
        for regime in REGIMES:
            experts = train_experts(tree, cfg.e7_beta, regime, config)
            rows.append({"family": family, "regime": regime, "scale": float(np.abs(tree.rewards).max()),
                         **evaluate(tree, experts, cfg.e7_beta, grid)})
    err, reg = [r["avg_error_under_mixture"] for r in rows], [r["avg_inner_regret"] for r in rows]
    return {"rows": rows, "w1": grid[:, 0], "beta": cfg.e7_beta,
            "spearman_error_under_mixture_regret": float(spearmanr(err, reg).statistic),
            "spearman_error_own_regret": float(spearmanr([r["avg_error_own"] for r in rows], reg).statistic)}
