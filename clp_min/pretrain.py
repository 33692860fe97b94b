"""Supervised pretraining of the reference model ``pi_ref`` on the task's reference responses.

    loss = - mean over chosen tokens of log pi(y_t | x, y_<t)

The chosen tokens are the response up to and including its first EOS
(``task.decision_mask``); later positions are forced at decoding time and carry
no loss. Fresh (prompt, response) pairs are drawn from the task's reference
process at every step, so ``pi_ref`` is a real language model of that process.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm import tqdm

from clp_min.model import GPT, GPTConfig
from clp_min.task import TaskConfig, decision_mask, reference_responses, sample_prompts


def model_config(task: TaskConfig, n_layer: int, n_head: int, n_embd: int, prefix_rows: int = 1) -> GPTConfig:
    """The GPT for a task: room for the prompt, the response and ``prefix_rows`` conditioning rows.

    Untied unembedding, so scope ``logit`` mixes the unembedding only (conditioning.py).
    """
    return GPTConfig(vocab_size=task.vocab, block_size=task.prompt_len + task.response_len + prefix_rows,
                     n_layer=n_layer, n_head=n_head, n_embd=n_embd, tie_weights=False)


def response_logits(model, prompts: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
    """Next-token logits at every response position, ``[B, T, V]``, for a plain GPT."""
    L = prompts.size(1)
    idx = torch.cat([prompts, responses[:, :-1]], dim=1)  # (B, L+T-1)
    logits, _ = model(idx)
    return logits[:, L - 1:]  # (B, T, V): row t predicts response token t


def response_nll(model, prompts: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood per chosen response token (the pretraining loss)."""
    logits = response_logits(model, prompts, responses)  # (B, T, V)
    nll = F.cross_entropy(logits.transpose(1, 2), responses, reduction="none")  # (B, T)
    mask = decision_mask(responses)
    return (nll * mask).sum() / mask.sum()


def pretrain(model: GPT, task: TaskConfig, steps: int, batch_size: int, lr: float,
             generator: torch.Generator, progress: bool = False) -> list:
    """Train ``model`` in place on fresh reference data for ``steps`` Adam steps; returns the losses."""
    for name, value in (("steps", steps), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: must be a positive integer, got {value!r}")
    if not lr > 0:
        raise ValueError(f"lr: must be > 0, got {lr!r}")
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    losses = []
    model.train()
    for _ in tqdm(range(steps), desc="pretrain pi_ref", disable=not progress, leave=False):
        prompts = sample_prompts(task, batch_size, generator)
        responses = reference_responses(task, prompts, generator)
        loss = response_nll(model, prompts, responses)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    return losses
