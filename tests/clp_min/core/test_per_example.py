"""clp_min.per_example and ParamConditioned.fixed: every per-example path (layers, outputs,
groups, vmap) against hand-mixed per-example models and against the vmap path, values and
gradients, through the cache; decoding that mixes once against mixing at every step.
Models run in float64, so the paths agree to ~1e-12 (the issue asks for 1e-6)."""
import copy

import pytest
import torch
import torch.nn as nn

from clp_min.conditioning import ParamConditioned
from clp_min.decoding import sample
from clp_min.mechanisms.input_cond import InputConditioned
from clp_min.per_example import equal_runs
from clp_min.model import GPT, GPTConfig
from experts import perturbed_experts

V, BLOCK, C = 7, 12, 8
ATOL = 1e-10
SCOPES = ["full", "attn", "logit", ["*.mlp.c_fc.weight", "*ln_f.bias", "*.attn.c_proj.bias"]]
PATHS = ["layers", "outputs", "groups", "vmap"]


def _experts(m, scope, seed=0, tie=False, inner=None):
    torch.manual_seed(seed)
    base = inner if inner is not None else GPT(GPTConfig(
        vocab_size=V, block_size=BLOCK, n_layer=2, n_head=2, n_embd=C, tie_weights=tie)).double()
    return perturbed_experts(base, scope, m, seed)


def _idx(B, T, seed=0):
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


def _weightings(kind, m=3):
    """``[B, m]``: 3 groups of 2 contiguous (RLOO), the same shuffled, all distinct, or
    ``a b b b b a`` (two changes, so three runs of 2 if one counted only the changes)."""
    g = torch.Generator().manual_seed(7)
    distinct = torch.distributions.Dirichlet(torch.ones(m, dtype=torch.float64)).sample((6,))
    distinct = distinct / distinct.sum(1, keepdim=True)
    if kind == "distinct":
        return distinct
    if kind == "abbbba":
        return distinct[[0, 1, 1, 1, 1, 0]]
    W = distinct[:3].repeat_interleave(2, dim=0)  # (6, m)
    return W[torch.randperm(6, generator=g)] if kind == "shuffled" else W


def _cases():
    for scope in SCOPES:
        for path in PATHS:
            for kind in ("rloo", "shuffled", "distinct", "abbbba"):
                yield scope, path, kind


@pytest.mark.parametrize("scope, path, kind", list(_cases()))
def test_paths_equal_hand_mixed_models_through_the_cache(scope, path, kind):
    pc = ParamConditioned.from_experts(_experts(3, scope, seed=1), scope)
    pc.per_example = path
    W = _weightings(kind)
    idx = _idx(6, 7, seed=2)
    logits, cache = pc(W, idx[:, :4])
    more, cache2 = pc(W, idx[:, 4:], cache=cache)
    for b in range(6):
        own = pc.policy_at(W[b])  # the plain module with theta_c(w_b) loaded
        want, want_cache = own(idx[b:b + 1])
        torch.testing.assert_close(torch.cat([logits[b], more[b]]), want[0], rtol=0, atol=ATOL)
        for (k, v), (k_want, v_want) in zip(cache2, want_cache):
            torch.testing.assert_close(k[b], k_want[0], rtol=0, atol=ATOL)
            torch.testing.assert_close(v[b], v_want[0], rtol=0, atol=ATOL)


@pytest.mark.parametrize("scope", SCOPES + ["tied"])
@pytest.mark.parametrize("path", ["layers", "outputs", "groups"])
def test_gradients_equal_the_vmap_path(scope, path):
    tie = scope == "tied"
    scope = "logit" if tie else scope
    pc = ParamConditioned.from_experts(_experts(3, scope, seed=3, tie=tie), scope, mix_tied=tie)
    W = _weightings("shuffled")
    idx = _idx(6, 5, seed=4)
    proj = torch.randn(6, 5, V, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    grads = {}
    for p in (path, "vmap"):
        pc.zero_grad()
        pc.per_example = p
        (pc(W, idx)[0] * proj).sum().backward()
        grads[p] = {n: q.grad.clone() for n, q in pc.named_parameters()}
    for name, g in grads["vmap"].items():
        torch.testing.assert_close(grads[path][name], g, rtol=0, atol=ATOL, msg=name)


@pytest.mark.parametrize("path", PATHS)
def test_paths_with_input_conditioning(path):
    torch.manual_seed(1)
    gpt = GPT(GPTConfig(vocab_size=V, block_size=BLOCK, n_layer=2, n_head=2, n_embd=C, tie_weights=False))
    inner = InputConditioned(gpt.double(), 3, "prefix").double()
    with torch.no_grad():
        inner.embed.proj.weight.normal_()
    pc = ParamConditioned.from_experts(_experts(3, "full", inner=inner), "full")
    pc.per_example = path
    W = _weightings("shuffled")
    idx = _idx(6, 5, seed=6)
    logits, _ = pc(W, idx)
    for b in range(6):
        torch.testing.assert_close(logits[b], pc.policy_at(W[b])(W[b], idx[b:b + 1])[0][0], rtol=0, atol=ATOL)


def test_equal_runs():
    W = _weightings("distinct")
    torch.testing.assert_close(equal_runs(W[[0, 0, 1, 1, 0, 0]]), W[[0, 1, 0]], rtol=0, atol=0)
    assert equal_runs(W[[0, 1, 1, 1, 1, 0]]) is None
    assert equal_runs(W[[0, 0, 0, 1]]) is None
    torch.testing.assert_close(equal_runs(W[[2] * 4]), W[[2]], rtol=0, atol=0)
    # RLOO, n = 2, where neighbouring prompts drew the same weighting (a vertex twice): still blocks of 2
    torch.testing.assert_close(equal_runs(W[[0, 0, 0, 0, 1, 1, 1, 1, 1, 1]]), W[[0, 0, 1, 1, 1]], rtol=0, atol=0)
    assert equal_runs(W[[0, 0, 0, 1, 1, 1, 1, 2, 2]]) is None  # runs 3, 4, 2: no common block


def test_forced_paths_need_mixable_layers():
    pc = ParamConditioned.from_experts([Unmixable(), Unmixable()], "full")
    pc.per_example = "layers"
    with pytest.raises(ValueError, match="^per_example: 'layers' needs"):
        pc(_weightings("rloo", m=2), torch.randn(6, 4, dtype=torch.float64))
    pc.per_example = "group"
    with pytest.raises(ValueError, match="^per_example: must be"):
        pc(_weightings("rloo", m=2), torch.randn(6, 4, dtype=torch.float64))


def test_auto_path_choice():
    pc = ParamConditioned.from_base(_experts(1, "attn")[0], 3, "attn")
    rows_rloo = [torch.tensor([0, 1]), torch.tensor([2, 3])]
    assert pc.per_example_path(rows_rloo) == "layers"
    assert pc.per_example_path([torch.tensor([0]), torch.tensor([1, 2])]) == "outputs"
    assert pc.per_example_path([torch.tensor([0]), torch.tensor([1])]) == "outputs"  # all distinct
    other = ParamConditioned.from_base(Unmixable(), 2, "full")
    assert other._owners == {}
    assert other.per_example_path(rows_rloo) == "groups"
    assert other.per_example_path([torch.tensor([0]), torch.tensor([1])]) == "vmap"


class Unmixable(nn.Module):
    """A layer outside clp_min.per_example.MIXABLE, batched on dim 0, returning a dict."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.randn(4, dtype=torch.float64))

    def forward(self, x, extra=None):
        out = {"y": torch.tanh(x * self.scale)}
        return out if extra is None else {**out, "extra": extra}


@pytest.mark.parametrize("path", ["groups", "vmap"])
def test_any_module_with_dict_outputs(path):
    pc = ParamConditioned.from_experts([Unmixable(), Unmixable()], "full")
    pc.per_example = path
    W = _weightings("shuffled", m=2)
    x = torch.randn(6, 3, 4, dtype=torch.float64)
    out = pc(W, x) if path == "vmap" else pc(W, x, extra="tag")  # a non-tensor output leaf
    for b in range(6):
        scale = W[b, 0] * pc.thetas[0][0] + W[b, 1] * pc.thetas[0][1]  # by hand
        torch.testing.assert_close(out["y"][b], torch.tanh(x[b] * scale), rtol=0, atol=ATOL)
    assert path == "vmap" or out["extra"] == "tag"


def test_outputs_path_refuses_an_input_without_the_batch():
    pc = ParamConditioned.from_experts(_experts(2, "logit", seed=8), "logit")
    pc.per_example = "outputs"
    W = _weightings("distinct", m=2)
    with pytest.raises(ValueError, match="^w: 6 per-example weightings but an input"):
        pc(W, _idx(4, 3))


class EveryStep(nn.Module):
    """Calls the wrapper with ``w`` at every step: today's decoding, the reference for ``fixed``."""

    def __init__(self, pc):
        super().__init__()
        self.pc = pc

    def forward(self, w, idx, cache=None):
        return self.pc(w, idx, cache=cache)


@pytest.mark.parametrize("kind", ["batch", "rloo", "shuffled", "distinct", "one distinct"])
@pytest.mark.parametrize("scope", ["full", "attn"])
def test_sample_mixes_once_with_the_same_results(kind, scope):
    pc = ParamConditioned.from_experts(_experts(3, scope, seed=9), scope)
    w = {"batch": torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64),
         "one distinct": torch.tensor([[0.2, 0.3, 0.5]] * 6, dtype=torch.float64)}.get(kind)
    w = _weightings(kind) if w is None else w
    prompt = _idx(6, 2, seed=10)
    reference = copy.deepcopy(pc)
    reference.per_example = "vmap"  # the path sample used before
    want = sample(EveryStep(reference), w, prompt, 8, generator=torch.Generator().manual_seed(3))
    got = sample(pc, w, prompt, 8, generator=torch.Generator().manual_seed(3))
    assert torch.equal(got.tokens, want.tokens)
    torch.testing.assert_close(got.logprobs, want.logprobs, rtol=0, atol=1e-12)
    assert got.model_calls == want.model_calls == 8
    assert not any(k in vars(layer) for layer in pc.base.modules() for k in ("forward", "weight", "bias")), \
        "fixed() left a patched forward or a mixed tensor on the module"


@pytest.mark.parametrize("kind", ["one distinct", "rloo", "abbbba"])
def test_fixed_refuses_a_batch_of_another_size(kind):
    pc = ParamConditioned.from_experts(_experts(3, "attn", seed=12), "attn")
    W = _weightings("rloo") if kind != "abbbba" else _weightings(kind)
    W = W[[0] * 6] if kind == "one distinct" else W
    with pytest.raises(ValueError, match="^w: 6 per-example weightings but an input"):
        sample(pc, W, _idx(4, 2), 3)


def test_fixed_mixes_once():
    pc = ParamConditioned.from_experts(_experts(2, "full", seed=11), "full")
    calls = []
    original = pc.mixed_parameters
    pc.mixed_parameters = lambda w: calls.append(tuple(w.shape)) or original(w)
    sample(pc, torch.tensor([0.5, 0.5], dtype=torch.float64), _idx(4, 2), 6)
    assert calls == [(2,)]
    calls.clear()
    sample(pc, _weightings("rloo", m=2)[:4], _idx(4, 2), 6)
    assert calls == [(2, 2)]  # the two distinct weightings, mixed once together


def test_fused_mixing_equals_mix_parameters_with_gradients():
    from clp_min.mixing import MixParameters, mix_parameters
    g = torch.Generator().manual_seed(13)
    thetas = [torch.randn(3, 4, 2, generator=g, dtype=torch.float64, requires_grad=True),
              torch.randn(3, 5, generator=g, dtype=torch.float64, requires_grad=True)]
    w = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64, requires_grad=True)
    for got, theta in zip(MixParameters.apply(w, *thetas), thetas):
        torch.testing.assert_close(got, mix_parameters(theta, w), rtol=0, atol=1e-14)
    assert torch.autograd.gradcheck(lambda w, *t: MixParameters.apply(w, *t), (w, *thetas))


def test_fixed_runs_rloo_blocks_in_one_product_when_neighbours_share_a_weighting(monkeypatch):
    """``fixed`` (decoding) on RLOO's layout where two neighbouring prompts drew the same weighting (a vertex
    twice: runs of 4 and 2 with n = 2) mixes per block, as training's forward does, and never falls back to one
    call per group; the logits equal each row's own mixed model (catches a block size off by the merged run)."""
    import clp_min.conditioning as cond

    pc = ParamConditioned.from_experts(_experts(3, "attn", seed=1), "attn")
    W = _weightings("distinct")[[0, 0, 0, 0, 1, 1]]  # prompts 1 and 2 both drew w_0; n = 2
    idx = _idx(6, 5, seed=3)

    def refuse(*args, **kwargs):
        raise AssertionError("one call per group: the slow path")

    monkeypatch.setattr(cond, "run_grouped", refuse)
    with pc.fixed(W) as model:
        logits, cache = model(idx[:, :3])
        more, _ = model(idx[:, 3:], cache=cache)
    for b in range(6):
        want, _ = pc.policy_at(W[b])(idx[b:b + 1])
        torch.testing.assert_close(torch.cat([logits[b], more[b]]), want[0], rtol=0, atol=ATOL)
