"""Multi-task training of a conditioned policy: maximise ``E_{w~D}[J_w(pi_theta(w))]`` (section 4).

The expectation over ``D`` is the average over a fixed training sample of
weightings ``w_train`` ``[K, m]`` (drawn by the caller from ``theory.weights``).
Gradients are exact (autograd through ``toy.objective``) or sampled
(``toy.reinforce``). Adam with a fixed number of steps.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from theory.instances import Tree
from toy.objective import TreeTensors, multitask_objective
from toy.reinforce import reinforce_surrogate


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 300  # Adam steps
    lr: float = 0.05  # Adam learning rate
    estimator: str = "exact"  # "exact" (autograd on the enumerated tree) or "reinforce" (sampled)
    samples: int = 16  # reinforce only: sequences drawn per weighting and step
    seed: int = 0  # reinforce only: seed of the sampling generator
    log_every: int = 10  # record the exact training objective every this many steps

    def __post_init__(self):
        if self.estimator not in ("exact", "reinforce"):
            raise ValueError(f"estimator: must be 'exact' or 'reinforce', got {self.estimator!r}")
        if self.steps < 0 or self.lr <= 0 or self.log_every < 1:
            raise ValueError(f"steps/lr/log_every: need steps >= 0, lr > 0, log_every >= 1, got "
                             f"{self.steps}, {self.lr}, {self.log_every}")


def train(policy: torch.nn.Module, tree: Tree, beta: float, w_train: np.ndarray,
          config: TrainConfig) -> dict:
    """Train ``policy`` in place; returns the exact training objective along the way.

    Returns ``{"steps": [...], "objective": [...]}`` (exact ``mean_k J_{w_k}`` at
    step 0, every ``log_every`` steps, and at the end), plus ``"initial"`` and ``"final"``.
    """
    tt = TreeTensors(tree)
    w = torch.as_tensor(w_train, dtype=torch.float64)
    opt = torch.optim.Adam(policy.parameters(), lr=config.lr)
    g = torch.Generator().manual_seed(config.seed)
    steps, values = [], []
    for step in range(config.steps):
        if config.estimator == "exact":
            J = multitask_objective(tt, policy, w, beta)
            loss = -J
        else:
            if step % config.log_every == 0:
                with torch.no_grad():
                    J = multitask_objective(tt, policy, w, beta)
            loss = -reinforce_surrogate(tt, policy, w, beta, config.samples, g)[0]
        if step % config.log_every == 0:
            steps.append(step)
            values.append(J.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        steps.append(config.steps)
        values.append(multitask_objective(tt, policy, w, beta).item())
    return {"steps": steps, "objective": values, "initial": values[0], "final": values[-1]}
