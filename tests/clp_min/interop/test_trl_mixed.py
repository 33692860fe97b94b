"""The parameter-mixed CLP TRL trains (``clp_min.interop.trl_mixed.MixedCLM``): it survives TRL's save-and-rebuild,
reads w from the prompt's first token, and TRL's log-probs, reference and updates are the mixed model's.

Independent routes: the mixed model at one weighting is ``ParamConditioned.policy_at(w)`` (a plain GPT-2 with
``theta(w)`` loaded) run on the task's prompt without the level token; the reference is the plain pi_ref
GPT-2 through ``HFCausalLM``; log-probs are ``log_softmax`` of their logits, gathered here.
"""
import pytest
import torch

trl = pytest.importorskip("trl")

from clp_min import task as tk  # noqa: E402
from clp_min.interop import trl as ta  # noqa: E402
from clp_min.interop import trl_mixed as tm  # noqa: E402
from clp_min.interop.hf import HFCausalLM  # noqa: E402

TASK = tk.TaskConfig(vocab=5, prompt_len=2, response_len=3, rewards=("coverage", "knob"), strength=1.0)
G, BETA = 4, 0.5


def mixed(seed=1, spread=0.3):
    """A MixedCLM whose two copies differ (theta_1 moved by ``spread`` noise), so that w matters."""
    model = tm.mixed_clm(ta.tiny_causal_lm("gpt2", TASK.vocab, seed))
    gen = torch.Generator().manual_seed(seed + 10)
    with torch.no_grad():
        for theta in model.policy.thetas:
            theta[0] += spread * torch.randn(theta[0].shape, generator=gen)
    return model


def token_logps(lm, idx, L):
    """``[B, N - L]``: log-prob of each token after the first ``L`` under a plain ``lm(idx) -> logits``."""
    logp = torch.log_softmax(lm(idx)[0][:, L - 1:-1].double(), -1)
    return logp.gather(-1, idx[:, L:, None])[..., 0]


def test_save_and_rebuild_is_exact(tmp_path):
    from transformers import AutoModelForCausalLM

    model = mixed()
    model.save_pretrained(tmp_path)
    back = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)
    assert type(back) is type(model)
    a, b = model.state_dict(), back.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    inner = back.policy.base.model
    assert inner.lm_head.weight is inner.transformer.wte.weight  # GPT-2's tie restored, not a fresh matrix
    ids = torch.tensor([[3, 1, 2, 4], [0, 2, 2, 1]])
    assert torch.equal(back(input_ids=ids).logits, model(input_ids=ids).logits)


def test_logits_are_the_mixed_model_at_the_prompts_w():
    model = mixed()
    ids = torch.tensor([[1, 3, 2, 4, 1], [4, 3, 2, 4, 1], [0, 1, 1, 2, 3]])  # level tokens 1, 4, 0
    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits  # (3, 5, V)
    assert logits.shape == (3, 5, TASK.vocab) and not logits[:, 0].any()  # the stripped position: zeros
    for b, q in enumerate([1, 4, 0]):
        plain = HFCausalLM(model.policy.policy_at(torch.tensor([q / 4, 1 - q / 4])).model)
        torch.testing.assert_close(logits[b, 1:], plain(ids[b:b + 1, 1:])[0][0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(logits[0], logits[1], atol=1e-3)  # same prompt, other w: other logits
    with pytest.raises(ValueError, match="^attention_mask:"):
        model(input_ids=ids, attention_mask=torch.tensor([[0, 1, 1, 1, 1]] * 3))  # left padding
    with pytest.raises(ValueError, match="^input_ids:"):
        model(input_ids=torch.tensor([[5, 1, 2]]))  # not a level


def test_trl_logps_and_reference(tmp_path):
    """TRL's per-token log-probs (its fused LM head on the mixed model) equal the mixed model's at each row's w;
    TRL's rebuilt reference equals pi_ref (the initial policy ignores w)."""
    pi_ref = ta.tiny_causal_lm("gpt2", TASK.vocab, 1)
    tr = ta.build_trainer("grpo", tm.mixed_clm(ta.tiny_causal_lm("gpt2", TASK.vocab, 1)), None, TASK, tmp_path, G,
                          BETA, **tm.trl_options())
    with torch.no_grad():  # move the policy away from the reference after TRL rebuilt it
        for theta in tr.model.policy.thetas:
            theta[0] += 0.3 * torch.randn(theta[0].shape, generator=torch.Generator().manual_seed(0))
    q = [1, 3]
    rows = [{"prompt": f"t{q[p]} t{p + 1} t2", "x": [p + 1, 2], "w": [q[p] / 4, 1 - q[p] / 4]}
            for p in range(2) for _ in range(G)]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        out = tr._generate_and_score_completions(rows)
    y, mask = out["completion_ids"], out["completion_mask"].bool()
    idx = torch.cat([out["prompt_ids"], y], dim=1)  # (B, 1 + L + T)
    trl_logp, _, _ = tr._get_per_token_logps_and_entropies(tr.model, idx, torch.ones_like(idx), y.size(1))
    mine = torch.cat([token_logps(HFCausalLM(tr.model.policy.policy_at(torch.tensor(r["w"])).model), i[None, 1:],
                                  TASK.prompt_len) for r, i in zip(rows, idx)])
    ref = token_logps(HFCausalLM(pi_ref), idx[:, 1:], TASK.prompt_len)
    torch.testing.assert_close(trl_logp.double()[mask], mine[mask], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["ref_per_token_logps"].double()[mask], ref[mask], atol=1e-5, rtol=1e-5)
    assert (mine - ref)[mask].abs().max() > 0.05  # policy and reference differ: both comparisons have content


def test_trl_training_moves_the_copies_the_weighting_uses(tmp_path):
    """RLOO's ``trainer.train()`` with w = (1, 0) on every row: theta_1 moves, theta_2 gets no gradient (Adam, no
    weight decay: unchanged to the bit)."""
    model = mixed(spread=0.0)
    before = [t.detach().clone() for t in model.policy.thetas]
    rows = [{"prompt": f"t4 t{p + 1} t2", "x": [p + 1, 2], "w": [1.0, 0.0]} for p in range(4)]
    tr = ta.build_trainer("rloo", model, None, TASK, tmp_path, G, BETA, rows=rows, max_steps=2, learning_rate=1e-2,
                          per_device_train_batch_size=2 * G, shuffle_dataset=False, **tm.trl_options())
    tr.train()
    after = list(tr.model.policy.thetas)
    assert all(not torch.equal(a[0], b[0]) for a, b in zip(after, before))
    assert all(torch.equal(a[1], b[1]) for a, b in zip(after, before))
