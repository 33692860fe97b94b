"""Exact multi-task objective ``E_{w~D}[J_w(pi_theta(w))]`` on an enumerable tree, in PyTorch.

    J_w(pi) = w . R(pi) - beta KL_seq(pi || pi_ref)          (THEORY.md section 0)

This mirrors ``theory.tree.sequence_stats`` (numpy) in torch so that autograd
gives exact gradients; tests check the two routes agree. The expectation over
``D`` is an average over a given stack of weightings ``w`` ``[K, m]`` (a sample
from ``D`` drawn once by the caller), so the training objective is deterministic.
"""
from __future__ import annotations

import numpy as np
import torch

from theory import tree as tr
from theory.instances import Tree


class TreeTensors:
    """The constants of a tree as float64 tensors: leaf rewards and reference sequence log-probs."""

    def __init__(self, tree: Tree):
        self.tree = tree
        self.rewards = torch.as_tensor(tree.rewards, dtype=torch.float64)  # (V^T, m)
        log_ref = tr.leaf_log_probs(tree, tr.reference_token_policy(tree))  # (1, V^T)
        self.log_ref = torch.as_tensor(log_ref, dtype=torch.float64)
        self.ref_logp = [torch.as_tensor(lp, dtype=torch.float64) for lp in tree.ref_logp]  # [V^t, V]


def leaf_log_probs(log_pi: list) -> torch.Tensor:
    """Sequence log-probabilities ``[K, V^T]`` of a token policy given by depth as ``[K, V^t, V]``."""
    K = log_pi[0].shape[0]
    log_p = torch.zeros(K, 1, dtype=log_pi[0].dtype)
    for lp in log_pi:
        log_p = (log_p[:, :, None] + lp).reshape(K, -1)  # (K, V^t, V) -> (K, V^(t+1))
    return log_p


def sequence_objective(tt: TreeTensors, log_pi: list, w: torch.Tensor, beta: float) -> dict:
    """Exact ``R`` ``[K, m]``, ``KL`` ``[K]`` and ``J_w`` ``[K]`` of token policies ``log_pi`` (differentiable)."""
    log_p = leaf_log_probs(log_pi)  # (K, V^T)
    p = log_p.exp()
    R = p @ tt.rewards  # (K, m)
    kl = (p * (log_p - tt.log_ref)).sum(dim=1)  # log_p is finite (log_softmax), so no 0 log 0 case
    return {"rewards": R, "kl": kl, "objective": (w * R).sum(dim=1) - beta * kl}


def multitask_objective(tt: TreeTensors, policy, w: torch.Tensor, beta: float) -> torch.Tensor:
    """Section 4: the average of ``J_w(pi_theta(w))`` over the weightings ``w`` ``[K, m]`` (a scalar)."""
    return sequence_objective(tt, policy(w), w, beta)["objective"].mean()


def policy_log_probs(policy, w: np.ndarray) -> list:
    """Evaluate a conditioned policy at weightings ``w`` ``[K, m]``: numpy log-probs by depth ``[K, V^t, V]``."""
    with torch.no_grad():
        return [lp.numpy() for lp in policy(torch.as_tensor(w, dtype=torch.float64))]
