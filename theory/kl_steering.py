"""Steering the KL weight of one reward in a tree (THEORY.md P4 and section 5, second bullet).

Decoding-time realignment mixes the logits of ``pi_ref`` and ``pi*_beta`` with
weights ``(1 - lam, lam)`` at every prefix. In a bandit this is exactly
``pi*_{beta/lam}`` (P4); in a tree it is not. With ``U(s) = lam V^{beta/lam}(s)
= beta log E_ref[exp(lam r / beta) | s]`` (the soft value at beta of the leaf
values ``lam r``) the realigned policy is

    pi^lam(a|s) ∝ pi_ref(a|s) exp(lam V^beta(sa) / beta)
               ∝ pi*_{beta/lam}(a|s) exp(L(sa) / beta),   L(s) = lam V^beta(s) - U(s),

the analogue of P6 with the Lyapunov gap ``L`` in place of the Hölder gap.
Lyapunov's inequality ``log E[e^{lam r/beta}] <= lam log E[e^{r/beta}]`` gives
``L >= 0`` for ``lam <= 1`` (``L <= 0`` for ``lam >= 1``), with equality when ``r``
is constant below ``s``; ``L = 0`` at the leaves. As in P1/P7, with the objective
``J(pi) = R(pi) - (beta/lam) K(pi)``:

    J(pi*_{beta/lam}) - J(pi^lam) = (beta/lam) KL_seq(pi^lam || pi*_{beta/lam}),

and each step obeys the Hoeffding/Jensen bound of P9 with ``osc_a L(s a)``.
"""
from __future__ import annotations

import numpy as np

from theory import tree as tr
from theory.bounds import hoeffding_kl_bound
from theory.checks import check_beta, check_lam
from theory.divergence import chain_rule_kl
from theory.instances import Tree
from theory.mixing import kl_weight_mix


def _check_reward(tree: Tree, reward) -> int:
    if isinstance(reward, bool) or not isinstance(reward, (int, np.integer)) or not 0 <= reward < tree.m:
        raise ValueError(f"reward: must be an index in [0, {tree.m}), got {reward!r}")
    return int(reward)


def realigned_token_policy(tree: Tree, lam, beta, reward: int = 0) -> list:
    """P4 token by token: ``pi^lam(a|s) ∝ pi_ref(a|s)^(1-lam) pi*_beta(a|s)^lam``, by depth ``[K, V^t, V]``.

    ``pi*_beta`` is the token-level optimum (P5) of reward ``reward`` alone at KL weight ``beta``.
    """
    lam, beta, i = check_lam(lam), check_beta(beta), _check_reward(tree, reward)
    log_star = tr.optimal_token_policy(tree, np.eye(tree.m)[i:i + 1], beta)  # [1, V^t, V] by depth
    return [kl_weight_mix(tree.ref_logp[t], log_star[t][0], lam) for t in range(tree.horizon)]


def _scaled_optimum(tree: Tree, lam: np.ndarray, beta: float, i: int) -> tuple:
    # pi*_{beta/lam} for reward i is the beta-optimum of the leaf values lam r_i (same exponent lam r / beta),
    # which keeps the whole stack of lam in one batched soft-value pass.
    U = tr.soft_values(tree, lam[:, None] * tree.rewards[None, :, i], beta)  # [K, V^t] by depth
    return U, tr.policy_from_values(tree, U, beta)


def kl_steering_gap(tree: Tree, lam, beta, reward: int = 0) -> dict:
    """Realigned policy against the exact optimum at KL weight ``beta / lam``, for each ``lam`` ``[K]``.

    Returns (arrays ``[K]`` unless said):
        beta_eff: ``beta / lam``.
        optimal, realigned: ``{"reward", "kl", "objective"}`` with objective ``R - (beta/lam) K``.
        gap: ``J(pi*_{beta/lam}) - J(pi^lam) >= 0``.
        kl_realigned_to_opt: ``KL_seq(pi^lam || pi*_{beta/lam})``; ``gap = (beta/lam)`` times it.
        lyapunov_gap: ``L(s) = lam V^beta(s) - lam V^{beta/lam}(s)`` by depth ``[K, V^t]``.
        lyapunov_root: ``L(root)``.
        lyapunov_holds: ``(1 - lam) L(s) >= 0`` at every state (to 1e-9 max(1, lam) max(1, |r|)).
        gap_bound: ``(1/lam) sum_{t <= T-2} E_{s_t ~ pi^lam} min(osc_a L(s_t a)^2/(8 beta), osc_a L(s_t a))``.
    """
    lam, beta, i = check_lam(lam), check_beta(beta), _check_reward(tree, reward)
    K, V = lam.size, tree.vocab
    e_i = np.tile(np.eye(tree.m)[i], (K, 1))  # (K, m)
    log_real = realigned_token_policy(tree, lam, beta, i)
    U, log_opt = _scaled_optimum(tree, lam, beta, i)
    V_beta = tr.soft_values_w(tree, e_i[:1], beta)  # [1, V^t] by depth
    L = [lam[:, None] * V_beta[t] - U[t] for t in range(tree.horizon + 1)]

    beta_eff = beta / lam
    points = {}
    for name, log_pi in (("optimal", log_opt), ("realigned", log_real)):
        s = tr.sequence_stats(tree, log_pi, e_i, beta)  # its objective uses beta; ours uses beta / lam
        R, kl = s["rewards"][:, i], s["kl"]
        points[name] = {"reward": R, "kl": kl, "objective": R - beta_eff * kl}

    tol = 1e-9 * np.maximum(1.0, lam) * max(1.0, float(np.abs(tree.rewards[:, i]).max()))  # (K,) rounding of L
    sign = np.sign(1 - lam)[:, None]
    holds = np.all([np.all(sign * L_t >= -tol[:, None], axis=1) for L_t in L], axis=0)

    kl_real = chain_rule_kl(tr.prefix_probs(tree, log_real), log_real, log_opt)  # (K,), >= 0 (theory.divergence)
    probs = tr.prefix_probs(tree, log_real)
    bound = np.zeros(K)
    for t in range(tree.horizon - 1):  # at t = T-1 the children are leaves, where L = 0
        child = L[t + 1].reshape(K, V ** t, V)  # (K, V^t, V)
        bound += (probs[t] * hoeffding_kl_bound(child, beta)).sum(axis=1)  # P9, one step
    return {"lam": lam, "beta_eff": beta_eff, **points,
            "gap": beta_eff * kl_real,  # = J(pi*) - J(pi^lam), in a form that is never negative
            "kl_realigned_to_opt": kl_real,
            "lyapunov_gap": L, "lyapunov_root": L[0][:, 0], "lyapunov_holds": holds,
            "gap_bound": bound / lam}
