"""`report` (tables against the paper, plots, markdown) and `check` (the accuracy gate), on results
with known numbers and on a real tiny run; and the CI gate itself: the `ci` suite on real MNIST."""
import json

import numpy as np
import pandas as pd
import pytest

from conftest import run
from noprop_bench.report.load import load
from noprop_bench.report.table1 import compute as table1, read_paper
from noprop_bench.run.results import ResultWriter

BASE = {"suite": "quick", "dataset": "mnist", "embedding": "one-hot", "epoch": 1, "step": 10, "precision": "fp32",
        "eval_setting": "default", "inference_steps": 10, "solver": "ancestral", "nfe": 10, "eval_time_s": 1.0,
        "train_loss": 1.0, "train_time_s": 5.0, "cum_train_time_s": 5.0, "peak_mem_bytes": 2 * 10**9,
        "mem_kind": "cuda_max_allocated", "data_bytes": 5 * 10**7, "n_train": 60000, "n_test": 10000,
        "eval_split": "test", "params_trainable": 1, "device": "cuda:0", "scaled": "", "overrides": "", "config": ""}


def write_results(out, accs: dict, scaled: str = "", failed: dict | None = None, overrides: str = "", config: str = ""):
    """accs: method -> list of (seed, [test accuracies of the inference runs]) at the final step."""
    writer = ResultWriter(out)
    ledger = []
    for method, seeds in accs.items():
        for seed, values in seeds:
            cell_id = f"{method}-{seed}-{config}"
            writer.append([{**BASE, "method": method, "seed": seed, "cell_id": cell_id, "inference_run": run,
                            "test_acc": acc, "scaled": scaled, "overrides": overrides, "config": config}
                           for run, acc in enumerate(values)])
            ledger.append({"cell_id": cell_id, "label": f"{method}/mnist/one-hot/seed{seed}", "error": None})
    for cell_id, error in (failed or {}).items():
        ledger.append({"cell_id": cell_id, "label": cell_id, "error": error})
    with open(out / "cells.jsonl", "a") as f:
        f.write("".join(json.dumps(e) + "\n" for e in ledger))
    return out


def paper(method, split="test"):
    p = read_paper("paper_table1.csv")
    row = p[(p.method == method) & (p.dataset == "mnist") & (p.embedding == "one-hot") & (p.split == split)]
    return row["mean"].item(), row["se"].item()


def test_table1_is_mean_and_standard_error_over_seeds_and_runs_next_to_the_paper(tmp_path):
    dt = [(s, [97.0 + 0.1 * s + 0.01 * r for r in range(5)]) for s in range(3)]  # far below 99.47
    bp_mean, _ = paper("backprop")
    bp = [(s, [bp_mean + d for d in (-0.02, 0.0, 0.02, 0.0, 0.0)]) for s in range(3)]  # matches the paper
    out = write_results(tmp_path / "r", {"noprop-dt": dt, "backprop": bp})
    t = table1(load(out), sigmas=1.0).set_index("method")
    values = np.array([v for _, vs in dt for v in vs])
    assert t.loc["noprop-dt", "n"] == 15
    assert t.loc["noprop-dt", "mean"] == pytest.approx(values.mean())
    assert t.loc["noprop-dt", "se"] == pytest.approx(values.std(ddof=1) / np.sqrt(15))
    assert t.loc["noprop-dt", "paper"] == paper("noprop-dt")[0]
    assert t.loc["noprop-dt", "diff"] == pytest.approx(values.mean() - paper("noprop-dt")[0])
    assert bool(t.loc["noprop-dt", "flag"]) and not bool(t.loc["backprop", "flag"])


def test_two_configurations_in_one_directory_are_two_rows(tmp_path):
    out = tmp_path / "r"
    write_results(out, {"noprop-dt": [(0, [97.0]), (1, [97.2])]}, config="lr=0.001")
    write_results(out, {"noprop-dt": [(0, [90.0]), (1, [91.0])]}, config="lr=0.003")
    t = table1(load(out), sigmas=1.0)
    t = t[t["split"] == "test"].set_index("config")
    assert list(t.index) == ["lr=0.001", "lr=0.003"] and list(t["cells"]) == [2, 2]
    assert t.loc["lr=0.003", "mean"] == pytest.approx(90.5)


def test_a_scaled_cell_shows_the_paper_for_context_and_is_never_flagged(tmp_path):
    out = write_results(tmp_path / "r", {"noprop-dt": [(0, [60.0])]}, scaled="epochs 1 (default 100)",
                        config="epochs=1")
    t = table1(load(out), sigmas=1.0)
    row = t[t["split"] == "test"].iloc[0]
    assert row["protocol"] == "scaled" and row["paper"] == paper("noprop-dt")[0]
    assert pd.isna(row["diff"]) and not row["flag"]
    assert run(["report", out]) == 0
    text = (out / "report" / "report.md").read_text()
    assert "| ⚠ |" not in text and "| not comparable |" in text and "**Not the paper's protocol.**" in text


def test_the_report_warns_about_cells_it_cannot_tell_apart(tmp_path, capsys):
    out = tmp_path / "r"
    write_results(out, {"noprop-dt": [(0, [97.0])]})
    writer = ResultWriter(out)  # the same configuration and seed again, under another id (another version)
    writer.append([{**BASE, "method": "noprop-dt", "seed": 0, "cell_id": "other-id", "inference_run": 0, "test_acc": 96.0}])
    with open(out / "cells.jsonl", "a") as f:
        f.write(json.dumps({"cell_id": "other-id", "label": "x", "error": None}) + "\n")
    assert run(["report", out]) == 0
    assert "cells that cannot be told apart" in capsys.readouterr().err
    assert "noprop-dt-0-, other-id" in (out / "report" / "report.md").read_text()


def test_report_writes_plots_tables_and_flags(tmp_path, capsys):
    dt = [(s, [97.0 + 0.1 * s + 0.01 * r for r in range(5)]) for s in range(3)]
    out = write_results(tmp_path / "r", {"noprop-dt": dt})
    assert run(["report", out]) == 0
    report = out / "report"
    assert {"report.md", "table1.csv", "table2.csv", "accuracy_vs_time.png"} <= {p.name for p in report.iterdir()}
    text = (report / "report.md").read_text()
    assert "| mnist | test | noprop-dt | one-hot | - | fp32 | 3 | 15 | 97.12 ± 0.02 | 99.47 ± 0.05 | -2.35 | ⚠ |" in text
    # no tensor probe in these rows: only the CUDA peak against the paper's GB, and the data it holds
    assert "| mnist | noprop-dt | 10 | - | 3 | - | - | - | - | - | - | 0.49 | 0.56 | 2.00 | 0.050 | 4.08 |" in text
    assert "accuracy_vs_steps.png: not drawn (no inference-step sweep" in text
    assert "Not the paper's protocol" not in text


def test_report_of_a_real_run_says_how_it_departs_and_draws_the_sweep(tmp_path):
    out = tmp_path / "run"
    assert run(["--suite", "quick", "--datasets", "digits", "--train-limit", "200", "--test-limit", "100",
                "--methods", "noprop-dt,noprop-fm", "--set", "timesteps=4", "--eval-points", "2",
                "--inference-steps", "2,3", "--solvers", "euler,rk4", "--no-progress", "--out", out]) == 0
    text = (out / "report" / "report.md").read_text()
    assert "**Not the paper's protocol.**" in text and "train-limit 200 (paper: the full split)" in text
    assert "Changed on the command line from the suite as written:" in text and "train-limit 200 (suite: 6000)" in text
    assert "| digits | noprop-fm | rk4 |" in text
    table2 = [line for line in text.splitlines() if line.startswith("| digits | noprop-dt | 4 | epochs=1;timesteps=4 | 1 | 0.0")]
    assert len(table2) == 1 and table2[0].endswith("| - | - | - | - | 0.000 | - |")  # tensor peak; no paper row, no CUDA
    for name in ("accuracy_vs_time.png", "accuracy_vs_steps.png", "memory.png"):
        assert (out / "report" / name).stat().st_size > 1000


def test_report_errors_name_the_problem(tmp_path, capsys):
    assert run(["report", tmp_path / "nowhere"]) == 2
    assert "results.csv not found" in capsys.readouterr().err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.csv").write_text("a,b\n1,2\n")
    assert run(["report", tmp_path / "bad"]) == 2
    assert "lacks column(s) suite, cell_id" in capsys.readouterr().err


def test_rows_of_a_cell_that_never_finished_are_not_a_report(tmp_path, capsys):
    out = tmp_path / "r"
    ResultWriter(out).append([{**BASE, "method": "backprop", "seed": 0, "cell_id": "c", "inference_run": 0,
                               "test_acc": 99.0}])  # a first cell killed after its first point
    assert (out / "cells.jsonl").read_text() == ""  # the ledger exists and names no finished cell
    assert run(["report", out]) == 2
    assert "has no rows of a finished cell yet" in capsys.readouterr().err


def thresholds(tmp_path, dt: float, bp: float = 50.0, tight_dt=""):
    path = tmp_path / "thresholds.csv"
    path.write_text("# test thresholds\nsuite,method,dataset,embedding,min_test_acc,tight_min_test_acc\n"
                    f"quick,noprop-dt,mnist,one-hot,{dt},{tight_dt}\nquick,backprop,mnist,one-hot,{bp},\n")
    return str(path)


def test_check_fails_below_threshold_and_lists_the_margin(tmp_path, capsys):
    out = write_results(tmp_path / "r", {"noprop-dt": [(0, [90.0, 92.0])], "backprop": [(0, [60.0])]})
    assert run(["check", out, "--thresholds", thresholds(tmp_path, dt=95.0)]) == 1
    text = capsys.readouterr().out
    assert "FAIL  quick: noprop-dt/mnist/one-hot/seed0: test accuracy 91.00% vs coarse floor 95.00% (margin -4.00)" in text
    assert "ok    quick: backprop/mnist/one-hot/seed0: test accuracy 60.00% vs coarse floor 50.00% (margin +10.00)" in text


def test_the_tight_floor_is_its_own_check(tmp_path, capsys):
    out = write_results(tmp_path / "r", {"noprop-dt": [(0, [90.0, 92.0])], "backprop": [(0, [60.0])]})
    path = thresholds(tmp_path, dt=80.0, tight_dt=93.0)
    assert run(["check", out, "--thresholds", path]) == 0
    capsys.readouterr()
    assert run(["check", out, "--thresholds", path, "--floor", "tight"]) == 1
    text = capsys.readouterr().out
    assert "FAIL  quick: noprop-dt/mnist/one-hot/seed0: test accuracy 91.00% vs tight floor 93.00%" in text
    assert "1 cell(s) have no tight floor: quick:backprop/mnist/one-hot" in text


def test_check_passes_when_every_cell_meets_its_threshold(tmp_path, capsys):
    out = write_results(tmp_path / "r", {"noprop-dt": [(0, [90.0, 92.0])], "backprop": [(0, [60.0])]})
    assert run(["check", out, "--thresholds", thresholds(tmp_path, dt=91.0)]) == 0
    assert "2 cell(s) at or above their coarse floor, 0 below or failed" in capsys.readouterr().out


def test_check_fails_on_a_failed_cell(tmp_path, capsys):
    out = write_results(tmp_path / "r", {"noprop-dt": [(0, [90.0])]}, failed={"backprop-0": "diverged by epoch 3"})
    assert run(["check", out, "--thresholds", thresholds(tmp_path, dt=50.0)]) == 1
    assert "FAIL  backprop-0: failed: diverged by epoch 3" in capsys.readouterr().out


@pytest.mark.parametrize("case,message", [
    ("changed", "no cell could be checked. 1 cell(s) of a changed suite not checked (epochs 1"),
    ("no-threshold", "1 cell(s) have no coarse floor: quick:noprop-ct/mnist/one-hot"),
    ("bad-file", "missing column(s) min_test_acc"),
])
def test_check_that_checks_nothing_does_not_pass(tmp_path, capsys, case, message):
    method = "noprop-ct" if case == "no-threshold" else "noprop-dt"
    out = write_results(tmp_path / "r", {method: [(0, [90.0])]},
                        overrides="epochs 1 (suite: Table 3)" if case == "changed" else "")
    path = thresholds(tmp_path, dt=50.0)
    if case == "bad-file":
        (tmp_path / "thresholds.csv").write_text("suite,method,dataset,embedding\nquick,a,b,c\n")
    assert run(["check", out, "--thresholds", path]) == 2
    assert message in capsys.readouterr().err


@pytest.fixture(scope="module")
def ci_run(mnist_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ci") / "run"
    assert run(["--suite", "ci", "--no-progress", "--data-dir", mnist_dir, "--out", out, "--no-report"]) == 0
    return out


@pytest.mark.slow
@pytest.mark.network
def test_ci_suite_learns_in_every_method_on_real_mnist(ci_run, capsys):
    """The CI accuracy gate's coarse floor: a change that breaks learning in any method fails here."""
    df = pd.read_csv(ci_run / "results.csv")
    assert set(df["dataset"]) == {"mnist"} and df["overrides"].isna().all()
    capsys.readouterr()
    code = run(["check", ci_run])
    text = capsys.readouterr().out
    print(text)
    assert code == 0, text
    assert f"{df['method'].nunique()} cell(s) at or above their coarse floor, 0 below" in text



@pytest.mark.slow
@pytest.mark.network
def test_ci_suite_meets_its_tight_floor_in_every_method(ci_run, capsys):
    """The CI accuracy gate's tight floor (the lowest of five measured seeds minus 3 s.d.): a change that
    costs a method accuracy beyond its seeds' spread fails here, not only one that stops it learning."""
    capsys.readouterr()
    code = run(["check", ci_run, "--floor", "tight"])
    text = capsys.readouterr().out
    print(text)
    assert code == 0, text
    methods = pd.read_csv(ci_run / "results.csv")["method"].nunique()
    assert f"{methods} cell(s) at or above their tight floor, 0 below" in text
