"""Data-parallel training on ``torch.distributed``: process group, devices, per-prompt streams, DDP.

Run under ``torchrun`` (it sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``); without those variables everything is one process and no group is made.
Backend: ``nccl`` when the device is CUDA, else ``gloo``.

Data split. A step's global batch of P prompts (``prompts_per_step``) is cut into
``world_size`` equal, contiguous slices; rank r takes the global prompt indices
``g = r P / W .. (r + 1) P / W - 1``. Each rank's loss is the mean over its own
``P n / W`` samples and ``DistributedDataParallel`` averages the gradients over the
W ranks, so the gradient is the mean over all ``P n`` samples: the loss is
normalised by the global batch.

Streams (``streams="prompt"``, needed for W > 1). Prompt g of step s draws from its
own streams, derived from ``(seed, s, g)`` alone::

    ss = numpy.random.SeedSequence((seed, s, g))
    numpy.random.Generator(PCG64(ss.spawn(2)[0]))  -> its weighting w_g
    torch.Generator().manual_seed(ss.spawn(2)[1] as 63 bits)  -> its prompt tokens, then its n responses

so a rank's stream is a function of (seed, rank) through the indices it owns, and
any split of the global batch across ranks draws exactly the same prompts,
weightings and responses; a W-rank run equals a 1-rank run of the same global batch
up to floating-point summation order (tests/clp_min/interop/test_distributed.py).
Nothing is carried from step to step, so resuming needs no stream state.
The default ``streams="shared"`` (one process only) keeps the original streams:
one ``torch.Generator`` for prompts and samples and one numpy Generator for weightings.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from inspect import signature

import numpy as np
import torch
import torch.distributed as dist

DEVICES = ("auto", "cpu", "cuda")
STREAMS = ("shared", "prompt")


@dataclass(frozen=True)
class Context:
    rank: int  # this process, 0 .. world_size - 1
    world_size: int  # W processes training together
    device: torch.device  # where the policy, pi_ref and the batch live

    @property
    def writer(self) -> bool:
        """Rank 0 alone writes logs and checkpoints and shows a progress bar."""
        return self.rank == 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto``: CUDA when available, else CPU; ``cuda`` is refused on a machine without one."""
    if name not in DEVICES:
        raise ValueError(f"device: unknown {name!r}; choose from {DEVICES}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: cuda requested but torch.cuda.is_available() is False")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def setup(device: str) -> Context:
    """The process group of this run (made here once under torchrun) and this rank's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    dev = resolve_device(device, int(os.environ.get("LOCAL_RANK", "0")))
    if world_size > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Context(rank, world_size, dev)


def teardown() -> bool:
    """Destroy the process group (if any); returns whether this process was rank 0 (the writer)."""
    if not dist.is_initialized():
        return True
    writer = dist.get_rank() == 0
    dist.destroy_process_group()
    return writer


def barrier(ctx: Context) -> None:
    if ctx.world_size > 1:
        dist.barrier()


def local_prompts(P: int, rank: int, world_size: int) -> range:
    """The global prompt indices of ``rank`` (a contiguous slice of ``range(P)``; W divides P)."""
    if P % world_size:
        raise ValueError(f"prompts_per_step: {P} is not divisible by the number of processes {world_size}")
    k = P // world_size
    return range(rank * k, (rank + 1) * k)


def prompt_streams(seed: int, step: int, indices) -> tuple:
    """``(numpy Generators, torch Generators)``, one each per global prompt index (module doc)."""
    rngs, gens = [], []
    for g in indices:
        w_seq, tok_seq = np.random.SeedSequence((seed, step, g)).spawn(2)
        rngs.append(np.random.Generator(np.random.PCG64(w_seq)))
        gens.append(torch.Generator().manual_seed(int(tok_seq.generate_state(1, np.uint64)[0] >> np.uint64(1))))
    return rngs, gens


def wrap(policy: torch.nn.Module, ctx: Context) -> torch.nn.Module:
    """The policy for the training step: ``DistributedDataParallel`` when W > 1 (averages gradients)."""
    if ctx.world_size == 1:
        return policy
    from torch.nn.parallel import DistributedDataParallel

    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    # no buffer sync at each forward: the only buffer (the causal mask) is constant, and ranks
    # may run different numbers of decoding steps (each stops when its own batch has ended)
    name = "forward_sync_buffers"  # older torch: the same, named broadcast_buffers
    if name not in signature(DistributedDataParallel).parameters:
        name = "broadcast_buffers"
    return DistributedDataParallel(policy, device_ids=ids, **{name: False})


def mean_over_ranks(stats: dict, ctx: Context) -> dict:
    """Batch statistics averaged over the ranks (equal local batches: the global means)."""
    if ctx.world_size == 1:
        return stats
    keys = sorted(stats)
    flat = torch.tensor([v for k in keys for v in np.atleast_1d(stats[k])], dtype=torch.float64,
                        device=ctx.device)  # nccl reduces CUDA tensors only
    dist.all_reduce(flat)
    flat = (flat / ctx.world_size).tolist()
    out = {}
    for k in keys:
        n = np.size(stats[k])
        out[k] = flat[:n] if isinstance(stats[k], list) else flat[0]
        flat = flat[n:]
    return out


# what a collective raises when another process of the group is gone (gloo, NCCL)
LOST_PEER = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "NCCL communicator was aborted",
             "remote process exited")


def lost_peer(err: BaseException) -> bool:
    """Whether ``err`` is a collective failing because another process of the run ended (``launch``
    names that one, so this process can exit without a traceback of its own)."""
    return dist.is_initialized() and dist.get_world_size() > 1 and any(s in str(err) for s in LOST_PEER)


def launch(nproc: int, argv: list) -> int:
    """Run ``python -m clp_cli <argv>`` in ``nproc`` processes on this machine through
    ``torch.distributed.run`` (as ``torchrun --standalone``); returns the workers' exit status.

    A worker that fails with an error prints its own line; one that ends by a signal (killed,
    out of memory) is named here in one line. torchrun then stops the others (within about a
    second) and its own log is kept below CRITICAL, so no failure table or traceback follows.
    """
    import logging
    import sys

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    log = logging.getLogger("torch.distributed")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        run(get_args_parser().parse_args(["--standalone", f"--nproc_per_node={nproc}", "-m", "clp_cli", *argv]))
    except ChildFailedError as err:
        failures = list(err.failures.values())
        # the first cause: a signal from outside (torchrun stops the others with SIGTERM), else any signal
        signalled = sorted((f for f in failures if f.exitcode < 0), key=lambda f: (f.exitcode == -15, f.local_rank))
        if signalled:
            f = signalled[0]
            print(f"clp: error: nproc: process {f.local_rank} of {nproc} ended by {f.signal_name()}; the others "
                  f"were stopped and the run holds its last checkpoint: continue it with --resume", file=sys.stderr)
        return max(max(f.exitcode for f in failures), 1)  # a signal's exitcode is negative
    finally:
        log.setLevel(level)
    return 0


def _process(rank: int, world_size: int, port: int, fn, args) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    try:
        fn(*args)
    finally:
        teardown()


def run_processes(nproc: int, fn, *args, start_method: str = "spawn") -> None:
    """Call ``fn(*args)`` in ``nproc`` local processes that form one process group, as
    ``torchrun --standalone`` would (for tests and bench/; ``fn`` must be importable)."""
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.start_processes(_process, args=(nproc, port, fn, args), nprocs=nproc,
                                          start_method=start_method)
