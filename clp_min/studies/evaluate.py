"""``clp eval``: fronts of steerable methods on held-out prompts, their measures and figure.

A *method* maps a weighting ``w`` to a way of decoding (``sample``) and to exact
next-token log-probabilities (``logprobs``, used by the enumerable path of
``clp_min.oracle.exact``). Methods built here, each from the one implementation in part 1:

    policy_method     a conditioned policy (CLP, Rewarded Soups, input conditioning,
                      a single model): clp_min.decoding.sample, 1 model call per token
    logit_mix_method  zero-shot per-token logit mixing of m models (logit_mix_sample)
    realign_method    decoding-time realignment (P4), w = (1 - lam, lam) (realign_sample)

Monte Carlo estimates (``mc_front``): for each weighting, ``n`` responses per
held-out prompt; rewards and the sequence KL estimate
``log pi(y|x) - log pi_ref(y|x)`` (with ``log pi`` the log-prob of the
distribution each token was drawn from) are averaged per prompt, then over
prompts; the standard error is the standard deviation of the per-prompt means
over ``sqrt(P)`` (prompts are i.i.d. draws of the task).

Measures (THEORY.md section 6, computed by ``theory.pareto``): points are
``(R_1 .. R_m)`` at fixed beta, or ``(R, -K)`` when steering the KL weight. The
hypervolume's reference point is said otherwise than section 6's default
``R(pi_ref)``: with conflicting rewards the regularised front passes near
``R(pi_ref)`` without dominating it, so that volume is ~0 for every method.
``clp_min.studies.setups`` uses the worst reward vector ``0`` (every reward lies in
[0, 1]), and ``(0, -1.1 K_max)`` for ``(R, -K)``, ``K_max`` the largest KL of any
method's point in that comparison (stated in the JSON).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from clp_min.oracle import exact
from clp_min import task as tk
from clp_min.conditioning import Unconditioned
from clp_min.decoding import logit_mix_sample, realign_sample, sample
from clp_min.rl import pad_responses, response_logprobs
from clp_min.task import reward_vectors
from clp_min.run_folder import load_trained
from theory import pareto
from theory.mixing import kl_weight_mix, logit_mix
from theory.weights import simplex_grid


@dataclass
class Method:
    name: str
    sample: Callable  # (w [m], prompts [B, L], T, generator) -> Decoded with at most T tokens
    logprobs: Callable  # (w [m], idx [B, N]) -> [B, N, V] normalised next-token log-probs


def policy_method(name: str, policy) -> Method:
    """A conditioned policy ``policy(w, idx, cache) -> (logits, cache)``."""
    def draw(w, prompts, T, generator):
        return sample(policy, torch.as_tensor(w, dtype=torch.float32), prompts, T, generator=generator, eos=tk.EOS)

    @torch.no_grad()
    def logprobs(w, idx):
        logits, _ = policy(torch.as_tensor(w, dtype=torch.float32), idx)
        return F.log_softmax(logits.double(), dim=-1)

    return Method(name, draw, logprobs)


def logit_mix_method(name: str, models: list) -> Method:
    """Zero-shot per-token logit mixing ``pi^mix_w ∝ prod_i pi_i^{w_i}`` (THEORY.md section 2)."""
    def draw(w, prompts, T, generator):
        return logit_mix_sample(models, torch.as_tensor(w), prompts, T, generator=generator, eos=tk.EOS)

    @torch.no_grad()
    def logprobs(w, idx):
        log_pis = np.stack([F.log_softmax(mdl(idx)[0].double(), dim=-1).numpy() for mdl in models])  # (m, B, N, V)
        return logit_mix(log_pis, np.asarray(w, dtype=np.float64)[None])[0]  # (B, N, V)

    return Method(name, draw, logprobs)


def realign_method(name: str, pi_ref, tuned) -> Method:
    """Decoding-time realignment (P4) at ``lam = w[1]`` of ``w = (1 - lam, lam)``."""
    def draw(w, prompts, T, generator):
        return realign_sample(pi_ref, tuned, float(w[1]), prompts, T, generator=generator, eos=tk.EOS)

    @torch.no_grad()
    def logprobs(w, idx):
        ref = F.log_softmax(pi_ref(idx)[0].double(), dim=-1).numpy()
        tun = F.log_softmax(tuned(idx)[0].double(), dim=-1).numpy()
        return kl_weight_mix(ref, tun, np.array([float(w[1])]))[0]

    return Method(name, draw, logprobs)


@torch.no_grad()
def mc_front(method: Method, cfg: tk.TaskConfig, pi_ref, W: np.ndarray, prompts: torch.Tensor, n: int,
             beta: float, generator: torch.Generator, steer_kl: bool = False) -> dict:
    """Monte Carlo rewards ``[K, m_task]``, KL ``[K]``, objective ``[K]`` with standard errors,
    and model calls per token.

    The objective is ``w . r - beta K`` with ``r`` the reward vector trained on
    (``(0, R)`` when steering the KL weight).
    """
    if n < 1:
        raise ValueError(f"n: need at least one sample per prompt, got {n}")
    P = prompts.size(0)
    x = prompts.repeat_interleave(n, dim=0)  # (P*n, L)
    out = {k: [] for k in ("rewards", "rewards_se", "kl", "kl_se", "objective", "objective_se")}
    calls = tokens = 0
    for w in W:
        d = method.sample(w, x, cfg.response_len, generator)
        y = pad_responses(d.tokens, cfg.response_len)  # (B, T)
        logp = (d.logprobs.double() * d.mask).sum(dim=1)
        logp_ref = response_logprobs(Unconditioned(pi_ref), w, x, y).double()
        r = tk.rewards(cfg, x, y)  # (B, m_task)
        kl = logp - logp_ref
        J = (torch.as_tensor(w, dtype=torch.float64) * reward_vectors(cfg, x, y, steer_kl)).sum(1) - beta * kl
        for key, v in (("rewards", r), ("kl", kl), ("objective", J)):
            per_prompt = v.reshape(P, n, -1).mean(dim=1).numpy()  # (P, .)
            out[key].append(per_prompt.mean(axis=0).squeeze())
            out[key + "_se"].append((per_prompt.std(axis=0, ddof=1) / np.sqrt(P)).squeeze() if P > 1
                                    else np.full(per_prompt.shape[1:], np.nan).squeeze())
        calls += d.model_calls
        tokens += d.tokens.size(1)
    res = {k: np.array(v) for k, v in out.items()}
    res["rewards"] = res["rewards"].reshape(len(W), -1)
    res["rewards_se"] = res["rewards_se"].reshape(len(W), -1)
    res["model_calls_per_token"] = calls / tokens
    return res


def front_points(res: dict, steer_kl: bool) -> np.ndarray:
    """Points to maximise: ``(R_1 .. R_m)``, or ``(R, -K)`` when steering the KL weight, ``[K, d]``."""
    if steer_kl:
        return np.column_stack([res["rewards"][:, 0], -res["kl"]])
    return res["rewards"]


def front_measures(points: dict, W: np.ndarray, ref_point: np.ndarray, clp_names: list, baseline_names: list) -> dict:
    """Hypervolume, steerability of every method, and dominance between each CLP and each baseline.

    ``points``: ``{method: [K, d]}``; ``W``: ``[K, m]`` the weightings that produced them.
    """
    measures = {"reference_point": ref_point.tolist(), "methods": {}, "dominance": {}}
    for name, pts in points.items():
        steer = pareto.steerability(W, pts) if pts.shape == W.shape else None
        measures["methods"][name] = {
            "hypervolume": pareto.hypervolume(pts, ref_point),
            "spread": None if steer is None else steer["spread"].tolist(),
            "total_spread": None if steer is None else float(steer["spread"].sum()),
            "rank_correlation": None if steer is None else steer["rank_correlation"].tolist(),
            "inner_product": None if steer is None else steer["inner_product"],
        }
    for a in clp_names:
        for b in baseline_names:
            if a in points and b in points:
                measures["dominance"][f"{b} dominated by {a}"] = pareto.dominated_share(points[b], points[a])
                measures["dominance"][f"{a} dominated by {b}"] = pareto.dominated_share(points[a], points[b])
    return measures


def plot_fronts(results: dict, path, title: str, steer_kl: bool = False, exact_front: np.ndarray | None = None,
                ref_point: np.ndarray | None = None, reward_names=None) -> None:
    """One figure with every method's front (error bars: one standard error).

    ``results``: ``{method: mc_front result or exact stats}``; for m = 3 the three pairwise projections.
    ``reward_names`` (the task's, in order) label the axes ``R_i = name``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = next(iter(results.values()))
    m = first["rewards"].shape[1]
    label = [f"R_{i + 1}" + (f" = {reward_names[i]}" if reward_names else "") for i in range(m)]
    pairs = [(0, 1)] if m == 2 else [(0, 1), (0, 2), (1, 2)] if m == 3 else [None]
    fig, axes = plt.subplots(1, len(pairs), figsize=(5.2 * len(pairs), 4.3), squeeze=False)
    for ax, pair in zip(axes[0], pairs):
        for name, res in results.items():
            if steer_kl or pair is None:
                x, y = res["kl"], res["rewards"][:, 0]
                xe, ye = res.get("kl_se"), None if res.get("rewards_se") is None else res["rewards_se"][:, 0]
                ax.set_xlabel("KL(pi || pi_ref)")
                ax.set_ylabel(label[0] if reward_names else "R")
            else:
                i, j = pair
                x, y = res["rewards"][:, i], res["rewards"][:, j]
                se = res.get("rewards_se")
                xe, ye = (None, None) if se is None else (se[:, i], se[:, j])
                ax.set_xlabel(label[i])
                ax.set_ylabel(label[j])
            ax.errorbar(x, y, xerr=xe, yerr=ye, fmt="o-", ms=3, lw=1, capsize=1.5, label=name)
        if exact_front is not None and pair is not None and not steer_kl:
            ax.plot(exact_front[:, pair[0]], exact_front[:, pair[1]], "k--", lw=1.2, label="exact pi*_w")
        if ref_point is not None and pair is not None and not steer_kl:
            ax.plot(ref_point[pair[0]], ref_point[pair[1]], "k*", ms=10, label="pi_ref")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def exact_front(methods: dict, pi_ref, task: tk.TaskConfig, W: np.ndarray, prompts: torch.Tensor, beta: float,
                png=None, reward_names=None) -> dict:
    """Exact stats of every method and of pi*_w on the prompts' trees (clp_min.oracle.exact); normalised regret.

    Normalised regret ``(J_w(pi*_w) - J_w(pi)) / (J_w(pi*_w) - J_w(pi_ref))`` per weighting, of the
    prompt-averaged objectives (contexts uniform over ``prompts``), and its mean over the grid.
    """
    trees = exact.prompt_trees(lambda idx: F.log_softmax(pi_ref(idx)[0].double(), dim=-1), task, prompts)
    optimal = exact.optimal_stats(trees, W, beta)
    reference = exact.reference_stats(trees, W, beta)
    stats = {n: exact.policy_stats(trees, exact.method_log_policies(mth.logprobs, task, prompts, W), W, beta)
             for n, mth in methods.items()}
    regret = {n: pareto.normalised_regret(optimal["objective"], s["objective"], reference["objective"])
              for n, s in stats.items()}
    clp = [n for n in methods if n.startswith("CLP")]
    measures = front_measures({**{n: s["rewards"] for n, s in stats.items()}, "optimal": optimal["rewards"]},
                              W, np.zeros(W.shape[1]), clp, [n for n in methods if n not in clp])
    if png is not None:
        plot_fronts(stats, png, "enumerable configuration: exact fronts",
                    exact_front=optimal["rewards"], ref_point=reference["rewards"][0], reward_names=reward_names)
    return {"prompts": int(prompts.size(0)), "optimal": optimal, "reference": reference, "methods": stats,
            "normalised_regret": regret,
            "mean_normalised_regret": {n: float(np.mean(r)) for n, r in regret.items()},
            "measures": measures}


EVAL_FILES = ("front.json", "front.png", "front_exact.png")  # what evaluate_run writes in its folder


def evaluate_run(run_dir, out, grid_n: int, n_prompts: int, n_samples: int, seed: int) -> dict:
    """``clp eval``: the front of one trained run on held-out prompts (``task.is_heldout``, never drawn in
    training); ``front.json``, ``front.png`` (and the exact evaluation when the task is enumerable).

    Returns a summary a reader can interpret: the hypervolume with its reference point, beside the
    hypervolume of ``pi_ref``'s point alone (the untrained baseline) and, when enumerable, of the exact
    optimal front ``pi*_w`` on the same grid (the best any policy can do), and the exact regret.
    """

    policy, pi_ref, cfg = load_trained(run_dir)
    task, steer_kl = cfg.task(), cfg.steer == "kl"
    if steer_kl and task.m != 1:
        raise ValueError(f"rewards: clp eval draws the (R, -KL) front of a KL-steered run of one reward; {run_dir} "
                         f"steers {task.m} rewards and the KL weight (clp_min.studies.utility_steering evaluates it)")
    W = simplex_grid(cfg.m, grid_n)
    if steer_kl:
        W = W[:-1]  # lam = 0 is pi_ref itself
    gen = torch.Generator().manual_seed(seed)
    prompts = tk.sample_prompts(task, n_prompts, gen, split="heldout")
    method = policy_method(cfg.conditioning, policy)
    mc = mc_front(method, task, pi_ref, W, prompts, n_samples, cfg.beta, gen, steer_kl)
    ref = mc_front(policy_method("pi_ref", Unconditioned(pi_ref)), task, pi_ref, W[:1], prompts, n_samples,
                   cfg.beta, gen, steer_kl)
    pts = front_points(mc, steer_kl)
    ref_point = np.array([0.0, -1.1 * float(mc["kl"].max())]) if steer_kl else np.zeros(W.shape[1])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"run": str(run_dir), "weights": W, "monte_carlo": mc,
              "reference": {"rewards": ref["rewards"][0], "rewards_se": ref["rewards_se"][0]},
              "measures": front_measures({cfg.conditioning: pts}, W, ref_point, [], [])}
    plot_fronts({cfg.conditioning: mc}, out / "front.png", f"{run_dir}: Monte Carlo front", steer_kl,
                ref_point=None if steer_kl else ref["rewards"][0], reward_names=task.rewards)
    if task.vocab ** task.response_len <= exact.MAX_LEAVES:
        result["exact"] = exact_front({cfg.conditioning: method}, pi_ref, task, W, prompts[:min(32, n_prompts)],
                                      cfg.beta, out / "front_exact.png", reward_names=task.rewards)
    (out / "front.json").write_text(json.dumps(result, default=_to_list, indent=1))
    ref_pts = np.array([[float(ref["rewards"][0][0]), -float(ref["kl"][0])]]) if steer_kl else ref["rewards"][:1]
    summary = {"out": str(out), "rewards": list(task.rewards) if not steer_kl else [task.rewards[0], "-KL"],
               "reference_point": ref_point.tolist(),
               "hypervolume": result["measures"]["methods"][cfg.conditioning]["hypervolume"],
               "hypervolume_pi_ref": pareto.hypervolume(ref_pts, ref_point)}
    if "exact" in result:
        summary["hypervolume_optimal_exact"] = result["exact"]["measures"]["methods"]["optimal"]["hypervolume"]
        summary["mean_normalised_regret"] = result["exact"]["mean_normalised_regret"][cfg.conditioning]
        summary["exact_prompts"] = result["exact"]["prompts"]
    return summary


def _to_list(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")
