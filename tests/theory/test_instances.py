"""Every refusal of DESIGN.md through the Python API, the JSON round trip, and random instances."""
import copy
import json
import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

from strategies import bandits, trees
from theory import tree as tr
from theory.checks import check_beta, check_weights
from theory.instances import Bandit, Tree, instance_from_json, load_instance
from theory.random_instances import bandit_misalignment, p10_tree, random_bandit, random_tree

BANDIT = {"kind": "bandit", "context_probs": [0.25, 0.75],
          "ref_logits": [[0.0, 1.0, -1.0], [2.0, 0.0, 0.5]],
          "rewards": [[[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]], [[0.2, 0.1], [0.3, -0.4], [1.0, 2.0]]]}
TREE = {"kind": "tree", "vocab": 2, "horizon": 2,
        "ref_logits": [[0.0, 0.0], [1.0, -1.0], [0.3, 0.2]],
        "rewards": [[1.0, 0.0], [0.0, 1.0], [0.8, 0.8], [0.8, 0.8]]}


def _with(base: dict, **changes) -> dict:
    data = copy.deepcopy(base)
    data.update(changes)
    return data


def _refused(field: str, call, *args):
    with pytest.raises(ValueError) as err:
        call(*args)
    message = str(err.value)
    assert message.startswith(field + ":"), message
    assert "\n" not in message


def test_valid_instances_load_and_round_trip(tmp_path):
    for data in (BANDIT, TREE):
        instance = instance_from_json(data)
        path = tmp_path / "i.json"
        path.write_text(json.dumps(instance.to_json()))
        again = load_instance(path)
        assert type(again) is type(instance)
        np.testing.assert_allclose(np.asarray(again.rewards), np.asarray(data["rewards"]).reshape(again.rewards.shape))


NAN, INF = float("nan"), float("inf")
BANDIT_REFUSALS = [
    ("context_probs", dict(context_probs=[0.5, 0.6])),  # does not sum to 1
    ("context_probs", dict(context_probs=[1.5, -0.5])),  # negative
    ("context_probs", dict(context_probs=[0.5, NAN])),
    ("context_probs", dict(context_probs=[[0.5, 0.5]])),  # wrong dimensions
    ("context_probs", dict(context_probs=[])),
    ("ref_logits", dict(context_probs=[1.0])),  # X mismatch
    ("ref_logits", dict(ref_logits=[[0.0, INF, 0.0], [0.0, 0.0, 0.0]])),
    ("ref_logits", dict(ref_logits=[[0.0, 1.0], [0.0]])),  # ragged
    ("ref_logits", dict(ref_logits=[[0.0, "a", 0.0], [0.0, 0.0, 0.0]])),
    ("rewards", dict(rewards=[[[1.0, 0.0]] * 2] * 2)),  # Y mismatch
    ("rewards", dict(rewards=[[[1.0, NAN]] * 3] * 2)),
    ("rewards", dict(rewards=[[[]] * 3] * 2)),  # m = 0
    ("rewards", dict(rewards=[[1.0, 0.0, 0.5]] * 2)),  # missing the m axis
]
TREE_REFUSALS = [
    ("vocab", dict(vocab=0)),
    ("vocab", dict(vocab=2.5)),
    ("vocab", dict(vocab="2")),
    ("vocab", dict(vocab=True)),
    ("horizon", dict(horizon=-1)),
    ("vocab", dict(vocab=10, horizon=9)),  # too many leaves to enumerate
    ("ref_logits", dict(ref_logits=[[0.0, 0.0], [1.0, -1.0]])),  # N rows wrong
    ("ref_logits", dict(ref_logits=[[0.0, 0.0, 0.0]] * 3)),  # V columns wrong
    ("ref_logits", dict(ref_logits=[[0.0, NAN], [1.0, -1.0], [0.3, 0.2]])),
    ("rewards", dict(rewards=[[1.0, 0.0]] * 3)),  # V^T rows wrong
    ("rewards", dict(rewards=[[1.0, 0.0], [0.0, INF], [0.8, 0.8], [0.8, 0.8]])),
    ("rewards", dict(rewards=[[]] * 4)),  # m = 0
]


@pytest.mark.parametrize("field,changes", BANDIT_REFUSALS)
def test_bandit_refusals(field, changes):
    _refused(field, instance_from_json, _with(BANDIT, **changes))


@pytest.mark.parametrize("field,changes", TREE_REFUSALS)
def test_tree_refusals(field, changes):
    _refused(field, instance_from_json, _with(TREE, **changes))


@pytest.mark.parametrize("base", [BANDIT, TREE])
def test_missing_fields_and_wrong_kind(base):
    for name in base:
        data = copy.deepcopy(base)
        del data[name]
        _refused(name, instance_from_json, data)
    _refused("kind", instance_from_json, _with(base, kind="graph"))
    _refused("instance", instance_from_json, [base])


def test_unreadable_or_malformed_files(tmp_path):
    _refused("instance", load_instance, tmp_path / "absent.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    _refused("instance", load_instance, bad)


@pytest.mark.parametrize("w", [
    [0.5, 0.6],  # wrong sum
    [1.2, -0.2],  # negative
    [1.0],  # wrong length
    [0.3, 0.3, 0.4],
    [NAN, 1.0],
    [INF, 0.0],
    [[0.5, 0.5], [0.9, 0.2]],  # one bad row in a stack
    [[[0.5, 0.5]]],  # wrong dimensions
    [],
    "a,b",
])
def test_weightings_off_the_simplex_are_refused(w):
    _refused("weights", check_weights, w, 2)


def test_weightings_on_the_simplex_are_returned_unchanged():
    w = check_weights([0.25, 0.75], 2)
    assert w.shape == (1, 2) and w.tolist() == [[0.25, 0.75]]
    stack = check_weights([[1.0, 0.0], [0.0, 1.0]], 2)
    assert stack.tolist() == [[1.0, 0.0], [0.0, 1.0]]


@pytest.mark.parametrize("beta", [0, -1.0, NAN, INF, -INF, "x", None])
def test_beta_must_be_positive_and_finite(beta):
    _refused("beta", check_beta, beta)


# Random instances (theory.random_instances)

@given(seed=st.integers(0, 2 ** 32 - 1), eps=st.floats(0, 5), X=st.integers(1, 3), m=st.integers(2, 4))
def test_random_bandit_has_the_requested_misalignment(seed, eps, X, m):
    bandit = random_bandit(np.random.default_rng(seed), contexts=X, responses=4, rewards=m, misalignment=eps)
    assert abs(bandit_misalignment(bandit) - eps) <= 1e-12 * (1 + eps)
    # brute force over contexts and pairs (independent of the vectorised helper)
    spread = max(np.ptp(bandit.rewards[x, :, i] - bandit.rewards[x, :, j]) / 2
                 for x in range(X) for i in range(m) for j in range(i + 1, m))
    assert math.isclose(spread, bandit_misalignment(bandit), rel_tol=1e-12, abs_tol=1e-15)


@given(seed=st.integers(0, 2 ** 32 - 1), eps=st.floats(0, 5), V=st.integers(2, 3), T=st.integers(1, 3),
       m=st.integers(2, 3))
def test_random_tree_has_the_requested_root_misalignment(seed, eps, V, T, m):
    tree = random_tree(np.random.default_rng(seed), vocab=V, horizon=T, rewards=m, misalignment=eps)
    assert abs(tr.misalignment(tree)[0][0] - eps) <= 1e-12 * (1 + eps)


def test_random_instances_are_reproducible_and_shaped():
    a = random_tree(np.random.default_rng(3), vocab=3, horizon=2, rewards=4)
    b = random_tree(np.random.default_rng(3), vocab=3, horizon=2, rewards=4)
    assert np.array_equal(a.rewards, b.rewards) and a.rewards.shape == (9, 4)
    bandit = random_bandit(np.random.default_rng(3), contexts=2, responses=7, rewards=3)
    assert bandit.rewards.shape == (2, 7, 3) and abs(bandit.context_probs.sum() - 1) < 1e-12


@pytest.mark.parametrize("field,kwargs", [
    ("contexts", dict(contexts=0)), ("responses", dict(responses=1.5)), ("rewards", dict(rewards=0)),
    ("scale", dict(scale=-1.0)), ("scale", dict(scale=INF)),
    ("misalignment", dict(misalignment=-0.1)), ("misalignment", dict(misalignment=NAN)),
    ("misalignment", dict(rewards=1, misalignment=0.5)),  # one reward cannot be misaligned
])
def test_random_bandit_refusals(field, kwargs):
    with pytest.raises(ValueError, match=f"^{field}:"):
        random_bandit(np.random.default_rng(0), **kwargs)


@pytest.mark.parametrize("field,kwargs", [
    ("vocab", dict(vocab=0)), ("horizon", dict(horizon=0)), ("rewards", dict(rewards=-2)),
    ("scale", dict(scale=0.0)), ("misalignment", dict(misalignment=INF)), ("vocab", dict(vocab=100, horizon=5)),
])
def test_random_tree_refusals(field, kwargs):
    with pytest.raises(ValueError, match=f"^{field}:"):
        random_tree(np.random.default_rng(0), **kwargs)


def test_p10_tree_layout_and_refusals():
    tree = p10_tree(0.7)
    assert (tree.vocab, tree.horizon, tree.m) == (2, 2, 2)
    assert tree.rewards.tolist() == [[1, 0], [0, 1], [0.7, 0.7], [0.7, 0.7]]
    for logp in tree.ref_logp:
        np.testing.assert_allclose(np.exp(logp), 0.5)
    for c in (0.5, 1.0, 1.2, NAN):
        with pytest.raises(ValueError, match="^c:"):
            p10_tree(c)


@given(bandits())
def test_strategy_bandits_are_valid(bandit):
    assert isinstance(bandit, Bandit)
    np.testing.assert_allclose(np.exp(bandit.ref_logp).sum(-1), 1)


@given(trees())
def test_strategy_trees_are_valid(tree):
    assert isinstance(tree, Tree) and tree.rewards.shape[0] == tree.vocab ** tree.horizon
