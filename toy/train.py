"""Multi-task training of a conditioned policy: maximise ``E_{w~D}[J_w(pi_theta(w))]`` (section 4).

The expectation over ``D`` is the average over a fixed training sample of
weightings ``w_train`` ``[K, m]`` (drawn by the caller from ``theory.weights``).
Gradients are exact (autograd through ``toy.objective``) or sampled
(``toy.reinforce``). Adam with a fixed number of steps.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from theory.instances import Tree
from toy.objective import TreeTensors, multitask_objective, prefix_averaged_objective
from toy.reinforce import reinforce_surrogate


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 300  # Adam steps
    lr: float = 0.05  # Adam learning rate
    estimator: str = "exact"  # "exact" (autograd on the enumerated tree) or "reinforce" (sampled)
    samples: int = 16  # reinforce only: sequences drawn per weighting and step
    seed: int = 0  # reinforce only: seed of the sampling generator
    log_every: int = 10  # record the exact training objective every this many steps
    optimizer: str = "adam"  # "adam", or "sgd" (plain gradient steps: a tabular prefix then moves in
    # proportion to how often the policy reaches it; Adam rescales each entry to a step ~lr)

    def __post_init__(self):
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer: must be 'adam' or 'sgd', got {self.optimizer!r}")
        if self.estimator not in ("exact", "reinforce"):
            raise ValueError(f"estimator: must be 'exact' or 'reinforce', got {self.estimator!r}")
        if self.steps < 0 or self.lr <= 0 or self.log_every < 1:
            raise ValueError(f"steps/lr/log_every: need steps >= 0, lr > 0, log_every >= 1, got "
                             f"{self.steps}, {self.lr}, {self.log_every}")


def train(policy: torch.nn.Module, tree: Tree, beta: float, w_train: np.ndarray,
          config: TrainConfig, mu: list | None = None) -> dict:
    """Train ``policy`` in place; returns the exact training objective along the way.

    ``mu`` (exact gradients only): prefix weights by depth ``[V^t]``; the objective is
    then ``toy.objective.prefix_averaged_objective`` (the P11 remedy) instead of E_D[J_w].

    With exact gradients the policy is left at the best iterate on the training
    objective (evaluated at every step anyway). Why: at a stationary point, such as
    the zero-shot start on an aligned tree, the gradient is rounding noise, which
    Adam's scale-invariant update turns into steps of size ~lr; that random walk
    lowers the objective by up to ~1e-5 (hypothesis found it). Sampled training
    keeps its last iterate: choosing by the exact objective would use information
    the samples do not give.

    Returns ``{"steps": [...], "objective": [...]}`` (exact ``mean_k J_{w_k}`` at
    step 0 and every ``log_every`` steps, then at the end), plus ``"initial"`` and
    ``"final"`` (the objective of the policy as returned) and ``"last"`` (of Adam's last iterate).
    """
    if mu is not None and config.estimator != "exact":
        raise ValueError("mu: the prefix-averaged objective is trained with exact gradients only")
    tt = TreeTensors(tree)
    w = torch.as_tensor(w_train, dtype=torch.float64)
    if mu is None:
        objective = multitask_objective
    else:
        mu_t = [torch.as_tensor(m, dtype=torch.float64) for m in mu]

        def objective(tt, policy, w, beta):
            return prefix_averaged_objective(tt, policy, w, beta, mu_t)
    opt = (torch.optim.Adam if config.optimizer == "adam" else torch.optim.SGD)(policy.parameters(), lr=config.lr)
    g = torch.Generator().manual_seed(config.seed)
    steps, values = [], []
    best_J, best_state = -np.inf, None
    for step in range(config.steps):
        if config.estimator == "exact":
            J = objective(tt, policy, w, beta)
            if J.item() > best_J:
                best_J, best_state = J.item(), copy.deepcopy(policy.state_dict())
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
        J_last = J_final = objective(tt, policy, w, beta).item()
    if config.estimator == "exact" and best_state is not None and best_J > J_last:
        policy.load_state_dict(best_state)
        J_final = best_J
    steps.append(config.steps)
    values.append(J_final)
    return {"steps": steps, "objective": values, "initial": values[0], "final": J_final, "last": J_last}
