"""Reference answers to the exercises of notebook 06, and a wrong answer to each.

Each ``# %% reference N`` block is the reference answer to exercise N (paste it into the
exercise's answer cell); each ``# %% wrong N`` block is a plausible mistake, which the tests
(tests/notebooks) feed to the check cell to see it fail. The blocks use the notebook's names
(torch, n, ...), so this file is read by the tests, not run on its own.
"""
# %% reference 1
answer_1 = lambda n: (n - 1) / n  # noqa: E731  R_j - mean_l R_l = (1 - 1/n) R_j - (1/n) sum_{l != j} R_l

# %% wrong 1
answer_1 = lambda n: 1 / n  # noqa: E731  the size of the bias, not the factor

# %% reference 2
def answer_2(R):
    """Advantages against the median of the other samples of the same prompt."""
    n_ = R.size(1)
    others = torch.stack([torch.cat([R[:, :j], R[:, j + 1:]], dim=1) for j in range(n_)], dim=1)  # (P, n, n-1)
    return R - others.median(dim=2).values

# %% wrong 2
def answer_2(R):
    """The median of all samples, the sample itself included: the baseline sees y_j."""
    return R - R.median(dim=1, keepdim=True).values

# %% reference 3
answer_3 = 2 * BETA  # the doubled weight: the loss is an unbiased estimate of grad J at KL weight 2 beta

# %% wrong 3
answer_3 = BETA / 2  # the right direction of thought, upside down
