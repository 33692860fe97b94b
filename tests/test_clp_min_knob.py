"""The held-out prompt split and the misalignment knob (clp_min.task), checked on exact trees with theory/."""
import numpy as np
import pytest
import torch

from clp_min import exact_setups as xs
from clp_min import task as tk
from clp_min.model import GPT
from clp_min.pretrain import model_config
from theory.tree import misalignment, optimal_token_policy, sequence_stats, zero_shot_token_policy

BASE = dict(vocab=4, prompt_len=3, response_len=3)


def test_split_is_a_fixed_partition_and_training_never_draws_heldout():
    cfg = tk.TaskConfig(**BASE)
    x = tk.all_prompts(cfg)
    assert len(x) == 27 and len({tuple(r) for r in x.tolist()}) == 27
    held = tk.is_heldout(x)
    assert torch.equal(held, tk.is_heldout(x.clone()))  # a function of the tokens only
    gen = torch.Generator().manual_seed(0)
    big = tk.sample_prompts(tk.TaskConfig(vocab=10), 8000, gen)
    share = tk.is_heldout(big).double().mean().item()
    assert abs(share - 1 / tk.HELDOUT_EVERY) < 0.02  # about 1 in 8 for a large task
    assert not tk.is_heldout(tk.sample_prompts(tk.TaskConfig(vocab=10), 4000, gen, split="train")).any()
    assert tk.is_heldout(tk.sample_prompts(tk.TaskConfig(vocab=10), 200, gen, split="heldout")).all()
    with pytest.raises(ValueError, match="^split:"):
        tk.sample_prompts(cfg, 2, gen, split="test")


def test_knob_hand_cases():
    """knob = (1 - s)(coverage + 2 [empty]) + s brevity on hand-sized responses."""
    x = torch.tensor([[1, 2, 3]] * 3)
    y = torch.tensor([[0, 0, 0], [1, 0, 0], [1, 2, 3]])  # empty, covers 1/3, covers all
    for s, want in ((0.0, [2.0, 1 / 3, 1.0]), (1.0, [1.0, 2 / 3, 0.0]), (0.5, [1.5, 0.5, 0.5])):
        cfg = tk.TaskConfig(**BASE, rewards=("coverage", "knob"), strength=s)
        np.testing.assert_allclose(tk.rewards(cfg, x, y)[:, 1].numpy(), want, atol=1e-12)
    with pytest.raises(ValueError, match="^strength:"):
        tk.TaskConfig(strength=1.5)


@pytest.fixture(scope="module")
def trees():
    """Exact trees of a random pi_ref on every held-out prompt, for three strengths."""
    torch.manual_seed(0)
    cfg = tk.TaskConfig(**BASE)
    ref = GPT(model_config(cfg, 1, 2, 8)).double().eval()
    x = tk.all_prompts(cfg)[:6]
    base = xs._trees(ref, tk.TaskConfig(**BASE, rewards=("coverage",)), x)
    return {s: xs.retarget(base, tk.TaskConfig(**BASE, rewards=("coverage", "knob"), strength=s), x)
            for s in (0.0, 0.5, 1.0)}


def test_eps_1_is_zero_at_s0_and_linear_in_s(trees):
    """eps(s) below every depth-1 prefix: exactly 0 at s = 0 (P6's condition), s times its s = 1 value."""
    e = {s: np.concatenate([misalignment(t)[1] for t in ts]) for s, ts in trees.items()}
    assert np.all(e[0.0] == 0)
    np.testing.assert_allclose(e[0.5], 0.5 * e[1.0], atol=1e-12)
    assert e[1.0].max() > 0.3
    assert xs.eps_depth1(trees[1.0])["max"] == pytest.approx(e[1.0].max())


def test_aligned_end_zero_shot_exact_but_front_not_a_point(trees):
    """At s = 0 mixing the exact per-reward optima is pi*_w (P6), while pi*_w moves with w."""
    W = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    for tree in trees[0.0]:
        opt = sequence_stats(tree, optimal_token_policy(tree, W, 0.1), W, 0.1)
        zs = sequence_stats(tree, zero_shot_token_policy(tree, W, 0.1), W, 0.1)
        np.testing.assert_allclose(zs["objective"], opt["objective"], atol=1e-9)
        assert opt["rewards"][0, 0] - opt["rewards"][2, 0] > 0.3  # coverage falls from e_1 to e_2
    # misaligned end: the ideal zero-shot loses objective somewhere
    gaps = [sequence_stats(t, optimal_token_policy(t, W, 0.1), W, 0.1)["objective"]
            - sequence_stats(t, zero_shot_token_policy(t, W, 0.1), W, 0.1)["objective"] for t in trees[1.0]]
    assert np.max(gaps) > 1e-4
