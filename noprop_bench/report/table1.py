"""Table 1: final accuracy per configuration, beside the paper's where the cell ran the paper's protocol.

Aggregation follows the paper (reference section 10): the mean and the standard error of the mean over
every seed x inference run value at the end of training, default inference setting. Rows are keyed by
everything that distinguishes a configuration (load.CONFIG), so two learning rates are two rows. Only
rows whose every cell ran the paper's protocol (`scaled` empty) are compared: diff, combined standard
error, and a flag where |ours - paper| > sigmas x sqrt(se_ours^2 + se_paper^2); other rows show the
paper's number for context and say "not comparable".
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from noprop_bench import paths
from noprop_bench.report.load import CONFIG, Results, fmt, mean_se, order
from noprop_bench.report.section import Options, Section

KEYS = ["dataset", "split", *[k for k in CONFIG if k != "dataset"]]


def read_paper(name: str) -> pd.DataFrame:
    with paths.resource(name).open("r") as f:
        return pd.read_csv(f, comment="#")


def compute(res: Results, sigmas: float, paper: pd.DataFrame | None = None) -> pd.DataFrame:
    paper = read_paper("paper_table1.csv") if paper is None else paper
    last = res.final
    last = last[last["eval_setting"] == "default"]
    # held-out rows (--holdout) are not test accuracies, so they never meet the paper's test column
    long = pd.concat([last.assign(split=last["eval_split"], acc=last["test_acc"]),
                      last.assign(split="train", acc=last["train_acc"])]).dropna(subset=["acc"])
    g = long.groupby(KEYS, dropna=False)
    out = g["acc"].apply(mean_se).unstack().reset_index()
    out = out.merge(g.agg(cells=("cell_id", "nunique"), protocol=("scaled", lambda s: "paper" if (s == "").all()
                                                                  else "scaled")).reset_index(), on=KEYS)
    out = out.merge(paper.rename(columns={"mean": "paper", "se": "paper_se"}),
                    on=["method", "embedding", "dataset", "split"], how="left")
    comparable = (out["protocol"] == "paper") & out["paper"].notna()
    out["diff"] = (out["mean"] - out["paper"]).where(comparable)
    out["combined_se"] = np.sqrt(out["se"].fillna(0) ** 2 + out["paper_se"] ** 2).where(comparable)
    out["flag"] = comparable & (out["diff"].abs() > sigmas * out["combined_se"])
    return out.sort_values(["dataset", "split", "method", "embedding", "config"], key=order).reset_index(drop=True)


def section(res: Results, opts: Options) -> Section:
    t1 = compute(res, opts.sigmas)
    lines = [f"Mean ± standard error over seeds × inference runs at the end of training (n values from `cells` "
             f"cells), default inference setting of each method; one row per configuration (`config`: the values "
             f"that differ from the defaults). Only rows whose cells ran the paper's protocol are compared with "
             f"the paper: `diff`, and ⚠ where |ours − paper| > {opts.sigmas:g} × √(se_ours² + se_paper²). Rows "
             f"that did not (a subset, fewer epochs, another setting; the `scaled` column of results.csv says "
             f"how) show the paper's number for context only.", "",
             "| data set | split | method | embedding | config | precision | cells | n | ours | paper | diff | |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in t1.itertuples():
        if r.protocol != "paper":
            diff, flag = "not comparable" if not pd.isna(r.paper) else "-", ""
        else:
            diff, flag = ("-" if pd.isna(r.diff) else f"{r.diff:+.2f}"), ("⚠" if r.flag else "")
        v2 = " (v2)" if isinstance(r.source, str) and r.source.startswith("v2") else ""
        lines.append(f"| {r.dataset} | {r.split} | {r.method} | {r.embedding} | {r.config or '-'} | {r.precision} | "
                     f"{r.cells} | {int(r.n)} | {fmt(r.mean, r.se)} | {fmt(r.paper, r.paper_se)}{v2} | {diff} | {flag} |")
    return Section("Table 1: accuracy (%)", "\n".join(lines), csvs={"table1.csv": t1})
