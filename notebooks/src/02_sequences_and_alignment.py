# %% [markdown]
# # 02 · Sequences: per-token mixing, the Hölder gap and alignment
#
# *Course on Conditional Language Policies (CLP), after "Conditional Language Policy: A General
# Framework for Steerable Multi-Objective Finetuning", Wang et al., 2024, arXiv 2407.15762
# (https://arxiv.org/abs/2407.15762). Prerequisites: notebook 01. Time: about 40 minutes.*
#
# Notebook 01 showed that in a one-step problem (a bandit) mixing the logits of
# policies trained on one reward each gives the best policy for every weighting,
# exactly. A language model, however, writes its answer **one token at a time**, and
# zero-shot methods mix the per-reward models token by token. This notebook shows
#
# 1. how the optimal policy is built token by token from *soft values*,
# 2. that per-token mixing is no longer exact, and the **Hölder gap** that measures why,
#    drawn on a small tree,
# 3. the exact cost of per-token mixing, and how it is controlled by the
#    **misalignment** of the rewards (bounds checked on random trees),
# 4. a counterexample where the zero-shot mixture is **Pareto-dominated**, so that
#    training across weightings is needed.
#
# The statements are numbered as in `THEORY.md` of this repository (P5 to P10), but
# everything needed is explained here. Notation is that of notebook 01: reference policy
# `pi_ref`, rewards `r = (r_1, ..., r_m)`, weighting `w` on the simplex, KL weight `beta`,
# objective `J_w(pi) = E[w . r] - beta KL(pi || pi_ref)`.

# %% [markdown]
# ## A token tree
#
# A response is a sequence `y = (a_1, ..., a_T)` of `T` tokens from a vocabulary of `V`
# tokens. A **prefix** (a *state*) `s` is the part written so far; appending token `a`
# leads to the prefix `sa`. The reference model gives a token distribution
# `pi_ref(a|s)` at every prefix, and the rewards are paid once the sequence is complete,
# at the `V^T` leaves. `theory.instances.Tree` stores this, and
# `theory.random_instances.random_tree` draws one at random (normal reference logits,
# normal rewards). We use `V = 2` tokens and `T = 3` steps, so 8 sequences.
#
# The helper `draw_tree` below only does the drawing: it places each prefix at its
# depth, writes a number at each node and the reference probability on each edge.

# %%
import matplotlib.pyplot as plt
import numpy as np
from scipy.special import log_softmax

from theory import bounds, gibbs
from theory import tree as tr
from theory.instances import Bandit, Tree
from theory.random_instances import p10_tree, random_tree
from theory.solve import solve_tree

np.set_printoptions(precision=4, suppress=True)


def draw_tree(ax, tree, node_values, title, edge_probs=None, edge_probs_2=None, fmt="{:.3f}", cmap="Oranges"):
    """Nodes coloured by ``node_values`` (a list by depth of ``[V^t]``), leaves labelled with r.

    Edges show ``edge_probs`` (by depth, ``[V^t, V]``; default pi_ref), and ``edge_probs_2`` in brackets.
    """
    V, T = tree.vocab, tree.horizon
    edge_probs = [np.exp(lp) for lp in tree.ref_logp] if edge_probs is None else edge_probs
    vmax = max(float(np.max(v)) for v in node_values) or 1.0
    x_of = lambda t, s: (s + 0.5) * V ** (T - t) - 0.5  # centre of the leaves below prefix s
    for t in range(T + 1):
        for s in range(V ** t):
            x, y = x_of(t, s), -t
            if t < T:
                for a in range(V):
                    xc = x_of(t + 1, s * V + a)
                    ax.plot([x, xc], [y, y - 1], "-", color="gray", lw=1, zorder=1)
                    label = f"{edge_probs[t][s, a]:.2f}"
                    if edge_probs_2 is not None:
                        label += f" ({edge_probs_2[t][s, a]:.2f})"
                    ax.text((x + xc) / 2 + (0.25 if a else -0.25), y - 0.5, label,
                            fontsize=7, color="dimgray", ha="center", va="center")
            val = node_values[t][s]
            ax.scatter([x], [y], s=900, c=[val], cmap=cmap, vmin=0 if np.min(node_values[0]) >= 0 else None,
                       vmax=vmax, edgecolors="k", zorder=2)
            ax.text(x, y, fmt.format(val), ha="center", va="center", fontsize=7, zorder=3,
                    color="white" if val > 0.6 * vmax else "black")
    for s in range(V ** T):
        r = tree.rewards[s]
        ax.text(x_of(T, s), -T - 0.45, "".join(map(str, np.unravel_index(s, (V,) * T))) + "\nr=("
                + ", ".join(f"{v:.2f}" for v in r) + ")", ha="center", va="top", fontsize=7)
    ax.set_title(title, fontsize=10)
    ax.set_xlim(-0.7, V ** T - 0.3)
    ax.set_ylim(-T - 1.3, 0.5)
    ax.axis("off")


tree = random_tree(np.random.default_rng(2), vocab=2, horizon=3, rewards=2)
beta = 0.5
w = np.array([[0.5, 0.5]])  # (K, m): one weighting, equal weights
print("rewards at the 8 leaves (r_1, r_2):\n", tree.rewards)

# %% [markdown]
# ## 1. Soft values and the optimal policy token by token (P5)
#
# A whole sequence is just one response among `V^T`, so the tree *is* a bandit and
# the optimum of notebook 01 still applies: `pi*_w(y) ∝ pi_ref(y) exp(w . r(y) / beta)`.
# To write it token by token we need the **soft value** of each prefix,
#
# $$V_w(s) = \beta \log \mathbb{E}_{\pi_{ref}}\big[e^{\,w\cdot r/\beta}\,\big|\,s\big],
# \qquad V_w(\text{leaf}) = w\cdot r(\text{leaf}),\qquad
# V_w(s) = \beta\log\sum_a \pi_{ref}(a|s)\,e^{V_w(sa)/\beta},$$
#
# a "soft maximum" of the values of the continuations (it tends to the maximum as
# `beta -> 0` and to the average under `pi_ref` as `beta -> infinity`). The optimal token
# policy then prefers tokens whose continuation is worth more than the prefix:
#
# $$\pi^*_w(a|s) = \pi_{ref}(a|s)\,\exp\big((V_w(sa) - V_w(s))/\beta\big).$$
#
# The tree below shows `V_w` for `w = (1/2, 1/2)` and `beta = 0.5` at each node
# (`tr.soft_values_w` returns a list by depth of arrays `[K, V^t]`), with `pi_ref` on
# the edges.

# %%
V_w = tr.soft_values_w(tree, w, beta)  # list by depth of (K, V^t)
fig, ax = plt.subplots(figsize=(10, 4.2))
draw_tree(ax, tree, [v[0] for v in V_w], "soft values V_w(s),  w = (1/2, 1/2),  beta = 0.5  (edges: pi_ref)",
          cmap="Blues")
plt.show()

# %% [markdown]
# **Check (P5).** Multiplying the optimal token probabilities along each sequence must
# give the Gibbs policy of notebook 01 over the 8 complete sequences. We compute the first
# with the tree functions and the second by treating the tree as a bandit with one
# context and 8 responses (reference log-probabilities of whole sequences), with
# `gibbs.gibbs_log_policy`; the two routes share no code beyond the reference model.

# %%
log_ref_seq = tr.leaf_log_probs(tree, tr.reference_token_policy(tree))  # (1, V^T)
as_bandit = Bandit.from_arrays([1.0], log_ref_seq, tree.rewards[None])  # X = 1, Y = V^T
W = np.stack([np.linspace(0, 1, 11), 1 - np.linspace(0, 1, 11)], axis=1)  # (K, m)
for b in [0.01, 0.5, 100.0]:
    seq_from_tokens = tr.leaf_log_probs(tree, tr.optimal_token_policy(tree, W, b))  # (K, V^T)
    seq_gibbs = gibbs.gibbs_log_policy(as_bandit, W, b)[:, 0]  # (K, Y)
    print(f"beta = {b:5}: max |log pi*_w(y) token by token - log Gibbs(y)| = {np.abs(seq_from_tokens - seq_gibbs).max():.1e}")
    assert np.abs(seq_from_tokens - seq_gibbs).max() < 1e-9 * max(1.0, 1 / b)  # P5 (the notebook fails otherwise)

# %% [markdown]
# ## 2. Per-token zero-shot mixing
#
# Now suppose, as in notebook 01, that we have the per-reward optimal policies
# `pi_i = pi*_{e_i}`, each a token-level policy, and mix their logits **at every token**:
#
# $$\pi^{mix}_w(a|s) \propto \prod_i \pi_i(a|s)^{w_i} \;\propto\; \pi_{ref}(a|s)\,
# \exp\Big(\sum_i w_i V_i(sa)/\beta\Big),\qquad V_i = V_{e_i}.$$
#
# At the last token the continuation values are just the rewards, so there it is a
# bandit and the mixture is exact. At earlier tokens the mixture uses the weighted
# average of the per-reward soft values `sum_i w_i V_i(sa)`, whereas the optimum uses the
# soft value of the weighted reward `V_w(sa)`. These differ, because a soft maximum of
# an average is not the average of soft maxima. The next cell compares the two token
# policies depth by depth (`tr.zero_shot_token_policy` against `tr.optimal_token_policy`).

# %%
log_mix = tr.zero_shot_token_policy(tree, w, beta)  # list by depth of (K, V^t, V)
log_star = tr.optimal_token_policy(tree, w, beta)
for t in range(tree.horizon):
    print(f"token {t + 1}: max |log pi^mix_w(a|s) - log pi*_w(a|s)| over prefixes = "
          f"{np.abs(log_mix[t] - log_star[t]).max():.2e}")
assert np.abs(log_mix[-1] - log_star[-1]).max() < 1e-9  # the last token is a bandit: mixed exactly
assert np.abs(log_mix[0] - log_star[0]).max() > 1e-3  # earlier tokens: not exact on this tree

# %% [markdown]
# ## 3. The Hölder gap, drawn on the tree
#
# The difference between the two kinds of value is the **Hölder gap**
#
# $$G_w(s) = \sum_i w_i V_i(s) - V_w(s) \;\ge\; 0,\qquad G_w(\text{leaf}) = 0.$$
#
# It is never negative: `exp(V_w(s)/beta) = E[prod_i (e^{r_i/beta})^{w_i}]` and Hölder's
# inequality bounds this by `prod_i E[e^{r_i/beta}]^{w_i} = exp(sum_i w_i V_i(s)/beta)`.
# It is zero when the rewards agree (up to constants) below `s`, and large where the best
# continuations for the different rewards are different. The tree below shows `G_w`
# (`tr.holder_gap`) at each node, and on the edges the probabilities the zero-shot
# mixture gives to each token, with those of the optimum in brackets.

# %%
G = tr.holder_gap(tree, w, beta)  # list by depth of (K, V^t)
fig, ax = plt.subplots(figsize=(10, 4.2))
draw_tree(ax, tree, [g[0] for g in G], "Hölder gap G_w(s),  w = (1/2, 1/2),  beta = 0.5  (edges: pi^mix_w (pi*_w))",
          edge_probs=[np.exp(lp[0]) for lp in log_mix], edge_probs_2=[np.exp(lp[0]) for lp in log_star])
plt.show()

# %% [markdown]
# **How the gap moves the mixture (P6).** Since `sum_i w_i V_i(sa) = V_w(sa) + G_w(sa)`,
# the mixture is the optimum tilted towards tokens whose continuation has a larger gap:
#
# $$\pi^{mix}_w(a|s) \propto \pi^*_w(a|s)\,\exp\big(G_w(sa)/\beta\big).$$
#
# So per-token mixing is exactly right at `s` when `G_w(sa)` is the same for all tokens
# `a` (as at the last token, where `G_w = 0` at every leaf), and it overrates the branches on which the rewards disagree: it acts as if it
# could get the best of each reward there, which no single continuation can deliver.
# We check the formula numerically: tilting `pi*_w` by the gap and renormalising must
# give the mixture.

# %%
for t in range(tree.horizon):
    tilted = log_softmax(log_star[t] + G[t + 1].reshape(1, 2 ** t, 2) / beta, axis=-1)  # (K, V^t, V)
    print(f"token {t + 1}: max |log pi^mix - log normalise(pi* exp(G/beta))| = {np.abs(tilted - log_mix[t]).max():.1e}")
    assert np.abs(tilted - log_mix[t]).max() < 1e-9  # P6
assert all(np.all(g >= -1e-12) for g in G) and np.all(G[-1] == 0)  # G_w >= 0, and 0 at the leaves

# %% [markdown]
# ## 4. What per-token mixing costs (P7)
#
# The loss of the zero-shot mixture against the optimum, `Delta(w) = J_w(pi*_w) - J_w(pi^mix_w)`,
# is by notebook 01's identity `beta` times the KL between the two *sequence*
# distributions, and by the chain rule for KL this splits into one term per token:
#
# $$\Delta(w) = \beta\,\mathrm{KL}_{seq}(\pi^{mix}_w\,\|\,\pi^*_w)
# = \beta\sum_t \mathbb{E}_{s_t\sim\pi^{mix}}\,\mathrm{KL}\big(\pi^{mix}(\cdot|s_t)\,\|\,\pi^*_w(\cdot|s_t)\big).$$
#
# Three routes follow: the difference of the objectives computed from expected rewards
# and KL to `pi_ref` (`solve_tree`), the sequence-level KL, and the sum of per-token KLs
# (`tr.stepwise_kl`), across 21 weightings.

# %%
W = np.stack([np.linspace(0, 1, 21), 1 - np.linspace(0, 1, 21)], axis=1)  # (K, m)
sol = solve_tree(tree, W, beta)
steps = tr.stepwise_kl(tree, tr.zero_shot_token_policy(tree, W, beta), tr.optimal_token_policy(tree, W, beta))
Delta = sol["optimal"]["objective"] - sol["logit_mix"]["objective"]  # (K,) the definition
print("max |Delta - beta KL_seq|          :", np.abs(Delta - beta * sol["kl_mix_to_opt"]).max())
print("max |Delta - beta sum_t KL_t|      :", np.abs(Delta - beta * np.sum(steps, axis=0)).max())
print("per-token terms at w = (1/2, 1/2)  :", beta * np.array(steps)[:, 10], "(the last is 0: a bandit)")
assert np.abs(Delta - beta * sol["kl_mix_to_opt"]).max() < 1e-10  # P7
assert np.abs(Delta - beta * np.sum(steps, axis=0)).max() < 1e-10 and abs(steps[-1][10]) < 1e-12
assert sol["gap"][0] < 1e-12 and sol["gap"][-1] < 1e-12 and sol["gap"][10] > 1e-3  # 0 at the ends only

plt.figure(figsize=(5, 3))
plt.plot(W[:, 0], sol["gap"], "o-", ms=4)
plt.xlabel("w_1  (w_2 = 1 - w_1)")
plt.ylabel("Delta(w)")
plt.title("loss of per-token mixing, beta = 0.5", fontsize=10)
plt.tight_layout()
plt.show()

# %% [markdown]
# The loss is zero at the two ends, where the mixture is one of the trained policies,
# and positive in between. For a tree with two tokens (`V = 2`, `T = 2`, two rewards),
# `theory.symbolic` proves the identity `Delta = beta KL_seq(pi^mix || pi*)` with sympy:
# the rewards, the reference probabilities, `beta` and `w = (lam, 1 - lam)` are all
# symbols, both policies are built token by token, and the residual simplifies to 0.

# %%
from theory.symbolic import prove_gap_identity_two_token

print("symbolic residual  Delta - beta KL_seq  =", prove_gap_identity_two_token())
assert prove_gap_identity_two_token() == 0

# %% [markdown]
# ## 5. Alignment controls the gap (P8, P9)
#
# When are the rewards "compatible enough" for zero-shot mixing? Define the
# **misalignment** below a prefix `s` as
#
# $$\varepsilon(s) = \max_{i<j}\;\tfrac12\,\mathrm{osc}_s(r_i - r_j),$$
#
# where `osc_s` is the largest minus the smallest value over the leaves below `s`. It is
# zero exactly when every pair of rewards differs by a constant below `s`, which is when
# the per-reward optimal policies coincide there ("aligned"). Then (P8) the gap is zero on
# that whole subtree and the mixture is optimal there. More generally (P9):
#
# * `G_w(s) <= sum_{i<j} w_i w_j osc_s(r_i - r_j) <= (1 - |w|^2) eps(s)`,
# * for two rewards, `w = (lam, 1 - lam)` and `D = 2 eps(s)`:
#   `G_w(s) <= lam (1 - lam) min(D, D^2 / (8 beta))`,
# * and the loss is bounded token by token through Hoeffding's lemma,
#   `Delta(w) <= sum_{t <= T-2} E_{s_t ~ pi^mix} min(b_t^2 / (8 beta), b_t)`, where `b_t` is
#   the spread of `G_w` over the children of `s_t`; bounding that spread by the
#   misalignment turns alignment into a rate (`bounds.gap_alignment_bound`).
#
# `random_tree(..., misalignment=eps)` draws trees whose rewards are a shared part plus a
# perturbation scaled so that the root misalignment equals `eps`. For each of 9 values of
# `eps` we draw 20 trees with `V = 3`, `T = 3`, and plot the root gap and the loss against
# `eps`, each with its bound.

# %%
eps_grid = np.array([0.0, 0.05, 0.1, 0.2, 0.4, 0.7, 1.0, 1.5, 2.0])
rows = []  # (eps, G_root, pairwise bound, eps bound, beta bound, Delta, stepwise bound, alignment bound)
rng = np.random.default_rng(0)
for eps in eps_grid:
    for _ in range(20):
        t_ = random_tree(rng, vocab=3, horizon=3, rewards=2, misalignment=eps)
        rows.append([eps,
                     tr.holder_gap(t_, w, beta)[0][0, 0],
                     bounds.holder_gap_pairwise_bound(t_, w)[0][0, 0],
                     bounds.holder_gap_eps_bound(t_, w)[0][0, 0],
                     bounds.holder_gap_beta_bound(t_, w, beta)[0][0, 0],
                     solve_tree(t_, w, beta)["gap"][0],
                     bounds.gap_stepwise_bound(t_, w, beta)[0],
                     bounds.gap_alignment_bound(t_, w, beta)[0]])
eps_, G_root, b_pair, b_eps, b_beta, Delta, b_step, b_align = np.array(rows).T
print("every bound holds on all", len(rows), "trees:",
      bool(np.all(G_root <= b_pair + 1e-12) and np.all(b_pair <= b_eps + 1e-12) and np.all(G_root <= b_beta + 1e-12)
           and np.all(Delta <= b_step + 1e-12) and np.all(b_step <= b_align + 1e-12)))
print("aligned trees (eps = 0): max G_w(root) =", G_root[eps_ == 0].max(), " max Delta =", Delta[eps_ == 0].max())
assert np.all(G_root <= b_pair + 1e-12) and np.all(b_pair <= b_eps + 1e-12) and np.all(G_root <= b_beta + 1e-12)
assert np.all(Delta <= b_step + 1e-12) and np.all(b_step <= b_align + 1e-12)  # P9, on every tree
assert G_root[eps_ == 0].max() < 1e-9 and Delta[eps_ == 0].max() < 1e-9  # P8
mis = eps_ > 0
print("closest approach to the bounds on the misaligned trees:"
      f"  G / min(eps bound, beta bound) <= {np.max(G_root[mis] / np.minimum(b_eps, b_beta)[mis]):.3f},"
      f"  Delta / stepwise bound <= {np.max(Delta[mis] / b_step[mis]):.3f},"
      f"  Delta / alignment bound <= {np.max(Delta[mis] / b_align[mis]):.3f}")

fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 3.8))
ax0.scatter(eps_, G_root, s=10, alpha=0.6, label="G_w(root) of each tree")
e = np.linspace(0, eps_grid.max(), 200)
ax0.plot(e, 0.5 * e, "k--", lw=1, label="(1 - |w|^2) eps")
ax0.plot(e, 0.25 * np.minimum(2 * e, (2 * e) ** 2 / (8 * beta)), "r-", lw=1, label="lam(1-lam) min(D, D^2/(8 beta))")
ax0.set_xlabel("root misalignment eps")
ax0.set_ylabel("Hölder gap at the root")
ax0.legend(fontsize=8)
ax1.scatter(eps_, Delta, s=10, alpha=0.6, label="Delta(w) of each tree")
ax1.scatter(eps_, b_align, s=10, marker="_", color="k", label="alignment bound of each tree")
ax1.set_yscale("symlog", linthresh=1e-4)
ax1.set_xlabel("root misalignment eps")
ax1.set_ylabel("loss of per-token mixing")
ax1.legend(fontsize=8)
fig.suptitle("w = (1/2, 1/2), beta = 0.5, 180 random trees (V = 3, T = 3)", fontsize=10)
plt.tight_layout()
plt.show()

# %% [markdown]
# At `eps = 0` both the gap and the loss vanish (P8). As the misalignment grows, both
# grow, always below their bounds: the gap roughly quadratically at first, as the
# `D^2 / (8 beta)` form predicts, and the loss by a wide margin below the alignment
# bound. The loss is much smaller than the root gap: only the *differences* of the gap
# between sibling tokens move the mixture (P6), and each step costs at most about the
# square of that difference over `8 beta`.
#
# The printed ratios say how close the random trees come to each bound: the per-state
# bound on the gap and the stepwise (Hoeffding) bound on the loss can be approached,
# while the alignment bound, which knows only `eps`, is loose. The constants in the
# bounds cannot be improved: they are attained in limits. The simplest case is one token with two
# leaves paying `(1, 0)` and `(0, 1)` under a uniform reference (`D = 2`). Its root gap
# approaches `lam (1 - lam) D` as `beta -> 0` and `lam (1 - lam) D^2 / (8 beta)` as
# `beta -> infinity`:

# %%
two_leaves = Tree.from_arrays(vocab=2, horizon=1, ref_logits=np.zeros((1, 2)), rewards=[[1.0, 0.0], [0.0, 1.0]])
betas = np.logspace(-2, 2, 41)
G_two = np.array([tr.holder_gap(two_leaves, w, b)[0][0, 0] for b in betas])
B_two = np.array([bounds.holder_gap_beta_bound(two_leaves, w, b)[0][0, 0] for b in betas])
print("G / bound at beta = 0.01 and 100:", (G_two / B_two)[[0, -1]].round(4))
assert np.all(G_two <= B_two + 1e-12) and np.all((G_two / B_two)[[0, -1]] > 0.9)  # approached in both limits
plt.figure(figsize=(5, 3.2))
plt.loglog(betas, G_two, label="G_w(root)")
plt.loglog(betas, B_two, "r--", label="lam(1-lam) min(D, D^2/(8 beta))")
plt.xlabel("beta")
plt.ylabel("Hölder gap at the root")
plt.title("two leaves (1, 0) and (0, 1), w = (1/2, 1/2)", fontsize=10)
plt.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 6. When zero-shot mixing is Pareto-dominated (P10)
#
# A two-token example makes the failure stark. The first token picks branch `A` or `B`.
# In `A` the second token picks `a1`, which pays `r = (1, 0)`, or `a2`, which pays
# `r = (0, 1)`: reward 1 and reward 2 want opposite things. In `B` every continuation
# pays `r = (c, c)` with `c = 0.8`: a compromise that is good for both. The reference is
# uniform and `beta = 0.05` is small, so the policies are nearly greedy.
#
# For `w = (1/2, 1/2)` the optimum goes to `B` and gets about `(0.8, 0.8)`. Each
# per-reward policy goes to `A` (where its favourite leaf pays 1), so the mixture also goes
# to `A` at the root: there `sum_i w_i V_i` sees "1 for reward 1 *or* 1 for reward 2" and
# averages to almost 1, while no single continuation of `A` pays more than 1/2 on
# average. Below `A` the last token is a bandit, mixed exactly: a coin flip between
# `(1, 0)` and `(0, 1)`. The drawing shows the gap on this tree: at `A` it is close to its
# largest possible value `(1 - |w|^2) eps(A) = 1/2`, reached as `beta -> 0`.

# %%
p10 = p10_tree(0.8)
beta10 = 0.05
half = np.array([[0.5, 0.5]])
fig, ax = plt.subplots(figsize=(6.5, 3.4))
draw_tree(ax, p10, [g[0] for g in tr.holder_gap(p10, half, beta10)],
          "P10 tree: G_w, w = (1/2, 1/2), beta = 0.05  (edges: pi^mix_w (pi*_w))",
          edge_probs=[np.exp(lp[0]) for lp in tr.zero_shot_token_policy(p10, half, beta10)],
          edge_probs_2=[np.exp(lp[0]) for lp in tr.optimal_token_policy(p10, half, beta10)])
plt.show()
sol10 = solve_tree(p10, half, beta10)
ref_seq = tr.sequence_stats(p10, tr.reference_token_policy(p10), half, beta10)
for name, st in [("optimum pi*_w", sol10["optimal"]), ("zero-shot pi^mix_w", sol10["logit_mix"]),
                 ("reference pi_ref", ref_seq)]:
    print(f"{name:20s} R = {st['rewards'][0]}   KL = {st['kl'][0]:.3f}")
assert np.all(sol10["logit_mix"]["rewards"][0] < ref_seq["rewards"][0])  # P10: worse than pi_ref on both
assert np.all(sol10["logit_mix"]["rewards"][0] < 0.8) and np.all(sol10["optimal"]["rewards"][0] > 0.7)

# %% [markdown]
# The zero-shot mixture at `w = (1/2, 1/2)` reaches about `(1/2, 1/2)`: worse on both
# rewards than `(c, c)`, and even worse than `pi_ref` itself, which reaches
# `(0.65, 0.65)` with zero KL. Across all weightings (below, left), the zero-shot front
# hugs the two ends and jumps across the middle, while the exact front bulges out to
# `(c, c)`.
#
# **Why no tuning of a linear conditioning fixes it.** On the right we plot, against
# `w_1`, the root log-odds `log pi(B) - log pi(A)` of the optimum and of the mixture. The
# optimum prefers `A` near both ends of the simplex and `B` in the middle, so its log-odds
# change sign **twice**. The mixture's log-odds are `sum_i w_i (log pi_i(B) - log pi_i(A))`,
# a *linear* function of `w` (here even constant, since the two per-reward policies are
# mirror images with the same root choice), and so is the logit of any tabular policy whose parameters
# are mixed linearly in `w` (the family that contains the zero-shot mixture). A linear
# function changes sign at most once, so no member of that family equals `pi*_w` for all
# `w`: the weighting must enter nonlinearly, and the conditioned policy must be trained
# across weightings (notebook 03).

# %%
W = np.stack([np.linspace(0, 1, 201), 1 - np.linspace(0, 1, 201)], axis=1)  # (K, m)
sol10 = solve_tree(p10, W, beta10)
root_star = tr.optimal_token_policy(p10, W, beta10)[0][:, 0]  # (K, V): root token log-probs
root_mix = tr.zero_shot_token_policy(p10, W, beta10)[0][:, 0]

fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4))
Z, A = sol10["optimal"]["rewards"], sol10["logit_mix"]["rewards"]
ax0.plot(Z[:, 0], Z[:, 1], "-", label="exact front  pi*_w")
ax0.plot(A[:, 0], A[:, 1], "o", ms=3, alpha=0.5, label="zero-shot  pi^mix_w")
ax0.plot(*sol10["logit_mix"]["rewards"][100], "rx", ms=10, mew=2, label="zero-shot at w = (1/2, 1/2)")
ax0.plot(0.8, 0.8, "g*", ms=12, label="(c, c)")
ax0.plot(*ref_seq["rewards"][0], "k*", ms=10, label="pi_ref")
ax0.set_xlabel("R_1")
ax0.set_ylabel("R_2")
ax0.legend(fontsize=8)
ax1.plot(W[:, 0], root_star[:, 1] - root_star[:, 0], label="optimum  pi*_w")
ax1.plot(W[:, 0], root_mix[:, 1] - root_mix[:, 0], label="zero-shot  pi^mix_w  (linear in w)")
ax1.axhline(0, color="k", lw=0.8)
ax1.set_xlabel("w_1")
ax1.set_ylabel("root log-odds  log pi(B) - log pi(A)")
ax1.legend(fontsize=8)
plt.tight_layout()
plt.show()
signs = np.sign(root_star[:, 1] - root_star[:, 0])
print("sign changes of the optimal root log-odds along w_1:", int(np.sum(signs[1:] != signs[:-1])))
print("largest loss of the mixture max_w Delta(w) =", sol10["gap"].max().round(4), "at w_1 =", W[sol10["gap"].argmax(), 0])
assert int(np.sum(signs[1:] != signs[:-1])) == 2  # the optimum's log-odds change sign twice; a linear one cannot

# %% [markdown]
# ## Summary
#
# * In a token tree the optimum is built token by token from **soft values**
#   `V_w(s)`, and multiplying its token probabilities gives back the Gibbs policy over
#   whole sequences (checked to rounding).
# * **Per-token mixing** of the per-reward optima is exact at the last token but not
#   before it: it uses `sum_i w_i V_i` where the optimum uses `V_w`. The difference is the
#   **Hölder gap** `G_w >= 0`, and the mixture is the optimum tilted by `exp(G_w(sa)/beta)`.
# * The loss of the mixture is exactly `beta` times its sequence KL to the optimum, a sum of
#   per-token KLs (checked numerically and symbolically).
# * When the rewards are **aligned** (`eps = 0`) the gap and the loss vanish; the gap is
#   bounded by `(1 - |w|^2) eps` and, for small misalignment, by
#   `lam (1 - lam) D^2 / (8 beta)`, and the loss by a sum of Hoeffding terms. All bounds held
#   on the 180 random trees tried.
# * When the rewards are **misaligned**, zero-shot mixing can be Pareto-dominated, even by
#   the reference model, and no policy whose logits are linear in `w` can be optimal for
#   every `w`: this is when training across weightings is needed.

# %% [markdown]
# ## Exercises
#
# Answer in the cell below each exercise (replace `None`), then run the check cell after it. The
# checks say "not attempted yet" until you do. Reference solutions: `notebooks/solutions/02_sequences_and_alignment.py`.
#
# ### Exercise 1 · The soft value of the root, from the leaves
#
# For the random `tree` of sections 1-4, compute `V_w(root)` at `w = (1/2, 1/2)` and `beta = 0.5`
# directly from the 8 leaves, without the token-by-token recursion: you need the reference
# probability of each whole sequence (`log_ref_seq`, `[1, V^T]`) and the rewards `tree.rewards`
# (`[V^T, m]`). Set `answer_1` to the number.

# %%
# Exercise 1: your answer (a number)
answer_1 = None

# %%
# Check of exercise 1
if answer_1 is None:
    print("exercise 1: not attempted yet")
else:
    V_root = tr.soft_values_w(tree, np.array([[0.5, 0.5]]), 0.5)[0][0, 0]
    assert abs(answer_1 - V_root) < 1e-9, f"exercise 1: V_w(root) = {V_root:.6f}, not {answer_1:.6f}"
    print("exercise 1: correct")

# %% [markdown]
# ### Exercise 2 · The largest gap of two leaves
#
# For `two_leaves` (one token, leaves paying `(1, 0)` and `(0, 1)`, uniform reference) and
# `w = (1/2, 1/2)`, what does the root's Hölder gap tend to as `beta -> 0`? Reason with the bound of
# section 5, then set `answer_2` to the number. The check computes the gap at `beta = 1e-4`.

# %%
# Exercise 2: your answer (a number)
answer_2 = None

# %%
# Check of exercise 2
if answer_2 is None:
    print("exercise 2: not attempted yet")
else:
    G_small = tr.holder_gap(two_leaves, np.array([[0.5, 0.5]]), 1e-4)[0][0, 0]
    assert abs(answer_2 - G_small) < 1e-3, f"exercise 2: the gap at beta = 1e-4 is {G_small:.4f}, not {answer_2}"
    print("exercise 2: correct")

# %% [markdown]
# ### Exercise 3 · Misaligned at the root, yet mixed exactly
#
# Give rewards `answer_3` (`[8, 2]`, leaves in the order of `tree.rewards`) for a tree with the same
# reference as `tree` (`V = 2`, `T = 3`) such that the two rewards are **misaligned at the root**
# (`eps(root) > 0`), yet per-token zero-shot mixing is **exactly optimal for every `w`**. (Hint: P8
# needs alignment below each first token only; leaf `s` starts with token `s // 4`.) The check builds
# the tree and measures both.

# %%
# Exercise 3: your answer (an array [8, 2])
answer_3 = None

# %%
# Check of exercise 3
if answer_3 is None:
    print("exercise 3: not attempted yet")
else:
    mine = Tree.from_arrays(vocab=2, horizon=3, ref_logits=np.concatenate(tree.ref_logp), rewards=np.asarray(answer_3))
    W_ex = np.stack([np.linspace(0, 1, 11), 1 - np.linspace(0, 1, 11)], axis=1)  # (K, m)
    eps_root, loss = tr.misalignment(mine)[0][0], solve_tree(mine, W_ex, 0.5)["gap"].max()
    assert eps_root > 1e-3, f"exercise 3: eps(root) = {eps_root:.2e}: the rewards are aligned at the root"
    assert loss < 1e-9, f"exercise 3: zero-shot mixing loses {loss:.2e} at some w"
    print(f"exercise 3: correct (eps(root) = {eps_root:.3f}, largest loss {loss:.1e})")
