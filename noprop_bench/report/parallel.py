"""Block-parallel training: final accuracy and training time per number of worker processes K and torch
threads per worker, for methods run at more than one K; speed-up = the training time of one worker with
one thread (or with the most threads run) over this row's (methods/parallel_dt.py)."""
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
    par = compute(res.df)
    drawn = plot(par, out / "parallel.png", opts.suffix)
    figures = {"parallel.png": (drawn, "no method run with more than one number of workers (suite 'parallel')")}
    if par.empty:
        return Section("Block-parallel training: workers K", None, figures=figures)
    f = lambda v: "-" if pd.isna(v) else f"{v:.2f}"
    lines = [__doc__.replace("\n", " ").strip(), "",
             "| data set | method | precision | K | threads | cells | accuracy | train s | × vs 1×1 | × vs 1×max |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in par.itertuples():
        lines.append(f"| {r.dataset} | {r.method} | {r.precision} | {int(r.workers)} | {int(r.threads)} | {r.cells} | "
                     f"{fmt(r.acc, r.acc_se)} | {fmt(r.train_s, r.train_s_se)} | "
                     f"{f(getattr(r, 'speedup_vs_1x1', np.nan))} | {f(getattr(r, 'speedup_vs_1xmax', np.nan))} |")
    return Section("Block-parallel training: workers K", "\n".join(lines), csvs={"parallel.csv": par}, figures=figures)
