"""The gradient check on clp_min's own estimators: exact and RLOO unbiased, three wrong losses biased.

Expected values come from an independent route: the exact gradient is autograd through the enumerated
sum (``gradcheck.batch_objective``, one full pass per response), the sampled ones from clp_min's sampler
and RLOO's pieces (``clp_min.rl``); the exact objective itself is checked against ``exact_pg``'s token-tree
route. Each wrong loss is a realistic bug (a baseline that includes the sample, a dropped KL term, a
reward's sign) that the check must call biased beyond its Monte Carlo error.
"""
import pytest
import torch

from clp_min import rl
from clp_min.oracle import exact_pg, gradcheck
from clp_min import task as tk
from clp_min.conditioning import Unconditioned
from clp_min.decoding import sample
from clp_min.model import GPT, GPTConfig

TASK = tk.TaskConfig(vocab=4, prompt_len=2, response_len=3, rewards=("coverage", "brevity"))
PROMPTS = torch.tensor([[1, 2], [3, 1]])
W = torch.tensor([[0.3, 0.7], [0.8, 0.2]], dtype=torch.float64)
BETA, N = 0.5, 4


def tiny(seed):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=TASK.vocab, block_size=8, n_layer=1, n_head=1, n_embd=8))


@pytest.fixture(scope="module")
def models():
    policy, pi_ref = Unconditioned(tiny(0)), tiny(1)  # pi_ref differs from the policy: the KL term matters
    return policy, pi_ref


def rloo_loss(policy, pi_ref, bug=None):
    """clp_min's RLOO loss (``rl.rl_step`` without the optimizer) with an optional deliberate bug."""
    T = TASK.response_len

    def loss_fn(prompts, w, generator):
        P = prompts.size(0)
        x, w_rows = prompts.repeat_interleave(N, dim=0), w.float().repeat_interleave(N, dim=0)  # (B, L), (B, m)
        y = rl.pad_responses(sample(policy, w_rows, x, T, generator=generator, eos=tk.EOS).tokens, T)
        logp = rl.response_logprobs(policy, w_rows, x, y)  # (B,)
        with torch.no_grad():
            logp_ref = rl.response_logprobs(Unconditioned(pi_ref), w_rows, x, y)
            r = tk.rewards(TASK, x, y).float()  # (B, m)
            if bug == "flip":
                r[:, 1] = -r[:, 1]
            kl = logp.detach() - logp_ref
            R = (w_rows * r).sum(1) - (0.0 if bug == "no_kl" else BETA) * kl  # (B,)
            if bug == "self_baseline":
                A = (R.view(P, N) - R.view(P, N).mean(1, keepdim=True)).view(-1)
            else:
                A = rl.leave_one_out_advantages(R.view(P, N)).view(-1)
        return -(A * logp).mean()
    return loss_fn


def test_objective_matches_token_tree_route(models):
    policy, pi_ref = models
    full = gradcheck.batch_objective(policy, pi_ref, TASK, PROMPTS, W, BETA)
    tree = exact_pg.batch_objective(policy, pi_ref, TASK, PROMPTS, W.float(), BETA)["objective"]
    torch.testing.assert_close(full.float(), tree, atol=1e-5, rtol=1e-5)


def test_exact_estimator_has_no_bias(models):
    policy, pi_ref = models
    exact = lambda x, w, gen: -exact_pg.batch_objective(policy, pi_ref, TASK, x, w.float(), BETA)["objective"].mean()
    check = gradcheck.gradient_check(exact, policy, pi_ref, TASK, PROMPTS, W, BETA, n_batches=6, groups=3)
    assert check.unbiased and check.cosine > 1 - 1e-6 and abs(check.scale - 1) < 1e-5, check


def test_rloo_unbiased(models):
    policy, pi_ref = models
    check = gradcheck.gradient_check(rloo_loss(policy, pi_ref), policy, pi_ref, TASK, PROMPTS, W, BETA,
                                     n_batches=600, groups=20)
    assert check.unbiased, check.verdict
    assert check.cosine > 0.9 and check.noise < 0.2, check  # the run resolves the direction


@pytest.mark.parametrize("bug", ["self_baseline", "no_kl", "flip"])
def test_wrong_losses_biased(models, bug):
    policy, pi_ref = models
    check = gradcheck.gradient_check(rloo_loss(policy, pi_ref, bug), policy, pi_ref, TASK, PROMPTS, W, BETA,
                                     n_batches=600, groups=20)
    assert not check.unbiased, check.verdict
    assert check.verdict.startswith("biased")


def test_baseline_with_self_is_a_shrunk_gradient(models):
    """Including the sample in a mean baseline of N samples scales the expected gradient by 1 - 1/N."""
    policy, pi_ref = models
    check = gradcheck.gradient_check(rloo_loss(policy, pi_ref, "self_baseline"), policy, pi_ref, TASK, PROMPTS, W,
                                     BETA, n_batches=600, groups=20)
    assert abs(check.scale - (1 - 1 / N)) < 4 * check.noise, check


def test_compare_known_answer():
    """Hand-sized: groups at g + b exactly (no noise) give relative bias ||b|| / ||g|| and a biased verdict."""
    g = torch.tensor([3.0, 4.0])
    means = torch.tensor([[3.0, 4.5]] * 4)
    check = gradcheck.compare(means, g)
    assert check.rel_bias == pytest.approx(0.5 / 5) and not check.unbiased
    assert check.scale == pytest.approx((9 + 18) / 25)
    noisy = gradcheck.compare(torch.tensor([[4.0, 4.0], [2.0, 4.0], [3.0, 5.0], [3.0, 3.0]]), g)
    # d_j = (+-1, 0), (0, +-1): sum_j d_j = 0, sum_j ||d_j||^2 = 4, so U = (0 - 4) / (4 * 3) = -1/3 (over ||g||^2 = 25)
    assert noisy.bias_sq == pytest.approx(-1 / 3 / 25) and noisy.unbiased and noisy.cosine == pytest.approx(1.0)


@pytest.mark.parametrize("change, field", [
    (dict(prompts=torch.tensor([[1, 2, 3]])), "prompts"),
    (dict(prompts=torch.tensor([[0, 2], [1, 1]])), "prompts"),
    (dict(w=torch.tensor([[0.5, 0.6], [0.5, 0.5]])), "w"),
    (dict(w=torch.tensor([[0.5, 0.5]])), "w"),
    (dict(beta=-1.0), "beta"),
    (dict(beta=float("nan")), "beta"),
    (dict(n_batches=10, groups=3), "n_batches"),
    (dict(n_batches=4, groups=2), "groups"),
])
def test_bad_input_names_field(models, change, field):
    policy, pi_ref = models
    args = dict(prompts=PROMPTS, w=W, beta=BETA, n_batches=6, groups=3)
    args.update(change)
    loss = lambda x, w, gen: -gradcheck.batch_objective(policy, pi_ref, TASK, x, w, BETA).mean()
    with pytest.raises(ValueError, match=f"^{field}:"):
        gradcheck.gradient_check(loss, policy, pi_ref, TASK, args["prompts"], args["w"], args["beta"],
                                 n_batches=args["n_batches"], groups=args["groups"])
