"""Tidy results: one CSV row per method x dataset x embedding x seed x epoch x evaluation setting x
inference run, appended and flushed as each epoch finishes, its diagnostics (bench/diagnostics.py) in
a second CSV, plus a JSON of run metadata."""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path

import torch

from noprop_bench.measure.diagnostics import DIAG_COLUMNS
from noprop_bench.files import atomic_write_bytes
from noprop_bench.run import checkpoint

COLUMNS = [
    "suite", "cell_id", "method", "dataset", "embedding", "seed", "config", "precision", "epoch", "step",
    "eval_setting", "inference_steps", "solver", "inference_run", "nfe", "test_acc", "train_acc", "eval_time_s",
    "train_loss", "loss_ce", "loss_kl", "loss_mse", "train_time_s", "cum_train_time_s",
    "peak_mem_bytes", "mem_kind", "data_bytes", "tensor_peak_bytes", "mem_parameters_bytes", "mem_gradients_bytes",
    "mem_optimizer_state_bytes", "mem_activations_bytes", "n_train", "n_test", "eval_split", "eval_batch",
    "params_total", "params_trainable", "params_per_block", "train_flops_per_step", "train_gflops_per_s",
    "eval_gflops_per_s", "roof_gflops", "workers", "threads", "co_running", "deterministic", "device", "host",
    "scaled", "overrides",
]
# Columns that differ between two identical runs (the determinism tests ignore exactly these).
TIMING_COLUMNS = ["eval_time_s", "train_time_s", "cum_train_time_s", "peak_mem_bytes", "train_gflops_per_s",
                  "eval_gflops_per_s", "roof_gflops"]
HOST_COLUMNS = ["host"]
PACKAGES = ["torch", "torchvision", "torchdiffeq", "numpy", "pandas", "seaborn", "scikit-learn", "tqdm"]


class ResultsError(ValueError):
    pass


class ResultWriter:
    """An output directory that a sweep can be resumed into.

    results.csv  the rows, appended and fsynced at every evaluation point;
    cells.jsonl  the ledger: one line per finished cell ({"cell_id", "label", "error", "config", "sitting"}),
                 written after the cell's last rows are on disk. A cell is finished only once it is in the
                 ledger. `sitting` is the `started` time of the invocation it finished in, which ties the
                 cell to that invocation's machine and revision in metadata.json.
    metadata.json  run metadata; earlier invocations into the same directory are kept in "previous".
    checkpoints/   CELL_ID.pt per unfinished cell (run/checkpoint.py), deleted when the cell finishes.

    On resume, rows of cells that are not in the ledger (a run killed mid-cell, a torn last line) are
    dropped by rewriting the CSV to a temporary file and renaming it over the old one; those cells run
    again, from their checkpoint where they have one (which writes their rows back). Cells finished
    without error are skipped; failed cells are retried.
    """

    def __init__(self, out_dir: Path, fresh: bool = False):
        self.out_dir = Path(out_dir)
        self.csv_path = self.out_dir / "results.csv"
        self.meta_path = self.out_dir / "metadata.json"
        self.ledger_path = self.out_dir / "cells.jsonl"
        self.diag_path = self.out_dir / "diagnostics.csv"
        self.checkpoints = self.out_dir / checkpoint.FOLDER  # run/checkpoint.py: one file per unfinished cell
        self.finished: dict[str, dict] = {}  # cell_id -> ledger entry
        self.trackers = None  # run/trackers.Trackers: the rows streamed on, once they are on disk
        self.sitting: str | None = None  # this invocation's `started` time, once its metadata is written
        self.dropped_rows = 0
        self.moved_to: Path | None = None
        if fresh and self.csv_path.exists():
            self._move_aside()
        if self.csv_path.exists():
            self._resume()
        else:
            # the ledger first and results.csv last, each written whole: a kill between any two leaves no
            # results.csv, and the same command starts afresh
            self.out_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.ledger_path, b"")
            atomic_write_bytes(self.diag_path, (",".join(DIAG_COLUMNS) + "\n").encode())
            atomic_write_bytes(self.csv_path, (",".join(COLUMNS) + "\n").encode())

    def _move_aside(self) -> None:
        """--fresh never deletes: the old files go to OUT/replaced-TIMESTAMP/."""
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
        self.moved_to = self.out_dir / f"replaced-{stamp}"
        self.moved_to.mkdir()
        for path in (self.csv_path, self.ledger_path, self.meta_path, self.diag_path, self.checkpoints):
            if path.exists():
                path.rename(self.moved_to / path.name)

    def _resume(self) -> None:
        with open(self.csv_path, newline="") as f:
            header = next(csv.reader(f), None)
        if header != COLUMNS:
            raise ResultsError(f"{self.csv_path} was written by another version of noprop-bench (its columns "
                               f"differ), so it cannot be resumed; pass --fresh to move it aside and start "
                               f"again, or a new --out directory")
        if not self.ledger_path.exists():
            raise ResultsError(f"{self.csv_path} has no ledger ({self.ledger_path.name}), so which cells finished "
                               f"is unknown; pass --fresh to move it aside and start again, or a new --out")
        self.finished = read_ledger(self.ledger_path)
        self.dropped_rows = self._keep_finished(self.csv_path, COLUMNS)
        if self.diag_path.exists():
            self._keep_finished(self.diag_path, DIAG_COLUMNS)
        else:
            self.diag_path.write_text(",".join(DIAG_COLUMNS) + "\n")
        if self.dropped_rows:
            # failed cells run again: forget them in the ledger too, so it matches the CSV
            good = [e for e in self.finished.values() if e["error"] is None]
            atomic_write_bytes(self.ledger_path, "".join(json.dumps(e) + "\n" for e in good).encode())

    def _keep_finished(self, path: Path, columns: list[str]) -> int:
        """Drop the rows of cells that did not finish without error (rewritten by rename); returns
        how many lines went."""
        at = columns.index("cell_id")
        with open(path, newline="") as f:
            lines = f.read().splitlines(keepends=True)
        keep = lines[:1]
        for line in lines[1:]:
            fields = next(csv.reader([line]), [])
            complete = line.endswith("\n") and len(fields) == len(columns)
            if complete and self.done(fields[at]):
                keep.append(line)
        if len(keep) < len(lines):
            atomic_write_bytes(path, "".join(keep).encode())
        return len(lines) - len(keep)

    def done(self, cell_id: str) -> bool:
        entry = self.finished.get(cell_id)
        return entry is not None and entry["error"] is None

    def append(self, rows: list[dict], diagnostics: list[dict] = ()) -> None:
        """Append rows (and their diagnostics) and fsync, so a killed run keeps every finished
        evaluation point."""
        for path, columns, new in ((self.diag_path, DIAG_COLUMNS, diagnostics), (self.csv_path, COLUMNS, rows)):
            if not new:
                continue
            with open(path, "a", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=columns, extrasaction="raise")
                formatted = [{k: _fmt(row.get(k)) for k in columns} for row in new]
                writer.writerows(formatted)
                f.flush()
                os.fsync(f.fileno())
            if self.trackers is not None and path == self.csv_path:
                self.trackers.log_rows(new, [{k: str(v) for k, v in row.items()} for row in formatted])  # as the CSV reads

    def check_unchanged(self, cells) -> None:
        """Refuse to resume a finished cell whose config has since changed under the same id (a default
        changed between versions): its old rows would be read as the new configuration's."""
        for cell in cells:
            old = (self.finished.get(cell.id) or {}).get("config")
            if not self.done(cell.id) or old is None:
                continue
            new = dataclasses.asdict(cell.config)
            changed = sorted(k for k in set(old) & set(new) if old[k] != new[k])
            if changed:
                k = changed[0]
                raise ResultsError(f"{self.out_dir}: cell {cell.label()} finished with {k}={old[k]!r}, but this "
                                   f"version's value is {new[k]!r} (a default changed); resuming would mix the two. "
                                   f"Pass --fresh to move the old results aside, or a new --out")

    def write_error(self, cell_id: str, text: str) -> Path:
        """A failed cell's traceback, as OUT/errors/CELL_ID.txt."""
        path = self.out_dir / "errors" / f"{cell_id}.txt"
        atomic_write_bytes(path, text.encode())
        return path

    def finish_cell(self, cell, error: str | None) -> None:
        entry = {"cell_id": cell.id, "label": cell.label(), "error": error, "config": dataclasses.asdict(cell.config),
                 "sitting": self.sitting}
        with open(self.ledger_path, "a") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.finished[cell.id] = entry
        if error is None:
            checkpoint.discard(self.checkpoints, cell.id)
        if self.trackers is not None:
            self.trackers.finish_cell(cell.id, error)

    def read_metadata(self) -> dict | None:
        try:
            return json.loads(self.meta_path.read_text())
        except (OSError, ValueError):
            return None

    def write_metadata(self, meta: dict) -> None:
        self.sitting = meta.get("started", self.sitting)
        atomic_write_bytes(self.meta_path, (json.dumps(meta, indent=2, default=str) + "\n").encode())


def read_ledger(path: Path) -> dict[str, dict]:
    """cell_id -> last entry; a torn last line (killed while writing) is ignored."""
    entries = {}
    for line in Path(path).read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and "cell_id" in entry:
            entries[entry["cell_id"]] = {"cell_id": entry["cell_id"], "label": entry.get("label"),
                                         "error": entry.get("error"), "config": entry.get("config"),
                                         "sitting": entry.get("sitting")}
    return entries


def _fmt(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # shortest exact round-trip
    return value


def git_revision() -> dict:
    """The revision of the checkout this package runs from (None for an installed copy)."""
    package = Path(__file__).resolve().parent.parent

    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=package, capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    top = git("rev-parse", "--show-toplevel")
    if not top or Path(top).resolve() != package.parent:
        return {"revision": None, "dirty": None}
    return {"revision": git("rev-parse", "HEAD") or None, "dirty": bool(git("status", "--porcelain"))}


def run_metadata(argv: list[str], device: torch.device) -> dict:
    """Collected once per process."""
    from noprop_bench import __version__
    from noprop_bench.measure import machine
    from noprop_bench.run import allocator
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = None
    described = machine.describe(device)
    return {
        "command": [Path(sys.argv[0]).name, *argv],
        "started": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        "noprop_bench": __version__,
        "git": git_revision(),
        "python": sys.version.split()[0],
        "packages": versions,
        "machine": described,
        "device": {"type": device.type, "name": described["gpu"]["name"] if described["gpu"] else described["cpu"]["model"],
                   "torch_threads": torch.get_num_threads(),
                   "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None},
        "host": platform.node(),
        "platform": platform.platform(),
        "allocator": allocator.state(),
    }
