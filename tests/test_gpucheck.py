"""The one-call GPU check in its CPU mode: every step runs and writes its file, and a step that dies loses
nothing the other steps wrote."""
import subprocess
import sys

import pandas as pd
import pytest

from conftest import ROOT
from noprop_bench.gpucheck import FILES, STEPS

pytestmark = pytest.mark.slow


def gpu_check(out, *extra, env=None):
    return subprocess.run([sys.executable, "-m", "noprop_bench.gpucheck", "--device", "cpu", "--budget", "tiny",
                           "--out", str(out), *extra], capture_output=True, text=True, cwd=ROOT, env=env)


def summary_rows(out):
    lines = (out / "summary.md").read_text().splitlines()
    return {cells[1].strip(): cells[3].strip() for cells in (line.split("|") for line in lines)
            if len(cells) > 4 and cells[1].strip() in STEPS}


def test_cpu_mode_runs_every_step_and_writes_its_files(tmp_path):
    proc = gpu_check(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert summary_rows(tmp_path) == {step: "ok" for step in STEPS}
    assert {p.name for p in tmp_path.iterdir()} == {*FILES.values(), "summary.md"}
    epoch = pd.read_csv(tmp_path / "epoch.csv")
    assert set(epoch["method"]) == {"backprop", "noprop-dt", "noprop-ct", "noprop-fm", "adjoint", "backprop-ode"}
    checked = (tmp_path / "device_checks.txt").read_text()
    from noprop_bench.methods import METHODS
    assert all(f"\n{name} " in checked for name in METHODS)  # every registered method's step was audited
    assert (epoch.loc[epoch["eval_setting"] == "default", "test_acc"] >= 0).all()
    assert "passed" in (tmp_path / "tests.txt").read_text()


def test_a_step_that_dies_is_reported_and_the_others_still_write(tmp_path, monkeypatch):
    import os
    faults = tmp_path / "faults"
    env = {**os.environ, "NOPROP_BENCH_FAULT": "gpucheck-device_checks", "NOPROP_BENCH_FAULT_DIR": str(faults)}
    out = tmp_path / "out"
    proc = gpu_check(out, "--steps", "environment,device_checks,adjoint", env=env)
    assert proc.returncode == 1
    assert len(list(faults.glob("gpucheck-device_checks-1-*"))) == 1  # the fault really happened
    rows = summary_rows(out)
    assert rows["environment"] == "ok" and rows["adjoint"] == "ok" and rows["device_checks"].startswith("failed")
    assert (out / "environment.json").is_file() and (out / "adjoint.csv").is_file()
    assert not (out / "device_checks.txt").exists()
