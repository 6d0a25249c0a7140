"""--jobs K: K cells at once in worker processes. The same rows as one job at the same thread count
(timings aside), every row marked with how many cells ran beside it, and refused for suites whose times or
memory are the result."""
import pandas as pd
import pytest
import torch

from conftest import TINY, run
from noprop_bench.run.results import HOST_COLUMNS, TIMING_COLUMNS

ARGV = ["--suite", "quick", *TINY, "--methods", "noprop-dt,noprop-fm", "--seeds", "0,1",
        "--set", "noprop-fm.timesteps=4", "--no-report"]


@pytest.fixture()
def threads():
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def rows(out):
    df = pd.read_csv(out / "results.csv").drop(columns=TIMING_COLUMNS + HOST_COLUMNS + ["co_running"])
    return df.sort_values(["cell_id", "step", "eval_setting", "inference_run"]).reset_index(drop=True)


@pytest.mark.slow
def test_two_jobs_give_the_rows_of_one_job_at_the_same_threads(tmp_path, threads):
    threads(1)
    assert run([*ARGV, "--out", tmp_path / "one"]) == 0
    threads(2)  # two jobs share two threads out: one each, as the single job had
    assert run([*ARGV, "--jobs", "2", "--out", tmp_path / "two"]) == 0
    one, two = pd.read_csv(tmp_path / "one" / "results.csv"), pd.read_csv(tmp_path / "two" / "results.csv")
    assert set(one["co_running"]) == {1} and set(two["co_running"]) == {2}
    assert set(two["threads"]) == {1} and len(two) == len(one) and two["cell_id"].nunique() == 4
    pd.testing.assert_frame_equal(rows(tmp_path / "two"), rows(tmp_path / "one"))


@pytest.mark.parametrize("suite", ["fig3-small", "memory", "parallel"])
def test_jobs_are_refused_for_a_timed_suite_before_anything_is_written(tmp_path, capsys, suite):
    out = tmp_path / "run"
    assert run(["--suite", suite, *TINY, "--jobs", "2", "--out", out]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --jobs 2:") and "measures training times or memory" in err
    assert len(err.splitlines()) == 1 and not out.exists()


def test_jobs_with_ray_is_a_clear_error(tmp_path, capsys):
    assert run(["--suite", "quick", *TINY, "--jobs", "2", "--executor", "ray", "--out", tmp_path / "run"]) == 2
    assert "--jobs is for this machine" in capsys.readouterr().err


@pytest.mark.slow
def test_workers_exit_when_the_sweep_is_killed(tmp_path):
    """SIGKILL the parent of a --jobs 2 sweep mid-cell: its workers must not go on computing unseen."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import ROOT
    argv = [sys.executable, str(ROOT / "run_bench.py"), "--suite", "quick", *TINY, "--methods", "noprop-dt",
            "--seeds", "0,1", "--epochs", "50", "--no-report", "--jobs", "2", "--out", str(tmp_path / "r")]
    parent = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def children():
        out = subprocess.run(["pgrep", "-P", str(parent.pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    deadline = time.time() + 120
    workers = []
    while time.time() < deadline and len(workers) < 2:
        workers = [p for p in children() if b"spawn_main" in open(f"/proc/{p}/cmdline", "rb").read()]
        time.sleep(0.5)
    assert len(workers) == 2, "the sweep never started its two workers"
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 30
    alive = workers
    while alive and time.time() < deadline:
        time.sleep(0.5)
        alive = [p for p in alive if os.path.exists(f"/proc/{p}") and
                 open(f"/proc/{p}/stat").read().split()[2] != "Z"]
    for p in alive:  # leave nothing running, even when the test fails
        os.kill(p, signal.SIGKILL)
    assert not alive, f"workers {alive} outlived the killed sweep"
