"""The synthetic task (clp_min.task) and the pretraining of pi_ref (clp_min.pretrain).

Rewards are checked against plain-Python re-implementations written from the
docstring definitions (sets, brute-force subsequences), plus hand-sized cases.
"""
import itertools

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from clp_min import task as tk
from clp_min.model import GPT
from clp_min.pretrain import model_config, pretrain, response_nll


def _content(y):
    out = []
    for a in y:
        if a == tk.EOS:
            break
        out.append(a)
    return out


def _is_subsequence(s, x):
    it = iter(x)
    return all(a in it for a in s)


def _lcs_brute(s, x):
    """Longest subsequence of s that is also a subsequence of x, by trying every subset of s."""
    for k in range(len(s), -1, -1):
        if any(_is_subsequence(sub, x) for sub in itertools.combinations(s, k)):
            return k
    return 0


def test_rewards_hand_case():
    cfg = tk.TaskConfig(vocab=4, prompt_len=6, response_len=4, rewards=("coverage", "brevity", "order"))
    x = torch.tensor([[1, 2, 3, 1, 2, 2], [1, 1, 1, 1, 1, 1], [3, 2, 1, 1, 2, 3]])
    y = torch.tensor([[2, 1, 0, 3], [0, 1, 1, 1], [1, 1, 2, 2]])
    r = tk.rewards(cfg, x, y)
    # row 0: y' = [2, 1] covers {1, 2} of {1, 2, 3}; n = 2; LCS([2, 1], x) = 2 (x has 2 then 1)
    # row 1: y' = [] (EOS first): coverage 0, brevity 1, order 0
    # row 2: y' = [1, 1, 2, 2]: covers {1, 2} of {1, 2, 3}; n = 4; LCS = 3 (1, 1, 2 or 1, 2, 3... x = 3 2 1 1 2 3)
    expected = np.array([[2 / 3, 1 - 2 / 4, 2 / 4], [0, 1, 0], [2 / 3, 0, 3 / 4]])
    np.testing.assert_allclose(r.numpy(), expected, atol=1e-12)


@given(st.integers(2, 6), st.integers(1, 6), st.integers(1, 5), st.integers(0, 2 ** 31 - 1))
def test_rewards_match_plain_python(V, L, T, seed):
    cfg = tk.TaskConfig(vocab=V, prompt_len=L, response_len=T, rewards=("coverage", "brevity", "order"))
    g = torch.Generator().manual_seed(seed)
    x = tk.sample_prompts(cfg, 8, g)
    y = torch.randint(0, V, (8, T), generator=g)
    r = tk.rewards(cfg, x, y).numpy()
    for b in range(8):
        xs, ys = x[b].tolist(), _content(y[b].tolist())
        cov = len(set(ys) & set(xs)) / len(set(xs))
        assert r[b, 0] == pytest.approx(cov, abs=1e-12)
        assert r[b, 1] == pytest.approx(1 - len(ys) / T, abs=1e-12)
        assert r[b, 2] == pytest.approx(_lcs_brute(ys, xs) / T, abs=1e-12)


@given(st.integers(2, 8), st.integers(1, 7), st.integers(1, 6), st.integers(0, 2 ** 31 - 1))
def test_reference_responses_are_ordered_subsets_without_noise(V, L, T, seed):
    cfg = tk.TaskConfig(vocab=V, prompt_len=L, response_len=T, p_keep=0.6, p_noise=0.0)
    g = torch.Generator().manual_seed(seed)
    x = tk.sample_prompts(cfg, 16, g)
    y = tk.reference_responses(cfg, x, g)
    assert y.shape == (16, T)
    for b in range(16):
        ys = _content(y[b].tolist())
        assert _is_subsequence(ys, x[b].tolist())
        assert all(a == tk.EOS for a in y[b].tolist()[len(ys):])  # EOS padding after the content


def test_reference_keep_all_copies_prompt():
    cfg = tk.TaskConfig(vocab=5, prompt_len=6, response_len=4, p_keep=1.0, p_noise=0.0)
    g = torch.Generator().manual_seed(0)
    x = tk.sample_prompts(cfg, 5, g)
    assert torch.equal(tk.reference_responses(cfg, x, g), x[:, :4])


def test_masks_hand_case():
    y = torch.tensor([[3, 0, 2, 0], [1, 2, 3, 1], [0, 0, 0, 0]])
    assert tk.content_mask(y).tolist() == [[1, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]]
    assert tk.decision_mask(y).tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]


def test_all_responses_lexicographic():
    cfg = tk.TaskConfig(vocab=3, prompt_len=2, response_len=3)
    assert tk.all_responses(cfg).tolist() == [list(p) for p in itertools.product(range(3), repeat=3)]


@pytest.mark.parametrize("kw, field", [
    (dict(vocab=1), "vocab"), (dict(prompt_len=0), "prompt_len"), (dict(response_len=2.5), "response_len"),
    (dict(p_keep=1.5), "p_keep"), (dict(p_noise=-0.1), "p_noise"), (dict(rewards=("coverage", "bogus")), "rewards"),
    (dict(rewards=()), "rewards"), (dict(rewards=("brevity", "brevity")), "rewards"),
])
def test_bad_task_config_names_field(kw, field):
    with pytest.raises(ValueError, match=f"^{field}:"):
        tk.TaskConfig(**kw)


def test_pretraining_learns_the_reference_process():
    """Held-out NLL falls well below the uniform model's log V; and pi_ref moves its mass onto
    responses the process can produce (ordered subsets, here with p_noise = 0), against the untrained model."""
    torch.manual_seed(0)
    cfg = tk.TaskConfig(vocab=6, prompt_len=5, response_len=4, p_noise=0.0)
    model = GPT(model_config(cfg, n_layer=1, n_head=2, n_embd=32))
    g = torch.Generator().manual_seed(1)
    x = tk.sample_prompts(cfg, 256, g)
    y = tk.reference_responses(cfg, x, g)
    before = response_nll(model, x, y).item()
    valid_before = _valid_share(model, x)
    pretrain(model, cfg, steps=300, batch_size=64, lr=3e-3, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        after = response_nll(model, x, y).item()
    assert before == pytest.approx(np.log(6), abs=0.1)  # untrained: about uniform
    assert after < 0.75 * before
    valid_after = _valid_share(model, x)
    assert valid_after > 0.5 and valid_after > valid_before + 0.25


def _valid_share(model, x):
    from clp_min.conditioning import Unconditioned
    from clp_min.decoding import sample
    with torch.no_grad():
        d = sample(Unconditioned(model), None, x, 4, generator=torch.Generator().manual_seed(3), eos=tk.EOS)
    return np.mean([_is_subsequence(_content(d.tokens[b].tolist()), x[b].tolist()) for b in range(x.size(0))])
