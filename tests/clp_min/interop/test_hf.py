"""Hugging Face models as clients of clp_min: the HFCausalLM adapter, scopes on GPT-2 / Llama / peft LoRA,
tied embeddings, LoRA mixing, per-example weightings, checkpoints and the oracle kit.

Tiny random configs (no hub access), float64, so identities hold to ~1e-10. Expected values come
from an independent route: a hand-mixed model built from the experts' parameters (merged LoRA
experts for LoRA), logit mixing of theory.mixing, brute-force enumeration of every response.
"""
import copy
import inspect

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from clp_min import task as tk  # noqa: E402
from clp_min.checkpoint import build_from_spec, load_checkpoint, module_spec, save_checkpoint  # noqa: E402
from clp_min.conditioning import ParamConditioned, Unconditioned
from clp_min.scope import describe_scope, resolve_scope  # noqa: E402
from clp_min.decoding import logit_mix_sample, realign_sample, sample, sequence_logprobs  # noqa: E402
from clp_min.interop.hf import HFCausalLM  # noqa: E402
from clp_min.oracle import exact_regret, logit_scope_check, sampler_check  # noqa: E402
from experts import perturbed_experts  # noqa: E402

transformers.logging.set_verbosity_error()
V = 5
ATOL = 1e-10


def _gpt2(seed=0, tie=True, attn="sdpa", dropout=0.0):
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(vocab_size=V, n_positions=16, n_embd=16, n_layer=2, n_head=2, bos_token_id=0,
                                  eos_token_id=0, tie_word_embeddings=tie, resid_pdrop=dropout,
                                  embd_pdrop=dropout, attn_pdrop=dropout, attn_implementation=attn)
    return transformers.GPT2LMHeadModel(cfg).double().eval()


def _llama(seed=0, attn="sdpa", dropout=0.0):
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(vocab_size=V, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                   num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=16,
                                   bos_token_id=0, eos_token_id=0, pad_token_id=0, attention_dropout=dropout,
                                   attn_implementation=attn)
    return transformers.LlamaForCausalLM(cfg).double().eval()


def _lora(model, targets, seed=0, dropout=0.0):
    cfg = peft.LoraConfig(r=2, lora_alpha=4, target_modules=targets, lora_dropout=dropout,
                          fan_in_fan_out=isinstance(model, transformers.GPT2LMHeadModel))
    pm = peft.get_peft_model(copy.deepcopy(model), cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # peft starts lora_B at 0; random factors make the adapter matter
        for name, p in pm.named_parameters():
            if "lora_" in name:
                p.copy_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return pm.eval()


FAMILIES = {  # name: (adapter around a tiny model, the scope the tests condition)
    "gpt2": (lambda **kw: HFCausalLM(_gpt2(**kw)), "attn"),
    "llama": (lambda **kw: HFCausalLM(_llama(**kw)), "attn"),
    "lora": (lambda **kw: HFCausalLM(_lora(_llama(**kw), ["q_proj", "v_proj"], dropout=kw.get("dropout", 0.0))),
             "lora"),
}


def _experts(family, m=2, seed=0, **kw):
    """m adapters equal except for the family's scoped parameters, perturbed per expert."""
    build, scope = FAMILIES[family]
    return perturbed_experts(build(seed=seed, **kw), scope, m, seed)


def _hand_mixed(experts, w):
    """The soup by hand: every parameter averaged with weights w; peft experts are merged first,
    so LoRA experts mix as weight changes (sum_i w_i B_i A_i), never factor by factor."""
    models = [copy.deepcopy(e.model) for e in experts]
    if hasattr(models[0], "merge_and_unload"):
        models = [mdl.merge_and_unload() for mdl in models]
    soup = copy.deepcopy(models[0])
    with torch.no_grad():
        for name, p in soup.named_parameters():
            p.copy_(sum(float(w[i]) * mdl.get_parameter(name) for i, mdl in enumerate(models)))
    return soup


def _idx(B=3, T=5, seed=0):
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


# ---- item 1: the adapter ------------------------------------------------------------------------

@pytest.mark.parametrize("family", list(FAMILIES))
def test_cache_in_pieces_equals_one_full_pass(family):
    lm = FAMILIES[family][0]()
    idx = _idx(T=7)
    full, _ = lm(idx)
    logits_a, cache = lm(idx[:, :4])
    assert all(isinstance(t, torch.Tensor) and t.size(0) == 3 and t.size(2) == 4 for kv in cache for t in kv)
    logits_b, cache_b = lm(idx[:, 4:6], cache=cache)
    logits_c, _ = lm(idx[:, 6:], cache=cache_b)
    assert cache[0][0].size(2) == 4  # never mutated
    torch.testing.assert_close(torch.cat([logits_a, logits_b, logits_c], 1), full, rtol=0, atol=ATOL)
    # and the same through the cached sampler (the oracle kit's check)
    sampler_check(Unconditioned(lm), torch.tensor([1.0]), idx[:, :2], 5, torch.Generator().manual_seed(0),
                  tol=1e-10).assert_pass()


def test_sliding_window_model_runs_inside_its_window_and_is_refused_beyond():
    def mistral(window):
        torch.manual_seed(0)
        cfg = transformers.MistralConfig(vocab_size=V, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=1, head_dim=8,
                                         max_position_embeddings=16, sliding_window=window, bos_token_id=0,
                                         eos_token_id=0, pad_token_id=0)
        return HFCausalLM(transformers.MistralForCausalLM(cfg).double().eval())

    lm, idx = mistral(8), _idx(T=7)
    logits_a, cache = lm(idx[:, :4])
    logits_b, _ = lm(idx[:, 4:], cache=cache)
    torch.testing.assert_close(torch.cat([logits_a, logits_b], 1), lm(idx)[0], rtol=0, atol=ATOL)
    if hasattr(transformers.cache_utils, "DynamicSlidingWindowLayer"):  # >= 4.56: the cache drops old keys
        with pytest.raises(ValueError, match="^model: 7 positions exceed the sliding window of 4"):
            mistral(4)(idx)


def test_attention_mask_of_the_wrong_length_is_refused():
    lm = HFCausalLM(_gpt2())
    _, cache = lm(_idx(T=3))
    with pytest.raises(ValueError, match=r"^attention_mask: covers 2 positions, expected 3 cached \+ 1 new = 4"):
        lm(_idx(T=1), cache=cache, attention_mask=torch.ones(3, 2))


def test_a_model_that_drops_its_cache_is_refused_naming_eval_mode():
    """Gradient checkpointing in training mode makes transformers return no cache (the TRL end-to-end
    evaluation met it on transformers 5.17): a one-line error naming the fix, not an AttributeError;
    in eval mode the same model decodes."""
    model = _gpt2()
    model.gradient_checkpointing_enable()
    model.train()
    with pytest.raises(ValueError, match=r"^model: returned no key/value cache .* call model.eval\(\) first"):
        HFCausalLM(model)(_idx(T=3))
    logits, cache = HFCausalLM(model.eval())(_idx(T=3))
    assert len(cache) == 2 and logits.shape[-1] == V


class _Cache5(torch.nn.Module):  # signatures of transformers 5.x, 4.x, and a bare **kwargs forward
    def forward(self, input_ids=None, cache=None, use_cache=None, **kwargs): ...


class _Cache4(torch.nn.Module):
    def forward(self, input_ids=None, past_key_values=None, use_cache=None, **kwargs): ...


class _KwargsOnly(torch.nn.Module):
    def forward(self, input_ids=None, **kwargs): ...


def test_cache_keyword_is_read_from_the_signature_and_never_swallowed():
    assert HFCausalLM(_gpt2()).cache_keyword in inspect.signature(transformers.GPT2LMHeadModel.forward).parameters
    assert HFCausalLM(_lora(_gpt2(), ["c_attn"])).cache_keyword == HFCausalLM(_gpt2()).cache_keyword
    assert HFCausalLM(_Cache4()).cache_keyword == "past_key_values"
    assert HFCausalLM(_Cache5()).cache_keyword == "cache"
    with pytest.raises(ValueError, match="^model: .*names neither"):
        HFCausalLM(_KwargsOnly())  # a cache passed into **kwargs could vanish silently


def test_decoding_refuses_a_bare_model_output_naming_the_adapter():
    raw = _gpt2()
    pc = ParamConditioned.from_base(raw, 2, "attn")
    w, prompt = torch.tensor([0.5, 0.5]), _idx(T=2)
    for run in (lambda: sample(pc, w, prompt, 2), lambda: sequence_logprobs(pc, w, prompt, prompt),
                lambda: logit_mix_sample([raw, raw], w, prompt, 2), lambda: realign_sample(raw, raw, 0.5, prompt, 2)):
        with pytest.raises(ValueError, match=r"^model: returned a \w+, not \(logits, cache\); .*HFCausalLM"):
            run()


class _NoCache(torch.nn.Module):
    """The silent failure HFCausalLM prevents: the cache keyword lost, so every step sees one token."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def forward(self, idx, cache=None):
        return self.lm(idx)[0], None


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("per_example", [False, True])
def test_sampler_check_passes_through_the_adapter_and_catches_a_lost_cache(family, per_example):
    pc = ParamConditioned.from_experts(_experts(family), FAMILIES[family][1])
    W = torch.tensor([[1.0, 0.0], [0.3, 0.7], [0.5, 0.5]], dtype=torch.float64)
    w = W if per_example else W[1]
    check = sampler_check(pc, w, _idx(T=2), 5, torch.Generator().manual_seed(1), tol=1e-10)
    check.assert_pass()
    broken = sampler_check(Unconditioned(_NoCache(FAMILIES[family][0]())), W[1], _idx(T=2), 5,
                           torch.Generator().manual_seed(1))
    assert not broken.passed and broken.value > 1e-3 and str(broken).startswith("FAIL")


# ---- item 2: scopes, frozen parameters, tied embeddings ------------------------------------------

def test_attn_scope_on_each_family_selects_exactly_the_attention_projections():
    gpt2 = resolve_scope(HFCausalLM(_gpt2()), "attn")
    assert sorted(gpt2) == sorted(f"model.transformer.h.{i}.attn.{lin}.{kind}"
                                  for i in range(2) for lin in ("c_attn", "c_proj") for kind in ("weight", "bias"))
    llama = resolve_scope(HFCausalLM(_llama()), "attn")
    assert sorted(llama) == sorted(f"model.model.layers.{i}.self_attn.{p}_proj.weight"
                                   for i in range(2) for p in "qkvo")
    # peft with frozen="skip": the frozen base weights stay out, only the LoRA factors inside attention
    lora = resolve_scope(HFCausalLM(_lora(_gpt2(), ["c_attn", "mlp.c_fc"])), "attn", frozen="skip")
    assert sorted(lora) == sorted(f"model.base_model.model.transformer.h.{i}.attn.c_attn.lora_{f}.default.weight"
                                  for i in range(2) for f in "AB")
    assert resolve_scope(HFCausalLM(_lora(_gpt2(), ["c_attn", "mlp.c_fc"])), "lora").keys() > lora.keys()


def test_scope_matching_nothing_names_what_it_saw():
    mlp_only = torch.nn.Sequential(torch.nn.Linear(3, 3))
    with pytest.raises(ValueError, match=r"^scope: 'attn' matches no parameter of Sequential; .*named like: 0\.weight"):
        ParamConditioned.from_base(mlp_only, 2, "attn")
    frozen = HFCausalLM(_lora(_llama(), ["q_proj"]))
    with pytest.raises(ValueError, match=r"^scope: .*except \d+ frozen ones"):
        ParamConditioned.from_base(frozen, 2, ["*.base_layer.*"], frozen="skip")
    text = describe_scope(HFCausalLM(_llama()), "attn")
    assert "model.model.layers.0.self_attn.q_proj.weight (16, 16)" in text and text.endswith("scope 'attn'")


@pytest.mark.parametrize("frozen", ["skip", "mix", "train"])
def test_frozen_parameters_stay_frozen_unless_asked(frozen):
    lm = HFCausalLM(_lora(_gpt2(), ["c_attn"]))
    pc = ParamConditioned.from_base(lm, 2, "attn", frozen=frozen)
    base_layer = [n for n in pc.names if "base_layer" in n]
    assert bool(base_layer) == (frozen != "skip")
    for name, theta in zip(pc.names, pc.thetas):
        assert theta.requires_grad == ("lora_" in name or frozen == "train")
    trainable_before = {n for n, p in lm.named_parameters() if p.requires_grad}
    assert {n for n, p in pc.base.named_parameters() if p.requires_grad} <= trainable_before
    logits, _ = pc(torch.tensor([0.5, 0.5]), _idx())
    logits.sum().backward()
    assert all(p.grad is None for p in pc.base.parameters() if not p.requires_grad)


def test_logit_scope_on_tied_gpt2_is_refused_untie_is_logit_mixing_and_survives_save_pretrained(tmp_path):
    lm = HFCausalLM(_gpt2(tie=True))
    with pytest.raises(ValueError, match="^scope: 'logit' selects model.lm_head.weight, which is tied to "
                                         "model.transformer.wte.weight"):
        ParamConditioned.from_base(lm, 2, "logit")
    pc = ParamConditioned.from_base(lm, 2, "logit", untie=True)
    with torch.no_grad():
        pc.thetas[0][1].add_(torch.randn_like(pc.thetas[0][1]))
    experts = [pc.policy_at(w) for w in torch.eye(2, dtype=torch.float64)]  # plain untied GPT-2s
    W = np.array([[0.3, 0.7], [0.5, 0.5], [0.9, 0.1]])
    logit_scope_check(experts, W, _idx(), tol=1e-10).assert_pass()
    tied = [HFCausalLM(_gpt2(seed=s, tie=True)) for s in (0, 0)]
    with torch.no_grad():
        tied[1].model.lm_head.weight.add_(torch.randn_like(tied[1].model.lm_head.weight))  # moves wte too
    mixed_whole = logit_scope_check(tied, W, _idx(), mix_tied=True)
    assert not mixed_whole.passed and mixed_whole.value > 1e-2  # the input embedding was mixed as well
    # an exported untied policy reloads untied through transformers' own save/load
    plain = pc.policy_at([0.3, 0.7])
    assert plain.model.config.tie_word_embeddings is False  # else transformers 4.x re-ties on reload
    plain.model.save_pretrained(tmp_path)
    again = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).double()  # 4.x reloads in float32
    assert again.lm_head.weight is not again.transformer.wte.weight
    torch.testing.assert_close(again(_idx()).logits, plain(_idx())[0], rtol=0, atol=1e-5)


# ---- item 3: LoRA mixing ------------------------------------------------------------------------

@pytest.mark.parametrize("model", ["gpt2", "llama"])
def test_lora_delta_mixing_is_the_soup_of_the_merged_experts_and_factors_is_not(model):
    base = _gpt2() if model == "gpt2" else _llama()
    targets = ["c_attn", "c_proj"] if model == "gpt2" else ["q_proj", "v_proj", "down_proj"]
    experts = [HFCausalLM(_lora(base, targets, seed=s)) for s in (1, 2)]
    w, idx = torch.tensor([0.3, 0.7], dtype=torch.float64), _idx()
    expected = _hand_mixed(experts, w)(idx).logits
    delta = ParamConditioned.from_experts(experts, "lora")
    assert delta.lora_mix == "delta"
    torch.testing.assert_close(delta(w, idx)[0], expected, rtol=0, atol=ATOL)
    torch.testing.assert_close(delta.policy_at(w)(idx)[0], expected, rtol=0, atol=ATOL)
    factors = ParamConditioned.from_experts(experts, "lora", lora_mix="factors")
    assert (factors(w, idx)[0] - expected).abs().max() > 1e-3
    for vertex in torch.eye(2, dtype=torch.float64):  # both agree at the vertices
        torch.testing.assert_close(factors(vertex, idx)[0], delta(vertex, idx)[0], rtol=0, atol=ATOL)


def test_lora_on_lm_head_with_delta_mixing_is_logit_mixing():
    base = _llama()
    experts = [HFCausalLM(_lora(base, ["lm_head"], seed=s)) for s in (1, 2)]
    W = np.array([[0.3, 0.7], [0.5, 0.5]])
    logit_scope_check(experts, W, _idx(), tol=1e-10).assert_pass()
    assert not logit_scope_check(experts, W, _idx(), lora_mix="factors").passed


def test_lone_lora_factor_is_refused_under_delta():
    lm = HFCausalLM(_lora(_llama(), ["q_proj"]))
    with pytest.raises(ValueError, match="^scope: selects LoRA factor .*lora_A.* but not .*lora_B"):
        ParamConditioned.from_base(lm, 2, ["*.lora_A.*"])
    ParamConditioned.from_base(lm, 2, ["*.lora_A.*"], lora_mix="factors")


# ---- item 4: per-example weightings -------------------------------------------------------------

W3 = torch.tensor([[1.0, 0.0], [0.3, 0.7], [0.55, 0.45]], dtype=torch.float64)


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_per_example_weightings_equal_per_example_hand_mixed_models(family, attn):
    experts = _experts(family, attn=attn)
    pc = ParamConditioned.from_experts(experts, FAMILIES[family][1])
    idx = _idx(T=5)
    # masked positions inside the rows (a fully masked query row, as in left padding, gives NaN in
    # transformers' own Llama eager path, so every row keeps its first position)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 0, 1, 1, 1], [1, 1, 0, 0, 1]])
    logits, cache = pc(W3, idx, attention_mask=mask)
    nxt = _idx(T=1, seed=1)
    mask2 = torch.cat([mask, torch.ones(3, 1, dtype=mask.dtype)], 1)
    logits2, _ = pc(W3, nxt, cache=cache, attention_mask=mask2)  # continue through the cache
    for b in range(3):
        hand = _hand_mixed(experts, W3[b])
        full = hand(torch.cat([idx, nxt], 1)[b:b + 1], attention_mask=mask2[b:b + 1]).logits[0]  # (T+1, V)
        keep = mask[b].bool()
        torch.testing.assert_close(logits[b][keep], full[:5][keep], rtol=0, atol=1e-6)
        torch.testing.assert_close(logits2[b, 0], full[5], rtol=0, atol=1e-6)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_per_example_weightings_in_train_mode(family):
    # without dropout, train mode gives the hand-mixed models' outputs
    experts = _experts(family)
    pc = ParamConditioned.from_experts(experts, FAMILIES[family][1]).train()
    idx = _idx()
    logits, _ = pc(W3, idx)
    for b in range(3):
        hand = _hand_mixed(experts, W3[b]).train()
        torch.testing.assert_close(logits[b], hand(idx[b:b + 1]).logits[0], rtol=0, atol=1e-6)
    # with dropout, each example draws its own mask: equal inputs and weightings, different outputs
    # (eager attention: sdpa's own dropout kernel is looped per example by vmap and would differ anyway)
    noisy = ParamConditioned.from_experts(_experts(family, dropout=0.5, attn="eager"), FAMILIES[family][1]).train()
    same = idx[:1].expand(3, -1)
    out, _ = noisy(W3[1].expand(3, 2), same)
    assert (out[0] - out[1]).abs().max() > 1e-3 and (out[1] - out[2]).abs().max() > 1e-3
    assert (noisy.eval()(W3[1].expand(3, 2), same)[0] - out).abs().max() > 1e-3


# ---- item 5: checkpoints ------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["gpt2_attn", "llama_logit_untied", "lora", "adapter"])
def test_checkpoint_round_trip(tmp_path, kind):
    if kind == "adapter":
        model = HFCausalLM(_gpt2())
    elif kind == "llama_logit_untied":
        model = ParamConditioned.from_experts([HFCausalLM(_llama(seed=s)) for s in (0, 0)], "logit")
    else:
        family = "gpt2" if kind == "gpt2_attn" else "lora"
        model = ParamConditioned.from_experts(_experts(family), FAMILIES[family][1])
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, model, {"note": kind})
    loaded, config = load_checkpoint(path)
    assert config == {"note": kind} and type(loaded) is type(model)
    assert {p.dtype for p in loaded.parameters()} == {torch.float64}  # loading never casts
    # (transformers recomputes non-persistent buffers such as rotary frequencies on rebuild,
    # 4.50 in another precision, hence 1e-9 rather than 0)
    idx = _idx()
    if kind == "adapter":
        torch.testing.assert_close(loaded(idx)[0], model(idx)[0], rtol=0, atol=1e-9)
        return
    assert loaded.names == model.names
    for w in (torch.tensor([0.3, 0.7], dtype=torch.float64), W3):
        torch.testing.assert_close(loaded(w, idx)[0], model(w, idx)[0], rtol=0, atol=1e-9)


def test_checkpoint_rebuild_is_allowlisted():
    # the spec a checkpoint stores, edited as a tampered (re-signed) file could be
    pc = ParamConditioned.from_experts(_experts("gpt2"), "attn")

    def foreign_class(spec):
        spec["module"]["model_class"] = "MyRemoteModel"

    def foreign_type(spec):
        spec["module"]["config"]["model_type"] = "not_a_model"

    def other_names(spec):
        spec["names"] = spec["names"][::-1]

    for edit, match in ((foreign_class, "model class 'MyRemoteModel'"), (foreign_type, "model_type 'not_a_model'"),
                        (other_names, "recorded")):
        spec = copy.deepcopy(module_spec(pc))
        edit(spec)
        with pytest.raises(ValueError, match=f"^checkpoint: .*{match}"):
            build_from_spec(spec)
    assert build_from_spec(module_spec(pc)).names == pc.names


# ---- item 6: the exact oracle on an HF model ----------------------------------------------------

def test_exact_regret_of_an_hf_policy_equals_brute_force_enumeration():
    task = tk.TaskConfig(vocab=V, prompt_len=2, response_len=2)
    prompts = torch.tensor([[1, 2], [3, 3]])
    pi_ref = HFCausalLM(_gpt2(seed=0))
    policy = ParamConditioned.from_experts(_experts("gpt2", seed=0), "attn")
    W, beta = np.array([[0.2, 0.8], [0.6, 0.4]]), 0.5
    check = exact_regret(policy, pi_ref, task, prompts, W, beta)
    # brute force: list every response, keep those that end (or fill up) properly, P1 on the leaves
    leaves = tk.all_responses(task)  # (V^T, T)
    canonical = (leaves * ~tk.decision_mask(leaves)).sum(1) == 0  # EOS-padded after the first EOS
    y = leaves[canonical]
    mask = tk.decision_mask(y)

    def seq_logp(pol, x, w):  # log pi(y | x) of every listed response, one full pass
        return (sequence_logprobs(pol, torch.as_tensor(w), x.expand(y.size(0), -1), y).detach() * mask).sum(1).double()

    for k, w in enumerate(W):
        J, J_opt, J_ref = [], [], []
        for x in prompts:
            lp, lr = seq_logp(policy, x, w), seq_logp(Unconditioned(pi_ref), x, w)
            r = tk.rewards(task, x.expand(y.size(0), -1), y) @ torch.as_tensor(w)  # w . r(x, y)
            assert abs(float(lp.exp().sum()) - 1) < 1e-9 and abs(float(lr.exp().sum()) - 1) < 1e-9
            J.append(float((lp.exp() * (r - beta * (lp - lr))).sum()))
            J_opt.append(beta * float(torch.logsumexp(lr + r / beta, 0)))  # P1: beta log Z_w(x)
            J_ref.append(float((lr.exp() * r).sum()))
        J, J_opt, J_ref = np.mean(J), np.mean(J_opt), np.mean(J_ref)
        np.testing.assert_allclose(check.numbers["objective"][k], J, rtol=0, atol=1e-9)
        np.testing.assert_allclose(check.numbers["optimal_objective"][k], J_opt, rtol=0, atol=1e-9)
        np.testing.assert_allclose(check.numbers["normalised_regret"][k], (J_opt - J) / (J_opt - J_ref),
                                   rtol=0, atol=1e-9)
    assert check.passed == (check.value <= 0.05)
    reference = exact_regret(Unconditioned(pi_ref), pi_ref, task, prompts, W, beta)
    np.testing.assert_allclose(reference.numbers["normalised_regret"], 1.0, rtol=0, atol=1e-9)
    np.testing.assert_allclose(reference.numbers["kl"], 0.0, rtol=0, atol=1e-12)
    assert not reference.passed
