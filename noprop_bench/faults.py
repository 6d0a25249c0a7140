"""Fault injection for the tests: a process kills itself (SIGKILL, no clean-up at all) at a named point,
so a test can show that a kill at that moment loses nothing. Never set outside tests.

    NOPROP_BENCH_FAULT=POINT[:N]   the N-th time (default 1) this process reaches POINT, it is killed
    NOPROP_BENCH_FAULT_DIR=DIR     first write DIR/POINT-N-PID; and do nothing if DIR already holds a
                                   POINT-N-* file (a retried process, e.g. a Ray retry, then goes on).
                                   The file is how a test knows the fault really happened.

Points (each outside any training loop): `cell-start` (a cell's model is built, nothing of it written),
`cell-point` (a cell's evaluation point is done: its rows are about to be written), `between-cells` (a
cell is in the ledger, the next has not started), `report` (the report's files are being written),
`worker-interval-RANK` (block-parallel worker RANK starts an interval of training), `gpucheck-STEP` (the
GPU check's process for STEP has started).
"""
from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path

ENV, DIR_ENV = "NOPROP_BENCH_FAULT", "NOPROP_BENCH_FAULT_DIR"
_reached: Counter = Counter()


def point(name: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    target, _, nth = spec.partition(":")
    if target != name:
        return
    _reached[name] += 1
    if _reached[name] != int(nth or 1):
        return
    folder = os.environ.get(DIR_ENV)
    if folder:
        folder = Path(folder)
        if any(folder.glob(f"{name}-{_reached[name]}-*")):
            return
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}-{_reached[name]}-{os.getpid()}").touch()
    os.kill(os.getpid(), signal.SIGKILL)
