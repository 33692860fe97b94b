"""sympy proofs of P3, P4 and P7 (theory/symbolic.py): each residual must be exactly 0."""
import sympy as sp

from theory import symbolic


def test_p3_bandit_mixing_is_exact():
    assert symbolic.prove_bandit_exactness() == 0


def test_p4_kl_weight_mixing_is_the_optimum_at_beta_over_lam():
    assert symbolic.prove_kl_weight_identity() == 0


def test_p7_gap_identity_on_a_two_token_tree():
    assert symbolic.prove_gap_identity_two_token() == 0


def test_the_simplifiers_do_not_return_zero_for_false_identities():
    # negative controls: the same machinery must leave a non-zero residual
    a, b, x, y = sp.symbols("a b x y", positive=True)
    swapped = symbolic._ratio_residual([a / (a + b), b / (a + b)], [b / (a + b), a / (a + b)])
    assert swapped != 0
    off_by_a_log = symbolic._zero_by_log_atoms(x * sp.log(x * y) - x * sp.log(x) - x / (x + 1) * sp.log(y))
    assert off_by_a_log != 0
    true_one = symbolic._zero_by_log_atoms(x * sp.log(x * y) - x * sp.log(x) - x * sp.log(y))
    assert true_one == 0
