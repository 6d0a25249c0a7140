"""The host allocator: keep freed memory for reuse instead of handing it back to the kernel.

A CPU training step frees and re-allocates the same activation buffers every step (megabytes each).
glibc serves a block that large from a fresh mmap and unmaps it on free, unless its *dynamic* mmap
threshold has been raised by an earlier large free, so whether every step pays page faults and kernel
time for tens of MB of new pages depends on what the process happened to do before: a run that counted
FLOPs first was fast, a block-parallel worker that had not was slow (results/benchmarks/step-profile).
Fixing both thresholds makes every process start in the fast state. Only where memory comes from
changes, never what is computed; the tensor-memory columns (measure/memory.py) count tensors and are
unaffected, while a CPU process keeps its peak resident set until it exits.

Every process of the harness calls `keep_freed_memory()` first: the command line, a --jobs or Ray task, a
block-parallel worker. NOPROP_BENCH_MALLOC=default leaves the allocator as the C library set it (for an
A/B); metadata.json records which was used. Other C libraries than glibc are left alone.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

ENV = "NOPROP_BENCH_MALLOC"
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
THRESHOLD = 1 << 30  # blocks under 1 GiB come from the heap, and up to 1 GiB of free heap is kept

_state: str | None = None


def keep_freed_memory() -> str:
    """Set glibc's mmap and trim thresholds (once per process); returns what the allocator now does."""
    global _state
    if _state is None:
        _state = _configure()
    return _state


def _configure() -> str:
    if os.environ.get(ENV, "").lower() == "default":
        return f"the C library's default ({ENV}=default)"
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return "the C library's default (no glibc mallopt)"
    if mallopt(M_MMAP_THRESHOLD, THRESHOLD) != 1 or mallopt(M_TRIM_THRESHOLD, THRESHOLD) != 1:
        return "the C library's default (mallopt refused the thresholds)"
    return f"glibc with fixed mmap and trim thresholds of {THRESHOLD >> 20} MiB (freed memory is reused)"


def state() -> str:
    """What keep_freed_memory() did in this process (or that it has not been called)."""
    return _state or "the C library's default (not configured in this process)"
