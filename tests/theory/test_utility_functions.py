"""The utilities of THEORY.md section 7 against finite differences and their defining inequalities."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from strategies import rewards
from theory.utility import check_concave, make_utility

SEEDS = st.integers(0, 2 ** 32 - 1)


def _smooth_utilities(rng, m):
    z = rng.uniform(-2, 0, m)
    B = rng.uniform(-1, 1, (m, m))
    return [make_utility("nash", m, z=z, a=rng.uniform(0.5, 2, m)),
            make_utility("softmin", m, z=z, lam=rng.uniform(0.5, 2, m), tau=rng.uniform(0.05, 1)),
            make_utility("quadratic", m, c=rng.uniform(-1, 1, m), A=B @ B.T + 0.1 * np.eye(m))]


@given(SEEDS, st.integers(2, 4))
def test_gradients_and_hessians_match_central_differences(seed, m):
    """Catches a wrong sign, a dropped lam or a^2 factor in grad or hessian."""
    rng = np.random.default_rng(seed)
    R = rng.uniform(0.1, 2, m)  # inside every domain (R > z)
    h = 1e-5
    for U in _smooth_utilities(rng, m):
        E = np.eye(m) * h
        fd_grad = np.array([(U.value(R + e) - U.value(R - e)) / (2 * h) for e in E])
        np.testing.assert_allclose(U.grad(R), fd_grad, rtol=1e-6, atol=1e-7, err_msg=U.name)
        fd_hess = np.array([(U.grad(R + e) - U.grad(R - e)) / (2 * h) for e in E])
        np.testing.assert_allclose(U.hessian(R), fd_hess, rtol=1e-5, atol=1e-6, err_msg=U.name)
        assert np.linalg.eigvalsh(U.hessian(R)).max() <= 1e-12  # concave: Hessian NSD


@given(SEEDS, rewards(6, 3, scale=2.0))
def test_tchebycheff_supergradient_inequality_and_softmin_sandwich(seed, points):
    """U(R') <= U(R) + s.(R' - R) for the supergradient s; soft-min within tau log m below min."""
    rng = np.random.default_rng(seed)
    z, lam, tau = rng.uniform(-1, 1, 3), rng.uniform(0.5, 2, 3), rng.uniform(0.05, 1)
    T = make_utility("tchebycheff", 3, z=z, lam=lam)
    S = make_utility("softmin", 3, z=z, lam=lam, tau=tau)
    R = points[0]
    for R2 in points[1:]:
        assert T.value(R2) <= T.value(R) + T.grad(R) @ (R2 - R) + 1e-12
    v_T, v_S = T.value(points), S.value(points)
    assert np.all(v_S <= v_T + 1e-12) and np.all(v_S >= v_T - tau * np.log(3) - 1e-12)


def test_bad_parameters_are_refused_with_their_field():
    with pytest.raises(ValueError, match="^lam:"):
        make_utility("tchebycheff", 2, lam=[1.0, 0.0])
    with pytest.raises(ValueError, match="^tau:"):
        make_utility("softmin", 2, tau=0.0)
    with pytest.raises(ValueError, match="^A: must be symmetric"):
        make_utility("quadratic", 2, A=[[1.0, 0.5], [0.0, 1.0]])
    with pytest.raises(ValueError, match="^z: expected 2 entries"):
        make_utility("nash", 2, z=[0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="^utility: unknown 'leximin'"):
        make_utility("leximin", 2)


def test_indefinite_quadratic_is_declared_not_concave_and_refused():
    U = make_utility("quadratic", 2, A=[[1.0, 0.0], [0.0, -0.5]])
    assert not U.concave
    with pytest.raises(ValueError, match=r"^utility: quadratic \(A has eigenvalue -0.5 < 0\) is not concave"):
        check_concave(U)
    assert make_utility("quadratic", 2, A=[[1.0, 1.0], [1.0, 1.0]]).concave  # PSD, singular: still concave
