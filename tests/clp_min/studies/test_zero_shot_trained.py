"""The trained zero-shot study (clp_min.studies.zero_shot_trained): the remedy's objective against an
independent route (toy.objective.prefix_values on the padded theory tree, pi_ref's visitation by
theory.tree.prefix_probs), and a smoke run of the whole study at its tiny configuration."""
import json
from dataclasses import replace

import numpy as np
import torch

from clp_min import task as tk
from clp_min.conditioning import Unconditioned
from clp_min.oracle import exact, exact_pg
from clp_min.studies import exact_setups as es
from clp_min.studies import setups as su
from clp_min.studies import zero_shot_trained as z
from theory import tree as tr
from toy.objective import TreeTensors, prefix_values


def _pi_ref(tmp_path):
    scale = replace(z._exact_scale(z.QUICK, 0), pretrain_steps=5)
    return su.reference_model(*es.reference_args(scale, 0, tmp_path))


def test_prefix_averaged_objective_equals_prefix_values_on_the_padded_tree(tmp_path):
    """Sum over responses (producible ones, forced EOS) vs the bottom-up recursion on all V^T leaves.
    Catches pi_ref's prefix weight dropped (the objective becomes sum_t E_pi v), a suffix sum taken
    from t + 1, and the KL term with pi_ref's full sequence instead of its suffix (tried by hand)."""
    torch.manual_seed(0)
    pi_ref = _pi_ref(tmp_path)
    policy = pi_ref.__class__(pi_ref.config)  # a different model: random initialisation
    task = tk.TaskConfig(**es.ENUM_TASK, rewards=("knob",), strength=0.3)
    prompts = es.heldout_prompts(task)[:2]
    table = exact_pg.ReferenceTable(pi_ref, task)
    with torch.no_grad():
        tok, _ = exact_pg.token_log_probs(Unconditioned(policy), None, prompts, task.vocab, task.response_len)
        rows = ((prompts - 1) * table.place).sum(dim=1)
        got = z.prefix_averaged_objective(tok.double(), z.reference_token_table(pi_ref, task)[rows].double(),
                                          table.lookup(prompts)[1][..., 0].double(), su.BETA)
    trees = es._trees(pi_ref, task, prompts)
    log_pi = exact.prefix_logprobs(es._log_softmax_of(policy), task, prompts)  # per prompt, by depth [V^t, V]
    for p, tree in enumerate(trees):
        v = prefix_values(TreeTensors(tree), [torch.as_tensor(lp[None]) for lp in log_pi[p]],
                          torch.ones(1, 1, dtype=torch.float64), su.BETA)
        mu = tr.prefix_probs(tree, tr.reference_token_policy(tree))  # pi_ref's visitation by depth
        want = sum(float((mu[t] * v[t].numpy()).sum()) for t in range(tree.horizon))
        np.testing.assert_allclose(got[p].item(), want, rtol=1e-5, atol=1e-6)


def test_study_smoke_run_writes_its_report_and_p11_agrees_with_the_exact_regret(tmp_path):
    results = z.run(tmp_path / "out", [0], z.QUICK, tmp_path / "runs", jobs=1)
    assert (tmp_path / "out" / "report.md").exists() and (tmp_path / "out" / "regret_vs_s.png").exists()
    saved = json.loads((tmp_path / "out" / "seed0.json").read_text())
    assert saved["tasks"][0]["strength"] == 0.0
    for t in results[0]["tasks"]:
        assert t["regret"]["ideal zero-shot"] < 1e-9  # s = 0: the ideal zero-shot is exact (P6)
        for regime in z.REGIMES:
            # two routes to the trained mixture's regret: theory.trained_mixing vs clp_min's exact evaluation
            np.testing.assert_allclose(t[regime]["regret"], t["regret"][f"logit mixing ({regime})"], rtol=1e-6)
            assert t[regime]["bound"] >= t[regime]["regret"] - 1e-12


def test_command_writes_the_study_and_refuses_to_overwrite_it(tmp_path, capsys):
    """`clp zero-shot --quick`: seed0.json, report.md and the figure; a second run onto them is refused."""
    from clp_cli.main import main

    out = tmp_path / "zst"
    assert main(["zero-shot", "--quick", "--out", str(out)]) == 0
    assert {"seed0.json", "report.md", "regret_vs_s.png"} <= {p.name for p in out.iterdir()}
    before = (out / "seed0.json").read_bytes()
    assert main(["zero-shot", "--quick", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err and (out / "seed0.json").read_bytes() == before
