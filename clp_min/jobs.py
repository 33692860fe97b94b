"""``clp reproduce --jobs N``: the setups' independent trainings in N worker processes.

A reproduce trains, per seed, one pi_ref per task and then runs that need only
that pi_ref (single-objective experts, CLPs, input conditioning; clp_min.setups).
So the work is two maps over a pool: every pi_ref first, then every run. Each
lands in the folder where ``setups.build_methods`` looks for it, and the
sequential evaluation afterwards finds it cached. Every training seeds itself
from its own configuration and the workers use one thread each, as ``--jobs 1``
does, so the results are the same (tests/test_clp_min_distributed.py).
Runs already finished in their folder are not retrained.
"""
from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from multiprocessing import get_context

import torch
from tqdm import tqdm

from clp_min import setups as su


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


def train_all(names, scale: su.Scale, runs, jobs: int, progress: bool = False, exact_scale=None) -> None:
    """Pretrain every pi_ref, then train every run of ``names`` in ``jobs`` processes: the setups of
    clp_min.setups at ``scale``, and "enum_exact" and "sweep" (clp_min.exact_setups) at ``exact_scale``."""
    from clp_min import exact_setups as xs

    exact = [n for n in names if n in xs.SETUP_NAMES]
    refs, cfgs = planned([n for n in names if n not in exact], scale, runs)
    if exact:
        if exact_scale is None:
            raise ValueError(f"setups: {', '.join(exact)} need the exact-oracle scale (exact_scale)")
        more_refs, more_cfgs = xs.planned(exact, exact_scale, runs)
        refs.update(more_refs)
        cfgs.update(more_cfgs)
    run_pool(refs, cfgs, jobs, progress)


def run_pool(refs: dict, cfgs: dict, jobs: int, progress: bool = False) -> None:
    """Every ``reference_model`` args in ``refs`` first, then every TrainConfig in ``cfgs``, in ``jobs`` processes."""
    bar = tqdm(total=len(refs) + len(cfgs), desc=f"train ({jobs} jobs)", disable=not progress)
    # spawn, not fork: a forked CUDA context is unusable, and workers start from a clean interpreter
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn"), initializer=_one_thread) as pool:
        longest_first = sorted(cfgs.values(), key=lambda c: (-c.steps, c.conditioning == "none"))  # balances the pool
        for fn, items in ((_reference, refs.values()), (_train, longest_first)):  # pi_ref first
            for future in as_completed([pool.submit(fn, item) for item in items]):
                future.result()  # re-raises a worker's error here
                bar.update()
    bar.close()
