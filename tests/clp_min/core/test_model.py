"""clp_min.model: the small GPT, its KV cache and its position handling."""
import copy

import pytest
import torch
from hypothesis import given, strategies as st

from clp_min.model import GPT, GPTConfig

V, BLOCK = 7, 12


def _gpt(seed=0, tie=True, **kw):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=V, block_size=BLOCK, n_layer=2, n_head=2, n_embd=8, tie_weights=tie, **kw)).double()


@given(st.integers(0, 2 ** 16), st.integers(1, 9), st.lists(st.integers(1, 3), min_size=1, max_size=4),
       st.booleans())
def test_cached_pieces_equal_full_pass(seed, T, pieces, tie):
    model = _gpt(seed % 7, tie)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, V, (3, T), generator=g)
    full, _ = model(idx)
    out, cache, start = [], None, 0
    for n in pieces + [T]:  # the last piece takes whatever is left
        if start >= T:
            break
        logits, cache = model(idx[:, start:start + n], cache=cache)
        out.append(logits)
        start += n
    torch.testing.assert_close(torch.cat(out, 1), full, rtol=0, atol=1e-12)
    assert cache[0][0].shape == (3, 2, T, 4)


def test_prefix_then_cache_equals_prefix_full_pass():
    model = _gpt(1)
    idx = torch.randint(0, V, (2, 6), generator=torch.Generator().manual_seed(0))
    prefix = torch.randn(2, 3, 8, dtype=torch.float64)
    full, _ = model(idx, prefix=prefix)
    assert full.shape == (2, 6, V)  # logits only for tokens
    a, cache = model(idx[:, :2], prefix=prefix)
    assert cache[0][0].size(2) == 5  # prefix rows are cached: positions 0..2 prefix, 3..4 tokens
    b, _ = model(idx[:, 2:], cache=cache)
    torch.testing.assert_close(torch.cat([a, b], 1), full, rtol=0, atol=1e-12)


def test_causal_future_tokens_do_not_change_past_logits():
    model = _gpt(2)
    idx = torch.randint(0, V, (1, 8), generator=torch.Generator().manual_seed(1))
    changed = idx.clone()
    changed[0, 5] = (idx[0, 5] + 1) % V
    a, _ = model(idx)
    b, _ = model(changed)
    torch.testing.assert_close(a[:, :5], b[:, :5], rtol=0, atol=0)
    assert not torch.allclose(a[:, 5:], b[:, 5:])


def test_positions_matter_and_are_learned():
    # the same token at two positions gets different logits; zeroing wpe removes the difference
    model = _gpt(3)
    idx = torch.full((1, 2), 4)
    logits, _ = model(idx[:, :1])
    shifted, _ = model(idx[:, 1:], cache=model(idx[:, :1])[1])
    assert not torch.allclose(logits, shifted)
    flat = copy.deepcopy(model)
    with torch.no_grad():
        flat.transformer.wpe.weight.zero_()
    both, _ = flat(idx)  # without positions, attending to [4] or to [4, 4] is the same
    torch.testing.assert_close(both[:, 0], both[:, 1], rtol=0, atol=1e-12)


def test_tied_and_untied_unembedding():
    tied, untied = _gpt(0, True), _gpt(0, False)
    assert tied.lm_head.weight is tied.transformer.wte.weight
    assert untied.lm_head.weight is not untied.transformer.wte.weight
    assert len(list(tied.parameters())) == len(list(untied.parameters())) - 1


def test_refusals():
    model = _gpt(0)
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, BLOCK + 1, dtype=torch.long))
    _, cache = model(torch.zeros(1, BLOCK - 1, dtype=torch.long))
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 2, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="n_head"):
        GPTConfig(vocab_size=5, block_size=4, n_head=3, n_embd=8)
    with pytest.raises(ValueError, match="vocab_size"):
        GPTConfig(vocab_size=0, block_size=4)


def test_bad_token_ids_dtypes_and_vocabularies_are_refused_naming_the_argument():
    """Before: IndexError / RuntimeError from inside torch (issue 11). Checked once where ids enter GPT.forward,
    also under vmap (per-example weightings), and in the token-level mixers."""
    from clp_min.conditioning import ParamConditioned, Unconditioned
    from clp_min.decoding import logit_mix_sample, realign_sample, sample, sequence_logprobs

    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=5, block_size=8, n_layer=1, n_head=2, n_embd=8))
    policy = ParamConditioned.from_base(gpt, 2, "attn")
    W = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    for bad, msg in ((torch.tensor([[1, 5], [0, 1]]), r"\[0, 5\), got min 0, max 5"),
                     (torch.tensor([[1, -1], [0, 1]]), "got min -1"),
                     (torch.tensor([[1.0, 2.0], [0.0, 1.0]]), "integer tensor, got dtype torch.float32"),
                     ([[1, 2]], "expected a torch.Tensor")):
        with pytest.raises(ValueError, match=f"^idx: .*{msg}"):
            gpt(bad)
        if isinstance(bad, torch.Tensor):
            with pytest.raises(ValueError, match=f"^idx: .*{msg}"):
                policy(W, bad)  # per-example w: the check runs under vmap
    with pytest.raises(ValueError, match="^idx: "):
        sample(Unconditioned(gpt), torch.ones(1), torch.tensor([[1.0, 2.0]]), 2)
    with pytest.raises(ValueError, match="^idx: "):
        sequence_logprobs(Unconditioned(gpt), torch.ones(1), torch.tensor([[1, 2]]), torch.tensor([[7, 1]]))
    other = GPT(GPTConfig(vocab_size=6, block_size=8, n_layer=1, n_head=2, n_embd=8))
    with pytest.raises(ValueError, match=r"^models: vocabularies differ \(5, 6\)"):
        logit_mix_sample([gpt, other], torch.tensor([0.5, 0.5]), torch.tensor([[1, 2]]), 2)
    with pytest.raises(ValueError, match="^tuned: vocabularies differ"):
        realign_sample(gpt, other, 0.5, torch.tensor([[1, 2]]), 2)


def test_sizes_are_checked_before_allocation():
    with pytest.raises(ValueError, match="^vocab_size: 1000000000 exceeds the limit"):
        GPTConfig(vocab_size=10 ** 9, block_size=8)
    with pytest.raises(ValueError, match="^block_size: 1000006 positions exceed the limit"):
        GPTConfig(vocab_size=10, block_size=10 ** 6 + 6)
    with pytest.raises(ValueError, match="^n_embd: about .* parameters"):
        GPTConfig(vocab_size=10, block_size=8, n_layer=64, n_embd=4096, n_head=1)
    from clp_min.task import TaskConfig
    with pytest.raises(ValueError, match="^prompt_len: 1000000 exceeds the limit of 512"):
        TaskConfig(prompt_len=10 ** 6)
