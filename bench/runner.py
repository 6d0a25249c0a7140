"""The shared training loop: epochs, timing, evaluation and rows. Methods only fill in hooks."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from bench.data import DeviceData, load_data
from bench.results import ResultWriter
from bench.suites import Cell
from bench.timing import Clock, PeakMemory
from methods import get_method

EVAL_BATCH = 1000  # images per inference batch; does not affect results


@dataclass
class RunOptions:
    device: torch.device
    data_dir: str | None = None
    progress: bool | None = None  # None: only on a terminal


@dataclass
class CellOutcome:
    cell: Cell
    rows: list[dict] = field(default_factory=list)
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


def eval_settings(method, cell: Cell, final: bool) -> list[tuple[int, str]]:
    """(steps, solver) pairs to evaluate: the method's defaults every epoch, plus the requested step
    counts x solvers after the last epoch (continuous methods; one trained model, no retraining)."""
    settings = list(method.eval_settings())
    if final and method.continuous and (cell.inference_steps or cell.solvers):
        for solver in cell.solvers or (method.default_solver,):
            if solver not in method.solvers:
                continue  # e.g. 'ancestral' asked for, but this method has no such rule
            for steps in cell.inference_steps or (method.config.timesteps,):
                if (steps, solver) not in settings:
                    settings.append((steps, solver))
    return settings


@torch.no_grad()
def evaluate(method, split, steps, solver, seed: int) -> tuple[float, float, int | None]:
    """Test accuracy (%) of one inference run, its synchronised wall time, and NFE per image.

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
            for x, y in split.batches(EVAL_BATCH, shuffle=False):
                correct += (method.predict(x, steps=steps, solver=solver).argmax(1) == y).sum()
            acc = 100.0 * correct.item() / len(split)
    return acc, clock.last, method.last_nfe


def train_epoch(method, optimizer, data: DeviceData, batch_size: int, bar) -> dict[str, float]:
    """One epoch: every stage of the method, a shuffled pass over the training data each."""
    method.train()
    sums: dict[str, torch.Tensor] = {}
    steps = 0
    for stage in method.stages():
        for x, y in data.train.batches(batch_size, shuffle=True):
            optimizer.zero_grad(set_to_none=True)
            loss, terms = method.loss(x, y, stage)
            loss.backward()
            optimizer.step()
            for key, value in {"loss": loss.detach(), **terms}.items():
                sums[key] = sums[key] + value if key in sums else value.clone()
            steps += 1
            bar.update(1)
    return {key: value.item() / steps for key, value in sums.items()}  # the epoch's only host sync


def run_cell(cell: Cell, data: DeviceData, options: RunOptions, writer: ResultWriter | None, bar) -> CellOutcome:
    device = options.device
    torch.manual_seed(cell.seed)
    method = get_method(cell.method)(data.spec, cell.config, device, train=data.train)
    optimizer = method.make_optimizer()
    clock, memory = Clock(device), PeakMemory(device)
    outcome = CellOutcome(cell)
    base = {"suite": cell.suite, "cell_id": cell.id, "method": cell.method, "dataset": cell.dataset,
            "embedding": cell.embedding, "seed": cell.seed, "n_train": len(data.train),
            "n_test": len(data.test), "params_trainable": method.param_counts()["params_trainable"],
            "device": str(device), "mem_kind": memory.kind}
    for epoch in range(1, cell.config.epochs + 1):
        bar.set_description(f"{cell.label()} epoch {epoch}/{cell.config.epochs}")
        memory.reset()
        with clock:
            losses = train_epoch(method, optimizer, data, cell.config.batch_size, bar)
        peak = memory.peak_bytes()
        if not all(math.isfinite(v) for v in losses.values()):
            outcome.error = (f"{cell.label()} diverged in epoch {epoch}: mean losses {losses}. Rows of earlier "
                             f"epochs are kept. Try a lower learning rate (--set lr=...) or another seed.")
            return outcome
        rows = []
        for steps, solver in eval_settings(method, cell, final=epoch == cell.config.epochs):
            for run in range(cell.inference_runs if method.stochastic else 1):
                acc, eval_time, nfe = evaluate(method, data.test, steps, solver, seed=_eval_seed(cell.seed, epoch, run))
                rows.append({**base, "epoch": epoch, "inference_steps": steps, "solver": solver,
                             "inference_run": run, "nfe": nfe, "test_acc": acc, "eval_time_s": eval_time,
                             "train_loss": losses["loss"], "loss_ce": losses.get("ce"),
                             "loss_kl": losses.get("kl"), "loss_mse": losses.get("mse"),
                             "train_time_s": clock.last, "cum_train_time_s": clock.total,
                             "peak_mem_bytes": peak})
        if writer is not None:
            writer.append(rows)
        outcome.rows.extend(rows)
    return outcome


def _eval_seed(seed: int, epoch: int, run: int) -> int:
    return (seed * 1_000_003 + epoch) * 1_009 + run


def total_steps(cells: list[Cell], sizes: dict) -> int:
    total = 0
    for cell in cells:
        n_train = sizes[(cell.dataset, cell.train_limit, cell.test_limit)]
        stages = get_method(cell.method).num_stages(cell.config)
        total += cell.config.epochs * stages * -(-n_train // cell.config.batch_size)
    return total


def run_cells(cells: list[Cell], options: RunOptions, writer: ResultWriter | None = None) -> list[CellOutcome]:
    """Run every cell in order, loading each data set (and subset) once."""
    if options.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    datasets: dict[tuple, DeviceData] = {}
    for cell in cells:
        key = (cell.dataset, cell.train_limit, cell.test_limit)
        if key not in datasets:
            datasets[key] = load_data(cell.dataset, options.device, options.data_dir, cell.train_limit, cell.test_limit)
    sizes = {key: len(d.train) for key, d in datasets.items()}
    outcomes = []
    with tqdm(total=total_steps(cells, sizes), unit="step", disable=None if options.progress is None
              else not options.progress, dynamic_ncols=True) as bar:
        for cell in cells:
            outcomes.append(run_cell(cell, datasets[(cell.dataset, cell.train_limit, cell.test_limit)],
                                     options, writer, bar))
    return outcomes
