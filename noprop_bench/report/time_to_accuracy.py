"""Time to accuracy (MLPerf's metric): the cumulative training seconds at the first evaluation point whose
accuracy reaches a target, per cell, then summarised over seeds.

Accuracy is the default inference setting's, averaged over a point's inference runs; time is the
training clock (evaluation is outside it). Targets are each data set's ladder (data/specs.py). The
resolution is the evaluation spacing: a cell that crosses a target between two points is credited at
the later one, so a suite with few points reads slow.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from noprop_bench.data.specs import DATASETS
from noprop_bench.report.load import Results
from noprop_bench.report.section import Options, Section

TARGETS = {name: spec.targets for name, spec in DATASETS.items()}
KEYS = ["method", "dataset", "embedding", "split", "precision", "config"]


def points(df: pd.DataFrame) -> pd.DataFrame:
    """One row per cell x evaluation point: mean accuracy over inference runs, cumulative training time."""
    d = df[df["eval_setting"] == "default"].assign(split=lambda d: d["eval_split"])
    return (d.groupby([*KEYS, "seed", "cell_id", "step"], as_index=False, dropna=False)
             .agg(acc=("test_acc", "mean"), time=("cum_train_time_s", "max"), epoch=("epoch", "max")))


def per_cell(df: pd.DataFrame, targets: dict = TARGETS) -> pd.DataFrame:
    """Per cell and target: the first point that reaches it (time, epoch, step), NaN where none does."""
    rows = []
    for keys, cell in points(df).groupby([*KEYS, "seed", "cell_id"], dropna=False):
        cell = cell.sort_values("step")
        for target in targets.get(keys[1], ()):
            hit = cell[cell["acc"] >= target]
            first = hit.iloc[0] if len(hit) else None
            rows.append({**dict(zip([*KEYS, "seed", "cell_id"], keys)), "target": target,
                         "time_s": first["time"] if first is not None else np.nan,
                         "epoch": first["epoch"] if first is not None else np.nan,
                         "step": first["step"] if first is not None else np.nan,
                         "best_acc": cell["acc"].max()})
    return pd.DataFrame(rows, columns=[*KEYS, "seed", "cell_id", "target", "time_s", "epoch", "step", "best_acc"])


def summary(cells: pd.DataFrame) -> pd.DataFrame:
    """Per configuration and target: how many seeds reached it, and the time's mean, s.e., min and max over
    those that did."""
    if cells.empty:
        return pd.DataFrame(columns=[*KEYS, "target", "cells", "reached", "time_mean_s", "time_se_s",
                                     "time_min_s", "time_max_s", "epoch_mean", "best_acc"])
    g = cells.groupby([*KEYS, "target"], sort=False, dropna=False)
    return pd.DataFrame({
        "cells": g["cell_id"].size(), "reached": g["time_s"].count(),
        "time_mean_s": g["time_s"].mean(), "time_se_s": g["time_s"].sem(),
        "time_min_s": g["time_s"].min(), "time_max_s": g["time_s"].max(),
        "epoch_mean": g["epoch"].mean(), "best_acc": g["best_acc"].max(),
    }).reset_index()


def markdown(table: pd.DataFrame) -> str | None:
    """One row per configuration, one column per target: mean time [min-max] (k/n seeds), or 'not reached'
    with the best accuracy seen."""
    if table.empty:
        return None
    lines = []
    for dataset, d in table.groupby("dataset", sort=False):
        targets = sorted(d["target"].unique())
        lines += [f"| {dataset}: method | embedding | config | split | precision | "
                  + " | ".join(f"≥ {t:g} %" for t in targets) + " |", "|---|---|---|---|---|" + "---|" * len(targets)]
        for (method, embedding, config, split, precision), r in d.groupby(
                ["method", "embedding", "config", "split", "precision"], sort=False, dropna=False):
            r = r.set_index("target")
            lines.append(f"| {method} | {embedding} | {config or '-'} | {split} | {precision} | "
                         + " | ".join(_cell(r.loc[t]) for t in targets) + " |")
        lines.append("")
    return "\n".join(lines)


def _cell(r) -> str:
    n, k = int(r["cells"]), int(r["reached"])
    if k == 0:
        return f"not reached (0/{n}; best {r['best_acc']:.1f} %)"
    spread = f" [{r['time_min_s']:.1f}–{r['time_max_s']:.1f}]" if k > 1 else ""
    return f"{r['time_mean_s']:.1f} s{spread} ({k}/{n})"


def section(res: Results, opts: Options) -> Section:
    tta = summary(per_cell(res.df))
    text = markdown(tta)
    if text:
        text = ("Cumulative training seconds (evaluation excluded) at the first evaluation point whose accuracy "
                "(default inference setting, mean over inference runs) reaches each target: the mean over the "
                "seeds that reached it, [fastest–slowest], and (seeds that reached it / seeds). The resolution is "
                "the spacing of evaluation points. Marked ★ on accuracy_vs_time.png.\n\n" + text)
    return Section("Time to accuracy", text, csvs={"time_to_accuracy.csv": tta})
