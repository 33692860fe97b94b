"""Evaluation (clp_min.studies.evaluate, clp_min.oracle.exact): the exact enumerable path against sampling and full passes."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clp_min.studies import evaluate as ev
from clp_min.oracle import exact
from clp_min import task as tk
from clp_min.conditioning import ParamConditioned, Unconditioned
from clp_min.model import GPT
from clp_min.pretrain import model_config, pretrain
from clp_min.rl import response_logprobs
from theory.weights import simplex_grid

BETA = 0.1
TASK = tk.TaskConfig(vocab=4, prompt_len=5, response_len=3)


@pytest.fixture(scope="module")
def models():
    """A briefly pretrained pi_ref, a CLP policy with perturbed copies, and two perturbed experts."""
    torch.manual_seed(0)
    ref = GPT(model_config(TASK, n_layer=1, n_head=2, n_embd=16))
    pretrain(ref, TASK, steps=100, batch_size=64, lr=3e-3, generator=torch.Generator().manual_seed(1))
    ref.requires_grad_(False)
    policy = ParamConditioned.from_base(ref, 2, "attn")
    experts = []
    with torch.no_grad():
        for theta in policy.thetas:
            theta.add_(0.5 * torch.randn_like(theta))
        for i in range(2):
            e = GPT(ref.config)
            e.load_state_dict(ref.state_dict())
            e.lm_head.weight.add_(0.5 * torch.randn_like(e.lm_head.weight))
            experts.append(e.requires_grad_(False))
    return ref, policy, experts


def _ref_logprobs(ref):
    return lambda idx: F.log_softmax(ref(idx)[0].double(), dim=-1)


def test_tree_paths_equal_full_pass_logprobs(models):
    """Summing the enumerated prefix log-probs along a leaf gives the full-pass sequence log-prob."""
    ref, policy, _ = models
    prompts = tk.sample_prompts(TASK, 3, torch.Generator().manual_seed(5))
    W = np.array([[0.3, 0.7]])
    log_pi = exact.method_log_policies(ev.policy_method("clp", policy).logprobs, TASK, prompts, W)
    leaves = tk.all_responses(TASK)  # (V^T, T)
    from theory.tree import leaf_log_probs
    trees = exact.prompt_trees(_ref_logprobs(ref), TASK, prompts)
    for p in range(3):
        seq = leaf_log_probs(trees[p], log_pi[p])[0]  # (V^T,)
        with torch.no_grad():
            full = response_logprobs(policy, torch.tensor([0.3, 0.7]), prompts[p:p + 1].expand(len(leaves), -1), leaves)
        # leaves with a non-EOS token after an EOS are impossible (forced EOS): log-prob ~ -1e9
        possible = _possible(leaves)
        np.testing.assert_allclose(seq[possible.numpy()], full[possible].double().numpy(), atol=1e-5)
        assert np.all(seq[~possible.numpy()] < -1e8)
        assert np.exp(seq).sum() == pytest.approx(1.0, abs=1e-9)


def _possible(leaves):
    """Leaves whose tokens after the first EOS are all EOS."""
    after = ~tk.decision_mask(leaves)
    return ~((leaves != tk.EOS) & after).any(dim=1)


@pytest.mark.parametrize("kind", ["policy", "logit_mix", "realign"])
def test_exact_agrees_with_monte_carlo(models, kind):
    """Exact R, K, J_w from the tree equal Monte Carlo estimates within 4 standard errors.

    One prompt repeated P times, so the per-prompt means are i.i.d. and the standard
    error is that of the estimate of this prompt's exact values.
    """
    ref, policy, experts = models
    method = {"policy": lambda: ev.policy_method("clp", policy),
              "logit_mix": lambda: ev.logit_mix_method("mix", experts),
              "realign": lambda: ev.realign_method("realign", ref, experts[0])}[kind]()
    prompt = tk.sample_prompts(TASK, 1, torch.Generator().manual_seed(7))
    W = np.array([[0.8, 0.2], [0.25, 0.75]])
    trees = exact.prompt_trees(_ref_logprobs(ref), TASK, prompt)
    ex = exact.policy_stats(trees, exact.method_log_policies(method.logprobs, TASK, prompt, W), W, BETA)
    mc = ev.mc_front(method, TASK, ref, W, prompt.expand(400, -1), 4, BETA, torch.Generator().manual_seed(8))
    for key in ("rewards", "kl", "objective"):
        z = (mc[key] - ex[key]) / mc[key + "_se"]
        assert np.all(np.abs(z) < 4), (key, z)
    assert mc["model_calls_per_token"] == {"policy": 1, "logit_mix": 2, "realign": 2}[kind]


def test_optimum_and_reference_normalised_regret(models):
    """pi*_w evaluated as a policy has normalised regret 0; pi_ref (an untrained CLP) has 1 and K = 0."""
    ref, _, _ = models
    prompts = tk.sample_prompts(TASK, 4, torch.Generator().manual_seed(9))
    W = simplex_grid(2, 4)
    trees = exact.prompt_trees(_ref_logprobs(ref), TASK, prompts)
    opt, refs = exact.optimal_stats(trees, W, BETA), exact.reference_stats(trees, W, BETA)
    untrained = ev.policy_method("untrained", ParamConditioned.from_base(ref, 2, "full"))
    res = ev.exact_front({"CLP untrained": untrained}, ref, TASK, W, prompts, BETA)
    np.testing.assert_allclose(res["normalised_regret"]["CLP untrained"], 1.0, atol=1e-6)
    np.testing.assert_allclose(res["methods"]["CLP untrained"]["kl"], 0.0, atol=1e-6)
    np.testing.assert_allclose(res["optimal"]["objective"], opt["objective"], rtol=1e-12)
    # the optimum beats pi_ref at every weighting by exactly beta * KL(pi_ref || pi*) > 0 (P1)
    assert np.all(opt["objective"] > refs["objective"])
    # and J_w(pi_ref) is w . R(pi_ref) (K = 0)
    np.testing.assert_allclose(refs["objective"], W @ refs["rewards"][0], atol=1e-12)


def test_unconditioned_reference_point(models):
    ref, _, _ = models
    prompts = tk.sample_prompts(TASK, 2, torch.Generator().manual_seed(3))
    W = np.array([[0.5, 0.5]])
    mc = ev.mc_front(ev.policy_method("ref", Unconditioned(ref)), TASK, ref, W, prompts, 3, BETA,
                     torch.Generator().manual_seed(4))
    assert abs(mc["kl"][0]) < 1e-5  # log pi - log pi_ref of pi_ref's own samples is 0


def test_setups_and_report_smoke(tmp_path):
    """The real setup runner and report writer at a tiny scale (enum: exact path; kl: realignment)."""
    from clp_min.studies import report, setups, targets

    scale = setups.Scale(seeds=(0,), pretrain_steps=5, steps=2, prompts_per_step=2, samples_per_prompt=2,
                         eval_prompts=2, eval_samples=2, exact_prompts=2, grid=2)
    results = {name: [setups.run_setup(name, 0, scale, tmp_path)] for name in ("kl", "enum")}
    rows = targets.targets(results)
    by_target = {r["target"]: r for r in rows}
    assert by_target["(a) CLP decodes with one model call per token"]["value"] == 1
    assert by_target["(a) realignment needs two model calls per token"]["value"] == 2
    assert all(np.isfinite(r["value"]) for r in rows)
    path = report.write_report(tmp_path, [], [], rows, results, "smoke")
    assert "best CLP's average normalised regret" in path.read_text()
    assert (tmp_path / "enum" / "seed0" / "fronts_exact.png").exists()
