"""Symbolic proofs with sympy of the exact statements P3, P4 and P7 (THEORY.md sections 2, 3).

Each function builds both sides with symbols (positive where the math says so),
returns the simplified residual, and the tests demand it be exactly 0. The
instances are small but every quantity is a free symbol, so a zero residual is
a proof for that shape, independent of the numpy code.

In P7, rewards enter through ``e = exp(w.r / beta) > 0``, which keeps the algebra
rational; ``w.r = beta log e`` recovers them.
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
    """P7 on a symbolic tree with V = 2, T = 2: ``J_w(pi*_w) - J_w(pi^mix_w)`` minus
    ``beta sum_t E_{s_t ~ pi^mix} KL(pi^mix(.|s_t) || pi*_w(.|s_t))``, simplified.

    Reference token probabilities ``q_s(a) > 0`` at the root and at both depth-1
    prefixes (normalised here). The leaves enter through ``e_ab = exp(w.r(ab)/beta) > 0``
    (so ``w.r(ab) = beta log e_ab`` is any real number: any rewards, any ``w``), and
    the mixture's root through its tilts ``M_a = exp(sum_i w_i V_i(a)/beta) > 0``
    (section 3); below the root the mixture is the bandit mix ``∝ q(b|a) e_ab``
    (P3, proven by ``prove_bandit_exactness``). ``M_a`` and ``e_ab`` are free positive
    symbols: the residual vanishes for every value, in particular for the mixture's
    (writing them out in terms of per-reward rewards and ``lam`` makes sympy's
    ``cancel`` take minutes). ``pi*_w`` is built from soft values (P5); ``J`` from
    its definition ``E[w.r] - beta KL_seq(pi || pi_ref)`` over the 4 sequences.
    """
    beta = sp.Symbol("beta", positive=True)
    leaves = [(a, b) for a in range(2) for b in range(2)]
    q_root = _normalise(list(sp.symbols("q0:2", positive=True)))
    q_child = [_normalise(list(sp.symbols(f"q{a}_0:2", positive=True))) for a in range(2)]
    e = {(a, b): sp.Symbol(f"e{a}{b}", positive=True) for a, b in leaves}  # exp(w.r(ab) / beta)
    M = sp.symbols("M0:2", positive=True)  # exp(sum_i w_i V_i(a) / beta)

    # P5: pi*(b|a) ∝ q(b|a) exp(w.r(ab)/beta); pi*(a|root) ∝ q(a) exp(V_w(a)/beta), exp(V_w(a)/beta) = N_a
    N = [sum(q_child[a][b] * e[(a, b)] for b in range(2)) for a in range(2)]
    star_root = _normalise([q_root[a] * N[a] for a in range(2)])
    child = [_normalise([q_child[a][b] * e[(a, b)] for b in range(2)]) for a in range(2)]
    mix_root = _normalise([q_root[a] * M[a] for a in range(2)])  # mix_child = child (last token)

    ref = {(a, b): q_root[a] * q_child[a][b] for a, b in leaves}
    star = {(a, b): star_root[a] * child[a][b] for a, b in leaves}
    mix = {(a, b): mix_root[a] * child[a][b] for a, b in leaves}

    def J(pi):
        return sum(pi[s] * (beta * sp.log(e[s]) - beta * sp.log(pi[s] / ref[s])) for s in leaves)

    # chain rule, t = 0 (root) and t = 1 (where the two token policies coincide: the term is 0 exactly)
    step_0 = sum(mix_root[a] * sp.log(mix_root[a] / star_root[a]) for a in range(2))
    step_1 = sum(mix_root[a] * child[a][b] * sp.log(child[a][b] / child[a][b]) for a, b in leaves)
    return _zero_by_log_atoms(J(star) - J(mix) - beta * (step_0 + step_1))
