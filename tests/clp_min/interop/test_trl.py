"""The TRL adapter: TRL's private entry points as pinned, the task reaching TRL intact, and TRL's
RLOO unbiased / GRPO-with-KL biased as the source predicts (small configurations: seconds each).

Independent routes: completions' masks and advantages are recomputed from the task's own
``decision_mask``, rewards and ``clp_min.rl.leave_one_out_advantages``; the reference's log-probs
from pi_ref through ``clp_min.interop.hf.HFCausalLM``; the gradients from enumeration (``gradcheck``).
"""

import pytest
import torch

trl = pytest.importorskip("trl")

from clp_min import rl  # noqa: E402
from clp_min import task as tk  # noqa: E402
from clp_min.interop import trl as ta  # noqa: E402
from clp_min.oracle import gradcheck  # noqa: E402
from clp_min.studies import trl_check as tc  # noqa: E402
from clp_min.interop.hf import HFCausalLM  # noqa: E402

TASK = tk.TaskConfig(vocab=5, prompt_len=2, response_len=3, rewards=("coverage", "knob"), strength=1.0)
PROMPTS = torch.tensor([[1, 2], [3, 4]])
W = torch.tensor([[0.3, 0.7], [0.6, 0.4]], dtype=torch.float64)
G, BETA = 8, 0.5


def trainer(tmp_path, algorithm, beta=BETA, fixed=False, kind="gpt2", **options):
    eos = TASK.vocab if fixed else tk.EOS
    model = ta.tiny_causal_lm(kind, TASK.vocab, 0, eos_id=eos)
    pi_ref = ta.tiny_causal_lm(kind, TASK.vocab, 1, eos_id=eos)
    return ta.build_trainer(algorithm, model, pi_ref, TASK, tmp_path, G, beta, fixed, **options), pi_ref


def batch(tr, seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return tr._generate_and_score_completions(ta.batch_rows(PROMPTS, W, G))


def test_version_and_private_methods_pinned(monkeypatch):
    assert trl.__version__ == ta.TRL_VERSION
    ta.check_trl_internals()
    monkeypatch.setattr(trl.GRPOTrainer, "_generate_and_score_completions", lambda self, inputs, extra: None)
    with pytest.raises(AssertionError, match="_generate_and_score_completions"):
        ta.check_trl_internals()


@pytest.mark.parametrize("kind", ta.MODEL_KINDS)
def test_rloo_batch_is_the_task(tmp_path, kind):
    """TRL's completion mask is the task's decision rule; its advantages are RLOO's on w . r of the task."""
    tr, _ = trainer(tmp_path, "rloo", beta=0.0, kind=kind)
    out = batch(tr)
    y = rl.pad_responses(out["completion_ids"], TASK.response_len)  # (B, T), pad = EOS
    assert torch.equal(out["completion_mask"].bool(), tk.decision_mask(y))
    x, w = PROMPTS.repeat_interleave(G, dim=0), W.repeat_interleave(G, dim=0)
    R = (w * tk.rewards(TASK, x, y)).sum(1)  # (B,)
    A = rl.leave_one_out_advantages(R.view(-1, G)).view(-1)
    torch.testing.assert_close(out["advantages"].double(), A, atol=1e-6, rtol=1e-5)
    assert A.abs().max() > 0.05  # the rewards vary within a group: the comparison has content


def test_grpo_reference_is_pi_ref(tmp_path):
    tr, pi_ref = trainer(tmp_path, "grpo", loss_type="grpo", scale_rewards="none")
    out = batch(tr)
    idx = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
    L = out["prompt_ids"].size(1)
    for model, close in ((pi_ref, True), (tr.model, False)):
        logp = torch.log_softmax(HFCausalLM(model)(idx)[0][:, L - 1:-1].float(), -1)
        token = logp.gather(-1, out["completion_ids"][..., None])[..., 0] * out["completion_mask"]
        same = torch.allclose(token, out["ref_per_token_logps"] * out["completion_mask"], atol=1e-5)
        assert same == close


def test_fixed_length_completions(tmp_path):
    tr, _ = trainer(tmp_path, "grpo", fixed=True)
    out = batch(tr)
    assert out["completion_ids"].shape == (PROMPTS.size(0) * G, TASK.response_len)
    assert out["completion_mask"].all() and (out["completion_ids"] == tk.EOS).any()  # token 0 is content here


def test_rloo_unbiased_and_grpo_kl_biased_as_predicted(tmp_path):
    """RLOO (KL as a reward): unbiased. GRPO, k3 in the loss, beta > 0 over T = 3 tokens: biased, and equal to the
    source's predicted gradient (per-token KL with the prefix held fixed, 1/n token weights, (1 - 1/G) baseline)."""
    tr, pi_ref = trainer(tmp_path / "rloo", "rloo")
    check = gradcheck.gradient_check(ta.trl_loss(tr, G), ta.policy_of(tr), HFCausalLM(pi_ref), TASK, PROMPTS, W,
                                     BETA, n_batches=200, groups=10)
    assert check.unbiased, check.verdict
    row = tc.Row("grpo", BETA, "grpo", "none", True, "sum_then_normalize")
    tr, pi_ref = trainer(tmp_path / "grpo", "grpo", **row.options())
    policy, ref = ta.policy_of(tr), HFCausalLM(pi_ref)
    params = [p for p in policy.parameters() if p.requires_grad]
    g = gradcheck.exact_gradient(policy, ref, TASK, PROMPTS, W, BETA, params)
    pred, _ = tc.predicted_gradient(row, policy, ref, TASK, PROMPTS, W, G, False, params)
    means = gradcheck.sampled_gradients(ta.trl_loss(tr, G), params, PROMPTS, W, 200, 10)
    assert not gradcheck.compare(means, g).unbiased
    assert gradcheck.compare(means, pred).unbiased
