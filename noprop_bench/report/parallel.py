"""Block-parallel training: final accuracy and training time per number of worker processes K and torch
threads per worker, for methods run at more than one K; speed-up = the training time of one worker with
one thread (or with the most threads run) over this row's (methods/parallel_dt.py). Where the time went,
per worker (diagnostics.csv, summed over the training intervals and averaged over seeds): seconds busy in
its training loop, the CPU seconds it got in them (fewer than busy: it waited for a core), seconds idle
waiting for the next interval, and the main process's CPU seconds over the intervals' wall seconds."""
from __future__ import annotations

import numpy as np
import pandas as pd

from noprop_bench.report.load import Results, final_rows, fmt
from noprop_bench.report.section import Options, Section


def compute(df: pd.DataFrame) -> pd.DataFrame:
    last = final_rows(df)
    last = last[last["eval_setting"] == "default"]
    d = last[last.groupby(["method", "dataset"])["workers"].transform("nunique") > 1]
    if d.empty:
        return pd.DataFrame()
    g = d.groupby(["method", "dataset", "precision", "workers", "threads"])
    out = pd.DataFrame({"cells": g["cell_id"].nunique(), "acc": g["test_acc"].mean(), "acc_se": g["test_acc"].sem(),
                        "train_s": g["cum_train_time_s"].mean(), "train_s_se": g["cum_train_time_s"].sem()}).reset_index()
    for _, grp in out.groupby(["method", "dataset", "precision"]):
        one = grp[grp["workers"] == 1]
        for name, ref in (("speedup_vs_1x1", one[one["threads"] == one["threads"].min()]),
                          ("speedup_vs_1xmax", one[one["threads"] == one["threads"].max()])):
            if not ref.empty:
                out.loc[grp.index, name] = ref["train_s"].iloc[0] / grp["train_s"]
    return out


def workers(res: Results) -> pd.DataFrame:
    """Per K x threads x worker: busy, CPU and waiting seconds, and the main process's CPU share."""
    d = res.diag
    if d.empty or not d["diagnostic"].astype(str).str.startswith("worker_").any():
        return pd.DataFrame()
    cells = res.df.drop_duplicates("cell_id").set_index("cell_id")[["method", "dataset", "workers", "threads", "seed"]]
    d = d[d["diagnostic"].astype(str).str.match(r"(worker|parent)_")]
    d = d.drop(columns=[c for c in cells.columns if c in d.columns]).join(cells, on="cell_id")
    per_cell = d.groupby(["method", "dataset", "workers", "threads", "seed", "block", "diagnostic"])["value"].sum()
    mean = per_cell.groupby(level=["method", "dataset", "workers", "threads", "block", "diagnostic"]).mean().unstack()
    return mean.reset_index()


def plot(table: pd.DataFrame, path, suffix: str) -> bool:
    import matplotlib.pyplot as plt
    if table.empty:
        return False
    fig, (ax_t, ax_a) = plt.subplots(1, 2, figsize=(9, 3.6))
    for (method, dataset, threads), g in table.groupby(["method", "dataset", "threads"]):
        label = f"{method}/{dataset}, {int(threads)} thread(s) each"
        ax_t.errorbar(g["workers"], g["train_s"], yerr=g["train_s_se"].fillna(0), marker="o", capsize=3, label=label)
        ax_a.errorbar(g["workers"], g["acc"], yerr=g["acc_se"].fillna(0), marker="o", capsize=3, label=label)
    ax_t.set(xlabel="workers K", ylabel="training time (s)", title=f"training time against K{suffix}")
    ax_a.set(xlabel="workers K", ylabel="test accuracy (%)", title=f"accuracy against K{suffix}")
    for ax in (ax_t, ax_a):
        ax.set_xticks(sorted(table["workers"].unique()))
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def section(res: Results, opts: Options, out) -> Section:
    par, w = compute(res.df), workers(res)
    drawn = plot(par, out / "parallel.png", opts.suffix)
    figures = {"parallel.png": (drawn, "no method run with more than one number of workers (suite 'parallel')")}
    if par.empty and w.empty:
        return Section("Block-parallel training: workers K", None, figures=figures)
    f = lambda v: "-" if pd.isna(v) else f"{v:.2f}"
    lines = [__doc__.replace("\n", " ").strip()]
    if not par.empty:
        lines += ["", "| data set | method | precision | K | threads | cells | accuracy | train s | × vs 1×1 | × vs 1×max |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in par.itertuples():
            lines.append(f"| {r.dataset} | {r.method} | {r.precision} | {int(r.workers)} | {int(r.threads)} | {r.cells} | "
                         f"{fmt(r.acc, r.acc_se)} | {fmt(r.train_s, r.train_s_se)} | "
                         f"{f(getattr(r, 'speedup_vs_1x1', np.nan))} | {f(getattr(r, 'speedup_vs_1xmax', np.nan))} |")
    if not w.empty:
        lines += ["", "| data set | method | K | threads | worker | steps | busy s | CPU s | waiting s |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in w.sort_values(["dataset", "method", "workers", "threads", "block"]).itertuples():
            if r.block > 0:
                lines.append(f"| {r.dataset} | {r.method} | {int(r.workers)} | {int(r.threads)} | {int(r.block)} | "
                             f"{f(r.worker_steps)} | {f(r.worker_busy_s)} | {f(r.worker_cpu_s)} | {f(r.worker_wait_s)} |")
            else:
                lines.append(f"| {r.dataset} | {r.method} | {int(r.workers)} | {int(r.threads)} | main process | - | "
                             f"{f(r.parent_wall_s)} (wall) | {f(r.parent_cpu_s)} | - |")
    csvs = {"parallel.csv": par} if not par.empty else {}
    if not w.empty:
        csvs["parallel_workers.csv"] = w
    return Section("Block-parallel training: workers K", "\n".join(lines), csvs=csvs, figures=figures)
