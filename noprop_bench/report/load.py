"""The one loader that every report section and `check` read: the rows of finished cells (the ledger
decides), the run's metadata and its diagnostics, with the helpers the sections share (final rows,
display order, how a configuration is named)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from noprop_bench.data.specs import DATASETS
from noprop_bench.methods.catalog import BUILTIN, EMBEDDINGS
from noprop_bench.run.results import read_ledger

NEEDED = ["suite", "cell_id", "method", "dataset", "embedding", "seed", "config", "precision", "epoch", "step",
          "eval_setting", "inference_steps", "solver", "inference_run", "test_acc", "train_acc", "cum_train_time_s",
          "peak_mem_bytes", "mem_kind", "device", "scaled", "overrides", "eval_split", "n_train", "n_test"]
GB = 1e9  # the paper's "GB"; decimal, which it does not state either
# what tells two configurations apart in every table: rows that agree on all of these are pooled
CONFIG = ["method", "embedding", "dataset", "precision", "config", "n_train", "n_test"]


class ReportError(ValueError):
    pass


@dataclass
class Results:
    df: pd.DataFrame          # rows of finished cells
    meta: dict                # metadata.json
    diag: pd.DataFrame        # diagnostics.csv rows of the finished cells (maybe empty)
    results_dir: Path
    ledger: dict              # cells.jsonl: cell id -> its last entry (empty where there is none)

    @property
    def final(self) -> pd.DataFrame:
        return final_rows(self.df)


def load_results(results_dir: Path) -> tuple[pd.DataFrame, dict]:
    df, meta, _ = _load(results_dir)
    return df, meta


def load(results_dir: Path) -> Results:
    df, meta, ledger = _load(results_dir)
    return Results(df, meta, load_diagnostics(results_dir, df["cell_id"].unique()), Path(results_dir), ledger)


def _load(results_dir: Path) -> tuple[pd.DataFrame, dict, dict]:
    results_dir = Path(results_dir)
    csv_path = results_dir / "results.csv"
    if not csv_path.is_file():
        raise ReportError(f"{csv_path} not found; pass the --out directory of a run (it holds results.csv)")
    try:
        df = pd.read_csv(csv_path, dtype={"scaled": str, "overrides": str, "config": str, "solver": str,
                                          "eval_setting": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ReportError(f"{csv_path} is not a readable results CSV ({e})") from None
    missing = [c for c in NEEDED if c not in df.columns]
    if missing:
        raise ReportError(f"{csv_path} lacks column(s) {', '.join(missing)}; it was written by another version of "
                          f"noprop-bench")
    ledger_path = results_dir / "cells.jsonl"
    ledger = read_ledger(ledger_path) if ledger_path.exists() else {}
    if ledger_path.exists():  # rows of an interrupted cell are not results
        done = {k for k, v in ledger.items() if v["error"] is None}
        df = df[df["cell_id"].isin(done)]
    if df.empty:
        raise ReportError(f"{csv_path} has no rows of a finished cell yet")
    for col in ("scaled", "overrides", "config"):
        df[col] = df[col].fillna("")
    try:
        meta = json.loads((results_dir / "metadata.json").read_text())
    except (OSError, ValueError):
        meta = {}
    return df.reset_index(drop=True), meta, ledger


def load_diagnostics(results_dir: Path, cells) -> pd.DataFrame:
    """diagnostics.csv of the finished cells (an empty frame where there is none)."""
    try:
        d = pd.read_csv(Path(results_dir) / "diagnostics.csv", dtype={"z": str})
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return pd.DataFrame()
    return d[d["cell_id"].isin(set(cells))]


def final_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Every row of each cell's last evaluation point."""
    return df[df["step"] == df.groupby("cell_id")["step"].transform("max")]


def mean_se(values: pd.Series) -> pd.Series:
    n = values.count()
    return pd.Series({"n": n, "mean": values.mean(), "se": values.sem() if n > 1 else np.nan})


def fmt(mean, se, digits: int = 2) -> str:
    if pd.isna(mean):
        return "-"
    return f"{mean:.{digits}f}" if pd.isna(se) else f"{mean:.{digits}f} ± {se:.{digits}f}"


ORDER = {name: i for i, name in enumerate([*BUILTIN, *DATASETS, *EMBEDDINGS, "test", "holdout", "train"])}


def order(col: pd.Series) -> pd.Series:
    """A sort key: methods, data sets and embeddings in registry order; numbers as they are."""
    if pd.api.types.is_numeric_dtype(col):
        return col
    return col.map(lambda v: ORDER.get(v, len(ORDER)))


def variant_names(d: pd.DataFrame) -> pd.Series:
    """What a plot's legend calls each row's configuration: the method, with the precision where the rows
    hold more than one, and the changed config values where one method was run with several."""
    name = d["method"].astype(str)
    if d["precision"].nunique() > 1:
        name = name + " [" + d["precision"] + "]"
    several = d.groupby("method")["config"].transform("nunique") > 1
    return name.where(~several, name + " {" + d["config"].replace("", "defaults") + "}")


def duplicated_cells(df: pd.DataFrame) -> list[str]:
    """Cells that cannot be told apart (same configuration and seed, different ids: e.g. runs of two
    versions resumed into one directory): one line each."""
    keys = [*CONFIG, "seed", "eval_split"]
    cells = df.drop_duplicates("cell_id")[[*keys, "cell_id"]]
    dup = cells[cells.duplicated(keys, keep=False)]
    return [f"{' / '.join(str(v) for v in key)}: cells {', '.join(g['cell_id'])}"
            for key, g in dup.groupby(keys, sort=False)]


def precision_note(df: pd.DataFrame) -> str:
    """For plot titles: the precision of every row, when they share one."""
    values = sorted(df["precision"].unique())
    return f" [{values[0]}]" if len(values) == 1 else ""
