"""Reference answers to the exercises of notebook 07, and a wrong answer to each.

Each ``# %% reference N`` block is the reference answer to exercise N (paste it into the
exercise's answer cell); each ``# %% wrong N`` block is a plausible mistake, which the tests
(tests/notebooks) feed to the check cell to see it fail. The blocks use the notebook's names
(np, logsumexp, spearmanr, runs, ...), so this file is read by the tests, not run on its own.
"""
# %% reference 1
def answer_1(q_logp, err):
    """D_i(s) = log E_q e^{-e_i} + E_q e_i (pi*_i / pi_i = e^{-e_i}), [m, S]."""
    q = np.exp(q_logp)  # (S, V)
    return np.log((q[None] * np.exp(-err)).sum(axis=-1)) + (q[None] * err).sum(axis=-1)

# %% wrong 1
def answer_1(q_logp, err):
    """The ratio upside down: log E_q [pi_i / pi*_i] - E_q log(pi_i / pi*_i) (also >= 0, but not D_i)."""
    q = np.exp(q_logp)
    return np.log((q[None] * np.exp(err)).sum(axis=-1)) - (q[None] * err).sum(axis=-1)

# %% reference 2
answer_2 = lambda w2: 1 / w2  # noqa: E731  sum_i w_i Var_q(e_i) / Var_q(sum_i w_i e_i) = w2 Var / (w2^2 Var)

# %% wrong 2
answer_2 = lambda w2: 2.0  # noqa: E731  the Jeffreys bound (f)'s small-error ratio, not (g)'s

# %% reference 3
cells_ = [(t["regret"][f"logit mixing ({g})"] - t["regret"]["ideal zero-shot"], np.mean(t[g]["divergence_under_mixture"]))
          for r in runs for t in r["tasks"] for g in ("on_policy", "remedy")]
answer_3 = spearmanr(*np.array(cells_).T).statistic

# %% wrong 3
cells_ = [(t["regret"][f"logit mixing ({g})"] - t["regret"]["ideal zero-shot"], np.mean(t[g]["divergence_own"]))
          for r in runs for t in r["tasks"] for g in ("on_policy", "remedy")]
answer_3 = spearmanr(*np.array(cells_).T).statistic  # the divergence under the experts' own visitation
