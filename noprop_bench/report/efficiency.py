"""Achieved FLOP/s against the device's roof, per method x data set x precision x configuration.

Model FLOPs (matrix products and convolutions, torch.utils.flop_counter) of one training step, counted once
per cell outside the clock and averaged over its stages; training GFLOP/s = those FLOPs x steps / training
seconds over every interval; roof = a large matrix product in the cell's precision on the same device,
measured once per run; evaluation GFLOP/s is the mean over evaluation points of the default setting.
"""
from __future__ import annotations

import pandas as pd

from noprop_bench.report.load import Results, order
from noprop_bench.report.section import Options, Section

KEYS = ["method", "dataset", "precision", "config"]


def compute(df: pd.DataFrame) -> pd.DataFrame:
    need = ["train_flops_per_step", "train_gflops_per_s", "roof_gflops"]
    d = df[(df["eval_setting"] == "default") & (df["inference_run"] == 0)].dropna(subset=need)
    if d.empty:
        return pd.DataFrame()
    d = d.assign(gflop=d["train_gflops_per_s"] * d["train_time_s"])
    g = d.groupby(KEYS, dropna=False)
    out = pd.DataFrame({"cells": g["cell_id"].nunique(), "train_gflop_per_step": g["train_flops_per_step"].mean() / 1e9,
                        "params_per_block": g["params_per_block"].first(), "params_total": g["params_total"].first(),
                        "train_s": g["train_time_s"].sum(), "gflop": g["gflop"].sum(),
                        "eval_gflops_per_s": g["eval_gflops_per_s"].mean(), "roof_gflops": g["roof_gflops"].mean()})
    out["train_gflops_per_s"] = out.pop("gflop") / out["train_s"]
    out["roof_fraction"] = out["train_gflops_per_s"] / out["roof_gflops"]
    return out.reset_index().sort_values(["dataset", "method", "precision"], key=order).reset_index(drop=True)


def section(res: Results, opts: Options) -> Section:
    eff = compute(res.df)
    if eff.empty:
        return Section("Efficiency: parameters and achieved FLOP/s", None)
    m = lambda v: "-" if pd.isna(v) else f"{v / 1e6:.2f} M"
    lines = [__doc__.split("\n\n", 1)[1].replace("\n", " ").strip(), "",
             "| data set | method | precision | config | cells | params / block | params | GFLOP / step | "
             "train GFLOP/s | of roof | eval GFLOP/s | roof |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in eff.itertuples():
        lines.append(f"| {r.dataset} | {r.method} | {r.precision} | {r.config or '-'} | {r.cells} | "
                     f"{m(r.params_per_block)} | {m(r.params_total)} | {r.train_gflop_per_step:.3f} | "
                     f"{r.train_gflops_per_s:.1f} | {100 * r.roof_fraction:.0f} % | {r.eval_gflops_per_s:.1f} | "
                     f"{r.roof_gflops:.1f} |")
    return Section("Efficiency: parameters and achieved FLOP/s", "\n".join(lines), csvs={"efficiency.csv": eff})
