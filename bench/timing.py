"""Training-time clock and peak-memory probe.

The clock synchronises CUDA at start and stop only (never inside the loop), so it measures the work
queued between the two, not the launch time. Evaluation is never inside it.
"""
from __future__ import annotations

import resource
import sys
import time

import torch


class Clock:
    """with clock: ...  accumulates synchronised wall time in `.last` and `.total` (seconds)."""

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.last = 0.0
        self.total = 0.0

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __enter__(self):
        self._sync()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self._sync()
        self.last = time.perf_counter() - self._start
        self.total += self.last


class PeakMemory:
    """Peak memory over a region: CUDA allocator peak on GPU, process peak RSS on CPU.

    `kind` says which, so the two are never compared by accident. RSS cannot be reset, so on CPU the
    value is the peak of the whole process so far (data set included).
    """

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.kind = "cuda_max_allocated" if self.device.type == "cuda" else "cpu_peak_rss"

    def reset(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_bytes(self) -> int:
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(rss if sys.platform == "darwin" else rss * 1024)  # Linux reports KiB
