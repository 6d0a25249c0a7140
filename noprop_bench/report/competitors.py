"""NoProp's competitors beside NoProp and back-prop: final accuracy, the model's size and cost (parameters
per block and in total, model FLOPs per training step, the tensor peak), the training time, and the
published numbers: those the NoProp paper's Table 1 cites (each on its own architecture and budget) and the
method's own paper's."""
from __future__ import annotations

import pandas as pd

from noprop_bench import paths
from noprop_bench.methods.catalog import BUILTIN
from noprop_bench.report.load import Results, fmt, order
from noprop_bench.report.section import Options, Section

COMPETITORS = ("local-greedy", "local-decoupled", "diffusion-blocks", "forward-forward", "forward-forward-conv",
               "forward-gradient")
BESIDE = ("backprop", "noprop-dt", "noprop-fm")


def published() -> pd.DataFrame:
    with paths.resource("paper_competitors.csv").open() as f:
        return pd.read_csv(f, comment="#")


def compute(res: Results) -> pd.DataFrame:
    last = res.final
    last = last[(last["eval_setting"] == "default") & last["method"].isin([*COMPETITORS, *BESIDE])]
    if not last["method"].isin(COMPETITORS).any():
        return pd.DataFrame()
    g = last.groupby(["dataset", "method", "config", "n_train"], dropna=False)
    out = pd.DataFrame({"cells": g["cell_id"].nunique(), "acc": g["test_acc"].mean(), "acc_se": g["test_acc"].sem(),
                        "params_per_block": g["params_per_block"].first(), "params_total": g["params_total"].first(),
                        "gflop_per_step": g["train_flops_per_step"].mean() / 1e9,
                        "tensor_peak_mb": g["tensor_peak_bytes"].max() / 1e6,
                        "train_s": g["cum_train_time_s"].mean()}).reset_index()
    pub = published()
    for source, column in (("noprop-table1", "cited"), ("own-paper", "own_paper")):
        p = pub[pub["source"] == source][["method", "dataset", "accuracy"]].rename(columns={"accuracy": column})
        out = out.merge(p, on=["method", "dataset"], how="left")
    return out.sort_values(["dataset", "method"], key=order).reset_index(drop=True)


def section(res: Results, opts: Options) -> Section:
    t = compute(res)
    if t.empty:
        return Section("Competitors", None)
    m = lambda v: "-" if pd.isna(v) else f"{v / 1e6:.2f} M"
    f = lambda v, p=1: "-" if pd.isna(v) else f"{v:.{p}f}"
    lines = [__doc__.replace("\n", " ").strip() + " The published numbers are not comparable with ours unless the "
             "budgets are: see each cell's `scaled` column.", "",
             "| data set | method | config | cells | accuracy | params / block | params | GFLOP / step | tensor peak (MB) | "
             "train s | cited in NoProp's Table 1 | own paper |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in t.itertuples():
        lines.append(f"| {r.dataset} | {r.method} | {r.config or '-'} | {r.cells} | {fmt(r.acc, r.acc_se)} | "
                     f"{m(r.params_per_block)} | {m(r.params_total)} | {f(r.gflop_per_step, 3)} | {f(r.tensor_peak_mb)} | "
                     f"{f(r.train_s)} | {f(r.cited, 2)} | {f(r.own_paper, 2)} |")
    papers = [f"- `{name}`: {BUILTIN[name].paper}" for name in COMPETITORS if name in set(t["method"])]
    return Section("Competitors", "\n".join(lines + ["", *papers]), csvs={"competitors.csv": t})
