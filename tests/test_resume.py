"""Resumable sweeps: finished cells are skipped, a run killed mid-cell loses only that cell, the CSV is
never truncated or duplicated, --fresh moves old results aside."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from noprop_bench import cli as run_bench
from noprop_bench.run.results import TIMING_COLUMNS, read_ledger

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--suite", "quick", "--datasets", "digits", "--train-limit", "200", "--test-limit", "100", "--no-progress"]


def run(argv):
    return run_bench.main([str(a) for a in argv])


def rows(out: Path) -> pd.DataFrame:
    df = pd.read_csv(out / "results.csv").drop(columns=TIMING_COLUMNS)
    return df.sort_values(["cell_id", "step", "eval_setting", "inference_run"]).reset_index(drop=True)


def test_rerun_skips_finished_cells_and_keeps_rows_once(tmp_path, capsys):
    out = tmp_path / "r"
    assert run([*TINY, "--out", out]) == 0
    first = rows(out)
    capsys.readouterr()
    assert run([*TINY, "--out", out]) == 0
    assert "2 already finished" in capsys.readouterr().err
    pd.testing.assert_frame_equal(rows(out), first)
    meta = json.loads((out / "metadata.json").read_text())
    assert len(meta["skipped"]) == 2 and len(meta["previous"]) == 1
    assert run([*TINY, "--out", out, "--dry-run"]) == 0
    assert "2 cell(s), 0 to run" in capsys.readouterr().out


def test_adding_cells_runs_only_the_new_ones(tmp_path):
    out = tmp_path / "r"
    assert run([*TINY, "--methods", "noprop-dt", "--out", out]) == 0
    before = rows(out)
    assert run([*TINY, "--out", out]) == 0
    after = rows(out)
    assert set(after["method"]) == {"noprop-dt", "backprop"}
    pd.testing.assert_frame_equal(after[after["method"] == "noprop-dt"].reset_index(drop=True), before)


def test_unfinished_cells_and_a_torn_last_line_are_dropped_and_rerun(tmp_path):
    reference, out = tmp_path / "ref", tmp_path / "r"
    assert run([*TINY, "--out", reference]) == 0
    assert run([*TINY, "--out", out]) == 0
    ledger = (out / "cells.jsonl").read_text().splitlines()
    (out / "cells.jsonl").write_text(ledger[0] + "\n" + ledger[1][:10])  # second cell not finished, torn entry
    with open(out / "results.csv", "a") as f:
        f.write("ci,deadbeef,noprop-dt,dig")  # a row cut off mid-write
    assert run([*TINY, "--out", out]) == 0
    pd.testing.assert_frame_equal(rows(out), rows(reference))
    assert len(read_ledger(out / "cells.jsonl")) == 2


def test_killed_mid_cell_then_rerun_completes_with_every_row_once(tmp_path):
    """SIGKILL (no cleanup at all) while the second cell is part-way through; then run again."""
    reference, out = tmp_path / "ref", tmp_path / "killed"
    argv = [*TINY, "--train-limit", "640", "--epochs", "3", "--seeds", "0,1", "--methods", "noprop-dt"]
    assert run([*argv, "--out", reference]) == 0
    env = {**os.environ, "NOPROP_BENCH_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "run_bench.py"), *argv, "--out", str(out)], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed_mid_cell = False
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        ledger = out / "cells.jsonl"
        if ledger.exists() and (out / "results.csv").exists():
            finished = set(read_ledger(ledger))
            ids = set(pd.read_csv(out / "results.csv")["cell_id"])
            if finished and ids - finished:  # the second cell has rows but is not finished
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                killed_mid_cell = True
                break
        time.sleep(0.02)
    assert killed_mid_cell, "the run finished before it could be killed mid-cell"
    partial = pd.read_csv(out / "results.csv")
    assert partial["cell_id"].nunique() == 2 and len(read_ledger(out / "cells.jsonl")) == 1
    assert run([*argv, "--out", out]) == 0
    pd.testing.assert_frame_equal(rows(out), rows(reference))
    assert not rows(out).duplicated(["cell_id", "step", "eval_setting", "inference_run"]).any()


def test_fresh_moves_old_results_aside(tmp_path, capsys):
    out = tmp_path / "r"
    assert run([*TINY, "--methods", "noprop-dt", "--out", out]) == 0
    old = (out / "results.csv").read_text()
    assert run([*TINY, "--methods", "noprop-dt", "--out", out, "--fresh"]) == 0
    (aside,) = out.glob("replaced-*")
    assert (aside / "results.csv").read_text() == old and (aside / "cells.jsonl").exists()
    assert "moved to" in capsys.readouterr().err
    assert len(pd.read_csv(out / "results.csv")) == len(pd.read_csv(aside / "results.csv"))


@pytest.mark.parametrize("damage,message", [
    ("header", "written by another version of noprop-bench"),
    ("ledger", "has no ledger"),
])
def test_results_that_cannot_be_resumed_are_refused_untouched(tmp_path, capsys, damage, message):
    out = tmp_path / "r"
    assert run([*TINY, "--methods", "noprop-dt", "--out", out]) == 0
    if damage == "header":
        text = (out / "results.csv").read_text().replace("scaled", "notes", 1)
        (out / "results.csv").write_text(text)
    else:
        (out / "cells.jsonl").unlink()
    before = (out / "results.csv").read_text()
    assert run([*TINY, "--methods", "noprop-dt", "--out", out]) == 2
    err = capsys.readouterr().err
    assert message in err and "--fresh" in err
    assert (out / "results.csv").read_text() == before

