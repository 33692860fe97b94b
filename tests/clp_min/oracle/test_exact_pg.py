"""Exact policy gradient (clp_min.oracle.exact_pg): the objective against theory's sequence_stats, its gradient
against finite differences, and RLOO's mean gradient against it (three independent routes)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clp_cli.main import main
from clp_min import rl
from clp_min.oracle import exact, exact_pg
from clp_min import task as tk
from clp_min.conditioning import ParamConditioned, Unconditioned
from clp_min.model import GPT
from clp_min.pretrain import model_config
from clp_min.config import TrainConfig
from clp_min.run_folder import load_trained
from clp_min.train import train

TASK = tk.TaskConfig(vocab=3, prompt_len=3, response_len=3)
BETA = 0.3


def _models(dtype, scope="full", seed=0):
    """A random pi_ref and a CLP whose two copies are perturbed apart (so w matters), in ``dtype``."""
    torch.manual_seed(seed)
    ref = GPT(model_config(TASK, 1, 2, 8)).to(dtype).eval()
    base = GPT(model_config(TASK, 1, 2, 8)).to(dtype)
    policy = ParamConditioned.from_base(base, 2, scope).to(dtype)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.3 * torch.randn_like(p))
    for p in ref.parameters():
        p.requires_grad_(False)
    return policy, ref


def _train_prompts():
    x = tk.all_prompts(TASK)
    return x[~tk.is_heldout(x)]


def test_producible_responses_hand_case():
    Y = exact_pg.producible_responses(3, 2)
    assert Y.tolist() == [[0, 0], [1, 0], [1, 1], [1, 2], [2, 0], [2, 1], [2, 2]]


def test_objective_matches_theory_sequence_stats():
    """J_w per prompt (each prompt its own w) equals theory.tree.sequence_stats on clp_min.oracle.exact's trees."""
    policy, ref = _models(torch.float64)
    prompts = tk.all_prompts(TASK)[:5]
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.3, 0.7], [0.5, 0.5], [0.9, 0.1]], dtype=torch.float64)
    with torch.no_grad():
        J = exact_pg.batch_objective(policy, ref, TASK, prompts, w, BETA)
    trees = exact.prompt_trees(lambda idx: F.log_softmax(ref(idx)[0], dim=-1), TASK, prompts)
    for p in range(len(prompts)):
        log_pi = exact.method_log_policies(lambda wk, idx: F.log_softmax(policy(torch.as_tensor(wk), idx)[0], -1),
                                           TASK, prompts[p:p + 1], w[p:p + 1].numpy())[0]
        want = exact.policy_stats([trees[p]], [log_pi], w[p:p + 1].numpy(), BETA)
        np.testing.assert_allclose(J["objective"][p].item(), want["objective"][0], rtol=0, atol=1e-10)
        np.testing.assert_allclose(J["kl"][p].item(), want["kl"][0], rtol=0, atol=1e-10)
        np.testing.assert_allclose(J["rewards"][p].numpy(), want["rewards"][0], rtol=0, atol=1e-10)


def test_gradient_matches_central_differences():
    """Autograd of the exact objective against (J(theta + h e_k) - J(theta - h e_k)) / 2h, float64."""
    policy, ref = _models(torch.float64)
    prompts = tk.all_prompts(TASK)[:4]
    w = torch.tensor([[1.0, 0.0], [0.2, 0.8], [0.6, 0.4], [0.0, 1.0]], dtype=torch.float64)

    def J():
        return exact_pg.batch_objective(policy, ref, TASK, prompts, w, BETA)["objective"].mean()

    params = list(policy.parameters())
    grads = torch.autograd.grad(J(), params)
    gen = torch.Generator().manual_seed(0)
    h = 1e-6
    for _ in range(8):
        i = int(torch.randint(len(params), (1,), generator=gen))
        k = int(torch.randint(params[i].numel(), (1,), generator=gen))
        flat = params[i].data.view(-1)
        with torch.no_grad():
            flat[k] += h
            up = J().item()
            flat[k] -= 2 * h
            down = J().item()
            flat[k] += h
        assert abs((up - down) / (2 * h) - grads[i].view(-1)[k].item()) < 1e-7


def test_rloo_mean_gradient_agrees_with_exact():
    """RLOO's gradient (clp_min.rl.rl_step with lr 0), averaged over many batches, is unbiased for the exact one.

    Projected onto 3 random directions; each mean must lie within 4 standard errors.
    Prompts: rl_step draws uniform training prompts, so the exact side averages J over all of them.
    """
    policy, ref = _models(torch.float32)
    policy = Unconditioned(policy.policy_at(torch.tensor([0.5, 0.5])))  # one model: no per-example mixing
    params = [p.requires_grad_(True) for p in policy.parameters()]
    w_fixed = np.array([[0.3, 0.7]])
    train_prompts = _train_prompts()
    w = torch.tensor(w_fixed, dtype=torch.float32).expand(len(train_prompts), 2)
    exact_grad = torch.autograd.grad(-exact_pg.batch_objective(policy, ref, TASK, train_prompts, w, BETA)
                                     ["objective"].mean(), params)
    gen = torch.Generator().manual_seed(1)
    dirs = [[torch.randn(p.shape, generator=gen) for p in params] for _ in range(3)]
    sgd = torch.optim.SGD(params, lr=0.0)
    samples = []
    for _ in range(200):
        rl.rl_step(policy, ref, sgd, TASK, np.repeat(w_fixed, 8, axis=0), 4, BETA, gen)
        samples.append([sum((p.grad * d).sum() for p, d in zip(params, dd)).item() for dd in dirs])
    samples = np.array(samples)  # (batches, 3)
    mean, se = samples.mean(0), samples.std(0, ddof=1) / np.sqrt(len(samples))
    want = np.array([sum((g * d).sum() for g, d in zip(exact_grad, dd)).item() for dd in dirs])
    assert np.all(np.abs(mean - want) < 4 * se), (mean, want, se)
    assert np.all(se < 0.5 * np.abs(want).max())  # the check has power: the noise is below the signal


def test_exact_training_raises_the_objective(tmp_path):
    """``clp train --estimator exact``: J_w on every training prompt rises above pi_ref's at both vertices."""
    cfg = TrainConfig(out=str(tmp_path / "run"), vocab=3, prompt_len=3, response_len=3, n_layer=1, n_head=2,
                      n_embd=16, pretrain_steps=30, conditioning="full", weights="vertices", steps=40,
                      prompts_per_step=8, lr=1e-2, beta=0.1, estimator="exact", log_every=10, ckpt_every=40)
    train(cfg, progress=False)
    policy, ref, cfg = load_trained(cfg.out)
    x = _train_prompts()
    for w in np.eye(2):
        wx = torch.tensor(w, dtype=torch.float32).expand(len(x), 2)
        with torch.no_grad():
            J = exact_pg.batch_objective(policy, ref, cfg.task(), x, wx, 0.1)["objective"].mean().item()
            J_ref = exact_pg.batch_objective(Unconditioned(ref), ref, cfg.task(), x, wx, 0.1)["objective"]
        assert J > J_ref.mean().item() + 0.02, (w, J, J_ref.mean().item())


def test_exact_estimator_refused_when_not_enumerable(capsys):
    with pytest.raises(ValueError, match="^estimator: exact needs V"):
        TrainConfig(vocab=10, response_len=5, estimator="exact").validate()
    with pytest.raises(ValueError, match="^estimator: unknown"):
        TrainConfig(estimator="reinforce").validate()
    assert main(["train", "--estimator", "exact", "--vocab", "10", "--response_len", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("clp: error: estimator:") and "\n" not in err


def test_unconditioned_policy_ignores_w():
    """An unconditioned model (single objective) goes through the same path."""
    _, ref = _models(torch.float64)
    prompts = tk.all_prompts(TASK)[:2]
    a, _ = exact_pg.response_log_probs(Unconditioned(ref), torch.zeros(2, 1), prompts, 3, 3)
    # probabilities of the producible responses sum to 1 for every prompt
    np.testing.assert_allclose(a.exp().sum(1).numpy(), 1.0, atol=1e-12)


def test_training_steps_never_draw_heldout_prompts(monkeypatch):
    """Both estimators draw their prompts from the training split (clp_min.task.is_heldout)."""
    drawn = []
    original = tk.sample_prompts

    def recording(*args, **kwargs):
        x = original(*args, **kwargs)
        drawn.append(x)
        return x

    monkeypatch.setattr(tk, "sample_prompts", recording)
    task = tk.TaskConfig(vocab=3, prompt_len=6, response_len=3)  # 64 prompts, 6 of them held out
    ref = GPT(model_config(task, 1, 2, 8)).eval()
    policy = ParamConditioned.from_base(GPT(model_config(task, 1, 2, 8)), 2, "full")
    sgd = torch.optim.SGD(policy.parameters(), lr=0.0)
    gen = torch.Generator().manual_seed(0)
    w = np.full((64, 2), 0.5)
    exact_pg.exact_step(policy, ref, sgd, task, w, BETA, gen)
    rl.rl_step(policy, ref, sgd, task, w, 2, BETA, gen)
    assert len(drawn) == 2 and not any(tk.is_heldout(x).any() for x in drawn)
    assert tk.is_heldout(tk.all_prompts(task)).any()  # the split is not empty here


# --- the two routes to the token distributions (tree and depth) ---------------------------------

def _policies():
    """Every clp_min policy that takes ``tree=`` (float64, parameters moved off their initial values)."""
    from clp_min.mechanisms.input_cond import InputConditioned
    from clp_min.mechanisms.prompt_tokens import PromptTokens
    from clp_min.mechanisms.soft_tokens import SoftTokens
    from clp_min.mechanisms.svd_lora import SVDLoRA

    task = tk.TaskConfig(vocab=4, prompt_len=3, response_len=4)  # 3 + 9 + 27 content prefixes below the root

    def gpt(seed):
        torch.manual_seed(seed)
        return GPT(model_config(task, 2, 2, 8)).double()

    def moved(module, seed=7):
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in module.parameters():
                if p.requires_grad:
                    p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
        return module

    return task, {
        "plain": Unconditioned(moved(gpt(0))),
        "CLP full": moved(ParamConditioned.from_base(gpt(1), 2, "full")),
        "CLP attn": moved(ParamConditioned.from_base(gpt(2), 2, "attn")),
        "input prefix + CLP logit": moved(ParamConditioned.from_base(InputConditioned(gpt(3), 2, "prefix"), 2, "logit")),
        "input add": moved(InputConditioned(gpt(4), 2, "add").double()),  # its w embedding is made in float32
        "svd_lora": moved(SVDLoRA(gpt(5), 2, rank=2, layers="attn+mlp+logit").double()),
        "soft_tokens": moved(SoftTokens(gpt(6), 2, n_tokens=2).double()),
        "prompt_tokens": moved(PromptTokens(gpt(7), 2, grid=4).double()),
    }


def test_tree_route_equals_depth_route_for_every_policy():
    """One token-tree call gives each content prefix the distribution that feeding it through the cache
    depth by depth gives (catches a wrong position, a wrong ancestor mask, or rows in another order)."""
    task, policies = _policies()
    prompts = tk.all_prompts(task)[[0, 5, 11, 19, 26]]
    w = torch.tensor([[1.0, 0.0], [0.2, 0.8], [0.5, 0.5], [0.9, 0.1], [0.0, 1.0]], dtype=torch.float64)
    for name, policy in policies.items():
        assert exact_pg.accepts_tree(policy), name
        with torch.no_grad():
            tree = exact_pg.prefix_log_probs(policy, w, prompts, task.vocab, task.response_len, "tree")
            depth = exact_pg.prefix_log_probs(policy, w, prompts, task.vocab, task.response_len, "depth")
        assert tree.shape == (5, 1 + 3 + 9 + 27, 4), name
        np.testing.assert_allclose(tree.numpy(), depth.numpy(), rtol=0, atol=1e-12, err_msg=name)
        assert (tree[:, 1:] - tree[:, :1]).abs().max() > 1e-3, name  # the prefixes matter (not one row repeated)


def test_token_policies_equal_the_padded_enumeration_for_every_policy():
    """The evaluation's token policies through the tree (``token_policies``) equal ``clp_min.oracle.exact``'s padded
    pass of every prefix, at every weighting, forced rows included (catches a prefix mapped to the wrong
    content row, a dropped forced row, or weightings in another order)."""
    from clp_min.oracle import exact

    task, policies = _policies()
    prompts = tk.all_prompts(task)[[0, 13, 26]]
    W = np.array([[1.0, 0.0], [0.25, 0.75], [0.5, 0.5]])  # on the prompt-token policy's grid
    for name, policy in policies.items():
        def logprobs(w, idx, policy=policy):
            with torch.no_grad():
                return F.log_softmax(policy(torch.as_tensor(w, dtype=torch.float64), idx)[0], dim=-1)
        want = exact.method_log_policies(logprobs, task, prompts, W)
        got = exact_pg.token_policies(policy, task, prompts, W)
        assert len(got) == 3 and [d.shape for d in got[0]] == [(3, 4 ** t, 4) for t in range(4)], name
        for p in range(3):
            for t in range(4):
                np.testing.assert_allclose(got[p][t], want[p][t], rtol=0, atol=1e-12, err_msg=f"{name} {p} {t}")
        if name != "plain":
            assert np.abs(got[1][2][0] - got[1][2][2]).max() > 1e-3, name  # the weighting matters


def test_token_tree_as_a_chain_is_the_causal_pass():
    """A chain (every node sees the earlier ones, depths 0 .. T-1) through the cache equals one causal pass."""
    from clp_min.model import TokenTree

    _, policies = _policies()
    gpt = policies["plain"].model
    idx = torch.tensor([[1, 2, 3, 0, 2, 1, 3], [3, 3, 1, 2, 0, 0, 1]])
    full, _ = gpt(idx)
    _, cache = gpt(idx[:, :3])
    chain = TokenTree(torch.arange(4), torch.tril(torch.ones(4, 4, dtype=torch.bool)))
    below, _ = gpt(idx[:, 3:], cache, tree=chain)
    np.testing.assert_allclose(below.detach().numpy(), full[:, 3:].detach().numpy(), rtol=0, atol=1e-12)
    shuffled = TokenTree(torch.tensor([0, 2, 1, 3]), chain.visible)  # positions swapped: must differ
    assert (gpt(idx[:, 3:], cache, tree=shuffled)[0] - below).abs().max() > 1e-3
    with pytest.raises(ValueError, match="tree:"):
        TokenTree(torch.arange(4), torch.zeros(4, 4, dtype=torch.bool))  # a node that does not see itself
    with pytest.raises(ValueError, match="tree:"):
        gpt(idx[:, 3:], cache, tree=TokenTree(torch.arange(3), torch.eye(3, dtype=torch.bool)))


def test_policy_without_tree_takes_the_depth_route():
    """A policy that does not declare ``accepts_tree`` (e.g. a Hugging Face model) is fed depth by depth."""
    task, policies = _policies()
    inner = policies["CLP full"]

    class Opaque(torch.nn.Module):  # only (w, idx, cache): a tree= would raise TypeError
        def __init__(self):
            super().__init__()
            self.inner = inner

        def forward(self, w, idx, cache=None):
            return self.inner(w, idx, cache)

    prompts = tk.all_prompts(task)[:3]
    w = torch.tensor([[1.0, 0.0], [0.3, 0.7], [0.6, 0.4]], dtype=torch.float64)
    assert not exact_pg.accepts_tree(Opaque())
    with torch.no_grad():
        got = exact_pg.prefix_log_probs(Opaque(), w, prompts, task.vocab, task.response_len)
        want = exact_pg.prefix_log_probs(inner, w, prompts, task.vocab, task.response_len, "tree")
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="route:"):
        exact_pg.prefix_log_probs(inner, w, prompts, task.vocab, task.response_len, "bogus")


def test_reference_table_rows_are_the_prompts_own():
    """Each looked-up row equals pi_ref's terms computed for that prompt alone (catches a wrong base or
    digit order in the row index, and rewards of another prompt)."""
    _, ref = _models(torch.float64)
    prompts = tk.all_prompts(TASK)[[7, 0, 3, 7, 5]]  # a repeat, and the first and a middle prompt
    for steer_kl in (False, True):
        task = TASK if not steer_kl else tk.TaskConfig(vocab=3, prompt_len=3, response_len=3, rewards=("coverage",))
        table = exact_pg.ReferenceTable(ref, task, steer_kl, chunk=3)  # chunks cut through the prompts
        got = table.lookup(prompts)
        for p in range(len(prompts)):
            want = exact_pg._reference_terms(ref, task, prompts[p:p + 1], steer_kl)
            for g, w_ in zip(got, want):
                np.testing.assert_allclose(g[p].numpy(), w_[0].numpy(), rtol=0, atol=1e-12)
    assert not torch.equal(got[0][0], got[0][1])  # distinct prompts, distinct rows


def test_exact_step_with_a_table_equals_without():
    """The same Adam step (statistics and parameters) whether pi_ref's terms come from the table or not."""
    task = tk.TaskConfig(vocab=3, prompt_len=3, response_len=3, rewards=("coverage", "brevity"))
    w = np.array([[0.2, 0.8], [0.5, 0.5], [1.0, 0.0], [0.7, 0.3]])
    outs = []
    for use in (False, True):
        policy, ref = _models(torch.float64)
        opt = torch.optim.Adam(policy.parameters(), lr=1e-2)
        table = exact_pg.ReferenceTable(ref, task) if use else None
        stats = exact_pg.exact_step(policy, ref, opt, task, w, BETA, torch.Generator().manual_seed(3), table=table)
        outs.append((stats, [p.detach().clone() for p in policy.parameters()]))
    (s0, p0), (s1, p1) = outs
    for k in ("objective", "kl"):
        assert s0[k] == pytest.approx(s1[k], abs=1e-12)
    for a, b in zip(p0, p1):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="table:"):
        exact_pg.batch_objective(policy, ref, task, tk.all_prompts(task)[:2], torch.full((2, 2), 0.5, dtype=torch.float64),
                                 BETA, steer_kl=True, table=exact_pg.ReferenceTable(ref, task))
    big = tk.TaskConfig(vocab=10, prompt_len=6, response_len=2)
    assert exact_pg.ReferenceTable.for_task(ref, big) is None
    with pytest.raises(ValueError, match="prompt_len:"):
        exact_pg.ReferenceTable(ref, big)


@pytest.mark.parametrize("T", [1, 2])
def test_tree_route_for_short_responses(T):
    """Responses of one token (no content prefix below the prompt: an empty tree) and of two."""
    task = tk.TaskConfig(vocab=4, prompt_len=3, response_len=T)
    torch.manual_seed(0)
    policy = Unconditioned(GPT(model_config(task, 1, 2, 8)).double())
    x = tk.all_prompts(task)[[0, 9, 26]]
    with torch.no_grad():
        tree = exact_pg.prefix_log_probs(policy, None, x, 4, T, "tree")
        depth = exact_pg.prefix_log_probs(policy, None, x, 4, T, "depth")
    assert tree.shape == (3, 1 + (3 if T == 2 else 0), 4)
    np.testing.assert_allclose(tree.numpy(), depth.numpy(), rtol=0, atol=1e-12)
