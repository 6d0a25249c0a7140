"""Training-time clock and peak-memory probe.

The clock synchronises CUDA at start and stop only (never inside the loop), so it measures the work
queued between the two, not the launch time. Evaluation is never inside it.
"""
from __future__ import annotations

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
    """The CUDA allocator's peak over a region (`max_memory_allocated` after `reset_peak_memory_stats`).

    On every device the runner also records the tensor peak of measure/memory.py; on CPU that is the only
    measure (the process's RSS holds the data set and the allocator's history, so it cannot show Table 2).
    """

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.kind = "cuda_max_allocated" if self.device.type == "cuda" else None

    def reset(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_bytes(self) -> int | None:
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        return None
