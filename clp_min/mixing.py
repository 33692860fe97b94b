"""Parameter mixing, the one place: ``theta(w) = sum_i w_i theta_i`` (THEORY.md section 4, P3).

- ``mix_parameters``: one tensor's copies ``[m, ...]`` mixed by ``w`` ``[m]`` or ``[B, m]``.
- ``MixParameters``: the same sums for every scoped tensor as one autograd node (fast path).
- ``mix_lora_delta``: peft LoRA factors whose product is the mixed weight change
  ``sum_i w_i B_i A_i`` (linear in ``w``, unlike mixing each factor).
- ``check_w``: a weighting or per-example weightings on the simplex, refused otherwise.
"""
from __future__ import annotations

import torch

from theory.checks import check_weights


def mix_parameters(theta: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """theta(w) = sum_i w_i theta_i (CLP, Rewarded Soups): the PyTorch twin of theory.mixing.mix_parameters.

    Args: ``theta`` ``[m, ...]`` the copies; ``w`` ``[m]`` or ``[B, m]``.
    Returns ``[...]`` or ``[B, ...]``.
    """
    return torch.tensordot(w, theta, dims=([-1], [0]))  # (B, ...) or (...)


class MixParameters(torch.autograd.Function):
    """``theta_k(w) = sum_i w_i theta_k[i]`` for every scoped tensor k at once, ``w [m]``.

    The same sums as ``mix_parameters``, as one autograd node over all tensors
    (multi-tensor ``_foreach`` ops): mixing a few dozen tensors one ``tensordot`` each
    cost about 10% of a forward + backward of the small GPT (bench/clp_min.py).
    Backward: ``d theta_k[i] = w_i d theta_k``, ``d w_i = sum_k <theta_k[i], d theta_k>``.
    """

    @staticmethod
    def forward(ctx, w, *thetas):
        ctx.save_for_backward(w, *thetas)
        out = torch._foreach_mul([t[0] for t in thetas], w[0])
        for i in range(1, w.numel()):
            torch._foreach_add_(out, torch._foreach_mul([t[i] for t in thetas], w[i]))
        return tuple(out)

    @staticmethod
    def backward(ctx, *grads):
        w, *thetas = ctx.saved_tensors
        d_thetas = [g.unsqueeze(0) * w.view(-1, *[1] * g.dim()) for g in grads]  # (m, ...) each
        d_w = None
        if ctx.needs_input_grad[0]:
            d_w = torch.stack([sum((t[i] * g).sum() for t, g in zip(thetas, grads)) for i in range(w.numel())])
        return (d_w, *d_thetas)


def mix_lora_delta(A: torch.Tensor, B: torch.Tensor, w: torch.Tensor) -> tuple:
    """LoRA factors of rank m r whose product is the mixed weight change: B(w) A(w) = sum_i w_i B_i A_i.

    A(w) stacks the scaled ``w_i A_i`` along the rank axis and B(w) the ``B_i``, so the
    module computes ``sum_i w_i Delta W_i`` (Delta W_i = B_i A_i times peft's scaling): the
    soup of the merged experts, linear in ``w``. Factor-wise mixing
    ``(sum_i w_i B_i)(sum_i w_i A_i)`` is not (its cross terms ``w_i w_j B_i A_j``).

    Args: ``A`` ``[m, r, ...]`` (rank on dim 0 of each copy: Linear, Embedding, Conv);
    ``B`` ``[m, out, r, ...]`` (rank on dim 1); ``w`` ``[m]`` or ``[B, m]``.
    Returns ``(A(w) [m r, ...], B(w) [out, m r, ...])``, with a leading ``[B]`` for per-example ``w``.
    """
    m, r = A.shape[:2]
    wA = w.reshape(*w.shape, *[1] * (A.dim() - 1)) * A  # (m, r, ...) or (B, m, r, ...)
    A_w = wA.reshape(*w.shape[:-1], m * r, *A.shape[2:])  # (m r, ...) or (B, m r, ...)
    B_w = B.movedim(0, 1).reshape(B.size(1), m * r, *B.shape[3:])  # (out, m r, ...)
    if w.dim() == 2:
        B_w = B_w.expand(w.size(0), *B_w.shape)  # (B, out, m r, ...), a view
    return A_w, B_w


def check_w(w, m: int, field: str = "w") -> torch.Tensor:
    """A weighting ``[m]`` or per-example weightings ``[B, m]`` on the simplex, as a float tensor.

    Refused with a ValueError naming ``field``: wrong length, negative, non-finite,
    not summing to 1 within 1e-6 (theory.checks.check_weights); never renormalised.
    """
    t = torch.as_tensor(w)
    if t.dim() not in (1, 2):
        raise ValueError(f"{field}: expected a weighting [m] or per-example weightings [B, m], "
                         f"got shape {tuple(t.shape)}")
    check_weights(t.detach().cpu().double().numpy(), m, field)
    return t if t.is_floating_point() else t.double()
