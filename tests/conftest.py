"""Test-wide settings: one torch thread (a second one gains little on 2 cores and
collapses when the other core is busy), and a bounded hypothesis profile."""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

from hypothesis import settings  # noqa: E402

settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True)
settings.load_profile("ci")

try:
    import torch  # noqa: E402

    torch.set_num_threads(1)
except ImportError:  # torch is a dependency; this only keeps theory tests importable alone
    pass
