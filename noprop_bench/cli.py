"""The command line: `noprop-bench [run] ...`, `noprop-bench list`, `noprop-bench report DIR`,
`noprop-bench check DIR` (from a checkout, `python run_bench.py ...` is the same).

    noprop-bench                                   # the default suite (a small Figure 3 on MNIST), with its report
    noprop-bench list                              # suites, methods (with their papers), data sets, embeddings
    noprop-bench run --suite paper-table1 --dry-run     # the cells, their settings and cost
    noprop-bench run --suite quick --methods noprop-dt --embeddings one-hot,dim20 --seeds 0,1,2
    noprop-bench run --suite my-suite.toml --set lr=1e-3,5e-4      # a suite file; a config value swept
    noprop-bench report RESULTS_DIR                # plots and a markdown comparison with the paper
    noprop-bench check RESULTS_DIR                 # exit 1 if any cell is below its accuracy floor
"""
from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path

from noprop_bench import __version__, paths

DEFAULT_SUITE = "fig3-small"  # a newcomer's first run: curves of accuracy against training time, in minutes
COMMANDS = ("run", "list", "report", "check")


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


def _scalar(raw: str):
    for parse in (int, float):
        try:
            return parse(raw)
        except ValueError:
            pass
    return raw.strip()


def _setting(value: str) -> tuple[str, object]:
    """KEY=VALUE, or KEY=A,B,... (a list: one cell per value, as --seeds and --methods do)."""
    key, sep, raw = value.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got '{value}'")
    values = [_scalar(v) for v in raw.split(",")] if "," in raw else None
    if values is not None and any(v == "" for v in values):
        raise argparse.ArgumentTypeError(f"--set {value}: an empty value in the list")
    return key.strip(), values if values is not None else _scalar(raw)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="noprop-bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"noprop-bench {__version__}")
    sub = p.add_subparsers(dest="command", metavar="{run,list,report,check}")
    run = sub.add_parser("run", help="run a suite (the default command)", description="Run a suite's cells, "
                         "write results.csv, diagnostics.csv and metadata.json, and the report at the end.")
    add_run_arguments(run)
    sub.add_parser("list", help="suites, methods, data sets and embeddings (fast: imports no torch)")
    report = sub.add_parser("report", help="plots and a markdown comparison with the paper")
    report.add_argument("results_dir", type=Path, help="a run's output directory (holds results.csv)")
    report.add_argument("--out", type=Path, help="where to write (default: RESULTS_DIR/report)")
    report.add_argument("--sigmas", type=float, default=1.0,
                        help="flag |ours - paper| beyond this many combined standard errors (default 1)")
    check = sub.add_parser("check", help="exit 1 if any cell is below its accuracy floor")
    check.add_argument("results_dir", type=Path, help="a run's output directory (holds results.csv)")
    check.add_argument("--thresholds", type=Path, help="a thresholds CSV (default: the packaged one)")
    check.add_argument("--floor", choices=["coarse", "tight"], default="coarse",
                       help="coarse: far below the measured seeds, catches a method that stopped learning "
                            "(default); tight: the lowest measured seed minus 3 s.d., catches a regression")
    return p


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--suite", default=DEFAULT_SUITE,
                   help=f"a built-in suite (see `noprop-bench list`) or a path to a .toml file (default: {DEFAULT_SUITE})")
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
    p.add_argument("--precision", type=_csv, help="fp32 (strict), torch-default, tf32 (CUDA) or bf16, or a list: "
                                                  "one cell per precision (default: the suite's, else fp32)")
    p.add_argument("--eval-points", type=_positive, help="evaluate at this many evenly spaced points of "
                                                         "training (default: the suite's, else every epoch)")
    p.add_argument("--set", dest="settings", type=_setting, action="append", default=[], metavar="KEY=VALUE",
                   help="set a config value in every cell whose method has KEY (--set lr=5e-4), or in one "
                        "method's cells (--set noprop-ct.timesteps=20); a list sweeps it, one cell per value "
                        "(--set lr=1e-3,5e-4). Repeatable")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    p.add_argument("--deterministic", action="store_true",
                   help="deterministic algorithms (no cuDNN autotuning); recorded in every row")
    p.add_argument("--data-dir", help="data directory in torchvision's layout (default: $NOPROP_BENCH_DATA, "
                                      "else ./data)")
    p.add_argument("--out", type=Path, help="output directory (default: $NOPROP_BENCH_OUT/SUITE-TIMESTAMP, "
                                            "else ./results/runs/SUITE-TIMESTAMP)")
    p.add_argument("--fresh", action="store_true", help="do not resume: move an existing results.csv in --out "
                                                        "aside (to OUT/replaced-TIMESTAMP/) and run every cell")
    p.add_argument("--dry-run", action="store_true", help="list the cells, their settings and cost; run nothing")
    p.add_argument("--jobs", type=_positive, default=1, help="run this many cells at once, each in its own "
                   "process with the threads shared out (accuracy-only suites; refused for timed ones)")
    p.add_argument("--executor", default="local", choices=["local", "ray"],
                   help="local: every cell in this process (default); ray: one Ray task per cell")
    p.add_argument("--ray-address", help="Ray cluster to use: auto (one started by `ray start` on this node), "
                                         "HOST:PORT or ray://HOST:10001 (default: $RAY_ADDRESS, else a new local "
                                         "instance)")
    p.add_argument("--ray-cpus-per-task", type=_positive, default=1,
                   help="CPUs (and torch threads) per cell when the cluster has no GPUs (default 1)")
    p.add_argument("--ray-max-retries", type=_count, default=2, help="retries of a cell whose worker died (default 2)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-memory-probe", action="store_true", help="skip the tensor-memory probe each cell runs "
                   "before its clock starts (measure/memory.py); its memory columns stay empty")
    p.add_argument("--no-flops", action="store_true", help="skip counting model FLOPs (measure/flops.py); the "
                   "FLOP columns stay empty")
    p.add_argument("--no-report", action="store_true", help="do not write the report (plots and report.md in "
                                                            "OUT/report) at the end of the run")
    p.add_argument("--track", type=_csv, default=[], metavar="TRACKERS",
                   help="also stream the rows, and the report's figures at the end, to tensorboard, mlflow and/or "
                        "wandb (comma-separated; offline, under OUT; needs the track extra)")
    p.add_argument("--no-diagnostics", action="store_true", help="do not write diagnostics.csv (per-block and "
                                                                 "per-t accuracies; they never change results.csv)")
    p.add_argument("--no-checkpoints", action="store_true", help="do not save a cell's state at its evaluation "
                   "points (OUT/checkpoints/, deleted as each cell finishes); a killed cell then starts over")


def list_everything() -> str:
    """Suites, methods, data sets and embeddings, without importing torch."""
    from importlib import metadata

    import tomllib

    from noprop_bench.data.specs import DATASETS
    from noprop_bench.methods.catalog import BUILTIN, EMBEDDINGS
    lines = ["suites:"]
    for name, path in paths.builtin_suites().items():
        lines.append(f"  {name:14s} {tomllib.loads(path.read_text()).get('description', '')}")
    lines.append("methods:")
    for name, entry in BUILTIN.items():
        lines += [f"  {name:20s} {entry.summary}", f"  {'':20s} ({entry.paper})"]
    for ep in metadata.entry_points(group="noprop_bench.methods"):
        dist = getattr(ep, "dist", None)
        lines.append(f"  {ep.name:20s} [plugin from {dist.name if dist else '?'}: {ep.value}]")
    lines.append("data sets:   " + ", ".join(DATASETS))
    lines.append("embeddings:  " + ", ".join(EMBEDDINGS))
    return "\n".join(lines)


def suite_with_overrides(args) -> tuple[dict, dict, tuple[str, ...]]:
    """The suite as the command line changes it, the --set/--epochs config overrides, and how they change
    the suite as written (empty: they do not; choosing methods, data sets or embeddings, or adding sweep
    settings, selects cells of the suite and changes none)."""
    from noprop_bench.methods import METHODS
    from noprop_bench.run.suites import load_suite
    suite = load_suite(args.suite)
    changed = []
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
        if key in ("seeds", "train_limit", "test_limit", "holdout", "inference_runs", "eval_points", "precision") \
                and value != was:
            shown = ",".join(map(str, value)) if isinstance(value, list) else value
            was = ",".join(map(str, was)) if isinstance(was, list) else ("none" if was is None else was)
            changed.append(f"{key.replace('_', '-')} {shown} (suite: {was})")
        suite[key] = value
    config = suite.get("config", {})
    settings = dict(args.settings)
    if args.epochs is not None:
        clash = [k for k in settings if k.rpartition(".")[2] == "epochs" and settings[k] != args.epochs]
        if clash:
            raise ValueError(f"--epochs {args.epochs} and --set {clash[0]}={settings[clash[0]]} disagree; pass one of them")
        settings["epochs"] = args.epochs
    for key, value in settings.items():
        method, _, field = key.rpartition(".")
        tables = [config.get(method, {})] if method else [t for t in config.values() if isinstance(t, dict)]
        was = {config.get(field)} | {t.get(field, config.get(field)) for t in tables}
        if isinstance(value, list) or was != {value}:
            before = (tables[0] if method else config).get(field, config.get(field, "Table 3"))
            shown = ",".join(map(str, value)) if isinstance(value, list) else value
            changed.append(f"{key} {shown} (suite: {before})")
    return suite, settings, tuple(changed)


def summary_table(out_dir: Path) -> str:
    """Final test accuracy of every finished cell in `out_dir`, per configuration and setting:
    mean +/- s.e. over seeds x inference runs."""
    import pandas as pd

    from noprop_bench.report import ReportError, load_results
    try:
        df, _ = load_results(out_dir)
    except ReportError:
        return "no finished cells"
    last = df[df["step"] == df.groupby("cell_id")["step"].transform("max")]
    keys = ["method", "dataset", "embedding", "config", "precision", "inference_steps", "solver"]
    g = last.groupby(keys, sort=False, dropna=False)
    table = pd.DataFrame({"epochs": g["epoch"].max(), "n": g["test_acc"].size(), "test_acc": g["test_acc"].mean(),
                          "s.e.": g["test_acc"].sem(), "train_s": g["cum_train_time_s"].mean()}).reset_index()
    table["config"] = table["config"].replace("", "-")
    return table.to_string(index=False, na_rep="-", float_format=lambda v: f"{v:.2f}")


def dry_run(cells, writer_dir: Path | None) -> str:
    import pandas as pd

    from noprop_bench.run import checkpoint
    from noprop_bench.run.plan import make_plan
    from noprop_bench.run.results import read_ledger
    done = set()
    if writer_dir is not None and (writer_dir / "cells.jsonl").exists():
        done = {k for k, e in read_ledger(writer_dir / "cells.jsonl").items() if e["error"] is None}
    rows = []
    for c in cells:
        cfg, plan = c.config, make_plan(c)
        rows.append({"method": c.method, "dataset": c.dataset, "embedding": c.embedding, "seed": c.seed,
                     "precision": c.precision, "epochs": cfg.epochs, "batch": cfg.batch_size, "optim": cfg.optimizer,
                     "lr": cfg.lr, "wd": cfg.weight_decay, "T": cfg.timesteps, "eta": getattr(cfg, "eta", None),
                     "runs": c.inference_runs, "config": c.config_label() or "-", **plan.cost(),
                     "protocol": "paper" if not plan.departures else "scaled",
                     "status": "finished" if c.id in done else "to-run" if writer_dir is None or not
                     checkpoint.file(writer_dir / checkpoint.FOLDER, c.id).exists() else "checkpointed"})
    df = pd.DataFrame(rows)
    for col in ("train_nfe", "eval_nfe"):
        df[col] = df[col] / 1e6
    df = df.rename(columns={"train_nfe": "train_Mnfe", "eval_nfe": "eval_Mnfe"})
    todo = df[df["status"] != "finished"]
    lines = [df.to_string(index=False, na_rep="-", float_format=lambda v: f"{v:.4g}"), "",
             f"{len(df)} cell(s), {len(todo)} to run: {todo['train_steps'].sum():,} optimiser steps; "
             f"{todo['train_Mnfe'].sum():,.1f} M network evaluations x images in training (forward), "
             f"{todo['eval_Mnfe'].sum():,.1f} M in evaluation.",
             "Mnfe counts forward passes of one block (discrete methods) or of the CT network per image; "
             "it compares cells, it is not a time."]
    if cells[0].overrides:
        lines.append("Changed from the suite as written: " + "; ".join(cells[0].overrides))
    return "\n".join(lines)


def run(args, argv: list[str]) -> int:
    from noprop_bench.data import DataError
    from noprop_bench.data.sources import ensure_available
    from noprop_bench.methods import BROKEN
    from noprop_bench.run.allocator import keep_freed_memory
    from noprop_bench.run.plan import make_plan
    from noprop_bench.run.precision import check_precision, determinism
    from noprop_bench.run.results import ResultWriter, run_metadata
    from noprop_bench.run.runner import FatalDeviceError, RunOptions, SetupError, resolve_device, run_cells
    from noprop_bench.run.suites import expand, suite_name
    import torch

    keep_freed_memory()
    for why in BROKEN.values():  # the built-in methods still run; say once why a plugin does not
        print(f"warning: {why}", file=sys.stderr)
    name = suite_name(args.suite)
    try:
        suite, settings, changed = suite_with_overrides(args)
        cells = expand(name, suite, settings, changed)
        if args.dry_run:
            print(f"suite '{name}': {suite.get('description', '')}")
            print(dry_run(cells, args.out))
            return 0
        from noprop_bench.run.trackers import check_trackers
        check_trackers(args.track)
        if args.jobs > 1 and args.executor == "ray":
            raise ValueError("--jobs is for this machine; with --executor ray, Ray runs the cells side by side")
        # with Ray, the device is chosen on each worker; the driver needs none
        device = resolve_device(args.device) if args.executor == "local" else torch.device("cpu")
        if args.executor == "local":
            for p in sorted({c.precision for c in cells}):
                check_precision(p, device)
            if args.jobs > 1 and suite.get("timed"):
                raise ValueError(f"--jobs {args.jobs}: suite '{name}' measures training times or memory, which cells "
                                 f"running side by side would distort; run it with one job")
            parallel = [c for c in cells if getattr(c.config, "workers", 1) > 1]
            if device.type == "cuda" and parallel:
                raise ValueError(f"{parallel[0].label()}: workers = {parallel[0].config.workers} trains its blocks in "
                                 f"CPU worker processes; on {device} use workers = 1")
            root = Path(args.data_dir) if args.data_dir else paths.data_dir()
            for dataset in dict.fromkeys(c.dataset for c in cells):  # every data set there before any cell runs
                from noprop_bench.data import get_spec
                ensure_available(get_spec(dataset), root)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        out = args.out or paths.runs_dir() / f"{name}-{stamp}"
        writer = ResultWriter(out, fresh=args.fresh)
        writer.check_unchanged(cells)
    except (ValueError, OSError, DataError) as e:
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
    meta.update(executor=args.executor, jobs=args.jobs, suite=name, suite_config=suite, config_overrides=settings,
                changed_from_suite=list(changed), deterministic=args.deterministic, data_dir=args.data_dir,
                paper_protocol=not any(make_plan(c).departures for c in cells),
                cells={**(previous or {}).get("cells", {}), **{c.id: c.as_dict() for c in cells}},
                skipped=[c.id for c in cells if writer.done(c.id)], failed={}, finished=None,
                previous=[*(previous or {}).pop("previous", []), previous] if previous else [])
    if meta["previous"]:
        meta["previous"][-1].pop("cells", None)  # the union is kept at the top level
    if args.executor == "local" and todo and not args.no_flops:  # measured once, before any cell
        from noprop_bench.measure.flops import roof, roof_n
        precisions = sorted({c.precision for c in todo})
        meta["roof_gflops"] = {p: roof(device, p) for p in precisions}
        meta["roof_n"] = {p: roof_n(device, p) for p in precisions}
        meta["roof"] = "n^3 matrix product per precision, n in roof_n (measure/flops.py), GFLOP/s"
    meta["trackers"] = args.track
    writer.write_metadata(meta)
    if args.track:
        from noprop_bench.run.trackers import Trackers
        writer.trackers = Trackers(args.track, writer.out_dir, meta)
    where = f"Ray ({args.ray_address or 'local'})" if args.executor == "ray" else f"{meta['machine']['label']} ({device})"
    print(f"{len(cells)} cell(s) of suite '{name}' on {where}; {len(cells) - len(todo)} already finished in "
          f"{writer.out_dir}, {len(todo)} to run; writing {writer.csv_path}", file=sys.stderr)
    if changed:
        print("changed from the suite as written: " + "; ".join(changed), file=sys.stderr)
    options = RunOptions(device, args.data_dir, False if args.no_progress else None, not args.no_diagnostics,
                         not args.no_memory_probe, not args.no_flops, args.deterministic,
                         checkpoints=None if args.no_checkpoints or args.executor == "ray"
                         else str(writer.checkpoints.resolve()))
    stopped = None
    try:
        if args.executor == "ray":
            from noprop_bench.run.ray_executor import run_cells_ray
            outcomes = run_cells_ray(todo, options, writer, args.device, args.ray_address,
                                     args.ray_cpus_per_task, args.ray_max_retries)
        elif args.jobs > 1:
            from noprop_bench.run.jobs import run_cells_jobs
            outcomes = run_cells_jobs(todo, options, writer, args.jobs)
        else:
            with determinism(args.deterministic, device):
                outcomes = run_cells(todo, options, writer)
    except (SetupError, DataError) as e:
        if writer.trackers is not None:
            writer.trackers.shutdown()
        print(f"error: {e}", file=sys.stderr)
        return 2
    except FatalDeviceError as e:
        stopped, outcomes = str(e), []
    except KeyboardInterrupt:
        if writer.trackers is not None:
            writer.trackers.shutdown()
        where = "starts over" if args.no_checkpoints else "goes on from its last evaluation point"
        print(f"\ninterrupted: every finished cell is in {writer.csv_path}; run the same command again "
              f"to resume (the interrupted cell {where})", file=sys.stderr)
        return 130
    from noprop_bench.run.results import read_ledger
    ledger = read_ledger(writer.ledger_path)
    meta["failed"] = {k: e["error"] for k, e in ledger.items() if e["error"] and k in {c.id for c in todo}}
    meta["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    writer.write_metadata(meta)

    print(summary_table(writer.out_dir))
    print(f"\nresults: {writer.csv_path}\ndiagnostics: {writer.diag_path}\nmetadata: {writer.meta_path}")
    if not args.no_report:
        from noprop_bench.report import ReportError, write_report
        try:
            report_dir = write_report(writer.out_dir)
            print(f"report: {report_dir / 'report.md'}")
            if writer.trackers is not None:
                writer.trackers.figures(report_dir)
        except ReportError as e:  # e.g. every cell failed: the results above still stand
            print(f"report not written: {e}", file=sys.stderr)
    if writer.trackers is not None:
        writer.trackers.shutdown()
    for error in meta["failed"].values():
        print(f"error: {error}", file=sys.stderr)
    if stopped:
        print(f"stopped: the device is unusable after this error, so the sweep ended here; run the same command "
              f"again to resume in a fresh process ({stopped})", file=sys.stderr)
    return 1 if meta["failed"] or stopped else 0


def report(args) -> int:
    from noprop_bench.report import ReportError, write_report
    try:
        out = write_report(args.results_dir, args.out, args.sigmas)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"report: {out / 'report.md'}")
    return 0


def check(args) -> int:
    from noprop_bench.report import ReportError
    from noprop_bench.report.check import THRESHOLDS, check as check_dir, read_thresholds
    try:
        failures, passes, notes = check_dir(args.results_dir, read_thresholds(args.thresholds or THRESHOLDS),
                                            args.floor)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for line in notes:
        print(f"note: {line}")
    for line in passes:
        print(f"ok    {line}")
    for line in failures:
        print(f"FAIL  {line}")
    print(f"{len(passes)} cell(s) at or above their {args.floor} floor, {len(failures)} below or failed")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--list" in argv:
        print("error: --list is now a command: noprop-bench list", file=sys.stderr)
        return 2
    if not argv or argv[0] not in (*COMMANDS, "-h", "--help", "--version"):
        argv = ["run", *argv]  # run is the default command
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # argparse has printed its one-line usage error (or the help)
        return int(e.code or 0)
    if args.command == "list":
        print(list_everything())
        return 0
    if args.command == "report":
        return report(args)
    if args.command == "check":
        return check(args)
    return run(args, argv[1:])


if __name__ == "__main__":
    sys.exit(main())
