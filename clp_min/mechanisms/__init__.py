"""Conditioning mechanisms besides parameter mixing, and the one registry that knows them.

- ``input_cond``: ``w`` fed as input, an embedding added to the tokens or prepended (prompting);
  composable with parameter mixing (``ParamConditioned.from_base(InputConditioned(...), m, scope)``).
- On a frozen base, training only their own parameters: ``svd_lora`` (Panacea's SVD-LoRA, the
  singular values of low-rank adapters set by ``w``), ``soft_tokens`` (learned prompt rows mixed by
  ``w``), ``prompt_tokens`` (Personalized Soups' written prompt, each ``w_i`` rounded to a grid).

Each mechanism's class builds itself from a training configuration (``from_config``, frozen-base
ones) and writes and reads its checkpoint spec (``spec`` / ``from_spec``). ``clp_min.train`` and
``clp_min.checkpoint`` consult the two dicts below, so a new mechanism is its own file plus one
line here.
"""
from clp_min.mechanisms.input_cond import InputConditioned, WeightEmbedding
from clp_min.mechanisms.prompt_tokens import PromptTokens
from clp_min.mechanisms.soft_tokens import SoftTokens
from clp_min.mechanisms.svd_lora import SVDLoRA

# ``clp train --conditioning`` name -> mechanism on a frozen base
FROZEN_BASE = {"svd_lora": SVDLoRA, "soft_tokens": SoftTokens, "prompt_tokens": PromptTokens}
# checkpoint spec's "class" -> mechanism
BY_CLASS = {cls.__name__: cls for cls in (InputConditioned, *FROZEN_BASE.values())}

__all__ = ["InputConditioned", "WeightEmbedding", "SVDLoRA", "SoftTokens", "PromptTokens", "FROZEN_BASE", "BY_CLASS"]
