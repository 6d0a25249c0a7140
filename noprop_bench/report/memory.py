"""Table 2: peak training memory per method, data set and T (one-hot cells, as in the paper's table).

`tensor` is the peak of live tensors over a few training steps per stage (measure/memory.py, any device),
split into parameters, gradients, optimiser state and activations & temporaries; `cuda` is
torch.cuda.max_memory_allocated over the training intervals (GPU runs only), which also holds the cell's
data set (`data`) and library workspaces. Ratios to back-prop on the same data set (same T where run,
else T = 10) compare across devices; absolute GB are compared with the paper's only for `cuda`.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from noprop_bench.report.load import GB, Results, order
from noprop_bench.report.section import Options, Section
from noprop_bench.report.table1 import read_paper

MEM_PARTS = ["mem_parameters_bytes", "mem_gradients_bytes", "mem_optimizer_state_bytes", "mem_activations_bytes"]
PART_NAMES = {"mem_parameters_bytes": "parameters", "mem_gradients_bytes": "gradients",
              "mem_optimizer_state_bytes": "optimizer state", "mem_activations_bytes": "activations & temporaries"}
KEYS = ["method", "dataset", "T", "config", "precision"]


def compute(df: pd.DataFrame, paper: pd.DataFrame | None = None) -> pd.DataFrame:
    paper = read_paper("paper_table2.csv") if paper is None else paper
    d = df[(df["embedding"] == "one-hot") & (df["eval_setting"] == "default")].copy()
    d["cuda_bytes"] = d["peak_mem_bytes"].where(d["mem_kind"] == "cuda_max_allocated")
    d["T"] = d["inference_steps"]
    cols = ["tensor_peak_bytes", *MEM_PARTS, "cuda_bytes", "data_bytes"]
    per_cell = d.groupby([*KEYS, "cell_id"], as_index=False, dropna=False)[cols].max()
    out = per_cell.groupby(KEYS, as_index=False, dropna=False).agg(n=("cell_id", "size"), **{c: (c, "max") for c in cols})
    for c in cols:
        out[c.replace("_bytes", "_gb")] = out.pop(c) / GB
    out = out.rename(columns={"tensor_peak_gb": "tensor_gb"})
    out = out.merge(paper.rename(columns={"gb": "paper_gb"}), on=["method", "dataset"], how="left")
    bp = out[out["method"] == "backprop"].drop_duplicates(["dataset", "T", "precision"]).set_index(["dataset", "T", "precision"])
    paper_bp = paper[paper["method"] == "backprop"].set_index("dataset")["gb"]

    def bp_value(row, col):
        for key in ((row.dataset, row.T, row.precision), (row.dataset, 10, row.precision)):
            if key in bp.index:
                return bp.loc[key, col]
        return np.nan

    out["ratio_to_bp"] = [r.tensor_gb / bp_value(r, "tensor_gb") for r in out.itertuples()]
    out["cuda_ratio_to_bp"] = [r.cuda_gb / bp_value(r, "cuda_gb") for r in out.itertuples()]
    out["paper_ratio_to_bp"] = out["paper_gb"] / out["dataset"].map(paper_bp)
    out["cuda_over_paper"] = out["cuda_gb"] / out["paper_gb"]
    return out.sort_values(["dataset", "method", "T"], key=order).reset_index(drop=True)


def plot_memory(mem: pd.DataFrame, path, suffix: str) -> bool:
    """Stacked bars of the tensor peak's split, one bar per method x T, one panel per data set."""
    import matplotlib.pyplot as plt
    mem = mem.dropna(subset=["tensor_gb"])
    if mem.empty:
        return False
    datasets = list(dict.fromkeys(mem["dataset"]))
    fig, axes = plt.subplots(1, len(datasets), figsize=(max(5, 2.2 + 0.7 * len(mem)), 4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        d = mem[mem["dataset"] == dataset]
        labels = [f"{m}\nT={int(t)}" for m, t in zip(d["method"], d["T"])]
        bottom = np.zeros(len(d))
        for part in MEM_PARTS:
            values = d[part.replace("_bytes", "_gb")].fillna(0).to_numpy()
            ax.bar(labels, values, bottom=bottom, label=PART_NAMES[part])
            bottom += values
        ax.set(title=dataset, ylabel="tensor peak (GB)")
        ax.tick_params(axis="x", labelrotation=60, labelsize=7)
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(f"peak training memory (live tensors), one-hot{suffix}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def plot_memory_vs_T(mem: pd.DataFrame, path, suffix: str) -> bool:
    """Tensor peak against T for every method run at more than one T (suite 'memory')."""
    import matplotlib.pyplot as plt
    mem = mem.dropna(subset=["tensor_gb"])
    d = mem[mem.groupby(["method", "dataset"])["T"].transform("nunique") > 1]
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


def section(res: Results, opts: Options, out) -> Section:
    t2 = compute(res.df)
    f = lambda v, p=2: "-" if pd.isna(v) else f"{v:.{p}f}"
    lines = [__doc__.split("\n\n", 1)[1].replace("\n", " ").strip() + " All in GB (10^9 bytes).", "",
             "| data set | method | T | config | cells | tensor | params | grads | optim | act & temp | tensor / bp | "
             "paper | paper / bp | cuda | data | cuda / paper |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in t2.itertuples():
        lines.append(f"| {r.dataset} | {r.method} | {int(r.T)} | {r.config or '-'} | {r.n} | {f(r.tensor_gb, 3)} | "
                     f"{f(r.mem_parameters_gb, 3)} | {f(r.mem_gradients_gb, 3)} | {f(r.mem_optimizer_state_gb, 3)} | "
                     f"{f(r.mem_activations_gb, 3)} | {f(r.ratio_to_bp)} | {f(r.paper_gb)} | {f(r.paper_ratio_to_bp)} | "
                     f"{f(r.cuda_gb)} | {f(r.data_gb, 3)} | {f(r.cuda_over_paper)} |")
    figures = {"memory.png": (plot_memory(t2, out / "memory.png", opts.suffix), "no tensor-memory probe in these rows"),
               "memory_vs_T.png": (plot_memory_vs_T(t2, out / "memory_vs_T.png", opts.suffix),
                                   "no method run at more than one T (suite 'memory')")}
    text = "\n".join(lines) if not t2.empty else None
    return Section("Table 2: peak training memory", text, csvs={"table2.csv": t2}, figures=figures)
