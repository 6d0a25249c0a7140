"""--executor ray on a local Ray instance (2 CPUs): the same rows as the local executor, a worker
killed mid-cell is retried so every cell lands exactly once, a failing cell is recorded while the
others finish, a node without the data set names itself and the data set."""
import json
import os

import pandas as pd
import pytest
import ray
import torch

from noprop_bench import cli as run_bench
from noprop_bench import faults
from noprop_bench.run.ray_executor import run_cells_ray
from noprop_bench.run.results import HOST_COLUMNS, TIMING_COLUMNS, ResultWriter, read_ledger
from noprop_bench.run.runner import RunOptions
from noprop_bench.run.plan import Cell
from noprop_bench.methods import METHODS

pytestmark = pytest.mark.slow  # a local Ray instance takes seconds to start, and every test runs cells in it
THREADS = min(2, torch.get_num_threads())
ARGV = ["--suite", "quick", "--datasets", "digits", "--train-limit", "200", "--test-limit", "100",
        "--methods", "noprop-dt,noprop-fm", "--seeds", "0,1", "--epochs", "2", "--set", "noprop-fm.timesteps=4",
        "--device", "cpu",
        "--no-progress"]
RAY = ["--executor", "ray", "--ray-cpus-per-task", str(THREADS)]


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local instance for the module; the executor uses it rather than starting its own."""
    os.environ["NOPROP_BENCH_OFFLINE"] = "1"  # workers inherit the environment at start-up
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture()
def same_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)  # the workers run with THREADS torch threads; so does the local run
    yield
    torch.set_num_threads(before)


def run(argv):
    return run_bench.main([str(a) for a in argv])


def rows(out):
    df = pd.read_csv(out / "results.csv").drop(columns=TIMING_COLUMNS + HOST_COLUMNS)
    return df.sort_values(["cell_id", "step", "eval_setting", "inference_run"]).reset_index(drop=True)


def test_ray_gives_the_same_rows_as_the_local_executor(tmp_path, same_threads):
    assert run([*ARGV, "--out", tmp_path / "local"]) == 0
    assert run([*ARGV, *RAY, "--out", tmp_path / "ray"]) == 0
    pd.testing.assert_frame_equal(rows(tmp_path / "ray"), rows(tmp_path / "local"))
    meta = json.loads((tmp_path / "ray" / "metadata.json").read_text())
    assert meta["executor"] == "ray" and meta["device"]["type"] == "ray"
    # resuming works as for a local run: nothing left to do
    assert run([*ARGV, *RAY, "--out", tmp_path / "ray"]) == 0
    pd.testing.assert_frame_equal(rows(tmp_path / "ray"), rows(tmp_path / "local"))


@pytest.mark.slow
def test_a_worker_killed_mid_cell_is_retried_and_every_cell_lands_once(tmp_path, same_threads, monkeypatch):
    """The first Ray worker to finish an evaluation point kills itself (SIGKILL) before returning: Ray
    retries its cell in a new worker, and every cell lands exactly once with the local executor's rows."""
    argv = [*ARGV, "--epochs", "3", "--eval-points", "2"]
    assert run([*argv, "--out", tmp_path / "local"]) == 0
    marks = tmp_path / "faults"
    monkeypatch.setenv(faults.ENV, "cell-point:1")
    monkeypatch.setenv(faults.DIR_ENV, str(marks))
    assert run([*argv, *RAY, "--out", tmp_path / "ray"]) == 0
    (killed,) = marks.glob("cell-point-1-*")  # the fault happened, once
    assert int(killed.name.rsplit("-", 1)[1]) != os.getpid()  # in a worker, not the driver
    ledger = read_ledger(tmp_path / "ray" / "cells.jsonl")
    assert len(ledger) == 4 and all(e["error"] is None for e in ledger.values())
    assert len((tmp_path / "ray" / "cells.jsonl").read_text().splitlines()) == 4  # once each
    pd.testing.assert_frame_equal(rows(tmp_path / "ray"), rows(tmp_path / "local"))


def test_a_cell_that_raises_is_recorded_as_failed_and_the_others_finish(tmp_path):
    good = Cell("t", "noprop-fm", "digits", 0, METHODS["noprop-fm"].default_config("digits", epochs=1, timesteps=2),
                train_limit=100, test_limit=50)
    bad = Cell("t", "no-such-method", "digits", 0, good.config, train_limit=100, test_limit=50)
    writer = ResultWriter(tmp_path / "r")
    outcomes = run_cells_ray([bad, good], RunOptions(torch.device("cpu"), progress=False), writer, "cpu")
    by_method = {o.cell.method: o for o in outcomes}
    assert by_method["noprop-fm"].error is None and by_method["noprop-fm"].rows
    error = by_method["no-such-method"].error
    assert error.startswith("no-such-method/digits/one-hot/seed0")
    assert "raised on a Ray worker: ValueError: unknown method 'no-such-method'" in error
    ledger = read_ledger(tmp_path / "r" / "cells.jsonl")
    assert ledger[good.id]["error"] is None and "raised on a Ray worker" in ledger[bad.id]["error"]
    assert set(pd.read_csv(tmp_path / "r" / "results.csv")["cell_id"]) == {good.id}


def test_a_node_without_the_data_set_names_the_node_and_the_data_set(tmp_path, capsys):
    argv = ["--suite", "quick", "--datasets", "digits,cifar10", "--methods", "noprop-fm", "--set", "timesteps=2",
            "--train-limit", "100", "--test-limit", "50", "--no-progress", "--data-dir", tmp_path / "empty",
            *RAY, "--out", tmp_path / "r"]
    assert run(argv) == 1
    err = capsys.readouterr().err
    assert f"noprop-fm/cifar10/one-hot/seed0[epochs=1;timesteps=2] on node {os.uname().nodename}: " in err
    assert "data set 'cifar10' not found" in err
    df = pd.read_csv(tmp_path / "r" / "results.csv")
    assert set(df["dataset"]) == {"digits"}
    failed = json.loads((tmp_path / "r" / "metadata.json").read_text())["failed"]
    assert len(failed) == 1


def test_a_gpu_request_on_a_cluster_without_gpus_is_a_clear_error(tmp_path, capsys):
    assert run([*ARGV, *RAY, "--device", "cuda", "--out", tmp_path / "r"]) == 2
    assert "--device cuda: the Ray cluster has no GPUs" in capsys.readouterr().err
