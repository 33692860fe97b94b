"""Symbolic proofs with sympy of the exact statements P3, P4 and P7 (THEORY.md sections 2, 3).

Each function builds both sides with symbols (positive where the math says so),
returns the simplified residual, and the tests demand it be exactly 0. The
instances are small but every quantity is a free symbol, so a zero residual is
a proof for that shape, independent of the numpy code.

Rewards enter through ``u = exp(r / beta) > 0`` where that keeps the algebra
rational; ``r = beta log u`` recovers them.
"""
from __future__ import annotations

import sympy as sp


def _normalise(weights: list) -> list:
    Z = sum(weights)
    return [q / Z for q in weights]


def _zero_by_log_atoms(expr: sp.Expr) -> sp.Expr:
    """Expand logs, collect by the remaining log atoms, and cancel each coefficient (rational in the rest)."""
    expr = sp.expand(sp.expand_log(expr, force=True))
    logs = sorted(expr.atoms(sp.log), key=sp.default_sort_key)
    parts = sp.collect(expr, logs, evaluate=False)
    return sp.Add(*[sp.cancel(sp.together(coef)) * atom for atom, coef in parts.items()])


def _ratio_residual(p: list, q: list) -> sp.Expr:
    """``p_y / q_y - 1`` for every y, simplified with positive symbols; 0 for every y iff p = q."""
    return sp.Add(*[sp.Abs(sp.simplify(sp.powsimp(sp.powdenest(pi / qi, force=True), force=True) - 1))
                    for pi, qi in zip(p, q)])


def prove_bandit_exactness() -> sp.Expr:
    """P3 on a 3-response, 2-reward bandit: the normalised logit mix ``pi_1^lam pi_2^(1-lam)`` of the
    Gibbs policies ``pi_i ∝ p exp(r_i / beta)`` minus the Gibbs policy of ``w = (lam, 1 - lam)``.

    ``p_y > 0`` (the reference, unnormalised: the normalisation cancels), ``r_{y,i}`` real,
    ``beta > 0``, ``lam`` real. Returns ``sum_y |pi^mix(y) / pi*_w(y) - 1|`` simplified.
    """
    p = sp.symbols("p1:4", positive=True)
    r1, r2 = sp.symbols("r1_1:4", real=True), sp.symbols("r2_1:4", real=True)
    beta = sp.Symbol("beta", positive=True)
    lam = sp.Symbol("lam", real=True)
    pi_1 = _normalise([p[y] * sp.exp(r1[y] / beta) for y in range(3)])
    pi_2 = _normalise([p[y] * sp.exp(r2[y] / beta) for y in range(3)])
    mix = _normalise([pi_1[y] ** lam * pi_2[y] ** (1 - lam) for y in range(3)])
    star = _normalise([p[y] * sp.exp((lam * r1[y] + (1 - lam) * r2[y]) / beta) for y in range(3)])
    return _ratio_residual(mix, star)


def prove_kl_weight_identity() -> sp.Expr:
    """P4 on a 3-response bandit: ``pi_ref^(1-lam) (pi*_beta)^lam``, normalised, minus ``pi*_{beta/lam}``.

    ``lam > 0``. Returns ``sum_y |pi^lam(y) / pi*_{beta/lam}(y) - 1|`` simplified.
    """
    p = sp.symbols("p1:4", positive=True)
    r = sp.symbols("r1:4", real=True)
    beta, lam = sp.symbols("beta lam", positive=True)
    ref = _normalise(list(p))
    star = _normalise([p[y] * sp.exp(r[y] / beta) for y in range(3)])
    realigned = _normalise([ref[y] ** (1 - lam) * star[y] ** lam for y in range(3)])
    star_lam = _normalise([p[y] * sp.exp(r[y] / (beta / lam)) for y in range(3)])
    return _ratio_residual(realigned, star_lam)


def prove_gap_identity_two_token() -> sp.Expr:
    """P7 on a symbolic tree with V = 2, T = 2, m = 2, ``w = (lam, 1 - lam)``:
    ``J_w(pi*_w) - J_w(pi^mix_w) - beta KL_seq(pi^mix_w || pi*_w)``, simplified.

    Reference token probabilities ``q_s(a) > 0`` at the root and at both depth-1
    prefixes (normalised here); leaf rewards ``r_i(ab) = beta log u_{ab,i}``, ``u > 0``.
    Both policies are built token by token from soft values (section 3, P5), and
    ``J`` and the KL are computed from their definitions over the 4 sequences.
    """
    beta = sp.Symbol("beta", positive=True)
    lam = sp.Symbol("lam", positive=True)
    w = (lam, 1 - lam)
    q_root = _normalise(list(sp.symbols("q0:2", positive=True)))
    q_child = [_normalise(list(sp.symbols(f"q{a}_0:2", positive=True))) for a in range(2)]
    u = {(a, b): sp.symbols(f"u{a}{b}_1:3", positive=True) for a in range(2) for b in range(2)}
    leaves = list(u)

    def leaf_r(i, leaf):
        return beta * sp.log(u[leaf][i])

    def leaf_wr(leaf):
        return w[0] * leaf_r(0, leaf) + w[1] * leaf_r(1, leaf)

    # exp(V(s) / beta) for a leaf-value function, by prefix a (depth 1); V(root) not needed for the policies
    def exp_V1(a, exp_leaf):
        return sum(q_child[a][b] * exp_leaf((a, b)) for b in range(2))

    exp_w = lambda leaf: u[leaf][0] ** w[0] * u[leaf][1] ** w[1]  # exp(w.r / beta)
    exp_i = [lambda leaf, i=i: u[leaf][i] for i in range(2)]  # exp(r_i / beta)

    # P5: pi*(a|root) ∝ q(a) exp(V_w(a)/beta), pi*(b|a) ∝ q(b|a) exp(w.r(ab)/beta)
    star_root = _normalise([q_root[a] * exp_V1(a, exp_w) for a in range(2)])
    star_child = [_normalise([q_child[a][b] * exp_w((a, b)) for b in range(2)]) for a in range(2)]
    # per-token mixing: pi^mix(a|s) ∝ q(a|s) exp(sum_i w_i V_i(sa) / beta); the last token is a bandit
    mix_root = _normalise([q_root[a] * exp_V1(a, exp_i[0]) ** w[0] * exp_V1(a, exp_i[1]) ** w[1]
                           for a in range(2)])
    mix_child = [_normalise([q_child[a][b] * exp_i[0]((a, b)) ** w[0] * exp_i[1]((a, b)) ** w[1]
                             for b in range(2)]) for a in range(2)]

    ref = {(a, b): q_root[a] * q_child[a][b] for a, b in leaves}
    star = {(a, b): star_root[a] * star_child[a][b] for a, b in leaves}
    mix = {(a, b): mix_root[a] * mix_child[a][b] for a, b in leaves}

    def J(pi):
        return sum(pi[s] * (leaf_wr(s) - beta * sp.log(pi[s] / ref[s])) for s in leaves)

    kl_mix_star = sum(mix[s] * sp.log(mix[s] / star[s]) for s in leaves)
    return _zero_by_log_atoms(J(star) - J(mix) - beta * kl_mix_star)
