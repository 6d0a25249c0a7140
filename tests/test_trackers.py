"""Experiment trackers (--track): each, offline, receives exactly the rows of results.csv and the report's
figures; unknown trackers and missing packages are refused before anything is written; a tracker that
fails is dropped and costs no row."""
import csv
import json
from collections import defaultdict

import pytest

from conftest import TINY, run
from noprop_bench.run import trackers

ARGV = ["--suite", "quick", *TINY, "--seeds", "0", "--epochs", "1", "--eval-points", "2"]
FAST = ["--methods", "backprop", "--no-flops", "--no-memory-probe", "--no-diagnostics", "--no-report"]


def csv_rows(out):
    """results.csv's rows per cell, as strings, exactly as written."""
    cells = defaultdict(list)
    with open(out / "results.csv", newline="") as f:
        for row in csv.DictReader(f):
            cells[row["cell_id"]].append(row)
    return dict(cells)


def default_acc(rows):
    return [(int(r["step"]), float(r["test_acc"])) for r in rows
            if r["eval_setting"] == "default" and r["inference_run"] == "0"]


def same_series(got, want):
    """(step, value) pairs: the same steps, the values to float32 precision (TensorBoard stores float32)."""
    got, want = sorted(got), sorted(want)
    return [s for s, _ in got] == [s for s, _ in want] and [v for _, v in got] == pytest.approx([v for _, v in want])


@pytest.fixture()
def tracked_run(tmp_path, request):
    out = tmp_path / "run"
    assert run([*ARGV, "--track", request.param, "--out", out]) == 0
    return out


@pytest.mark.slow
@pytest.mark.parametrize("tracked_run", ["tensorboard"], indirect=True)
def test_tensorboard_receives_the_rows_of_results_csv(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util.tensor_util import make_ndarray
    expected = csv_rows(tracked_run)
    seen = {}
    for folder in (tracked_run / "tensorboard").iterdir():
        events = EventAccumulator(str(folder), size_guidance={"tensors": 0, "scalars": 0, "images": 0})
        events.Reload()
        if folder.name == "report":
            assert "accuracy_vs_time" in events.Tags()["images"]
            continue
        rows = json.loads(make_ndarray(events.Tensors("rows.json/text_summary")[-1].tensor_proto)[0])
        seen[rows[0]["cell_id"]] = rows
        scalars = [(s.step, s.value) for s in events.Scalars("test_acc")]
        assert same_series(scalars, default_acc(rows))
    assert seen == expected and len(seen) == 2


@pytest.mark.slow
@pytest.mark.parametrize("tracked_run", ["mlflow"], indirect=True)
def test_mlflow_receives_the_rows_of_results_csv(tracked_run, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts
    client = MlflowClient((tracked_run / "mlruns").resolve().as_uri())
    experiment = client.get_experiment_by_name("noprop-bench/quick")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert "report" in runs and any(a.path.endswith(".png") for a in client.list_artifacts(runs.pop("report").info.run_id))
    expected, seen = csv_rows(tracked_run), {}
    for r in runs.values():
        assert r.info.status == "FINISHED"
        path = download_artifacts(run_id=r.info.run_id, artifact_path="rows.json", tracking_uri=client._tracking_client.tracking_uri)
        rows = json.loads(open(path).read())
        seen[r.data.tags["cell_id"]] = rows
        history = [(m.step, m.value) for m in client.get_metric_history(r.info.run_id, "test_acc")]
        assert same_series(history, default_acc(rows))
    assert seen == expected and len(seen) == 2


@pytest.mark.slow
@pytest.mark.parametrize("tracked_run", ["wandb"], indirect=True)
def test_wandb_offline_receives_the_rows_of_results_csv(tracked_run):
    expected, seen, figures = csv_rows(tracked_run), {}, []
    for folder in (tracked_run / "wandb").glob("offline-run-*"):
        rows_file = folder / "files" / "rows.json"
        if rows_file.exists():
            rows = json.loads(rows_file.read_text())
            seen[rows[0]["cell_id"]] = rows
        figures += list((folder / "files" / "media" / "images").glob("accuracy_vs_time*.png"))
    assert seen == expected and len(seen) == 2
    assert len(figures) == 1


def test_an_unknown_tracker_is_refused_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "run"
    assert run([*ARGV, "--track", "tensorboard,comet", "--out", out]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: unknown tracker 'comet'; valid trackers: tensorboard, mlflow, wandb" and not out.exists()


def test_a_missing_tracker_package_names_the_extra(tmp_path, capsys, monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    out = tmp_path / "run"
    assert run([*ARGV, "--track", "wandb", "--out", out]) == 2
    err = capsys.readouterr().err
    assert "--track wandb needs the wandb package: pip install 'noprop-bench[track]'" in err and not out.exists()


def test_a_failing_tracker_is_dropped_with_a_warning_and_costs_no_row(tmp_path, capsys, monkeypatch):
    calls = []

    def broken(self, run, step, values):
        calls.append(step)
        raise OSError("disk full")
    monkeypatch.setattr(trackers.TensorBoard, "log", broken)
    out = tmp_path / "run"
    assert run([*ARGV, *FAST, "--track", "tensorboard", "--out", out]) == 0
    err = capsys.readouterr().err
    assert len(calls) == 1  # the fault happened once, and the tracker was off afterwards
    assert err.count("warning: tracker tensorboard failed") == 1 and "disk full" in err
    untracked = tmp_path / "untracked"
    assert run([*ARGV, *FAST, "--out", untracked]) == 0
    assert [len(v) for v in csv_rows(out).values()] == [len(v) for v in csv_rows(untracked).values()]


def test_metric_names_keep_settings_and_runs_apart():
    row = {"eval_setting": "default", "inference_run": 0, "test_acc": 91.0, "train_loss": None, "solver": "euler",
           "inference_steps": 10}
    assert trackers.metric_values(row) == {"test_acc": 91.0}
    sweep = {**row, "eval_setting": "sweep", "inference_steps": 100, "inference_run": 2}
    assert trackers.metric_values(sweep) == {"test_acc/euler-100-run2": 91.0}
    assert trackers.metric_values({**row, "test_acc": float("nan")}) == {}
