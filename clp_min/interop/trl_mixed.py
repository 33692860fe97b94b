"""A parameter-mixed CLP that TRL's trainers accept as a model: ``MixedCLM``.

    model = MixedCLM.from_lm(gpt2, levels=4)      # theta_1 = theta_2 = gpt2's weights (the policy starts at pi_ref)
    pc = model.policy                             # the ParamConditioned, clp_min's ``pc(w, idx, cache)``
    trainer = build_trainer("grpo", model, None, task, folder, G, beta, generation_kwargs={"use_cache": False}, ...)

The model is ``ParamConditioned(HFCausalLM(gpt2), m = 2, scope=SCOPE)``, ``theta(w) = w_1 theta_1 + w_2 theta_2``
(THEORY.md section 4). TRL hands a model nothing but ``input_ids`` and ``attention_mask``, so the weighting
reaches it through the prompt: the prompt's first token is the level ``q = round(levels w_1)``
(``w = (q / levels, 1 - q / levels)``, as in the written route of ``clp_min.studies.trl_e2e``). The forward
reads ``q`` per example, strips that token, runs the mixed model at that ``w`` on the rest (per-example
weightings: ``ParamConditioned``) and returns logits aligned with the input positions: position 0 (the
stripped token, whose next token is the task prompt's first) gets a row of zeros. TRL never scores it:
it scores the completion's tokens only (labels ``-100`` on the prompt, ``_get_per_token_logps_and_entropies``).
A batch whose first position is padding (a left-padded prompt) is refused: its level token is elsewhere.

Scope ``SCOPE``: the transformer blocks and the final layer norm, everything but the token and position
embeddings. GPT-2 ties its unembedding to its token embedding, so mixing the embedding would mix the
output layer too; left shared, the weighting acts through every layer between them.

How TRL 1.16 runs the model (``TRL_VERSION`` in ``clp_min.interop.trl``):

- ``GRPOTrainer`` / ``RLOOTrainer`` accept a ``PreTrainedModel``; with ``beta > 0`` they rebuild the reference
  with ``AutoModelForCausalLM.from_pretrained(config._name_or_path)``: ``MixedConfig`` / ``MixedCLM`` are
  registered with ``AutoConfig`` / ``AutoModelForCausalLM`` on import, so the saved initial policy (every
  ``theta_i`` = pi_ref's weights, which ignores ``w``) comes back as the reference, equal to pi_ref.
- Log-probs: TRL patches ``model.forward`` (``add_fused_lm_head``): with ``fused_lm_head=True`` it runs
  ``model.base_model`` (here ``backbone``, the strip-and-mix module) for ``last_hidden_state`` and projects it
  through ``model.get_output_embeddings()``. The backbone's "hidden state" is the mixed model's logits and the
  output embedding is the identity ``[V, V]`` (a buffer, not trained), so TRL's log-softmax is the mixed model's.
- Generation: ``model.generate`` with ``use_cache=False`` (``generation_kwargs``): every step sees the whole
  sequence, level token first; a call carrying a key/value cache is refused.

Shape letters: B batch, N positions (level token included), V vocabulary, m = 2 rewards.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from clp_min.conditioning import ParamConditioned
from clp_min.interop.hf import HFCausalLM

SCOPE = ["model.transformer.h.*", "model.transformer.ln_f.*"]  # GPT-2 under HFCausalLM: all but wte, wpe
M = 2
def trl_options() -> dict:
    """GRPOConfig / RLOOConfig options MixedCLM needs: generate without a cache, and no activation checkpointing
    (MixedCLM has none; the gradient is the same). transformers 5.25 names the latter ``activation_checkpointing``,
    5.17 ``gradient_checkpointing``: the name the installed ``TrainingArguments`` has is used."""
    from transformers import TrainingArguments

    fields = TrainingArguments.__dataclass_fields__
    name = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    return {"generation_kwargs": {"use_cache": False}, name: False}


def _classes():
    """``MixedConfig`` and ``MixedCLM``, built and registered once (transformers is imported only here)."""
    global _CACHE
    if _CACHE is not None:
        return _CACHE
    from transformers import (AutoConfig, AutoModelForCausalLM, GenerationMixin, GPT2Config, GPT2LMHeadModel,
                              PretrainedConfig, PreTrainedModel)
    from transformers.modeling_outputs import BaseModelOutput, CausalLMOutput

    class MixedConfig(PretrainedConfig):
        """``inner``: the GPT-2 config as a dict; ``levels``: the grid's ``q`` runs over ``0 .. levels``."""
        model_type = "clp_mixed_gpt2"
        auto_map = {}  # read by TRL's create_model_from_path: not remote code, so AutoModelForCausalLM

        def __init__(self, inner=None, levels=4, **kwargs):
            self.inner = dict(inner or {})
            self.levels = levels
            kwargs.setdefault("tie_word_embeddings", False)  # the identity output layer is not the embedding
            super().__init__(**kwargs)

    class Backbone(nn.Module):
        """``(input_ids [B, N], attention_mask [B, N]) -> last_hidden_state [B, N, V]``: the mixed logits."""

        def __init__(self, config):
            super().__init__()
            with torch.random.fork_rng(devices=[]):  # weights come from the caller or the checkpoint; the
                torch.manual_seed(0)  # caller's global generator is left as it was
                lm = GPT2LMHeadModel(GPT2Config(**config.inner))
            self.pc = ParamConditioned(HFCausalLM(lm), M, SCOPE)
            self.levels = config.levels

        def forward(self, input_ids, attention_mask=None, past_key_values=None, **kwargs):
            for name, cache in (("past_key_values", past_key_values), ("cache", kwargs.get("cache"))):
                if cache is not None and (not hasattr(cache, "get_seq_length") or cache.get_seq_length() > 0):
                    raise ValueError(f"{name}: MixedCLM runs without a cache (generate with use_cache=False)")
            B, N = input_ids.shape
            if N < 2:
                raise ValueError(f"input_ids: needs the level token and at least one token, got {N} positions")
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            if not bool(attention_mask[:, 0].all()):
                raise ValueError("attention_mask: the first position is padding; MixedCLM reads the weighting "
                                 "from the prompt's first token (pad prompts on the right or not at all)")
            q = input_ids[:, 0]  # (B,)
            if bool((q < 0).any() or (q > self.levels).any()):
                raise ValueError(f"input_ids: first token {q.tolist()} is not a level 0 .. {self.levels}")
            w1 = q.double() / self.levels
            w = torch.stack([w1, 1 - w1], dim=1)  # (B, 2)
            logits, _ = self.pc(w, input_ids[:, 1:], None, attention_mask[:, 1:])  # (B, N-1, V)
            dummy = torch.zeros_like(logits[:, :1])  # position 0: the stripped level token, never scored
            return BaseModelOutput(last_hidden_state=torch.cat([dummy, logits], dim=1))  # (B, N, V)

    class MixedCLM(PreTrainedModel, GenerationMixin):
        """A ``ParamConditioned`` GPT-2 reading its weighting from the prompt's first token (module docstring)."""
        config_class = MixedConfig
        base_model_prefix = "backbone"
        main_input_name = "input_ids"
        _supports_sdpa = True
        _supports_attention_backend = True

        def __init__(self, config):
            super().__init__(config)
            self.backbone = Backbone(config)
            V = config.inner["vocab_size"]
            self.lm_head = nn.Linear(V, V, bias=False)
            self.lm_head.weight.requires_grad_(False)
            with torch.no_grad():
                self.lm_head.weight.copy_(torch.eye(V))
            self.post_init()
            # the inner GPT-2's unembedding is tied to its embedding: saved once, tied again on loading
            self.all_tied_weights_keys = self.get_expanded_tied_weights_keys(all_submodels=True)

        def _init_weights(self, module):  # every weight comes from the caller or the checkpoint
            pass

        def get_output_embeddings(self):
            return self.lm_head

        def get_input_embeddings(self):
            return self.backbone.pc.base.model.get_input_embeddings()

        @property
        def policy(self) -> ParamConditioned:
            return self.backbone.pc

        def forward(self, input_ids=None, attention_mask=None, past_key_values=None, labels=None, **kwargs):
            if labels is not None:
                raise ValueError("labels: MixedCLM computes no loss of its own")
            out = self.backbone(input_ids, attention_mask, past_key_values)
            return CausalLMOutput(logits=out.last_hidden_state)  # (B, N, V)

        @classmethod
        def from_lm(cls, lm, levels: int = 4):
            """Every ``theta_i`` = ``lm``'s weights (a transformers GPT-2); ``lm`` is not modified."""
            inner = lm.config.to_dict()
            ids = {k: getattr(lm.config, k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
            model = cls(MixedConfig(inner=inner, levels=levels, **ids))
            model.backbone.pc.load_state_dict(ParamConditioned(HFCausalLM(lm), M, SCOPE).state_dict())
            return model

    AutoConfig.register(MixedConfig.model_type, MixedConfig, exist_ok=True)
    AutoModelForCausalLM.register(MixedConfig, MixedCLM, exist_ok=True)
    _CACHE = (MixedConfig, MixedCLM)
    return _CACHE


_CACHE = None


def mixed_clm(lm, levels: int = 4):
    """``MixedCLM.from_lm(lm, levels)``: the parameter-mixed CLP starting with every ``theta_i`` at ``lm``."""
    return _classes()[1].from_lm(lm, levels)


def register() -> None:
    """Register ``MixedConfig`` / ``MixedCLM`` with transformers' auto classes (before TRL rebuilds a reference)."""
    _classes()
