"""Token trees: soft values, token-level optima, per-token mixing, Hölder gap (THEORY.md section 3).

Every quantity is a list indexed by depth t = 0..T (or 0..T-1 for token
policies) of arrays batched over weightings: values ``[K, V^t]``, token
policies ``[K, V^t, V]``. The prefix with index s at depth t has children
``s * V + a``, so ``[K, V^(t+1)] -> [K, V^t, V]`` is a plain reshape and no
Python loop ever runs over prefixes.
"""
from __future__ import annotations

import numpy as np
from scipy.special import log_softmax

from theory.divergence import kl_nonneg
from theory.instances import Tree
from theory.mixing import logit_mix


def _children(values: np.ndarray, V: int) -> np.ndarray:
    K, n = values.shape
    return values.reshape(K, n // V, V)  # (K, V^t, V)


def logsumexp_rows(x: np.ndarray) -> np.ndarray:
    """``log sum_j exp(x[:, j])`` for ``x [K, J, n]`` -> ``[K, n]``, over contiguous rows ``x[:, j]``.

    The max-shifted form; a column that is all ``-inf`` gives ``-inf``.
    """
    mx = np.max(x, axis=1)  # (K, n)
    mx[~np.isfinite(mx)] = 0.0
    s = np.zeros_like(mx)
    tmp = np.empty_like(mx)
    for j in range(x.shape[1]):
        np.subtract(x[:, j], mx, out=tmp)
        np.exp(tmp, out=tmp)
        s += tmp
    with np.errstate(divide="ignore"):
        np.log(s, out=s)
    s += mx
    return s


def logsumexp_siblings(x: np.ndarray) -> np.ndarray:
    """``log sum_a exp(x[:, s, a])`` for ``x [K, n, V]`` -> ``[K, n]`` (one level of soft values)."""
    return logsumexp_rows(np.ascontiguousarray(x.transpose(0, 2, 1)))  # (K, V, n)


def soft_values(tree: Tree, leaf_values: np.ndarray, beta: float) -> list:
    """Soft values ``V(s) = beta log sum_a pi_ref(a|s) exp(V(sa)/beta)`` by depth.

    Args:
        leaf_values: ``[K, V^T]`` values at the leaves (``w.r`` for V_w).
    Returns:
        ``T + 1`` arrays ``[K, V^t]``; entry T is ``leaf_values``.
    """
    values = [None] * tree.horizon + [leaf_values]
    for t in reversed(range(tree.horizon)):
        child = _children(values[t + 1], tree.vocab)  # (K, V^t, V)
        values[t] = beta * logsumexp_siblings(tree.ref_logp[t][None] + child / beta)
    return values


def weighted_leaf_values(tree: Tree, w: np.ndarray) -> np.ndarray:
    """``w . r`` at every leaf, ``[K, V^T]``."""
    return w @ tree.rewards.T


def soft_values_w(tree: Tree, w: np.ndarray, beta: float) -> list:
    """V_w by depth, ``[K, V^t]`` (THEORY.md section 3)."""
    return soft_values(tree, weighted_leaf_values(tree, w), beta)


def per_reward_soft_values(tree: Tree, beta: float) -> list:
    """V_i = V_{e_i} by depth, ``[m, V^t]``."""
    return soft_values_w(tree, np.eye(tree.m), beta)


def policy_from_values(tree: Tree, values: list, beta: float) -> list:
    """P5: log pi*(a|s) = log pi_ref(a|s) + (V(sa) - V(s))/beta, by depth ``[K, V^t, V]``.

    Written as a log-softmax of ``log pi_ref + V(sa)/beta``, which equals the
    formula because V(s)/beta is that row's log-sum-exp.
    """
    return [log_softmax(tree.ref_logp[t][None] + _children(values[t + 1], tree.vocab) / beta, axis=-1)
            for t in range(tree.horizon)]


def optimal_token_policy(tree: Tree, w: np.ndarray, beta: float) -> list:
    """P5: the token-level optimum pi*_w by depth, ``[K, V^t, V]``."""
    return policy_from_values(tree, soft_values_w(tree, w, beta), beta)


def per_reward_token_policies(tree: Tree, beta: float) -> list:
    """pi*_{e_i} by depth, ``[m, V^t, V]``: the experts of zero-shot mixing."""
    return optimal_token_policy(tree, np.eye(tree.m), beta)


def zero_shot_token_policy(tree: Tree, w: np.ndarray, beta: float, experts: list | None = None) -> list:
    """Per-token zero-shot mixing ``pi^mix_w(a|s) ∝ prod_i pi*_{e_i}(a|s)^{w_i}``, by depth ``[K, V^t, V]``.

    Equal to ``∝ pi_ref(a|s) exp(sum_i w_i V_i(sa)/beta)`` (section 3).
    ``experts`` (from ``per_reward_token_policies``) may be passed to reuse them.
    """
    experts = per_reward_token_policies(tree, beta) if experts is None else experts
    return [logit_mix(experts[t], w) for t in range(tree.horizon)]


def holder_gap(tree: Tree, w: np.ndarray, beta: float) -> list:
    """Hölder gap ``G_w(s) = sum_i w_i V_i(s) - V_w(s) >= 0`` by depth, ``[K, V^t]``."""
    V_i = per_reward_soft_values(tree, beta)
    V_w = soft_values_w(tree, w, beta)
    return [np.tensordot(w, V_i[t], axes=(1, 0)) - V_w[t] for t in range(tree.horizon + 1)]


def pairwise_oscillation(tree: Tree) -> tuple:
    """``osc_s(r_i - r_j)`` (max minus min over the leaves below s) for all pairs i < j.

    Returns ``(pairs, osc)`` with ``pairs`` a list of (i, j) and ``osc`` a list by
    depth t = 0..T of arrays ``[P, V^t]`` (P = number of pairs; zero at the leaves).
    """
    m, V, T = tree.m, tree.vocab, tree.horizon
    pairs = [(i, j) for i in range(m) for j in range(i + 1, m)]
    first, second = [i for i, _ in pairs], [j for _, j in pairs]
    diff = (tree.rewards[:, first] - tree.rewards[:, second]).T  # (P, V^T); P = 0 when m = 1
    hi, lo = diff, diff
    osc = [None] * T + [np.zeros_like(diff)]
    for t in reversed(range(T)):
        hi = hi.reshape(len(pairs), V ** t, V).max(axis=-1)
        lo = lo.reshape(len(pairs), V ** t, V).min(axis=-1)
        osc[t] = hi - lo
    return pairs, osc


def misalignment(tree: Tree) -> list:
    """``eps(s) = max_{i<j} osc_s(r_i - r_j) / 2`` by depth, ``[V^t]`` (section 3)."""
    pairs, osc = pairwise_oscillation(tree)
    if not pairs:  # one reward: always aligned
        return [np.zeros(tree.vocab ** t) for t in range(tree.horizon + 1)]
    return [o.max(axis=0) / 2 for o in osc]


def reference_token_policy(tree: Tree) -> list:
    """pi_ref as a token policy stack of one, by depth ``[1, V^t, V]``."""
    return [lp[None] for lp in tree.ref_logp]


def leaf_log_probs(tree: Tree, log_pi: list) -> np.ndarray:
    """Sequence log-probabilities of a token policy, ``[K, V^T]`` (sum of token log-probs)."""
    K = log_pi[0].shape[0]
    log_p = np.zeros((K, 1))
    for t in range(tree.horizon):
        log_p = (log_p[:, :, None] + log_pi[t]).reshape(K, -1)  # (K, V^(t+1))
    return log_p


def prefix_probs(tree: Tree, log_pi: list) -> list:
    """State distribution of a token policy by depth: P(s_t = s), ``[K, V^t]`` for t = 0..T."""
    K = log_pi[0].shape[0]
    probs = [np.ones((K, 1))]
    for t in range(tree.horizon):
        probs.append((probs[t][:, :, None] * np.exp(log_pi[t])).reshape(K, -1))
    return probs


def _xlogy_ratio(p: np.ndarray, log_p: np.ndarray, log_q: np.ndarray) -> np.ndarray:
    return np.where(p > 0, p * (log_p - log_q), 0.0)  # 0 log 0 = 0


def sequence_stats(tree: Tree, log_pi: list, w: np.ndarray, beta: float) -> dict:
    """Exact R(pi) ``[K, m]``, sequence-level K(pi) ``[K]`` and J_w(pi) ``[K]`` of a token policy.

    ``log_pi`` is a list by depth of ``[K, V^t, V]``; ``w`` is ``[K, m]``.
    """
    log_p = leaf_log_probs(tree, log_pi)  # (K, V^T)
    log_ref = leaf_log_probs(tree, reference_token_policy(tree))  # (1, V^T)
    p = np.exp(log_p)
    R = p @ tree.rewards  # (K, m)
    kl = kl_nonneg(log_p, log_ref)  # a sum of terms >= 0: beta * kl carries no sign noise
    return {"rewards": R, "kl": kl, "objective": np.einsum("km,km->k", w, R) - beta * kl}


def stepwise_kl(tree: Tree, log_p: list, log_q: list) -> list:
    """Per-step terms of the chain rule: ``E_{s_t ~ p} KL(p(.|s_t) || q(.|s_t))``, ``[K]`` per depth.

    Their sum over t is the sequence-level KL(p || q) (P7's right-hand side).
    """
    probs = prefix_probs(tree, log_p)
    terms = []
    for t in range(tree.horizon):
        step = _xlogy_ratio(np.exp(log_p[t]), log_p[t], log_q[t]).sum(axis=-1)  # (K, V^t)
        terms.append((probs[t] * step).sum(axis=1))
    return terms
