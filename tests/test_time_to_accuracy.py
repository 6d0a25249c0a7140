"""Time to accuracy on hand-made results: which point is credited, the seeds' spread, runs averaged,
targets never reached, and what the report writes."""
import json

import pandas as pd
import pytest

from noprop_bench.report import time_to_accuracy as tta
from noprop_bench.report import load_results, write_report
from noprop_bench.run.results import ResultWriter
from test_report_check import BASE

# per seed: (cumulative training seconds, [accuracy of each inference run]) at each evaluation point
CURVES = {
    "noprop-dt": {0: [(10, [85.0, 85.0]), (20, [92.0, 92.0]), (30, [96.0, 96.0])],
                  1: [(12, [91.0, 91.0]), (24, [95.5, 94.7]), (36, [97.0, 97.0])]},  # 95.1 mean at 24 s
    "backprop": {0: [(5, [60.0]), (9, [89.0]), (14, [89.9])]},                         # never 90
}


def write_curves(out, curves=CURVES):
    writer, ledger = ResultWriter(out), []
    for method, seeds in curves.items():
        for seed, points in seeds.items():
            cell_id = f"{method}-{seed}"
            rows = []
            for step, (time, accs) in enumerate(points, start=1):
                rows += [{**BASE, "method": method, "seed": seed, "cell_id": cell_id, "step": step, "epoch": step,
                          "cum_train_time_s": float(time), "inference_run": run, "test_acc": acc}
                         for run, acc in enumerate(accs)]
                # a swept setting at the same point never counts
                rows.append({**rows[-1], "eval_setting": "sweep", "inference_steps": 2, "test_acc": 100.0})
            writer.append(rows)
            ledger.append({"cell_id": cell_id, "label": cell_id, "error": None})
    (out / "cells.jsonl").write_text("".join(json.dumps(e) + "\n" for e in ledger))
    return out


def test_the_first_point_reaching_each_target_is_credited_per_seed(tmp_path):
    df, _ = load_results(write_curves(tmp_path / "r"))
    cells = tta.per_cell(df).set_index(["method", "seed", "target"])
    assert cells.loc[("noprop-dt", 0, 90.0), "time_s"] == 20
    assert cells.loc[("noprop-dt", 1, 90.0), "time_s"] == 12
    assert cells.loc[("noprop-dt", 1, 95.0), "time_s"] == 24  # the runs' mean (95.1), not either run
    assert cells.loc[("noprop-dt", 0, 95.0), "epoch"] == 3
    assert pd.isna(cells.loc[("noprop-dt", 0, 98.0), "time_s"])
    assert pd.isna(cells.loc[("backprop", 0, 90.0), "time_s"])
    assert set(cells.reset_index()["target"]) == set(tta.TARGETS["mnist"])


def test_summary_gives_the_mean_and_spread_over_the_seeds_that_reached(tmp_path):
    df, _ = load_results(write_curves(tmp_path / "r"))
    s = tta.summary(tta.per_cell(df)).set_index(["method", "target"])
    r = s.loc[("noprop-dt", 90.0)]
    assert (r["cells"], r["reached"]) == (2, 2)
    assert (r["time_mean_s"], r["time_min_s"], r["time_max_s"]) == (16, 12, 20)
    assert r["time_se_s"] == pytest.approx(4.0)  # std (5.657) / sqrt(2)
    assert s.loc[("noprop-dt", 95.0), "time_mean_s"] == 27
    assert s.loc[("noprop-dt", 98.0), "reached"] == 0 and s.loc[("noprop-dt", 98.0), "best_acc"] == 97.0
    assert s.loc[("backprop", 90.0), "reached"] == 0


def test_the_report_has_the_table_the_csv_and_the_marks(tmp_path):
    out = write_report(write_curves(tmp_path / "r"))
    md = (out / "report.md").read_text()
    assert "## Time to accuracy" in md
    assert "| noprop-dt | one-hot | - | test | fp32 | 16.0 s [12.0–20.0] (2/2) | 27.0 s [24.0–30.0] (2/2) | " \
           "not reached (0/2; best 97.0 %) | not reached (0/2; best 97.0 %) |" in md
    assert "| backprop | one-hot | - | test | fp32 | not reached (0/1; best 89.9 %) |" in md
    csv = pd.read_csv(out / "time_to_accuracy.csv")
    assert len(csv) == 2 * len(tta.TARGETS["mnist"]) and csv["reached"].sum() == 4
    assert (out / "accuracy_vs_time.png").stat().st_size > 0
