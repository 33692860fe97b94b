"""Multi-task RL training (clp_min.rl, clp_min.train): learning, exact resume, refusals."""
import json
from dataclasses import fields

import numpy as np
import pytest
import torch

from clp_cli.main import main
from clp_min.studies import evaluate as ev
from clp_min import rl
from clp_min.config import TrainConfig, field_help
from clp_min.run_folder import load_trained
from clp_min.train import train

TINY = dict(vocab=6, prompt_len=5, response_len=4, n_layer=1, n_head=2, n_embd=16, pretrain_steps=150,
            prompts_per_step=8, samples_per_prompt=4, lr=3e-3, beta=0.05)


def test_leave_one_out_advantages_hand_case():
    R = torch.tensor([[1.0, 2.0, 6.0], [0.0, 0.0, 3.0]])
    # A_j = R_j - mean of the others
    expected = torch.tensor([[1 - 4, 2 - 3.5, 6 - 1.5], [0 - 1.5, 0 - 1.5, 3 - 0]])
    torch.testing.assert_close(rl.leave_one_out_advantages(R), expected)


def test_training_raises_each_reward_at_its_vertex(tmp_path):
    """CLP (attn) trained on sampled weightings: at w = e_i, reward i beats pi_ref's by > 3 standard errors."""
    cfg = TrainConfig(out=str(tmp_path / "run"), conditioning="attn", weights="vertices", steps=60,
                      log_every=20, ckpt_every=60, **TINY)
    train(cfg, progress=False)
    policy, pi_ref, cfg = load_trained(cfg.out)
    task = cfg.task()
    gen = torch.Generator().manual_seed(123)
    prompts = torch.randint(1, task.vocab, (64, task.prompt_len), generator=gen)
    W = np.eye(2)
    trained = ev.mc_front(ev.policy_method("clp", policy), task, pi_ref, W, prompts, 4, cfg.beta, gen)
    from clp_min.conditioning import Unconditioned
    ref = ev.mc_front(ev.policy_method("ref", Unconditioned(pi_ref)), task, pi_ref, W, prompts, 4, cfg.beta, gen)
    for i in range(2):
        gain = trained["rewards"][i, i] - ref["rewards"][i, i]
        se = np.hypot(trained["rewards_se"][i, i], ref["rewards_se"][i, i])
        assert gain > 3 * se, (i, gain, se)
    # the command on the same run (V^T = 1296 responses: the exact path runs too)
    assert main(["eval", cfg.out, "--grid", "2", "--prompts", "4", "--samples", "2", "--out",
                 str(tmp_path / "eval")]) == 0
    front = json.loads((tmp_path / "eval" / "front.json").read_text())
    assert len(front["exact"]["mean_normalised_regret"]) == 1 and (tmp_path / "eval" / "front.png").exists()


@pytest.mark.parametrize("schedule, weights", [("constant", "dirichlet"), ("cosine", "dirichlet"),
                                               ("constant", "adaptive")])
def test_resume_is_bit_for_bit(tmp_path, schedule, weights):
    """N steps, then N more after a resume, equal 2N uninterrupted steps (parameters, optimizer, log).

    Constant lr: a 3-step run resumed as a 6-step run. Cosine lr (depends on the total):
    the 6-step run interrupted after 3 steps, then resumed. Adaptive weightings: the sampler's
    state travels in the checkpoint (without it the resumed draws differ).
    """
    base = dict(conditioning="input+full", weights=weights, lr_schedule=schedule, log_every=1, **TINY)
    base["pretrain_steps"] = 20
    whole = tmp_path / "whole"
    split = tmp_path / "split"
    train(TrainConfig(out=str(whole), steps=6, ckpt_every=6, **base), progress=False)
    if schedule == "constant":
        train(TrainConfig(out=str(split), steps=3, ckpt_every=3, **base), progress=False)
    else:
        train(TrainConfig(out=str(split), steps=6, ckpt_every=6, **base), progress=False, stop_at=3)
    train(TrainConfig(out=str(split), steps=6, ckpt_every=6, resume=True, **base), progress=False)
    a, _, _ = load_trained(whole)
    b, _, _ = load_trained(split)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    ha = json.loads((whole / "log.json").read_text())["history"]
    hb = json.loads((split / "log.json").read_text())["history"]
    assert ha == hb and len(ha) == 6
    from safetensors.torch import load_file
    oa, ob = load_file(whole / "train_state.safetensors"), load_file(split / "train_state.safetensors")
    assert oa.keys() == ob.keys() and all(torch.equal(oa[k], ob[k]) for k in oa)


@pytest.mark.parametrize("kw, field", [
    (dict(beta=0.0), "beta"), (dict(beta=float("nan")), "beta"), (dict(samples_per_prompt=1), "samples_per_prompt"),
    (dict(conditioning="bogus"), "conditioning"), (dict(steer="lam"), "steer"), (dict(weights="gauss"), "weights"),
    (dict(weights="fixed", fixed_w=(0.5, 0.6)), "fixed_w"),
    (dict(weights="fixed", fixed_w=(1.0,)), "fixed_w"), (dict(fixed_w=(1.0, 0.0)), "fixed_w"),
    (dict(conditioning="none"), "conditioning"), (dict(n_head=3), "n_head"), (dict(lr=-1.0), "lr"),
    (dict(steps=0), "steps"), (dict(vocab=1), "vocab"), (dict(p_vertex=2.0), "p_vertex"),
    (dict(rewards=("coverage", "nope")), "rewards"), (dict(lr_schedule="step"), "lr_schedule"),
])
def test_bad_config_names_field(kw, field):
    with pytest.raises(ValueError, match=f"^{field}:"):
        TrainConfig(**kw).validate()


def test_cli_refuses_with_one_line(capsys, tmp_path):
    assert main(["train", "--out", str(tmp_path), "--beta", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "beta" in err[0]
    assert main(["train", "--out", str(tmp_path), "--fixed_w", "a,b", "--weights", "fixed"]) == 2
    assert "fixed_w" in capsys.readouterr().err
    assert main(["reproduce", "--setups", "four"]) == 2
    assert "setups" in capsys.readouterr().err


def test_every_field_has_one_line_help():
    assert set(field_help()) == {f.name for f in fields(TrainConfig)}


def test_cosine_schedule_values_at_known_steps():
    """lr(step) = lr (1 + cos(pi step / steps)) / 2: lr at step 0, lr/2 half-way, lr (1 + cos(pi 3/4))/2 at 3/4.

    Catches an off-by-one (``step + 1`` or ``steps - 1``) that the bit-for-bit resume test cannot see.
    """
    from clp_min.config import learning_rate

    cfg = TrainConfig(lr=0.4, lr_schedule="cosine", steps=8)
    assert learning_rate(cfg, 0) == 0.4
    assert learning_rate(cfg, 4) == pytest.approx(0.2, abs=1e-15)
    assert learning_rate(cfg, 6) == pytest.approx(0.4 * (1 - np.sqrt(0.5)) / 2, rel=1e-12)
    assert learning_rate(cfg, 7) > 0
    assert learning_rate(TrainConfig(lr=0.4, steps=8), 5) == 0.4


def test_train_loop_applies_the_schedule_of_each_step(tmp_path, monkeypatch):
    """The learning rate set for the step with 0-based index s is lr(s): recorded from inside rl_step."""
    seen = []

    def record(policy, pi_ref, optimizer, *args, **kwargs):
        seen.append(optimizer.param_groups[0]["lr"])
        return {"loss": 0.0, "objective": 0.0, "kl": 0.0, "rewards": [0.0, 0.0]}

    monkeypatch.setattr(rl, "rl_step", record)
    cfg = TrainConfig(out=str(tmp_path / "run"), lr_schedule="cosine", steps=4, log_every=4, ckpt_every=4,
                      **{**TINY, "pretrain_steps": 1, "lr": 0.4})
    train(cfg, progress=False)
    np.testing.assert_allclose(seen, [0.4 * (1 + np.cos(np.pi * s / 4)) / 2 for s in range(4)], rtol=1e-12)


def test_rl_reward_includes_the_kl_penalty():
    """R_j = w.r - beta (log pi - log pi_ref), recomputed by hand from the same samples.

    Catches ``R = w . r`` (KL penalty deleted), which the learning tests did not: the policy is
    moved away from pi_ref so the KL term is far from 0, and the loss and the objective are
    compared with a computation that draws the same responses from a copy of the generator.
    """
    from clp_min import task as tk
    from clp_min.conditioning import Unconditioned
    from clp_min.decoding import sample
    from clp_min.model import GPT, GPTConfig
    from clp_min.train import build_policy

    torch.manual_seed(0)
    cfg = TrainConfig(**{**TINY, "conditioning": "attn"})
    task = cfg.task()
    pi_ref = GPT(GPTConfig(vocab_size=task.vocab, block_size=task.prompt_len + task.response_len, n_layer=1,
                           n_head=2, n_embd=16)).eval()
    policy = build_policy(cfg, pi_ref)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.5 * torch.randn_like(p))  # far from pi_ref: a large KL
    w_prompts = np.array([[0.3, 0.7], [0.8, 0.2]])
    beta, n = 2.0, 3
    gen = torch.Generator().manual_seed(5)
    copy_gen = torch.Generator().manual_seed(5)
    # by hand, before the update (same draws: prompts then responses)
    prompts = tk.sample_prompts(task, 2, copy_gen, split="train").repeat_interleave(n, dim=0)  # as rl_step draws
    w = torch.from_numpy(w_prompts).float().repeat_interleave(n, dim=0)
    with torch.no_grad():
        y = rl.pad_responses(sample(policy, w, prompts, task.response_len, generator=copy_gen, eos=tk.EOS).tokens,
                             task.response_len)
        logp = rl.response_logprobs(policy, w, prompts, y)
        logp_ref = rl.response_logprobs(Unconditioned(pi_ref), w, prompts, y)
        r = tk.rewards(task, prompts, y).float()
    R = (w * r).sum(1) - beta * (logp - logp_ref)
    A = torch.stack([R.view(2, n)[:, j] - (R.view(2, n).sum(1) - R.view(2, n)[:, j]) / (n - 1)
                     for j in range(n)], dim=1).reshape(-1)
    assert (beta * (logp - logp_ref)).abs().mean() > 0.1  # the penalty matters here
    opt = torch.optim.SGD(policy.parameters(), lr=0.0)
    stats = rl.rl_step(policy, pi_ref, opt, task, w_prompts, n, beta, gen)
    assert stats["objective"] == pytest.approx(R.mean().item(), rel=1e-5, abs=1e-6)
    assert stats["loss"] == pytest.approx(-(A * logp).mean().item(), rel=1e-5, abs=1e-6)
    # the adaptive sampler's statistic: per prompt, the sample variance of the soft advantage R
    np.testing.assert_allclose(stats["per_prompt"]["soft_advantage_var"], R.view(2, n).var(dim=1).detach().numpy(),
                               rtol=1e-4, atol=1e-6)
