"""Sampled policy-gradient (REINFORCE) estimator of the multi-task objective's gradient.

    grad E_{y~pi}[ f(y) ],   f(y) = w.r(y) - beta log(pi(y)/pi_ref(y))
      = E_{y~pi}[ (f(y) - b) grad log pi(y) ]          (Williams 1992)

The term ``-beta E[grad log pi] = 0`` drops out, and ``b`` is the leave-one-out
mean of ``f`` over the other samples drawn for the same ``w``, which keeps the
estimate unbiased (Kool et al. 2019, "Buy 4 REINFORCE samples").
"""
from __future__ import annotations

import torch

from toy.objective import TreeTensors, leaf_log_probs


def reinforce_surrogate(tt: TreeTensors, policy, w: torch.Tensor, beta: float, samples: int,
                        generator: torch.Generator) -> tuple:
    """A scalar whose gradient is an unbiased estimate of ``grad mean_k J_{w_k}(pi_theta(w_k))``.

    Args:
        w: ``[K, m]`` weightings; ``samples``: B >= 2 sequences drawn per weighting.
    Returns:
        ``(surrogate, f_mean)``: the surrogate to maximise and the sample mean of
        ``f`` (a noisy estimate of the objective, for logging).
    """
    if samples < 2:
        raise ValueError(f"samples: the leave-one-out baseline needs >= 2 samples per weighting, got {samples}")
    log_p = leaf_log_probs(policy(w))  # (K, V^T)
    # Sequences are drawn from the policy's own distribution; the leaf table is only
    # a fast sampler on enumerable trees, the gradient uses the samples alone.
    y = torch.multinomial(log_p.detach().exp(), samples, replacement=True, generator=generator)  # (K, B)
    log_p_y = log_p.gather(1, y)  # (K, B)
    wr = (w @ tt.rewards.T).gather(1, y)  # (K, V^T) -> (K, B)
    f = wr - beta * (log_p_y.detach() - tt.log_ref[0][y])  # (K, B)
    baseline = (f.sum(dim=1, keepdim=True) - f) / (samples - 1)  # leave-one-out
    surrogate = ((f - baseline) * log_p_y).mean()
    return surrogate, f.mean().item()
