"""clp_min.decoding: cached sampling against full passes, the zero-shot baselines against
parameter mixing and against theory's Gibbs policy (P4), call counts, eos/top-k, refusals."""
import copy

import numpy as np
import pytest
import torch
import torch.nn as nn
from hypothesis import given, strategies as st

from clp_min.conditioning import ParamConditioned, Unconditioned
from clp_min.decoding import logit_mix_sample, realign_sample, sample, sequence_logprobs
from clp_min.mechanisms.input_cond import InputConditioned
from clp_min.model import GPT, GPTConfig
from strategies import betas, rewards, simplex_stack
from theory.gibbs import gibbs_log_policy
from theory.instances import Bandit

V, BLOCK = 7, 16


def _gpt(seed=0, tie=False):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=V, block_size=BLOCK, n_layer=2, n_head=2, n_embd=8, tie_weights=tie)).double()


def _prompt(B=4, P=3, seed=0):
    return torch.randint(0, V, (B, P), generator=torch.Generator().manual_seed(seed))


class Tilted(nn.Module):
    """``model`` with a fixed vector added to its logits (a logit bias)."""

    def __init__(self, model, bias):
        super().__init__()
        self.model, self.bias = model, bias

    def forward(self, idx, cache=None):
        logits, cache = self.model(idx, cache=cache)
        return logits + self.bias, cache


class Counting(nn.Module):
    """Counts forward calls of the wrapped module."""

    def __init__(self, model):
        super().__init__()
        self.model, self.calls = model, 0

    def forward(self, *args, **kwargs):
        self.calls += 1
        return self.model(*args, **kwargs)


def _policies():
    gpt = _gpt(1)
    with torch.no_grad():
        gpt.transformer.wte.weight.mul_(40)  # sharper next-token distributions
    pc = ParamConditioned.from_base(gpt, 2, "attn")
    with torch.no_grad():
        for theta in pc.thetas:
            theta[1].add_(torch.randn_like(theta[1]))
    torch.manual_seed(2)
    ic = InputConditioned(_gpt(2), 2, "prefix").double()
    with torch.no_grad():
        ic.embed.proj.weight.normal_()
    both = ParamConditioned.from_base(ic, 2, "logit")
    return {"plain": Unconditioned(gpt), "param": pc, "input": ic, "both": both}


@pytest.mark.parametrize("name", ["plain", "param", "input", "both"])
@pytest.mark.parametrize("per_example", [False, True])
def test_cached_sampling_logprobs_equal_full_pass(name, per_example):
    policy = _policies()[name]
    W = torch.tensor([[1.0, 0.0], [0.3, 0.7], [0.5, 0.5], [0.0, 1.0]], dtype=torch.float64)
    w = W if per_example else W[1]
    prompt = _prompt()
    out = sample(policy, w, prompt, 6, generator=torch.Generator().manual_seed(0))
    assert out.tokens.shape == out.logprobs.shape == (4, 6)
    full = sequence_logprobs(policy, w, prompt, out.tokens)
    torch.testing.assert_close(out.logprobs, full, rtol=0, atol=1e-10)


def test_temperature_and_top_k_logprobs_are_those_of_the_sampling_distribution():
    policy = _policies()["param"]
    w = torch.tensor([0.4, 0.6], dtype=torch.float64)
    prompt = _prompt(8)
    out = sample(policy, w, prompt, 5, temperature=0.7, top_k=3, generator=torch.Generator().manual_seed(1))
    logits, _ = policy(w, torch.cat([prompt, out.tokens], 1)[:, :-1])
    logits = logits[:, prompt.size(1) - 1:] / 0.7  # (B, N, V)
    top = torch.topk(logits, 3, dim=-1)
    chosen = logits.gather(2, out.tokens[:, :, None]).squeeze(2)
    assert bool((chosen >= top.values[..., -1]).all())  # every token is in the top 3
    expected = chosen - torch.logsumexp(top.values, dim=-1)
    torch.testing.assert_close(out.logprobs, expected, rtol=0, atol=1e-10)


def test_same_generator_seed_same_tokens():
    policy = _policies()["input"]
    w = torch.tensor([0.5, 0.5], dtype=torch.float64)
    a = sample(policy, w, _prompt(), 5, generator=torch.Generator().manual_seed(3))
    b = sample(policy, w, _prompt(), 5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.tokens, b.tokens)


def test_eos_stops_and_masks():
    gpt = _gpt(3)
    eos = 2
    bias = torch.zeros(V, dtype=torch.float64)
    bias[eos] = 1.5  # eos likely but not certain
    policy = Unconditioned(Tilted(gpt, bias))
    out = sample(policy, torch.tensor([1.0]), _prompt(16), 8, eos=eos, generator=torch.Generator().manual_seed(0))
    hit = out.tokens == eos
    assert bool(hit.any())
    for b in range(16):
        if hit[b].any():
            first = int(hit[b].nonzero()[0])
            assert bool((out.tokens[b, first:] == eos).all())
            assert bool((out.logprobs[b, first + 1:] == 0).all())
            assert out.mask[b].tolist() == [True] * (first + 1) + [False] * (out.tokens.size(1) - first - 1)
        else:
            assert bool(out.mask[b].all())
    finished = sequence_logprobs(policy, torch.tensor([1.0]), _prompt(16), out.tokens)
    torch.testing.assert_close(out.logprobs[out.mask], finished[out.mask], rtol=0, atol=1e-10)


@given(st.integers(2, 3), st.data())
def test_logit_mix_sampling_equals_logit_scope_parameter_mixing(m, data):
    # per-token logit mixing of m models that differ only in the head = the head-mixed model (P3, last layer)
    base = _gpt(4)
    experts = []
    for i in range(m):
        e = copy.deepcopy(base)
        with torch.no_grad():
            e.lm_head.weight.add_(3 * torch.randn(e.lm_head.weight.shape, generator=torch.Generator().manual_seed(i),
                                                  dtype=torch.float64))
        experts.append(e)
    pc = ParamConditioned.from_experts(experts, "logit")
    W = torch.as_tensor(data.draw(simplex_stack(4, m)))
    prompt = _prompt()
    out = logit_mix_sample(experts, W, prompt, 4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out.logprobs, sequence_logprobs(pc, W, prompt, out.tokens), rtol=0, atol=1e-9)
    one = logit_mix_sample(experts, W[0], prompt, 4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(one.logprobs, sequence_logprobs(pc, W[0], prompt, one.tokens), rtol=0, atol=1e-9)


@given(betas(), st.floats(0.05, 3.0), rewards(V, 1), st.integers(0, 100))
def test_realignment_is_the_gibbs_policy_at_beta_over_lam(beta, lam, r, seed):
    # P4 bridge: tuned = Gibbs policy at beta for reward r (ref logits + r / beta); realignment at lam
    # must equal theory's Gibbs policy at beta / lam, on a one-token response.
    ref = _gpt(seed % 5)
    prompt = _prompt(1, 3, seed).repeat(32, 1)
    ref_logits = ref(prompt[:1])[0][0, -1].detach().numpy()  # (V,)
    tuned = Tilted(ref, torch.as_tensor(r[:, 0] / beta))
    out = realign_sample(ref, tuned, lam, prompt, 1, generator=torch.Generator().manual_seed(seed))
    bandit = Bandit.from_arrays([1.0], ref_logits[None], r[None])
    expected = gibbs_log_policy(bandit, np.ones((1, 1)), beta / lam)[0, 0]  # (V,)
    got = out.logprobs[:, 0].numpy()
    want = expected[out.tokens[:, 0].numpy()]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9 * (1 + np.abs(want).max()))


@pytest.mark.parametrize("eos", [None, 3])
def test_model_calls_are_counted(eos):
    models = [Counting(_gpt(i)) for i in range(3)]
    prompt = _prompt()
    g = torch.Generator().manual_seed(0)
    out = logit_mix_sample(models, [0.2, 0.3, 0.5], prompt, 5, generator=g, eos=eos)
    assert out.model_calls == sum(mm.calls for mm in models)
    assert all(mm.calls == out.tokens.size(1) for mm in models)
    ref, tuned = Counting(_gpt(0)), Counting(_gpt(1))
    out = realign_sample(ref, tuned, 0.5, prompt, 5, generator=g, eos=eos)
    assert out.model_calls == ref.calls + tuned.calls == 2 * out.tokens.size(1)
    policy = Counting(Unconditioned(_gpt(2)))
    out = sample(policy, [1.0], prompt, 5, generator=g, eos=eos)
    assert out.model_calls == policy.calls == out.tokens.size(1)


def test_refusals():
    policy = Unconditioned(_gpt())
    prompt = _prompt()
    with pytest.raises(ValueError, match="^temperature: "):
        sample(policy, [1.0], prompt, 3, temperature=0.0)
    with pytest.raises(ValueError, match="^top_k: "):
        sample(policy, [1.0], prompt, 3, top_k=0)
    with pytest.raises(ValueError, match="^max_new_tokens: "):
        sample(policy, [1.0], prompt, 0)
    with pytest.raises(ValueError, match="^prompt: "):
        sample(policy, [1.0], prompt[0], 3)
    models = [_gpt(0), _gpt(1)]
    with pytest.raises(ValueError, match="^w: .*sum to"):
        logit_mix_sample(models, [0.5, 0.6], prompt, 3)
    with pytest.raises(ValueError, match="^w: .*expected 2 entries"):
        logit_mix_sample(models, [0.5, 0.25, 0.25], prompt, 3)
    with pytest.raises(ValueError, match="^w: 3 weightings for a batch of 4"):
        logit_mix_sample(models, [[0.5, 0.5]] * 3, prompt, 3)
    with pytest.raises(ValueError, match="^lam: "):
        realign_sample(models[0], models[1], 0.0, prompt, 3)
    with pytest.raises(ValueError, match="^lam: "):
        realign_sample(models[0], models[1], float("nan"), prompt, 3)


def test_decoding_the_exported_policy_gives_the_same_outputs():
    pc = _policies()["param"]
    w = torch.tensor([0.3, 0.7], dtype=torch.float64)
    a = sample(pc, w, _prompt(), 6, generator=torch.Generator().manual_seed(5))
    b = sample(Unconditioned(pc.policy_at(w)), w, _prompt(), 6, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.tokens, b.tokens)
    torch.testing.assert_close(a.logprobs, b.logprobs, rtol=0, atol=1e-12)
