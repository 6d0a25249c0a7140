"""Stability over evaluation points, per configuration: the last point's accuracy, the lowest point, and the
largest drop from one point to the next, each over seeds (mean, and the worst seed).
A choice is judged by all three, not by the last point alone. Configurations are named by the config values
that vary among the cells of a method, read from each cell's full config in metadata.json (so a value that
was the default when the run was made still shows)."""
from __future__ import annotations

import pandas as pd

from noprop_bench.report.load import Results, order
from noprop_bench.report.section import Options, Section


def varying(res: Results) -> pd.Series:
    """Per cell id: `key=value;...` of the config values that differ among that method's cells."""
    cells = (res.meta or {}).get("cells", {})
    ids = res.df.drop_duplicates("cell_id")[["cell_id", "method"]]
    labels = {}
    for method, group in ids.groupby("method"):
        configs = {c: cells.get(c, {}).get("config", {}) for c in group["cell_id"]}
        keys = sorted({k for cfg in configs.values() for k in cfg
                       if len({repr(other.get(k)) for other in configs.values()}) > 1})
        for c, cfg in configs.items():
            labels[c] = ";".join(f"{k}={cfg.get(k)}" for k in keys)
    return res.df["cell_id"].map(labels).fillna(res.df["config"])


def compute(res: Results) -> pd.DataFrame:
    d = res.df[res.df["eval_setting"] == "default"].assign(setting=varying(res))
    points = d.groupby(["method", "dataset", "embedding", "setting", "seed", "cell_id", "step"], as_index=False).agg(
        acc=("test_acc", "mean"), epoch=("epoch", "max"))
    if points.groupby("cell_id")["step"].nunique().max() < 3:
        return pd.DataFrame()  # too few points per cell to speak of stability
    rows = []
    for keys, cell in points.sort_values("step").groupby(["method", "dataset", "embedding", "setting", "seed", "cell_id"]):
        rows.append({**dict(zip(["method", "dataset", "embedding", "setting", "seed"], keys[:5])),
                     "last": cell["acc"].iloc[-1], "lowest": cell["acc"].min(),
                     "largest_drop": max(0.0, (cell["acc"].shift(1) - cell["acc"]).max())})
    per_seed = pd.DataFrame(rows)
    g = per_seed.groupby(["method", "dataset", "embedding", "setting"])
    out = pd.DataFrame({"seeds": g["seed"].nunique(), "last_mean": g["last"].mean(), "last_worst": g["last"].min(),
                        "min_mean": g["lowest"].mean(), "min_worst": g["lowest"].min(),
                        "drop_mean": g["largest_drop"].mean(), "drop_worst": g["largest_drop"].max()}).reset_index()
    return out.sort_values(["dataset", "method", "setting"], key=order).reset_index(drop=True)


def section(res: Results, opts: Options) -> Section:
    t = compute(res)
    if t.empty:
        return Section("Stability over evaluation points", None)
    lines = [__doc__.replace("\n", " ").strip(), "",
             "| data set | method | embedding | setting | seeds | last (mean / worst) | lowest point (mean / worst) | "
             "largest drop (mean / worst) |", "|---|---|---|---|---|---|---|---|"]
    for r in t.itertuples():
        lines.append(f"| {r.dataset} | {r.method} | {r.embedding} | {r.setting or '-'} | {r.seeds} | "
                     f"{r.last_mean:.2f} / {r.last_worst:.2f} | {r.min_mean:.2f} / {r.min_worst:.2f} | "
                     f"{r.drop_mean:.2f} / {r.drop_worst:.2f} |")
    return Section("Stability over evaluation points", "\n".join(lines), csvs={"stability.csv": t})
