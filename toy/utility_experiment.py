"""E8: non-linear scalarisation on random bandits and trees (THEORY.md section 7). Numbers only.

For each instance and each utility (Nash, Tchebycheff, soft-min, concave quadratic)
the optimum comes from two independent routes (cvxpy; the fixed point over Gibbs
policies), and three policies are scored by ``U(R) - beta KL`` against it:

- (a) the closed-form Gibbs policy at the simplex weighting ``w = g / |g|_1`` and KL
  weight ``beta / |g|_1`` (theory.gibbs for bandits, theory.tree's soft values for
  trees): the ``(w, beta)``-conditioned family, compared with the cvxpy optimum;
- (b) the best simplex weighting at the fixed ``beta`` (m = 2: grid and Brent);
- (c) zero-shot per-token mixing at ``w`` of the per-reward optima at KL weight
  ``beta / |g|_1``: exact in bandits (P3) and on aligned trees (P8), not on misaligned trees.
"""
from __future__ import annotations

import numpy as np

from theory import gibbs, tree as tr
from theory.instances import Tree
from theory.mixing import logit_mix
from theory.random_instances import random_bandit, random_tree
from theory.utility import make_utility
from theory.utility_cvx import solve_utility_cvx
from theory.utility_family import best_fixed_beta_weighting
from theory.utility_fixed_point import solve_utility_fixed_point
from theory.utility_problem import reference_rewards, row_values, sequence_view


def draw_utilities(rng: np.random.Generator, instance) -> dict:
    """The four utilities with drawn parameters: reference point 1 below ``pi_ref``'s rewards,
    ``lam`` in [0.5, 2], soft-min temperature 0.1, a quadratic with positive curvature entries
    and its bliss point 1 above the best reward (so ``g > 0``: a simplex form exists)."""
    m = instance.m
    R_ref = reference_rewards(instance).min(axis=0)  # (m,) over contexts
    z, lam = R_ref - 1.0, rng.uniform(0.5, 2.0, size=m)
    B = rng.uniform(0.2, 1.0, size=(m, m))
    c = sequence_view(instance)[2].max(axis=(0, 1)) + 1.0
    return {"nash": make_utility("nash", m, z=z), "tchebycheff": make_utility("tchebycheff", m, z=z, lam=lam),
            "softmin": make_utility("softmin", m, z=z, lam=lam, tau=0.1),
            "quadratic": make_utility("quadratic", m, c=c, A=B @ B.T)}


def _gibbs_family_log_policy(instance, w: np.ndarray, beta_eff: float) -> np.ndarray:
    """(a): the closed-form optimum at ``(w, beta_eff)`` as row log-probabilities ``[X, Y]``."""
    if isinstance(instance, Tree):
        return tr.leaf_log_probs(instance, tr.optimal_token_policy(instance, w[None], beta_eff))  # (1, V^T)
    return gibbs.gibbs_log_policy(instance, w[None], beta_eff)[0]


def _zero_shot_log_policy(instance, w: np.ndarray, beta_eff: float) -> np.ndarray:
    """(c): zero-shot (per-token) mixing at ``w`` of the per-reward optima at ``beta_eff``, rows ``[X, Y]``."""
    if isinstance(instance, Tree):
        return tr.leaf_log_probs(instance, tr.zero_shot_token_policy(instance, w[None], beta_eff))
    return logit_mix(gibbs.per_reward_log_policies(instance, beta_eff), w[None])[0]


def _score(instance, utility, log_pi: np.ndarray, beta: float) -> float:
    rho, log_ref, r = sequence_view(instance)
    return float(rho @ row_values(log_ref, r, log_pi, utility, beta)["objective"])


def utility_row(instance, utility, beta: float, family: str) -> dict:
    """Every E8 number of one (instance, utility); single-context instances (one ``g``)."""
    cvx = solve_utility_cvx(instance, utility, beta)
    fp = solve_utility_fixed_point(instance, utility, beta)
    w, beta_eff = fp["w"][0], float(fp["beta_eff"][0])
    opt = fp["expected_objective"]
    row = {"family": family, "utility": utility.name, "cvx_solver": cvx["solver"],
           "cvx_objective": cvx["expected_objective"], "fixed_point_objective": opt,
           "solvers_objective_diff": abs(cvx["expected_objective"] - opt),
           "solvers_policy_diff": float(np.max(np.abs(cvx["policy"] - fp["policy"]))),
           "first_order_residual": float(fp["residual"].max()), "g": fp["g"][0], "g_l1": float(fp["g_l1"][0]),
           "on_simplex": bool(fp["on_simplex"][0]), "w": w, "beta_eff": beta_eff}
    if not row["on_simplex"]:
        return row
    family_value = _score(instance, utility, _gibbs_family_log_policy(instance, w, beta_eff), beta)
    row["family_vs_cvx"] = abs(family_value - cvx["expected_objective"]) / (1 + abs(opt))
    if instance.m == 2:
        best = best_fixed_beta_weighting(instance, utility, beta)
        row["fixed_beta_w"], row["fixed_beta_regret"] = best["w"], opt - best["objective"]
    row["zero_shot_regret"] = opt - _score(instance, utility, _zero_shot_log_policy(instance, w, beta_eff), beta)
    return row


def e8_nonlinear_scalarisation(cfg, progress: bool = True) -> dict:
    """E8 over ``cfg.e8_instances`` instances per family: bandits, misaligned trees, aligned trees."""
    rng = np.random.default_rng([cfg.seed, 7])
    makers = {"bandit": lambda: random_bandit(rng, contexts=1, responses=6, rewards=2),
              "misaligned_tree": lambda: random_tree(rng, vocab=3, horizon=3, rewards=2, misalignment=1.0),
              "aligned_tree": lambda: random_tree(rng, vocab=3, horizon=3, rewards=2, misalignment=0.0)}
    rows = []
    for family, make in makers.items():
        for _ in range(cfg.e8_instances):
            instance = make()
            for utility in draw_utilities(rng, instance).values():
                rows.append(utility_row(instance, utility, cfg.e8_beta, family))
    return {"rows": rows, "beta": cfg.e8_beta}
