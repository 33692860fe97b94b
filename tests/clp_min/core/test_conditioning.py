"""clp_min.conditioning and clp_min.mechanisms.input_cond: parameter mixing, per-example weightings,
gradients, input conditioning, and refusals. Models run in float64 so identities hold to ~1e-10."""
import copy

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st
from scipy.special import log_softmax

from clp_min.conditioning import ParamConditioned, Unconditioned
from clp_min.scope import resolve_scope
from clp_min.mechanisms.input_cond import InputConditioned
from clp_min.model import GPT, GPTConfig
from strategies import simplex, simplex_stack
from theory.mixing import logit_mix

V, BLOCK, C = 7, 12, 8
SCOPES = ["full", "attn", "logit", ["*.mlp.c_fc.*", "*ln_f*"]]
ATOL = 1e-10


def _gpt(seed=0, tie=False):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=V, block_size=BLOCK, n_layer=2, n_head=2, n_embd=C, tie_weights=tie)).double()


def _experts(m, scope, seed=0, tie=False, inner=None):
    """m modules equal to a base except for the scoped parameters, which are perturbed per expert."""
    base = inner if inner is not None else _gpt(seed, tie)
    names = resolve_scope(base, scope)
    experts = []
    for i in range(m):
        e = copy.deepcopy(base)
        g = torch.Generator().manual_seed(100 * seed + i)
        with torch.no_grad():
            for name in names:
                p = e.get_parameter(name)
                p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
        experts.append(e)
    return experts


def _idx(B=3, T=5, seed=0):
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


@given(st.sampled_from(range(len(SCOPES))), st.integers(2, 3), st.data(), st.booleans())
def test_vertex_equals_expert(scope_i, m, data, tie):
    scope = SCOPES[scope_i]
    experts = _experts(m, scope, tie=tie)
    pc = ParamConditioned.from_experts(experts, scope, mix_tied=tie)
    idx = _idx()
    i = data.draw(st.integers(0, m - 1))
    w = torch.eye(m, dtype=torch.float64)[i]
    torch.testing.assert_close(pc(w, idx)[0], experts[i](idx)[0], rtol=0, atol=ATOL)


@given(st.sampled_from(range(len(SCOPES))), st.integers(1, 3), st.data())
def test_policy_at_parameters_are_the_w_sum(scope_i, m, data):
    scope = SCOPES[scope_i]
    experts = _experts(m, scope, seed=1)
    pc = ParamConditioned.from_experts(experts, scope)
    w = data.draw(simplex(m))
    plain = pc.policy_at(w)
    scoped = resolve_scope(experts[0], scope)
    for name, p in plain.named_parameters():
        expected = sum(float(w[i]) * experts[i].get_parameter(name) for i in range(m)) if name in scoped \
            else experts[0].get_parameter(name)
        torch.testing.assert_close(p, expected, rtol=0, atol=1e-12)
    # and it is an ordinary model: its state dict loads into a fresh GPT with the same outputs
    fresh = _gpt(seed=9)
    fresh.load_state_dict(plain.state_dict())
    idx = _idx()
    torch.testing.assert_close(fresh(idx)[0], pc(w, idx)[0], rtol=0, atol=ATOL)


@given(st.sampled_from(range(len(SCOPES))), st.data())
def test_per_example_weightings_equal_per_example_models(scope_i, data):
    scope, m, B = SCOPES[scope_i], 3, 4
    pc = ParamConditioned.from_experts(_experts(m, scope, seed=2), scope)
    W = torch.as_tensor(data.draw(simplex_stack(B, m)))
    idx = _idx(B, 6, seed=1)
    logits, cache = pc(W, idx[:, :4])
    more, _ = pc(W, idx[:, 4:], cache=cache)  # per-example weightings through the cache too
    for b in range(B):
        own = pc.policy_at(W[b])
        torch.testing.assert_close(logits[b], own(idx[b:b + 1, :4])[0][0], rtol=0, atol=ATOL)
        torch.testing.assert_close(more[b], own(idx[b:b + 1])[0][0, 4:], rtol=0, atol=ATOL)


@given(st.integers(2, 3), st.data())
def test_logit_scope_is_logit_mixing(m, data):
    # P3 for the last layer: the hidden state is shared, so mixed-head logits = w-mix of the heads' logits
    experts = _experts(m, "logit", seed=3)
    pc = ParamConditioned.from_experts(experts, "logit")
    w = data.draw(simplex(m))
    idx = _idx()
    heads = torch.stack([e(idx)[0] for e in experts])  # (m, B, T, V)
    mixed = pc(torch.as_tensor(w), idx)[0]
    torch.testing.assert_close(mixed, torch.einsum("m,mbtv->btv", torch.as_tensor(w), heads), rtol=0, atol=ATOL)
    # ... and so, normalised, the zero-shot logit mixture of theory.mixing
    expected = logit_mix(log_softmax(heads.detach().numpy(), axis=-1), w[None])[0]
    np.testing.assert_allclose(torch.log_softmax(mixed, -1).detach().numpy(), expected, rtol=0, atol=1e-9)


def test_logit_scope_on_tied_model_mixes_the_shared_matrix_only_when_asked():
    experts = _experts(2, "logit", seed=4, tie=True)
    with pytest.raises(ValueError, match="^scope: 'logit' selects lm_head.weight, which is tied to transformer.wte"):
        ParamConditioned.from_experts(experts, "logit")
    pc = ParamConditioned.from_experts(experts, "logit", mix_tied=True)
    assert pc.names == ["transformer.wte.weight"]
    assert sorted(pc.aliases["transformer.wte.weight"]) == ["lm_head.weight", "transformer.wte.weight"]
    plain = pc.policy_at([0.25, 0.75])
    assert plain.lm_head.weight is plain.transformer.wte.weight  # tie preserved in the export


def test_untie_mixes_only_the_unembedding_of_a_tied_model():
    gpt = _gpt(seed=4, tie=True)
    pc = ParamConditioned.from_base(gpt, 2, "logit", untie=True)
    assert pc.names == ["lm_head.weight"]
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        pc.thetas[0].add_(0.3 * torch.randn(pc.thetas[0].shape, generator=g, dtype=torch.float64))
    experts = []  # by hand: the tied model with its own lm_head matrix per copy, input embedding untouched
    for i in range(2):
        e = copy.deepcopy(gpt)
        e.lm_head.weight = torch.nn.Parameter(pc.thetas[0][i].detach().clone())
        experts.append(e)
    torch.testing.assert_close(pc.base.transformer.wte.weight, gpt.transformer.wte.weight, rtol=0, atol=0)
    w, idx = torch.tensor([0.3, 0.7], dtype=torch.float64), _idx()
    expected = 0.3 * experts[0](idx)[0] + 0.7 * experts[1](idx)[0]  # P3: mixed head = mixed logits
    torch.testing.assert_close(pc(w, idx)[0], expected, rtol=0, atol=ATOL)
    plain = pc.policy_at(w)
    assert plain.lm_head.weight is not plain.transformer.wte.weight


def _loss(logits, proj):
    return (logits * proj).sum()


@given(st.sampled_from(range(len(SCOPES))), st.data())
def test_gradients_scaled_by_w_and_shared_plain(scope_i, data):
    scope, m = SCOPES[scope_i], 3
    pc = ParamConditioned.from_experts(_experts(m, scope, seed=5), scope)
    w = data.draw(simplex(m))
    idx = _idx()
    proj = torch.randn(3, 5, V, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    _loss(pc(torch.as_tensor(w), idx)[0], proj).backward()
    plain = pc.policy_at(w)  # autograd on the explicitly mixed model
    _loss(plain(idx)[0], proj).backward()
    for name, theta in zip(pc.names, pc.thetas):
        g = plain.get_parameter(name).grad
        for i in range(m):
            torch.testing.assert_close(theta.grad[i], float(w[i]) * g, rtol=0, atol=1e-10)
    for name, p in pc.base.named_parameters():
        torch.testing.assert_close(p.grad, plain.get_parameter(name).grad, rtol=0, atol=1e-10)


def test_per_example_gradients_sum_over_examples():
    scope, m, B = "attn", 2, 3
    pc = ParamConditioned.from_experts(_experts(m, scope, seed=6), scope)
    W = torch.tensor([[1.0, 0.0], [0.3, 0.7], [0.5, 0.5]], dtype=torch.float64)
    idx = _idx(B)
    proj = torch.randn(B, 5, V, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    _loss(pc(W, idx)[0], proj).backward()
    expected = [torch.zeros_like(t) for t in pc.thetas]
    for b in range(B):
        plain = pc.policy_at(W[b])
        _loss(plain(idx[b:b + 1])[0], proj[b:b + 1]).backward()
        for k, name in enumerate(pc.names):
            for i in range(m):
                expected[k][i] += W[b, i] * plain.get_parameter(name).grad
    for k in range(len(pc.names)):
        torch.testing.assert_close(pc.thetas[k].grad, expected[k], rtol=0, atol=1e-10)


def test_gradient_matches_finite_difference():
    pc = ParamConditioned.from_experts(_experts(2, "attn", seed=7), "attn")
    w = torch.tensor([0.4, 0.6], dtype=torch.float64)
    idx = _idx()
    proj = torch.randn(3, 5, V, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    _loss(pc(w, idx)[0], proj).backward()
    h = 1e-6
    for i in range(2):
        with torch.no_grad():
            pc.thetas[0][i, 0, 0] += h
            up = _loss(pc(w, idx)[0], proj)
            pc.thetas[0][i, 0, 0] -= 2 * h
            down = _loss(pc(w, idx)[0], proj)
            pc.thetas[0][i, 0, 0] += h
        fd = (up - down) / (2 * h)
        assert abs(fd.item() - pc.thetas[0].grad[i, 0, 0].item()) < 1e-7 * (1 + abs(fd.item()))


def test_from_base_copies_start_at_base_and_base_untouched():
    gpt = _gpt(8)
    before = {n: p.clone() for n, p in gpt.named_parameters()}
    pc = ParamConditioned.from_base(gpt, 3, "attn")
    for name, theta in zip(pc.names, pc.thetas):
        for i in range(3):
            torch.testing.assert_close(theta[i], before[name], rtol=0, atol=0)
    for n, p in gpt.named_parameters():
        torch.testing.assert_close(p, before[n], rtol=0, atol=0)
    idx = _idx()
    w = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    torch.testing.assert_close(pc(w, idx)[0], gpt(idx)[0], rtol=0, atol=ATOL)
    shared = sum(p.numel() for p in pc.base.parameters())
    copies = sum(p.numel() for p in pc.thetas)
    assert shared + copies // 3 == sum(p.numel() for p in gpt.parameters())  # shared stored once


@given(st.sampled_from(["prefix", "add"]), st.data())
def test_input_conditioned_cache_and_per_example(mode, data):
    torch.manual_seed(0)
    ic = InputConditioned(_gpt(10), 2, mode).double()
    with torch.no_grad():
        ic.embed.proj.weight.normal_()  # make w matter
    W = torch.as_tensor(data.draw(simplex_stack(3, 2)))
    idx = _idx(3, 6)
    full, _ = ic(W, idx)
    a, cache = ic(W, idx[:, :2])
    b, _ = ic(W, idx[:, 2:], cache=cache)
    torch.testing.assert_close(torch.cat([a, b], 1), full, rtol=0, atol=ATOL)
    for k in range(3):  # a batch weighting [m] equals the same row per example
        torch.testing.assert_close(ic(W[k], idx)[0][k], full[k], rtol=0, atol=ATOL)
    e0, _ = ic(torch.tensor([1.0, 0.0]), idx)
    e1, _ = ic(torch.tensor([0.0, 1.0]), idx)
    assert not torch.allclose(e0, e1)


@given(st.sampled_from(["prefix", "add"]), st.sampled_from(["attn", "logit"]), st.data())
def test_param_and_input_combined(mode, scope, data):
    torch.manual_seed(1)
    inner = InputConditioned(_gpt(11), 2, mode).double()
    pc = ParamConditioned.from_experts(_experts(2, scope, inner=inner), scope)
    W = torch.as_tensor(data.draw(simplex_stack(3, 2)))
    idx = _idx(3, 6)
    logits, cache = pc(W, idx[:, :3])
    more, _ = pc(W, idx[:, 3:], cache=cache)
    for b in range(3):
        own = pc.policy_at(W[b])  # an InputConditioned module with mixed parameters
        torch.testing.assert_close(torch.cat([logits[b], more[b]]), own(W[b], idx[b:b + 1])[0][0],
                                   rtol=0, atol=ATOL)


def test_unconditioned_ignores_w():
    gpt = _gpt(12)
    idx = _idx()
    torch.testing.assert_close(Unconditioned(gpt)(torch.tensor([0.5, 0.5]), idx)[0], gpt(idx)[0], rtol=0, atol=0)


@pytest.mark.parametrize("w, match", [
    ([0.5, 0.5], "expected 3 entries"),
    ([1.2, -0.1, -0.1], "negative"),
    ([0.3, 0.3, 0.3], "sum to"),
    ([float("nan"), 0.5, 0.5], "NaN or infinite"),
    ([float("inf"), 0.0, 0.0], "NaN or infinite"),
    ([[[1.0, 0.0, 0.0]]], "shape"),
])
def test_weighting_refusals(w, match):
    pc = ParamConditioned.from_base(_gpt(), 3, "attn")
    with pytest.raises(ValueError, match=f"^w: .*{match}"):
        pc(torch.tensor(w, dtype=torch.float64), _idx())
    with pytest.raises(ValueError, match="^w: "):
        pc.policy_at(w)
    ic = InputConditioned(_gpt(), 3, "add")
    with pytest.raises(ValueError, match="^w: "):
        ic(torch.tensor(w), _idx())


def test_other_refusals():
    gpt = _gpt()
    with pytest.raises(ValueError, match="^scope: .*matches no parameter"):
        ParamConditioned.from_base(gpt, 2, ["*.nothing.*"])
    with pytest.raises(ValueError, match="^scope: unknown scope"):
        ParamConditioned.from_base(gpt, 2, "mlp")
    with pytest.raises(ValueError, match="^m: "):
        ParamConditioned.from_base(gpt, 0, "attn")
    torch.manual_seed(0)
    wide = GPT(GPTConfig(vocab_size=V, block_size=BLOCK, n_embd=16, tie_weights=False)).double()
    with pytest.raises(ValueError, match="^modules: parameter transformer.wte.weight has shape"):
        ParamConditioned.from_experts([gpt, wide], "full")
    with pytest.raises(ValueError, match="^modules: shared parameter"):
        ParamConditioned.from_experts([_gpt(0), _gpt(1)], "attn")
    pc = ParamConditioned.from_base(gpt, 2, "attn")
    with pytest.raises(ValueError, match="^w: 2 per-example weightings"):
        pc(torch.tensor([[0.5, 0.5], [1.0, 0.0]]), _idx(3))
    with pytest.raises(ValueError, match="^w: policy_at takes one weighting"):
        pc.policy_at([[0.5, 0.5]])
    with pytest.raises(ValueError, match="^mode: "):
        InputConditioned(gpt, 2, "suffix")
