"""Where the harness reads and writes. Nothing resolves from the install location:

  data      --data-dir, else $NOPROP_BENCH_DATA, else ./data in the working directory
  outputs   --out, else $NOPROP_BENCH_OUT/SUITE-TIMESTAMP, else ./results/runs/SUITE-TIMESTAMP
  package data (the paper's tables, thresholds, built-in suites): read through importlib.resources
"""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path


def data_dir() -> Path:
    return Path(os.environ.get("NOPROP_BENCH_DATA") or Path.cwd() / "data")


def runs_dir() -> Path:
    return Path(os.environ.get("NOPROP_BENCH_OUT") or Path.cwd() / "results" / "runs")


def resource(name: str):
    """A file of noprop_bench/resources (a Traversable: .read_text(), .open(), .name)."""
    return resources.files("noprop_bench.resources").joinpath(name)


def builtin_suites() -> dict[str, object]:
    """Suite name -> its TOML resource."""
    folder = resources.files("noprop_bench.resources").joinpath("suites")
    return {p.name[:-5]: p for p in sorted(folder.iterdir(), key=lambda p: p.name) if p.name.endswith(".toml")}
