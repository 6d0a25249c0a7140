"""`report` (tables against the paper, plots, markdown) and `check` (the accuracy gate), on results
with known numbers and on a real tiny run; and the CI gate itself: the `ci` suite on real MNIST."""
import json

import numpy as np
import pandas as pd
import pytest

from noprop_bench import cli as run_bench
from noprop_bench.report import PAPER_TABLE1, load_results, read_paper, table1
from noprop_bench.run.results import ResultWriter

BASE = {"suite": "quick", "dataset": "mnist", "embedding": "one-hot", "epoch": 1, "step": 10,
        "eval_setting": "default", "inference_steps": 10, "solver": "ancestral", "nfe": 10, "eval_time_s": 1.0,
        "train_loss": 1.0, "train_time_s": 5.0, "cum_train_time_s": 5.0, "peak_mem_bytes": 2 * 10**9,
        "mem_kind": "cuda_max_allocated", "n_train": 60000, "n_test": 10000, "params_trainable": 1,
        "device": "cuda:0", "scaled": ""}


def write_results(out, accs: dict, scaled: str = "", failed: dict | None = None):
    """accs: method -> list of (seed, [test accuracies of the inference runs]) at the final step."""
    writer = ResultWriter(out)
    ledger = []
    for method, seeds in accs.items():
        for seed, values in seeds:
            cell_id = f"{method}-{seed}"
            writer.append([{**BASE, "method": method, "seed": seed, "cell_id": cell_id, "inference_run": run,
                            "test_acc": acc, "scaled": scaled} for run, acc in enumerate(values)])
            ledger.append({"cell_id": cell_id, "label": f"{method}/mnist/one-hot/seed{seed}", "error": None})
    for cell_id, error in (failed or {}).items():
        ledger.append({"cell_id": cell_id, "label": cell_id, "error": error})
    (out / "cells.jsonl").write_text("".join(json.dumps(e) + "\n" for e in ledger))
    return out


def paper(method, split="test"):
    p = read_paper(PAPER_TABLE1)
    row = p[(p.method == method) & (p.dataset == "mnist") & (p.embedding == "one-hot") & (p.split == split)]
    return row["mean"].item(), row["se"].item()


def test_table1_is_mean_and_standard_error_over_seeds_and_runs_next_to_the_paper(tmp_path):
    dt = [(s, [97.0 + 0.1 * s + 0.01 * r for r in range(5)]) for s in range(3)]  # far below 99.47
    bp_mean, _ = paper("backprop")
    bp = [(s, [bp_mean + d for d in (-0.02, 0.0, 0.02, 0.0, 0.0)]) for s in range(3)]  # matches the paper
    out = write_results(tmp_path / "r", {"noprop-dt": dt, "backprop": bp})
    df, _ = load_results(out)
    t = table1(df, read_paper(PAPER_TABLE1), sigmas=1.0).set_index("method")
    values = np.array([v for _, vs in dt for v in vs])
    assert t.loc["noprop-dt", "n"] == 15
    assert t.loc["noprop-dt", "mean"] == pytest.approx(values.mean())
    assert t.loc["noprop-dt", "se"] == pytest.approx(values.std(ddof=1) / np.sqrt(15))
    assert t.loc["noprop-dt", "paper"] == paper("noprop-dt")[0]
    assert t.loc["noprop-dt", "diff"] == pytest.approx(values.mean() - paper("noprop-dt")[0])
    assert bool(t.loc["noprop-dt", "flag"]) and not bool(t.loc["backprop", "flag"])


def test_report_writes_plots_tables_and_flags(tmp_path, capsys):
    dt = [(s, [97.0 + 0.1 * s + 0.01 * r for r in range(5)]) for s in range(3)]
    out = write_results(tmp_path / "r", {"noprop-dt": dt})
    assert run_bench.main(["report", str(out)]) == 0
    report = out / "report"
    assert {"report.md", "table1.csv", "table2.csv", "accuracy_vs_time.png", "memory.png"} <= {
        p.name for p in report.iterdir()}
    text = (report / "report.md").read_text()
    assert "| mnist | test | noprop-dt | one-hot | fp32 | 15 | 97.12 ± 0.02 | 99.47 ± 0.05 | -2.35 | ⚠ |" in text
    # no tensor probe in these rows (they predate it): only the CUDA peak against the paper's GB
    assert "| mnist | noprop-dt | 10 | 3 | - | - | - | - | - | - | 0.49 | 0.56 | 2.00 | 4.08 |" in text
    assert "accuracy_vs_steps.png: not drawn (no inference-step sweep" in text
    assert "SCALED" not in text


def test_report_of_a_real_scaled_run_says_scaled_and_draws_the_sweep(tmp_path):
    out = tmp_path / "run"
    assert run_bench.main(["--suite", "quick", "--datasets", "digits", "--train-limit", "200", "--test-limit", "100",
                           "--methods", "noprop-dt,noprop-fm", "--set", "timesteps=4", "--eval-points", "2",
                           "--inference-steps", "2,3", "--solvers", "euler,rk4", "--no-progress",
                           "--out", str(out)]) == 0
    assert run_bench.main(["report", str(out)]) == 0
    text = (out / "report" / "report.md").read_text()
    assert "**SCALED RUN.**" in text and "train-limit 200 (suite: 6000)" in text
    assert "| digits | noprop-fm | rk4 |" in text
    table2 = [line for line in text.splitlines() if line.startswith("| digits | noprop-dt | 4 | 1 | 0.0")]
    assert len(table2) == 1 and table2[0].endswith("| - | - | - | - |")  # tensor peak; no paper row, no CUDA
    for name in ("accuracy_vs_time.png", "accuracy_vs_steps.png", "memory.png"):
        assert (out / "report" / name).stat().st_size > 1000


def test_report_errors_name_the_problem(tmp_path, capsys):
    assert run_bench.main(["report", str(tmp_path / "nowhere")]) == 2
    assert "results.csv not found" in capsys.readouterr().err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.csv").write_text("a,b\n1,2\n")
    assert run_bench.main(["report", str(tmp_path / "bad")]) == 2
    assert "lacks column(s) suite, cell_id" in capsys.readouterr().err


def thresholds(tmp_path, dt: float, bp: float = 50.0):
    path = tmp_path / "thresholds.csv"
    path.write_text("# test thresholds\nsuite,method,dataset,embedding,min_test_acc\n"
                    f"quick,noprop-dt,mnist,one-hot,{dt}\nquick,backprop,mnist,one-hot,{bp}\n")
    return str(path)


def test_check_fails_below_threshold_and_lists_the_margin(tmp_path, capsys):
    out = write_results(tmp_path / "r", {"noprop-dt": [(0, [90.0, 92.0])], "backprop": [(0, [60.0])]})
    assert run_bench.main(["check", str(out), "--thresholds", thresholds(tmp_path, dt=95.0)]) == 1
    text = capsys.readouterr().out
    assert "FAIL  quick: noprop-dt/mnist/one-hot/seed0: test accuracy 91.00% vs threshold 95.00% (margin -4.00)" in text
    assert "ok    quick: backprop/mnist/one-hot/seed0: test accuracy 60.00% vs threshold 50.00% (margin +10.00)" in text


def test_check_passes_when_every_cell_meets_its_threshold(tmp_path, capsys):
    out = write_results(tmp_path / "r", {"noprop-dt": [(0, [90.0, 92.0])], "backprop": [(0, [60.0])]})
    assert run_bench.main(["check", str(out), "--thresholds", thresholds(tmp_path, dt=91.0)]) == 0
    assert "2 cell(s) at or above threshold, 0 below or failed" in capsys.readouterr().out


def test_check_fails_on_a_failed_cell(tmp_path, capsys):
    out = write_results(tmp_path / "r", {"noprop-dt": [(0, [90.0])]}, failed={"backprop-0": "diverged by epoch 3"})
    assert run_bench.main(["check", str(out), "--thresholds", thresholds(tmp_path, dt=50.0)]) == 1
    assert "FAIL  backprop-0: failed: diverged by epoch 3" in capsys.readouterr().out


@pytest.mark.parametrize("case,message", [
    ("scaled", "no cell could be checked. 1 scaled cell(s) not checked (epochs 1"),
    ("no-threshold", "1 cell(s) have no threshold: quick:noprop-ct/mnist/one-hot"),
    ("bad-file", "missing column(s) min_test_acc"),
])
def test_check_that_checks_nothing_does_not_pass(tmp_path, capsys, case, message):
    method = "noprop-ct" if case == "no-threshold" else "noprop-dt"
    out = write_results(tmp_path / "r", {method: [(0, [90.0])]},
                        scaled="epochs 1 (suite: Table 3)" if case == "scaled" else "")
    path = thresholds(tmp_path, dt=50.0)
    if case == "bad-file":
        (tmp_path / "thresholds.csv").write_text("suite,method,dataset,embedding\nquick,a,b,c\n")
    assert run_bench.main(["check", str(out), "--thresholds", path]) == 2
    assert message in capsys.readouterr().err


def test_ci_suite_learns_in_every_method_on_real_mnist(tmp_path, capsys):
    """The CI accuracy gate: a change that breaks learning in any method fails here."""
    out = tmp_path / "ci"
    assert run_bench.main(["--suite", "ci", "--no-progress", "--out", str(out)]) == 0
    df = pd.read_csv(out / "results.csv")
    assert set(df["dataset"]) == {"mnist"} and df["scaled"].isna().all()
    capsys.readouterr()
    code = run_bench.main(["check", str(out)])
    text = capsys.readouterr().out
    print(text)
    assert code == 0, text
    assert f"{df['method'].nunique()} cell(s) at or above threshold, 0 below" in text

