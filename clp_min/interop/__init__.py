"""Adapters that let other systems use the reference CLP.

- ``hf``: a Hugging Face causal LM (peft included) in clp_min's calling convention (``HFCausalLM``),
  so it can be conditioned, trained, checkpointed and checked like the built-in GPT.
- ``distributed``: data-parallel training under ``torchrun`` (``clp train --nproc N``), with
  per-prompt random streams so that N processes give the numbers of one.
- ``trl``: the enumerable task fed to TRL's ``GRPOTrainer`` / ``RLOOTrainer`` (word-level tokenizer,
  a weighting column, pi_ref as the reference), so that TRL's own loss can be checked by
  ``clp_min.oracle.gradcheck`` (``clp oracle trl``).
- ``trl_mixed``: ``MixedCLM``, a parameter-mixed (``ParamConditioned``) GPT-2 that TRL's trainers accept
  as a model, reading the weighting from the prompt's first token (``clp oracle trl-e2e --conditioning mixed``).

Optional dependencies (transformers, peft, trl) are imported inside the functions that need them.
"""
