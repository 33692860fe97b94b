"""The held-out prompt split and the misalignment knob (clp_min.task), checked on exact trees with theory/."""
import numpy as np
import pytest
import torch

from clp_min.studies import exact_setups as xs
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


def _sweep_run(ideal, clp, eps=(0.0, 0.4, 0.8)):
    return {"tasks": [{"strength": s, "eps_1": e, "optimal_spread": [0.9, 1.8],
                       "regret": {"CLP full": c, "Rewarded Soups": 0.5, "logit mixing": 0.3, "ideal zero-shot": z}}
                      for s, e, z, c in zip((0.0, 0.5, 1.0), eps, ideal, clp)]}


def test_oracle_rows_hand_cases():
    """T1-T4 from hand-made per-seed results: each rule flips when its number crosses the threshold."""
    from clp_min.studies.targets import oracle_targets

    def rows(sweep, enum_full=(0.005, 0.009)):
        enum = [{"exact": {"mean_normalised_regret": {"CLP full": v, "logit mixing": 0.2, "Rewarded Soups": 1.0}},
                 "train_prompts_regret": {"CLP full": v - 0.001, "logit mixing": 0.19, "Rewarded Soups": 0.9}}
                for v in enum_full]
        return {r["id"]: r for r in oracle_targets(enum, sweep) if "id" in r}

    good = rows([_sweep_run((0.0, 0.01, 0.1), (0.005, 0.006, 0.02))] * 2)
    assert all(good[k]["met"] for k in ("T1-aligned", "T2-misaligned", "T3-monotone", "T4-oracle"))
    assert good["T2-misaligned"]["per_seed"] == pytest.approx([0.2, 0.2])
    assert good["enum_exact-gap-CLP full"]["value"] == pytest.approx(0.001)
    assert good["enum_exact-regret-below-zero-shot-full"]["met"]  # 0.005, 0.009 < min(RS 1.0, logit mixing 0.2)
    assert not rows([_sweep_run((0.0, 0.01, 0.1), (0.005, 0.006, 0.02))], (0.005, 0.011))["T4-oracle"]["met"]
    assert not rows([_sweep_run((0.0, 0.01, 0.1), (0.011, 0.006, 0.02))])["T1-aligned"]["met"]  # CLP 0.011 > 0 + 0.01
    assert not rows([_sweep_run((2e-9, 0.01, 0.1), (0.005, 0.006, 0.02))])["T1-aligned"]["met"]  # ideal not exact
    assert not rows([_sweep_run((0.0, 0.01, 0.1), (0.005, 0.006, 0.031))])["T2-misaligned"]["met"]  # 0.31 > 0.3
    assert not rows([_sweep_run((0.0, 0.1, 0.01), (0.005, 0.006, 0.002))])["T3-monotone"]["met"]  # not monotone
