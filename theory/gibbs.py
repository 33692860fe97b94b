"""The KL-regularised optimum in a contextual bandit (THEORY.md P1).

    pi*_w(y|x) = pi_ref(y|x) exp(w.r(x,y)/beta) / Z_w(x),   J_w(pi*_w) = beta E_rho log Z_w(x)
"""
from __future__ import annotations

import numpy as np
from scipy.special import log_softmax, logsumexp

from theory.divergence import kl_nonneg
from theory.instances import Bandit


def _tilted_logits(bandit: Bandit, w: np.ndarray, beta: float) -> np.ndarray:
    # (K, X, Y): log pi_ref + w.r / beta
    return bandit.ref_logp[None] + np.einsum("xym,km->kxy", bandit.rewards, w) / beta


def gibbs_log_policy(bandit: Bandit, w: np.ndarray, beta: float) -> np.ndarray:
    """P1: log pi*_w(y|x) for a stack of weightings ``w`` ``[K, m]``; returns ``[K, X, Y]``."""
    return log_softmax(_tilted_logits(bandit, w, beta), axis=-1)


def log_partition(bandit: Bandit, w: np.ndarray, beta: float) -> np.ndarray:
    """log Z_w(x) ``[K, X]``."""
    return logsumexp(_tilted_logits(bandit, w, beta), axis=-1)


def optimal_value(bandit: Bandit, w: np.ndarray, beta: float) -> np.ndarray:
    """P1: J_w(pi*_w) = beta E_rho log Z_w(x), ``[K]``."""
    return beta * log_partition(bandit, w, beta) @ bandit.context_probs


def per_reward_log_policies(bandit: Bandit, beta: float) -> np.ndarray:
    """The per-reward optima pi*_{e_i}, ``[m, X, Y]`` (the experts zero-shot methods mix)."""
    return gibbs_log_policy(bandit, np.eye(bandit.m), beta)


def bandit_stats(bandit: Bandit, log_pi: np.ndarray, w: np.ndarray, beta: float) -> dict:
    """Exact R(pi) ``[K, m]``, K(pi) ``[K]`` and J_w(pi) ``[K]`` of policies ``log_pi`` ``[K, X, Y]``.

    0 log 0 is taken as 0, so policies with exact zeros (beta -> 0) stay finite.
    """
    pi = np.exp(log_pi)
    rho = bandit.context_probs
    R = np.einsum("x,kxy,xym->km", rho, pi, bandit.rewards)
    kl = kl_nonneg(log_pi, bandit.ref_logp[None]) @ rho  # a sum of terms >= 0 (theory.divergence)
    return {"rewards": R, "kl": kl, "objective": np.einsum("km,km->k", w, R) - beta * kl}


def kl_to(bandit: Bandit, log_p: np.ndarray, log_q: np.ndarray) -> np.ndarray:
    """E_rho KL(p(.|x) || q(.|x)) for stacks ``[K, X, Y]``; returns ``[K]``."""
    return kl_nonneg(log_p, log_q) @ bandit.context_probs
