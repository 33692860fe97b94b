"""Logit mixing: the one implementation of zero-shot policy mixing (THEORY.md section 2).

    pi^mix_w  ∝  prod_i pi_i^{w_i}          (logits combined linearly)

Tabular parameter averaging (Rewarded Soups on a softmax table) is this same
operation up to a per-context constant, so it has no separate implementation.
"""
from __future__ import annotations

import numpy as np
from scipy.special import log_softmax


def logit_mix(log_pis: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Normalised log-probabilities of ``pi^mix_w ∝ prod_i pi_i^{w_i}``.

    Args:
        log_pis: ``[m, ..., Y]`` log-probabilities (or logits) of the m policies.
        w: ``[K, m]`` weightings (any real coefficients; callers validate).
    Returns:
        ``[K, ..., Y]`` log-probabilities of the mixtures.
    """
    mixed = np.tensordot(w, log_pis, axes=(1, 0))  # (K, ..., Y)
    return log_softmax(mixed, axis=-1)


def kl_weight_mix(ref_logp: np.ndarray, log_pi: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """P4, decoding-time realignment: mix ``pi_ref`` and ``pi`` with weights ``(1 - lam, lam)``.

    When ``pi = pi*_beta`` (one reward) the result is exactly ``pi*_{beta/lam}``.
    Args: ``ref_logp``, ``log_pi`` of the same shape ``[..., Y]``; ``lam`` ``[K]``.
    Returns ``[K, ..., Y]``.
    """
    lam = np.asarray(lam, dtype=np.float64)
    w = np.stack([1 - lam, lam], axis=1)  # (K, 2)
    return logit_mix(np.stack([ref_logp, log_pi]), w)


def mix_parameters(thetas: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Parameter mixing ``theta(w) = sum_i w_i theta_i`` (CLP, Rewarded Soups) for numpy parameters.

    Args: ``thetas`` ``[m, ...]``, ``w`` ``[K, m]``. Returns ``[K, ...]``.
    (The PyTorch version for ``nn.Module`` parameters lives in ``clp_min.conditioning``.)
    """
    return np.tensordot(w, thetas, axes=(1, 0))
