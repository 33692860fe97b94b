"""The oracle: exact optimum and zero-shot mixture of an instance at a stack of weightings.

This is what ``clp theory solve`` prints, and what other implementations can be
checked against.
"""
from __future__ import annotations

import numpy as np

from theory import gibbs, tree as tr
from theory.instances import Bandit, Tree
from theory.mixing import logit_mix
from theory.tree_stats import optimum_and_mixture_stats


def _point(stats: dict) -> dict:
    return {"rewards": stats["rewards"], "kl": stats["kl"], "objective": stats["objective"]}


def solve_bandit(bandit: Bandit, w: np.ndarray, beta: float) -> dict:
    """P1 and P3: optimum, zero-shot logit mixture of the per-reward optima, and the gap ``[K]``."""
    log_star = gibbs.gibbs_log_policy(bandit, w, beta)  # (K, X, Y)
    log_mix = logit_mix(gibbs.per_reward_log_policies(bandit, beta), w)  # (K, X, Y)
    opt = gibbs.bandit_stats(bandit, log_star, w, beta)
    mix = gibbs.bandit_stats(bandit, log_mix, w, beta)
    return {"optimal": _point(opt), "logit_mix": _point(mix),
            "gap": opt["objective"] - mix["objective"],
            "log_partition": gibbs.log_partition(bandit, w, beta) @ bandit.context_probs}


def solve_tree(tree: Tree, w: np.ndarray, beta: float) -> dict:
    """P5 to P7 on a tree: optimum, per-token zero-shot mixture, gap and its ingredients ``[K]``.

    ``log_partition`` is V_w(root)/beta; ``kl_mix_to_opt`` is KL_seq(pi^mix_w || pi*_w),
    so ``gap = beta * kl_mix_to_opt`` (P7) up to rounding. Computed in one upward pass
    over the leaves (theory.tree_stats); tested against enumeration and the token-policy route.
    """
    s = optimum_and_mixture_stats(tree, w, beta)
    return {"optimal": s["optimal"], "logit_mix": s["logit_mix"],
            "gap": s["optimal"]["objective"] - s["logit_mix"]["objective"],
            "kl_mix_to_opt": s["kl_mix_to_opt"],
            "holder_gap_root": s["holder_gap_root"],
            "misalignment_root": float(tr.misalignment(tree)[0][0]),
            "log_partition": s["log_partition"]}


def solve(instance: Bandit | Tree, w: np.ndarray, beta: float) -> dict:
    """Dispatch on the instance kind; ``w`` is ``[K, m]`` (already checked)."""
    return solve_tree(instance, w, beta) if isinstance(instance, Tree) else solve_bandit(instance, w, beta)


def policy_values(instance: Bandit | Tree, log_pi, w: np.ndarray, beta: float) -> dict:
    """Exact (R, K, J_w) of a policy: ``[K, X, Y]`` for a bandit, a list by depth for a tree."""
    if isinstance(instance, Tree):
        return tr.sequence_stats(instance, log_pi, w, beta)
    return gibbs.bandit_stats(instance, log_pi, w, beta)


def reference_point(instance: Bandit | Tree, beta: float) -> dict:
    """(R, K = 0, J) of pi_ref itself: the default reference point of the front measures."""
    w = np.full((1, instance.m), 1.0 / instance.m)
    if isinstance(instance, Tree):
        log_ref = tr.reference_token_policy(instance)
    else:
        log_ref = instance.ref_logp[None]
    stats = policy_values(instance, log_ref, w, beta)
    return {"rewards": stats["rewards"][0], "kl": float(stats["kl"][0])}
