"""``clp reproduce --jobs N``: the setups' independent work in N worker processes.

A reproduce trains, per seed, one pi_ref per task and then runs that need only
that pi_ref (single-objective experts, CLPs, input conditioning; clp_min.studies.setups),
evaluates each setup at each seed from its runs, and runs each part of the mechanisms
study beside its setup's result. ``run_graph`` runs such work as a task graph: at
most N tasks at a time, each once every task it needs has finished, the costliest
ready one first (pi_refs, then the longest trainings; the claims, costed as a
1000-step run, between them). An evaluation (cost 0) becomes ready once its runs
are trained and starts when no costlier task is ready: in a full reproduce, after
the last training has started (clp_min.studies.reproduce builds the graph). ``run_pool`` is the graph of
trainings alone (every pi_ref, then its runs), used by the study on its own. Each
run lands in the folder where ``setups.build_methods`` looks for it; every training
seeds itself from its own configuration and the workers use one thread each, as
``--jobs 1`` does, so the results are the same (tests/clp_min/interop/test_distributed.py).
Runs already finished in their folder are not retrained.
"""
from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from typing import Callable

import torch
from tqdm import tqdm

from clp_min.studies import setups as su


def planned(names, scale: su.Scale, runs) -> tuple:
    """``(pi_ref jobs {path: reference_model args}, run jobs {out: TrainConfig})`` of a reproduce.

    Setups on one task share pi_ref and experts; a folder planned twice must get one configuration.
    """
    refs, cfgs = {}, {}
    for name in names:
        for seed in scale.seeds:
            args = su.reference_args(name, scale, seed, runs)
            refs[str(args[-1])] = args
            for cfg in su.run_configs(name, scale, seed, runs).values():
                if cfg.out in cfgs and asdict(cfgs[cfg.out]) != asdict(cfg):
                    raise ValueError(f"setups: two configurations for the run folder {cfg.out}")
                cfgs[cfg.out] = cfg
    return refs, cfgs


def _reference(args) -> None:
    su.reference_model(*args)


def _train(cfg) -> None:
    su.trained(cfg, progress=False)


def _one_thread() -> None:
    torch.set_num_threads(1)


def planned_all(names, scale: su.Scale, runs, exact_scale=None) -> tuple:
    """``planned`` of the setups of clp_min.studies.setups in ``names`` at ``scale``, and of "enum_exact" and
    "sweep" (clp_min.studies.exact_setups) at ``exact_scale``, merged."""
    from clp_min.studies import exact_setups as xs

    exact = [n for n in names if n in xs.SETUP_NAMES]
    refs, cfgs = planned([n for n in names if n not in exact], scale, runs)
    if exact:
        if exact_scale is None:
            raise ValueError(f"setups: {', '.join(exact)} need the exact-oracle scale (exact_scale)")
        more_refs, more_cfgs = xs.planned(exact, exact_scale, runs)
        refs.update(more_refs)
        cfgs.update(more_cfgs)
    return refs, cfgs


def train_all(names, scale: su.Scale, runs, jobs: int, progress: bool = False, exact_scale=None) -> None:
    """Pretrain every pi_ref, then train every run of ``names`` (``planned_all``) in ``jobs`` processes."""
    run_pool(*planned_all(names, scale, runs, exact_scale), jobs, progress)


def run_pool(refs: dict, cfgs: dict, jobs: int, progress: bool = False) -> None:
    """Every ``reference_model`` args in ``refs``, and every TrainConfig in ``cfgs`` once its pi_ref is
    there, longest first, in ``jobs`` processes (``run_graph`` of ``training_tasks``)."""
    run_graph(training_tasks(refs, cfgs), jobs, progress, desc="train")


@dataclass(frozen=True)
class Task:
    """One job of ``run_graph``: ``fn(*args)`` in a worker once every task in ``needs`` has finished."""
    key: str
    fn: Callable  # a module-level function (workers are spawned: it is pickled by name)
    args: tuple = ()
    needs: frozenset = field(default_factory=frozenset)
    cost: float = 0.0  # among ready tasks the costliest starts first (longest first balances the pool)


def run_graph(tasks: list, jobs: int, progress: bool = False, desc: str = "reproduce") -> dict:
    """Run ``tasks`` in ``jobs`` processes, each once all it needs is done; returns ``{key: result}``.

    At most ``jobs`` tasks run at a time; a free worker takes the costliest ready task (ties by key), so a
    cheap task whose needs finish early waits for the costlier ready ones. A worker's error is raised here.
    """
    by_key = {t.key: t for t in tasks}
    if len(by_key) != len(tasks):
        raise ValueError("jobs: two tasks share a key")
    for t in tasks:
        unknown = t.needs - by_key.keys()
        if unknown:
            raise ValueError(f"jobs: task {t.key!r} needs unknown tasks {sorted(unknown)}")
    done, pending, running = {}, set(by_key), {}
    bar = tqdm(total=len(tasks), desc=f"{desc} ({jobs} jobs)", disable=not progress)
    # spawn, not fork: a forked CUDA context is unusable, and workers start from a clean interpreter
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn"), initializer=_one_thread) as pool:
        while pending or running:
            ready = sorted((by_key[k] for k in pending if by_key[k].needs <= done.keys()),
                           key=lambda t: (-t.cost, t.key))
            for t in ready[:jobs - len(running)]:
                pending.remove(t.key)
                running[pool.submit(t.fn, *t.args)] = t.key
            if not running:
                raise ValueError(f"jobs: tasks wait on each other: {sorted(pending)}")
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                done[running.pop(future)] = future.result()  # re-raises a worker's error here
                bar.update()
    bar.close()
    return done


def training_tasks(refs: dict, cfgs: dict) -> list:
    """``run_graph`` tasks of a ``planned`` pair: each pi_ref, then each run once its pi_ref is there."""
    tasks = [Task(f"ref {path}", _reference, (args,), cost=float("inf")) for path, args in refs.items()]
    for out, cfg in cfgs.items():
        needs = frozenset({f"ref {cfg.ref}"}) if cfg.ref in refs else frozenset()
        tasks.append(Task(f"train {out}", _train, (cfg,), needs, cost=cfg.steps + 0.5 * (cfg.conditioning != "none")))
    return tasks


def map_seeds(run_seed, seeds, scale, root, runs, jobs: int = 1) -> list:
    """``[run_seed(seed, scale, root, runs) for seed in seeds]``, in ``jobs`` worker processes (one seed each,
    one torch thread each) when ``jobs > 1``; each seed seeds itself, so the results equal ``jobs = 1``'s."""
    from concurrent.futures import ProcessPoolExecutor

    import torch

    if jobs <= 1:
        return [run_seed(seed, scale, root, runs) for seed in seeds]
    n = len(seeds)
    with ProcessPoolExecutor(jobs, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        return list(pool.map(run_seed, seeds, [scale] * n, [root] * n, [runs] * n))
