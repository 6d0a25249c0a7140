"""NoProp-DT's ablations, the paper's Figures 4 and 5: final test accuracy per class probability (`class_prob`:
Eq. 14's softmax against Eqs. 15-16's radial posterior) and per initialisation of an image-sized W_Embed
(`prototype_init`: the class medoids, orthogonal or random rows), beside the paper's values (≈: read off its
figure). A figure's table appears when the directory ran more than one of its settings; rows that did not
run the paper's protocol (`scaled`) show the paper's value for context only."""
from __future__ import annotations

import pandas as pd

from noprop_bench import paths
from noprop_bench.report.load import Results, fmt, order
from noprop_bench.report.section import Options, Section

FIGURES = {4: ("class_prob", "softmax", None), 5: ("prototype_init", "medoid", "prototype")}


def paper() -> pd.DataFrame:
    with paths.resource("paper_ablations.csv").open() as f:
        return pd.read_csv(f, comment="#")


def _split(config) -> dict[str, str]:
    if not isinstance(config, str) or not config:
        return {}
    return dict(item.split("=", 1) for item in config.split(";") if "=" in item)


def compute(res: Results) -> pd.DataFrame:
    last = res.final
    last = last[(last["eval_setting"] == "default") & (last["method"] == "noprop-dt")]
    tables = []
    for figure, (key, default, embedding) in FIGURES.items():
        d = last if embedding is None else last[last["embedding"] == embedding]
        if d.empty:
            continue
        parsed = d["config"].map(_split)
        d = d.assign(setting=parsed.map(lambda c: c.get(key, default)),
                     other=parsed.map(lambda c: ";".join(f"{k}={v}" for k, v in sorted(c.items()) if k != key)),
                     comparable=d["scaled"].isna() | (d["scaled"].astype(str) == ""))
        if d["setting"].nunique() < 2:
            continue
        g = d.groupby(["dataset", "embedding", "other", "setting"], dropna=False)
        t = pd.DataFrame({"cells": g["cell_id"].nunique(), "acc": g["test_acc"].mean(), "acc_se": g["test_acc"].sem(),
                          "comparable": g["comparable"].all()}).reset_index()
        t.insert(0, "figure", figure)
        tables.append(t)
    if not tables:
        return pd.DataFrame()
    out = pd.concat(tables, ignore_index=True)
    p = paper().rename(columns={"accuracy": "paper"})
    out = out.merge(p, on=["figure", "dataset", "embedding", "setting"], how="left")
    return out.sort_values(["figure", "dataset", "embedding", "other", "setting"], key=order).reset_index(drop=True)


def section(res: Results, opts: Options) -> Section:
    t = compute(res)
    if t.empty:
        return Section("NoProp-DT ablations: Figures 4 and 5", None)
    lines = [__doc__.replace("\n", " ").strip(), "",
             "| figure | data set | embedding | other config | setting | cells | accuracy | paper | comparable |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in t.itertuples():
        shown = "-" if pd.isna(r.paper) else f"{'≈' if r.approx else ''}{r.paper:.2f}"
        lines.append(f"| {r.figure} | {r.dataset} | {r.embedding} | {r.other or '-'} | {r.setting} | {r.cells} | "
                     f"{fmt(r.acc, r.acc_se)} | {shown} | {'yes' if r.comparable else 'no (scaled)'} |")
    return Section("NoProp-DT ablations: Figures 4 and 5", "\n".join(lines), csvs={"ablations.csv": t})
