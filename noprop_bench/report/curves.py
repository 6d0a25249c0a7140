"""Accuracy against cumulative training time (the paper's Figure 3, one panel per data set, one-hot rows,
mean line and standard-error band over seeds x inference runs, ★ where each method first reached each
target) and accuracy against inference steps (after training, one line per solver)."""
from __future__ import annotations

import pandas as pd

from noprop_bench.report import time_to_accuracy
from noprop_bench.report.load import Results, final_rows, order, precision_note, variant_names
from noprop_bench.report.section import Options, Section


def curves(df: pd.DataFrame) -> pd.DataFrame:
    """Per configuration x data set x evaluation point: mean time, mean accuracy and its standard error."""
    d = df[(df["eval_setting"] == "default") & (df["embedding"] == "one-hot")]
    d = d.assign(name=variant_names(d))
    g = d.groupby(["dataset", "name", "method", "step"])
    return pd.DataFrame({"time": g["cum_train_time_s"].mean(), "acc": g["test_acc"].mean(),
                         "se": g["test_acc"].sem().fillna(0), "n": g["test_acc"].size()}).reset_index()


def plot_accuracy_vs_time(df: pd.DataFrame, path, suffix: str, tta: pd.DataFrame | None = None) -> bool:
    import matplotlib.pyplot as plt
    import seaborn as sns
    c = curves(df)
    if c.empty:
        return False
    datasets = sorted(c["dataset"].unique(), key=lambda v: order(pd.Series([v]))[0])
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.5 * len(datasets), 3.8), squeeze=False)
    names = c.drop_duplicates("name").sort_values("method", key=order)["name"]
    palette = dict(zip(names, sns.color_palette(n_colors=max(10, len(names)))))
    for ax, dataset in zip(axes[0], datasets):
        for name, g in c[c["dataset"] == dataset].groupby("name"):
            g = g.sort_values("step")
            ax.plot(g["time"], g["acc"], marker="o", ms=3, label=name, color=palette[name])
            ax.fill_between(g["time"], g["acc"] - g["se"], g["acc"] + g["se"], alpha=0.25, color=palette[name])
        if tta is not None:
            _mark_targets(ax, tta[(tta["dataset"] == dataset) & (tta["embedding"] == "one-hot")], palette, df)
        ax.set(title=f"{dataset}{suffix}{precision_note(df)}", xlabel="cumulative training time (s)",
               ylabel="test accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(title="one-hot", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _mark_targets(ax, tta: pd.DataFrame, palette: dict, df: pd.DataFrame) -> None:
    for target in tta["target"].unique():
        ax.axhline(target, color="grey", lw=0.6, ls=":", zorder=0)
        ax.text(1.0, target, f" {target:g}%", transform=ax.get_yaxis_transform(), fontsize=6, va="center", color="grey")
    names = df.assign(name=variant_names(df)).drop_duplicates(["method", "precision", "config"])
    lookup = {(r.method, r.precision, r.config): r.name for r in names.itertuples()}
    for r in tta[tta["reached"] > 0].itertuples():
        name = lookup.get((r.method, r.precision, r.config))
        if name not in palette:
            continue
        err = [[r.time_mean_s - r.time_min_s], [r.time_max_s - r.time_mean_s]]
        ax.errorbar(r.time_mean_s, r.target, xerr=err, fmt="*", ms=9, mec="black", mew=0.5, capsize=2,
                    color=palette[name], zorder=5)


def swept(df: pd.DataFrame) -> pd.DataFrame:
    last = final_rows(df)
    return last[last["cell_id"].isin(last.loc[last["eval_setting"] == "sweep", "cell_id"].unique())]


def plot_accuracy_vs_steps(df: pd.DataFrame, path, suffix: str) -> bool:
    import matplotlib.pyplot as plt
    import seaborn as sns
    d = swept(df)
    if d.empty:
        return False
    g = sns.relplot(data=d.assign(name=variant_names(d)), x="inference_steps", y="test_acc", hue="solver",
                    style="solver", col="name", row="dataset", kind="line", markers=True, errorbar="se", height=3.2,
                    aspect=1.2, facet_kws={"sharey": False})
    g.set(xscale="log")
    g.set_axis_labels("inference steps", "test accuracy (%)")
    g.set_titles("{row_name} / {col_name}" + suffix)
    g.savefig(path, dpi=120)
    plt.close(g.figure)
    return True


def steps_table(df: pd.DataFrame) -> str | None:
    d = swept(df)
    if d.empty:
        return None
    d = d.assign(name=variant_names(d))
    pivot = d.pivot_table(index=["dataset", "name", "solver"], columns="inference_steps", values="test_acc", aggfunc="mean")
    rows = ["| data set | method | solver | " + " | ".join(str(c) for c in pivot.columns) + " |",
            "|" + "---|" * (3 + len(pivot.columns))]
    for (dataset, name, solver), values in pivot.iterrows():
        rows.append(f"| {dataset} | {name} | {solver} | " + " | ".join("-" if pd.isna(v) else f"{v:.2f}" for v in values) + " |")
    return "\n".join(rows)


def section(res: Results, opts: Options, out) -> Section:
    tta = time_to_accuracy.summary(time_to_accuracy.per_cell(res.df))
    figures = {"accuracy_vs_time.png": (plot_accuracy_vs_time(res.df, out / "accuracy_vs_time.png", opts.suffix, tta),
                                        "no one-hot rows"),
               "accuracy_vs_steps.png": (plot_accuracy_vs_steps(res.df, out / "accuracy_vs_steps.png", opts.suffix),
                                         "no inference-step sweep in these results (suite 'steps' or --inference-steps)")}
    table = steps_table(res.df)
    text = "Final model, mean over seeds × inference runs.\n\n" + table if table else None
    return Section("Accuracy (%) against inference steps", text, figures=figures)
