"""The adaptive weighting sampler and its oracle-free statistic (clp_min.weightings)."""
import numpy as np
import pytest
import torch

from clp_min import task as tk
from clp_min import weightings
from clp_min.conditioning import ParamConditioned
from clp_min.model import GPT, GPTConfig
from clp_min.oracle import exact, exact_pg
from clp_min.weightings import AdaptiveSampler


def test_draws_land_in_their_cells_and_follow_q():
    rng = np.random.default_rng(0)
    s = AdaptiveSampler(2)
    s.S = np.linspace(0.1, 2.0, len(s.S))
    q = s.probabilities()
    assert q.sum() == pytest.approx(1.0) and q.min() >= weightings.FLOOR / len(q) - 1e-15
    w, cells = s.draw(rng, 20000)
    assert np.all(s.cell_of(w) == cells) and np.allclose(w.sum(1), 1) and np.all(w >= 0)
    np.testing.assert_allclose(np.bincount(cells, minlength=len(q)) / len(cells), q, atol=0.01)


def test_update_is_a_running_mean_per_cell_and_the_state_round_trips():
    s = AdaptiveSampler(3)
    cells, stat = np.array([0, 0, 4]), np.array([1.0, 3.0, 0.5])
    s.update(cells, stat)
    e = weightings.EMA
    assert s.S[0] == pytest.approx(e * weightings.INITIAL + (1 - e) * 2.0)
    assert s.S[4] == pytest.approx(e * weightings.INITIAL + (1 - e) * 0.5)
    assert s.S[1] == weightings.INITIAL and list(s.visits[[0, 4]]) == [2, 1]
    again = AdaptiveSampler(3, state=s.state())
    assert np.array_equal(again.S, s.S) and np.array_equal(again.visits, s.visits)
    with pytest.raises(ValueError, match="^weighting_state:"):
        AdaptiveSampler(2, state=s.state())


def test_exact_soft_advantage_variance_is_var_of_w_dot_r_under_pi_ref_by_tree_enumeration():
    """At pi = pi_ref, A = w.r, so Var_pi[A] = Var_{pi_ref}[w.r]: computed here from the task's trees
    (clp_min.oracle.exact, leaf laws), not from exact_pg. Catches a missing pi weighting or KL term."""
    torch.manual_seed(0)
    task = tk.TaskConfig(vocab=3, prompt_len=3, response_len=3, rewards=("coverage", "brevity"))
    ref = GPT(GPTConfig(vocab_size=3, block_size=6, n_layer=1, n_head=1, n_embd=8)).double()
    policy = ParamConditioned.from_base(ref, 2, "full").double()
    prompts = tk.draw_prompts(task, 3, torch.Generator().manual_seed(1))
    w = torch.tensor([[0.3, 0.7], [1.0, 0.0], [0.5, 0.5]], dtype=torch.float64)
    out = exact_pg.batch_objective(policy, ref, task, prompts, w, 0.2)
    trees = exact.prompt_trees(lambda idx: torch.log_softmax(ref(idx)[0].double(), -1), task, prompts)
    from theory.tree import leaf_log_probs, reference_token_policy
    for p, tree in enumerate(trees):
        pi = np.exp(leaf_log_probs(tree, reference_token_policy(tree))[0])
        a = tree.rewards @ w[p].numpy()
        var = pi @ (a - pi @ a) ** 2
        assert out["soft_advantage_var"][p].item() == pytest.approx(var, rel=1e-9, abs=1e-12)
    assert out["soft_advantage_var"].min() > 0


def test_adaptive_needs_shared_streams():
    from clp_min.config import TrainConfig
    with pytest.raises(ValueError, match="^weights: adaptive"):
        TrainConfig(weights="adaptive", streams="prompt").validate()
