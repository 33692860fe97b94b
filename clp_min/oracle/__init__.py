"""The oracle: exact answers on the enumerable task, against which any policy or trainer is checked.

- ``exact``: every response of a prompt enumerated as a token tree; exact rewards, KL and
  objective of any policy, and the exact optimum pi*_w (THEORY.md P1, P5).
- ``exact_pg``: the exact gradient of ``J_w`` through one pass over the token tree (the
  reference estimator ``clp train --estimator exact`` uses).
- ``gradcheck``: whether any sampled loss's expected gradient equals the exact gradient of the
  batch-average ``J_w`` (``gradient_check``; TRL's GRPO and RLOO as the worked example,
  docs/checking_a_trainer.md).
- ``kit``: checks with PASS/FAIL and numbers for a user's policy: ``exact_regret``,
  ``sampler_check``, ``logit_scope_check`` (re-exported here, so ``from clp_min import oracle``
  then ``oracle.exact_regret(...)``).
"""
from clp_min.oracle.kit import Check, exact_regret, logit_scope_check, sampler_check

__all__ = ["Check", "exact_regret", "sampler_check", "logit_scope_check"]
