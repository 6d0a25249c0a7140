"""Diagnostics at the last evaluation point (measure/diagnostics.py): accuracy of each block (discrete
methods) or of the denoiser in 10 bins of t (continuous methods), on up to 1000 evaluation images, mean
over cells; z is the label input: q = the training distribution, zero = the image alone, chain =
back-prop's own forward pass. Every evaluation point is in diagnostics.csv."""
from __future__ import annotations

import pandas as pd

from noprop_bench.report.load import Results
from noprop_bench.report.section import Options, Section


def last_point(d: pd.DataFrame) -> pd.DataFrame:
    return d[d["step"] == d.groupby("cell_id")["step"].transform("max")]


def plot(diag: pd.DataFrame, path, suffix: str) -> bool:
    import matplotlib.pyplot as plt
    if diag.empty:
        return False
    last = last_point(diag)
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
        ax.set(title=f"denoiser accuracy at t, last point{suffix}", xlabel="t (0 = noise, 1 = clean)", ylabel="accuracy (%)")
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


def table(diag: pd.DataFrame) -> str | None:
    """The last point's per-t (or per-block) accuracies, one row per method x data set x embedding x z."""
    if diag.empty:
        return None
    last = last_point(diag)
    parts = []
    for what, column in (("denoise_acc", "t"), ("block_acc", "block")):
        d = last[last["diagnostic"] == what]
        if d.empty:
            continue
        pivot = d.pivot_table(index=["method", "dataset", "embedding", "z"], columns=column, values="value")
        head = [f"{c:g}" for c in pivot.columns]
        parts += [f"| {what} | z | " + " | ".join(f"{column}={h}" for h in head) + " |", "|---|---|" + "---|" * len(head)]
        for (method, dataset, embedding, z), values in pivot.iterrows():
            parts.append(f"| {method}/{dataset}/{embedding} | {z} | " + " | ".join(f"{v:.1f}" for v in values) + " |")
        parts.append("")
    return "\n".join(parts) if parts else None


def section(res: Results, opts: Options, out) -> Section:
    body = table(res.diag)
    figures = {"diagnostics.png": (plot(res.diag, out / "diagnostics.png", opts.suffix),
                                   "no diagnostics.csv rows (run without --no-diagnostics)")}
    return Section("Diagnostics at the last evaluation point", __doc__.replace("\n", " ").strip() + "\n\n" + body
                   if body else None, figures=figures)
