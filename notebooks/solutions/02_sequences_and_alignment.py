"""Reference answers to the exercises of notebook 02, and a wrong answer to each.

Each ``# %% reference N`` block is the reference answer to exercise N (paste it into the
exercise's answer cell); each ``# %% wrong N`` block is a plausible mistake, which the tests
(tests/notebooks) feed to the check cell to see it fail. The blocks use the notebook's names
(np, tree, log_ref_seq, ...), so this file is read by the tests, not run on its own.
"""
# %% reference 1
wr_ = tree.rewards @ np.array([0.5, 0.5])  # (V^T,): w . r at each leaf
answer_1 = 0.5 * np.log(np.sum(np.exp(log_ref_seq[0]) * np.exp(wr_ / 0.5)))  # beta log E_{pi_ref}[exp(w . r / beta)]

# %% wrong 1
wr_ = tree.rewards @ np.array([0.5, 0.5])
answer_1 = np.sum(np.exp(log_ref_seq[0]) * wr_)  # the average under pi_ref: the beta -> infinity limit

# %% reference 2
answer_2 = 0.5 * 0.5 * 2  # lam (1 - lam) D with D = 2 eps = osc(r_1 - r_2) = 2, attained as beta -> 0

# %% wrong 2
answer_2 = 0.25  # lam (1 - lam), forgetting D

# %% reference 3
r1_ = np.random.default_rng(0).normal(size=8)
answer_3 = np.stack([r1_, r1_ + np.where(np.arange(8) < 4, 0.0, 1.0)], axis=1)  # r_2 = r_1 + c(first token)

# %% wrong 3
answer_3 = np.random.default_rng(0).normal(size=(8, 2))  # independent rewards: misaligned below the root too
