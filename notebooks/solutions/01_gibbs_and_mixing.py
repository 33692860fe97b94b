"""Reference answers to the exercises of notebook 01, and a wrong answer to each.

Each ``# %% reference N`` block is the reference answer to exercise N (paste it into the
exercise's answer cell); each ``# %% wrong N`` block is a plausible mistake, which the tests
(tests/notebooks) feed to the check cell to see it fail. The blocks use the notebook's names
(np, bandit, rewards, ...), so this file is read by the tests, not run on its own.
"""
# %% reference 1
w_, beta_ = np.array([0.3, 0.7]), 0.2
pi_ref_ = np.exp(bandit.ref_logp[0])  # (Y,)
answer_1 = beta_ * np.log(np.sum(pi_ref_ * np.exp(rewards @ w_ / beta_)))  # Z_w = E_{pi_ref}[exp(w . r / beta)]

# %% wrong 1
w_, beta_ = np.array([0.3, 0.7]), 0.2
answer_1 = beta_ * np.log(np.sum(np.exp(rewards @ w_ / beta_)))  # forgot pi_ref: off by beta log 6

# %% reference 2
answer_2 = 0.2 / 0.5  # pi_ref^(1-lam) pi*_beta^lam is the optimum at beta / lam (P4)

# %% wrong 2
answer_2 = 0.5 / 0.2  # the ratio upside down

# %% reference 3
answer_3 = int(np.argmax(rewards @ np.array([0.5, 0.5])))  # the best w . r: response 2, (0.55, 0.8)

# %% wrong 3
answer_3 = 1  # (0.85, 0.45): the best reward 1 among the compromises, not the best average
