"""Speed of clp_min conditioning and decoding, as ratios (one run, CPU, one thread).

(a) forward + backward of ParamConditioned (scopes logit, attn, full) over the unconditioned
    GPT, with one weighting per batch ``w [m]`` and one per example ``w [B, m]`` laid out as
    RLOO lays it out (``--group`` samples per weighting, B / group distinct weightings), the
    path ``ParamConditioned`` picks named; also every per-example path forced, and all
    weightings distinct, for the record;
(b) decoding tokens/s of a conditioned model (``sample`` mixes once per call) against the
    unconditioned GPT (the one-pass limit), decoding-time realignment (2 passes per token),
    two-model logit mixing (2 passes) and the conditioned model mixing at every call (the
    old ``sample``);
(c) the ratios of (a) for a transformers GPT-2 of the same size through clp_min.interop.hf.HFCausalLM
    (needs the optional extra ``hf``; skipped without it; its per-example weightings are
    all distinct, and GPT-2's Conv1D layers take the vmap path).

    python bench/clp_min.py [--out DIR]

Prints the tables and then the goals table (``Row``: measure, ratio, goal); with ``--out``
also writes ``clp_min_bench.json``. The cases are timed in turn within each of ``--repeats``
rounds (after one warm-up run) and each ratio is the median of the per-round ratios, which
tolerates a shared, busy CPU. The GPT is untied, so scope ``logit`` mixes the unembedding only.
Other benches add rows by appending to the list ``main`` passes around.
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

from clp_min import (GPT, GPTConfig, ParamConditioned, logit_mix_sample,  # noqa: E402
                     realign_sample, sample)
from clp_min.per_example import group_rows  # noqa: E402


@dataclass
class Row:
    """One line of the goals table: a ratio measured in this run and its goal."""

    measure: str
    ratio: float
    goal: str  # e.g. "<= 1.1"

    @property
    def met(self) -> bool:
        op, value = self.goal.split()
        return self.ratio <= float(value) if op == "<=" else self.ratio >= float(value)


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
    group: int = 4  # RLOO samples per weighting in the per-example case (B / group distinct weightings)
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


class EveryStep(torch.nn.Module):
    """The conditioned policy called with ``w`` at every step: what ``sample`` did before it mixed once."""

    def __init__(self, policy):
        super().__init__()
        self.policy = policy

    def forward(self, w, idx, cache=None):
        return self.policy(w, idx, cache=cache)


def _simplex_rows(n: int, m: int) -> torch.Tensor:
    w = torch.distributions.Dirichlet(torch.ones(m)).sample((n,))
    return w / w.sum(1, keepdim=True)  # float32 rounding: back on the simplex within 1e-6


PATHS = ("layers", "outputs", "groups", "vmap")


def forward_backward_table(cfg: BenchConfig, gpt: GPT, progress) -> list[dict]:
    g = torch.Generator().manual_seed(cfg.seed)
    idx = torch.randint(0, cfg.vocab_size, (cfg.batch, cfg.seq), generator=g)
    w_batch = torch.full((cfg.m,), 1.0 / cfg.m)
    w_rloo = _simplex_rows(cfg.batch // cfg.group, cfg.m).repeat_interleave(cfg.group, dim=0)  # (B, m)
    w_distinct = _simplex_rows(cfg.batch, cfg.m)  # (B, m)

    def step(run):
        def fn():
            logits, _ = run()
            logits.float().logsumexp(-1).mean().backward()
        return fn

    def at(pc, w, path):
        def run():
            pc.per_example = path
            return pc(w, idx)
        return run

    cases = {"unconditioned": step(lambda: gpt(idx))}
    chosen = {}
    for scope in ("logit", "attn", "full"):
        pc = ParamConditioned.from_base(gpt, cfg.m, scope)
        cases[(scope, "per_batch")] = step(at(pc, w_batch, "auto"))
        for label, w in (("rloo", w_rloo), ("distinct", w_distinct)):
            chosen[(scope, label)] = "layers" if label == "rloo" and pc._owners else \
                pc.per_example_path(group_rows(w)[1])
            cases[(scope, label)] = step(at(pc, w, "auto"))
            for path in PATHS:
                cases[(scope, label, path)] = step(at(pc, w, path))
    times = round_robin(cases, cfg.repeats, progress)
    rows = [{"scope": "unconditioned", "seconds": statistics.median(times["unconditioned"])}]
    for scope in ("logit", "attn", "full"):
        row = {"scope": scope, "per_batch": median_ratio(times, (scope, "per_batch"), "unconditioned")}
        for label in ("rloo", "distinct"):
            row[label] = median_ratio(times, (scope, label), "unconditioned")
            row[f"{label}_path"] = chosen[(scope, label)]
            row[f"{label}_paths"] = {p: median_ratio(times, (scope, label, p), "unconditioned") for p in PATHS}
        rows.append(row)
    return rows


def decoding_table(cfg: BenchConfig, gpt: GPT, progress) -> list[dict]:
    g = torch.Generator().manual_seed(cfg.seed)
    prompt = torch.randint(0, cfg.vocab_size, (cfg.batch, cfg.prompt), generator=g)
    torch.manual_seed(cfg.seed + 1)
    other = GPT(gpt.config)
    pc = ParamConditioned.from_experts([gpt, other], "full")
    w = torch.tensor([0.5, 0.5])
    w_rloo = _simplex_rows(cfg.batch // cfg.group, cfg.m).repeat_interleave(cfg.group, dim=0)  # (B, m)

    def gen():
        return torch.Generator().manual_seed(0)

    runs = {
        "conditioned (full scope, mixed once per call, 1 pass/token)": lambda: sample(
            pc, w, prompt, cfg.new_tokens, generator=gen()),
        "unconditioned GPT (1 pass/token)": lambda: sample(
            lambda w_, idx, cache=None: gpt(idx, cache=cache), w, prompt, cfg.new_tokens, generator=gen()),
        "realignment (2 passes/token)": lambda: realign_sample(gpt, other, 0.5, prompt, cfg.new_tokens,
                                                               generator=gen()),
        "logit mixing, 2 models (2 passes/token)": lambda: logit_mix_sample(
            [gpt, other], w, prompt, cfg.new_tokens, generator=gen()),
        "conditioned, mixing at every call (the old sample)": lambda: sample(
            EveryStep(pc), w, prompt, cfg.new_tokens, generator=gen()),
        f"conditioned, one w per {cfg.group} examples (mixed once per call)": lambda: sample(
            pc, w_rloo, prompt, cfg.new_tokens, generator=gen()),
    }
    calls = {name: run().model_calls for name, run in runs.items()}
    times = round_robin(runs, cfg.repeats, progress)
    first = next(iter(runs))
    return [{"method": name, "tokens_per_s": cfg.batch * cfg.new_tokens / statistics.median(times[name]),
             "model_calls": calls[name], "ratio": 1.0 / median_ratio(times, name, first)} for name in runs]


def hf_forward_backward_table(cfg: BenchConfig, progress) -> list[dict]:
    """(c) The same forward + backward ratios for a transformers GPT-2 of the same size through HFCausalLM."""
    import transformers

    from clp_min.interop.hf import HFCausalLM

    transformers.logging.set_verbosity_error()
    torch.manual_seed(cfg.seed)
    hf_cfg = transformers.GPT2Config(vocab_size=cfg.vocab_size, n_positions=cfg.seq, n_embd=cfg.n_embd,
                                     n_layer=cfg.n_layer, n_head=cfg.n_head, resid_pdrop=0.0, embd_pdrop=0.0,
                                     attn_pdrop=0.0, tie_word_embeddings=False, bos_token_id=0, eos_token_id=0)
    lm = HFCausalLM(transformers.GPT2LMHeadModel(hf_cfg).eval())
    g = torch.Generator().manual_seed(cfg.seed)
    idx = torch.randint(0, cfg.vocab_size, (cfg.batch, cfg.seq), generator=g)
    w_batch = torch.full((cfg.m,), 1.0 / cfg.m)
    w_each = torch.distributions.Dirichlet(torch.ones(cfg.m)).sample((cfg.batch,))
    w_each = w_each / w_each.sum(1, keepdim=True)

    def step(run):
        def fn():
            logits, _ = run()
            logits.float().logsumexp(-1).mean().backward()
        return fn

    cases = {"unconditioned": step(lambda: lm(idx))}
    for scope in ("logit", "attn", "full"):
        pc = ParamConditioned.from_base(lm, cfg.m, scope)
        cases[(scope, "per_batch")] = step(lambda pc=pc: pc(w_batch, idx))
        cases[(scope, "per_example")] = step(lambda pc=pc: pc(w_each, idx))
    times = round_robin(cases, cfg.repeats, progress)
    rows = [{"scope": "HF GPT-2 unconditioned", "per_batch": 1.0, "per_example": 1.0,
             "seconds": statistics.median(times["unconditioned"])}]
    for scope in ("logit", "attn", "full"):
        rows.append({"scope": f"HF GPT-2 {scope}", **{label: median_ratio(times, (scope, label), "unconditioned")
                                                     for label in ("per_batch", "per_example")}})
    return rows


def issue_rows(fb: list[dict], dec: list[dict]) -> list[Row]:
    """The issue table's clp_min lines, from this run's measurements."""
    rows = []
    for r in fb[1:]:
        rows.append(Row(f"forward+backward / unconditioned, one w per batch, {r['scope']}", r["per_batch"], "<= 1.1"))
    for r in fb[1:]:
        goal = "<= 1.5" if r["scope"] == "full" else "<= 1.15"
        rows.append(Row(f"the same, one w per example (groups of 4, {r['rloo_path']}), {r['scope']}",
                        r["rloo"], goal))
    speed = {row["method"]: row["ratio"] for row in dec}  # tokens/s of the conditioned model over each
    conditioned = dec[0]["method"]
    assert speed[conditioned] == 1.0
    realign = next(m for m in speed if m.startswith("realignment"))
    plain = next(m for m in speed if m.startswith("unconditioned"))
    rows.append(Row("conditioned decoding tokens/s / realignment", 1.0 / speed[realign], ">= 1.8"))
    rows.append(Row("conditioned decoding tokens/s / the unconditioned model", 1.0 / speed[plain], ">= 0.95"))
    return rows


def print_tables(cfg: BenchConfig, fb: list[dict], dec: list[dict], rows: list[Row]):
    print(f"## Conditioned forward + backward / unconditioned (m={cfg.m}, B={cfg.batch}, T={cfg.seq}, "
          f"C={cfg.n_embd}, {cfg.n_layer} layers; unconditioned {fb[0]['seconds'] * 1e3:.1f} ms)\n")
    print(f"Per example: B/{cfg.group} weightings in runs of {cfg.group} (RLOO) or all distinct; "
          f"the path picked by ParamConditioned first, then each path forced.\n")
    print("| scope | one w per batch | per example, groups of 4 | all distinct | "
          + " | ".join(f"{p} (groups / distinct)" for p in PATHS) + " |")
    print("|---|---|---|---|" + "---|" * len(PATHS))
    for r in fb[1:]:
        forced = " | ".join(f"{r['rloo_paths'][p]:.2f} / {r['distinct_paths'][p]:.2f}" for p in PATHS)
        print(f"| {r['scope']} | {r['per_batch']:.2f}x | {r['rloo']:.2f}x ({r['rloo_path']}) "
              f"| {r['distinct']:.2f}x ({r['distinct_path']}) | {forced} |")
    print(f"\n## Decoding tokens/s (B={cfg.batch}, {cfg.new_tokens} new tokens; "
          f"ratio: the conditioned model's tokens/s over each)\n")
    print("| method | tokens/s | model calls | conditioned / this |\n|---|---|---|---|")
    for row in dec:
        print(f"| {row['method']} | {row['tokens_per_s']:.0f} | {row['model_calls']} | {1 / row['ratio']:.2f} |")
    print("\n## Issue table (this run)\n")
    print("| measure | ratio | goal | met |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row.measure} | {row.ratio:.2f}x | {row.goal} | {'yes' if row.met else 'NO'} |")


def main():
    cfg = parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(cfg.seed)
    gpt = GPT(GPTConfig(vocab_size=cfg.vocab_size, block_size=max(cfg.seq, cfg.prompt + cfg.new_tokens),
                        n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd, tie_weights=False))
    with tqdm(total=3 * cfg.repeats, disable=not sys.stderr.isatty(), desc="bench") as progress:
        fb = forward_backward_table(cfg, gpt, progress)
        dec = decoding_table(cfg, gpt, progress)
        try:
            hf = hf_forward_backward_table(cfg, progress)
        except ImportError:  # the optional extra hf is not installed
            hf = []
    rows = issue_rows(fb, dec)
    print_tables(cfg, fb, dec, rows)
    if hf:
        print(f"\n## The same for a transformers GPT-2 of that size through HFCausalLM "
              f"(unconditioned {hf[0]['seconds'] * 1e3:.1f} ms)\n")
        print("| scope | one w per batch | one w per example |\n|---|---|---|")
        for row in hf:
            print(f"| {row['scope']} | {row['per_batch']:.2f}x | {row['per_example']:.2f}x |")
    if cfg.out:
        out = Path(cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "clp_min_bench.json").write_text(json.dumps(
            {"config": asdict(cfg), "forward_backward": fb, "decoding": dec, "hf_forward_backward": hf,
             "issue_table": [{**asdict(r), "met": r.met} for r in rows]}, indent=2))
    exact_gradient_row(cfg.repeats, cfg.out)
    exact_evaluation_row(max(3, cfg.repeats // 4), cfg.out)


def exact_gradient_row(repeats: int, out=None) -> dict:
    """Issue 12 item 4: one exact-gradient step (clp_min.oracle.exact_pg) against one RLOO step (clp_min.rl).

    The enumerable task and model of ``clp_min.studies.exact_setups`` (V = 4, T = 4, 2 layers), CLP full, P = 8
    prompts: the exact step sums over all 121 producible responses per prompt, RLOO samples n = 4.
    The exact step runs both routes to the token distributions (exact_pg.prefix_log_probs): the token
    tree (the default for the GPT) and depth by depth through the cache (any other policy).
    Prints seconds per step and per response, and the ratio of step times (median of per-round ratios).
    """
    import numpy as np

    from clp_min import rl, weightings
    from clp_min.oracle import exact_pg
    from clp_min.studies import exact_setups
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
    cases = {"exact": lambda: exact_pg.exact_step(policy, ref, opt, task, weightings.draw_weightings(rng, P, 2, "uniform"),
                                                  0.1, gen, route="tree"),
             "exact (depth)": lambda: exact_pg.exact_step(policy, ref, opt, task,
                                                          weightings.draw_weightings(rng, P, 2, "uniform"), 0.1, gen,
                                                          route="depth"),
             "rloo": lambda: rl.rl_step(policy, ref, opt, task, weightings.draw_weightings(rng, P, 2, "uniform"), n, 0.1, gen)}
    with tqdm(total=repeats, disable=not sys.stderr.isatty(), desc="bench exact") as progress:
        times = round_robin(cases, repeats, progress)
    row = {"P": P, "responses_exact": P * N, "responses_rloo": P * n,
           "s_per_step_exact": statistics.median(times["exact"]), "s_per_step_rloo": statistics.median(times["rloo"]),
           "ratio_exact_over_rloo": median_ratio(times, "exact", "rloo"),
           "s_per_step_exact_depth": statistics.median(times["exact (depth)"]),
           "ratio_exact_depth_over_tree": median_ratio(times, "exact (depth)", "exact")}
    row["s_per_response_exact"] = row["s_per_step_exact"] / row["responses_exact"]
    row["s_per_response_rloo"] = row["s_per_step_rloo"] / row["responses_rloo"]
    print(f"\n## Exact gradient vs RLOO step (V=4, T=4, {exact_setups.MODEL}, CLP full, P={P})\n")
    print("| estimator | responses/step | s/step | s/response | step ratio |\n|---|---|---|---|---|")
    print(f"| exact | {P * N} | {row['s_per_step_exact']:.3f} | {row['s_per_response_exact']:.2e} | "
          f"{row['ratio_exact_over_rloo']:.2f}x |")
    print(f"| exact, depth route | {P * N} | {row['s_per_step_exact_depth']:.3f} | "
          f"{row['s_per_step_exact_depth'] / (P * N):.2e} | "
          f"{median_ratio(times, 'exact (depth)', 'rloo'):.2f}x |")
    print(f"| RLOO n={n} | {P * n} | {row['s_per_step_rloo']:.3f} | {row['s_per_response_rloo']:.2e} | 1 |")
    print(f"\nThe tree route is {row['ratio_exact_depth_over_tree']:.2f}x faster than the depth route (same run).")
    if out:
        (Path(out) / "clp_min_bench_exact.json").write_text(json.dumps(row, indent=2))
    return row


def exact_evaluation_row(repeats: int, out=None) -> dict:
    """Exact evaluation of one conditioned policy (clp_min.studies.exact_setups.policy_log_policies): its token policy
    at 11 weightings on the 84 held-out prompts, through the token tree (``exact_pg.token_policies``) against
    the padded pass of every prefix (``clp_min.oracle.exact.method_log_policies``, any method). CLP full, the
    enumerable task and model of ``clp_min.studies.exact_setups``. Prints seconds per evaluation and the ratio."""
    import numpy as np

    from clp_min.studies import evaluate as ev
    from clp_min.oracle import exact, exact_pg
    from clp_min.studies import exact_setups
    from clp_min import task as tk
    from clp_min.pretrain import model_config
    from theory.weights import simplex_grid

    task = tk.TaskConfig(**exact_setups.ENUM_TASK)
    torch.manual_seed(0)
    policy = ParamConditioned.from_base(GPT(model_config(task, **exact_setups.MODEL)), 2, "full")
    held, W = exact_setups.heldout_prompts(task), simplex_grid(2, 10)
    cases = {"tree": lambda: exact_pg.token_policies(policy, task, held, W),
             "padded": lambda: exact.method_log_policies(ev.policy_method("", policy).logprobs, task, held, W)}
    gap = max(float(np.abs(a - b).max()) for p, q in zip(cases["tree"](), cases["padded"]()) for a, b in zip(p, q))
    with tqdm(total=repeats, disable=not sys.stderr.isatty(), desc="bench exact evaluation") as progress:
        times = round_robin(cases, repeats, progress)
    row = {"prompts": len(held), "weightings": len(W), "s_tree": statistics.median(times["tree"]),
           "s_padded": statistics.median(times["padded"]), "ratio_padded_over_tree": median_ratio(times, "padded", "tree"),
           "max_abs_logprob_gap_float32": gap}
    print(f"\n## Exact evaluation of CLP full ({len(held)} held-out prompts, {len(W)} weightings)\n")
    print("| route | s per evaluation |\n|---|---|")
    print(f"| token tree | {row['s_tree']:.2f} |\n| padded pass | {row['s_padded']:.2f} |")
    print(f"\nThe tree is {row['ratio_padded_over_tree']:.1f}x faster (same run); largest log-prob gap {gap:.1e} (float32).")
    if out:
        (Path(out) / "clp_min_bench_exact_eval.json").write_text(json.dumps(row, indent=2))
    return row


if __name__ == "__main__":
    main()
