"""TRL's GRPO and RLOO losses against the exact gradient of ``J_w``: the bias table (docs/checking_a_trainer.md).

For each configuration of TRL's trainer (``Row``) and each setting (fixed- or variable-length
completions, aligned or misaligned rewards: ``Setting``), TRL's own loss (``clp_min.interop.trl.trl_loss``)
is sampled ``n_batches`` times at fixed prompts and weightings and compared by
``gradcheck.compare`` with

- the exact ``g = grad(- mean_x J_{w_x}(x))`` (``gradcheck.exact_gradient``), and
- the gradient the source predicts (``predicted_gradient``), where it has a closed form: then the
  row says whether the measurement matches the prediction within ``k`` standard errors.

Predictions (derivations in docs/checking_a_trainer.md). On-policy, one iteration, so TRL's
importance ratio is 1 in value with gradient ``grad log pi`` and clipping is inactive.

- RLOO without advantage normalisation: unbiased, ``E[g_hat] = g`` (KL as a sequence reward).
- GRPO, ``scale_rewards="none"``, ``sum_then_normalize``, with a per-sequence token weight ``f(y)``
  (``1/n(y)`` for ``grpo``; ``1/T`` for ``dr_grpo``, and for ``bnpo``/``dapo`` at fixed length):

      E[g_hat] = - (1 - 1/G) grad_theta sum_y pi(y) f(y) (w.r(y) - E[w.r])
                 + beta sum_y pi(y) f(y) sum_t [grad k3_t(y) + c k3_t(y) grad log pi(y_t|y_<t)]

  with ``k3_t = exp(log pi_ref - log pi) - (log pi_ref - log pi) - 1`` at the sampled token and
  ``c = 1`` with ``use_bias_correction_kl`` (the per-token KL's gradient with the prefix held
  fixed), ``c = 0`` without (the gradient of the per-token reverse KL(pi_ref || pi)).
- Every other GRPO row (std scaling, ``normalize_then_sum``, ``bnpo``/``dapo`` at variable length)
  couples the samples of a batch non-linearly: no closed form; predicted biased.

Shape letters: P prompts, G completions per prompt, N responses, T response length, V vocabulary,
m rewards, D parameters.
"""
from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass

import torch

from clp_min.oracle import gradcheck
from clp_min import task as tk
from clp_min.interop import trl as ta
from clp_min.interop.hf import HFCausalLM

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
SCALES = ("group", "batch", "none")
AGGREGATIONS = ("sum_then_normalize", "normalize_then_sum")
LENGTHS = ("fixed", "variable")
ALIGNMENTS = ("aligned", "misaligned")


@dataclass(frozen=True)
class Row:
    """One TRL configuration; ``beta`` > 0 rows differ by ``bias_correction`` (GRPO's ``use_bias_correction_kl``)."""
    algorithm: str  # "grpo" or "rloo"
    beta: float
    loss_type: str = "-"
    scale_rewards: str = "-"
    bias_correction: bool = False
    aggregation: str = "-"
    normalize_advantages: bool = False

    def options(self) -> dict:
        if self.algorithm == "rloo":
            return {"normalize_advantages": self.normalize_advantages}
        return {"loss_type": self.loss_type, "scale_rewards": self.scale_rewards,
                "use_bias_correction_kl": self.bias_correction, "multi_objective_aggregation": self.aggregation}

    @property
    def name(self) -> str:
        if self.algorithm == "rloo":
            return f"rloo beta={self.beta:g} normalize_advantages={self.normalize_advantages}"
        kl = "" if self.beta == 0 else f" kl_correction={self.bias_correction}"
        return f"grpo {self.loss_type} scale={self.scale_rewards} beta={self.beta:g}{kl} {self.aggregation}"


@dataclass(frozen=True)
class Setting:
    lengths: str  # "fixed": TRL's EOS never produced, T tokens each; "variable": the task's EOS ends a response
    alignment: str  # "aligned": rewards (coverage, knob) at knob strength 0; "misaligned": strength 1


@dataclass(frozen=True)
class StudyConfig:
    vocab: int = 5  # V, the task's EOS included
    prompt_len: int = 2  # L
    response_len: int = 3  # T
    prompts: int = 2  # P prompts per batch
    G: int = 8  # completions per prompt (TRL's num_generations)
    beta: float = 0.5  # KL weight of the beta > 0 rows
    n_batches: int = 400  # sampled batches per cell
    groups: int = 20  # batch-means groups for the standard errors
    k: float = 3.0  # verdicts at k standard errors
    model: str = "gpt2"  # "gpt2" or "llama"
    seed: int = 0


def all_rows(beta: float) -> list:
    """The full table: GRPO loss_type x scale_rewards x (beta = 0; beta > 0 with and without the KL
    correction) x aggregation, and RLOO normalize_advantages x beta."""
    kl = [(0.0, False), (beta, True), (beta, False)]
    grpo = [Row("grpo", b, lt, s, c, a) for lt in LOSS_TYPES for s in SCALES for b, c in kl for a in AGGREGATIONS]
    return grpo + [Row("rloo", b, normalize_advantages=n) for n in (False, True) for b in (0.0, beta)]


def reduced_rows(beta: float) -> list:
    """The rows that decide the main questions: TRL's defaults, the unscaled GRPO losses, RLOO."""
    return [Row("grpo", beta, "dapo", "group", True, "sum_then_normalize"),  # GRPO's defaults with a KL term
            Row("grpo", 0.0, "dapo", "group", False, "sum_then_normalize"),  # GRPO's defaults (beta = 0)
            Row("grpo", beta, "grpo", "none", True, "sum_then_normalize"),
            Row("grpo", beta, "grpo", "none", False, "sum_then_normalize"),
            Row("grpo", 0.0, "grpo", "none", False, "sum_then_normalize"),
            Row("grpo", 0.0, "dr_grpo", "none", False, "sum_then_normalize"),
            Row("grpo", 0.0, "dapo", "none", False, "sum_then_normalize"),  # tokens over the batch's count
            Row("grpo", 0.0, "grpo", "none", False, "normalize_then_sum"),
            Row("rloo", beta), Row("rloo", 0.0), Row("rloo", beta, normalize_advantages=True)]


def task_for(cfg: StudyConfig, setting: Setting) -> tk.TaskConfig:
    return tk.TaskConfig(vocab=cfg.vocab, prompt_len=cfg.prompt_len, response_len=cfg.response_len,
                         rewards=("coverage", "knob"), strength=0.0 if setting.alignment == "aligned" else 1.0)


def batch_inputs(cfg: StudyConfig, task: tk.TaskConfig) -> tuple:
    """The fixed prompts ``[P, L]`` and interior weightings ``[P, m]`` of every cell (drawn from ``cfg.seed``)."""
    gen = torch.Generator().manual_seed(cfg.seed)
    prompts = tk.sample_prompts(task, cfg.prompts, gen)
    w1 = torch.linspace(0.25, 0.75, cfg.prompts, dtype=torch.float64)
    return prompts, torch.stack([w1, 1 - w1], dim=1)


def token_weight(row: Row, fixed: bool, mask: torch.Tensor, T: int):
    """``f(y)`` ``[N]`` of the prediction, or ``None`` where the loss normalisation has no closed form."""
    n = mask.sum(-1).double()  # (N,) decided tokens
    if row.loss_type == "grpo":
        return 1.0 / n
    if row.loss_type == "dr_grpo" or fixed:
        return torch.full_like(n, 1.0 / T)
    return None


def predicted_gradient(row: Row, policy, pi_ref, task, prompts, w, G: int, fixed: bool, params) -> tuple:
    """The expected gradient the source predicts ``[D]`` (or ``None``) and the prediction in words."""
    if row.algorithm == "rloo":
        if row.normalize_advantages:
            return None, "biased (advantages divided by their batch std: scale and weights change)"
        return gradcheck.exact_gradient(policy, pi_ref, task, prompts, w, row.beta, params, fixed), "unbiased"
    if row.aggregation == "normalize_then_sum":
        return None, "biased (each reward over its group std; w cancels within a group)"
    if row.scale_rewards != "none":
        return None, f"biased (advantages over the {row.scale_rewards} std: prompts reweighted)"
    Y, mask = gradcheck.responses(task, fixed)
    f = token_weight(row, fixed, mask, task.response_len)
    if f is None:
        return None, "biased (tokens over the batch's token count)"
    P, N = prompts.size(0), Y.size(0)
    _, logp_all = gradcheck.response_logprobs(policy, w.float(), prompts, Y, mask)  # (P, N, T, V)
    tok = logp_all.gather(-1, Y.expand(P, -1, -1)[..., None])[..., 0]  # (P, N, T) log pi(y_t | y_<t)
    with torch.no_grad():
        _, ref_all = gradcheck.response_logprobs(pi_ref, None, prompts, Y, mask)
        ref = ref_all.gather(-1, Y.expand(P, -1, -1)[..., None])[..., 0]
        r = tk.rewards(task, prompts.repeat_interleave(N, dim=0), Y.repeat(P, 1)).view(P, N, -1)
    R = (r * w[:, None, :]).sum(-1)  # (P, N) w . r
    logp = (tok * mask).sum(-1)  # (P, N)
    pi = logp.exp()
    baseline = (pi.detach() * R).sum(1, keepdim=True)  # E[w . r] per prompt
    reward_part = (1 - 1 / G) * (pi * f * (R - baseline)).sum(1)  # (P,)
    k3 = torch.exp(ref - tok) - (ref - tok) - 1  # (P, N, T)
    if row.bias_correction:
        k3 = k3 * torch.exp(tok - tok.detach())
    kl_part = (pi.detach() * f * (k3 * mask).sum(-1)).sum(1)  # (P,)
    loss = (-reward_part + row.beta * kl_part).mean()
    kl_words = "" if row.beta == 0 else (" + per-token KL, prefix fixed" if row.bias_correction
                                         else " + per-token reverse KL")
    return gradcheck.flat_grad(loss, params), f"(1-1/G) f . grad E[w.r]{kl_words}"


def run_cell(cfg: StudyConfig, row: Row, setting: Setting) -> dict:
    """One cell of the table: TRL's sampled gradients against the exact and the predicted gradient."""
    torch.set_num_threads(1)
    task = task_for(cfg, setting)
    fixed = setting.lengths == "fixed"
    prompts, w = batch_inputs(cfg, task)
    eos = task.vocab if fixed else tk.EOS
    model = ta.tiny_causal_lm(cfg.model, task.vocab, cfg.seed, eos_id=eos)
    pi_ref = ta.tiny_causal_lm(cfg.model, task.vocab, cfg.seed + 1, eos_id=eos)
    with tempfile.TemporaryDirectory() as folder:
        trainer = ta.build_trainer(row.algorithm, model, pi_ref, task, folder, cfg.G, row.beta, fixed,
                                   **row.options())
        policy, ref = ta.policy_of(trainer), HFCausalLM(pi_ref)
        params = [p for p in policy.parameters() if p.requires_grad]
        g = gradcheck.exact_gradient(policy, ref, task, prompts, w, row.beta, params, fixed)
        pred, words = predicted_gradient(row, policy, ref, task, prompts, w, cfg.G, fixed, params)
        means = gradcheck.sampled_gradients(ta.trl_loss(trainer, cfg.G), params, prompts, w, cfg.n_batches,
                                            cfg.groups, cfg.seed)
    measured = gradcheck.compare(means, g, cfg.k, cfg.n_batches)
    out = {"row": asdict(row), "name": row.name, "setting": asdict(setting), "prediction": words,
           "measured": measured.as_dict()}
    if pred is not None:
        gp = pred - g
        out["predicted"] = {"rel_bias": float(gp.norm() / g.norm()),
                            "cosine": float(pred @ g / (pred.norm() * g.norm())),
                            "scale": float(pred @ g / (g @ g))}
        out["vs_prediction"] = gradcheck.compare(means, pred, cfg.k, cfg.n_batches).as_dict()
    return out


def settings() -> list:
    return [Setting(lengths, alignment) for lengths in LENGTHS for alignment in ALIGNMENTS]
