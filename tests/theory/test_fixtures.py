"""Golden fixtures: theory.solve against answers computed by brute force (tests/fixtures/)."""
import json
from pathlib import Path

import numpy as np
import pytest

from theory.checks import check_beta, check_weights
from theory.instances import Tree, load_instance
from theory.solve import solve

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
NAMES = sorted(p.name.removesuffix(".expected.json") for p in FIXTURES.glob("*.expected.json"))


def test_every_fixture_is_present():
    assert set(NAMES) == {"bandit_2contexts", "bandit_3rewards", "tree_v2_t3", "p10_tree", "aligned_tree"}
    for name in NAMES:
        assert (FIXTURES / f"{name}.json").is_file()


@pytest.mark.parametrize("name", NAMES)
def test_solve_matches_brute_force(name):
    instance = load_instance(FIXTURES / f"{name}.json")
    expected = json.loads((FIXTURES / f"{name}.expected.json").read_text())
    w = check_weights(expected["weights"], instance.m)
    got = solve(instance, w, check_beta(expected["beta"]))
    keys = {k for k in expected if k not in ("weights", "beta")}
    assert keys == set(got)
    for key in keys:
        if isinstance(expected[key], dict):
            for sub, value in expected[key].items():
                np.testing.assert_allclose(got[key][sub], value, rtol=0, atol=1e-9, err_msg=f"{key}.{sub}")
        else:
            np.testing.assert_allclose(got[key], expected[key], rtol=0, atol=1e-9, err_msg=key)
    if isinstance(instance, Tree):  # the tree keys only exist for trees
        assert "kl_mix_to_opt" in keys


def test_aligned_fixture_has_zero_gap_and_p10_fixture_has_a_large_one():
    aligned = json.loads((FIXTURES / "aligned_tree.expected.json").read_text())
    p10 = json.loads((FIXTURES / "p10_tree.expected.json").read_text())
    assert aligned["misalignment_root"] == 0
    assert np.max(np.abs(aligned["gap"])) < 1e-12
    assert p10["gap"][2] > 0.1  # w = (1/2, 1/2)
