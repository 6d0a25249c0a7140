"""`python run_bench.py check RESULTS_DIR`: accuracy regression gate.

Each finished cell's final test accuracy (default inference setting, mean over its inference runs) is
compared with the threshold for its suite, method, data set and embedding in results/thresholds.csv
(or --thresholds FILE). Exit status: 0 when every checked cell meets its threshold; 1 when any cell is
below it or failed (diverged); 2 when nothing could be checked (no matching thresholds, only scaled
rows, unreadable input), so a gate that checks nothing never passes.

Thresholds hold for a suite as written: rows of a run scaled on the command line (--epochs,
--train-limit, --set, ...; the `scaled` column) are not checked against them.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from noprop_bench import paths
from noprop_bench.report import ReportError, final_rows, load_results
from noprop_bench.run.results import read_ledger

THRESHOLDS = paths.resource("thresholds.csv")
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
    if not pd.to_numeric(t["min_test_acc"], errors="coerce").between(0, 100).all():
        raise ReportError(f"{path}: min_test_acc must be a percentage from 0 to 100 in every row")
    dup = t[t.duplicated(KEYS, keep=False)]
    if not dup.empty:
        raise ReportError(f"{path}: more than one threshold for {dup.iloc[0][KEYS].to_dict()}")
    return t


def check(results_dir: Path, thresholds: pd.DataFrame) -> tuple[list[str], list[str], list[str]]:
    """(failures, passes, notes): one line each, per cell."""
    df, _ = load_results(results_dir)
    ledger_path = Path(results_dir) / "cells.jsonl"
    failed = {k: v for k, v in read_ledger(ledger_path).items() if v["error"]} if ledger_path.exists() else {}
    notes = []
    scaled = df[df["scaled"] != ""]
    if not scaled.empty:
        notes.append(f"{scaled['cell_id'].nunique()} scaled cell(s) not checked "
                     f"({'; '.join(sorted(scaled['scaled'].unique()))}): thresholds hold for suites as written")
    held = df[df["eval_split"] == "holdout"] if "eval_split" in df else df.iloc[:0]
    if not held.empty:
        notes.append(f"{held['cell_id'].nunique()} cell(s) evaluated on held-out training images not checked: "
                     f"thresholds are test accuracies")
    df = df.drop(held.index)
    last = final_rows(df[df["scaled"] == ""])
    last = last[last["eval_setting"] == "default"]
    cells = last.groupby(["cell_id", *KEYS, "seed"], as_index=False)["test_acc"].mean()
    merged = cells.merge(thresholds, on=KEYS, how="left")
    unmatched = merged[merged["min_test_acc"].isna()]
    if not unmatched.empty:
        notes.append(f"{len(unmatched)} cell(s) have no threshold: "
                     + ", ".join(sorted({f"{r.suite}:{r.method}/{r.dataset}/{r.embedding}" for r in unmatched.itertuples()})))
    merged = merged.dropna(subset=["min_test_acc"])
    failures, passes = [], []
    for r in merged.sort_values(KEYS + ["seed"]).itertuples():
        margin = r.test_acc - r.min_test_acc
        line = (f"{r.suite}: {r.method}/{r.dataset}/{r.embedding}/seed{r.seed}: test accuracy {r.test_acc:.2f}% "
                f"vs threshold {r.min_test_acc:.2f}% (margin {margin:+.2f})")
        (failures if margin < 0 else passes).append(line)
    for entry in failed.values():
        failures.append(f"{entry['label']}: failed: {entry['error']}")
    if not failures and not passes:
        raise ReportError(f"{results_dir}: no cell could be checked. " + " ".join(notes))
    return failures, passes, notes


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="run_bench.py check", description=__doc__.split("\n")[0])
    p.add_argument("results_dir", type=Path, help="a run's output directory (holds results.csv)")
    p.add_argument("--thresholds", type=Path, default=THRESHOLDS, help=f"default: {THRESHOLDS}")
    args = p.parse_args(argv)
    try:
        failures, passes, notes = check(args.results_dir, read_thresholds(args.thresholds))
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for line in notes:
        print(f"note: {line}")
    for line in passes:
        print(f"ok    {line}")
    for line in failures:
        print(f"FAIL  {line}")
    print(f"{len(passes)} cell(s) at or above threshold, {len(failures)} below or failed")
    return 1 if failures else 0
