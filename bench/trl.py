"""Speed of one TRL GRPO step against one clp_min RLOO step (one run, CPU, one thread).

Same tiny transformers GPT-2 (1 layer, width 16, V = 5, through clp_min.interop.hf), the same
P = 2 prompts of the enumerable task, G = 8 completions per prompt, T = 3, beta = 0.5:

    TRL GRPO step    trainer._generate_and_score_completions + compute_loss + backward + Adam step
                     (TRL 1.16.0, its defaults: dapo loss, group std scaling, KL correction)
    clp_min RLOO     clp_min.rl.rl_step (sample with a key/value cache, score, loss, backward, Adam step)

    python bench/trl.py [--repeats 20] [--out DIR]

The two are timed in turn within each round (after one warm-up step each); the ratio is the median
of the per-round ratios (tolerates a shared, busy CPU). Needs the optional extra ``trl``.
With ``--out`` writes ``trl_bench.json``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and its name would shadow the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402
import torch  # noqa: E402

from clp_min import rl  # noqa: E402
from clp_min import task as tk  # noqa: E402
from clp_min.conditioning import Unconditioned  # noqa: E402
from clp_min.interop import trl as ta  # noqa: E402
from clp_min.interop.hf import HFCausalLM  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="timed rounds (each times both steps once)")
    parser.add_argument("--out", default=None, help="folder for trl_bench.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    task = tk.TaskConfig(vocab=5, prompt_len=2, response_len=3, rewards=("coverage", "knob"))
    P, G, beta = 2, 8, 0.5
    prompts = torch.tensor([[1, 2], [3, 4]])
    w = torch.tensor([[0.3, 0.7], [0.6, 0.4]], dtype=torch.float64)
    folder = tempfile.mkdtemp()
    trainer = ta.build_trainer("grpo", ta.tiny_causal_lm("gpt2", 5, 0), ta.tiny_causal_lm("gpt2", 5, 1), task, folder,
                               G, beta)
    grpo_opt = torch.optim.Adam(trainer.model.parameters(), lr=0.0)  # parameters stay put: every round the same step
    loss_fn = ta.trl_loss(trainer, G)
    policy = Unconditioned(HFCausalLM(ta.tiny_causal_lm("gpt2", 5, 0)))
    pi_ref = HFCausalLM(ta.tiny_causal_lm("gpt2", 5, 1))
    rloo_opt = torch.optim.Adam(policy.parameters(), lr=0.0)
    gen = torch.Generator().manual_seed(0)
    w_np = w.numpy()

    def grpo_step():
        loss = loss_fn(prompts, w, gen)
        grpo_opt.zero_grad(set_to_none=True)
        loss.backward()
        grpo_opt.step()

    def rloo_step():
        rl.rl_step(policy, pi_ref, rloo_opt, task, w_np, G, beta, gen)

    cases = {"trl_grpo": grpo_step, "clp_min_rloo": rloo_step}
    for fn in cases.values():
        fn()
    times = {k: [] for k in cases}
    for _ in range(args.repeats):
        for name, fn in cases.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    ratio = statistics.median(np.array(times["trl_grpo"]) / np.array(times["clp_min_rloo"]))
    row = {"P": P, "G": G, "T": task.response_len, "completions_per_step": P * G, "repeats": args.repeats,
           "s_per_step_trl_grpo": statistics.median(times["trl_grpo"]),
           "s_per_step_clp_min_rloo": statistics.median(times["clp_min_rloo"]), "ratio_trl_over_clp_min": ratio}
    print(f"| step | completions | s/step |\n|---|---|---|\n| TRL GRPO | {P * G} | {row['s_per_step_trl_grpo']:.4f} |\n"
          f"| clp_min RLOO | {P * G} | {row['s_per_step_clp_min_rloo']:.4f} |\n\nratio TRL / clp_min: {ratio:.2f}x")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "trl_bench.json").write_text(json.dumps(row, indent=2) + "\n")


if __name__ == "__main__":
    main()
