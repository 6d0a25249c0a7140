"""Run suite cells as Ray tasks (`run_bench.py --executor ray`), one cell per task.

Each task asks for one GPU (on a cluster that has GPUs) or `cpus_per_task` CPUs, loads its data set
from the node's own data directory, runs the cell with the same `run_cell` as the local executor and
returns its rows. The driver writes them into the same CSV, ledger and metadata as a local run, when
the cell is done, so resuming works exactly as for a local run.

Failures: a task whose worker dies (node lost, process killed, out of memory) is retried by Ray
(`max_retries`); a cell that raises, or whose retries are used up, is recorded as failed with its
error and the sweep goes on. A node without the data set fails that cell with the node's name.

The nodes need the project installed (`pip install -e .[ray]` in the environment the cluster runs)
and their data in `--data-dir` / $NOPROP_BENCH_DATA (MNIST is fetched automatically there, as on any
machine). Ray is an optional dependency: it is imported only here.
"""
from __future__ import annotations

import os
import traceback

from tqdm.auto import tqdm

from noprop_bench.run.jobs import cell_task, task_options
from noprop_bench.run.messages import first_line
from noprop_bench.run.plan import Cell
from noprop_bench.run.results import ResultWriter
from noprop_bench.run.runner import CellOutcome, RunOptions, SetupError


def _import_ray():
    try:
        import ray
    except ImportError:
        raise SetupError("--executor ray needs Ray, an optional dependency: pip install -e '.[ray]'") from None
    return ray


def run_cells_ray(cells: list[Cell], options: RunOptions, writer: ResultWriter | None, device_name: str,
                  address: str | None = None, cpus_per_task: int = 1, max_retries: int = 2) -> list[CellOutcome]:
    ray = _import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=address, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        except (ConnectionError, ValueError, RuntimeError) as e:
            raise SetupError(f"could not connect to Ray at {address or 'a new local instance'}: {e}. Start a "
                             f"cluster with `ray start --head` and pass --ray-address auto (or host:port)") from None
    try:
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        if device_name.startswith("cuda") and not gpus:
            raise SetupError(f"--device {device_name}: the Ray cluster has no GPUs ({resources}); use --device cpu")
        use_gpu = gpus > 0 and device_name != "cpu"
        slots = gpus if use_gpu else max(1, int(resources.get("CPU", 1)) // cpus_per_task)
        # max_calls=1: a fresh worker process per cell, so no cell inherits another's CUDA context, cached
        # allocator blocks or cuDNN autotuning state
        # the driver's NOPROP_BENCH_* settings (data directory, offline switch) hold in every task too
        env = {k: v for k, v in os.environ.items() if k.startswith("NOPROP_BENCH_")}
        task = ray.remote(max_calls=1 if use_gpu else 0)(cell_task).options(
            num_gpus=1 if use_gpu else 0, num_cpus=1 if use_gpu else cpus_per_task,
            max_retries=max_retries, retry_exceptions=False, name="noprop-bench-cell",
            runtime_env={"env_vars": env} if env else None)
        shared = task_options(options)
        pending = {task.remote(cell, "cuda" if use_gpu else "cpu", options.data_dir,
                               0 if use_gpu else cpus_per_task, shared): cell for cell in cells}
        outcomes, failed = [], 0
        with tqdm(total=len(cells), unit="cell", disable=None if options.progress is None else not options.progress,
                  dynamic_ncols=True) as bar:
            bar.set_postfix(running=min(len(pending), slots), finished=0, failed=0)
            while pending:
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                cell = pending.pop(ref)
                outcome = CellOutcome(cell)
                try:
                    result = ray.get(ref)
                    outcome.rows, outcome.diagnostics, outcome.error = result["rows"], result["diagnostics"], result["error"]
                except ray.exceptions.RayTaskError as e:
                    cause = e.cause if getattr(e, "cause", None) is not None else e
                    outcome.error = f"{cell.label()} raised on a Ray worker: {_describe(cause)}"
                except ray.exceptions.RayError as e:
                    outcome.error = (f"{cell.label()}: its Ray worker was lost {max_retries + 1} times "
                                     f"({first_line(e)})")
                if writer is not None:
                    if outcome.rows:
                        writer.append(outcome.rows, outcome.diagnostics)
                    writer.finish_cell(cell, outcome.error)
                failed += outcome.error is not None
                outcomes.append(outcome)
                bar.update(1)
                bar.set_postfix(running=min(len(pending), slots), finished=len(outcomes) - failed, failed=failed)
        return outcomes
    finally:
        if started_here:
            ray.shutdown()


def _describe(error: BaseException) -> str:
    lines = traceback.format_exception_only(type(error), error)
    return "".join(lines).strip().splitlines()[-1]
