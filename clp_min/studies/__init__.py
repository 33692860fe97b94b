"""Studies: the experiments a researcher reruns with ``clp reproduce``; nothing else in clp_min imports them.

- ``setups``: the Monte Carlo setups (kl, two, three, enum, enum_large): pi_ref, experts, CLPs.
- ``exact_setups``: the enumerable setups (enum_exact, sweep) trained with the exact gradient and
  evaluated exactly on held-out prompts.
- ``evaluate``: fronts of every method (Monte Carlo and exact), their measures and figures.
- ``mechanisms_study`` (+ ``mechanisms_tables``): SVD-LoRA, soft and written prompt tokens, and the
  training distribution of ``w``, against parameter mixing.
- ``trl_check`` (+ ``trl_report``): TRL's GRPO and RLOO losses against the exact gradient of ``J_w``,
  with the gradient the source predicts (``clp oracle trl``).
- ``targets``: the quantitative targets each result is judged by; ``report``: report.md/json;
  ``reproduce``: the whole study as one task graph; ``jobs``: that graph's scheduler.
"""
