"""`noprop-bench report RESULTS_DIR`: a set of sections over one loader (load.py), each computing its
tables, rendering its markdown and drawing its figures, written together into RESULTS_DIR/report/ (or
--out): report.md, a CSV per table and a PNG per figure.

  table1.py            Table 1: final accuracy per configuration, against the paper's where comparable
  efficiency.py        parameters per block and in total, model FLOPs per step, achieved FLOP/s, the roof
  competitors.py       NoProp's competitors beside NoProp and back-prop, and their published numbers
  parallel.py          block-parallel training: time and accuracy against the number of workers
  time_to_accuracy.py  training seconds to each accuracy target
  stability.py         per configuration: the last point, the lowest point, the largest drop between points
  memory.py            Table 2: the tensor peak and its split, the CUDA peak, ratios to back-prop
  curves.py            accuracy against training time (Figure 3) and against inference steps
  diagnostics.py       per-block and per-t accuracies that explain the numbers
  sittings.py          the invocations that wrote the directory, their machines and revisions (header)

The report is built in a temporary folder beside its destination and moved into place, so a run killed
while writing it leaves the previous report (or none), never half of one.
"""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from noprop_bench import faults
from noprop_bench.files import atomic_write_bytes
from noprop_bench.report import (ablations, competitors, curves, diagnostics, efficiency, memory, parallel, sittings,
                                 stability, table1, time_to_accuracy)
from noprop_bench.report.load import ReportError, Results, duplicated_cells, final_rows, load, load_results  # noqa: F401
from noprop_bench.report.section import Options, Section


def header(res: Results) -> list[str]:
    df, meta = res.df, res.meta
    lines = [f"# noprop-bench report: {res.results_dir}", ""]
    scaled = sorted(r for r in df["scaled"].unique() if r)
    if scaled and (df["scaled"] != "").all():
        lines += ["> **Not the paper's protocol.** No cell here ran the paper's protocol as written, so no number "
                  "is compared with the paper's (Table 1 shows them for context only). How the cells depart from it:",
                  ">"] + [f"> - {r}" for r in scaled] + [""]
    elif scaled:
        lines += ["> Some cells did not run the paper's protocol (the `scaled` column of results.csv says how); "
                  "only the others are compared with the paper.", ""]
    changed = sorted(r for r in df["overrides"].unique() if r)
    if changed:
        lines += ["> Changed on the command line from the suite as written: " + " | ".join(changed), ""]
    dups = duplicated_cells(df)
    if dups:
        lines += ["> ⚠ **Cells that cannot be told apart** (same configuration and seed under different ids, e.g. runs "
                  "of two versions resumed into one directory); their rows are pooled below:", ">"]
        lines += [f"> - {d}" for d in dups] + [""]
    git, machine = meta.get("git", {}), meta.get("machine", {})
    last = " (the last invocation)" if meta.get("previous") else ""
    lines += [f"- suite(s): {', '.join(sorted(df['suite'].unique()))}; cells: {df['cell_id'].nunique()}; rows: {len(df)}",
              f"- machine{last}: {machine.get('label', '?')}; device(s): {', '.join(sorted(df['device'].unique()))}; "
              f"torch {machine.get('torch', {}).get('version', '?')}",
              f"- git revision{last}: {git.get('revision')}{' (dirty)' if git.get('dirty') else ''}",
              f"- command: `{' '.join(meta.get('command', ['?']))}`"]
    return lines + sittings.lines(meta, res.ledger, set(df["cell_id"])) + [""]


def sections(res: Results, opts: Options, out: Path) -> list[Section]:
    return [table1.section(res, opts), efficiency.section(res, opts), competitors.section(res, opts),
            ablations.section(res, opts), parallel.section(res, opts, out),
            time_to_accuracy.section(res, opts), stability.section(res, opts), memory.section(res, opts, out), curves.section(res, opts, out),
            diagnostics.section(res, opts, out)]


def write_report(results_dir: Path, out: Path | None = None, sigmas: float = 1.0) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import seaborn as sns
    sns.set_theme(style="whitegrid", context="paper")
    res = load(results_dir)
    for d in duplicated_cells(res.df):
        print(f"warning: cells that cannot be told apart are pooled in the report: {d}", file=sys.stderr)
    out = Path(out) if out else Path(results_dir) / "report"
    out.parent.mkdir(parents=True, exist_ok=True)
    opts = Options(sigmas=sigmas, suffix=" (scaled)" if (res.df["scaled"] != "").all() else "")
    for stale in out.parent.glob(".report-*"):  # left by a run killed while writing its report
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=".report-", dir=out.parent))
    try:
        parts = sections(res, opts, tmp)
        lines = header(res)
        figures = {}
        for part in parts:
            for name, table in part.csvs.items():
                table.to_csv(tmp / name, index=False)
            figures.update(part.figures)
            if part.text:
                lines += [f"## {part.title}", "", part.text, ""]
        lines += ["## Figures", ""]
        lines += [f"![{name}]({name})" if done else f"- {name}: not drawn ({why})" for name, (done, why) in figures.items()]
        faults.point("report")
        atomic_write_bytes(tmp / "report.md", ("\n".join(lines) + "\n").encode())
        if out.exists():
            old = out.with_name(f".report-old-{out.name}")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
