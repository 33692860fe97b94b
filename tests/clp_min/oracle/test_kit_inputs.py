"""The oracle kit's inputs checked against the task (clp_min.oracle.kit), one refusal per field.

Before: prompts of length 4 for a task of length 6 were evaluated anyway (a correct policy got
"FAIL ... 1.47"); a grid with the wrong number of rewards met numpy's matmul message; an empty
prompt batch ended in "J_opt: contains NaN" after runtime warnings.
"""
import copy
import warnings

import numpy as np
import pytest
import torch

from clp_min import task as tk
from clp_min.conditioning import ParamConditioned, Unconditioned
from clp_min.model import GPT
from clp_min.oracle.kit import exact_regret, logit_scope_check, sampler_check
from clp_min.pretrain import model_config

TASK = tk.TaskConfig(vocab=4, prompt_len=6, response_len=2)  # V^T = 16 responses


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    pi_ref = GPT(model_config(TASK, 1, 2, 8)).eval()
    prompts = tk.sample_prompts(TASK, 3, torch.Generator().manual_seed(0))  # (3, 6)
    return pi_ref, ParamConditioned.from_base(pi_ref, 2, "attn").eval(), prompts


def test_valid_inputs_still_run_and_pi_ref_has_regret_one(models):
    """pi_ref's normalised regret is 1 by definition (THEORY.md section 6): the checks let it through."""
    pi_ref, policy, prompts = models
    check = exact_regret(Unconditioned(pi_ref), pi_ref, TASK, prompts, [[1.0, 0.0], [0.3, 0.7]], 0.1)
    np.testing.assert_allclose(check.numbers["normalised_regret"], 1.0, atol=1e-9)
    assert exact_regret(policy, pi_ref, TASK, prompts, [0.5, 0.5], 0.1).value == pytest.approx(1.0, abs=1e-6)


BAD_REGRET = [
    (dict(prompts=lambda p: p[:, :4]), "prompts: the task's prompts have length 6, got 4"),
    (dict(prompts=lambda p: p[:0]), "prompts: empty batch"),
    (dict(prompts=lambda p: p[0]), r"prompts: expected a \[B, N\] tensor"),
    (dict(prompts=lambda p: p.double()), "prompts: expected integer token ids"),
    (dict(prompts=lambda p: torch.where(p == p[0, 0], 0, p)), r"prompts: token ids must lie in \[1, 3\], got 0"),
    (dict(prompts=lambda p: torch.where(p == p[0, 0], 4, p)), r"prompts: token ids must lie in \[1, 3\]"),
    (dict(W=[[0.2, 0.3, 0.5]]), "W: has 3 entries per weighting, the task has m = 2 rewards"),
    (dict(W=np.zeros((0, 2))), r"W: expected weightings \[K, m\] with K >= 1"),
    (dict(W=[[0.7, 0.7]]), "W:"),
    (dict(W=[[1.5, -0.5]]), "W:"),
    (dict(beta=0.0), "beta"),
    (dict(tol=-1.0), "tol: must be a finite number >= 0"),
    (dict(tol=float("nan")), "tol:"),
    (dict(task=dict(vocab=4)), "task: expected a clp_min.task.TaskConfig"),
    (dict(reward_fn=lambda x, y: torch.zeros(x.size(0), 3)), "W: has 2 entries per weighting, the task has m = 3"),
    (dict(policy="three copies"), "policy: conditioned on m = 3 weights, the task has m = 2"),
]


@pytest.mark.parametrize("change, message", BAD_REGRET, ids=[m.split(":")[0] + str(i) for i, (_, m) in
                                                             enumerate(BAD_REGRET)])
def test_exact_regret_refuses_what_does_not_fit_the_task(models, change, message):
    pi_ref, policy, prompts = models
    args = dict(policy=policy, pi_ref=pi_ref, task=TASK, prompts=prompts, W=[[0.5, 0.5]], beta=0.1)
    for key, value in change.items():
        args[key] = value(prompts) if key == "prompts" else value
    if args["policy"] == "three copies":
        args["policy"] = ParamConditioned.from_base(copy.deepcopy(pi_ref), 3, "attn")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # refused before any computation: no numpy or torch warning on the way
        with pytest.raises(ValueError, match=f"^{message}") as err:
            exact_regret(**args)
    assert "\n" not in str(err.value)


def test_sampler_check_refuses_bad_w_prompt_and_tol(models):
    pi_ref, policy, prompts = models
    w = torch.tensor([0.5, 0.5])
    assert sampler_check(policy, w, prompts, 2, torch.Generator().manual_seed(0)).passed
    for args, message in (((policy, [0.2, 0.3, 0.5], prompts, 2), "w:"),
                          ((policy, w, prompts[:0], 2), "prompt: empty batch"),
                          ((policy, w, torch.full((1, 3), 4), 2), r"prompt: token ids must lie in \[0, 3\]"),
                          ((policy, w, prompts.float(), 2), "prompt: expected integer")):
        with pytest.raises(ValueError, match=f"^{message}"):
            sampler_check(*args)
    with pytest.raises(ValueError, match="^tol:"):
        sampler_check(policy, w, prompts, 2, tol=-1e-5)


def test_logit_scope_check_refuses_bad_experts_W_and_idx(models):
    pi_ref, _, prompts = models
    experts = [pi_ref, copy.deepcopy(pi_ref)]
    with torch.no_grad():
        experts[1].lm_head.weight.add_(0.1)
    assert logit_scope_check(experts, [[0.3, 0.7]], prompts).passed
    for args, message in ((([], [[1.0]], prompts), "experts: empty"),
                          ((experts, [[0.2, 0.3, 0.5]], prompts), "W: has 3 entries per weighting, there are 2 experts"),
                          ((experts, [[0.3, 0.7]], prompts[:0]), "idx: empty batch"),
                          ((experts, [[0.3, 0.7]], torch.full((1, 3), 9)), r"idx: token ids must lie in \[0, 3\]")):
        with pytest.raises(ValueError, match=f"^{message}"):
            logit_scope_check(*args)
