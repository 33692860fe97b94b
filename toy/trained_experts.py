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

from scipy.special import log_softmax

from theory import tree as tr
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


def drift_off_support(tree, experts: list, sigma: float, rng: np.random.Generator,
                      unreached: float = 1e-3) -> list:
    """Experts whose logits move by ``sigma N(0, 1)`` at every prefix they reach with probability < ``unreached``.

    Where an expert goes nothing changes, so its own regret moves by at most ~``unreached``
    times a KL; where it never goes its conditionals drift by ~``sigma``. This stands in
    for what shared parameters do off-support (a network's conditionals there move with
    every step taken elsewhere; a table's stay at pi_ref under plain gradient steps):
    the size of the off-support error becomes a knob, everything else fixed.
    """
    out = [lp.copy() for lp in experts]
    for i in range(tree.m):
        probs = tr.prefix_probs(tree, [lp[i:i + 1] for lp in experts])  # by depth (1, V^t)
        for t in range(tree.horizon):
            noise = rng.normal(size=experts[t][i].shape)  # (V^t, V)
            off = (probs[t][0] < unreached)[:, None]  # (V^t, 1)
            out[t][i] = log_softmax(experts[t][i] + sigma * off * noise, axis=-1)
    return out


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
            "avg_divergence_under_mixture": float((grid * res["divergence_under_mixture"]).sum(axis=1)[inner].mean()),
            "avg_divergence_own": float(res["divergence_own"].mean()),
            "avg_kl_error_under_mixture": float((grid * res["kl_error_under_mixture"]).sum(axis=1)[inner].mean()),
            "avg_kl_error_own": float(res["kl_error_own"].mean()),
            "avg_error_own": float(res["error_own"].mean())}


def e7_trained_experts(cfg, progress: bool = True) -> dict:
    """E7: on-policy experts (with off-support drift of growing size) vs coverage experts on aligned trees."""
    rng = np.random.default_rng([cfg.seed, 7])
    drift_rng = np.random.default_rng([cfg.seed, 7, 1])  # its own stream: the trees do not depend on the drifts
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
            variants = [(regime, 0.0, experts)]
            if regime == "on_policy":
                variants += [("on_policy+drift", s, drift_off_support(tree, experts, s, drift_rng))
                             for s in cfg.e7_drifts]
            for name, sigma, ex in variants:
                rows.append({"family": family, "regime": name, "drift": sigma,
                             "scale": float(np.abs(tree.rewards).max()), **evaluate(tree, ex, cfg.e7_beta, grid)})
    err, reg = [r["avg_error_under_mixture"] for r in rows], [r["avg_inner_regret"] for r in rows]
    series = []  # per two-support tree: the on-policy experts and their drifted copies
    for n in range(cfg.e7_trees):
        block = [x for x in rows if x["family"] == "two_supports" and x["regime"].startswith("on_policy")]
        block = block[n * (1 + len(cfg.e7_drifts)):(n + 1) * (1 + len(cfg.e7_drifts))]
        series.append({"drift": [x["drift"] for x in block], "avg_inner_regret": [x["avg_inner_regret"] for x in block],
                       "avg_kl_error_under_mixture": [x["avg_kl_error_under_mixture"] for x in block],
                       "max_own_normalised": [float(np.max(x["own_normalised"])) for x in block]})
    return {"rows": rows, "w1": grid[:, 0], "beta": cfg.e7_beta, "drift_series": series,
            "spearman_error_under_mixture_regret": float(spearmanr(err, reg).statistic),
            "spearman_error_own_regret": float(spearmanr([r["avg_error_own"] for r in rows], reg).statistic),
            "spearman_divergence_under_mixture_regret": float(spearmanr(
                [r["avg_divergence_under_mixture"] for r in rows], reg).statistic),
            "spearman_divergence_own_regret": float(spearmanr([r["avg_divergence_own"] for r in rows], reg).statistic),
            "spearman_kl_error_under_mixture_regret": float(spearmanr([r["avg_kl_error_under_mixture"] for r in rows],
                                                                      reg).statistic),
            "spearman_kl_error_own_regret": float(spearmanr([r["avg_kl_error_own"] for r in rows], reg).statistic)}
