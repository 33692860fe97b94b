"""clp_min: a compact reference of Conditional Language Policies on small transformers.

Calling convention shared by every conditioned policy (parameter-conditioned,
input-conditioned, both, or a plain model that ignores ``w``)::

    logits, cache = policy(w, idx, cache=None)

- ``w``: ``[m]`` (one weighting for the batch) or ``[B, m]`` (one per example), on the
  simplex; refused with a ValueError otherwise (wrong length, negative, not summing
  to 1 within 1e-6, non-finite).
- ``idx``: ``[B, T]`` token ids; ``cache``: ``None`` or the cache returned by the
  previous call (positions continue from the cache length; see ``clp_min.model``).
- ``logits``: ``[B, T, V]``, next-token logits at each of the T positions.

Policies: ``ParamConditioned`` (CLP / Rewarded Soups), ``InputConditioned`` (prompting),
``ParamConditioned.from_base(InputConditioned(...), m, scope)`` (both),
``Unconditioned(model)`` (a plain GPT); on a frozen base (clp_min.mechanisms): ``SVDLoRA``
(Panacea), ``SoftTokens``, ``PromptTokens`` (Personalized Soups). ``HFCausalLM(model)`` gives a Hugging Face causal LM
(peft included) the plain-model convention, so it can be wrapped like a GPT. Plain models (``GPT``) are called
``model(idx, cache=None) -> (logits, cache)`` and are what the zero-shot decoding
baselines (``logit_mix_sample``, ``realign_sample``) mix.
"""
from clp_min import oracle
from clp_min.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from clp_min.conditioning import ParamConditioned, Unconditioned
from clp_min.decoding import Decoded, logit_mix_sample, realign_sample, sample, sequence_logprobs
from clp_min.interop.hf import HFCausalLM
from clp_min.mechanisms import InputConditioned, PromptTokens, SoftTokens, SVDLoRA, WeightEmbedding
from clp_min.mixing import check_w, mix_lora_delta, mix_parameters
from clp_min.model import GPT, GPTConfig
from clp_min.scope import SCOPES, describe_scope, resolve_scope

__all__ = [
    "GPT", "GPTConfig", "ParamConditioned", "Unconditioned", "InputConditioned", "WeightEmbedding",
    "SCOPES", "check_w", "mix_parameters", "mix_lora_delta", "resolve_scope", "describe_scope", "HFCausalLM",
    "Decoded", "sample", "logit_mix_sample", "realign_sample", "sequence_logprobs", "Checkpoint",
    "save_checkpoint", "load_checkpoint", "SVDLoRA", "SoftTokens", "PromptTokens", "oracle",
]
