"""karyosearch: embedding search and classification of human chromosome images."""

import os

# torch and faiss-cpu each ship their own OpenMP runtime. libgomp's default makes an idle
# worker spin before it sleeps, so the two runtimes, or one beside another busy process,
# burn the cores each other needs: beside a busy process and two test suites a single query
# took 362 ms (p99 5.5 s) against 99 ms (p99 0.19 s) with PASSIVE (benchmarks/bench_threads.py,
# README "Speed"). The policy is read when a runtime starts, so it is set here, before torch
# or faiss is imported; an explicit OMP_WAIT_POLICY in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .labels import CLASS_NAMES  # noqa: E402  (after the OpenMP policy)
from .version import __version__  # noqa: E402

__all__ = ["CLASS_NAMES", "__version__", "load_encoder"]


def load_encoder(path, device="cpu"):
    """Rebuild an encoder from a checkpoint alone (see karyosearch.model.checkpoint)."""
    from .model.checkpoint import load_encoder as _load

    return _load(path, device)
