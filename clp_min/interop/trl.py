"""TRL adapter: the enumerable task fed to TRL's own ``GRPOTrainer`` / ``RLOOTrainer`` loss code.

    model = tiny_causal_lm("gpt2", task.vocab, seed=0)            # transformers model, through clp_min.interop.hf
    trainer = build_trainer("grpo", model, pi_ref, task, folder, G=8, beta=0.5, loss_type="grpo")
    loss_fn = trl_loss(trainer, G=8)                                # (prompts, w, generator) -> TRL's loss
    check = gradient_check(loss_fn, policy_of(trainer), HFCausalLM(pi_ref), task, prompts, w, beta)

How TRL is fed (found by reading TRL 1.16.0; ``TRL_VERSION``):

- Prompts are strings: a word-level tokenizer built here (``tokenizers``, no hub) whose words
  ``t0 .. t{V-1}`` map one to one onto token ids, so a prompt ``[3, 1]`` is ``"t3 t1"``.
- End of sequence. By default TRL's EOS is the task's ``EOS = 0``: TRL's completion mask
  (tokens up to and including the first EOS) is then the task's ``decision_mask``. With
  ``fixed_length`` the EOS is an extra word ``end`` (id ``V``) the model cannot produce (it has
  ``V`` logits), so every completion has ``T`` tokens, all decided.
- Per-example weightings ``w`` are a dataset column: TRL hands every column but the prompt to
  every reward function as a keyword (``GRPOTrainer._calculate_rewards``). Reward function ``i``
  returns ``w_i r_i(x, y)`` with ``reward_weights = 1``, so TRL's ``sum_then_normalize`` sums
  them to ``w . r``. The prompt's tokens travel as the column ``x``.
- The reference. With ``beta > 0`` TRL rebuilds ``ref_model`` from the policy's
  ``config.name_or_path``, so the policy is saved to ``folder`` and loaded from there; the
  task's ``pi_ref`` is then loaded into ``trainer.ref_model`` (the object TRL holds is kept).
- One sampled loss is TRL's ``compute_loss`` on the output of ``_generate_and_score_completions``
  (both private to TRL; ``check_trl_internals`` fails loudly when they change). Generation
  uses torch's global generator, seeded inside ``torch.random.fork_rng`` from the check's
  generator, so the caller's global state is untouched.

Only this module imports ``trl`` (``pip install -e ".[trl]"``). Shape letters: P prompts, G
completions per prompt, L prompt length, T response length, V vocabulary, m rewards.
"""
from __future__ import annotations

import inspect
from pathlib import Path

import torch

from clp_min import task as tk
from clp_min.conditioning import Unconditioned
from clp_min.interop.hf import HFCausalLM, build_hf

TRL_VERSION = "1.16.0"
ALGORITHMS = ("grpo", "rloo")
MODEL_KINDS = ("gpt2", "llama")
END_WORD = "end"  # fixed_length: TRL's EOS, id V, outside the model's V logits


def _trl():
    import trl

    if trl.__version__ != TRL_VERSION:
        raise ValueError(f"trl: the adapter is written against trl {TRL_VERSION}, found {trl.__version__}")
    return trl


def check_trl_internals() -> None:
    """The private TRL methods and batch keys the adapter relies on; raises with what changed."""
    trl = _trl()
    need = {"_generate_and_score_completions": ["self", "inputs"],
            "compute_loss": ["self", "model", "inputs", "return_outputs", "num_items_in_batch"],
            "_calculate_rewards": ["self", "inputs", "prompts", "completions", "completion_ids_list"]}
    for cls in (trl.GRPOTrainer, trl.RLOOTrainer):
        for name, params in need.items():
            got = list(inspect.signature(getattr(cls, name)).parameters) if hasattr(cls, name) else None
            if got != params:
                raise AssertionError(f"trl: {cls.__name__}.{name} has parameters {got}, the adapter expects {params}")


def word_tokenizer(V: int, fixed_length: bool = False):
    """``PreTrainedTokenizerFast`` over the words ``t0 .. t{V-1}`` (ids ``0 .. V-1``), EOS = pad = ``t0`` or ``end``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(V)}
    if fixed_length:
        vocab[END_WORD] = V
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=END_WORD if fixed_length else "t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # decodes to the words joined by spaces
    eos = END_WORD if fixed_length else f"t{tk.EOS}"
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, pad_token=eos, unk_token=eos)


def prompt_text(prompts: torch.Tensor) -> list:
    """``[P, L]`` token ids -> ``P`` strings of words."""
    return [" ".join(f"t{int(t)}" for t in row) for row in prompts]


def tiny_causal_lm(kind: str, V: int, seed: int, n_positions: int = 16, n_embd: int = 16, n_layer: int = 1,
                   init_std: float = 0.5, eos_id: int = tk.EOS):
    """A random GPT-2 or Llama with ``V`` logits built from a config through ``clp_min.interop.hf.build_hf`` (no hub).

    ``init_std``: the config's ``initializer_range``; 0.5 (not transformers' 0.02) makes random policies far
    from uniform, so that two of them differ and the KL term matters.
    """
    if kind not in MODEL_KINDS:
        raise ValueError(f"model: unknown kind {kind!r}; choose from {MODEL_KINDS}")
    ids = dict(bos_token_id=eos_id, eos_token_id=eos_id, pad_token_id=eos_id)
    if kind == "gpt2":
        config = dict(model_type="gpt2", vocab_size=V, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer,
                      n_head=2, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, initializer_range=init_std, **ids)
        spec = {"model_class": "GPT2LMHeadModel", "config": config, "dtype": "float32"}
    else:
        config = dict(model_type="llama", vocab_size=V, hidden_size=n_embd, intermediate_size=2 * n_embd,
                      num_hidden_layers=n_layer, num_attention_heads=2, num_key_value_heads=2,
                      max_position_embeddings=n_positions, initializer_range=init_std, **ids)
        spec = {"model_class": "LlamaForCausalLM", "config": config, "dtype": "float32"}
    torch.manual_seed(seed)  # transformers initialises from the global generator
    return build_hf(spec).model


def reward_functions(task: tk.TaskConfig) -> list:
    """One TRL reward function per task reward: ``w_i r_i(x, y)`` from the columns ``x`` and ``w``."""
    T = task.response_len

    def make(i, name):
        def reward(prompts, completions, completion_ids, x, w, **kwargs):
            y = torch.full((len(completion_ids), T), tk.EOS, dtype=torch.long)  # TRL cuts at its EOS; pad back
            for b, ids in enumerate(completion_ids):
                ids = [t for t in ids[:T] if t < task.vocab]  # fixed_length: no id reaches V
                y[b, :len(ids)] = torch.tensor(ids, dtype=torch.long)
            r = tk.rewards(task, torch.tensor(x, dtype=torch.long), y)[:, i]  # (B,)
            return (torch.tensor(w, dtype=torch.float64)[:, i] * r).tolist()
        reward.__name__ = f"w_{name}"
        return reward
    return [make(i, name) for i, name in enumerate(task.rewards)]


def build_trainer(algorithm: str, model, pi_ref, task: tk.TaskConfig, folder, G: int, beta: float,
                  fixed_length: bool = False, rows: list | None = None, **options):
    """TRL's trainer for ``model`` (trained) with ``pi_ref`` as its reference, ``G`` completions per prompt.

    ``options`` go to ``GRPOConfig`` / ``RLOOConfig`` (``loss_type``, ``scale_rewards``,
    ``use_bias_correction_kl``, ``multi_objective_aggregation``, ``normalize_advantages`` ...).
    ``model`` is saved under ``folder`` and reloaded, so TRL's reference is rebuilt from there; ``pi_ref=None``
    keeps that rebuilt reference (the initial policy: ``clp_min.interop.trl_mixed``). ``rows``: the
    training dataset (``prompt``, ``x``, ``w`` per row) for ``trainer.train()``; a placeholder when the caller
    feeds batches itself (``trl_loss``).
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm: unknown {algorithm!r}; choose from {ALGORITHMS}")
    trl = _trl()
    from datasets import Dataset

    folder = Path(folder)
    tokenizer = word_tokenizer(task.vocab, fixed_length)
    for m in (model, pi_ref) if pi_ref is not None else (model,):
        for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
            setattr(m.config, key, tokenizer.eos_token_id)
            setattr(m.generation_config, key, tokenizer.eos_token_id)
    model.save_pretrained(folder / "policy")
    tokenizer.save_pretrained(folder / "policy")
    model = type(model).from_pretrained(folder / "policy", dtype=torch.float32)
    Config, Trainer = (trl.GRPOConfig, trl.GRPOTrainer) if algorithm == "grpo" else (trl.RLOOConfig, trl.RLOOTrainer)
    settings = dict(output_dir=str(folder / "out"), num_generations=G, per_device_train_batch_size=G,
                    max_completion_length=task.response_len, beta=beta, report_to=[], use_cpu=True,
                    save_strategy="no", logging_steps=10 ** 9, bf16=False, reward_weights=[1.0] * task.m)
    args = Config(**{**settings, **options})
    rows = rows or [{"prompt": "t1", "x": [1] * task.prompt_len, "w": [1.0 / task.m] * task.m}]
    trainer = Trainer(model=model, reward_funcs=reward_functions(task), args=args,
                      train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    if beta > 0 and pi_ref is not None:
        trainer.ref_model.load_state_dict(pi_ref.state_dict())
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer's training loop, read by compute_loss
    trainer.model.train()
    return trainer


def policy_of(trainer) -> Unconditioned:
    """The trainer's model under clp_min's convention (``policy(w, idx)``), for the exact gradient."""
    return Unconditioned(HFCausalLM(trainer.model))


def batch_rows(prompts: torch.Tensor, w: torch.Tensor, G: int) -> list:
    """TRL's inputs: each prompt's row (``prompt``, ``x``, ``w``) repeated ``G`` times, as its sampler does."""
    texts = prompt_text(prompts)
    return [{"prompt": texts[p], "x": prompts[p].tolist(), "w": [float(v) for v in w[p]]}
            for p in range(prompts.size(0)) for _ in range(G)]


def trl_loss(trainer, G: int):
    """``(prompts [P, L], w [P, m], generator) -> loss``: TRL generates, scores and computes its own loss."""
    def loss_fn(prompts, w, generator):
        seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            batch = trainer._generate_and_score_completions(batch_rows(prompts, w, G))
        return trainer.compute_loss(trainer.model, batch)
    return loss_fn
