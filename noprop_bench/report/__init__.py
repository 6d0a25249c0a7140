"""`python run_bench.py report RESULTS_DIR`: plots and a markdown comparison with the paper.

Writes into RESULTS_DIR/report/ (or --out):
  accuracy_vs_time.png   Figure 3 style: test accuracy against cumulative training time, one panel per
                         data set, mean line and standard-error band over seeds x inference runs
  accuracy_vs_steps.png  final test accuracy against inference steps, one line per solver
  memory.png             Table 2 style: the tensor peak of training per method, data set and T, split
                         into parameters, gradients, optimiser state and activations & temporaries
  memory_vs_T.png        the tensor peak against T, for methods run at several T (suite 'memory')
  diagnostics.png        from diagnostics.csv (bench/diagnostics.py), at each cell's last evaluation point:
                         per-t accuracy of the continuous-time denoisers (z ~ q and z = 0), per-block
                         accuracy of the discrete methods, and predicted classes against training steps
  table1.csv, table2.csv our aggregates next to the paper's values
  efficiency.csv         model FLOPs per step, achieved FLOP/s and its fraction of the matmul roof
  time_to_accuracy.csv   training seconds to reach each accuracy target, per method (bench/time_to_accuracy.py)
  report.md              all of the above in one page, with every disagreement flagged

Aggregation follows the paper (section 10 of the reference): the mean and the standard error of the
mean over every seed x inference run value of the final evaluation. A row is flagged when
|ours - paper| > K * sqrt(se_ours^2 + se_paper^2) (K = --sigmas, default 1: "beyond the combined error").
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from noprop_bench import paths
from noprop_bench.report import time_to_accuracy

# the columns report and check read (a CSV from an older version without, say, `host` still reports)
NEEDED = ["suite", "cell_id", "method", "dataset", "embedding", "seed", "epoch", "step", "eval_setting",
          "inference_steps", "solver", "inference_run", "test_acc", "train_acc", "cum_train_time_s",
          "peak_mem_bytes", "mem_kind", "device", "scaled"]

PAPER_TABLE1 = paths.resource("paper_table1.csv")
PAPER_TABLE2 = paths.resource("paper_table2.csv")
GB = 1e9  # the paper's "GB"; decimal, which it does not state either


class ReportError(ValueError):
    pass


def load_results(results_dir: Path) -> tuple[pd.DataFrame, dict]:
    results_dir = Path(results_dir)
    csv_path = results_dir / "results.csv"
    if not csv_path.is_file():
        raise ReportError(f"{csv_path} not found; pass the --out directory of a run (it holds results.csv)")
    try:
        df = pd.read_csv(csv_path, dtype={"scaled": str, "solver": str, "eval_setting": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ReportError(f"{csv_path} is not a readable results CSV ({e})") from None
    missing = [c for c in NEEDED if c not in df.columns]
    if missing:
        raise ReportError(f"{csv_path} lacks column(s) {', '.join(missing)}; it was not written by this "
                          f"version of noprop-bench")
    if df.empty:
        raise ReportError(f"{csv_path} has no rows yet: no cell has finished an evaluation")
    ledger = results_dir / "cells.jsonl"
    if ledger.exists():  # rows of an interrupted cell are not results
        from noprop_bench.run.results import read_ledger
        done = {k for k, v in read_ledger(ledger).items() if v["error"] is None}
        df = df[df["cell_id"].isin(done)]
    try:
        meta = json.loads((results_dir / "metadata.json").read_text())
    except (OSError, ValueError):
        meta = {}
    df["scaled"] = df["scaled"].fillna("")
    # rows from before --holdout have no split: they are test accuracies
    df["eval_split"] = df["eval_split"].astype(object).fillna("test") if "eval_split" in df else "test"
    # rows from before --precision ran strict float32 (the only mode there was)
    df["precision"] = df["precision"].astype(object).fillna("fp32") if "precision" in df else "fp32"
    return df, meta


def final_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Every row of each cell's last evaluation point."""
    return df[df["step"] == df.groupby("cell_id")["step"].transform("max")]


def _mean_se(values: pd.Series) -> pd.Series:
    n = values.count()
    return pd.Series({"n": n, "mean": values.mean(), "se": values.sem() if n > 1 else np.nan})


def table1(df: pd.DataFrame, paper: pd.DataFrame, sigmas: float) -> pd.DataFrame:
    """Final accuracy (default inference setting) per method x data set x embedding x split."""
    last = final_rows(df)
    last = last[last["eval_setting"] == "default"]
    # held-out rows (--holdout) are not test accuracies, so they never meet the paper's test column
    split = last["eval_split"]
    long = pd.concat([last.assign(split=split, acc=last["test_acc"]),
                      last.assign(split="train", acc=last["train_acc"])])
    long = long.dropna(subset=["acc"])
    keys = ["method", "embedding", "dataset", "split", "precision"]
    ours = long.groupby(keys)["acc"].apply(_mean_se).unstack().reset_index()
    scaled = long.groupby(keys)["scaled"].agg(lambda s: bool(s.str.len().max())).rename("scaled").reset_index()
    out = ours.merge(scaled, on=keys).merge(paper.rename(columns={"mean": "paper", "se": "paper_se"}),
                                            on=keys[:4], how="left")
    out["diff"] = out["mean"] - out["paper"]
    out["combined_se"] = np.sqrt(out["se"].fillna(0) ** 2 + out["paper_se"] ** 2)
    out["flag"] = out["diff"].abs() > sigmas * out["combined_se"]
    out.loc[out["paper"].isna(), "flag"] = False
    return out.sort_values(["dataset", "split", "method", "embedding"], key=_paper_order).reset_index(drop=True)


MEM_PARTS = ["mem_parameters_bytes", "mem_gradients_bytes", "mem_optimizer_state_bytes", "mem_activations_bytes"]
PART_NAMES = {"mem_parameters_bytes": "parameters", "mem_gradients_bytes": "gradients",
              "mem_optimizer_state_bytes": "optimizer state", "mem_activations_bytes": "activations & temporaries"}


def table2(df: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """Peak training memory per method x data set x T (one-hot cells, as in the paper).

    tensor_gb is the tensor peak of bench/memory.py (any device) with its split; cuda_gb the CUDA
    allocator's peak where the run was on a GPU. Ratios to back-prop on the same data set (at the same T
    where there is such a cell, else at Table 3's T = 10) are comparable across devices; absolute GB are
    compared with the paper's only for cuda_gb.
    """
    d = df[(df["embedding"] == "one-hot") & (df["eval_setting"] == "default")].copy()
    for col in ["tensor_peak_bytes", *MEM_PARTS]:
        if col not in d.columns:  # results from before the tensor probe
            d[col] = np.nan
    d["cuda_bytes"] = d["peak_mem_bytes"].where(d["mem_kind"] == "cuda_max_allocated")
    d["T"] = d["inference_steps"]
    per_cell = d.groupby(["method", "dataset", "T", "cell_id"], as_index=False)[
        ["tensor_peak_bytes", *MEM_PARTS, "cuda_bytes"]].max()
    cols = ["tensor_peak_bytes", *MEM_PARTS, "cuda_bytes"]
    out = per_cell.groupby(["method", "dataset", "T"], as_index=False).agg(
        n=("cell_id", "size"), **{c: (c, "max") for c in cols})
    for c in cols:
        out[c.replace("_bytes", "_gb")] = out.pop(c) / GB
    out = out.rename(columns={"tensor_peak_gb": "tensor_gb"})
    out = out.merge(paper.rename(columns={"gb": "paper_gb"}), on=["method", "dataset"], how="left")
    bp = out[out["method"] == "backprop"].set_index(["dataset", "T"])
    paper_bp = paper[paper["method"] == "backprop"].set_index("dataset")["gb"]

    def bp_value(row, col):
        for key in ((row.dataset, row.T), (row.dataset, 10)):
            if key in bp.index:
                return bp.loc[key, col]
        return np.nan

    out["ratio_to_bp"] = [r.tensor_gb / bp_value(r, "tensor_gb") for r in out.itertuples()]
    out["cuda_ratio_to_bp"] = [r.cuda_gb / bp_value(r, "cuda_gb") for r in out.itertuples()]
    out["paper_ratio_to_bp"] = out["paper_gb"] / out["dataset"].map(paper_bp)
    out["cuda_over_paper"] = out["cuda_gb"] / out["paper_gb"]
    return out.sort_values(["dataset", "method", "T"], key=_paper_order).reset_index(drop=True)


ORDER = {name: i for i, name in enumerate(
    ["backprop", "noprop-dt", "adjoint", "noprop-ct", "noprop-ct-reweighted", "noprop-fm", "backprop-ode",
     "mnist", "cifar10", "cifar100", "fashion-mnist", "digits", "one-hot", "dim20", "prototype", "test", "train"])}


def _paper_order(col: pd.Series) -> pd.Series:
    if pd.api.types.is_numeric_dtype(col):
        return col
    return col.map(lambda v: ORDER.get(v, len(ORDER)))


# --- plots ---------------------------------------------------------------------------------------

def _curves(df: pd.DataFrame) -> pd.DataFrame:
    """Per method x data set x evaluation point: mean time, mean accuracy and its standard error."""
    d = df[(df["eval_setting"] == "default") & (df["embedding"] == "one-hot")]
    d = d.assign(method=_with_precision(d))
    g = d.groupby(["dataset", "method", "step"])
    return pd.DataFrame({"time": g["cum_train_time_s"].mean(), "acc": g["test_acc"].mean(),
                         "se": g["test_acc"].sem().fillna(0), "n": g["test_acc"].size()}).reset_index()


def _with_precision(d: pd.DataFrame) -> pd.Series:
    """Method names, with the precision appended where the rows hold more than one ("noprop-dt [bf16]")."""
    if d["precision"].nunique() <= 1:
        return d["method"]
    return d["method"] + " [" + d["precision"] + "]"


def precision_note(df: pd.DataFrame) -> str:
    """For plot titles: the precision of every row, when they share one."""
    values = sorted(df["precision"].unique())
    return f" [{values[0]}]" if len(values) == 1 else ""


def efficiency(df: pd.DataFrame) -> pd.DataFrame:
    """Per method x data set x precision: model FLOPs per training step, the training FLOP/s achieved
    over all intervals (total FLOPs / total training time), its fraction of the run's matmul roof, and
    the mean evaluation FLOP/s. Empty for results from before FLOP counting."""
    need = ["train_flops_per_step", "train_gflops_per_s", "roof_gflops"]
    if any(c not in df for c in need) or df["train_gflops_per_s"].isna().all():
        return pd.DataFrame()
    d = df[(df["eval_setting"] == "default") & (df["inference_run"] == 0)].dropna(subset=need)
    d = d.assign(gflop=d["train_gflops_per_s"] * d["train_time_s"])
    g = d.groupby(["method", "dataset", "precision"])
    out = pd.DataFrame({"cells": g["cell_id"].nunique(), "train_gflop_per_step": g["train_flops_per_step"].mean() / 1e9,
                        "train_s": g["train_time_s"].sum(), "gflop": g["gflop"].sum(),
                        "eval_gflops_per_s": g["eval_gflops_per_s"].mean(), "roof_gflops": g["roof_gflops"].mean()})
    out["train_gflops_per_s"] = out.pop("gflop") / out["train_s"]
    out["roof_fraction"] = out["train_gflops_per_s"] / out["roof_gflops"]
    return out.reset_index().sort_values(["dataset", "method", "precision"], key=_paper_order).reset_index(drop=True)


def plot_accuracy_vs_time(df: pd.DataFrame, path: Path, suffix: str, tta: pd.DataFrame | None = None) -> bool:
    """Mean curve and s.e. band per method; where `tta` (time_to_accuracy.summary) is given, each target
    as a dotted line and, for each method that reached it, a star at the mean time with a bar from the
    fastest to the slowest seed."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    curves = _curves(df)
    if curves.empty:
        return False
    datasets = sorted(curves["dataset"].unique(), key=lambda v: ORDER.get(v, 99))
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.5 * len(datasets), 3.8), squeeze=False)
    palette = dict(zip(sorted(curves["method"].unique(), key=lambda v: ORDER.get(v, 99)), sns.color_palette()))
    for ax, dataset in zip(axes[0], datasets):
        for method, c in curves[curves["dataset"] == dataset].groupby("method"):
            c = c.sort_values("step")
            ax.plot(c["time"], c["acc"], marker="o", ms=3, label=method, color=palette[method])
            ax.fill_between(c["time"], c["acc"] - c["se"], c["acc"] + c["se"], alpha=0.25, color=palette[method])
        if tta is not None:
            _mark_targets(ax, tta[(tta["dataset"] == dataset) & (tta["embedding"] == "one-hot")], palette)
        ax.set(title=f"{dataset}{suffix}{precision_note(df)}", xlabel="cumulative training time (s)",
               ylabel="test accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(title="one-hot", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _mark_targets(ax, tta: pd.DataFrame, palette: dict) -> None:
    for target in tta["target"].unique():
        ax.axhline(target, color="grey", lw=0.6, ls=":", zorder=0)
        ax.text(1.0, target, f" {target:g}%", transform=ax.get_yaxis_transform(), fontsize=6, va="center",
                color="grey")
    for r in tta[tta["reached"] > 0].itertuples():
        name = r.method if r.method in palette else f"{r.method} [{r.precision}]"  # as _with_precision
        if name not in palette:
            continue
        err = [[r.time_mean_s - r.time_min_s], [r.time_max_s - r.time_mean_s]]
        ax.errorbar(r.time_mean_s, r.target, xerr=err, fmt="*", ms=9, mec="black", mew=0.5, capsize=2,
                    color=palette[name], zorder=5)


def plot_accuracy_vs_steps(df: pd.DataFrame, path: Path, suffix: str) -> bool:
    import matplotlib.pyplot as plt
    import seaborn as sns
    last = final_rows(df)
    swept = last[last["eval_setting"] == "sweep"]["cell_id"].unique()
    d = last[last["cell_id"].isin(swept)]
    if d.empty:
        return False
    g = sns.relplot(data=d, x="inference_steps", y="test_acc", hue="solver", style="solver", col="method",
                    row="dataset", kind="line", markers=True, errorbar="se", height=3.2, aspect=1.2,
                    facet_kws={"sharey": False})
    g.set(xscale="log")
    g.set_axis_labels("inference steps", "test accuracy (%)")
    g.set_titles("{row_name} / {col_name}" + suffix)
    g.savefig(path, dpi=120)
    plt.close(g.figure)
    return True


def plot_memory(mem: pd.DataFrame, path: Path, suffix: str) -> bool:
    """Stacked bars of the tensor peak's split, one bar per method x T, one panel per data set (the CUDA
    peak alone for rows from before the tensor probe)."""
    import matplotlib.pyplot as plt
    mem = mem.dropna(subset=["tensor_gb", "cuda_gb"], how="all")
    if mem.empty:
        return False
    parts = MEM_PARTS if mem["tensor_gb"].notna().any() else ["cuda_bytes"]
    datasets = list(dict.fromkeys(mem["dataset"]))
    fig, axes = plt.subplots(1, len(datasets), figsize=(max(5, 2.2 + 0.7 * len(mem)), 4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        d = mem[mem["dataset"] == dataset]
        labels = [f"{m}\nT={int(t)}" for m, t in zip(d["method"], d["T"])]
        bottom = np.zeros(len(d))
        for part in parts:
            values = d[part.replace("_bytes", "_gb")].fillna(0).to_numpy()
            ax.bar(labels, values, bottom=bottom, label=PART_NAMES.get(part, "cuda_max_allocated"))
            bottom += values
        ax.set(title=dataset, ylabel="tensor peak (GB)" if parts is MEM_PARTS else "CUDA peak (GB)")
        ax.tick_params(axis="x", labelrotation=60, labelsize=7)
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(f"peak training memory (live tensors), one-hot{suffix}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def plot_memory_vs_T(mem: pd.DataFrame, path: Path, suffix: str) -> bool:
    """Tensor peak against T for every method run at more than one T (suite 'memory')."""
    import matplotlib.pyplot as plt
    mem = mem.dropna(subset=["tensor_gb"])
    swept = mem.groupby(["method", "dataset"])["T"].transform("nunique") > 1
    d = mem[swept]
    if d.empty:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    for (method, dataset), g in d.groupby(["method", "dataset"]):
        ax.plot(g["T"], g["tensor_gb"], marker="o", label=f"{method} ({dataset})")
    ax.set(xscale="log", yscale="log", xlabel="T (blocks, or integration steps)", ylabel="tensor peak (GB)",
           title=f"training memory against T{suffix}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def parallel_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per method x data set x (workers, threads), for methods run at more than one: final accuracy (mean,
    s.e. over seeds) and training seconds (mean over seeds), and the speed-up over one worker with one
    thread and over one worker with the most threads run."""
    if "workers" not in df or df["workers"].isna().all():
        return pd.DataFrame()
    last = final_rows(df)
    last = last[last["eval_setting"] == "default"]
    swept = last.groupby(["method", "dataset"])["workers"].transform("nunique") > 1
    d = last[swept]
    if d.empty:
        return pd.DataFrame()
    g = d.groupby(["method", "dataset", "precision", "workers", "threads"])
    out = pd.DataFrame({"cells": g["cell_id"].nunique(), "acc": g["test_acc"].mean(), "acc_se": g["test_acc"].sem(),
                        "train_s": g["cum_train_time_s"].mean(), "train_s_se": g["cum_train_time_s"].sem()}).reset_index()
    for (method, dataset, precision), grp in out.groupby(["method", "dataset", "precision"]):
        one = grp[grp["workers"] == 1]
        for name, ref in (("speedup_vs_1x1", one[one["threads"] == one["threads"].min()]),
                          ("speedup_vs_1xmax", one[one["threads"] == one["threads"].max()])):
            if not ref.empty:
                out.loc[grp.index, name] = ref["train_s"].iloc[0] / grp["train_s"]
    return out


def plot_parallel(table: pd.DataFrame, path: Path, suffix: str) -> bool:
    """Training time and final accuracy against the number of workers K, one line per threads per worker."""
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


def load_diagnostics(results_dir: Path, cells) -> pd.DataFrame:
    """diagnostics.csv of the finished cells (an empty frame where there is none)."""
    path = Path(results_dir) / "diagnostics.csv"
    try:
        d = pd.read_csv(path, dtype={"z": str})
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return pd.DataFrame()
    return d[d["cell_id"].isin(set(cells))]


def _last_point(d: pd.DataFrame) -> pd.DataFrame:
    return d[d["step"] == d.groupby("cell_id")["step"].transform("max")]


def plot_diagnostics(diag: pd.DataFrame, path: Path, suffix: str) -> bool:
    import matplotlib.pyplot as plt
    if diag.empty:
        return False
    last = _last_point(diag)
    per_t = last[last["diagnostic"] == "denoise_acc"]
    per_block = last[last["diagnostic"] == "block_acc"]
    classes = diag[diag["diagnostic"] == "pred_classes"]
    panels = [p for p in (per_t, per_block, classes) if not p.empty]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 3.8), squeeze=False)
    axes = iter(axes[0])
    label = lambda keys: "/".join(str(k) for k in keys)
    if not per_t.empty:
        ax = next(axes)
        for keys, g in per_t.groupby(["method", "dataset", "embedding", "z"]):
            m = g.groupby("t")["value"].mean()
            ax.plot(m.index, m.values, marker="o", ms=3, ls="-" if keys[3] == "q" else "--",
                    label=label(keys[:3]) + (" z~q" if keys[3] == "q" else " z=0"))
        ax.set(title=f"denoiser accuracy at t, last point{suffix}", xlabel="t (0 = noise, 1 = clean)",
               ylabel="accuracy (%)")
        ax.legend(fontsize=7)
    if not per_block.empty:
        ax = next(axes)
        for keys, g in per_block.groupby(["method", "dataset", "embedding", "z"]):
            m = g.groupby("block")["value"].mean()
            ax.plot(m.index, m.values, marker="o", ms=3, label=label(keys))
        ax.set(title=f"block accuracy, last point{suffix}", xlabel="block t", ylabel="accuracy (%)")
        ax.legend(fontsize=7)
    if not classes.empty:
        ax = next(axes)
        for keys, g in classes.groupby(["method", "dataset", "embedding"]):
            m = g.groupby("step")["value"].mean()
            ax.plot(m.index, m.values, marker="o", ms=3, label=label(keys))
        ax.set(title=f"distinct predicted classes{suffix}", xlabel="optimiser steps", ylabel="classes")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _diagnostics_table(diag: pd.DataFrame) -> str | None:
    """The last point's per-t (or per-block) accuracies, one row per method x data set x embedding x z."""
    last = _last_point(diag)
    parts = []
    for what, column in (("denoise_acc", "t"), ("block_acc", "block")):
        d = last[last["diagnostic"] == what]
        if d.empty:
            continue
        pivot = d.pivot_table(index=["method", "dataset", "embedding", "z"], columns=column, values="value")
        head = [f"{c:g}" for c in pivot.columns]
        parts += [f"| {what} | z | " + " | ".join(f"{column}={h}" for h in head) + " |",
                  "|---|---|" + "---|" * len(head)]
        for (method, dataset, embedding, z), values in pivot.iterrows():
            parts.append(f"| {method}/{dataset}/{embedding} | {z} | " + " | ".join(f"{v:.1f}" for v in values) + " |")
        parts.append("")
    return "\n".join(parts) if parts else None


# --- markdown ------------------------------------------------------------------------------------

def _fmt(mean, se) -> str:
    if pd.isna(mean):
        return "-"
    return f"{mean:.2f}" if pd.isna(se) else f"{mean:.2f} ± {se:.2f}"


def markdown(df, meta, t1, t2, figures, sigmas, results_dir, diag=None, tta=None, eff=None, par=None) -> str:
    scaled = sorted(r for r in df["scaled"].unique() if r)
    suites = ", ".join(sorted(df["suite"].unique()))
    lines = [f"# noprop-bench report: {results_dir}", ""]
    if scaled:
        lines += ["> **SCALED RUN.** These results come from a suite changed on the command line, so they are "
                  "not the suite's (or the paper's) protocol and are not expected to match the paper:", ">"]
        lines += [f"> - {r}" for r in scaled]
        lines.append("")
    by_design = (meta.get("suite_config") or {}).get("scaled_from")
    if by_design:
        lines += [f"> **Scaled by design** (suite {meta.get('suite')}): {by_design}. Not the paper's protocol.", ""]
    git = meta.get("git", {})
    lines += [f"- suite(s): {suites}; cells: {df['cell_id'].nunique()}; rows: {len(df)}",
              f"- device(s): {', '.join(sorted(df['device'].unique()))} ({meta.get('device', {}).get('name', '?')})",
              f"- git revision: {git.get('revision')}{' (dirty)' if git.get('dirty') else ''}",
              f"- command: `{' '.join(meta.get('command', ['?']))}`", ""]
    lines += ["## Table 1: accuracy (%)", "",
              f"Mean ± standard error over seeds × inference runs at the end of training (n values), with the "
              f"default inference setting of each method. **Flagged** (⚠) where |ours − paper| > {sigmas:g} × "
              f"√(se_ours² + se_paper²). Rows marked *scaled* did not run the paper's protocol.", "",
              "| data set | split | method | embedding | precision | n | ours | paper | diff | |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in t1.itertuples():
        flag = "⚠" if r.flag else ""
        note = " *scaled*" if r.scaled else ""
        lines.append(f"| {r.dataset} | {r.split} | {r.method} | {r.embedding} | {r.precision} | {int(r.n)} | "
                     f"{_fmt(r.mean, r.se)}{note} | {_fmt(r.paper, r.paper_se)} | "
                     f"{'-' if pd.isna(r.diff) else f'{r.diff:+.2f}'} | {flag} |")
    if eff is not None and not eff.empty:
        roofs = ", ".join(f"{k} {v:.1f}" for k, v in (meta.get("roof_gflops") or {}).items())
        lines += ["", "## Efficiency: achieved FLOP/s against the device's roof", "",
                  "Model FLOPs (matrix products and convolutions, torch.utils.flop_counter) of one training step, "
                  "counted once per cell outside the clock and averaged over its stages; training GFLOP/s = those "
                  "FLOPs x steps / training seconds over every interval; roof = a 2048³ matrix product in the "
                  f"cell's precision on the same device, measured once per run ({roofs or 'see roof_gflops'} "
                  "GFLOP/s); evaluation GFLOP/s is the mean over evaluation points of the default setting.", "",
                  "| data set | method | precision | cells | GFLOP / step | train GFLOP/s | of roof | eval GFLOP/s | roof |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in eff.itertuples():
            lines.append(f"| {r.dataset} | {r.method} | {r.precision} | {r.cells} | {r.train_gflop_per_step:.3f} | "
                         f"{r.train_gflops_per_s:.1f} | {100 * r.roof_fraction:.0f} % | {r.eval_gflops_per_s:.1f} | "
                         f"{r.roof_gflops:.1f} |")
    if par is not None and not par.empty:
        lines += ["", "## Block-parallel training: workers K", "",
                  "Final test accuracy (mean ± s.e. over seeds) and training seconds (mean ± s.e.) per number of "
                  "worker processes K and torch threads per worker; speed-up = training time of one worker with "
                  "1 thread (or with the most threads run) / this row's (bench/parallel.py).", "",
                  "| data set | method | precision | K | threads | cells | accuracy | train s | × vs 1×1 | × vs 1×max |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        f = lambda v: "-" if pd.isna(v) else f"{v:.2f}"
        for r in par.itertuples():
            lines.append(f"| {r.dataset} | {r.method} | {r.precision} | {int(r.workers)} | {int(r.threads)} | "
                         f"{r.cells} | {_fmt(r.acc, r.acc_se)} | {_fmt(r.train_s, r.train_s_se)} | "
                         f"{f(getattr(r, 'speedup_vs_1x1', np.nan))} | {f(getattr(r, 'speedup_vs_1xmax', np.nan))} |")
    table = time_to_accuracy.markdown(tta) if tta is not None else None
    if table:
        lines += ["", "## Time to accuracy", "",
                  "Cumulative training seconds (evaluation excluded) at the first evaluation point whose accuracy "
                  "(default inference setting, mean over inference runs) reaches each target: the mean over the "
                  "seeds that reached it, [fastest–slowest], and (seeds that reached it / seeds). The resolution "
                  "is the spacing of evaluation points. Also in time_to_accuracy.csv, and marked ★ on "
                  "accuracy_vs_time.png.", "", table]
    lines += ["", "## Table 2: peak training memory", "",
              "`tensor` is the peak bytes of live tensors over a few training steps per stage, measured on any "
              "device outside the clock (bench/memory.py), split at the moment of the peak into parameters, "
              "gradients, optimiser state and activations & temporaries; the data set held on the device is "
              "not in it. `cuda` is `torch.cuda.max_memory_allocated` over the training intervals (GPU runs "
              "only; it also holds the data set and library workspaces). `/ bp` is the ratio to back-prop on "
              "the same data set (same T where run, else T = 10): ratios compare across devices; absolute GB "
              "are compared with the paper's only for `cuda`. All in GB (10^9 bytes).", "",
              "| data set | method | T | cells | tensor | params | grads | optim | act & temp | tensor / bp | "
              "paper | paper / bp | cuda | cuda / paper |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    f = lambda v, p=2: "-" if pd.isna(v) else f"{v:.{p}f}"
    for r in t2.itertuples():
        lines.append(f"| {r.dataset} | {r.method} | {int(r.T)} | {r.n} | {f(r.tensor_gb, 3)} | "
                     f"{f(r.mem_parameters_gb, 3)} | {f(r.mem_gradients_gb, 3)} | {f(r.mem_optimizer_state_gb, 3)} | "
                     f"{f(r.mem_activations_gb, 3)} | {f(r.ratio_to_bp)} | {f(r.paper_gb)} | "
                     f"{f(r.paper_ratio_to_bp)} | {f(r.cuda_gb)} | {f(r.cuda_over_paper)} |")
    sweep = _steps_table(df)
    if sweep is not None:
        lines += ["", "## Accuracy (%) against inference steps", "",
                  "Final model, mean over seeds × inference runs.", "", sweep]
    table = _diagnostics_table(diag) if diag is not None and not diag.empty else None
    if table:
        lines += ["", "## Diagnostics at the last evaluation point", "",
                  "Accuracy (%) of each block (discrete methods) or of the denoiser in 10 bins of t "
                  "(continuous methods), on up to 1000 evaluation images, mean over cells; z is the label "
                  "input: q = the training distribution, zero = the image alone, chain = back-prop's own "
                  "forward pass. Every evaluation point is in diagnostics.csv.", "", table]
    lines += ["", "## Figures", ""]
    for name, (done, why) in figures.items():
        lines.append(f"![{name}]({name})" if done else f"- {name}: not drawn ({why})")
    return "\n".join(lines) + "\n"


def _steps_table(df) -> str | None:
    last = final_rows(df)
    swept = last[last["eval_setting"] == "sweep"]["cell_id"].unique()
    d = last[last["cell_id"].isin(swept)]
    if d.empty:
        return None
    pivot = d.pivot_table(index=["dataset", "method", "solver"], columns="inference_steps", values="test_acc",
                          aggfunc="mean")
    header = "| data set | method | solver | " + " | ".join(str(c) for c in pivot.columns) + " |"
    rows = [header, "|" + "---|" * (3 + len(pivot.columns))]
    for (dataset, method, solver), values in pivot.iterrows():
        cells = " | ".join("-" if pd.isna(v) else f"{v:.2f}" for v in values)
        rows.append(f"| {dataset} | {method} | {solver} | {cells} |")
    return "\n".join(rows)


def read_paper(path) -> pd.DataFrame:
    with path.open("r") as f:
        return pd.read_csv(f, comment="#")


def write_report(results_dir: Path, out: Path | None = None, sigmas: float = 1.0) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import seaborn as sns
    sns.set_theme(style="whitegrid", context="paper")
    df, meta = load_results(results_dir)
    if df.empty:
        raise ReportError(f"{results_dir}: no cell has finished yet (see cells.jsonl)")
    out = Path(out) if out else Path(results_dir) / "report"
    out.mkdir(parents=True, exist_ok=True)
    suffix = " (scaled)" if df["scaled"].str.len().max() or (meta.get("suite_config") or {}).get("scaled_from") else ""
    t1 = table1(df, read_paper(PAPER_TABLE1), sigmas)
    t2 = table2(df, read_paper(PAPER_TABLE2))
    t1.to_csv(out / "table1.csv", index=False)
    t2.to_csv(out / "table2.csv", index=False)
    eff = efficiency(df)
    eff.to_csv(out / "efficiency.csv", index=False)
    tta = time_to_accuracy.summary(time_to_accuracy.per_cell(df))
    tta.to_csv(out / "time_to_accuracy.csv", index=False)
    figures = {
        "accuracy_vs_time.png": (plot_accuracy_vs_time(df, out / "accuracy_vs_time.png", suffix, tta),
                                 "no one-hot rows"),
        "accuracy_vs_steps.png": (plot_accuracy_vs_steps(df, out / "accuracy_vs_steps.png", suffix),
                                  "no inference-step sweep in these results (suite 'steps' or --inference-steps)"),
        "memory.png": (plot_memory(t2, out / "memory.png", suffix), "no tensor-memory probe in these rows"),
        "memory_vs_T.png": (plot_memory_vs_T(t2, out / "memory_vs_T.png", suffix),
                            "no method run at more than one T (suite 'memory')"),
    }
    par = parallel_table(df)
    if not par.empty:
        par.to_csv(out / "parallel.csv", index=False)
    figures["parallel.png"] = (plot_parallel(par, out / "parallel.png", suffix),
                               "no method run with more than one number of workers (suite 'parallel')")
    diag = load_diagnostics(results_dir, df["cell_id"].unique())
    figures["diagnostics.png"] = (plot_diagnostics(diag, out / "diagnostics.png", suffix),
                                  "no diagnostics.csv rows (run without --no-diagnostics)")
    (out / "report.md").write_text(markdown(df, meta, t1, t2, figures, sigmas, results_dir, diag, tta, eff, par))
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="run_bench.py report", description=__doc__.split("\n")[0])
    p.add_argument("results_dir", type=Path, help="a run's output directory (holds results.csv)")
    p.add_argument("--out", type=Path, help="where to write (default: RESULTS_DIR/report)")
    p.add_argument("--sigmas", type=float, default=1.0,
                   help="flag |ours - paper| beyond this many combined standard errors (default 1)")
    args = p.parse_args(argv)
    try:
        out = write_report(args.results_dir, args.out, args.sigmas)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"report: {out / 'report.md'}")
    return 0
