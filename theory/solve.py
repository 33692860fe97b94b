"""The oracle: exact optimum and zero-shot mixture of an instance at a stack of weightings.

This is what ``clp theory solve`` prints, and what other implementations can be
checked against.
"""
from __future__ import annotations

import numpy as np

from theory import gibbs, tree as tr
from theory.checks import MAX_ENTRIES
from theory.divergence import chain_rule_kl, holder_gap_nonneg, kl_nonneg
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
    kl_mix_to_opt = kl_nonneg(log_mix, log_star) @ bandit.context_probs  # (K,), >= 0
    return {"optimal": _point(opt), "logit_mix": _point(mix),
            "gap": beta * kl_mix_to_opt,  # P7 (bandit case): J_w(pi*_w) - J_w(pi) = beta KL(pi || pi*_w)
            "log_partition": gibbs.log_partition(bandit, w, beta) @ bandit.context_probs}


FAST_TREE_RANGE = (1e3, 1e6)  # solve_tree's one-pass route where beta <= [0] and max |r| / beta <= [1]


def solve_tree(tree: Tree, w: np.ndarray, beta: float) -> dict:
    """P5 to P7 on a tree: optimum, per-token zero-shot mixture, gap and its ingredients ``[K]``.

    ``log_partition`` is V_w(root)/beta; ``kl_mix_to_opt`` is KL_seq(pi^mix_w || pi*_w),
    a sum of non-negative terms, and ``gap = beta * kl_mix_to_opt`` (P7), so the gap is
    never negative (theory.divergence); P7 itself is checked against ``optimal.objective
    - logit_mix.objective``.

    Where ``beta <= 1e3`` and ``max |r| / beta <= 1e6`` (``FAST_TREE_RANGE``; every use in
    this project) it takes one upward pass over the leaves (theory.tree_stats, tested
    against the token route and enumeration). Beyond it the closed forms carry rounding
    that no longer vanishes (``beta eps |log Z|`` in ``beta KL``; ``eps |r| / beta`` in the
    mixture's log-probabilities), so the token route below runs, whose per-token
    log-softmax and KL terms stay exact across the range (docs/limits.md).
    """
    beta_max, ratio_max = FAST_TREE_RANGE
    if beta <= beta_max and np.abs(tree.rewards).max() / beta <= ratio_max:
        s = optimum_and_mixture_stats(tree, w, beta)
        return {"optimal": s["optimal"], "logit_mix": s["logit_mix"],
                "gap": beta * s["kl_mix_to_opt"],
                "kl_mix_to_opt": s["kl_mix_to_opt"],
                "holder_gap_root": s["holder_gap_root"],
                "misalignment_root": float(tr.misalignment(tree)[0][0]),
                "log_partition": s["log_partition"]}
    return _solve_tree_by_tokens(tree, w, beta)


def _solve_tree_by_tokens(tree: Tree, w: np.ndarray, beta: float) -> dict:
    """solve_tree through the token policies ``[K, V^t, V]`` of every depth (P5, section 3)."""
    V_w = tr.soft_values_w(tree, w, beta)
    log_star = tr.policy_from_values(tree, V_w, beta)
    V_i = tr.per_reward_soft_values(tree, beta)  # (m, V^t) by depth
    experts = tr.policy_from_values(tree, V_i, beta)
    log_mix = tr.zero_shot_token_policy(tree, w, beta, experts=experts)
    opt = tr.sequence_stats(tree, log_star, w, beta)
    mix = tr.sequence_stats(tree, log_mix, w, beta)
    kl_mix_to_opt = chain_rule_kl(tr.prefix_probs(tree, log_mix), log_mix, log_star)
    return {"optimal": _point(opt), "logit_mix": _point(mix),
            "gap": beta * kl_mix_to_opt,
            "kl_mix_to_opt": kl_mix_to_opt,
            "holder_gap_root": holder_gap_nonneg(w, tr.leaf_log_probs(tree, experts), beta),
            "misalignment_root": float(tr.misalignment(tree)[0][0]),
            "log_partition": V_w[0][:, 0] / beta}


def solve(instance: Bandit | Tree, w: np.ndarray, beta: float) -> dict:
    """Dispatch on the instance kind; ``w`` is ``[K, m]`` (already checked).

    Refuses before any work when ``K`` times the instance's size exceeds ``MAX_ENTRIES``.
    """
    size = instance.n_leaves if isinstance(instance, Tree) else instance.ref_logp.size
    if len(w) * size > MAX_ENTRIES:
        raise ValueError(f"weights: {len(w)} weightings x {size} sequences exceeds the limit of "
                         f"{MAX_ENTRIES:g} entries")
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
