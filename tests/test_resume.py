"""Resumable sweeps: a run killed (SIGKILL, no clean-up) at any moment, in the first cell, between cells,
mid-cell or while writing the report, finishes with the same command and no flag, every cell exactly
once and nothing lost; finished cells are skipped, torn lines dropped, --fresh moves old results aside,
and what cannot be resumed safely is refused untouched."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import TINY, run
from noprop_bench import faults
from noprop_bench.run.results import TIMING_COLUMNS, read_ledger

ROOT = Path(__file__).resolve().parent.parent
# two cells (noprop-dt, then backprop), two evaluation points each
ARGV = ["--suite", "quick", *TINY, "--train-limit", "150", "--set", "timesteps=2", "--eval-points", "2",
        "--device", "cpu"]  # compared row by row: on a GPU, only --deterministic would repeat exactly


def rows(out: Path) -> pd.DataFrame:
    df = pd.read_csv(out / "results.csv").drop(columns=TIMING_COLUMNS)
    return df.sort_values(["cell_id", "step", "eval_setting", "inference_run"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "r"
    assert run([*ARGV, "--out", out, "--no-report"]) == 0
    return rows(out)


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["cell-start:1", "cell-point:1", "between-cells:1", "cell-point:3", "report:1"])
def test_a_kill_at_any_moment_resumes_with_the_same_command(tmp_path, reference, fault):
    out, marks = tmp_path / "r", tmp_path / "faults"
    env = {**os.environ, faults.ENV: fault, faults.DIR_ENV: str(marks)}
    killed = subprocess.run([sys.executable, str(ROOT / "run_bench.py"), *map(str, ARGV), "--out", str(out)],
                            env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    point, _, nth = fault.partition(":")
    assert killed.returncode == -9 and list(marks.glob(f"{point}-{nth}-*")), killed.stderr[-2000:]  # it happened
    assert run([*ARGV, "--out", out]) == 0  # the same command, no flag
    pd.testing.assert_frame_equal(rows(out), reference)
    ledger = (out / "cells.jsonl").read_text().splitlines()
    assert len(ledger) == 2 and len(read_ledger(out / "cells.jsonl")) == 2  # every cell exactly once
    assert (out / "report" / "report.md").is_file() and not list(out.glob(".report-*"))


def test_rerun_skips_finished_cells_and_keeps_rows_once(tiny_run, tmp_path, capsys):
    out = tmp_path / "r"
    import shutil
    shutil.copytree(tiny_run[0], out)
    before = rows(out)
    argv = ["--suite", "quick", *TINY, "--epochs", "2", "--inference-runs", "2", "--seeds", "3", "--out", out]
    assert run([*argv, "--no-report"]) == 0
    assert "2 already finished" in capsys.readouterr().err
    pd.testing.assert_frame_equal(rows(out), before)
    meta = json.loads((out / "metadata.json").read_text())
    assert len(meta["skipped"]) == 2 and len(meta["previous"]) == 1
    assert run([*argv, "--dry-run"]) == 0
    assert "2 cell(s), 0 to run" in capsys.readouterr().out


def test_adding_cells_runs_only_the_new_ones(tmp_path):
    out = tmp_path / "r"
    assert run([*ARGV, "--methods", "noprop-dt", "--out", out, "--no-report"]) == 0
    before = rows(out)
    assert run([*ARGV, "--out", out, "--no-report"]) == 0
    after = rows(out)
    assert set(after["method"]) == {"noprop-dt", "backprop"}
    pd.testing.assert_frame_equal(after[after["method"] == "noprop-dt"].reset_index(drop=True), before)


def test_unfinished_cells_and_a_torn_last_line_are_dropped_and_rerun(tmp_path, reference):
    out = tmp_path / "r"
    assert run([*ARGV, "--out", out, "--no-report"]) == 0
    ledger = (out / "cells.jsonl").read_text().splitlines()
    (out / "cells.jsonl").write_text(ledger[0] + "\n" + ledger[1][:10])  # second cell not finished, torn entry
    with open(out / "results.csv", "a") as f:
        f.write("quick,deadbeef,noprop-dt,dig")  # a row cut off mid-write
    assert run([*ARGV, "--out", out, "--no-report"]) == 0
    pd.testing.assert_frame_equal(rows(out), reference)
    assert len(read_ledger(out / "cells.jsonl")) == 2


def test_a_new_config_field_with_a_default_keeps_the_ids_of_finished_cells(tmp_path, monkeypatch, capsys):
    """An upgrade that adds a config key with a default: the finished cells are still finished."""
    import dataclasses
    from noprop_bench.methods.noprop_dt import DTConfig
    out = tmp_path / "r"
    argv = [*ARGV, "--methods", "noprop-dt", "--out", out, "--no-report"]
    assert run(argv) == 0
    ids = set(read_ledger(out / "cells.jsonl"))
    fields = [(f.name, f.type, f) for f in dataclasses.fields(DTConfig)]
    extended = dataclasses.make_dataclass("DTConfig", [*fields, ("new_knob", float, dataclasses.field(default=0.5))],
                                          bases=(DTConfig,))
    from noprop_bench.methods import get_method
    monkeypatch.setattr(get_method("noprop-dt"), "Config", extended)
    capsys.readouterr()
    assert run(argv) == 0
    assert "1 already finished" in capsys.readouterr().err and set(read_ledger(out / "cells.jsonl")) == ids
    assert run([*argv, "--set", "new_knob=0.7"]) == 0  # a value other than the default is another cell
    assert len(read_ledger(out / "cells.jsonl")) == 2


def test_a_changed_default_is_refused_rather_than_mixed(tmp_path, monkeypatch, capsys):
    from noprop_bench.methods import get_method
    out = tmp_path / "r"
    argv = [*ARGV, "--methods", "noprop-dt", "--out", out, "--no-report"]
    assert run(argv) == 0
    before = (out / "results.csv").read_text()
    cls = get_method("noprop-dt")
    monkeypatch.setattr(cls, "TABLE3", {k: {**v, "eta": 0.2} for k, v in cls.TABLE3.items()})  # a new default
    assert run(argv) == 2
    err = capsys.readouterr().err
    assert "finished with eta=0.1, but this version's value is 0.2" in err and "--fresh" in err
    assert (out / "results.csv").read_text() == before


def test_fresh_moves_old_results_aside(tmp_path, capsys):
    out = tmp_path / "r"
    argv = [*ARGV, "--methods", "noprop-dt", "--out", out, "--no-report"]
    assert run(argv) == 0
    old = (out / "results.csv").read_text()
    assert run([*argv, "--fresh"]) == 0
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
    argv = [*ARGV, "--methods", "noprop-dt", "--out", out, "--no-report"]
    assert run(argv) == 0
    if damage == "header":
        text = (out / "results.csv").read_text().replace("scaled", "notes", 1)
        (out / "results.csv").write_text(text)
    else:
        (out / "cells.jsonl").unlink()
    before = (out / "results.csv").read_text()
    assert run(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "--fresh" in err
    assert (out / "results.csv").read_text() == before
