"""The TRL study's plumbing: the table's plans have the sizes the docs state, and the end-to-end runs'
written-weighting wrapper is one policy (its cached decoding equals one full pass; the token it writes
follows the grid)."""
import pytest
import torch

pytest.importorskip("transformers")

from clp_min.interop import trl as ta  # noqa: E402
from clp_min.interop.hf import HFCausalLM  # noqa: E402
from clp_min.oracle import kit  # noqa: E402
from clp_min.studies import trl_check as tc  # noqa: E402
from clp_min.studies import trl_e2e, trl_report  # noqa: E402


def test_plans_cover_the_table():
    cfg = tc.StudyConfig()
    _, full = trl_report.plan("full", cfg)
    assert len(full) == 304 == len(set(full))  # 4 loss types x 3 scales x 3 KL variants x 2 aggregations + 4 RLOO, x 4
    assert {r.loss_type for r, _ in full} >= set(tc.LOSS_TYPES) and len({s for _, s in full}) == 4
    _, reduced = trl_report.plan("reduced", cfg)
    assert len(reduced) == 44 and set(reduced) <= set(full)
    with pytest.raises(ValueError, match="^scale:"):
        trl_report.plan("huge", cfg)


def test_written_weighting_is_one_policy():
    policy = trl_e2e.WrittenWeighting(HFCausalLM(ta.tiny_causal_lm("gpt2", 5, 0)))
    prompt = torch.tensor([[1, 2, 3], [4, 4, 1]])
    kit.sampler_check(policy, torch.tensor([0.25, 0.75]), prompt, 3, torch.Generator().manual_seed(0)).assert_pass()
    assert trl_e2e.level_tokens(torch.tensor(trl_e2e.GRID), 5).view(-1).tolist() == [0, 1, 2, 3, 4]
    logits_a, _ = policy(torch.tensor([0.0, 1.0]), prompt)
    logits_b, _ = policy(torch.tensor([1.0, 0.0]), prompt)
    assert logits_a.shape == (2, 3, 5) and not torch.allclose(logits_a, logits_b)  # the weighting reaches the model


def test_methods_by_conditioning():
    """The written rows keep the names of the committed results; the mixed rows compare TRL and clp_min on one model."""
    written = trl_e2e.methods_of("written")
    assert written[:4] == list(trl_e2e.TRL_SETTINGS) and written[4:] == ["clp_min rloo", "clp_min exact"]
    mixed = trl_e2e.methods_of("mixed")
    assert len(mixed) == 5 and all(n.startswith("mixed: ") for n in mixed)
    assert {n.removeprefix("mixed: ") for n in mixed} >= {"trl rloo defaults", "clp_min rloo", "clp_min exact"}
    assert trl_e2e.methods_of("both") == written + mixed
    with pytest.raises(ValueError, match="^conditioning:"):
        trl_e2e.methods_of("prompt")
