"""Data-parallel training (clp_min.interop.distributed) and parallel reproduce (clp_min.studies.jobs), 2 processes on CPU."""
import json
from dataclasses import asdict, replace
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from clp_cli.main import main
from clp_min.interop import distributed
from clp_min.studies import exact_setups as xs
from clp_min.checkpoint import load_checkpoint, save_checkpoint
from clp_min.conditioning import ParamConditioned
from clp_min.model import GPT, GPTConfig
from clp_min.pretrain import model_config, pretrain
from clp_min.studies import setups as su
from clp_min.studies.reproduce import reproduce
from clp_min.config import TrainConfig
from clp_min.run_folder import load_trained
from clp_min.train import train
from theory.output_folder import held_by

ROOT = Path(__file__).resolve().parents[3]
TINY = dict(vocab=6, prompt_len=5, response_len=4, n_layer=1, n_head=2, n_embd=16, pretrain_steps=20,
            prompts_per_step=4, samples_per_prompt=2, beta=0.05, weights="dirichlet", streams="prompt",
            log_every=1, device="cpu")


def reference(path: Path, cfg: TrainConfig) -> str:
    """A briefly pretrained pi_ref for ``cfg`` (both runs start from it: with ``ref`` empty, pretraining
    in the run would also consume the global torch RNG before the policy's fresh parameters are drawn)."""
    torch.manual_seed(0)
    model = GPT(model_config(cfg.task(), cfg.n_layer, cfg.n_head, cfg.n_embd))
    pretrain(model, cfg.task(), 5, 16, 3e-3, torch.Generator().manual_seed(1))
    save_checkpoint(path, model, {})
    return str(path)


def cli_args(kw: dict) -> list:
    return [f"--{k}={v}" for k, v in kw.items()]


def drop_key_bias(policy, state: dict, C: int) -> dict:
    """``state`` without the key part of the attention bias. That part has gradient 0 in exact
    arithmetic (softmax is invariant to adding q . b_k to every score of a query), so Adam turns
    its rounding noise into steps of about lr whose sign depends on the summation order; the
    function does not change (checked separately)."""
    (i,) = [i for i, n in enumerate(policy.names) if n.endswith("attn.c_attn.bias")]
    qkv = state[f"thetas.{i}"]  # (m, 3C): query, key, value biases
    return {**state, f"thetas.{i}": torch.cat([qkv[:, :C], qkv[:, 2 * C:]], 1)}


def _conditioned(per_example: bool):
    """A ParamConditioned GPT, a batch of 4 and its weightings (``[m]`` for the batch, or ``[4, m]``)."""
    torch.manual_seed(0)
    policy = ParamConditioned.from_base(GPT(GPTConfig(vocab_size=8, block_size=8, n_layer=1, n_embd=16)), 2, "attn")
    idx = torch.randint(0, 8, (4, 6), generator=torch.Generator().manual_seed(1))  # (B, T)
    w = torch.tensor([[1.0, 0.0], [0.2, 0.8], [0.5, 0.5], [0.0, 1.0]]) if per_example else torch.tensor([0.3, 0.7])
    return policy, idx, w


def _loss(logits):
    return logits.logsumexp(-1).mean()  # any loss that is a mean over the batch


def _ddp_gradients(path: str) -> None:
    """One rank: the gradient of its half of the batch through DDP, for both paths; rank 0 saves the results."""
    ctx = distributed.setup("cpu")
    rows = slice(2 * ctx.rank, 2 * ctx.rank + 2)
    grads = {}
    for per_example in (False, True):
        policy, idx, w = _conditioned(per_example)
        ddp = distributed.wrap(policy, ctx)  # held: a wrapper collected before backward reduces nothing
        logits, _ = ddp(w[rows] if per_example else w, idx[rows])
        _loss(logits).backward()
        grads[per_example] = {n: p.grad for n, p in policy.named_parameters()}
    if ctx.writer:
        torch.save(grads, path)


def test_ddp_gradient_of_param_conditioned_is_the_full_batch_gradient(tmp_path):
    """Both paths of ParamConditioned (one w for the batch, one per example) under DDP with 2 ranks:
    the averaged gradient equals the one-process gradient of the whole batch (autograd) to 1e-6."""
    distributed.run_processes(2, _ddp_gradients, str(tmp_path / "g.pt"), start_method="fork")
    got = torch.load(tmp_path / "g.pt")
    for per_example in (False, True):
        policy, idx, w = _conditioned(per_example)
        _loss(policy(w, idx)[0]).backward()
        for n, p in policy.named_parameters():
            torch.testing.assert_close(got[per_example][n], p.grad, rtol=0, atol=1e-6, msg=f"{per_example} {n}")


def test_two_ranks_equal_one_rank_and_resume_checks_world_size(tmp_path, capsys):
    """2 ranks (DDP, gloo) for 2 steps, resumed with 2 ranks for 2 more, equal 1 rank for 4 steps
    at the same global batch: every parameter to 1e-6 (but see ``drop_key_bias``), the function too."""
    one, two = tmp_path / "one", tmp_path / "two"
    base = dict(conditioning="input+full", **TINY)
    ref = reference(tmp_path / "ref.safetensors", TrainConfig(**base))
    train(TrainConfig(out=str(one), ref=ref, steps=4, ckpt_every=4, **base), progress=False)
    distributed.run_processes(2, train, TrainConfig(out=str(two), ref=ref, steps=2, ckpt_every=2, **base),
                              False, start_method="fork")
    distributed.run_processes(2, train, TrainConfig(out=str(two), ref=ref, steps=4, ckpt_every=4, resume=True,
                                                    **base), False, start_method="fork")
    a, _, _ = load_trained(one)
    b, _, _ = load_trained(two)
    sa, sb = (drop_key_bias(a, p.state_dict(), TINY["n_embd"]) for p in (a, b))
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=1e-6, msg=k)
    idx = torch.randint(0, TINY["vocab"], (8, 6), generator=torch.Generator().manual_seed(0))
    w = torch.tensor([[1.0, 0.0], [0.3, 0.7]]).repeat(4, 1)
    torch.testing.assert_close(a(w, idx)[0], b(w, idx)[0], rtol=0, atol=1e-6)
    ha = json.loads((one / "log.json").read_text())["history"]
    hb = json.loads((two / "log.json").read_text())["history"]
    assert [h["step"] for h in ha] == [h["step"] for h in hb] == [1, 2, 3, 4]
    for x, y in zip(ha, hb):
        np.testing.assert_allclose([x["objective"], x["kl"], *x["rewards"]], [y["objective"], y["kl"], *y["rewards"]],
                                   atol=1e-6)
    # a different world size is refused, in the process and on the command line (before launching)
    with pytest.raises(ValueError, match="^resume: .* 2 processes, this run has 1"):
        train(TrainConfig(out=str(two), ref=ref, steps=6, resume=True, **base), progress=False)
    for nproc in ([], ["--nproc", "4"]):
        assert main(["train", "--out", str(two), "--ref", ref, "--steps", "6", "--resume", *cli_args(base),
                     *nproc]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "resume:" in err[0] and "2 processes" in err[0], err


def test_exact_estimator_two_ranks_equal_one_rank(tmp_path):
    """The exact gradient calls the policy once per depth before one backward; under DDP (2 ranks, gloo)
    that must still average the full batch's gradient: after 2 steps the statistics equal 1 rank's to 1e-6
    and every parameter to 1e-4. (Measured: 6e-6 at most, in a few entries of the attention weights whose
    gradient is rounding noise, which Adam rescales; one Adam step moves an entry by up to lr = 3e-3, so a
    rank stepping on its own half of the batch misses by far more.)"""
    base = dict(conditioning="full", estimator="exact", **{**TINY, "vocab": 4, "response_len": 3})
    ref = reference(tmp_path / "ref.safetensors", TrainConfig(**base))
    one, two = tmp_path / "one", tmp_path / "two"
    train(TrainConfig(out=str(one), ref=ref, steps=2, ckpt_every=2, **base), progress=False)
    distributed.run_processes(2, train, TrainConfig(out=str(two), ref=ref, steps=2, ckpt_every=2, **base),
                              False, start_method="fork")
    a, b = load_trained(one)[0], load_trained(two)[0]
    sa, sb = a.state_dict(), b.state_dict()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=1e-4, msg=k)
    ha, hb = (json.loads((d / "log.json").read_text())["history"] for d in (one, two))
    for x, y in zip(ha, hb, strict=True):
        np.testing.assert_allclose([x["objective"], x["kl"], *x["rewards"]], [y["objective"], y["kl"], *y["rewards"]],
                                   atol=1e-6)
    start = ParamConditioned.from_base(load_trained(one)[1], 2, "full")  # the policy both runs started from
    assert any((sa[k] - v).abs().max() > 1e-4 for k, v in start.state_dict().items() if k in sa)  # they moved


def _children(pid: int) -> list:
    """Every descendant of ``pid`` (Linux /proc)."""
    kids = [int(c) for t in Path(f"/proc/{pid}/task").iterdir() for c in (t / "children").read_text().split()]
    return kids + [g for c in kids for g in _children(c)]


def _rank(pid: int):
    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return next((int(e[5:]) for e in env if e.startswith(b"RANK=")), None)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the ranks' processes through /proc")
def test_cli_nproc_survives_a_killed_rank_and_resumes(tmp_path, capsys, monkeypatch):
    """``clp train --nproc 2`` goes through torch.distributed.run (python -m clp_cli in each worker). Rank 1
    killed with SIGKILL mid-run: the run ends within seconds, non-zero, with one line naming it and no
    traceback; ``--resume`` then completes it from the last checkpoint, with a history without gaps."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    monkeypatch.setenv("PYTHONPATH", env["PYTHONPATH"])
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    args = cli_args(TINY) + ["--pretrain_steps", "5", "--ckpt_every", "1"]
    proc = subprocess.Popen([sys.executable, "-m", "clp_cli", "train", "--nproc", "2", "--out", str(tmp_path),
                             *args, "--steps", "100000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, env=env)
    try:
        while not (tmp_path / "policy.safetensors").exists() and proc.poll() is None:  # a checkpoint is written
            time.sleep(0.05)
        (rank1,) = [p for p in _children(proc.pid) if _rank(p) == 1]
        os.kill(rank1, signal.SIGKILL)
        start = time.perf_counter()
        _, err = proc.communicate(timeout=60)  # bounded: torchrun stops rank 0 at once, not after a timeout
    finally:
        proc.kill()
    print(f"run ended {time.perf_counter() - start:.1f} s after the kill")
    assert proc.returncode not in (0, None)
    lines = err.strip().splitlines()  # progress bars (stderr), then the error
    assert [x for x in lines if x.startswith("clp:")] == lines[-1:] == [
        "clp: error: nproc: process 1 of 2 ended by SIGKILL; the others were stopped and the run holds its last "
        "checkpoint: continue it with --resume"] and "Traceback" not in err and "[rank" not in err
    step = load_checkpoint(tmp_path / "policy.safetensors").config["step"]
    assert main(["train", "--nproc", "2", "--out", str(tmp_path), "--resume", "--steps", str(step + 2)]) == 0
    policy, _, cfg = load_trained(tmp_path)
    assert cfg.steps == step + 2 and load_checkpoint(tmp_path / "policy.safetensors").config["step"] == step + 2
    log = json.loads((tmp_path / "log.json").read_text())
    assert [h["step"] for h in log["history"]] == list(range(1, step + 3))
    capsys.readouterr()
    # refusals before launching: one line, status 2
    for bad, field in ((["--streams", "shared"], "streams"), (["--prompts_per_step", "3"], "prompts_per_step"),
                       ([], "out")):  # the finished run: no --resume, no --overwrite
        out = tmp_path if field == "out" else tmp_path / "x"
        assert main(["train", "--nproc", "2", "--out", str(out), *args, *bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"clp: error: {field}:"), err


@pytest.mark.parametrize("kw, field", [(dict(device="tpu"), "device"), (dict(streams="rank"), "streams")])
def test_bad_device_or_streams_names_field(kw, field):
    with pytest.raises(ValueError, match=f"^{field}:"):
        TrainConfig(**kw).validate()


def test_reproduce_jobs_equals_sequential(tmp_path, monkeypatch):
    """``--jobs 2`` (a pool of spawned workers trains pi_ref, then every run, the exact-oracle sweep's too,
    and evaluates each setup) gives the same fronts as ``--jobs 1``. (The workers are spawned, so they do
    not see this test's monkeypatches: the scales travel as arguments, and every held-out prompt is used.)"""
    tiny = su.Scale(seeds=(0,), pretrain_steps=5, steps=2, prompts_per_step=2, samples_per_prompt=2,
                    eval_prompts=2, eval_samples=2, exact_prompts=2, grid=2)
    tiny_exact = xs.ExactScale(seeds=(0,), pretrain_steps=5, steps=2, rloo_steps=2, prompts_per_step=2, lr=3e-3, sweep_steps=2,
                               sweep_prompts_per_step=2, sweep_expert_steps=2, strengths=(0.0, 1.0), grid=2)
    monkeypatch.setitem(su.SCALES, "quick", tiny)
    monkeypatch.setitem(xs.EXACT_SCALES, "quick", tiny_exact)
    fronts, sweeps = [], []
    for jobs in (1, 2):
        if jobs == 2:  # the pool's spawned workers train everything; here nothing may train
            def refuse(*args, **kwargs):
                raise AssertionError("trained in the parent process, not in the pool")
            monkeypatch.setattr(su, "train", refuse)
            monkeypatch.setattr(su, "pretrain", refuse)
        reproduce(tmp_path / f"jobs{jobs}", quick=True, setups=("kl", "sweep"), with_claims=False, jobs=jobs)
        fronts.append(json.loads((tmp_path / f"jobs{jobs}" / "kl" / "seed0" / "front.json").read_text()))
        sweeps.append(json.loads((tmp_path / f"jobs{jobs}" / "sweep" / "seed0" / "sweep.json").read_text()))
    assert fronts[0] == fronts[1]
    assert sweeps[0] == sweeps[1]
    report = (tmp_path / "jobs2" / "report.md").read_text()
    assert "training and evaluation (2 jobs)" in report


def test_cli_refuses_bad_nproc_and_jobs(capsys):
    for argv, field in ((["train", "--nproc", "0"], "nproc"), (["reproduce", "--jobs", "0"], "jobs")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"clp: error: {field}:"), err


def test_reuse_fronts_trains_only_what_it_does_not_reuse(tmp_path, monkeypatch):
    """``--reuse-fronts --jobs 2`` plans no training for a setup whose every front.json is reused at this scale,
    and plans it again when the scale changed."""
    tiny = su.Scale(seeds=(0,), pretrain_steps=5, steps=2, prompts_per_step=2, samples_per_prompt=2,
                    eval_prompts=2, eval_samples=2, exact_prompts=2, grid=2)
    tiny_exact = xs.ExactScale(seeds=(0,), pretrain_steps=5, steps=2, rloo_steps=2, prompts_per_step=2, lr=3e-3, sweep_steps=2,
                               sweep_prompts_per_step=2, sweep_expert_steps=2, strengths=(0.0,), grid=2)
    monkeypatch.setitem(su.SCALES, "quick", tiny)
    monkeypatch.setitem(xs.EXACT_SCALES, "quick", tiny_exact)
    out = tmp_path / "rep"
    reproduce(out, quick=True, setups=("kl",), with_claims=False)  # kl's front.json at this scale
    planned = []

    class Planned(Exception):
        pass

    def record(tasks, jobs, progress=False):
        assert held_by(out) == os.getpid()  # the parent holds OUT for the whole reproduce; workers never take it
        planned.append(sorted(t.key.removeprefix("train ") for t in tasks if t.key.startswith("train ")))
        raise Planned

    from clp_min.studies import reproduce as rp
    monkeypatch.setattr(rp, "run_graph", record)
    with pytest.raises(Planned):
        reproduce(out, quick=True, setups=("kl", "sweep"), with_claims=False, reuse_fronts=True, jobs=2)
    assert planned[0] and all("sweep" in Path(o).parts for o in planned[0])  # kl reused: nothing of it
    monkeypatch.setitem(su.SCALES, "quick", replace(tiny, steps=3))
    with pytest.raises(Planned):
        reproduce(out, quick=True, setups=("kl", "sweep"), with_claims=False, reuse_fronts=True, jobs=2)
    assert any("small" in Path(o).parts for o in planned[1])  # another scale: kl is trained again
    assert held_by(out) is None


def test_reproduce_refuses_an_out_holding_results_unless_resume_or_overwrite(tmp_path, capsys):
    out = tmp_path / "rep"
    (out / "kl" / "seed0").mkdir(parents=True)
    (out / "report.md").write_text("the old report")
    (out / "kl" / "seed0" / "front.json").write_text("{}")
    argv = ["reproduce", "--out", str(out), "--setups", "kl", "--no-claims", "--no-mechanisms", "--quick"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"clp: error: out: {out} already holds kl, report.md; continue with --resume or replace them "
                   f"with --overwrite (or choose another folder)"]
    assert (out / "report.md").read_text() == "the old report" and sorted(p.name for p in out.iterdir()) == \
        ["kl", "report.md"]
    assert main([*argv, "--resume", "--overwrite"]) == 2
    assert capsys.readouterr().err.startswith("clp: error: overwrite:")


def test_run_graph_runs_a_task_after_what_it_needs(tmp_path):
    """A task starts only once its needs have finished, even when it is the costliest ready one (a
    scheduler that ignored needs would start the reader first and fail); bad graphs are refused."""
    from clp_min.studies.jobs import Task, run_graph

    f = tmp_path / "a.txt"
    tasks = [Task("write", Path.write_text, (f, "from write"), cost=0.0),
             Task("read", Path.read_text, (f,), frozenset({"write"}), cost=10.0),
             Task("other", Path.exists, (tmp_path,), cost=5.0)]
    assert run_graph(tasks, 2) == {"write": len("from write"), "read": "from write", "other": True}
    with pytest.raises(ValueError, match="jobs: task 'read' needs unknown"):
        run_graph(tasks[1:], 2)
    with pytest.raises(ValueError, match="jobs: tasks wait on each other"):
        run_graph([Task("a", Path.exists, (f,), frozenset({"b"})), Task("b", Path.exists, (f,), frozenset({"a"}))], 2)


def test_reproduce_graph_orders_evaluations_after_their_runs(tmp_path):
    """The graph of ``reproduce --jobs N``: each evaluation needs its pi_ref and every run its setup reads, the
    study's parts need their own runs and their setup's evaluation; with a setup's fronts reused, its runs and
    evaluation leave the graph while the study's part keeps its runs and their pi_ref (no unknown needs)."""
    from clp_min.studies import mechanisms_study as ms
    from clp_min.studies.reproduce import _reproduce_tasks

    tiny = su.Scale(seeds=(0, 1), pretrain_steps=5, steps=2, prompts_per_step=2, samples_per_prompt=2,
                    eval_prompts=2, eval_samples=2, exact_prompts=2, grid=2)
    tiny_exact = xs.ExactScale(seeds=(0, 1), pretrain_steps=5, steps=2, rloo_steps=2, prompts_per_step=2, lr=3e-3, sweep_steps=2,
                               sweep_prompts_per_step=2, sweep_expert_steps=2, strengths=(0.0,), grid=2)
    runs = tmp_path / "runs"
    tasks = {t.key: t for t in _reproduce_tasks(("enum", "enum_exact"), tiny, tiny_exact, tmp_path, runs, True,
                                                False, False, True)}
    for seed in (0, 1):
        ev = tasks[f"eval enum_exact {seed}"]
        want = {f"train {c.out}" for c in xs.enum_exact_configs(tiny_exact, seed, runs).values()}
        assert want <= ev.needs and f"ref {xs.reference_args(tiny_exact, seed, runs)[-1]}" in ev.needs
        part = tasks[f"mechanisms enum_exact {seed}"]
        assert f"eval enum_exact {seed}" in part.needs
        assert {f"train {c.out}" for c in ms.exact_mechanism_configs(tiny_exact, seed, runs).values()} <= part.needs
        assert f"eval enum {seed}" in tasks[f"mechanisms w_dist {seed}"].needs
    for t in tasks.values():  # every need is a task; trainings wait for their pi_ref
        assert t.needs <= tasks.keys(), t.key
        if t.key.startswith("train "):
            assert len(t.needs) == 1 and next(iter(t.needs)).startswith("ref ")
    for seed in (0, 1):  # enum_exact's fronts saved at this scale: reused
        path = tmp_path / "enum_exact" / f"seed{seed}" / "front.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"scale": su._jsonable(asdict(tiny_exact))}))
    kept = {t.key: t for t in _reproduce_tasks(("enum", "enum_exact"), tiny, tiny_exact, tmp_path, runs, True,
                                               False, True, True)}
    assert not any(k.startswith("eval enum_exact") for k in kept)
    clp_full = xs.enum_exact_configs(tiny_exact, 0, runs)["CLP full"].out
    assert f"train {clp_full}" not in kept
    part = kept["mechanisms enum_exact 0"]
    assert "eval enum_exact 0" not in part.needs and part.needs <= kept.keys()
    assert f"ref {xs.reference_args(tiny_exact, 0, runs)[-1]}" in kept
