# %% [markdown]
# # 06 · Checking a training loss against the exact gradient
#
# *Course on Conditional Language Policies (CLP). The method is from "Conditional Language Policy: A
# General Framework for Steerable Multi-Objective Finetuning", Wang et al., 2024, arXiv 2407.15762
# (https://arxiv.org/abs/2407.15762); this notebook is about a tool every RL finetuning code base needs, whatever the method.*
#
# An RL loss for a language model is a surrogate: its value means little, only its **gradient**
# matters, and that gradient is estimated from a handful of sampled responses. A wrong sign, a
# dropped term or a baseline that peeks at the sample it corrects does not crash anything: the
# loss still goes down, the rewards may even rise for a while, and the run is quietly optimising
# something else. Reading the code is one defence. This notebook shows a stronger one, possible
# because the task of notebooks 04 and 05 is small enough to list every response:
#
# 1. compute the **exact gradient** of the objective, with no sampling (`clp_min.oracle.exact_pg`),
# 2. compute many independent **Monte Carlo gradients** of the training loss (RLOO, `clp_min.rl`)
#    at the same parameters, prompts and weightings,
# 3. compare their average with the exact gradient: **cosine** and **relative bias**, each with
#    its **standard error** over batches, so that sampling noise is not mistaken for a bug,
# 4. do the same for three buggy losses, and see how each bug shows up.
#
# Prerequisites: notebook 04 (the task, `pi_ref`, the CLP) and the idea of a policy gradient.
# Time: about 15 minutes to read; the cells run in under a minute.

# %%
import copy
import os

import matplotlib.pyplot as plt
import numpy as np
import torch

from clp_min import GPT, ParamConditioned
from clp_min import task as tk
from clp_min.conditioning import Unconditioned
from clp_min.decoding import sample
from clp_min.oracle import exact_pg
from clp_min.pretrain import model_config, pretrain
from clp_min.rl import leave_one_out_advantages, pad_responses, response_logprobs

QUICK = os.environ.get("CLP_NOTEBOOK_QUICK") == "1"  # the tests' shorter run (fewer batches)
torch.set_num_threads(1)
torch.manual_seed(0)
np.set_printoptions(precision=3, suppress=True)

# %% [markdown]
# ## The objective and its exact gradient
#
# For a prompt `x` and a weighting `w`, the CLP maximises (section 0 of `THEORY.md`)
#
# $$J_w(x) = \sum_y \pi_\theta(y|x)\,\big[\,w\cdot r(x,y) - \beta\,(\log\pi_\theta(y|x) - \log\pi_{ref}(y|x))\,\big].$$
#
# With 4 tokens (EOS and 3 content tokens) and responses of at most 4 tokens, a prompt has 121
# producible responses, so `J_w(x)` is a finite sum and **autograd through the sum gives the exact
# gradient** `grad J_w`. `exact_pg.batch_objective` computes it for a batch of prompts, each with its
# weighting, in one pass of the model over a token tree of every response prefix.
#
# The setup: a tiny GPT pretrained briefly as `pi_ref`, and a CLP (`ParamConditioned`, two copies of
# every parameter) moved away from `pi_ref` by 30 exact-gradient steps, so that the KL term is not
# zero (at `theta = pi_ref` a dropped KL term would be invisible). We fix 16 training prompts and a
# weighting for each: every gradient below is taken at these parameters, prompts and weightings.

# %%
task = tk.TaskConfig(vocab=4, prompt_len=6, response_len=4, rewards=("coverage", "brevity"))
BETA = 0.1
pi_ref = GPT(model_config(task, n_layer=1, n_head=2, n_embd=16))
pretrain(pi_ref, task, steps=200, batch_size=64, lr=3e-3, generator=torch.Generator().manual_seed(1))
policy = ParamConditioned.from_base(copy.deepcopy(pi_ref), 2, "full")  # theta_1 = theta_2 = pi_ref's
pi_ref.eval().requires_grad_(False)

rng = np.random.default_rng(0)
optimizer = torch.optim.Adam(policy.parameters(), lr=1e-2)
for _ in range(30):  # move theta away from pi_ref (exact gradient steps on fresh prompts)
    exact_pg.exact_step(policy, pi_ref, optimizer, task, rng.dirichlet([1, 1], size=16), BETA,
                        torch.Generator().manual_seed(int(rng.integers(2 ** 31))))

P = 16  # prompts
prompts = tk.sample_prompts(task, P, torch.Generator().manual_seed(3), split="train")  # (P, L)
w = torch.from_numpy(rng.dirichlet([1, 1], size=P)).float()  # (P, m)
params = [p for p in policy.parameters() if p.requires_grad]


def flat_grad(loss: torch.Tensor) -> np.ndarray:
    """The gradient of a scalar ``loss`` with respect to the policy's parameters, flattened ``[D]``."""
    grads = torch.autograd.grad(loss, params, retain_graph=True)
    return torch.cat([g.flatten() for g in grads]).double().numpy()


exact = exact_pg.batch_objective(policy, pi_ref, task, prompts, w, BETA)
g_exact = flat_grad(-exact["objective"].mean())  # (D,): the gradient of the loss  - mean_x J_w(x)
print(f"D = {g_exact.size} parameters;  mean J_w = {exact['objective'].mean():.4f},  "
      f"mean KL(pi || pi_ref) = {exact['kl'].mean():.3f},  |grad| = {np.linalg.norm(g_exact):.4f}")
assert exact["kl"].mean() > 0.1  # far enough from pi_ref for the KL term to matter

# %% [markdown]
# **Is the "exact" gradient right?** It is only an oracle if it is. A cheap independent check: a
# central finite difference of `J` along a direction `u` must equal the directional derivative
# `grad J . u`. We take `u` along the gradient itself (where the derivative is largest, `|grad J|`)
# and along a random direction mixed with it. The objective is computed in float32, so the step
# `h` is a compromise between rounding and curvature; a wrong sign or a missing term would be off
# by far more than the 2% allowed.

# %%
def objective_at(shift: np.ndarray) -> float:
    """``mean_x J_w(x)`` with the parameters moved by ``shift`` ``[D]`` (then put back)."""
    with torch.no_grad():
        parts = torch.from_numpy(shift).float().split([p.numel() for p in params])
        for p, d in zip(params, parts):
            p.add_(d.view_as(p))
        J = exact_pg.batch_objective(policy, pi_ref, task, prompts, w, BETA)["objective"].mean().item()
        for p, d in zip(params, parts):
            p.sub_(d.view_as(p))
    return J


h = 1e-2
random_u = np.random.default_rng(1).normal(size=g_exact.size)
for label, u in (("along -grad", -g_exact), ("random + grad", random_u / np.linalg.norm(random_u) - g_exact / np.linalg.norm(g_exact))):
    u = u / np.linalg.norm(u)
    fd = (objective_at(h * u) - objective_at(-h * u)) / (2 * h)
    print(f"{label:14s} finite difference {fd:.5f}   autograd {-g_exact @ u:.5f}")
    assert abs(fd - (-g_exact @ u)) < 0.02 * abs(g_exact @ u)

# %% [markdown]
# ## The Monte Carlo loss and three bugs
#
# The training loss of `clp_min.rl` (RLOO): for each prompt draw `n = 4` responses from the policy
# at its `w`, score each with the one-sample objective
# `R_j = w . r(x, y_j) - beta (log pi(y_j|x) - log pi_ref(y_j|x))` (no gradient through `R_j`),
# subtract the **leave-one-out** baseline `b_j = mean_{l != j} R_l`, and take
# `loss = - mean_j (R_j - b_j) log pi(y_j|x)`. Its gradient is an unbiased estimate of
# `grad (- mean_x J_w(x))`: the baseline does not depend on `y_j`, so it adds nothing on average,
# and the KL term's other part, `E[grad log pi] = 0`, needs no sample.
#
# The three bugs, each one line away from the correct loss:
#
# * **baseline includes the sample**: `b_j = mean_l R_l` over all `n` samples, `y_j` included.
#   Then `R_j - b_j = (n-1)/n (R_j - b^{LOO}_j)`: the gradient shrinks by the factor `(n-1)/n`,
# * **KL term dropped**: `R_j = w . r(x, y_j)`; this is the gradient of the expected reward, not of `J_w`,
# * **reward sign flipped**: `R_j = - w . r - beta (...)`: the policy is pushed away from the rewards.
#
# Each loss is written as a function from the samples' `w . r` and `log pi - log pi_ref` (each
# `[P * n]`) to the advantages `R_j - b_j` `[P * n]`; the loss is `- mean_j A_j log pi(y_j|x)`.
# All four losses see the same sampled responses in a batch (a paired comparison).

# %%
n = 4  # samples per prompt


def loo(R: torch.Tensor) -> torch.Tensor:
    """``R_j - mean_{l != j} R_l`` within each prompt's group, flattened ``[P * n]`` (clp_min.rl)."""
    return leave_one_out_advantages(R.view(P, n)).view(-1)


ADVANTAGES = {
    "RLOO": lambda wr, kl: loo(wr - BETA * kl),
    "baseline includes the sample": lambda wr, kl: ((wr - BETA * kl).view(P, n)
                                                    - (wr - BETA * kl).view(P, n).mean(dim=1, keepdim=True)).view(-1),
    "KL term dropped": lambda wr, kl: loo(wr),
    "reward sign flipped": lambda wr, kl: loo(-wr - BETA * kl),
}


def monte_carlo_gradients(batches: int, generator: torch.Generator, losses: dict = ADVANTAGES) -> dict:
    """``{loss: [batches, D]}``: each loss's gradient on ``batches`` independent draws of ``n`` responses per prompt."""
    x, w_rows = prompts.repeat_interleave(n, dim=0), w.repeat_interleave(n, dim=0)  # (P*n, L), (P*n, m)
    out = {name: [] for name in losses}
    for _ in range(batches):
        with torch.no_grad():
            y = pad_responses(sample(policy, w_rows, x, task.response_len, generator=generator, eos=tk.EOS).tokens,
                              task.response_len)  # (P*n, T)
            logp_ref = response_logprobs(Unconditioned(pi_ref), w_rows, x, y)  # (P*n,)
            wr = (w_rows * tk.rewards(task, x, y).float()).sum(dim=1)  # (P*n,)
        logp = response_logprobs(policy, w_rows, x, y)  # (P*n,) differentiable
        kl = logp.detach() - logp_ref
        for name, advantages in losses.items():
            out[name].append(flat_grad(-(advantages(wr, kl) * logp).mean()))
    return {name: np.stack(g) for name, g in out.items()}


BATCHES = 60 if QUICK else 200
G = monte_carlo_gradients(BATCHES, torch.Generator().manual_seed(4))
print({name: g.shape for name, g in G.items()})

# %% [markdown]
# ## Measuring the bias, with its noise
#
# One batch's gradient is noisy; the question is whether its **average** over batches converges to
# the exact gradient `g*`. With `B` batches `g_1 .. g_B` and their mean `g_bar`:
#
# * **cosine** `cos(g_bar, g*)`: is the direction right?
# * **relative bias** `|E[g] - g*| / |g*|`. Plain `|g_bar - g*|` is inflated by noise: its square has
#   expectation `|E[g] - g*|^2 + tr(Sigma) / B`, so we subtract the estimated noise `tr(Sigma_hat) / B`
#   before the square root (and report the noise level `sqrt(tr(Sigma_hat) / B) / |g*|` beside it),
# * **scale along `g*`** `(g . g*) / |g*|^2`, averaged over batches: 1 for an unbiased loss,
# * **standard errors**: by resampling the batches with replacement (bootstrap, 200 resamples) for
#   the cosine and the relative bias; the usual `std / sqrt(B)` for the scale, an average.
#
# `compare` only needs the per-batch gradients `[B, D]` and `g*` `[D]`, so the same function
# would take gradients from another code base (or from a library gradient check) unchanged.

# %%
def relative_bias(g_bar: np.ndarray, noise: float, g_star: np.ndarray) -> float:
    """``sqrt(max(0, |g_bar - g*|^2 - noise)) / |g*|``: the bias of the mean with the sampling noise removed."""
    return float(np.sqrt(max(0.0, np.sum((g_bar - g_star) ** 2) - noise)) / np.linalg.norm(g_star))


def compare(g: np.ndarray, g_star: np.ndarray, rng: np.random.Generator, resamples: int = 200) -> dict:
    """Cosine, relative bias and scale of per-batch gradients ``g`` ``[B, D]`` against ``g_star`` ``[D]``."""
    B = len(g)

    def stats(sample):
        g_bar = sample.mean(axis=0)
        noise = sample.var(axis=0, ddof=1).sum() / B  # tr(Sigma_hat) / B
        cos = float(g_bar @ g_star / (np.linalg.norm(g_bar) * np.linalg.norm(g_star)))
        return cos, relative_bias(g_bar, noise, g_star), noise

    cos, bias, noise = stats(g)
    boot = np.array([stats(g[rng.integers(0, B, B)])[:2] for _ in range(resamples)])  # (resamples, 2)
    scale = g @ g_star / (g_star @ g_star)  # (B,)
    return {"cosine": cos, "cosine_se": float(boot[:, 0].std(ddof=1)),
            "relative_bias": bias, "relative_bias_se": float(boot[:, 1].std(ddof=1)),
            "noise": float(np.sqrt(noise) / np.linalg.norm(g_star)),
            "scale": float(scale.mean()), "scale_se": float(scale.std(ddof=1) / np.sqrt(B))}


report = {name: compare(g, g_exact, np.random.default_rng(5)) for name, g in G.items()}
print(f"{BATCHES} batches of {P} prompts x {n} samples")
print(f"{'loss':30s} {'cosine':>15s} {'relative bias':>17s} {'(noise)':>8s} {'scale along g*':>17s}")
for name, s in report.items():
    print(f"{name:30s} {s['cosine']:7.3f} ± {s['cosine_se']:.3f} {s['relative_bias']:9.3f} ± {s['relative_bias_se']:.3f}"
          f" {s['noise']:8.3f} {s['scale']:9.3f} ± {s['scale_se']:.3f}")

# %% [markdown]
# How each loss shows up:
#
# * **RLOO**: cosine close to 1, relative bias within a few standard errors of 0, scale along `g*`
#   within a few standard errors of 1: nothing distinguishes its average from the exact gradient.
# * **Baseline includes the sample**: the *same cosine* as RLOO (it is RLOO times `(n-1)/n` on every
#   batch), so a cosine check alone misses it; the scale is `(n-1)/n = 0.75` and the relative bias
#   `1/n = 0.25`. (Adam would partly hide this bug by normalising the step; plain SGD would not.)
# * **KL term dropped**: the cosine is far from 1 and the relative bias is large, well above 1: the
#   estimate has a big component that `g*` does not have (the pull back towards `pi_ref`, see
#   below). Its scale along `g*` alone would not say much: it can be close to 1.
# * **Reward sign flipped**: a negative cosine here, and the largest relative bias. (It is not
#   exactly `-g*`: the KL part of `R_j` kept its sign.)
#
# The plot shows the running cosine and relative bias as batches accumulate: an unbiased loss keeps
# improving with more batches (towards cosine 1 and bias 0), a biased one levels off at its bias.

# %%
fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 3.6))
ks = np.unique(np.geomspace(5, BATCHES, 12).astype(int))
for name, g in G.items():
    running = [compare(g[:k], g_exact, np.random.default_rng(0), resamples=2) for k in ks]
    ax0.plot(ks, [s["cosine"] for s in running], "o-", ms=3, label=name)
    ax1.plot(ks, [max(s["relative_bias"], 1e-3) for s in running], "o-", ms=3, label=name)
ax0.set_xscale("log")
ax0.set_xlabel("batches averaged")
ax0.set_ylabel("cosine with the exact gradient")
ax0.legend(fontsize=7)
ax1.set_xscale("log")
ax1.set_yscale("log")
ax1.set_xlabel("batches averaged")
ax1.set_ylabel("relative bias (noise removed, floored at 1e-3)")
plt.tight_layout()
plt.show()

# %%
ok, self_b = report["RLOO"], report["baseline includes the sample"]
nokl, flip = report["KL term dropped"], report["reward sign flipped"]
assert ok["cosine"] > 0.95 and abs(ok["scale"] - 1) < 4 * ok["scale_se"]  # unbiased: within noise
assert ok["relative_bias"] < 4 * ok["relative_bias_se"] + 0.05
assert abs(self_b["scale"] - (n - 1) / n) < 4 * self_b["scale_se"] and abs(self_b["cosine"] - ok["cosine"]) < 1e-6
assert nokl["cosine"] < 0.9 and nokl["relative_bias"] > 10 * ok["relative_bias_se"] + 0.5
assert flip["cosine"] < 0 and flip["relative_bias"] > 1

# %% [markdown]
# **Why the orthogonal part matters.** The dropped-KL loss estimates `grad E[w . r]`, and
# `grad J = grad E[w . r] - beta grad KL`. Its bias is therefore exactly `- beta grad KL` (times -1
# for the loss), which `exact_pg` can compute too: run the exact objective with `beta = 0`. The cell
# checks that the Monte Carlo bias matches this prediction within its noise: a bug found this way
# can also be *explained*, not just detected.

# %%
g_reward = flat_grad(-exact_pg.batch_objective(policy, pi_ref, task, prompts, w, 0.0)["objective"].mean())  # (D,)
pred = compare(G["KL term dropped"], g_reward, np.random.default_rng(6))
print(f"KL term dropped vs the exact grad of E[w . r]: cosine {pred['cosine']:.3f} ± {pred['cosine_se']:.3f}, "
      f"relative bias {pred['relative_bias']:.3f} ± {pred['relative_bias_se']:.3f}")
assert pred["cosine"] > 0.95 and pred["relative_bias"] < 4 * pred["relative_bias_se"] + 0.05

# %% [markdown]
# ## Summary
#
# * In an enumerable task the objective `J_w` and its gradient are exact finite sums; checked once
#   against a finite difference, that gradient is an oracle for any training loss.
# * Average many independent Monte Carlo gradients of the loss and compare the average with the
#   oracle: cosine, relative bias with the sampling noise subtracted, and the scale along `g*`,
#   each with a standard error, so that a difference is called a bias only when it stands out of
#   the noise.
# * Different bugs leave different fingerprints: a rescaling keeps the cosine (check the scale),
#   a dropped term keeps the scale along `g*` (check the cosine and the bias), a sign flip turns
#   the cosine negative.
# * The method needs only a way to compute the exact gradient on a small instance of the problem;
#   the loss under test can be anyone's, fed the same prompts and weightings.

# %% [markdown]
# ## Exercises
#
# Answer in the cell below each exercise (replace `None`), then run the check cell after it. The
# checks say "not attempted yet" until you do. Reference solutions: `notebooks/solutions/06_checking_a_loss.py`.
#
# ### Exercise 1 · The baseline's factor
#
# With the baseline that includes the sample, `R_j - mean_l R_l = c(n) (R_j - b^{LOO}_j)`. Write
# `c(n)` as a Python function of the number of samples `n` (`answer_1 = lambda n: ...`).
# The check compares it with the formula's derivation and with the measured scale above.

# %%
# Exercise 1: your answer (a function of n)
answer_1 = None

# %%
# Check of exercise 1
if answer_1 is None:
    print("exercise 1: not attempted yet")
else:
    for n_ in (2, 3, 4, 8):
        R_ = torch.randn(5, n_, dtype=torch.float64, generator=torch.Generator().manual_seed(n_))
        ratio = (R_ - R_.mean(dim=1, keepdim=True)) / leave_one_out_advantages(R_)
        assert np.allclose(ratio.numpy(), answer_1(n_)), f"exercise 1: c({n_}) is {ratio[0, 0]:.4f}, not {answer_1(n_)}"
    assert abs(answer_1(n) - self_b["scale"]) < 4 * self_b["scale_se"], "exercise 1: does not match the measured scale"
    print("exercise 1: correct")

# %% [markdown]
# ### Exercise 2 · A valid baseline of your own
#
# Any baseline `b_j` that does not depend on the sample `y_j` keeps the loss unbiased. Write a
# function `answer_2(R)` that takes the one-sample objectives `R` `[P, n]` and returns advantages
# `R_j - b_j` `[P, n]` with **some baseline other than the leave-one-out mean** (for instance the
# median, or the maximum, of the *other* samples). The check perturbs each `R_j` and verifies that
# `A_j` moves by exactly the perturbation (`b_j` does not see `y_j`), and that the baseline is
# neither the leave-one-out mean nor zero.

# %%
# Exercise 2: your answer (a function of R [P, n])
answer_2 = None

# %%
# Check of exercise 2
if answer_2 is None:
    print("exercise 2: not attempted yet")
else:
    R_ = torch.randn(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    A_ = answer_2(R_)
    assert A_.shape == R_.shape, "exercise 2: A must have R's shape"
    for j in range(R_.size(1)):
        bumped = R_.clone()
        bumped[:, j] += 0.37
        moved = answer_2(bumped)[:, j] - A_[:, j]  # (P,): b_j must not move (the others' baselines may)
        assert torch.allclose(moved, torch.full_like(moved, 0.37)), f"exercise 2: the baseline of sample {j} sees it"
    assert not torch.allclose(A_, leave_one_out_advantages(R_)), "exercise 2: that is the leave-one-out mean"
    assert not torch.allclose(A_, R_), "exercise 2: no baseline at all (valid, but not the exercise)"
    print("exercise 2: correct")

# %% [markdown]
# ### Exercise 3 · Explain a bias
#
# A fourth buggy loss uses `R_j = w . r(x, y_j) - 2 beta (log pi - log pi_ref)` (the KL weight
# doubled by mistake). Its average gradient is the exact gradient of `- mean_x J` at another KL
# weight. Set `answer_3` to that KL weight (a number); the check estimates the buggy loss's
# gradient from 60 batches and compares it with the exact gradient at your KL weight.

# %%
# Exercise 3: your answer (a KL weight)
answer_3 = None

# %%
# Check of exercise 3
if answer_3 is None:
    print("exercise 3: not attempted yet")
else:
    doubled = {"doubled KL": lambda wr, kl: loo(wr - 2 * BETA * kl)}
    g_bug = monte_carlo_gradients(60, torch.Generator().manual_seed(7), doubled)["doubled KL"]
    g_at = flat_grad(-exact_pg.batch_objective(policy, pi_ref, task, prompts, w, float(answer_3))["objective"].mean())
    s = compare(g_bug, g_at, np.random.default_rng(8))
    print(f"cosine {s['cosine']:.3f}, relative bias {s['relative_bias']:.3f} ± {s['relative_bias_se']:.3f}")
    assert s["cosine"] > 0.95 and s["relative_bias"] < 4 * s["relative_bias_se"] + 0.05, \
        "exercise 3: the buggy gradient does not match the exact gradient at that KL weight"
    print("exercise 3: correct")
