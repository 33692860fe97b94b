"""End to end: a CLP trained by TRL's own trainer with per-example weightings, evaluated exactly.

Two ways the weighting reaches the model (``CONDITIONINGS``), both through the prompt's first token:
with ``m = 2`` and the grid ``w_1 in {0, 1/4, 1/2, 3/4, 1}`` (``LEVELS = 4``), the token
``q = round(4 w_1)`` (an id ``0 .. 4``, so ``V >= 5``) goes before the task's prompt.

- ``written``: a plain GPT-2 reads the token like any other (``WrittenWeighting``). Works with any
  TRL model. The reference reads the same written prompt (TRL computes ``pi_ref``'s log-probs on the
  policy's inputs), so ``J_w``'s reference is ``pi_ref(y | q(w), x)``.
- ``mixed``: parameter mixing, ``theta(w) = w_1 theta_1 + w_2 theta_2`` over the transformer blocks
  (``clp_min.interop.trl_mixed.MixedCLM``: reads ``q``, strips it, runs the ``ParamConditioned`` GPT-2 at
  ``w`` on the task's prompt). Every ``theta_i`` starts at pi_ref's weights; the reference is that initial
  policy, ``pi_ref(y | x)``, which ignores ``w`` (TRL rebuilds it from the saved initial model).

Every method of one conditioning, and the exact optimum, use that conditioning's reference.
Training weightings are drawn as ``clp train`` draws them (Dirichlet with vertices,
``clp_min.weightings.draw_weightings``) and rounded to the grid, so training and evaluation weightings
are the grid's.

Methods at equal sampled completions (``steps x P x G``): TRL's GRPO and RLOO (``trainer.train()``,
constant learning rate, Adam, no gradient clipping) and clp_min's RLOO (the same loss as
``clp_min.rl.rl_step``); clp_min's exact estimator at the same steps and prompts. Evaluation:
exact normalised regret ``(J*_w - J_w(pi)) / (J*_w - J_w(pi_ref))`` (``clp_min.oracle.kit.exact_regret``)
on the held-out prompts, averaged over the grid, every ``eval_every`` steps.

Shape letters: P prompts per step, G completions per prompt, K grid weightings, m = 2 rewards.
"""
from __future__ import annotations

import copy
import tempfile
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn as nn

from clp_min import rl
from clp_min import task as tk
from clp_min.conditioning import ParamConditioned, Unconditioned
from clp_min.decoding import sample
from clp_min.interop import trl as ta
from clp_min.interop import trl_mixed as tm
from clp_min.interop.hf import HFCausalLM
from clp_min.oracle import gradcheck, kit
from clp_min.weightings import draw_weightings

LEVELS = 4
GRID = np.array([[q / LEVELS, 1 - q / LEVELS] for q in range(LEVELS + 1)])  # (K, 2)
CONDITIONINGS = ("written", "mixed")


def level_tokens(w: torch.Tensor, B: int) -> torch.Tensor:
    """The written weighting ``[B, 1]``: token ``round(LEVELS w_1)`` (``w`` ``[m]`` or ``[B, m]``)."""
    w = torch.as_tensor(w, dtype=torch.float64)
    q = torch.round(LEVELS * w[..., 0]).long()
    return q.expand(B)[:, None] if q.dim() == 0 else q[:, None]


class WrittenWeighting(nn.Module):
    """``policy(w, idx, cache)`` of a plain model whose input starts with the weighting's token."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, w, idx, cache=None):
        if cache is not None:  # the written token is already in the cache
            return self.model(idx, cache)
        logits, cache = self.model(torch.cat([level_tokens(w, idx.size(0)).to(idx.device), idx], dim=1))
        return logits[:, 1:], cache  # (B, N, V): drop the written token's own prediction


@dataclass(frozen=True)
class E2EConfig:
    vocab: int = 5  # V (>= LEVELS + 1: the written token is a task token id)
    prompt_len: int = 3  # L: 64 prompts, 1/8 of them held out
    response_len: int = 3  # T
    beta: float = 0.5
    prompts: int = 8  # P per step
    G: int = 8  # completions per prompt
    steps: int = 300
    lr: float = 1e-3
    eval_every: int = 50
    p_vertex: float = 0.25  # weightings: Dirichlet(1) with this share of vertices (clp train's "vertices")
    model: str = "gpt2"
    n_embd: int = 16  # width of the tiny model
    n_layer: int = 1  # its layers
    seed: int = 0


def lm(cfg: E2EConfig, V: int):
    """pi_ref and every method's initial policy (one seed: the policy starts at pi_ref)."""
    return ta.tiny_causal_lm(cfg.model, V, cfg.seed + 1, n_embd=cfg.n_embd, n_layer=cfg.n_layer)


def task_of(cfg: E2EConfig) -> tk.TaskConfig:
    return tk.TaskConfig(vocab=cfg.vocab, prompt_len=cfg.prompt_len, response_len=cfg.response_len,
                         rewards=("coverage", "knob"), strength=1.0)


def training_draws(cfg: E2EConfig, task: tk.TaskConfig) -> tuple:
    """Every step's prompts ``[S, P, L]`` and grid weightings ``[S, P, 2]`` (one seed: the same for every method)."""
    rng, gen = np.random.default_rng(cfg.seed), torch.Generator().manual_seed(cfg.seed)
    x = tk.sample_prompts(task, cfg.steps * cfg.prompts, gen, split="train").view(cfg.steps, cfg.prompts, -1)
    w = draw_weightings(rng, cfg.steps * cfg.prompts, 2, "vertices", 1.0, cfg.p_vertex)
    w1 = np.round(LEVELS * w[:, 0]) / LEVELS
    return x, torch.from_numpy(np.stack([w1, 1 - w1], axis=1)).view(cfg.steps, cfg.prompts, 2)


def evaluate(policy, ref, task, beta) -> tuple:
    """Mean normalised regret on the held-out prompts and on the first 8 training prompts (optimisation alone)."""
    x = tk.all_prompts(task)
    held = tk.is_heldout(x)
    return mean_regret(policy, ref, task, x[held], beta), mean_regret(policy, ref, task, x[~held][:8], beta)


BETAS = (0.5, 0.2, 0.1, 0.05, 0.02)  # objectives a trained policy is scored against (what did it optimise?)


def effective_beta(policy, ref, task) -> dict:
    """The final policy's regret on the first 8 training prompts against ``J_w`` at each KL weight of ``BETAS``:
    the weight where it is smallest says which objective a method optimised (a trainer whose KL term is
    effectively weaker lands nearer a smaller beta's optimum)."""
    x = tk.all_prompts(task)
    x = x[~tk.is_heldout(x)][:8]
    return {f"{b:g}": mean_regret(policy, ref, task, x, b) for b in BETAS}


def mean_regret(policy, ref, task, prompts, beta) -> float:
    """Exact normalised regret on ``prompts``, averaged over the grid (each weighting with its own written prompt).

    The policy is scored in eval mode and handed back in the mode it came in: during ``trainer.train()``
    TRL's model is in training mode, where transformers turns the key/value cache off under gradient
    checkpointing, and the exact evaluation decodes with the cache.
    """
    was_training = policy.training
    policy.eval()
    out = []
    try:
        for w in GRID:
            wt = torch.as_tensor(w)
            check = kit.exact_regret(policy, lambda idx, wt=wt: ref(wt, idx), task, prompts, w[None], beta, tol=1.0)
            out.append(float(check.numbers["normalised_regret"][0]))
    finally:
        policy.train(was_training)
    return float(np.mean(out))


def reference(conditioning: str, pi_ref) -> nn.Module:
    """``ref(w, idx)``: pi_ref reading the written token (written) or ignoring ``w`` (mixed: the initial policy)."""
    return WrittenWeighting(HFCausalLM(pi_ref)) if conditioning == "written" else Unconditioned(HFCausalLM(pi_ref))


def clp_policy(conditioning: str, model) -> nn.Module:
    """clp_min's ``policy(w, idx)`` view of a model TRL trains (a plain GPT-2, or a ``MixedCLM``)."""
    return WrittenWeighting(HFCausalLM(model)) if conditioning == "written" else model.policy


def run_trl(cfg: E2EConfig, algorithm: str, options: dict, conditioning: str = "written", progress=None) -> list:
    """TRL's own ``trainer.train()``; exact held-out regret every ``eval_every`` steps ``[(step, regret)]``."""
    from transformers import TrainerCallback

    task = task_of(cfg)
    x, w = training_draws(cfg, task)
    rows = [{"prompt": ta.prompt_text(torch.cat([level_tokens(w[s, p], 1)[0], x[s, p]])[None])[0],
             "x": x[s, p].tolist(), "w": w[s, p].tolist()} for s in range(cfg.steps) for p in range(cfg.prompts)]
    model, pi_ref = lm(cfg, task.vocab), lm(cfg, task.vocab)  # the policy starts at pi_ref
    ref = reference(conditioning, pi_ref)
    if conditioning == "mixed":  # every theta_i = pi_ref's weights; TRL's reference is this initial model
        model, pi_ref, options = tm.mixed_clm(model, LEVELS), None, {**options, **tm.trl_options()}
    curve = []

    class Evaluate(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step % cfg.eval_every == 0:
                curve.append((state.global_step, *evaluate(clp_policy(conditioning, trainer.model), ref, task,
                                                           cfg.beta)))
                if progress:
                    progress(algorithm, state.global_step)

    with tempfile.TemporaryDirectory() as folder:
        trainer = ta.build_trainer(algorithm, model, pi_ref, task, folder, cfg.G, cfg.beta, rows=rows,
                                   per_device_train_batch_size=cfg.prompts * cfg.G, max_steps=cfg.steps,
                                   learning_rate=cfg.lr, lr_scheduler_type="constant", max_grad_norm=0.0,
                                   shuffle_dataset=False, seed=cfg.seed, **options)
        curve.append((0, *evaluate(clp_policy(conditioning, trainer.model), ref, task, cfg.beta)))
        trainer.add_callback(Evaluate())
        trainer.train()
        return curve, effective_beta(clp_policy(conditioning, trainer.model), ref, task)


def run_clp_min(cfg: E2EConfig, estimator: str, conditioning: str = "written", progress=None) -> list:
    """clp_min's RLOO (``G`` samples per prompt) or exact estimator on the same draws, model and optimiser."""
    task = task_of(cfg)
    x, w = training_draws(cfg, task)
    pi_ref = lm(cfg, task.vocab)
    ref = reference(conditioning, pi_ref)
    policy = (WrittenWeighting(HFCausalLM(copy.deepcopy(pi_ref))) if conditioning == "written"
              else ParamConditioned(HFCausalLM(copy.deepcopy(pi_ref)), tm.M, tm.SCOPE))  # MixedCLM's
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    curve = [(0, *evaluate(policy, ref, task, cfg.beta))]
    T, G = task.response_len, cfg.G
    for s in range(cfg.steps):
        if estimator == "exact":
            loss = -gradcheck.batch_objective(policy, ref, task, x[s], w[s], cfg.beta, ref_sees_w=True).mean()
        else:  # RLOO, clp_min.rl.rl_step's loss
            xs, ws = x[s].repeat_interleave(G, dim=0), w[s].float().repeat_interleave(G, dim=0)
            y = rl.pad_responses(sample(policy, ws, xs, T, generator=gen, eos=tk.EOS).tokens, T)
            logp = rl.response_logprobs(policy, ws, xs, y)
            with torch.no_grad():
                kl = logp - rl.response_logprobs(ref, ws, xs, y)
                R = (ws * tk.rewards(task, xs, y).float()).sum(1) - cfg.beta * kl
                A = rl.leave_one_out_advantages(R.view(-1, G)).view(-1)
            loss = -(A * logp).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (s + 1) % cfg.eval_every == 0:
            curve.append((s + 1, *evaluate(policy, ref, task, cfg.beta)))
            if progress:
                progress(estimator, s + 1)
    return curve, effective_beta(policy, ref, task)


TRL_SETTINGS = {  # name: (algorithm, options)
    "trl grpo defaults (dapo, group std, KL correction)": ("grpo", {}),
    "trl grpo dr_grpo, scale none, KL correction": ("grpo", {"loss_type": "dr_grpo", "scale_rewards": "none"}),
    "trl grpo dr_grpo, scale none, no KL correction": ("grpo", {"loss_type": "dr_grpo", "scale_rewards": "none",
                                                                "use_bias_correction_kl": False}),
    "trl rloo defaults": ("rloo", {}),
}
MIXED_SKIPPED = ("trl grpo dr_grpo, scale none, no KL correction",)  # the written rows already separate it
METHODS = {  # name: (conditioning, runner, argument); written rows keep their historical names
    **{name: ("written", "trl", arg) for name, arg in TRL_SETTINGS.items()},
    "clp_min rloo": ("written", "clp_min", "rloo"),
    "clp_min exact": ("written", "clp_min", "exact"),
    **{f"mixed: {name}": ("mixed", "trl", arg) for name, arg in TRL_SETTINGS.items() if name not in MIXED_SKIPPED},
    "mixed: clp_min rloo": ("mixed", "clp_min", "rloo"),
    "mixed: clp_min exact": ("mixed", "clp_min", "exact"),
}


def methods_of(conditioning: str = "both") -> list:
    """The names of ``METHODS`` with that conditioning (``written``, ``mixed`` or ``both``)."""
    if conditioning not in (*CONDITIONINGS, "both"):
        raise ValueError(f"conditioning: unknown {conditioning!r}; choose from {(*CONDITIONINGS, 'both')}")
    return [name for name, (c, _, _) in METHODS.items() if conditioning in (c, "both")]


def run_method(args) -> dict:
    cfg, name = args
    torch.set_num_threads(1)
    conditioning, kind, arg = METHODS[name]
    start = time.perf_counter()
    curve, by_beta = (run_trl(cfg, *arg, conditioning) if kind == "trl" else run_clp_min(cfg, arg, conditioning))
    return {"method": name, "conditioning": conditioning, "curve": curve, "final_heldout_regret": curve[-1][1],
            "final_train_regret": curve[-1][2], "train_regret_by_beta": by_beta,
            "seconds": round(time.perf_counter() - start, 1)}


def run_all(cfg: E2EConfig, jobs: int = 1, progress=None, conditioning: str = "both") -> dict:
    """Every method of ``METHODS`` with that conditioning (in ``jobs`` processes); ``progress(done, total)``
    after each."""
    import multiprocessing

    work = [(cfg, name) for name in methods_of(conditioning)]
    results = []
    if jobs == 1:
        for job in work:
            results.append(run_method(job))
            if progress:
                progress(len(results), len(work))
    else:
        with multiprocessing.get_context("spawn").Pool(jobs) as pool:
            for out in pool.imap(run_method, work):
                results.append(out)
                if progress:
                    progress(len(results), len(work))
    return {"config": asdict(cfg), "runs": results}


def markdown(result: dict) -> str:
    c = result["config"]
    lines = ["# CLPs trained by TRL's trainers, exact regret\n",
             f"V = {c['vocab']}, L = {c['prompt_len']}, T = {c['response_len']}, beta = {c['beta']}, "
             f"{c['prompts']} prompts x "
             f"G = {c['G']} completions per step, {c['steps']} steps, Adam lr {c['lr']:g} (constant, no clipping), "
             f"{c['model']} (1 layer); the weighting is the prompt's first token, on the grid w_1 in 0, 1/4, .., 1: "
             f"written (a plain model reads it; pi_ref reads it too) or mixed (stripped and turned into "
             f"theta(w) = w_1 theta_1 + w_2 theta_2 over the transformer blocks; pi_ref = the initial policy, which "
             f"ignores w); mean exact normalised regret over the grid (0 = optimum, 1 = pi_ref). Machine: "
             f"{result.get('machine', '?')}.\n",
             "| method | conditioning | held-out regret | training-prompt regret | curve (step: held-out) | seconds |",
             "|---|---|---|---|---|---|"]
    for run in result["runs"]:
        curve = ", ".join(f"{s}: {h:.3f}" for s, h, _ in run["curve"])
        lines.append(f"| {run['method']} | {run.get('conditioning', 'written')} | {run['final_heldout_regret']:.3f} | "
                     f"{run['final_train_regret']:.3f} | {curve} | {run.get('seconds', '-')} |")
    betas = list(result["runs"][0]["train_regret_by_beta"])
    lines += ["\nWhat each final policy optimised: its regret on the training prompts against J_w at other KL "
              "weights (trained at beta = %g; the smallest regret marks the objective it is nearest the optimum of).\n"
              % c["beta"], "| method | " + " | ".join(f"beta = {b}" for b in betas) + " |",
              "|---|" + "---|" * len(betas)]
    for run in result["runs"]:
        r = run["train_regret_by_beta"]
        lines.append(f"| {run['method']} | " + " | ".join(f"{r[b]:.3f}" for b in betas) + " |")
    return "\n".join(lines) + "\n"


def figure(result: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    setting = lambda run: run["method"].removeprefix("mixed: ")  # noqa: E731  one colour per setting
    colours = {name: f"C{i}" for i, name in enumerate(dict.fromkeys(map(setting, result["runs"])))}
    for run in result["runs"]:
        steps = [s for s, _, _ in run["curve"]]
        for ax, k in zip(axes, (1, 2)):
            ax.plot(steps, [p[k] for p in run["curve"]], marker="o", ms=3, label=run["method"],
                    color=colours[setting(run)], ls="--" if run.get("conditioning") == "mixed" else "-")
    for ax, title in zip(axes, ("held-out prompts", "training prompts")):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step")
        ax.axhline(0, color="gray", lw=0.5)
    axes[0].set_ylabel("mean exact normalised regret")
    axes[1].legend(fontsize=5)
    fig.suptitle("solid: weighting written as a prompt token; dashed: parameter-mixed", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
