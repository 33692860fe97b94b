"""Speed of clp_min conditioning and decoding, as ratios (one run, CPU, one thread).

(a) forward + backward of ParamConditioned (scopes logit, attn, full; one weighting per
    batch ``w [m]`` and one per example ``w [B, m]``) over the unconditioned GPT;
(b) decoding tokens/s of a conditioned model (parameter-conditioned, one pass per token,
    mixing at every call or exported once with ``policy_at``) against decoding-time
    realignment (2 passes) and two-model logit mixing (2 passes).

    python bench/clp_min.py [--out DIR]

Prints two markdown tables; with ``--out`` also writes ``clp_min_bench.json``.
The cases are timed in turn within each of ``--repeats`` rounds (after one warm-up run)
and each ratio is the median of the per-round ratios, which tolerates a shared, busy CPU.
The GPT is untied, so scope ``logit`` mixes the unembedding only.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and its name would shadow the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from clp_min import (GPT, GPTConfig, ParamConditioned, Unconditioned, logit_mix_sample,  # noqa: E402
                     realign_sample, sample)


@dataclass
class BenchConfig:
    vocab_size: int = 64  # V
    n_layer: int = 4  # transformer blocks
    n_head: int = 4  # attention heads
    n_embd: int = 64  # C
    m: int = 2  # copies (rewards)
    batch: int = 16  # B for forward + backward and for decoding
    seq: int = 32  # T tokens for forward + backward
    prompt: int = 8  # prompt length for decoding
    new_tokens: int = 32  # tokens decoded per run
    repeats: int = 15  # timed rounds (median of per-round ratios reported)
    seed: int = 0  # torch seed
    out: str | None = None  # directory for clp_min_bench.json (optional)


def parse_args() -> BenchConfig:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in asdict(BenchConfig()).items():
        kind = str if name == "out" else type(default)
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=default)
    return BenchConfig(**vars(parser.parse_args()))


def round_robin(cases: dict, repeats: int, progress) -> dict:
    """Seconds per run ``{name: [repeats]}``, timing the cases in turn within each round.

    The CPU is shared, so ratios are taken within a round (same load) and their median reported.
    """
    for fn in cases.values():
        fn()  # warm-up
    times = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
        progress.update()
    return times


def median_ratio(times: dict, name: str, ref: str) -> float:
    return statistics.median(a / b for a, b in zip(times[name], times[ref]))


def forward_backward_table(cfg: BenchConfig, gpt: GPT, progress) -> list[dict]:
    g = torch.Generator().manual_seed(cfg.seed)
    idx = torch.randint(0, cfg.vocab_size, (cfg.batch, cfg.seq), generator=g)
    w_batch = torch.full((cfg.m,), 1.0 / cfg.m)
    w_each = torch.distributions.Dirichlet(torch.ones(cfg.m)).sample((cfg.batch,))
    w_each = w_each / w_each.sum(1, keepdim=True)  # float32 rounding: back on the simplex within 1e-6

    def step(run):
        def fn():
            logits, _ = run()
            logits.float().logsumexp(-1).mean().backward()
        return fn

    cases = {"unconditioned": step(lambda: gpt(idx))}
    for scope in ("logit", "attn", "full"):
        pc = ParamConditioned.from_base(gpt, cfg.m, scope)
        cases[(scope, "per_batch")] = step(lambda pc=pc: pc(w_batch, idx))
        cases[(scope, "per_example")] = step(lambda pc=pc: pc(w_each, idx))
    times = round_robin(cases, cfg.repeats, progress)
    rows = [{"scope": "unconditioned", "per_batch": 1.0, "per_example": 1.0,
             "seconds": statistics.median(times["unconditioned"])}]
    for scope in ("logit", "attn", "full"):
        rows.append({"scope": scope, **{label: median_ratio(times, (scope, label), "unconditioned")
                                        for label in ("per_batch", "per_example")}})
    return rows


def decoding_table(cfg: BenchConfig, gpt: GPT, progress) -> list[dict]:
    g = torch.Generator().manual_seed(cfg.seed)
    prompt = torch.randint(0, cfg.vocab_size, (cfg.batch, cfg.prompt), generator=g)
    torch.manual_seed(cfg.seed + 1)
    other = GPT(gpt.config)
    pc = ParamConditioned.from_experts([gpt, other], "full")
    w = torch.tensor([0.5, 0.5])
    runs = {
        "conditioned (full scope, 1 pass/token)": lambda: sample(pc, w, prompt, cfg.new_tokens,
                                                                 generator=torch.Generator().manual_seed(0)),
        "conditioned, mixed once by policy_at(w) (1 pass/token)": lambda: sample(
            Unconditioned(pc.policy_at(w)), w, prompt, cfg.new_tokens, generator=torch.Generator().manual_seed(0)),
        "realignment (2 passes/token)": lambda: realign_sample(gpt, other, 0.5, prompt, cfg.new_tokens,
                                                               generator=torch.Generator().manual_seed(0)),
        "logit mixing, 2 models (2 passes/token)": lambda: logit_mix_sample(
            [gpt, other], w, prompt, cfg.new_tokens, generator=torch.Generator().manual_seed(0)),
    }
    calls = {name: run().model_calls for name, run in runs.items()}
    times = round_robin(runs, cfg.repeats, progress)
    first = next(iter(runs))
    return [{"method": name, "tokens_per_s": cfg.batch * cfg.new_tokens / statistics.median(times[name]),
             "model_calls": calls[name], "ratio": 1.0 / median_ratio(times, name, first)} for name in runs]


def main():
    cfg = parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(cfg.seed)
    gpt = GPT(GPTConfig(vocab_size=cfg.vocab_size, block_size=max(cfg.seq, cfg.prompt + cfg.new_tokens),
                        n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd, tie_weights=False))
    with tqdm(total=2 * cfg.repeats, disable=not sys.stderr.isatty(), desc="bench") as progress:
        fb = forward_backward_table(cfg, gpt, progress)
        dec = decoding_table(cfg, gpt, progress)

    print(f"## Conditioned forward + backward / unconditioned (m={cfg.m}, B={cfg.batch}, T={cfg.seq}, "
          f"C={cfg.n_embd}, {cfg.n_layer} layers; unconditioned {fb[0]['seconds'] * 1e3:.1f} ms)\n")
    print("| scope | one w per batch | one w per example |\n|---|---|---|")
    for row in fb:
        print(f"| {row['scope']} | {row['per_batch']:.2f}x | {row['per_example']:.2f}x |")
    print(f"\n## Decoding tokens/s (B={cfg.batch}, {cfg.new_tokens} new tokens; ratio to the conditioned model)\n")
    print("| method | tokens/s | model calls | ratio |\n|---|---|---|---|")
    for row in dec:
        print(f"| {row['method']} | {row['tokens_per_s']:.0f} | {row['model_calls']} | {row['ratio']:.2f} |")
    if cfg.out:
        out = Path(cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "clp_min_bench.json").write_text(json.dumps(
            {"config": asdict(cfg), "forward_backward": fb, "decoding": dec}, indent=2))
    exact_gradient_row(cfg.repeats, cfg.out)


def exact_gradient_row(repeats: int, out=None) -> dict:
    """Issue 12 item 4: one exact-gradient step (clp_min.exact_pg) against one RLOO step (clp_min.rl).

    The enumerable task and model of ``clp_min.exact_setups`` (V = 4, T = 4, 2 layers), CLP full, P = 8
    prompts: the exact step sums over all 121 producible responses per prompt, RLOO samples n = 4.
    Prints seconds per step and per response, and the ratio of step times (median of per-round ratios).
    """
    import numpy as np

    from clp_min import exact_pg, exact_setups, rl
    from clp_min import task as tk
    from clp_min.pretrain import model_config

    task = tk.TaskConfig(**exact_setups.ENUM_TASK)
    torch.manual_seed(0)
    ref = GPT(model_config(task, **exact_setups.MODEL)).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    policy = ParamConditioned.from_base(GPT(model_config(task, **exact_setups.MODEL)), 2, "full")
    opt = torch.optim.SGD(policy.parameters(), lr=0.0)  # the parameters stay put: every round times the same step
    rng, gen = np.random.default_rng(0), torch.Generator().manual_seed(0)
    P, n = 8, 4
    N = len(exact_pg.producible_responses(task.vocab, task.response_len))
    cases = {"exact": lambda: exact_pg.exact_step(policy, ref, opt, task, rl.draw_weightings(rng, P, 2, "uniform"),
                                                  0.1, gen),
             "rloo": lambda: rl.rl_step(policy, ref, opt, task, rl.draw_weightings(rng, P, 2, "uniform"), n, 0.1, gen)}
    with tqdm(total=repeats, disable=not sys.stderr.isatty(), desc="bench exact") as progress:
        times = round_robin(cases, repeats, progress)
    row = {"P": P, "responses_exact": P * N, "responses_rloo": P * n,
           "s_per_step_exact": statistics.median(times["exact"]), "s_per_step_rloo": statistics.median(times["rloo"]),
           "ratio_exact_over_rloo": median_ratio(times, "exact", "rloo")}
    row["s_per_response_exact"] = row["s_per_step_exact"] / row["responses_exact"]
    row["s_per_response_rloo"] = row["s_per_step_rloo"] / row["responses_rloo"]
    print(f"\n## Exact gradient vs RLOO step (V=4, T=4, {exact_setups.MODEL}, CLP full, P={P})\n")
    print("| estimator | responses/step | s/step | s/response | step ratio |\n|---|---|---|---|---|")
    print(f"| exact | {P * N} | {row['s_per_step_exact']:.3f} | {row['s_per_response_exact']:.2e} | "
          f"{row['ratio_exact_over_rloo']:.2f}x |")
    print(f"| RLOO n={n} | {P * n} | {row['s_per_step_rloo']:.3f} | {row['s_per_response_rloo']:.2e} | 1 |")
    if out:
        (Path(out) / "clp_min_bench_exact.json").write_text(json.dumps(row, indent=2))
    return row


if __name__ == "__main__":
    main()
