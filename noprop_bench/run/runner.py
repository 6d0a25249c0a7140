"""The runner owns the clock. For each cell: build the method, make the measurements that stay outside
the clock (warm-up, memory probe, FLOP count, roof), then loop over the plan's evaluation points:
train with the clock running, evaluate with it stopped, append the rows.

Cells run grouped by data set, and only one data set is on the device at a time, so a cell's CUDA peak
holds its own data and nothing else (`data_bytes` says how much). A cell that raises is recorded as
failed (ledger, `errors/CELL.txt` with the traceback) and the sweep goes on, unless the error leaves
the device unusable (a CUDA error other than running out of memory), which stops the sweep.
"""
from __future__ import annotations

import contextlib
import gc
import math
import platform
import sys
import traceback
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from noprop_bench import faults
from noprop_bench.run import checkpoint
from noprop_bench.data import DataError, DeviceData, load_data
from noprop_bench.measure.diagnostics import probe
from noprop_bench.measure.flops import count_inference_flops, count_training_flops, roof
from noprop_bench.measure.memory import CATEGORIES, probe_training_memory
from noprop_bench.measure.timing import Clock, PeakMemory
from noprop_bench.run.messages import first_line
from noprop_bench.run.plan import Cell, Plan, make_plan
from noprop_bench.run.precision import autocast, check_precision, fast_layout, matmul_mode
from noprop_bench.run.results import ResultWriter
from noprop_bench.run.step import TrainerError, warm_up

MEMORY_COLUMNS = ["tensor_peak_bytes", *(f"mem_{c}_bytes" for c in CATEGORIES)]
DIAG_RUN = 10_000  # the diagnostics' noise seed is an inference run number no real run reaches
# The progress bar counts work in forward network evaluations x images (the unit of --dry-run's cost
# column), training and evaluation alike, so its ETA covers both; a training evaluation counts 3
# (forward + backward, the usual 1 : 2 rule).
TRAIN_WORK = 3
BAR = "{l_bar}{bar}| {n_fmt}/{total_fmt} nfe [{elapsed}<{remaining}]"


def eval_batch(device: torch.device) -> int:
    """Images per inference batch: the whole test set at once on a GPU (a 1000-step sampler then makes
    1000 launches per evaluation, not 10 000), 1000 on a CPU (cache-sized). Evaluation is off the clock;
    stochastic inference draws its noise per batch, so rows record it (`eval_batch`)."""
    return 10_000 if torch.device(device).type == "cuda" else 1000


class SetupError(ValueError):
    """An executor could not start (no Ray, no cluster, no GPU there): nothing has run."""


class FatalDeviceError(RuntimeError):
    """The device is unusable after a cell's error: the sweep stops (a resume starts a fresh process)."""


@dataclass
class RunOptions:
    device: torch.device
    data_dir: str | None = None
    progress: bool | None = None  # None: only on a terminal
    diagnostics: bool = True      # write diagnostics.csv (measure/diagnostics.py) at every evaluation point
    memory_probe: bool = True     # measure the training steps' tensor peak (measure/memory.py) before the clock starts
    flops: bool = True            # count model FLOPs (measure/flops.py) before the clock starts
    deterministic: bool = False   # run/precision.configure_determinism, recorded in every row
    co_running: int = 1           # cells running at the same time on this machine (recorded in every row)
    checkpoints: str | None = None  # folder of the cells' checkpoints (run/checkpoint.py); None: none written


@dataclass
class CellOutcome:
    cell: Cell
    rows: list[dict] = field(default_factory=list)
    diagnostics: list[dict] = field(default_factory=list)
    error: str | None = None
    fatal: bool = False


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available here (torch {torch.__version__}, "
                         f"built for CUDA {torch.version.cuda}); use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {name}: only cpu and cuda devices run cells")
    return device


def load_cell_data(cell: Cell, device, data_dir=None) -> DeviceData:
    return load_data(cell.dataset, device, data_dir, cell.train_limit, cell.test_limit, cell.holdout)


def run_cells(cells: list[Cell], options: RunOptions, writer: ResultWriter | None = None) -> list[CellOutcome]:
    """Run every cell, one data set resident at a time (cells grouped by data set, in order of first use)."""
    groups: dict[tuple, list[Cell]] = {}
    for cell in cells:
        groups.setdefault(cell.data_key, []).append(cell)
    total = sum(TRAIN_WORK * c["train_nfe"] + c["eval_nfe"] for c in (make_plan(cell).cost() for cell in cells))
    outcomes = []
    with tqdm(total=total, unit="nfe", unit_scale=True, disable=None if options.progress is None
              else not options.progress, dynamic_ncols=True, bar_format=BAR) as bar:
        for group in groups.values():
            try:
                data = load_cell_data(group[0], options.device, options.data_dir)
            except DataError as e:
                if not outcomes:
                    raise  # bad input before anything ran: the command's one-line error (exit 2)
                outcomes += [_record(CellOutcome(c, error=f"{c.label()}: {e}"), writer) for c in group]
                continue  # a later data set's files found corrupt only now: its cells fail, the rest run
            for cell in group:
                outcome = _record(run_cell(make_plan(cell, len(data.train), len(data.test)), data, options, writer, bar),
                                  writer)
                outcomes.append(outcome)
                if outcome.fatal:
                    raise FatalDeviceError(outcome.error)
                faults.point("between-cells")
            del data
            _release(options.device)
    return outcomes


def _record(outcome: CellOutcome, writer: ResultWriter | None) -> CellOutcome:
    if writer is not None:
        writer.finish_cell(outcome.cell, outcome.error)
    return outcome


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_cell(plan: Plan, data: DeviceData, options: RunOptions, writer: ResultWriter | None, bar) -> CellOutcome:
    """Train and evaluate one cell; rows are appended (and fsynced) at every point, so a killed run keeps
    what it finished. Whatever the cell raises is its failure, never the sweep's."""
    cell, outcome = plan.cell, CellOutcome(plan.cell)
    try:
        check_precision(cell.precision, options.device)
        with _cell_environment(cell, options):
            _train_and_evaluate(plan, data, options, writer, bar, outcome)
    except (TrainerError, FloatingPointError, checkpoint.CheckpointError) as e:
        outcome.error = f"{cell.label()}: {e}"
    except Exception as e:  # noqa: BLE001 - recorded with its traceback; a broken device stops the sweep
        outcome.error, outcome.fatal = _failure(cell, e, writer), _breaks_device(e)
        _release(options.device)
    return outcome


@contextlib.contextmanager
def _cell_environment(cell: Cell, options: RunOptions):
    """The cell's seed, torch threads and matmul precision, restored afterwards."""
    workers, threads = cell_threads(cell)
    before = torch.get_num_threads()
    torch.set_num_threads(threads if workers == 1 else before)
    torch.manual_seed(cell.seed)
    try:
        with matmul_mode(cell.precision, options.device):
            yield
    finally:
        torch.set_num_threads(before)


def cell_threads(cell: Cell) -> tuple[int, int]:
    """(workers, torch threads per worker) of a cell: config keys `workers` and `threads` where the method
    has them (0 threads: this process's count, shared out among the workers)."""
    workers = getattr(cell.config, "workers", 1)
    threads = getattr(cell.config, "threads", 0) or max(1, torch.get_num_threads() // workers)
    return workers, threads


def _train_and_evaluate(plan: Plan, data: DeviceData, options: RunOptions, writer, bar, outcome: CellOutcome):
    """The loop over evaluation points: train (clock running) up to each, then evaluate (clock stopped)."""
    cell, device = plan.cell, options.device
    method = fast_layout(plan.method_cls(data.spec, cell.config, device, train=data.train))
    optimizer = method.make_optimizer()
    base = _off_clock(plan, method, optimizer, data, options)
    trainer = method.make_trainer(optimizer, data.train, cell.seed, cell.precision)
    clock, memory = Clock(device), PeakMemory(device)
    step_work = TRAIN_WORK * plan.cost()["train_nfe"] / plan.total_steps
    saved = (checkpoint.file(options.checkpoints, cell.id)
             if options.checkpoints and checkpoint.checkpointable(trainer, optimizer) else None)
    image_flops: dict[tuple, float | None] = {}  # per inference setting, counted once per cell
    try:
        done = _resume(saved, plan, method, optimizer, trainer, clock, outcome, writer, bar, step_work, options)
        faults.point("cell-start")
        for point in (p for p in plan.points if p > done):
            bar.set_description(f"{cell.label()} epoch {-(-point // plan.steps_per_epoch)}/{cell.config.epochs}")
            method.train()
            memory.reset()
            with clock:
                means = trainer.train(done, point, plan.total_steps, lambda n: bar.update(step_work * n))
            trainer.gather()  # parallel workers' blocks into this model, clock stopped
            losses = {key: float(value) for key, value in means.items()}  # the only host sync
            interval = {"epoch": plan.epoch_at(point), "step": point, "train_time_s": clock.last,
                        "cum_train_time_s": clock.total, "train_loss": losses["loss"], "loss_ce": losses.get("ce"),
                        "loss_kl": losses.get("kl"), "loss_mse": losses.get("mse"),
                        "train_gflops_per_s": _rate(base["train_flops_per_step"], clock.last, point - done),
                        "peak_mem_bytes": memory.peak_bytes() if device.type == "cuda" else base["tensor_peak_bytes"]}
            done = point
            if not all(math.isfinite(v) for v in losses.values()):
                raise FloatingPointError(f"diverged by epoch {interval['epoch']}: mean losses {losses}. Its rows so "
                                         f"far stay in the CSV until a resume retries the cell. Try a lower learning "
                                         f"rate (--set lr=...) or another seed")
            bar.set_description(f"{cell.label()} evaluating")
            rows, classes = _evaluate_point(plan, method, data, point, options, bar, image_flops)
            rows = [{**base, **interval, **row} for row in rows]
            diagnostics = _diagnostics(plan, method, data, point, classes, trainer) if options.diagnostics else []
            faults.point("cell-point")
            if writer is not None:
                writer.append(rows, diagnostics)
            outcome.rows += rows
            outcome.diagnostics += diagnostics
            if saved is not None and point < plan.total_steps:
                checkpoint.save(saved, cell, options.deterministic, point, method, optimizer, trainer, clock.total,
                                outcome)
    finally:
        trainer.close()


def _resume(saved, plan: Plan, method, optimizer, trainer, clock: Clock, outcome: CellOutcome, writer, bar,
            step_work: float, options: RunOptions) -> int:
    """The optimiser steps a cell's checkpoint already holds (0: none, it starts from its beginning); its
    rows are written again, since a resume dropped them from the CSV."""
    state = checkpoint.load(saved, plan.cell, options.device, options.deterministic) if saved is not None else None
    if state is None:
        return 0
    checkpoint.restore(saved, state, method, optimizer, trainer)
    clock.total = state["train_seconds"]
    outcome.rows, outcome.diagnostics = list(state["rows"]), list(state["diagnostics"])
    if writer is not None:
        writer.append(outcome.rows, outcome.diagnostics)
    bar.update(step_work * state["step"])
    print(f"resuming {plan.cell.label()} from its checkpoint at step {state['step']} of {plan.total_steps} "
          f"({plan.epoch_at(state['step'])} epochs)", file=sys.stderr)
    return state["step"]


def _off_clock(plan: Plan, method, optimizer, data: DeviceData, options: RunOptions) -> dict:
    """Everything measured before the clock starts, as the columns every row of the cell repeats."""
    cell, device, precision, split = plan.cell, options.device, plan.cell.precision, data.train
    warm_up(method, optimizer, split, cell.config.batch_size, precision)
    tensors = (probe_training_memory(method, optimizer, split, cell.config.batch_size, precision=precision)
               if options.memory_probe else dict.fromkeys(MEMORY_COLUMNS))
    flops = count_training_flops(method, optimizer, split, cell.config.batch_size, precision) if options.flops else None
    workers, threads = cell_threads(cell)
    mem_kind = "cuda_max_allocated" if device.type == "cuda" else ("tensor_peak" if options.memory_probe else None)
    return {"suite": cell.suite, "cell_id": cell.id, "method": cell.method, "dataset": cell.dataset,
            "embedding": cell.embedding, "seed": cell.seed, "config": cell.config_label(),
            "n_train": plan.n_train, "n_test": plan.n_test, "eval_split": cell.eval_split,
            **method.param_counts(), "device": str(device), "host": platform.node(), "mem_kind": mem_kind,
            "scaled": "; ".join(plan.departures), "overrides": "; ".join(cell.overrides), **tensors,
            "precision": precision, "train_flops_per_step": flops,
            "roof_gflops": roof(device, precision) if options.flops else None,
            "workers": workers, "threads": threads, "data_bytes": data.nbytes(), "eval_batch": eval_batch(device),
            "deterministic": options.deterministic, "co_running": options.co_running}


def _evaluate_point(plan: Plan, method, data: DeviceData, point: int, options: RunOptions, bar, image_flops: dict):
    """A row per inference setting x run at `point`, and how many classes the default's first run predicted."""
    cell, rows, classes = plan.cell, [], None
    final = point == plan.total_steps
    for kind, (k, solver) in plan.settings_at(point):
        nfe_images = plan.method_cls.nfe_per_image(cell.config, k, solver)
        if (k, solver) not in image_flops:
            image_flops[k, solver] = count_inference_flops(method, data.test, k, solver, cell.precision) if options.flops else None
        flops = image_flops[k, solver]
        for run in range(plan.runs_at(point)):
            seed = _eval_seed(cell.seed, point, run)
            acc, seconds, nfe, predicted = evaluate(method, data.test, k, solver, seed, cell.precision)
            bar.update(nfe_images * len(data.test))
            classes = predicted if classes is None else classes
            train_acc = None
            if final and kind == "default" and cell.train_accuracy:
                train_acc = evaluate(method, data.train, k, solver, seed, cell.precision)[0]
                bar.update(nfe_images * len(data.train))
            rows.append({"eval_setting": kind, "inference_steps": k, "solver": solver, "inference_run": run,
                         "nfe": nfe, "test_acc": acc, "train_acc": train_acc, "eval_time_s": seconds,
                         "eval_gflops_per_s": _rate(flops, seconds, len(data.test))})
    return rows, classes


@torch.no_grad()
def evaluate(method, split, steps, solver, seed: int, precision: str = "fp32") -> tuple[float, float, int | None, int]:
    """Accuracy (%) of one inference run, its synchronised wall time, NFE per image, and how many distinct
    classes it predicted. The run's noise comes from its own seed in a forked RNG, so evaluating more
    settings never changes the training trajectory."""
    method.eval()
    device = split.labels.device
    clock = Clock(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        with clock:
            correct = torch.zeros((), dtype=torch.long, device=device)
            predicted = torch.zeros(method.spec.num_classes, dtype=torch.bool, device=device)
            for x, y in split.batches(eval_batch(device), shuffle=False):
                with autocast(precision, device):
                    guess = method.predict(x, steps=steps, solver=solver).argmax(1)
                correct += (guess == y).sum()
                predicted[guess] = True
            acc = 100.0 * correct.item() / len(split)
    return acc, clock.last, method.last_nfe, int(predicted.sum().item())


def _diagnostics(plan: Plan, method, data: DeviceData, point: int, classes: int, trainer) -> list[dict]:
    cell = plan.cell
    where = {"cell_id": cell.id, "method": cell.method, "dataset": cell.dataset, "embedding": cell.embedding,
             "seed": cell.seed, "epoch": plan.epoch_at(point), "step": point}
    with autocast(cell.precision, data.test.labels.device):
        found = probe(method, data.test, _eval_seed(cell.seed, point, DIAG_RUN), where)
    trained = [{**where, **row} for row in trainer.diagnostics()]
    return [{**where, "diagnostic": "pred_classes", "value": classes, "n": len(data.test)}, *found, *trained]


def _eval_seed(seed: int, step: int, run: int) -> int:
    return (seed * 1_000_003 + step) * 1_009 + run


def _rate(flops, seconds, times: int = 1) -> float | None:
    """GFLOP/s of `times` x `flops` in `seconds` (None when FLOPs were not counted)."""
    return flops * times / seconds / 1e9 if flops is not None and seconds else None


def _breaks_device(error: BaseException) -> bool:
    """True for errors after which a CUDA context cannot be trusted (an illegal address, a device-side
    assert, ECC); running out of memory is not one of them."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return False
    text = f"{type(error).__name__}: {error}"
    return type(error).__name__ == "AcceleratorError" or any(
        s in text for s in ("CUDA error", "device-side assert", "illegal memory access", "CUBLAS_STATUS_EXECUTION_FAILED"))


def _failure(cell: Cell, error: BaseException, writer: ResultWriter | None) -> str:
    """One line for the ledger and the summary; the traceback goes to OUT/errors/CELL_ID.txt."""
    where = ""
    if writer is not None:
        path = writer.write_error(cell.id, "".join(traceback.format_exception(error)))
        where = f" (traceback: {path.relative_to(writer.out_dir)})"
    return f"{cell.label()} raised {first_line(error)}{where}"
