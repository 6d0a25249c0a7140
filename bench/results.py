"""Tidy results: one CSV row per method x dataset x embedding x seed x epoch x evaluation setting x
inference run, appended and flushed as each epoch finishes, plus a JSON of run metadata."""
from __future__ import annotations

import csv
import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path

import torch

from bench.files import atomic_write_bytes

COLUMNS = [
    "suite", "cell_id", "method", "dataset", "embedding", "seed", "epoch",
    "inference_steps", "solver", "inference_run", "nfe", "test_acc", "eval_time_s",
    "train_loss", "loss_ce", "loss_kl", "loss_mse", "train_time_s", "cum_train_time_s",
    "peak_mem_bytes", "mem_kind", "n_train", "n_test", "params_trainable", "device",
]
# Columns that differ between two identical runs (the determinism test ignores exactly these).
TIMING_COLUMNS = ["eval_time_s", "train_time_s", "cum_train_time_s", "peak_mem_bytes"]
PACKAGES = ["torch", "torchvision", "torchdiffeq", "numpy", "pandas", "seaborn", "scikit-learn", "tqdm"]


class ResultsExistError(FileExistsError):
    pass


class ResultWriter:
    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)
        self.csv_path = self.out_dir / "results.csv"
        self.meta_path = self.out_dir / "metadata.json"
        if self.csv_path.exists():
            raise ResultsExistError(f"{self.csv_path} already exists; pass a new --out directory "
                                    f"(existing results are never overwritten)")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.csv_path, "w", newline="") as f:
            csv.writer(f).writerow(COLUMNS)

    def append(self, rows: list[dict]) -> None:
        """Append rows and fsync, so a killed run keeps every finished epoch."""
        with open(self.csv_path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="raise")
            for row in rows:
                writer.writerow({k: _fmt(row.get(k)) for k in COLUMNS})
            f.flush()
            os.fsync(f.fileno())

    def write_metadata(self, meta: dict) -> None:
        atomic_write_bytes(self.meta_path, (json.dumps(meta, indent=2, default=str) + "\n").encode())


def _fmt(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # shortest exact round-trip
    return value


def git_revision() -> dict:
    root = Path(__file__).resolve().parent.parent
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    return {"revision": git("rev-parse", "HEAD") or None, "dirty": bool(git("status", "--porcelain"))}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def run_metadata(argv: list[str], device: torch.device) -> dict:
    """Collected once per process."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "command": [Path(sys.argv[0]).name, *argv],
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git": git_revision(),
        "python": sys.version.split()[0],
        "packages": versions,
        "device": {"type": device.type, "name": device_name(device),
                   "torch_threads": torch.get_num_threads(),
                   "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None},
        "host": platform.node(),
        "platform": platform.platform(),
    }
