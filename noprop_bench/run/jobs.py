"""Cells in other processes: the body of one cell as a task (shared by --jobs and the Ray executor), and
--jobs K, which runs K cells at once on this machine.

A task loads its cell's data set, runs the cell with the same `run_cell` as the local executor and
returns its rows; the parent writes them into the same CSV, ledger and metadata when the cell is done,
so resuming works as for a local run. With --jobs K the machine's torch threads are shared out (each
job gets threads // K) and every row says `co_running = K`. Co-running cells slow each other and share
memory bandwidth, so --jobs is refused for suites whose times or memory are the result (suite key
`timed = true`); their accuracies are the same as with one job at the same thread count.

A worker exits when the process that started it is gone (killed by a signal, which runs no clean-up), so
an interrupted sweep never leaves cells computing on the machine unseen.
"""
from __future__ import annotations

import dataclasses
import multiprocessing
import os
import platform
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool

import torch
from tqdm.auto import tqdm

from noprop_bench.data import DataError
from noprop_bench.run.allocator import keep_freed_memory
from noprop_bench.run.plan import Cell, make_plan
from noprop_bench.run.precision import determinism
from noprop_bench.run.results import ResultWriter
from noprop_bench.run.runner import CellOutcome, RunOptions, load_cell_data, resolve_device, run_cell


class _NoBar:
    def update(self, n):
        pass

    def set_description(self, text):
        pass


PARENT_POLL_S = 1.0


def exit_with_parent(parent: int) -> None:
    """A worker's initialiser: a daemon thread ends the worker once `parent` is no longer its parent
    (the parent died and the worker was handed to another process)."""
    def watch():
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os._exit(1)
    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def task_options(options: RunOptions) -> dict:
    """The RunOptions a task needs, as plain values (a task builds its own device and data)."""
    return {k: v for k, v in dataclasses.asdict(options).items() if k not in ("device", "data_dir", "progress")}


def cell_task(cell: Cell, device_name: str, data_dir: str | None, threads: int, options: dict) -> dict:
    """Everything a worker process does for one cell. Returns its rows, or an error naming the host."""
    keep_freed_memory()
    host = platform.node()
    if threads:
        torch.set_num_threads(threads)
    try:
        device = resolve_device(device_name)
        data = load_cell_data(cell, device, data_dir)
    except (DataError, ValueError) as e:
        return {"rows": [], "diagnostics": [], "error": f"{cell.label()} on node {host}: {e}", "host": host}
    run = RunOptions(device, data_dir, False, **options)
    with determinism(run.deterministic, device):
        outcome = run_cell(make_plan(cell, len(data.train), len(data.test)), data, run, None, _NoBar())
    return {"rows": outcome.rows, "diagnostics": outcome.diagnostics, "error": outcome.error, "host": host}


def run_cells_jobs(cells: list[Cell], options: RunOptions, writer: ResultWriter | None, jobs: int) -> list[CellOutcome]:
    """K cells at once, each in a worker process of its own (spawned: nothing of this process is shared)."""
    threads = max(1, torch.get_num_threads() // jobs)
    shared = {**task_options(options), "co_running": jobs}
    outcomes = []
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=exit_with_parent,
                             initargs=(os.getpid(),)) as pool, \
            tqdm(total=len(cells), unit="cell", disable=None if options.progress is None else not options.progress,
                 dynamic_ncols=True) as bar:
        futures = {pool.submit(cell_task, cell, str(options.device), options.data_dir, threads, shared): cell
                   for cell in cells}
        for future in as_completed(futures):
            cell, outcome = futures[future], CellOutcome(futures[future])
            try:
                result = future.result()
                outcome.rows, outcome.diagnostics, outcome.error = result["rows"], result["diagnostics"], result["error"]
            except BrokenProcessPool as e:
                outcome.error = f"{cell.label()}: its worker process died ({e})"
            if writer is not None:
                if outcome.rows:
                    writer.append(outcome.rows, outcome.diagnostics)
                writer.finish_cell(cell, outcome.error)
            outcomes.append(outcome)
            bar.update(1)
    return outcomes
