"""Experiments E1..E8: each a function from a config to a results dict (numbers only).

Thresholds and PASS/FAIL live in ``toy.claims``; figures in ``toy.plots``. Every
regret is measured against theory's exact optimum (STYLE.md principle 8).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from scipy.stats import spearmanr
from tqdm import tqdm

from theory import bounds, gibbs, tree as tr
from theory.kl_steering import kl_steering_gap
from theory.loglinear import best_in_class, feature_bandit, loglinear_log_policy, realisable_optimum
from theory.mixing import kl_weight_mix, mix_parameters
from theory.pareto import dominated_share
from theory.random_instances import bandit_misalignment, p10_tree, random_bandit, random_tree
from theory.solve import solve_bandit, solve_tree
from theory.weights import simplex_grid
from toy.families import subtree_aligned_tree, subtree_constant_tree
from toy.objective import policy_log_probs
from toy.policies import LinearCLP, make_policy
from toy.regret import grid_regret
from toy.train import TrainConfig, train
from toy.trained_experts import e7_trained_experts
from toy.utility_experiment import e8_nonlinear_scalarisation
from toy.weightings import DISTRIBUTIONS, sample_weightings


@dataclass(frozen=True)
class ToyConfig:
    """Sizes of every experiment; ``full()`` is the default, ``quick()`` the < 2 minute version."""

    seed: int = 0  # master seed; each experiment derives its own generator from it
    train_weightings: int = 64  # K: weightings sampled once from D for the training objective
    lr: float = 0.05  # Adam learning rate (exact and sampled gradients: same optimiser and budget)
    samples: int = 16  # REINFORCE: sequences per weighting and step
    e1_instances: int = 1000  # E1: random bandits (m cycles through 2, 3, 4)
    e1_grid: int = 6  # E1: simplex_grid resolution
    e2_eps: tuple = (0.0, 1e-3, 3e-3, 1e-2, 0.03, 0.1, 0.3, 1.0, 3.0)  # E2: root misalignments
    e2_trees: int = 30  # E2: trees per eps and beta
    e2_betas: tuple = (0.1, 1.0)  # E2: KL weights
    e2_grid: int = 10  # E2: simplex_grid resolution
    e3_beta: float = 0.05  # E3: KL weight of the P10 tree
    e3_c: float = 0.8  # E3: compromise value c of the P10 tree
    e3_grid: int = 20  # E3: held-out grid resolution (m = 2)
    e3_inits: int = 16  # E3: initialisations per policy class (exact gradients)
    e3_steps: int = 1000  # E3: Adam steps
    e3_hidden: int = 16  # E3: hidden width of the networks
    e4_trees: int = 24  # E4: random trees per family
    e4_beta: float = 0.1  # E4: KL weight
    e4_steps: int = 500  # E4: Adam steps
    e4_reinforce_trees: int = 8  # E4: trees per family also trained with sampled gradients
    e5_misspecification: tuple = (0.0, 0.03, 0.1, 0.3, 1.0, 3.0)  # E5: noise scale added to realisable rewards
    e5_instances: int = 12  # E5: feature bandits per level
    e5_beta: float = 1.0  # E5: KL weight
    e6_trees: int = 20  # E6: trees per family
    e6_beta: float = 0.5  # E6: KL weight
    e6_lams: tuple = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0)  # E6: KL mixing coefficients
    e7_trees: int = 6  # E7: trees per family (two supports; aligned)
    e7_beta: float = 0.1  # E7: KL weight
    e7_steps: int = 1000  # E7: gradient steps per expert (plain SGD on exact gradients)
    e7_lr: float = 3.0  # E7: SGD step size
    e7_grid: int = 10  # E7: simplex_grid resolution (m = 2)
    e7_scale: float = 0.5  # E7: size of the shared reward base
    e7_margin: float = 1.0  # E7: each reward's bonus for its own first token
    e7_ref_entry: float = 0.05  # E7: pi_ref's probability of entering reward 1's subtree
    e7_drifts: tuple = (1.0, 3.0, 10.0)  # E7: sizes of the off-support drift added to on-policy experts
    e8_instances: int = 12  # E8: random instances per family (bandits, misaligned trees, aligned trees)
    e8_beta: float = 0.5  # E8: KL weight of the non-linear problem

    @classmethod
    def full(cls, seed: int = 0) -> "ToyConfig":
        return cls(seed=seed)

    @classmethod
    def quick(cls, seed: int = 0) -> "ToyConfig":
        return replace(cls(seed=seed), e1_instances=300, e1_grid=4, e2_eps=(0.0, 1e-2, 0.1, 1.0),
                       e2_trees=4, e3_inits=4, e3_steps=400,
                       e4_trees=4, e4_steps=200, e4_reinforce_trees=2,
                       e5_misspecification=(0.0, 0.3, 3.0), e5_instances=3, e6_trees=3,
                       e7_trees=1, e7_steps=300,
                       e8_instances=3)


def _rng(cfg: ToyConfig, experiment: int) -> np.random.Generator:
    return np.random.default_rng([cfg.seed, experiment])


def _grid(m: int, n: int) -> np.ndarray:
    return simplex_grid(m, n if m == 2 else max(2, n // 2))


# ---------------------------------------------------------------- E1 ----
def e1_bandit_exactness(cfg: ToyConfig, progress: bool = True) -> dict:
    """P3 and P4 on random bandits: zero-shot logit mixing gap, and the KL-weight identity."""
    rng = _rng(cfg, 1)
    lams = np.array([0.1, 0.5, 1.0, 2.0, 10.0])
    gaps, kl_err, ms, betas = [], [], [], []
    for n in tqdm(range(cfg.e1_instances), desc="E1 bandits", disable=not progress, leave=False):
        m = 2 + n % 3
        bandit = random_bandit(rng, contexts=3, responses=6, rewards=m, scale=1.0)
        beta = float(10 ** rng.uniform(-2, 2))
        gaps.append(np.abs(solve_bandit(bandit, simplex_grid(m, cfg.e1_grid), beta)["gap"]).max())
        # P4: mixing pi_ref and pi*_beta (reward 0) with (1 - lam, lam) is pi*_{beta/lam}
        e0 = np.eye(m)[:1]
        mixed = kl_weight_mix(bandit.ref_logp, gibbs.gibbs_log_policy(bandit, e0, beta)[0], lams)  # (L, X, Y)
        exact = np.stack([gibbs.gibbs_log_policy(bandit, e0, beta / lam)[0] for lam in lams])  # (L, X, Y)
        kl_err.append(np.abs(mixed - exact).max())
        ms.append(m)
        betas.append(beta)
    return {"m": ms, "beta": betas, "max_abs_gap": gaps, "kl_weight_max_abs_logp_error": kl_err,
            "lams": lams}


# ---------------------------------------------------------------- E2 ----
def e2_gap_vs_misalignment(cfg: ToyConfig, progress: bool = True) -> dict:
    """P8, P9: zero-shot gap against root misalignment eps, with the P9 bounds on every instance."""
    rng = _rng(cfg, 2)
    rows = []
    jobs = [(eps, beta, k) for eps in cfg.e2_eps for beta in cfg.e2_betas for k in range(cfg.e2_trees)]
    for eps, beta, k in tqdm(jobs, desc="E2 trees", disable=not progress, leave=False):
        m = 2 + k % 2
        tree = random_tree(rng, vocab=3, horizon=3, rewards=m, scale=1.0, misalignment=eps)
        rows.append(_gap_and_bounds(tree, _grid(m, cfg.e2_grid), beta, family="random", eps=eps))
    for k in range(cfg.e2_trees):  # aligned below depth 1, root misaligned: P6 says the gap is still 0
        tree = subtree_aligned_tree(rng, vocab=3, horizon=3, rewards=2, depth=1, eps=0.0)
        rows.append(_gap_and_bounds(tree, _grid(2, cfg.e2_grid), cfg.e2_betas[0], family="aligned_below_root",
                                    eps=float(tr.misalignment(tree)[0][0])))
    random_rows = [r for r in rows if r["family"] == "random"]
    rho = spearmanr([r["eps"] for r in random_rows], [r["avg_gap"] for r in random_rows]).statistic
    return {"rows": rows, "spearman_eps_gap": float(rho)}


def _gap_and_bounds(tree, w: np.ndarray, beta: float, family: str, eps: float) -> dict:
    gap = solve_tree(tree, w, beta)["gap"]  # (K,)
    G_root = tr.holder_gap(tree, w, beta)[0][:, 0]
    pair = bounds.holder_gap_pairwise_bound(tree, w)[0][:, 0]
    eps_b = bounds.holder_gap_eps_bound(tree, w)[0][:, 0]
    step_b = bounds.gap_stepwise_bound(tree, w, beta)
    align_b = bounds.gap_alignment_bound(tree, w, beta)
    row = {"family": family, "eps": eps, "beta": beta, "m": tree.m, "avg_gap": float(gap.mean()),
           "max_gap": float(gap.max()), "min_gap": float(gap.min()),
           # slack >= 0 means the bound holds; the ratio says how tight it is
           "slack_stepwise": float((step_b - gap).min()), "slack_alignment": float((align_b - gap).min()),
           "slack_holder_pairwise": float((pair - G_root).min()), "slack_holder_eps": float((eps_b - pair).min()),
           "tightness_stepwise": _max_ratio(gap, step_b), "tightness_alignment": _max_ratio(gap, align_b),
           "tightness_holder_pairwise": _max_ratio(G_root, pair), "scale": float(np.abs(tree.rewards).max())}
    if tree.m == 2:
        beta_b = bounds.holder_gap_beta_bound(tree, w, beta)[0][:, 0]
        row["slack_holder_beta"] = float((beta_b - G_root).min())
        row["tightness_holder_beta"] = _max_ratio(G_root, beta_b)
    return row


def _max_ratio(value: np.ndarray, bound: np.ndarray) -> float:
    ok = bound > 1e-12
    return float((value[ok] / bound[ok]).max()) if ok.any() else float("nan")


# ---------------------------------------------------------------- E3 ----
def e3_p10(cfg: ToyConfig, progress: bool = True) -> dict:
    """P10: zero-shot is dominated, linear CLP cannot fix the root, nonlinear conditioning can."""
    rng = _rng(cfg, 3)
    tree, beta = p10_tree(cfg.e3_c), cfg.e3_beta
    grid = simplex_grid(2, cfg.e3_grid)
    w_train = sample_weightings(rng, "uniform+vertices", cfg.train_weightings, 2)
    exact = TrainConfig(steps=cfg.e3_steps, lr=cfg.lr)
    out = {"w1": grid[:, 0], "beta": beta, "c": cfg.e3_c}

    zs = grid_regret(tree, tr.zero_shot_token_policy(tree, grid, beta), grid, beta)
    out["zero_shot"] = _summary(zs, curves=True)
    out["oracle"] = _summary(grid_regret(tree, tr.optimal_token_policy(tree, grid, beta), grid, beta), curves=True)
    out["domination"] = _p10_domination(tree, beta, cfg.e3_c)
    out["domination"]["zero_shot_points_dominated_by_front"] = dominated_share(
        np.column_stack([zs["rewards"], -zs["kl"]]),
        np.column_stack([out["oracle"]["rewards"], -np.asarray(out["oracle"]["kl"])]))

    bar = tqdm(total=5 * cfg.e3_inits + 2, desc="E3 P10",
               disable=not progress, leave=False)
    # The linear family's best achievable average gap: train it on the evaluation grid itself.
    lin = []
    for k in range(cfg.e3_inits):
        policy = LinearCLP(tree, beta) if k == 0 else make_policy("linear_random", tree, beta, seed=k)
        hist = train(policy, tree, beta, grid, exact)
        lin.append(_summary(grid_regret(tree, policy_log_probs(policy, grid), grid, beta), hist, curves=True))
        bar.update()
    out["linear_on_grid"] = lin
    out["linear_best"] = min(lin, key=lambda s: s["avg_regret"])
    policy = LinearCLP(tree, beta)
    hist = train(policy, tree, beta, w_train, exact)
    out["linear_on_D"] = _summary(grid_regret(tree, policy_log_probs(policy, grid), grid, beta), hist, curves=True)
    bar.update()
    policy = LinearCLP(tree, beta)
    hist = train(policy, tree, beta, w_train, _sampled(cfg, cfg.e3_steps, 0))
    out["linear_reinforce"] = _summary(grid_regret(tree, policy_log_probs(policy, grid), grid, beta), hist,
                                       curves=True)
    bar.update()

    for kind in ("mixed_net", "input_net"):
        for estimator in ("exact", "reinforce"):  # same inits, optimiser and budget; only the gradient differs
            runs = []
            for k in range(cfg.e3_inits):
                policy = make_policy(kind, tree, beta, seed=k, hidden=cfg.e3_hidden)
                hist = train(policy, tree, beta, w_train, exact if estimator == "exact" else
                             _sampled(cfg, cfg.e3_steps, k))
                runs.append(_summary(grid_regret(tree, policy_log_probs(policy, grid), grid, beta), hist,
                                     curves=True))
                bar.update()
            out[f"{kind}_{estimator}"] = runs
    bar.close()
    return out


def _sampled(cfg: ToyConfig, steps: int, seed: int) -> TrainConfig:
    return TrainConfig(steps=steps, lr=cfg.lr, estimator="reinforce", samples=cfg.samples,
                       seed=seed, log_every=max(1, steps // 30))


def _summary(reg: dict, hist: dict | None = None, curves: bool = False) -> dict:
    keep = ["avg_regret", "worst_regret", "avg_normalised", "worst_normalised"]
    s = {k: reg[k] for k in keep}
    if curves:
        s.update({k: reg[k] for k in ("regret", "normalised", "rewards", "kl")})
    if hist is not None:
        s.update({"train_initial": hist["initial"], "train_final": hist["final"], "train_last": hist["last"],
                  "train_curve": hist["objective"]})
    return s


def _p10_domination(tree, beta: float, c: float) -> dict:
    half = np.array([[0.5, 0.5]])
    mix = tr.sequence_stats(tree, tr.zero_shot_token_policy(tree, half, beta), half, beta)
    ref = tr.reference_token_policy(tree)
    R_ref = tr.sequence_stats(tree, ref, half, beta)["rewards"][0]
    point = np.append(mix["rewards"][0], -mix["kl"][0])  # (R_1, R_2, -K)
    return {"zero_shot_half_rewards": mix["rewards"][0], "zero_shot_half_kl": float(mix["kl"][0]),
            "ref_rewards": R_ref,
            "dominated_by_cc": dominated_share(mix["rewards"], np.array([[c, c]])),
            "dominated_by_ref_with_kl": dominated_share(point[None], np.append(R_ref, 0.0)[None])}


# ---------------------------------------------------------------- E4 ----
E4_SHAPES = ((2, 2, 2), (3, 2, 2), (2, 3, 3), (3, 3, 2), (2, 3, 2), (3, 2, 3))  # (V, T, m)


def _e4_tree(rng: np.random.Generator, family: str, V: int, T: int, m: int):
    if family == "aligned":
        return random_tree(rng, vocab=V, horizon=T, rewards=m, misalignment=0.0)
    if family == "aligned_below_root":
        return subtree_aligned_tree(rng, vocab=V, horizon=T, rewards=m, depth=1, eps=0.0)
    return random_tree(rng, vocab=V, horizon=T, rewards=m)  # independent rewards: misaligned


def e4_training_helps_when_misaligned(cfg: ToyConfig, progress: bool = True) -> dict:
    """Section 4: linear CLP trained from the zero-shot point, on aligned and misaligned random trees."""
    rng = _rng(cfg, 4)
    exact = TrainConfig(steps=cfg.e4_steps, lr=cfg.lr)
    families = ("aligned", "aligned_below_root", "misaligned")
    jobs = [(f, k) for f in families for k in range(cfg.e4_trees)]
    rows = []
    for n, (family, k) in enumerate(tqdm(jobs, desc="E4 trees", disable=not progress, leave=False)):
        V, T, m = E4_SHAPES[k % len(E4_SHAPES)]
        tree = _e4_tree(rng, family, V, T, m)
        D = DISTRIBUTIONS[k % len(DISTRIBUTIONS)]
        w_train = sample_weightings(rng, D, cfg.train_weightings, m)
        grid = _grid(m, 10)
        zs = grid_regret(tree, tr.zero_shot_token_policy(tree, grid, beta=cfg.e4_beta), grid, cfg.e4_beta)
        policy = LinearCLP(tree, cfg.e4_beta)
        hist = train(policy, tree, cfg.e4_beta, w_train, exact)
        lin = grid_regret(tree, policy_log_probs(policy, grid), grid, cfg.e4_beta)
        row = {"family": family, "V": V, "T": T, "m": m, "D": D, "eps_root": float(tr.misalignment(tree)[0][0]),
               "zero_shot": _summary(zs), "linear": _summary(lin, hist)}
        if k < cfg.e4_reinforce_trees:
            policy = LinearCLP(tree, cfg.e4_beta)
            hist = train(policy, tree, cfg.e4_beta, w_train, _sampled(cfg, cfg.e4_steps, n))
            row["linear_reinforce"] = _summary(grid_regret(tree, policy_log_probs(policy, grid), grid,
                                                           cfg.e4_beta), hist)
        rows.append(row)
    return {"rows": rows, "beta": cfg.e4_beta}


# ---------------------------------------------------------------- E5 ----
def e5_rewarded_soups(cfg: ToyConfig, progress: bool = True) -> dict:
    """Section 5: parameter averaging of per-reward best-in-class log-linear policies vs the best in class."""
    rng = _rng(cfg, 5)
    beta, grid = cfg.e5_beta, simplex_grid(2, 10)
    rows = []
    jobs = [(s, k) for s in cfg.e5_misspecification for k in range(cfg.e5_instances)]
    for s, k in tqdm(jobs, desc="E5 bandits", disable=not progress, leave=False):
        bandit, phi, theta_ref, psi = feature_bandit(rng, contexts=4, responses=6, d=3, rewards=2,
                                                     misspecification=s)
        thetas = best_in_class(bandit, phi, np.eye(2), beta)  # (m, d): per-reward best in class
        theta_soup = mix_parameters(thetas, grid)  # (K, d): Rewarded Soups
        # started from the soup too, so "best" is never a worse local optimum than the soup itself
        theta_best = best_in_class(bandit, phi, grid, beta, theta_init=theta_soup)  # (K, d)
        J = {name: gibbs.bandit_stats(bandit, loglinear_log_policy(phi, th), grid, beta)["objective"]
             for name, th in (("soup", theta_soup), ("best", theta_best))}
        J_opt = gibbs.optimal_value(bandit, grid, beta)
        row = {"misspecification": s, "avg_gap": float((J["best"] - J["soup"]).mean()),
               "max_gap": float((J["best"] - J["soup"]).max()), "min_gap": float((J["best"] - J["soup"]).min()),
               "avg_class_gap": float((J_opt - J["best"]).mean()),
               "bandit_misalignment": bandit_misalignment(bandit)}
        if s == 0:  # realisable: the closed form theta_ref + sum_i w_i psi_i / beta reaches J_opt (P1)
            J_real = gibbs.bandit_stats(bandit, loglinear_log_policy(phi, realisable_optimum(theta_ref, psi, grid,
                                                                                               beta)), grid, beta)
            row["realisable_closed_form_error"] = float(np.abs(J_real["objective"] - J_opt).max())
            row["soup_vs_optimum_error"] = float(np.abs(J["soup"] - J_opt).max())
        rows.append(row)
    levels = [r["misspecification"] for r in rows]
    rho = spearmanr(levels, [r["avg_gap"] for r in rows]).statistic
    return {"rows": rows, "spearman_misspecification_gap": float(rho), "beta": beta}


# ---------------------------------------------------------------- E6 ----
def e6_kl_steering(cfg: ToyConfig, progress: bool = True) -> dict:
    """Section 5: per-token mixing of pi_ref and pi*_beta vs the exact pi*_{beta/lam}, across lam."""
    rng = _rng(cfg, 6)
    lams = np.array(cfg.e6_lams)
    makers = {"random": lambda: random_tree(rng, vocab=3, horizon=3, rewards=1),
              "bandit (T = 1)": lambda: random_tree(rng, vocab=4, horizon=1, rewards=1),
              "constant below depth 1": lambda: subtree_constant_tree(rng, vocab=3, horizon=3, depth=1)}
    rows = []
    jobs = [(f, k) for f in makers for k in range(cfg.e6_trees)]
    for family, k in tqdm(jobs, desc="E6 trees", disable=not progress, leave=False):
        res = kl_steering_gap(makers[family](), lams, cfg.e6_beta)
        rows.append({"family": family, "gap": res["gap"], "gap_bound": res["gap_bound"],
                     "lyapunov_holds": bool(np.all(res["lyapunov_holds"])),
                     "lyapunov_root": res["lyapunov_root"]})
    return {"rows": rows, "lams": lams, "beta": cfg.e6_beta}


EXPERIMENTS = {"E1": e1_bandit_exactness, "E2": e2_gap_vs_misalignment, "E3": e3_p10,
               "E4": e4_training_helps_when_misaligned, "E5": e5_rewarded_soups, "E6": e6_kl_steering,
               "E7": e7_trained_experts,
               "E8": e8_nonlinear_scalarisation}


def run_experiment(name: str, cfg: ToyConfig, progress: bool = True) -> dict:
    """Run one experiment by name (E1..E8) with ``torch`` on one thread."""
    if name not in EXPERIMENTS:
        raise ValueError(f"experiment: unknown {name!r}; choose from {', '.join(EXPERIMENTS)}")
    torch.set_num_threads(1)
    return EXPERIMENTS[name](cfg, progress)
