"""Zero-shot mixing of *trained* experts: the gap, its decomposition and bounds (THEORY.md P11, P12).

Experts ``pi_i`` are any token policies (by depth ``[m, V^t, V]``, log-probs, all
``> 0``), standing for per-reward policies someone trained. Write

    pi*_i = pi*_{e_i}                 the exact per-reward optima (P5)
    e_i(a|s) = log pi_i(a|s) - log pi*_i(a|s)            expert i's error at s
    d_i(s) = osc_a e_i(a|s)           Hilbert's projective distance (theory.divergence.hilbert_distance)
    d_w(s) = sum_i w_i d_i(s)
    q   = pi^mix_w of the trained experts  (logit mixing, theory.mixing.logit_mix)
    q*  = pi^mix_w of the exact optima     (the ideal zero-shot, theory.tree.zero_shot_token_policy)
    p*  = pi*_w                            (the optimum)

P11 (trees): ``Delta^tr = J_w(p*) - J_w(q) = beta KL_seq(q || p*)`` and

    Delta^tr = Delta^id + beta KL_seq(q || q*) + sum_t (E_{s_t~q} - E_{s_t~q*}) H_w(s_t)          (exact)
    Delta^tr <= sum_t E_{s_t~q} rate(osc_a G_w(s_t a) + beta d_w(s_t))                            (bound)
    Delta^tr <= Delta^id + beta E + sqrt(E / 2) sum_t osc_{s_t} H_w(s_t),
                E = sum_t E_{s_t~q} rate(beta d_w(s_t)) / beta  >=  KL_seq(q || q*)                 (bound)
    the same with E = sum_t E_{s_t~q} sum_i w_i (E_{q(.|s_t)} - E_{q*(.|s_t)}) e_i  (Jeffreys)   (bound)
    the same with E = sum_t E_{s_t~q} sum_i w_i D_i(s_t)                             (convexity)  (bound)

where ``D_i(s) = log E_{q(.|s)} exp(-e_i) + E_{q(.|s)} e_i >= 0`` is expert i's divergence from
its optimum *measured with the mixture's tokens* (P11 (g); with the expert's own tokens it is
``KL(pi_i || pi*_i)``), and exactly ``KL(q(.|s) || q*(.|s)) = log E_q exp(-f) + E_q f``,
``f = sum_i w_i e_i`` (no ``q*`` needed).

with ``rate(x) = min(x^2 / (8 beta), x)`` (theory.bounds.kl_rate) and ``H_w`` the
one-step Hölder gap. Every expectation is over the prefixes the *trained
mixture* reaches. P12 (bandits, Rewarded Soups with log-linear experts) is the
case T = 1.
"""
from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from theory import gibbs, tree as tr
from theory.bounds import kl_rate
from theory.checks import check_beta, check_weights, finite_array
from theory.divergence import chain_rule_kl, hilbert_distance, kl_nonneg
from theory.instances import Bandit, Tree
from theory.mixing import logit_mix

NORMALISED = 1e-9  # an expert's rows must be log-probabilities to this tolerance


def check_experts(experts, shapes: list, field: str = "experts") -> list:
    """Expert log-probabilities by depth: finite (every probability > 0) and normalised; refused otherwise."""
    if len(experts) != len(shapes):
        raise ValueError(f"{field}: expected {len(shapes)} depths, got {len(experts)}")
    out = []
    for t, (lp, shape) in enumerate(zip(experts, shapes)):
        lp = finite_array(lp, f"{field}[{t}]")
        if lp.shape != shape:
            raise ValueError(f"{field}[{t}]: expected shape {shape}, got {lp.shape}")
        if np.abs(logsumexp(lp, axis=-1)).max() > NORMALISED:
            raise ValueError(f"{field}[{t}]: rows are not normalised log-probabilities")
        out.append(lp)
    return out


def one_step_holder_gap(tree: Tree, w: np.ndarray, beta: float) -> list:
    """``H_w(s) = sum_i w_i V_i(s) - beta log sum_a pi_ref(a|s) exp(sum_i w_i V_i(sa)/beta) >= 0``, ``[K, V^t]``, t < T.

    The ideal mixture is ``q*(a|s) = pi_ref(a|s) exp(U(sa)/beta) / Z_U(s)`` with
    ``U = sum_i w_i V_i``; ``H_w = U - beta log Z_U`` is Hölder's gap of one step
    (>= 0; 0 at every s when the tree is aligned, P8).
    """
    V_i = tr.per_reward_soft_values(tree, beta)  # by depth (m, V^t)
    U = [np.tensordot(w, v, axes=(1, 0)) for v in V_i]  # by depth (K, V^t)
    K, V = w.shape[0], tree.vocab
    return [U[t] - beta * tr.logsumexp_siblings(tree.ref_logp[t][None] + U[t + 1].reshape(K, V ** t, V) / beta)
            for t in range(tree.horizon)]


def expert_distances(tree: Tree, experts: list, beta: float) -> list:
    """``d_i(s)`` = Hilbert distance of expert i's conditional from pi*_{e_i}'s, by depth ``[m, V^t]``."""
    star = tr.per_reward_token_policies(tree, beta)  # by depth (m, V^t, V)
    return [hilbert_distance(experts[t], star[t]) for t in range(tree.horizon)]


def under(probs: list, per_state: list) -> np.ndarray:
    """``sum_t E_{s_t ~ probs} f(s_t)``: ``probs`` by depth ``[K, V^t]``, ``f`` by depth ``[J, V^t]`` -> ``[K, J]``."""
    return sum(probs[t] @ per_state[t].T for t in range(len(per_state)))


def trained_mixing_gap(tree: Tree, experts: list, w, beta: float) -> dict:
    """P11: the trained mixture's regret, its exact decomposition, the bounds and the experts' errors.

    Args:
        experts: T arrays ``[m, V^t, V]``, log-probabilities of the m trained experts.
        w: ``[K, m]`` weightings (or ``[m]``).
    Returns ``[K]`` arrays ``regret``, ``ideal_regret``, ``kl_to_ideal`` (KL_seq(q || q*)),
    ``kl_to_ideal_from_errors`` (the same by (g)'s identity, from q and the errors alone),
    ``visitation_term``, ``bound_stepwise`` (d), ``bound_ideal`` (e), ``bound_jeffreys`` (f),
    ``bound_convex`` (g), ``bound`` (their minimum); ``divergence_under_mixture`` ``[K, m]``
    (sum_t E_{s_t~q} D_i, (g)) and ``divergence_own`` ``[m]`` (the same with expert i's own tokens
    and prefixes: KL_seq(pi_i || pi*_i));
    ``error_seen_by_mixture`` ``[K, m]`` (sum_t E_{s_t~q} (E_{q(.|s)} - E_{q*(.|s)}) e_i);
    ``error_under_mixture`` ``[K, m]`` (sum_t E_{s_t~q} d_i), ``error_own`` ``[m]``
    (sum_t E_{s_t~pi_i} d_i), ``kl_error_under_mixture`` ``[K, m]`` and ``kl_error_own`` ``[m]``
    (the same with KL(pi*_i(.|s) || pi_i(.|s)) for d_i), ``own_regret`` ``[m]``
    (beta KL_seq(pi_i || pi*_i): expert i's regret at its own vertex).
    """
    beta = check_beta(beta)
    w = check_weights(w, tree.m, "w")
    V, T, K = tree.vocab, tree.horizon, w.shape[0]
    experts = check_experts(experts, [(tree.m, V ** t, V) for t in range(T)])
    star = tr.per_reward_token_policies(tree, beta)  # by depth (m, V^t, V)
    q = tr.zero_shot_token_policy(tree, w, beta, experts=experts)  # trained mixture, (K, V^t, V)
    q_star = tr.zero_shot_token_policy(tree, w, beta, experts=star)  # ideal mixture
    p_star = tr.optimal_token_policy(tree, w, beta)
    probs_q, probs_qs = tr.prefix_probs(tree, q), tr.prefix_probs(tree, q_star)
    out = {"regret": beta * chain_rule_kl(probs_q, q, p_star),  # P1 / P7 for any policy
           "ideal_regret": beta * chain_rule_kl(probs_qs, q_star, p_star),
           "kl_to_ideal": chain_rule_kl(probs_q, q, q_star)}
    H = one_step_holder_gap(tree, w, beta)  # by depth (K, V^t)
    out["visitation_term"] = sum(((probs_q[t] - probs_qs[t]) * H[t]).sum(axis=1) for t in range(T))

    d = expert_distances(tree, experts, beta)  # by depth (m, V^t)
    d_w = [w @ d[t] for t in range(T)]  # (K, V^t)
    G = tr.holder_gap(tree, w, beta)  # by depth (K, V^t)
    osc_G = [np.ptp(G[t + 1].reshape(K, V ** t, V), axis=-1) for t in range(T)]  # osc_a G_w(s a), (K, V^t)
    out["bound_stepwise"] = sum((probs_q[t] * kl_rate(osc_G[t] + beta * d_w[t], beta)).sum(axis=1)
                                for t in range(T))
    E = sum((probs_q[t] * kl_rate(beta * d_w[t], beta)).sum(axis=1) for t in range(T)) / beta  # >= KL_seq(q || q*)
    osc_H = sum(np.ptp(H[t], axis=1) for t in range(T))  # (K,)
    out["bound_ideal"] = out["ideal_regret"] + beta * E + np.sqrt(E / 2) * osc_H
    # (f): KL(q || q*) <= Jeffreys = sum_i w_i (E_q - E_q*) e_i at each state; c_i is expert i's
    # error as the mixture sees it, (K, m, V^t) by depth
    err = [experts[t] - star[t] for t in range(T)]  # e_i by depth, (m, V^t, V)
    c = [np.einsum("kav,mav->kma", np.exp(q[t]) - np.exp(q_star[t]), err[t]) for t in range(T)]
    out["error_seen_by_mixture"] = sum(np.einsum("ks,kms->km", probs_q[t], c[t]) for t in range(T))  # (K, m)
    E_J = np.maximum(np.einsum("km,km->k", w, out["error_seen_by_mixture"]), 0.0)  # >= KL_seq(q || q*) >= 0
    out["bound_jeffreys"] = out["ideal_regret"] + beta * E_J + np.sqrt(E_J / 2) * osc_H
    # (g): KL(q || q*) = Lambda_q(-f) + E_q f exactly (f = sum_i w_i e_i) and <= sum_i w_i D_i by the
    # convexity of the log-moment generating function Lambda_q(g) = log E_q e^g
    f = [np.einsum("km,msv->ksv", w, err[t]) for t in range(T)]  # (K, V^t, V)
    kl_state = [centred_log_mgf(q[t], f[t]) for t in range(T)]  # (K, V^t)
    out["kl_to_ideal_from_errors"] = sum((probs_q[t] * kl_state[t]).sum(axis=1) for t in range(T))
    D = [mixture_divergence(q[t], err[t]) for t in range(T)]  # (K, m, V^t)
    out["divergence_under_mixture"] = sum(np.einsum("ks,kms->km", probs_q[t], D[t]) for t in range(T))  # (K, m)
    E_D = np.einsum("km,km->k", w, out["divergence_under_mixture"])  # >= KL_seq(q || q*)
    out["bound_convex"] = out["ideal_regret"] + beta * E_D + np.sqrt(E_D / 2) * osc_H
    out["bound"] = np.minimum.reduce([out["bound_stepwise"], out["bound_ideal"], out["bound_jeffreys"],
                                      out["bound_convex"]])

    kl_err = [kl_nonneg(star[t], experts[t]) for t in range(T)]  # KL(pi*_i(.|s) || pi_i(.|s)), (m, V^t)
    own = [tr.prefix_probs(tree, [lp[i:i + 1] for lp in experts]) for i in range(tree.m)]  # expert i's visitation
    out["error_under_mixture"] = under(probs_q, d)  # (K, m)
    out["kl_error_under_mixture"] = under(probs_q, kl_err)
    out["error_own"] = np.array([under(own[i], [x[i:i + 1] for x in d])[0, 0] for i in range(tree.m)])
    out["kl_error_own"] = np.array([under(own[i], [x[i:i + 1] for x in kl_err])[0, 0] for i in range(tree.m)])
    out["own_regret"] = np.array([beta * chain_rule_kl(own[i], [lp[i:i + 1] for lp in experts],
                                                       [lp[i:i + 1] for lp in star])[0] for i in range(tree.m)])
    out["divergence_own"] = out["own_regret"] / beta  # D_i with expert i's own tokens and prefixes: KL_seq(pi_i||pi*_i)
    return out


def mixture_divergence(q_logp: np.ndarray, err: np.ndarray) -> np.ndarray:
    """P11 (g): ``D_i(s) = log E_{q(.|s)} exp(-e_i(.|s)) + E_{q(.|s)} e_i(.|s) >= 0``, expert i's error seen by ``q``.

    Args: ``q_logp`` ``[K, S, V]`` the mixture's log-probs at S states; ``err`` ``[m, S, V]`` the
    experts' errors ``e_i = log pi_i - log pi*_i``. Returns ``[K, m, S]``. It is 0 only where
    ``pi_i(.|s) = pi*_i(.|s)``; with ``q = pi_i`` it is ``KL(pi_i || pi*_i)``. Jensen makes it
    ``>= 0``; rounding below 0 is set to 0.
    """
    return np.maximum(centred_log_mgf(q_logp[:, None], err[None]), 0.0)  # (K, m, S)


def centred_log_mgf(q_logp: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``log E_q e^{-g} + E_q g`` over the last axis (token), ``q_logp`` and ``g`` broadcast against each other.

    P11 (g): with ``g = f = sum_i w_i e_i`` it is ``KL(q || q*)`` at the state; with ``g = e_i``, ``D_i``.
    """
    return logsumexp(q_logp - g, axis=-1) + (np.exp(q_logp) * g).sum(axis=-1)


def bandit_mixing_gap(bandit: Bandit, log_experts, w, beta: float) -> dict:
    """P12: logit mixing (= Rewarded Soups of log-linear experts) of trained bandit experts.

    Args: ``log_experts`` ``[m, X, Y]``; ``w`` ``[K, m]``. Returns ``[K]`` arrays ``regret``
    (``beta E_rho KL(q || pi*_w)``), ``bound_rate`` (``E_rho rate(beta d_w(x))``, P11 (c)),
    ``bound_convex`` (``beta E_rho sum_i w_i D_i(x)``, P11 (g)) and ``bound`` (their minimum);
    ``d`` ``[m, X]`` (each expert's Hilbert distance from pi*_{e_i}, context by context) and
    ``D`` ``[K, m, X]`` (P11 (g)'s divergence, measured with the mixture's responses).
    """
    beta = check_beta(beta)
    w = check_weights(w, bandit.m, "w")
    X, Y = bandit.ref_logp.shape
    log_experts = check_experts([log_experts], [(bandit.m, X, Y)], "log_experts")[0]
    q = logit_mix(log_experts, w)  # (K, X, Y)
    star = gibbs.per_reward_log_policies(bandit, beta)  # (m, X, Y)
    d = hilbert_distance(log_experts, star)  # (m, X)
    D = mixture_divergence(q, log_experts - star)  # (K, m, X)
    out = {"regret": beta * gibbs.kl_to(bandit, q, gibbs.gibbs_log_policy(bandit, w, beta)),
           "bound_rate": kl_rate(beta * (w @ d), beta) @ bandit.context_probs,
           "bound_convex": beta * np.einsum("km,kmx,x->k", w, D, bandit.context_probs), "d": d, "D": D}
    out["bound"] = np.minimum(out["bound_rate"], out["bound_convex"])
    return out


def feature_distance_bound(phi, delta) -> np.ndarray:
    """P12, log-linear experts ``theta_i = theta*_i + delta_i``: ``d_i(x) <= |delta_i|_2 max_{y,y'} |phi(x,y) - phi(x,y')|_2``.

    Args: ``phi`` ``[X, Y, d]``, ``delta`` ``[m, d]``. Returns ``[m, X]``.
    """
    phi, delta = finite_array(phi, "phi", ndim=3), finite_array(delta, "delta", ndim=2)
    diam = np.linalg.norm(phi[:, :, None] - phi[:, None], axis=-1).max(axis=(1, 2))  # (X,)
    return np.linalg.norm(delta, axis=1)[:, None] * diam[None]
