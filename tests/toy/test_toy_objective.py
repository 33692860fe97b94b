"""toy.objective, toy.policies, toy.reinforce: torch against theory (numpy), autograd against finite differences."""
import numpy as np
import torch
from hypothesis import given, strategies as st
from strategies import betas, extreme_betas, logits, simplex_stack, trees

from theory import tree as tr
from theory.pareto import regret
from theory.random_instances import random_tree
from toy.objective import TreeTensors, multitask_objective, policy_log_probs, sequence_objective
from toy.policies import InputNet, LinearCLP, MixedNet, Oracle, make_policy
from toy.regret import optimal_values
from toy.reinforce import reinforce_surrogate


def _random_token_policy(draw, tree, K):
    return [np.stack([draw(logits(tree.vocab ** t, tree.vocab)) for _ in range(K)]) for t in range(tree.horizon)]


@given(st.data(), trees(max_V=3, max_T=3, max_m=3), betas())
def test_torch_objective_equals_theory_sequence_stats(data, tree, beta):
    K = 3
    raw = _random_token_policy(data.draw, tree, K)
    log_pi = [lp - np.log(np.exp(lp).sum(-1, keepdims=True)) for lp in raw]  # normalise in numpy
    w = data.draw(simplex_stack(K, tree.m))
    ours = sequence_objective(TreeTensors(tree), [torch.as_tensor(lp) for lp in log_pi], torch.as_tensor(w), beta)
    theirs = tr.sequence_stats(tree, log_pi, w, beta)
    for key in ("rewards", "kl", "objective"):
        np.testing.assert_allclose(ours[key].numpy(), theirs[key], rtol=1e-10, atol=1e-10)


@given(trees(max_V=3, max_T=3, max_m=3), betas(), st.data())
def test_linear_clp_at_init_is_the_zero_shot_mixture(tree, beta, data):
    w = data.draw(simplex_stack(4, tree.m))
    ours = policy_log_probs(LinearCLP(tree, beta), w)
    theirs = tr.zero_shot_token_policy(tree, w, beta)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, atol=1e-9)


@given(trees(max_V=3, max_T=3, max_m=3, min_m=2), betas(), st.data())
def test_oracle_has_zero_regret(tree, beta, data):
    w = data.draw(simplex_stack(4, tree.m))
    J_opt = optimal_values(tree, w, beta)  # V_w(root), P1/P5: not through any policy
    oracle = Oracle(tree, beta)
    J_torch = sequence_objective(TreeTensors(tree), oracle(torch.as_tensor(w)), torch.as_tensor(w), beta)
    J_numpy = tr.sequence_stats(tree, policy_log_probs(oracle, w), w, beta)["objective"]
    scale = 1e-9 * max(1.0, np.abs(J_opt).max())
    assert np.abs(J_opt - J_torch["objective"].numpy()).max() < scale
    assert np.abs(regret(J_opt, J_numpy)).max() < scale


def _directional_fd(policy, f, direction, h=1e-6):
    params = list(policy.parameters())
    with torch.no_grad():
        for p, d in zip(params, direction):
            p += h * d
        up = f().item()
        for p, d in zip(params, direction):
            p -= 2 * h * d
        down = f().item()
        for p, d in zip(params, direction):
            p += h * d
    return (up - down) / (2 * h)


@given(st.sampled_from(["linear_random", "mixed_net", "input_net"]), st.integers(0, 10 ** 6),
       st.floats(0.1, 3.0))
def test_exact_gradients_match_finite_differences(kind, seed, beta):
    rng = np.random.default_rng(seed)
    tree = random_tree(rng, vocab=2 + seed % 2, horizon=2 + seed % 2, rewards=2 + seed % 2)
    policy = make_policy(kind, tree, beta, seed=seed, hidden=4)
    tt = TreeTensors(tree)
    w = torch.as_tensor(rng.dirichlet(np.ones(tree.m), size=5))
    J = multitask_objective(tt, policy, w, beta)
    policy.zero_grad()
    J.backward()
    g = torch.Generator().manual_seed(seed)
    direction = [torch.randn(p.shape, generator=g, dtype=torch.float64) for p in policy.parameters()]
    autograd = sum((p.grad * d).sum() for p, d in zip(policy.parameters(), direction)).item()
    fd = _directional_fd(policy, lambda: multitask_objective(tt, policy, w, beta), direction)
    assert abs(autograd - fd) <= 1e-6 * (1 + abs(fd))


def test_reinforce_gradient_is_unbiased():
    """Sampling against enumeration: the mean REINFORCE gradient matches the exact one within 4 standard errors."""
    rng = np.random.default_rng(1)
    tree = random_tree(rng, vocab=2, horizon=2, rewards=2)
    beta = 0.5
    policy = make_policy("linear_random", tree, beta, seed=3)
    tt = TreeTensors(tree)
    w = torch.as_tensor(rng.dirichlet(np.ones(2), size=3))
    policy.zero_grad()
    multitask_objective(tt, policy, w, beta).backward()
    exact = torch.cat([p.grad.flatten() for p in policy.parameters()]).clone()
    g = torch.Generator().manual_seed(0)
    estimates = []
    for _ in range(200):
        policy.zero_grad()
        reinforce_surrogate(tt, policy, w, beta, samples=32, generator=g)[0].backward()
        estimates.append(torch.cat([p.grad.flatten() for p in policy.parameters()]).clone())
    est = torch.stack(estimates)  # (repeats, P)
    mean, se = est.mean(0), est.std(0) / np.sqrt(len(est))
    assert torch.all((mean - exact).abs() <= 4 * se + 1e-12), (mean - exact).abs() / (se + 1e-12)
    assert exact.abs().max() > 10 * se.max()  # the check has power: the gradient is not ~0


def test_networks_condition_on_w():
    tree = random_tree(np.random.default_rng(0), vocab=2, horizon=2, rewards=2)
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    for net in (MixedNet(tree, 4, generator=torch.Generator().manual_seed(0)),
                InputNet(tree, 4, generator=torch.Generator().manual_seed(0))):
        out = net(w)
        assert [lp.shape for lp in out] == [(2, 1, 2), (2, 2, 2)]
        assert torch.allclose(torch.logsumexp(out[1], -1), torch.zeros(2, 2, dtype=torch.float64))
        assert not torch.allclose(out[0][0], out[0][1])  # different w, different policy


def test_unknown_policy_kind_is_refused():
    tree = random_tree(np.random.default_rng(0), vocab=2, horizon=1, rewards=2)
    try:
        make_policy("transformer", tree, 1.0)
    except ValueError as err:
        assert str(err).startswith("policy:")
    else:
        raise AssertionError("no ValueError")


@given(trees(max_V=3, max_T=3, max_m=3, scale=1e3), extreme_betas(), st.data())
def test_objective_and_gradients_stay_finite(tree, beta, data):
    """Log-space throughout: finite for beta in [1e-4, 1e4] and rewards up to 1e3."""
    w = torch.as_tensor(data.draw(simplex_stack(3, tree.m)))
    policy = LinearCLP(tree, beta)
    J = multitask_objective(TreeTensors(tree), policy, w, beta)
    J.backward()
    assert torch.isfinite(J)
    assert all(torch.all(torch.isfinite(p.grad)) for p in policy.parameters())
