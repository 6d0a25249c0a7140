#!/usr/bin/env python3
"""noprop-bench command line: run a suite, write a tidy CSV and its metadata, print a summary.

    python run_bench.py                       # a small Figure 3 on real MNIST (fetched automatically), with report
    python run_bench.py --list                # suites, methods, data sets, embeddings
    python run_bench.py --suite paper-table1 --dry-run      # the cells, their settings and cost
    python run_bench.py --suite quick --methods noprop-dt --embeddings one-hot,dim20 --seeds 0,1,2
    python run_bench.py report RESULTS_DIR    # plots and a markdown comparison with the paper
    python run_bench.py check RESULTS_DIR     # exit 1 if any cell is below its accuracy threshold
"""
from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path

from noprop_bench import paths

DEFAULT_SUITE = "fig3-small"  # a newcomer's first run: curves of accuracy against training time, in minutes


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


def _count(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got '{value}'")
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
    p = argparse.ArgumentParser(prog="run_bench.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", default=DEFAULT_SUITE, help=f"suite to run (default: {DEFAULT_SUITE}); see --list")
    p.add_argument("--list", action="store_true", help="list suites, methods, data sets and embeddings")
    p.add_argument("--methods", type=_csv, help="comma-separated methods, or 'all' (default: the suite's)")
    p.add_argument("--datasets", type=_csv, help="comma-separated data sets (default: the suite's)")
    p.add_argument("--embeddings", type=_csv, help="one-hot, dim20, prototype (default: the suite's)")
    p.add_argument("--seeds", type=_ints, help="comma-separated seeds (default: the suite's)")
    p.add_argument("--epochs", type=_positive, help="epochs per cell (default: the suite's, else Table 3)")
    p.add_argument("--train-limit", type=_positive, help="train on a fixed seeded subset of this many images")
    p.add_argument("--test-limit", type=_positive, help="test on a fixed seeded subset of this many images")
    p.add_argument("--holdout", type=_positive, help="evaluate on this many training images set aside (a fixed "
                                                     "draw, never trained on) instead of the test set: for "
                                                     "deciding paper-silent choices without the test set")
    p.add_argument("--inference-runs", type=_positive, help="repeats of stochastic inference (paper: 5)")
    p.add_argument("--inference-steps", type=_ints, help="after the last epoch, also evaluate continuous-time "
                                                         "methods at these step counts, e.g. 2,5,10,20,50,100")
    p.add_argument("--solvers", type=_csv, help="after the last epoch, also evaluate with these solvers "
                                                "(ancestral, euler, midpoint, heun2, rk4)")
    p.add_argument("--precision", type=_csv, help="fp32 (strict), tf32 (CUDA) or bf16 (autocast, fp32 master "
                                                  "weights), or a list: one cell per precision, side by side "
                                                  "(default: the suite's, else fp32)")
    p.add_argument("--eval-points", type=_positive, help="evaluate at this many evenly spaced points of "
                                                         "training (default: the suite's, else every epoch)")
    p.add_argument("--set", dest="settings", type=_setting, action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value in every cell whose method has KEY, e.g. --set lr=5e-4; "
                        "METHOD.KEY=VALUE for one method, e.g. --set noprop-ct.timesteps=20 (repeatable)")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    p.add_argument("--data-dir", help="data directory in torchvision's layout "
                                      "(default: $NOPROP_BENCH_DATA or ./data)")
    p.add_argument("--out", type=Path, help="output directory (default: results/runs/SUITE-TIMESTAMP)")
    p.add_argument("--fresh", action="store_true", help="do not resume: move an existing results.csv in --out "
                                                        "aside (to OUT/replaced-TIMESTAMP/) and run every cell")
    p.add_argument("--dry-run", action="store_true", help="list the cells, their settings and cost; run nothing")
    p.add_argument("--executor", default="local", choices=["local", "ray"],
                   help="local: every cell in this process (default); ray: one Ray task per cell")
    p.add_argument("--ray-address", help="Ray cluster to use: auto (one started by `ray start` on this node), "
                                         "HOST:PORT or ray://HOST:10001 (default: $RAY_ADDRESS, else a new local "
                                         "instance)")
    p.add_argument("--ray-cpus-per-task", type=_positive, default=1,
                   help="CPUs (and torch threads) per cell when the cluster has no GPUs (default 1)")
    p.add_argument("--ray-max-retries", type=_count, default=2, help="retries of a cell whose worker died (default 2)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-memory-probe", action="store_true", help="skip the few-step tensor-memory probe each "
                   "cell runs before its clock starts (bench/memory.py); its memory columns stay empty")
    p.add_argument("--no-report", action="store_true", help="do not write the report (plots and report.md in "
                                                            "OUT/report) at the end of the run")
    p.add_argument("--no-diagnostics", action="store_true", help="do not write diagnostics.csv (per-block and "
                                                                 "per-t accuracies; they never change results.csv)")
    return p


def list_everything() -> str:
    from noprop_bench.data import DATASETS
    from noprop_bench.run.suites import available_suites, load_suite
    from noprop_bench.methods import BROKEN, EMBEDDINGS, METHODS, PLUGINS
    lines = ["suites:"]
    for name in available_suites():
        lines.append(f"  {name:14s} {load_suite(name).get('description', '')}")
    lines.append("methods:")
    for name, cls in METHODS.items():
        where = f" [plugin: {cls.__module__}]" if name in PLUGINS else ""
        lines.append(f"  {name:14s} {cls.summary}{where}")
    lines += [f"  not loaded: {why}" for why in BROKEN.values()]
    lines.append("data sets:   " + ", ".join(DATASETS))
    lines.append("embeddings:  " + ", ".join(EMBEDDINGS))
    return "\n".join(lines)


# Overrides that change what a suite measures (rather than which of its cells run): the outputs of
# a run with any of these say "scaled", with the reasons, in every row, the metadata and the report.
SCALING = ("seeds", "train_limit", "test_limit", "holdout", "inference_runs", "eval_points", "precision")


def suite_with_overrides(args) -> tuple[dict, dict, tuple[str, ...]]:
    """The suite as the command line changes it, the --set/--epochs config overrides, and how they
    scale the suite (empty: they do not)."""
    from noprop_bench.run.suites import load_suite
    from noprop_bench.methods import METHODS
    suite = load_suite(args.suite)
    scaled = []
    if args.methods:
        suite["methods"] = list(METHODS) if args.methods == ["all"] else args.methods
    for key in ("datasets", "embeddings", "seeds", "inference_steps", "solvers",
                "train_limit", "test_limit", "holdout", "inference_runs", "eval_points", "precision"):
        value = getattr(args, key)
        if value is None or value == []:
            continue
        was = suite.get(key, "fp32" if key == "precision" else None)
        if key == "precision" and isinstance(was, str):
            was = [was]
        if key in SCALING and value != was:
            shown = ",".join(map(str, value)) if isinstance(value, list) else value
            was = ",".join(map(str, was)) if isinstance(was, list) else ("none" if was is None else was)
            scaled.append(f"{key.replace('_', '-')} {shown} (suite: {was})")
        suite[key] = value
    config = suite.get("config", {})
    settings = dict(args.settings)
    if args.epochs is not None:
        settings["epochs"] = args.epochs
    for key, value in settings.items():
        method, _, field = key.rpartition(".")
        tables = [config.get(method, {})] if method else [t for t in config.values() if isinstance(t, dict)]
        was = {config.get(field)} | {t.get(field, config.get(field)) for t in tables}
        if was != {value}:
            before = (tables[0] if method else config).get(field, config.get(field, "Table 3"))
            scaled.append(f"{key} {value} (suite: {before})")
    return suite, settings, tuple(scaled)


def summary_table(out_dir: Path) -> str:
    """Final test accuracy of every finished cell in `out_dir`, per method/dataset/embedding/setting:
    mean +/- s.e. over seeds x inference runs."""
    import pandas as pd
    from noprop_bench.report import ReportError, load_results
    try:
        df, _ = load_results(out_dir)
    except ReportError:
        return "no finished cells"
    if df.empty:
        return "no finished cells"
    last = df[df["step"] == df.groupby("cell_id")["step"].transform("max")]
    keys = ["method", "dataset", "embedding", "precision", "workers", "threads", "inference_steps", "solver"]
    keys = [k for k in keys if k in last]  # results from before precision and workers were recorded
    g = last.groupby(keys, sort=False)
    table = pd.DataFrame({
        "epochs": g["epoch"].max(),
        "n": g["test_acc"].size(),
        "test_acc": g["test_acc"].mean(),
        "s.e.": g["test_acc"].sem(),
        "train_s": g["cum_train_time_s"].mean(),
    }).reset_index()
    text = table.to_string(index=False, na_rep="-", float_format=lambda v: f"{v:.2f}")
    scaled = sorted(r for r in df["scaled"].unique() if r)
    if scaled:
        text += "\nSCALED (not the suite as written): " + " | ".join(scaled)
    return text


def dry_run(cells, writer_dir: Path | None) -> str:
    import pandas as pd
    from noprop_bench.run.results import read_ledger
    from noprop_bench.run.suites import cell_cost
    done = set()
    if writer_dir is not None and (writer_dir / "cells.jsonl").exists():
        done = {k for k, e in read_ledger(writer_dir / "cells.jsonl").items() if e["error"] is None}
    rows = []
    for c in cells:
        cfg = c.config
        rows.append({"method": c.method, "dataset": c.dataset, "embedding": c.embedding, "seed": c.seed,
                     "precision": c.precision,
                     "epochs": cfg.epochs, "batch": cfg.batch_size, "optim": cfg.optimizer, "lr": cfg.lr,
                     "wd": cfg.weight_decay, "T": cfg.timesteps, "eta": getattr(cfg, "eta", None),
                     "runs": c.inference_runs, "K": getattr(cfg, "workers", None),
                     "threads": getattr(cfg, "threads", None), **cell_cost(c),
                     "status": "finished" if c.id in done else "to run"})
    df = pd.DataFrame(rows)
    for col in ("train_nfe", "eval_nfe"):
        df[col] = df[col] / 1e6
    df = df.rename(columns={"train_nfe": "train_Mnfe", "eval_nfe": "eval_Mnfe"})
    todo = df[df["status"] == "to run"]
    lines = [df.to_string(index=False, na_rep="-", float_format=lambda v: f"{v:.4g}"), "",
             f"{len(df)} cell(s), {len(todo)} to run: {todo['train_steps'].sum():,} optimiser steps; "
             f"{todo['train_Mnfe'].sum():,.1f} M network evaluations x images in training (forward), "
             f"{todo['eval_Mnfe'].sum():,.1f} M in evaluation.",
             "Mnfe counts forward passes of one block (discrete methods) or of the CT network per image; "
             "it compares cells, it is not a time."]
    if cells[0].scaled:
        lines.append("SCALED (not the suite as written): " + "; ".join(cells[0].scaled))
    return "\n".join(lines)


def run(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)

    from noprop_bench.data import DataError
    from noprop_bench.run.results import ResultWriter, run_metadata
    from noprop_bench.run.runner import RunOptions, SetupError, resolve_device, run_cells
    from noprop_bench.measure.flops import ROOF_N, roof
    from noprop_bench.run.precision import check_precision
    from noprop_bench.run.suites import expand, load_suite, suite_name
    import torch

    if args.list:
        print(list_everything())
        return 0
    from noprop_bench.methods import BROKEN
    for why in BROKEN.values():  # the built-in methods still run; say once why a plugin does not
        print(f"warning: {why}", file=sys.stderr)
    try:
        suite, settings, scaled = suite_with_overrides(args)
        cells = expand(suite_name(args.suite), suite, settings, scaled)
        if args.dry_run:
            print(f"suite '{args.suite}': {suite.get('description', '')}")
            print(dry_run(cells, args.out))
            return 0
        # with Ray, the device is chosen on each worker; the driver needs none
        device = resolve_device(args.device) if args.executor == "local" else torch.device("cpu")
        precisions = sorted({c.precision for c in cells})
        if args.executor == "local":
            for p in precisions:
                check_precision(p, device)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        out = args.out or paths.runs_dir() / f"{suite_name(args.suite)}-{stamp}"
        writer = ResultWriter(out, fresh=args.fresh)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    if writer.moved_to:
        print(f"--fresh: earlier results moved to {writer.moved_to}", file=sys.stderr)
    if writer.dropped_rows:
        print(f"resuming: dropped {writer.dropped_rows} row(s) of unfinished or failed cells", file=sys.stderr)
    todo = [c for c in cells if not writer.done(c.id)]
    previous = writer.read_metadata()
    meta = run_metadata(argv, device)
    if args.executor == "ray":
        meta["device"] = {"type": "ray", "requested": args.device, "address": args.ray_address,
                          "cpus_per_task": args.ray_cpus_per_task}
    meta["executor"] = args.executor
    if args.executor == "local" and todo:  # measured once, before any cell: every row repeats its value
        meta["roof_gflops"] = {p: roof(device, p) for p in precisions}
        meta["roof"] = f"{ROOF_N}^3 matrix product per precision (bench/flops.py), GFLOP/s"
    meta.update(suite=suite_name(args.suite), paper_protocol=bool(load_suite(args.suite).get("paper")) and not scaled,
                scaled=list(scaled), suite_config=suite, config_overrides=settings, data_dir=args.data_dir,
                cells={**(previous or {}).get("cells", {}), **{c.id: c.as_dict() for c in cells}},
                skipped=[c.id for c in cells if writer.done(c.id)], failed={}, finished=None,
                previous=[*(previous or {}).pop("previous", []), previous] if previous else [])
    if meta["previous"]:
        meta["previous"][-1].pop("cells", None)  # the union is kept at the top level
    writer.write_metadata(meta)
    where = f"Ray ({args.ray_address or 'local'})" if args.executor == "ray" else f"{meta['device']['name']} ({device})"
    print(f"{len(cells)} cell(s) of suite '{args.suite}' on {where}; "
          f"{len(cells) - len(todo)} already finished in {writer.out_dir}, {len(todo)} to run; "
          f"writing {writer.csv_path}", file=sys.stderr)
    if scaled:
        print("SCALED (not the suite as written): " + "; ".join(scaled), file=sys.stderr)
    options = RunOptions(device, args.data_dir, False if args.no_progress else None, not args.no_diagnostics,
                         not args.no_memory_probe)
    try:
        if args.executor == "ray":
            from noprop_bench.run.ray_executor import run_cells_ray
            outcomes = run_cells_ray(todo, options, writer, args.device, args.ray_address,
                                     args.ray_cpus_per_task, args.ray_max_retries)
        else:
            outcomes = run_cells(todo, options, writer)
    except (DataError, SetupError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted: every finished cell is in {writer.csv_path}; run the same command again "
              f"to resume (the interrupted cell starts over)", file=sys.stderr)
        return 130
    meta["failed"] = {o.cell.id: o.error for o in outcomes if o.error}
    meta["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    writer.write_metadata(meta)

    print(summary_table(writer.out_dir))
    print(f"\nresults: {writer.csv_path}\ndiagnostics: {writer.diag_path}\nmetadata: {writer.meta_path}")
    if not args.no_report:
        from noprop_bench.report import ReportError, write_report
        try:
            print(f"report: {write_report(writer.out_dir) / 'report.md'}")
        except ReportError as e:  # e.g. every cell failed: the results above still stand
            print(f"report not written: {e}", file=sys.stderr)
    for error in meta["failed"].values():
        print(f"error: {error}", file=sys.stderr)
    return 1 if meta["failed"] else 0


COMMANDS = {"report": "noprop_bench.report", "check": "noprop_bench.report.check"}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        import importlib
        return importlib.import_module(COMMANDS[argv[0]]).main(argv[1:])
    if argv and argv[0] == "run":
        argv = argv[1:]
    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
