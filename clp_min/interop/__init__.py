"""Adapters that let other systems use the reference CLP.

- ``hf``: a Hugging Face causal LM (peft included) in clp_min's calling convention (``HFCausalLM``),
  so it can be conditioned, trained, checkpointed and checked like the built-in GPT.
- ``distributed``: data-parallel training under ``torchrun`` (``clp train --nproc N``), with
  per-prompt random streams so that N processes give the numbers of one.

Optional dependencies (transformers, peft) are imported inside the functions that need them.
"""
