"""Reference answers to the exercises of notebook 04, and a wrong answer to each.

Each ``# %% reference N`` block is the reference answer to exercise N (paste it into the
exercise's answer cell); each ``# %% wrong N`` block is a plausible mistake, which the tests
(tests/notebooks) feed to the check cell to see it fail. The blocks use the notebook's names
(exact, clp, heldout, ...), so this file is read by the tests, not run on its own.
"""
# %% reference 1
brevity = exact["methods"]["CLP full"]["rewards"][:, 1]  # (K,): 1 - E[n] / T at each weighting of W
answer_1 = (task.response_len * (1 - brevity[-1]), task.response_len * (1 - brevity[0]))  # W[-1] = (1, 0), W[0] = (0, 1)

# %% wrong 1
brevity = exact["methods"]["CLP full"]["rewards"][:, 1]
answer_1 = (task.response_len * (1 - brevity[0]), task.response_len * (1 - brevity[-1]))  # the two ends swapped

# %% reference 2
from clp_min.rl import pad_responses

x_many = heldout.repeat(100, 1)  # (1600, L)
out = sample(clp, torch.tensor([1.0, 0.0]), x_many, task.response_len, generator=torch.Generator().manual_seed(3),
             eos=tk.EOS)
answer_2 = tk.rewards(task, x_many, pad_responses(out.tokens, task.response_len))[:, 0].mean().item()

# %% wrong 2
from clp_min.rl import pad_responses

x_many = heldout.repeat(100, 1)
out = sample(clp, torch.tensor([0.0, 1.0]), x_many, task.response_len, generator=torch.Generator().manual_seed(3),
             eos=tk.EOS)  # the weighting the wrong way round: brevity only
answer_2 = tk.rewards(task, x_many, pad_responses(out.tokens, task.response_len))[:, 0].mean().item()
