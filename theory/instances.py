"""Problem instances: contextual bandits and token trees, and their JSON format.

JSON formats (DESIGN.md, the oracle's public interface)::

    bandit: {"kind": "bandit", "context_probs": [X], "ref_logits": [X][Y], "rewards": [X][Y][m]}
    tree:   {"kind": "tree", "vocab": V, "horizon": T,
             "ref_logits": [N][V],  # N = sum_{t<T} V^t, by length then lexicographic
             "rewards": [V^T][m]}   # lexicographic

Shape letters: X contexts, Y responses, m rewards, V vocabulary, T horizon.
A tree prefix of length t is indexed by its base-V number, so the children of
prefix ``s`` at depth t are ``s * V + a`` at depth t+1 and a reshape
``[V^t * V] -> [V^t, V]`` groups siblings.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.special import log_softmax

from theory.checks import check_probability_vector, check_reward_count, check_rewards_range, check_tree_size, finite_array


@dataclass(frozen=True)
class Bandit:
    """A contextual bandit. ``ref_logp`` is normalised: log pi_ref(y|x)."""

    context_probs: np.ndarray  # [X]
    ref_logp: np.ndarray  # [X, Y]
    rewards: np.ndarray  # [X, Y, m]

    @property
    def m(self) -> int:
        return self.rewards.shape[2]

    @classmethod
    def from_arrays(cls, context_probs, ref_logits, rewards) -> "Bandit":
        rho = check_probability_vector(context_probs, "context_probs")
        logits = finite_array(ref_logits, "ref_logits", ndim=2)
        r = check_rewards_range(finite_array(rewards, "rewards", ndim=3))
        X, Y = logits.shape
        if X != rho.size:
            raise ValueError(f"ref_logits: {X} rows but context_probs has {rho.size} contexts")
        if Y < 1:
            raise ValueError("ref_logits: no responses")
        if r.shape[:2] != (X, Y):
            raise ValueError(f"rewards: shape {r.shape[:2]} per reward, expected [X, Y] = [{X}, {Y}]")
        if r.shape[2] < 1:
            raise ValueError("rewards: no reward dimension (m = 0)")
        check_reward_count(r.shape[-1])
        return cls(rho, log_softmax(logits, axis=-1), r)

    def to_json(self) -> dict:
        return {"kind": "bandit", "context_probs": self.context_probs.tolist(),
                "ref_logits": self.ref_logp.tolist(), "rewards": self.rewards.tolist()}


@dataclass(frozen=True)
class Tree:
    """A token tree with rewards at the leaves (a single root context).

    ``ref_logp[t]`` is ``[V^t, V]``: log pi_ref(a | prefix) for every prefix of length t.
    """

    vocab: int
    horizon: int
    ref_logp: tuple  # T arrays, [V^t, V]
    rewards: np.ndarray  # [V^T, m]

    @property
    def m(self) -> int:
        return self.rewards.shape[1]

    @property
    def n_leaves(self) -> int:
        return self.vocab ** self.horizon

    @classmethod
    def from_arrays(cls, vocab, horizon, ref_logits, rewards) -> "Tree":
        V, T = check_tree_size(vocab, horizon)  # before any V^t is summed or allocated
        logits = finite_array(ref_logits, "ref_logits", ndim=2)
        N = sum(V ** t for t in range(T))
        if logits.shape != (N, V):
            raise ValueError(f"ref_logits: shape {logits.shape}, expected [N, V] = [{N}, {V}] "
                             f"(one row per prefix shorter than the horizon)")
        r = check_rewards_range(finite_array(rewards, "rewards", ndim=2))
        if r.shape[0] != V ** T:
            raise ValueError(f"rewards: {r.shape[0]} rows, expected V^T = {V ** T} (one per sequence)")
        if r.shape[1] < 1:
            raise ValueError("rewards: no reward dimension (m = 0)")
        check_reward_count(r.shape[-1])
        starts = np.cumsum([0] + [V ** t for t in range(T)])
        ref_logp = tuple(log_softmax(logits[starts[t]:starts[t + 1]], axis=-1) for t in range(T))
        return cls(V, T, ref_logp, r)

    def to_json(self) -> dict:
        return {"kind": "tree", "vocab": self.vocab, "horizon": self.horizon,
                "ref_logits": np.concatenate(self.ref_logp).tolist(), "rewards": self.rewards.tolist()}


def instance_from_json(data: dict) -> Bandit | Tree:
    """Build and validate an instance from its parsed JSON object."""
    if not isinstance(data, dict):
        raise ValueError("instance: expected a JSON object")
    kind = data.get("kind")
    fields = {"bandit": ("context_probs", "ref_logits", "rewards"),
              "tree": ("vocab", "horizon", "ref_logits", "rewards")}
    if kind not in fields:
        raise ValueError(f"kind: must be 'bandit' or 'tree', got {kind!r}")
    for name in fields[kind]:
        if name not in data:
            raise ValueError(f"{name}: missing from the {kind} instance")
    args = [data[name] for name in fields[kind]]
    return Bandit.from_arrays(*args) if kind == "bandit" else Tree.from_arrays(*args)


def load_instance(path: str | Path) -> Bandit | Tree:
    """Read an instance file; refuses unreadable or malformed JSON with a one-line message."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"instance: cannot read {path}: {getattr(err, 'strerror', None) or err}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"instance: {path} is not valid JSON ({err.msg}, line {err.lineno})") from None
    except RecursionError:
        raise ValueError(f"instance: {path} nests JSON too deeply") from None
    return instance_from_json(data)
