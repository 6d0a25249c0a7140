"""The shared training loop: epochs, timing, evaluation and rows. Methods only fill in hooks."""
from __future__ import annotations

import math
import platform
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from noprop_bench.data import DeviceData, load_data
from noprop_bench.measure.diagnostics import probe
from noprop_bench.measure.flops import count_inference_flops, count_training_flops, roof
from noprop_bench.measure.memory import CATEGORIES, probe_training_memory
from noprop_bench.methods.parallel_dt import ParallelDT, WorkerError
from noprop_bench.run.precision import autocast, check_precision, fast_layout, matmul_mode
from noprop_bench.run.step import train_step
from noprop_bench.run.results import ResultWriter
from noprop_bench.run.suites import Cell, cell_cost, eval_steps, steps_per_epoch, sweep_settings
from noprop_bench.measure.timing import Clock, PeakMemory
from noprop_bench.methods import get_method

MEMORY_COLUMNS = ["tensor_peak_bytes", *(f"mem_{c}_bytes" for c in CATEGORIES)]
EVAL_BATCH = 1000  # images per inference batch; does not affect results
DIAG_RUN = 10_000  # the diagnostics' noise seed is an inference run number no real run reaches
# The progress bar counts work in forward network evaluations x images (the unit of --dry-run's cost
# column), training and evaluation alike, so its ETA covers both; a training evaluation counts 3
# (forward + backward, the usual 1 : 2 rule).
TRAIN_WORK = 3
BAR = "{l_bar}{bar}| {n_fmt}/{total_fmt} nfe [{elapsed}<{remaining}]"


class SetupError(ValueError):
    """An executor could not start (no Ray, no cluster, no GPU there): nothing has run."""


@dataclass
class RunOptions:
    device: torch.device
    data_dir: str | None = None
    progress: bool | None = None  # None: only on a terminal
    diagnostics: bool = True      # write diagnostics.csv (bench/diagnostics.py) at every evaluation point
    memory_probe: bool = True     # measure the training steps' tensor peak (bench/memory.py) before the clock starts


@dataclass
class CellOutcome:
    cell: Cell
    rows: list[dict] = field(default_factory=list)
    diagnostics: list[dict] = field(default_factory=list)
    error: str | None = None


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
    return device


@torch.no_grad()
def evaluate(method, split, steps, solver, seed: int, precision: str = "fp32") -> tuple[float, float, int | None, int]:
    """Test accuracy (%) of one inference run, its synchronised wall time, NFE per image, and how many
    distinct classes it predicted.

    The run's noise comes from its own seed in a forked RNG, so evaluating more settings never changes
    the training trajectory.
    """
    method.eval()
    device = split.labels.device
    clock = Clock(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        with clock:
            correct = torch.zeros((), dtype=torch.long, device=device)
            predicted = torch.zeros(method.spec.num_classes, dtype=torch.bool, device=device)
            for x, y in split.batches(EVAL_BATCH, shuffle=False):
                with autocast(precision, device):
                    guess = method.predict(x, steps=steps, solver=solver).argmax(1)
                correct += (guess == y).sum()
                predicted[guess] = True
            acc = 100.0 * correct.item() / len(split)
    return acc, clock.last, method.last_nfe, int(predicted.sum().item())


def training_steps(method, optimizer, split, batch_size: int, precision: str = "fp32"):
    """Optimiser steps forever: epoch after epoch, every stage of the method a shuffled pass each.
    Yields each step's detached loss terms; the caller decides where to stop and evaluate."""
    while True:
        for stage in method.stages():
            for x, y in split.batches(batch_size, shuffle=True):
                loss, terms = train_step(method, optimizer, x, y, stage, precision)
                yield {"loss": loss.detach(), **terms}


class SequentialTrainer:
    """Algorithm 1 (and every other method's loop) in this process: `training_steps` in order."""

    def __init__(self, method, optimizer, split, batch_size: int, precision: str):
        self.steps = training_steps(method, optimizer, split, batch_size, precision)

    def train(self, done: int, point: int, total: int, progress) -> dict:
        """Steps done+1..point; the interval's mean loss terms (tensors: no host sync here)."""
        sums: dict[str, torch.Tensor] = {}
        for _ in range(point - done):
            for key, value in next(self.steps).items():
                sums[key] = sums[key] + value if key in sums else value.clone()
            progress(1)
        return {key: value / (point - done) for key, value in sums.items()}

    def gather(self) -> None:
        pass

    def close(self) -> None:
        pass


def cell_threads(cell: Cell) -> tuple[int, int]:
    """(workers, torch threads per worker) of a cell: config keys `workers` and `threads` where the method
    has them (0 threads: this process's count, shared out among the workers)."""
    workers = getattr(cell.config, "workers", 1)
    threads = getattr(cell.config, "threads", 0) or max(1, torch.get_num_threads() // workers)
    return workers, threads


def run_cell(cell: Cell, data: DeviceData, options: RunOptions, writer: ResultWriter | None, bar) -> CellOutcome:
    """Train one cell, evaluating at its evaluation points with the clock stopped; rows are appended
    (and fsynced) at every point, so a killed run keeps what it finished."""
    check_precision(cell.precision, options.device)
    workers, threads = cell_threads(cell)
    before = torch.get_num_threads()
    torch.set_num_threads(threads if workers == 1 else before)
    try:
        with matmul_mode(cell.precision, options.device):
            return _run_cell(cell, data, options, writer, bar)
    finally:
        torch.set_num_threads(before)


def _run_cell(cell: Cell, data: DeviceData, options: RunOptions, writer: ResultWriter | None, bar) -> CellOutcome:
    device, precision = options.device, cell.precision
    torch.manual_seed(cell.seed)
    cls = get_method(cell.method)
    method = fast_layout(cls(data.spec, cell.config, device, train=data.train))
    optimizer = method.make_optimizer()
    clock, memory = Clock(device), PeakMemory(device)
    outcome = CellOutcome(cell)
    tensors = (probe_training_memory(method, optimizer, data.train, cell.config.batch_size, precision=precision)
               if options.memory_probe else dict.fromkeys(MEMORY_COLUMNS))
    # model FLOPs, counted outside the clock: one step per stage, and per image of each inference setting
    step_flops = count_training_flops(method, optimizer, data.train, cell.config.batch_size, precision)
    roof_gflops = roof(device, precision)
    mem_kind = memory.kind if device.type == "cuda" else ("tensor_peak" if options.memory_probe else None)
    base = {"suite": cell.suite, "cell_id": cell.id, "method": cell.method, "dataset": cell.dataset,
            "embedding": cell.embedding, "seed": cell.seed, "n_train": len(data.train),
            "n_test": len(data.test), "eval_split": cell.eval_split, "params_trainable": method.param_counts()["params_trainable"],
            "device": str(device), "host": platform.node(), "mem_kind": mem_kind,
            "scaled": "; ".join(cell.scaled), **tensors, "precision": precision,
            "train_flops_per_step": step_flops, "roof_gflops": roof_gflops}
    points = eval_steps(cell, len(data.train))
    step_work = TRAIN_WORK * cell_cost(cell, len(data.train), len(data.test))["train_nfe"] / points[-1]
    workers, threads = cell_threads(cell)
    base.update(workers=workers, threads=threads)
    try:  # workers start (and the data is shared with them) before any clock runs
        trainer = (ParallelDT(method, data.train, cell.seed, workers, threads, precision) if workers > 1
                   else SequentialTrainer(method, optimizer, data.train, cell.config.batch_size, precision))
    except WorkerError as e:
        outcome.error = f"{cell.label()}: {e}"
        return outcome
    try:
        return _train_and_evaluate(cell, data, options, writer, bar, method, trainer, clock, memory, outcome,
                                   base, step_flops, points, step_work)
    except WorkerError as e:
        outcome.error = (f"{cell.label()}: {e}. Its rows so far stay in the CSV until a resume retries the cell; "
                         f"the sweep goes on")
        return outcome
    finally:
        trainer.close()


def _train_and_evaluate(cell, data, options, writer, bar, method, trainer, clock, memory, outcome, base, step_flops,
                        points, step_work) -> CellOutcome:
    """The loop over evaluation points: train (clock running) up to each, then evaluate (clock stopped)."""
    device, precision, cls = options.device, cell.precision, get_method(cell.method)
    per_epoch = steps_per_epoch(cell, len(data.train))
    image_flops: dict[tuple, float] = {}  # FLOPs per image of each inference setting, counted once
    done = 0
    for point in points:
        bar.set_description(f"{cell.label()} epoch {-(-point // per_epoch)}/{cell.config.epochs}")
        method.train()
        memory.reset()
        with clock:
            means = trainer.train(done, point, points[-1], lambda n: bar.update(step_work * n))
        trainer.gather()  # parallel workers' blocks into this model, clock stopped
        losses = {key: float(value) for key, value in means.items()}  # the only host sync
        train_gflops = (point - done) * step_flops / clock.last / 1e9
        done = point
        peak = memory.peak_bytes() if device.type == "cuda" else base["tensor_peak_bytes"]
        epoch = point // per_epoch if point % per_epoch == 0 else round(point / per_epoch, 4)
        if not all(math.isfinite(v) for v in losses.values()):
            outcome.error = (f"{cell.label()} diverged by epoch {epoch}: mean losses {losses}. Its rows so far "
                             f"stay in the CSV until a resume retries the cell. Try a lower learning rate (--set lr=...) or another seed.")
            return outcome
        final = point == points[-1]
        bar.set_description(f"{cell.label()} evaluating")
        settings = [("default", cls.default_setting(cell.config))]
        settings += [("sweep", s) for s in sweep_settings(cell)] if final else []
        rows = []
        for kind, (k, solver) in settings:
            for run in range(cell.inference_runs if method.stochastic else 1):
                seed = _eval_seed(cell.seed, point, run)
                acc, eval_time, nfe, classes = evaluate(method, data.test, k, solver, seed, precision)
                if (k, solver) not in image_flops:
                    image_flops[k, solver] = count_inference_flops(method, data.test, k, solver, precision)
                bar.update(cls.nfe_per_image(cell.config, k, solver) * len(data.test))
                if kind == "default" and run == 0:
                    predicted_classes = classes
                train_acc = None
                if final and kind == "default" and cell.train_accuracy:
                    train_acc = evaluate(method, data.train, k, solver, seed, precision)[0]
                    bar.update(cls.nfe_per_image(cell.config, k, solver) * len(data.train))
                rows.append({**base, "epoch": epoch, "step": point, "eval_setting": kind, "inference_steps": k,
                             "solver": solver, "inference_run": run, "nfe": nfe, "test_acc": acc,
                             "train_acc": train_acc, "eval_time_s": eval_time,
                             "train_loss": losses["loss"], "loss_ce": losses.get("ce"),
                             "loss_kl": losses.get("kl"), "loss_mse": losses.get("mse"),
                             "train_time_s": clock.last, "cum_train_time_s": clock.total,
                             "peak_mem_bytes": peak, "train_gflops_per_s": train_gflops,
                             "eval_gflops_per_s": image_flops[k, solver] * len(data.test) / eval_time / 1e9})
        diagnostics = []
        if options.diagnostics:
            where = {"cell_id": cell.id, "method": cell.method, "dataset": cell.dataset, "embedding": cell.embedding,
                     "seed": cell.seed, "epoch": epoch, "step": point}
            diagnostics = [{**where, "diagnostic": "pred_classes", "value": predicted_classes, "n": len(data.test)},
                           *_autocast_probe(method, data.test, _eval_seed(cell.seed, point, DIAG_RUN), where, precision)]
        if writer is not None:
            writer.append(rows, diagnostics)
        outcome.rows.extend(rows)
        outcome.diagnostics.extend(diagnostics)
    return outcome


def _autocast_probe(method, split, seed, where, precision):
    with autocast(precision, split.labels.device):
        return probe(method, split, seed, where)


def _eval_seed(seed: int, step: int, run: int) -> int:
    return (seed * 1_000_003 + step) * 1_009 + run


def load_cell_data(cell: Cell, device, data_dir=None) -> DeviceData:
    return load_data(cell.dataset, device, data_dir, cell.train_limit, cell.test_limit, cell.holdout)


def total_work(cells: list[Cell], datasets: dict) -> float:
    """The progress bar's total: training and evaluation in forward evaluations x images (TRAIN_WORK)."""
    total = 0.0
    for cell in cells:
        data = datasets[cell.data_key]
        cost = cell_cost(cell, len(data.train), len(data.test))
        total += TRAIN_WORK * cost["train_nfe"] + cost["eval_nfe"]
    return total


def run_cells(cells: list[Cell], options: RunOptions, writer: ResultWriter | None = None) -> list[CellOutcome]:
    """Run every cell in order, loading each data set (and subset) once."""
    if options.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    datasets: dict[tuple, DeviceData] = {}
    for cell in cells:
        if cell.data_key not in datasets:
            datasets[cell.data_key] = load_cell_data(cell, options.device, options.data_dir)
    outcomes = []
    with tqdm(total=total_work(cells, datasets), unit="nfe", unit_scale=True, disable=None if options.progress is None
              else not options.progress, dynamic_ncols=True, bar_format=BAR) as bar:
        for cell in cells:
            outcome = run_cell(cell, datasets[cell.data_key], options, writer, bar)
            if writer is not None:
                writer.finish_cell(cell, outcome.error)
            outcomes.append(outcome)
    return outcomes
