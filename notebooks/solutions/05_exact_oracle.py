"""Reference answers to the exercises of notebook 05, and a wrong answer to each.

Each ``# %% reference N`` block is the reference answer to exercise N (paste it into the
exercise's answer cell); each ``# %% wrong N`` block is a plausible mistake, which the tests
(tests/notebooks) feed to the check cell to see it fail. The blocks use the notebook's names
(knob, held, pi_ref, ...), so this file is read by the tests, not run on its own.
"""
# %% reference 1
answer_1 = lambda V, T: sum((V - 1) ** t for t in range(T + 1))  # noqa: E731  t content tokens, then EOS

# %% wrong 1
answer_1 = lambda V, T: V ** T  # noqa: E731  every token sequence, EOS anywhere

# %% reference 2
answer_2 = 0.3 * knob[-1]["eps_1"]  # eps_1 is linear in s and 0 at s = 0

# %% wrong 2
answer_2 = knob[2]["eps_1"]  # the nearest strength of the table (s = 2/7), not s = 0.3

# %% reference 3
task_cb = tk.TaskConfig(**BASE, rewards=("coverage", "brevity"))
with torch.no_grad():
    logp_ref, Y = exact_pg.response_log_probs(Unconditioned(pi_ref), None, held, 4, 4)  # (X, N), (N, T)
X_, N_ = logp_ref.shape
r = tk.rewards(task_cb, held.repeat_interleave(N_, dim=0), Y.repeat(X_, 1)).view(X_, N_, 2)  # (X, N, m)
# KL(pi_ref || pi_ref) = 0, so J_w(pi_ref) = E_{pi_ref}[w . r], averaged over the prompts
answer_3 = float((logp_ref.double().exp() * (r @ torch.tensor([0.5, 0.5], dtype=torch.float64))).sum(dim=1).mean())

# %% wrong 3
task_cb = tk.TaskConfig(**BASE, rewards=("coverage", "brevity"))
with torch.no_grad():
    logp_ref, Y = exact_pg.response_log_probs(Unconditioned(pi_ref), None, held, 4, 4)
X_, N_ = logp_ref.shape
r = tk.rewards(task_cb, held.repeat_interleave(N_, dim=0), Y.repeat(X_, 1)).view(X_, N_, 2)
answer_3 = float((r @ torch.tensor([0.5, 0.5], dtype=torch.float64)).mean())  # responses weighted equally, not by pi_ref
