#!/usr/bin/env python3
"""noprop-bench command line: run a suite, write a tidy CSV and its metadata, print a summary.

    python run_bench.py                       # the `quick` suite on real MNIST (fetched automatically)
    python run_bench.py --list                # suites, methods, data sets, embeddings
    python run_bench.py --suite quick --methods noprop-dt --embeddings one-hot,dim20 --seeds 0,1,2
"""
from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent


def _csv(value: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list")
    return items


def _ints(value: str) -> list[int]:
    try:
        return [int(v) for v in _csv(value)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got '{value}'") from None


def _positive(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{value}'")
    return n


def _setting(value: str) -> tuple[str, object]:
    key, sep, raw = value.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got '{value}'")
    for parse in (int, float):
        try:
            return key.strip(), parse(raw)
        except ValueError:
            pass
    return key.strip(), raw.strip()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="run_bench.py", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", default="quick", help="suite to run (default: quick); see --list")
    p.add_argument("--list", action="store_true", help="list suites, methods, data sets and embeddings")
    p.add_argument("--methods", type=_csv, help="comma-separated methods, or 'all' (default: the suite's)")
    p.add_argument("--datasets", type=_csv, help="comma-separated data sets (default: the suite's)")
    p.add_argument("--embeddings", type=_csv, help="one-hot, dim20, prototype (default: the suite's)")
    p.add_argument("--seeds", type=_ints, help="comma-separated seeds (default: the suite's)")
    p.add_argument("--epochs", type=_positive, help="epochs per cell (default: the suite's, else Table 3)")
    p.add_argument("--train-limit", type=_positive, help="train on a fixed seeded subset of this many images")
    p.add_argument("--test-limit", type=_positive, help="test on a fixed seeded subset of this many images")
    p.add_argument("--inference-runs", type=_positive, help="repeats of stochastic inference (paper: 5)")
    p.add_argument("--inference-steps", type=_ints, help="after the last epoch, also evaluate continuous-time "
                                                         "methods at these step counts, e.g. 2,5,10,20,50,100")
    p.add_argument("--solvers", type=_csv, help="after the last epoch, also evaluate with these solvers "
                                                "(ancestral, euler, midpoint, heun2, rk4)")
    p.add_argument("--set", dest="settings", type=_setting, action="append", default=[], metavar="KEY=VALUE",
                   help="override a method config value for every cell, e.g. --set lr=5e-4 (repeatable)")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    p.add_argument("--data-dir", help="data directory in torchvision's layout "
                                      "(default: $NOPROP_BENCH_DATA or ./data)")
    p.add_argument("--out", type=Path, help="output directory (default: results/runs/SUITE-TIMESTAMP)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def list_everything() -> str:
    from bench.data import DATASETS
    from bench.suites import available_suites, load_suite
    from methods import EMBEDDINGS, METHODS
    lines = ["suites:"]
    for name in available_suites():
        lines.append(f"  {name:14s} {load_suite(name).get('description', '')}")
    lines.append("methods:")
    for name, cls in METHODS.items():
        lines.append(f"  {name:14s} {cls.summary}")
    lines.append("data sets:   " + ", ".join(DATASETS))
    lines.append("embeddings:  " + ", ".join(EMBEDDINGS))
    return "\n".join(lines)


def suite_with_overrides(args) -> dict:
    from bench.suites import load_suite
    from methods import METHODS
    suite = load_suite(args.suite)
    if args.methods:
        suite["methods"] = list(METHODS) if args.methods == ["all"] else args.methods
    for key in ("datasets", "embeddings", "seeds", "inference_steps", "solvers"):
        if getattr(args, key):
            suite[key] = getattr(args, key)
    for key in ("train_limit", "test_limit", "inference_runs"):
        if getattr(args, key) is not None:
            suite[key] = getattr(args, key)
    config = dict(suite.get("config", {}))
    config.update(dict(args.settings))
    if args.epochs is not None:
        config["epochs"] = args.epochs
    suite["config"] = config
    return suite


def summary_table(rows: list[dict]):
    """Final-epoch test accuracy per method/dataset/embedding/setting: mean +/- s.e. over seeds x runs."""
    import pandas as pd
    if not rows:
        return "no results"
    df = pd.DataFrame(rows)
    last = df[df["epoch"] == df.groupby("cell_id")["epoch"].transform("max")]
    keys = ["method", "dataset", "embedding", "inference_steps", "solver"]
    g = last.groupby(keys, sort=False)
    table = pd.DataFrame({
        "epochs": g["epoch"].max(),
        "n": g["test_acc"].size(),
        "test_acc": g["test_acc"].mean(),
        "s.e.": g["test_acc"].sem(),
        "train_s": g["cum_train_time_s"].mean(),
    }).reset_index()
    return table.to_string(index=False, na_rep="-", float_format=lambda v: f"{v:.2f}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)

    from bench.data import DataError
    from bench.results import ResultsExistError, ResultWriter, run_metadata
    from bench.runner import RunOptions, resolve_device, run_cells
    from bench.suites import expand

    if args.list:
        print(list_everything())
        return 0
    try:
        suite = suite_with_overrides(args)
        cells = expand(args.suite, suite)
        device = resolve_device(args.device)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        out = args.out or PROJECT_ROOT / "results" / "runs" / f"{args.suite}-{stamp}"
        writer = ResultWriter(out)
    except (ValueError, ResultsExistError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    meta = run_metadata(argv, device)
    meta.update(suite=args.suite, suite_config=suite, data_dir=args.data_dir,
                cells={c.id: c.as_dict() for c in cells}, failed={}, finished=None)
    writer.write_metadata(meta)
    print(f"{len(cells)} cell(s) of suite '{args.suite}' on {meta['device']['name']} ({device}); "
          f"writing {writer.csv_path}", file=sys.stderr)
    try:
        outcomes = run_cells(cells, RunOptions(device, args.data_dir, False if args.no_progress else None), writer)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted: every finished epoch is in {writer.csv_path}", file=sys.stderr)
        return 130
    meta["failed"] = {o.cell.id: o.error for o in outcomes if o.error}
    meta["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    writer.write_metadata(meta)

    print(summary_table([row for o in outcomes for row in o.rows]))
    print(f"\nresults: {writer.csv_path}\nmetadata: {writer.meta_path}")
    for error in meta["failed"].values():
        print(f"error: {error}", file=sys.stderr)
    return 1 if meta["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
