"""`noprop-bench check RESULTS_DIR`: the accuracy gate.

Each finished cell's final test accuracy (default inference setting, mean over its inference runs) is
compared with its floor for its suite, method, data set and embedding in the packaged thresholds.csv
(or --thresholds FILE). Two floors, two checks:

  coarse  (`min_test_acc`)        far below every measured seed: catches a method that stopped learning
  tight   (`tight_min_test_acc`)  the lowest of the measured seeds minus 3 of their standard deviations:
                                  catches a regression of a few points

Exit status: 0 when every checked cell meets its floor; 1 when any cell is below it or failed
(diverged, raised); 2 when nothing could be checked (no matching floor, only changed suites, unreadable
input), so a gate that checks nothing never passes.

Floors hold for a suite as written: rows of a run whose suite was changed on the command line
(--epochs, --train-limit, --set, ...; the `overrides` column) are not checked against them.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from noprop_bench import paths
from noprop_bench.report.load import ReportError, final_rows, load_results
from noprop_bench.run.results import read_ledger

THRESHOLDS = paths.resource("thresholds.csv")
FLOORS = {"coarse": "min_test_acc", "tight": "tight_min_test_acc"}
KEYS = ["suite", "method", "dataset", "embedding"]


def read_thresholds(path) -> pd.DataFrame:
    """A thresholds CSV: a path, or the packaged one (a Traversable)."""
    if not path.is_file():
        raise ReportError(f"threshold file {path} not found")
    try:
        with path.open("r") as f:
            t = pd.read_csv(f, comment="#", skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise ReportError(f"{path}: not a readable CSV ({e})") from None
    need = [*KEYS, "min_test_acc"]
    missing = [c for c in need if c not in t.columns]
    if missing:
        raise ReportError(f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(need)}")
    for column in FLOORS.values():
        if column in t and not pd.to_numeric(t[column], errors="coerce").dropna().between(0, 100).all():
            raise ReportError(f"{path}: {column} must be a percentage from 0 to 100 where given")
    if t["min_test_acc"].isna().any():
        raise ReportError(f"{path}: min_test_acc must be given in every row")
    dup = t[t.duplicated(KEYS, keep=False)]
    if not dup.empty:
        raise ReportError(f"{path}: more than one threshold for {dup.iloc[0][KEYS].to_dict()}")
    return t


def check(results_dir: Path, thresholds: pd.DataFrame, floor: str = "coarse") -> tuple[list[str], list[str], list[str]]:
    """(failures, passes, notes): one line each, per cell."""
    column = FLOORS[floor]
    if column not in thresholds:
        raise ReportError(f"the thresholds have no column {column} (the {floor} floor)")
    thresholds = thresholds.dropna(subset=[column])
    df, _ = load_results(results_dir)
    ledger_path = Path(results_dir) / "cells.jsonl"
    failed = {k: v for k, v in read_ledger(ledger_path).items() if v["error"]} if ledger_path.exists() else {}
    notes = []
    changed = df[df["overrides"] != ""]
    if not changed.empty:
        notes.append(f"{changed['cell_id'].nunique()} cell(s) of a changed suite not checked "
                     f"({'; '.join(sorted(changed['overrides'].unique()))}): floors hold for suites as written")
    held = df[df["eval_split"] == "holdout"] if "eval_split" in df else df.iloc[:0]
    if not held.empty:
        notes.append(f"{held['cell_id'].nunique()} cell(s) evaluated on held-out training images not checked: "
                     f"thresholds are test accuracies")
    df = df.drop(held.index)
    last = final_rows(df[df["overrides"] == ""])
    last = last[last["eval_setting"] == "default"]
    cells = last.groupby(["cell_id", *KEYS, "seed"], as_index=False)["test_acc"].mean()
    merged = cells.merge(thresholds[[*KEYS, column]], on=KEYS, how="left")
    unmatched = merged[merged[column].isna()]
    if not unmatched.empty:
        notes.append(f"{len(unmatched)} cell(s) have no {floor} floor: "
                     + ", ".join(sorted({f"{r.suite}:{r.method}/{r.dataset}/{r.embedding}" for r in unmatched.itertuples()})))
    merged = merged.dropna(subset=[column])
    failures, passes = [], []
    for r in merged.sort_values(KEYS + ["seed"]).itertuples():
        limit = getattr(r, column)
        margin = r.test_acc - limit
        line = (f"{r.suite}: {r.method}/{r.dataset}/{r.embedding}/seed{r.seed}: test accuracy {r.test_acc:.2f}% "
                f"vs {floor} floor {limit:.2f}% (margin {margin:+.2f})")
        (failures if margin < 0 else passes).append(line)
    for entry in failed.values():
        failures.append(f"{entry['label']}: failed: {entry['error']}")
    if not failures and not passes:
        raise ReportError(f"{results_dir}: no cell could be checked. " + " ".join(notes))
    return failures, passes, notes
