# %% [markdown]
# # 01 · The Gibbs policy and zero-shot mixing in a bandit
#
# *Course on Conditional Language Policies (CLP), after "Conditional Language Policy: A General
# Framework for Steerable Multi-Objective Finetuning", Wang et al., 2024, arXiv 2407.15762
# (https://arxiv.org/abs/2407.15762). Prerequisites: Python, numpy, probability; no paper needed. Time: about 30 minutes.*
#
# This notebook is about the simplest setting in which a language model can be
# steered across several rewards: a **bandit**, where the model answers a prompt
# with a single response. We will see
#
# 1. what the best policy for a weighted combination of rewards looks like when it
#    must stay close to a reference model (a *Gibbs policy*),
# 2. why mixing the logits of policies trained on one reward each gives *exactly*
#    the best policy for every weighting (no further training needed),
# 3. the same trick for the strength of the KL penalty,
# 4. the *Pareto front* of a two-reward problem, with the zero-shot mixtures on it.
#
# Every claim is checked numerically with the functions of `theory/`, and the two
# algebraic ones also symbolically with sympy. The statements are numbered as in
# `THEORY.md` of this repository (P1, P3, ...), but everything needed is explained here.

# %% [markdown]
# ## The setting
#
# * A prompt (a *context*) `x`, drawn with probability `rho(x)`, and a finite set of
#   possible responses `y`.
# * A **reference policy** `pi_ref(y|x)`: the pretrained model we start from.
# * `m` **rewards** `r_1(x, y), ..., r_m(x, y)`, for example helpfulness and brevity.
# * A **weighting** `w = (w_1, ..., w_m)` with `w_i >= 0` and `sum_i w_i = 1`: how much
#   the user cares about each reward.
# * A **KL weight** `beta > 0`: how strongly the policy is held close to `pi_ref`.
#
# The policy `pi` should maximise the expected weighted reward minus `beta` times its
# KL divergence from the reference:
#
# $$J_w(\pi) = \mathbb{E}_{x\sim\rho}\,\mathbb{E}_{y\sim\pi(\cdot|x)}\,[\,w\cdot r(x,y)\,] \;-\; \beta\,\mathbb{E}_{x\sim\rho}\,\mathrm{KL}\big(\pi(\cdot|x)\,\|\,\pi_{ref}(\cdot|x)\big).$$
#
# We write `R(pi)` for the vector of expected rewards and `K(pi)` for the expected KL.

# %%
import matplotlib.pyplot as plt
import numpy as np
from scipy.special import log_softmax

from theory import gibbs
from theory.front import exact_and_zero_shot_front
from theory.instances import Bandit
from theory.mixing import kl_weight_mix, logit_mix, mix_parameters
from theory.random_instances import random_bandit
from theory.weights import simplex_grid

np.set_printoptions(precision=4, suppress=True)

# %% [markdown]
# ## A small bandit
#
# One prompt, six responses, two rewards that pull in different directions:
# response 0 is best for reward 1, response 3 for reward 2, responses 1 and 2 are
# compromises, and responses 4 and 5 are poor for both. The reference policy is
# uniform. (`Bandit.from_arrays` takes the context probabilities `[X]`, the reference
# logits `[X, Y]` and the rewards `[X, Y, m]`, and checks them.)

# %%
rewards = np.array([[1.00, 0.00],
                    [0.85, 0.45],
                    [0.55, 0.80],
                    [0.00, 1.00],
                    [0.30, 0.30],
                    [0.60, 0.10]])  # (Y, m)
bandit = Bandit.from_arrays(context_probs=[1.0], ref_logits=np.zeros((1, 6)), rewards=rewards[None])
print("pi_ref  :", np.exp(bandit.ref_logp[0]))
print("rewards :\n", bandit.rewards[0])

# %% [markdown]
# ## 1. The optimum is a Gibbs policy (P1)
#
# The maximiser of `J_w` has a closed form: it reweights the reference policy by the
# exponential of the weighted reward,
#
# $$\pi^*_w(y|x) = \frac{\pi_{ref}(y|x)\,\exp\!\big(w\cdot r(x,y)/\beta\big)}{Z_w(x)},\qquad
# J_w(\pi^*_w) = \beta\,\mathbb{E}_\rho \log Z_w(x).$$
#
# With a small `beta` it concentrates on the response with the best `w . r`; with a
# large `beta` it barely moves from `pi_ref`. The next cell draws `pi*_w` (from
# `gibbs.gibbs_log_policy`, which takes a stack of weightings `[K, m]`) for three
# weightings and three values of `beta`.

# %%
W3 = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])  # (K, m)
fig, axes = plt.subplots(1, 3, figsize=(13, 3.2), sharey=True)
for ax, beta in zip(axes, [0.05, 0.2, 1.0]):
    pi_star = np.exp(gibbs.gibbs_log_policy(bandit, W3, beta))[:, 0]  # (K, Y)
    for k, w in enumerate(W3):
        ax.bar(np.arange(6) + 0.27 * (k - 1), pi_star[k], width=0.27, label=f"w = ({w[0]:g}, {w[1]:g})")
    ax.axhline(1 / 6, color="k", lw=0.8, ls=":", label="pi_ref")
    ax.set_title(f"beta = {beta}")
    ax.set_xlabel("response y")
axes[0].set_ylabel("pi*_w(y)")
axes[0].legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# **Why it is the optimum.** For *every* policy `pi`,
#
# $$J_w(\pi^*_w) - J_w(\pi) = \beta\,\mathbb{E}_\rho\,\mathrm{KL}(\pi\,\|\,\pi^*_w) \;\ge\; 0,$$
#
# so nothing beats `pi*_w`, and anything else falls short by exactly `beta` times its KL
# to `pi*_w`. We check the identity on 2000 random policies, computing the two sides by
# different routes: the left from the definition of `J_w` (`gibbs.bandit_stats`: expected
# reward minus `beta` times the KL to `pi_ref`) and from `beta log Z` (`gibbs.optimal_value`);
# the right from the KL between the two policies (`gibbs.kl_to`). The plot shows every
# random policy on the line of slope `-beta` through the optimum.

# %%
rng = np.random.default_rng(0)
beta, w = 0.2, np.array([[0.5, 0.5]])
log_pi = np.log(rng.dirichlet(np.full(6, 0.5), size=2000))[:, None, :]  # (K, X, Y), K random policies
W = np.repeat(w, len(log_pi), axis=0)  # (K, m)
J = gibbs.bandit_stats(bandit, log_pi, W, beta)["objective"]
J_star = gibbs.optimal_value(bandit, w, beta)[0]
kl_to_star = gibbs.kl_to(bandit, log_pi, np.repeat(gibbs.gibbs_log_policy(bandit, w, beta), len(log_pi), axis=0))
print("J_w(pi*_w) = beta log Z_w      :", J_star)
print("J_w(pi*_w) from the definition :", gibbs.bandit_stats(bandit, gibbs.gibbs_log_policy(bandit, w, beta), w, beta)["objective"][0])
print("max |J* - J(pi) - beta KL(pi || pi*)| over 2000 policies:", np.abs(J_star - J - beta * kl_to_star).max())
# the facts this cell teaches (the notebook fails if they stop holding)
assert np.abs(J_star - J - beta * kl_to_star).max() < 1e-10  # the identity
assert np.all(J <= J_star + 1e-12) and np.all(kl_to_star >= 0)  # nothing beats pi*_w

plt.figure(figsize=(5, 3.2))
plt.scatter(kl_to_star, J, s=4, alpha=0.4, label="random policies")
plt.plot([0, kl_to_star.max()], [J_star, J_star - beta * kl_to_star.max()], "r-", lw=1, label="J* - beta KL")
plt.plot([0], [J_star], "r*", ms=12, label="pi*_w")
plt.xlabel("KL(pi || pi*_w)")
plt.ylabel("J_w(pi)")
plt.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 2. Zero-shot logit mixing is exact in a bandit (P3)
#
# Suppose we have trained one policy per reward, each optimal for its reward alone:
# `pi_i = pi*_{e_i}` (`e_i` is the weighting that puts all weight on reward `i`).
# **Logit mixing** combines them without any further training:
#
# $$\pi^{mix}_w(y|x) \;\propto\; \prod_i \pi_i(y|x)^{w_i}\qquad\text{(log-probabilities added with weights } w_i\text{)}.$$
#
# In a bandit this is *exactly* `pi*_w`. Take logs of the Gibbs formula:
# `log pi_i = log pi_ref + r_i / beta - log Z_i`. Weighting by `w_i` and summing, with
# `sum_i w_i = 1`, gives `log pi_ref + w . r / beta - sum_i w_i log Z_i`; the last term does
# not depend on `y`, so after normalising only `pi*_w` is left.
#
# The next cell checks this on a random bandit with 4 prompts, 7 responses and 3 rewards,
# over a grid of 66 weightings and KL weights from `1e-3` to `1e3`, comparing
# `logit_mix` of the three per-reward optima with `gibbs_log_policy`.

# %%
rng = np.random.default_rng(1)
bandit3 = random_bandit(rng, contexts=4, responses=7, rewards=3)
W = simplex_grid(3, 10)  # (K, m), K = 66
for beta in [1e-3, 1e-1, 1.0, 1e3]:
    experts = gibbs.per_reward_log_policies(bandit3, beta)  # (m, X, Y)
    err = np.abs(logit_mix(experts, W) - gibbs.gibbs_log_policy(bandit3, W, beta)).max()
    print(f"beta = {beta:g}: max |log pi^mix_w - log pi*_w| over {len(W)} weightings = {err:.1e}")
    assert err < 1e-9 * max(1.0, 1 / beta)  # P3: exact up to rounding of r / beta

# %% [markdown]
# The same argument with symbols instead of numbers: `theory.symbolic` builds, with
# sympy, the mixture of two Gibbs policies on three responses, where the rewards, the
# reference probabilities, `beta` and `w = (lam, 1 - lam)` are all symbols, and returns
# `sum_y |pi^mix_w(y) / pi*_w(y) - 1|` after simplification. It is zero identically,
# not just on the instances we tried.

# %%
from theory.symbolic import prove_bandit_exactness

print("symbolic residual  sum_y |pi^mix_w(y) / pi*_w(y) - 1|  =", prove_bandit_exactness())
assert prove_bandit_exactness() == 0

# %% [markdown]
# **Averaging parameters is the same thing.** A tabular softmax policy has one
# logit per (prompt, response): its parameters `theta_i` are the logits, which equal
# `log pi_i` up to a constant per prompt. Averaging parameters, `theta(w) = sum_i w_i theta_i`
# ("Rewarded Soups"), therefore gives the logit mixture up to a constant per prompt,
# which the softmax removes. To see that the constants do not matter, we shift every
# expert's logits by arbitrary per-prompt constants before averaging them with
# `mix_parameters`.

# %%
beta = 0.1
experts = gibbs.per_reward_log_policies(bandit3, beta)  # (m, X, Y)
thetas = experts + rng.normal(size=(3, 4, 1)) * 10  # (m, X, Y): same policies, other logits
soup = log_softmax(mix_parameters(thetas, W), axis=-1)  # (K, X, Y)
print("max |log softmax(sum_i w_i theta_i) - log pi*_w| =",
      np.abs(soup - gibbs.gibbs_log_policy(bandit3, W, beta)).max())
assert np.abs(soup - gibbs.gibbs_log_policy(bandit3, W, beta)).max() < 1e-9

# %% [markdown]
# ## 3. Steering the KL weight (P4)
#
# The same algebra works for `beta`. Take one reward and the policy `pi*_beta` trained
# with KL weight `beta`. Mixing the logits of `pi_ref` and `pi*_beta` with weights
# `(1 - lam, lam)` gives `log pi_ref + lam r / beta + const`, that is, exactly the
# optimum for the KL weight `beta / lam`:
#
# $$\pi_{ref}^{\,1-\lambda}\,(\pi^*_\beta)^{\lambda} \;\propto\; \pi^*_{\beta/\lambda}.$$
#
# One trained policy thus gives the whole trade-off between reward and KL, including
# `lam > 1`, which extrapolates to a smaller KL weight than the one trained. We check it
# with `kl_weight_mix` on reward 1 of our bandit, numerically and symbolically.

# %%
from theory.symbolic import prove_kl_weight_identity

bandit1 = Bandit.from_arrays([1.0], np.zeros((1, 6)), rewards[None, :, :1])  # reward 1 only, m = 1
beta = 0.2
log_pi_beta = gibbs.gibbs_log_policy(bandit1, np.ones((1, 1)), beta)[0]  # (X, Y)
lam = np.linspace(0.05, 3.0, 60)  # (K,)
log_mixed = kl_weight_mix(bandit1.ref_logp, log_pi_beta, lam)  # (K, X, Y)
log_exact = np.stack([gibbs.gibbs_log_policy(bandit1, np.ones((1, 1)), beta / l)[0] for l in lam])
print("max |log mix_lam - log pi*_{beta/lam}| over 60 values of lam:", np.abs(log_mixed - log_exact).max())
print("symbolic residual  sum_y |mix_lam(y) / pi*_{beta/lam}(y) - 1|  =", prove_kl_weight_identity())
assert np.abs(log_mixed - log_exact).max() < 1e-9 and prove_kl_weight_identity() == 0  # P4

# %% [markdown]
# Each `lam` gives a point `(KL, expected reward)`. Below, the curve is traced by the
# exact optima `pi*_b` for KL weights `b` from 0.01 to 100; the dots are the mixtures of
# `pi_ref` with the single trained policy `pi*_0.2` (the star). They all lie on the curve,
# on both sides of the trained point.

# %%
ones = np.ones((len(lam), 1))
mix_stats = gibbs.bandit_stats(bandit1, log_mixed, ones, beta)
betas = np.logspace(-2, 2, 200)
curve = [gibbs.bandit_stats(bandit1, gibbs.gibbs_log_policy(bandit1, np.ones((1, 1)), b), np.ones((1, 1)), b)
         for b in betas]
trained = gibbs.bandit_stats(bandit1, log_pi_beta[None], np.ones((1, 1)), beta)

plt.figure(figsize=(5.5, 3.5))
plt.plot([c["kl"][0] for c in curve], [c["rewards"][0, 0] for c in curve], "-", color="gray",
         label="exact  pi*_b,  b in [0.01, 100]")
sc = plt.scatter(mix_stats["kl"], mix_stats["rewards"][:, 0], c=lam, s=14, cmap="viridis", zorder=3,
                 label="mix of pi_ref and pi*_0.2")
plt.plot(trained["kl"], trained["rewards"][:, 0], "r*", ms=13, zorder=4, label="trained pi*_0.2 (lam = 1)")
plt.colorbar(sc, label="lam")
plt.xlabel("KL(pi || pi_ref)")
plt.ylabel("expected reward 1")
plt.legend(fontsize=8, loc="lower right")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 4. The front of a two-reward bandit
#
# For each weighting `w`, the optimum `pi*_w` reaches some expected rewards
# `R(pi*_w) = (R_1, R_2)` at some KL `K(pi*_w)`. No policy is at least as good in all of
# `R_1`, `R_2` and `-K` without being `pi*_w` itself (P2: such a policy would have
# `J_w >= J_w(pi*_w)`, hence zero KL to `pi*_w` by section 1). Sweeping `w` across the
# simplex traces the **regularised Pareto front** at this `beta`.
#
# `theory.front.exact_and_zero_shot_front` evaluates, on a grid of weightings, both the
# exact optima and the zero-shot mixtures of the two per-reward optima, and scores the
# zero-shot points against the exact ones. Below, the lines are the exact fronts on a
# fine grid of 101 weightings for three values of `beta`; the crosses are zero-shot
# mixtures at 11 weightings. Smaller `beta` lets the policy move further from `pi_ref`
# (the black star), so its front reaches further out. The grey squares are the single
# responses: a policy that always gives one response can lie beyond a regularised front
# (here response 2, at `(0.55, 0.8)`), because it pays a KL of `log 6` for it; the front
# is optimal only when the KL counts as a third objective.

# %%
plt.figure(figsize=(5.5, 4.5))
for beta, color in zip([0.05, 0.15, 0.5], ["C0", "C1", "C2"]):
    fine = exact_and_zero_shot_front(bandit, beta, points=101)
    coarse = exact_and_zero_shot_front(bandit, beta, points=11)
    Z = fine["solution"]["optimal"]["rewards"]  # (K, m)
    A = coarse["solution"]["logit_mix"]["rewards"]  # (K, m)
    plt.plot(Z[:, 0], Z[:, 1], "-", color=color, label=f"exact front, beta = {beta}")
    plt.plot(A[:, 0], A[:, 1], "x", color=color, ms=8, mew=2)
ref = fine["reference"]["rewards"]
plt.plot(ref[0], ref[1], "k*", ms=12, label="pi_ref")
plt.plot(rewards[:, 0], rewards[:, 1], "s", color="gray", ms=5, label="single responses")
plt.plot([], [], "kx", label="zero-shot mixtures")
plt.xlabel("R_1")
plt.ylabel("R_2")
plt.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# The measures of `theory.pareto` (section 6 of `THEORY.md`) say the same in numbers:
# the hypervolume of the zero-shot points (the area they dominate above `pi_ref`)
# equals that of the exact points, and the distances between the two sets (IGD+, the
# additive epsilon indicator) and the largest gap `J_w(pi*_w) - J_w(pi^mix_w)` are at the
# level of floating-point rounding.

# %%
measures = exact_and_zero_shot_front(bandit, 0.15, points=11)["measures"]
for name, value in measures.items():
    print(f"{name:34s} {value: .3e}")
assert abs(measures["hypervolume_zero_shot"] - measures["hypervolume_exact"]) < 1e-9
assert measures["max_gap"] < 1e-9 and measures["igd_plus_zero_shot"] < 1e-9

# %% [markdown]
# ## Summary
#
# * With a KL penalty, the best policy for a weighting `w` is the **Gibbs policy**
#   `pi*_w ∝ pi_ref exp(w . r / beta)`, and every other policy loses exactly `beta` times
#   its KL to it (checked on 2000 random policies).
# * In a bandit, **mixing the logits** of the per-reward optima with weights `w` gives
#   `pi*_w` exactly, for every `w` and `beta` (to rounding numerically, about `1e-12` in
#   log-probabilities of size up to `1e3` at `beta = 1e-3`, and identically with sympy). Averaging the parameters of tabular softmax policies is
#   the same operation.
# * Mixing `pi_ref` with one trained policy steers the **KL weight** exactly:
#   `pi_ref^(1-lam) pi*_beta^lam ∝ pi*_{beta/lam}`.
# * Hence the zero-shot mixtures lie **on the Pareto front**: in one-step problems no
#   training across weightings is needed. Notebook 02 shows that this is no longer
#   true for sequences of tokens, and what decides how much is lost.

# %% [markdown]
# ## Exercises
#
# Answer in the cell below each exercise (replace `None`), then run the check cell after it. The
# checks say "not attempted yet" until you do. Reference solutions: `notebooks/solutions/01_gibbs_and_mixing.py`.
#
# ### Exercise 1 · The optimal value by hand
#
# For the six-response `bandit` of this notebook (its rewards are `rewards`, `[Y, m]`, and its reference
# log-probabilities `bandit.ref_logp`, `[X, Y]` with one context), compute the optimal value
# `J_w(pi*_w) = beta log Z_w` at `w = (0.3, 0.7)` and `beta = 0.2` with numpy only, from the
# definition of `Z_w`. Set `answer_1` to the number.

# %%
# Exercise 1: your answer (a number)
answer_1 = None

# %%
# Check of exercise 1
if answer_1 is None:
    print("exercise 1: not attempted yet")
else:
    J_opt = gibbs.optimal_value(bandit, np.array([[0.3, 0.7]]), 0.2)[0]
    assert abs(answer_1 - J_opt) < 1e-9, f"exercise 1: J_w(pi*_w) = {J_opt:.6f}, not {answer_1:.6f}"
    print("exercise 1: correct")

# %% [markdown]
# ### Exercise 2 · Steering the KL weight
#
# You have trained `pi*_beta` at `beta = 0.2` for reward 1 (`log_pi_beta` in section 3). Which mixing
# weight `lam` in `pi_ref^(1-lam) pi*_beta^lam` gives the optimum for the KL weight `0.5`? Set
# `answer_2` to it. The check mixes with your `lam` and compares with the optimum at `0.5`.

# %%
# Exercise 2: your answer (a number)
answer_2 = None

# %%
# Check of exercise 2
if answer_2 is None:
    print("exercise 2: not attempted yet")
else:
    one = np.ones((1, 1))
    mixed = kl_weight_mix(bandit1.ref_logp, gibbs.gibbs_log_policy(bandit1, one, 0.2)[0], np.array([answer_2]))[0]
    target = gibbs.gibbs_log_policy(bandit1, one, 0.5)[0]
    assert np.abs(mixed - target).max() < 1e-9, f"exercise 2: lam = {answer_2} gives another KL weight"
    print("exercise 2: correct")

# %% [markdown]
# ### Exercise 3 · The greedy limit
#
# As `beta -> 0`, which response does `pi*_w` choose in `bandit` for `w = (1/2, 1/2)`? Work it out
# from `rewards` (not from `gibbs`) and set `answer_3` to its index `y` (0 to 5).

# %%
# Exercise 3: your answer (an index)
answer_3 = None

# %%
# Check of exercise 3
if answer_3 is None:
    print("exercise 3: not attempted yet")
else:
    p_small_beta = np.exp(gibbs.gibbs_log_policy(bandit, np.array([[0.5, 0.5]]), 1e-3))[0, 0]  # (Y,)
    assert p_small_beta[answer_3] > 0.99, f"exercise 3: pi*_w puts {p_small_beta[answer_3]:.3f} on response {answer_3}"
    print("exercise 3: correct")
