"""Reference answers to the exercises of notebook 03, and a wrong answer to each.

Each ``# %% reference N`` block is the reference answer to exercise N (paste it into the
exercise's answer cell); each ``# %% wrong N`` block is a plausible mistake, which the tests
(tests/notebooks) feed to the check cell to see it fail. The blocks use the notebook's names
(np, tr, p10, beta, ...), so this file is read by the tests, not run on its own.
"""
# %% reference 1
from theory.solve import solve_tree

w_half = np.array([[0.5, 0.5]])
sol_ = solve_tree(p10, w_half, beta)
J_ref_ = tr.sequence_stats(p10, tr.reference_token_policy(p10), w_half, beta)["objective"][0]
J_opt_, J_mix_ = sol_["optimal"]["objective"][0], sol_["logit_mix"]["objective"][0]
answer_1 = (J_opt_ - J_mix_) / (J_opt_ - J_ref_)  # 0: optimal, 1: no better than pi_ref

# %% wrong 1
from theory.solve import solve_tree

sol_ = solve_tree(p10, np.array([[0.5, 0.5]]), beta)
answer_1 = sol_["optimal"]["objective"][0] - sol_["logit_mix"]["objective"][0]  # the regret, not normalised

# %% reference 2
answer_2 = 1  # a + b w_1 has at most one root

# %% wrong 2
answer_2 = 2  # the optimum's count, which is exactly what a line cannot do

# %% reference 3
answer_3 = np.array([0.5, 0.5])

# %% wrong 3
answer_3 = np.array([1.0, 0.0])  # at a corner the mixture is the reward-1 optimum, better than pi_ref on reward 1
