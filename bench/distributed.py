"""Data-parallel scaling of clp_min training: RL steps/s with 1 and 2 ranks at a fixed global batch.

Each round starts W = 1, then W = 2 processes (gloo on CPU, one thread each, DDP)
that run ``--warmup`` RL steps and then time ``--steps`` steps of the training loop
(``clp_min.rl.rl_step`` on ``prompts_per_step / W`` prompts per rank, per-prompt
streams, gradients averaged by DDP). Scaling efficiency = (steps/s with 2) / (2 x steps/s
with 1): 1.0 is a perfect 2x speed-up. The median over ``--repeats`` rounds is reported.

    python bench/distributed.py [--repeats 3] [--out DIR]

Process start-up and pi_ref are outside the timed loop (pi_ref is a fresh, untrained GPT:
speed does not depend on its weights). On a shared CPU the ranks compete with every
other process for cores; the number measures that machine as it was.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path; keep it off (bench/clp_min.py shadows clp_min).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402

from clp_min.interop import distributed  # noqa: E402
from clp_min.model import GPT  # noqa: E402
from clp_min.pretrain import model_config  # noqa: E402
from clp_min.config import TrainConfig
from clp_min.train import build_policy, step_streams  # noqa: E402
from clp_min import rl  # noqa: E402


@dataclass
class BenchConfig:
    conditioning: str = "attn"  # the trained policy's conditioning (TrainConfig)
    prompts_per_step: int = 16  # global batch P (split across ranks)
    samples_per_prompt: int = 4  # n
    n_layer: int = 2  # transformer blocks
    n_embd: int = 64  # residual width
    warmup: int = 3  # untimed steps per run
    steps: int = 20  # timed steps per run
    repeats: int = 3  # rounds (each: 1 rank, then 2 ranks)
    out: str | None = None  # directory for distributed_bench.json (optional)


def ranks_worker(bench: BenchConfig, result: str) -> None:
    """One rank: build the policy as ``clp_min.train`` does, run the loop, rank 0 writes steps/s."""
    cfg = TrainConfig(conditioning=bench.conditioning, prompts_per_step=bench.prompts_per_step,
                      samples_per_prompt=bench.samples_per_prompt, n_layer=bench.n_layer, n_embd=bench.n_embd,
                      weights="dirichlet", streams="prompt", device="cpu").validate()
    ctx = distributed.setup(cfg.device)
    torch.manual_seed(0)
    pi_ref = GPT(model_config(cfg.task(), cfg.n_layer, cfg.n_head, cfg.n_embd)).to(ctx.device).eval()
    for p in pi_ref.parameters():
        p.requires_grad_(False)
    policy = build_policy(cfg, pi_ref)
    optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
    ddp = distributed.wrap(policy, ctx)
    local = distributed.local_prompts(cfg.prompts_per_step, ctx.rank, ctx.world_size)
    for step in range(bench.warmup + bench.steps):
        if step == bench.warmup:
            distributed.barrier(ctx)
            start = time.perf_counter()
        w, gens = step_streams(cfg, step, local, None, None)
        rl.rl_step(ddp, pi_ref, optimizer, cfg.task(), w, cfg.samples_per_prompt, cfg.beta, gens)
    distributed.barrier(ctx)
    if ctx.writer:
        Path(result).write_text(json.dumps(bench.steps / (time.perf_counter() - start)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in asdict(BenchConfig()).items():
        parser.add_argument(f"--{name}", type=str if name in ("out", "conditioning") else int, default=default)
    bench = BenchConfig(**vars(parser.parse_args()))
    rates = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(bench.repeats):
            for W in rates:
                distributed.run_processes(W, ranks_worker, bench, f"{tmp}/rate")
                rates[W].append(json.loads(Path(f"{tmp}/rate").read_text()))
    ratios = [r2 / r1 for r1, r2 in zip(rates[1], rates[2])]
    result = {"config": asdict(bench), "steps_per_s": {str(W): statistics.median(r) for W, r in rates.items()},
              "speedup": statistics.median(ratios), "scaling_efficiency": statistics.median(ratios) / 2,
              "per_round": {"steps_per_s": {str(W): r for W, r in rates.items()}, "speedup": ratios}}
    print(f"global batch {bench.prompts_per_step} prompts x {bench.samples_per_prompt} samples, "
          f"conditioning {bench.conditioning}, {bench.n_layer} layers x {bench.n_embd} wide, gloo on CPU\n")
    print("| ranks | steps/s | speed-up | scaling efficiency |\n|---|---|---|---|")
    print(f"| 1 | {result['steps_per_s']['1']:.2f} | 1 | 1 |")
    print(f"| 2 | {result['steps_per_s']['2']:.2f} | {result['speedup']:.2f} | {result['scaling_efficiency']:.2f} |")
    if bench.out:
        Path(bench.out).mkdir(parents=True, exist_ok=True)
        (Path(bench.out) / "distributed_bench.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
