"""A cell stopped between evaluation points goes on from its checkpoint and takes exactly the steps it
would have taken: the same rows as a run never stopped, for every method; checkpoints go when their
cell finishes, a damaged or foreign one is set aside with a warning, --no-checkpoints writes none, and
block-parallel cells (state in other processes) start over."""
import pandas as pd
import pytest

from conftest import TINY, run
from noprop_bench import faults
from noprop_bench.methods import BUILTIN
from noprop_bench.run.results import TIMING_COLUMNS, read_ledger

# 2 epochs, 3 evaluation points: the stop falls between the first and second point, mid-epoch
ARGV = [*TINY, "--train-limit", "150", "--epochs", "2", "--eval-points", "3", "--device", "cpu", "--no-report"]
FAST = ["noprop-ct", "noprop-dt"]


def rows(out) -> pd.DataFrame:
    df = pd.read_csv(out / "results.csv").drop(columns=TIMING_COLUMNS)
    return df.sort_values(["cell_id", "step", "eval_setting", "inference_run"]).reset_index(drop=True)


def diagnostics(out) -> pd.DataFrame:
    df = pd.read_csv(out / "diagnostics.csv")
    df = df[~df["diagnostic"].str.startswith(("worker_", "parent_"))]  # wall and CPU seconds
    # NoProp-DT's per-block readings from z ~ q differ by a few images between two unstopped runs too
    df = df[~((df["method"] == "noprop-dt") & (df["diagnostic"] == "block_acc") & (df["z"] == "q"))]
    return df.sort_values(["cell_id", "step", "diagnostic", "block", "t", "z"]).reset_index(drop=True)


def stop_at(monkeypatch, nth: int) -> list[int]:
    """The nth evaluation point raises before its rows are written (the cell fails there)."""
    reached, real = [], faults.point

    def point(name):
        real(name)
        if name == "cell-point":
            reached.append(1)
            if len(reached) == nth:
                raise RuntimeError("stopped by the test")
    monkeypatch.setattr(faults, "point", point)
    return reached


def stop_cell(monkeypatch, argv, out) -> None:
    """Run `argv` into `out` with its cell stopped at the second evaluation point, and show it was."""
    with monkeypatch.context() as m:
        reached = stop_at(m, 2)
        assert run([*argv, "--out", out]) == 1
    (ledger,) = read_ledger(out / "cells.jsonl").values()
    assert len(reached) == 2 and "stopped by the test" in ledger["error"]  # the stop happened, at point 2


def stopped_and_resumed(tmp_path, monkeypatch, capsys, argv) -> tuple:
    reference, out = tmp_path / "reference", tmp_path / "stopped"
    assert run([*argv, "--out", reference]) == 0
    stop_cell(monkeypatch, argv, out)
    assert list((out / "checkpoints").glob("*.pt"))
    capsys.readouterr()
    assert run(argv + ["--out", out]) == 0
    return reference, out, capsys.readouterr().err


def check_same(reference, out, err):
    assert "from its checkpoint at step" in err
    pd.testing.assert_frame_equal(rows(out), rows(reference))
    ours, theirs = diagnostics(out), diagnostics(reference)
    pd.testing.assert_frame_equal(ours, theirs)
    assert not list((out / "checkpoints").glob("*"))  # the finished cell's checkpoint is gone


@pytest.mark.parametrize("method,extra", [
    ("noprop-ct", []),                                        # the stop mid-pass
    ("noprop-ct", ["--eval-points", "2"]),                    # the checkpoint at the end of a pass
    pytest.param("noprop-dt", ["--embeddings", "prototype"],  # T passes an epoch, an optimiser per pass
                 marks=pytest.mark.slow),
    ("backprop", ["--set", "augment=crop"]),                  # augmentation draws per batch
])
def test_a_stopped_cell_goes_on_from_its_checkpoint_as_if_never_stopped(tmp_path, monkeypatch, capsys, method, extra):
    argv = ["--methods", method, *ARGV, *extra]
    check_same(*stopped_and_resumed(tmp_path, monkeypatch, capsys, argv))


@pytest.mark.slow
@pytest.mark.parametrize("method", [m for m in BUILTIN if m not in FAST])
def test_every_method_goes_on_from_its_checkpoint_as_if_never_stopped(tmp_path, monkeypatch, capsys, method):
    """Every method's state is in its state_dict, its optimiser's and its trainer's: a method that kept
    some elsewhere (a host generator, a step counter) would resume with other steps and fail here."""
    short = [] if method == "forward-gradient" else ["--set", "timesteps=3"]  # its groups are fixed
    argv = ["--methods", method, *ARGV, *short]  # short solves: this is about state, not depth
    check_same(*stopped_and_resumed(tmp_path, monkeypatch, capsys, argv))


def test_a_damaged_checkpoint_is_set_aside_and_the_cell_starts_over(tmp_path, monkeypatch, capsys):
    argv = ["--methods", "noprop-ct", *ARGV]
    reference, out = tmp_path / "reference", tmp_path / "stopped"
    assert run([*argv, "--out", reference]) == 0
    stop_cell(monkeypatch, argv, out)
    (saved,) = (out / "checkpoints").glob("*.pt")
    saved.write_bytes(saved.read_bytes()[:100])
    capsys.readouterr()
    assert run([*argv, "--out", out]) == 0
    err = capsys.readouterr().err
    assert f"checkpoint {saved} not used, it cannot be read" in err and "starts over" in err
    assert "from its checkpoint" not in err and saved.with_suffix(".pt.unused").exists()
    pd.testing.assert_frame_equal(rows(out), rows(reference))


def test_a_checkpoint_of_another_configuration_is_not_used(tmp_path, monkeypatch, capsys):
    """A default changed between the stop and the resume: the cell id is the same, its steps are not."""
    from noprop_bench.methods import get_method
    argv = ["--methods", "noprop-ct", *ARGV]
    stop_cell(monkeypatch, argv, tmp_path / "r")
    argv += ["--out", tmp_path / "r"]
    assert list((tmp_path / "r" / "checkpoints").glob("*.pt"))
    cls = get_method("noprop-ct")
    monkeypatch.setattr(cls, "TABLE3", {k: {**v, "eta": 0.5} for k, v in cls.TABLE3.items()})
    capsys.readouterr()
    assert run(argv) == 0
    err = capsys.readouterr().err
    assert "written for another configuration of this cell" in err and "from its checkpoint" not in err
    assert list((tmp_path / "r" / "checkpoints").glob("*.pt.unused"))


def test_no_checkpoints_writes_none_and_the_cell_starts_over(tmp_path, monkeypatch, capsys):
    argv = ["--methods", "noprop-ct", *ARGV, "--no-checkpoints"]
    stop_cell(monkeypatch, argv, tmp_path / "r")
    argv += ["--out", tmp_path / "r"]
    assert not (tmp_path / "r" / "checkpoints").exists()
    capsys.readouterr()
    assert run(argv) == 0
    assert "from its checkpoint" not in capsys.readouterr().err


def test_dry_run_names_a_checkpointed_cell_and_fresh_moves_its_checkpoint_aside(tmp_path, monkeypatch, capsys):
    argv = ["--methods", "noprop-ct", *ARGV]
    stop_cell(monkeypatch, argv, tmp_path / "r")
    argv += ["--out", tmp_path / "r"]
    capsys.readouterr()
    assert run([*argv, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "checkpointed" in out and "1 cell(s), 1 to run" in out
    assert run([*argv, "--fresh"]) == 0
    assert "from its checkpoint" not in capsys.readouterr().err
    (aside,) = (tmp_path / "r").glob("replaced-*")
    assert list((aside / "checkpoints").glob("*.pt"))


def test_a_checkpoint_that_does_not_fit_the_model_fails_its_cell_once_then_the_cell_starts_over(
        tmp_path, monkeypatch, capsys):
    """A new version's model with another parameter under the same config: the first retry fails with one
    line saying why, the next starts over."""
    import torch
    argv = ["--methods", "noprop-ct", *ARGV]
    stop_cell(monkeypatch, argv, tmp_path / "r")
    argv += ["--out", tmp_path / "r"]
    (saved,) = (tmp_path / "r" / "checkpoints").glob("*.pt")
    state = torch.load(saved, weights_only=True)
    state["model"]["not_a_parameter"] = torch.zeros(1)
    torch.save(state, saved)
    assert run(argv) == 1
    (ledger,) = read_ledger(tmp_path / "r" / "cells.jsonl").values()
    assert "its checkpoint does not fit this version's model" in ledger["error"]
    assert not saved.exists() and saved.with_suffix(".pt.unused").exists()
    capsys.readouterr()
    assert run(argv) == 0 and "from its checkpoint" not in capsys.readouterr().err


@pytest.mark.slow
def test_a_block_parallel_cell_writes_no_checkpoint(tmp_path, monkeypatch, capsys):
    argv = ["--methods", "noprop-dt", *ARGV, "--set", "workers=2", "--set", "timesteps=2"]
    stop_cell(monkeypatch, argv, tmp_path / "r")
    assert not list((tmp_path / "r" / "checkpoints").glob("*"))


@pytest.mark.slow
def test_a_cell_killed_between_points_goes_on_from_its_checkpoint(tmp_path, monkeypatch, capsys):
    """SIGKILL, no clean-up, as the second evaluation point's rows are about to be written."""
    import os
    import subprocess
    import sys
    from conftest import ROOT
    argv = [str(a) for a in ["--methods", "noprop-ct", *ARGV]]
    reference, out, marks = tmp_path / "reference", tmp_path / "killed", tmp_path / "faults"
    assert run([*argv, "--out", reference]) == 0
    env = {**os.environ, faults.ENV: "cell-point:2", faults.DIR_ENV: str(marks)}
    killed = subprocess.run([sys.executable, str(ROOT / "run_bench.py"), *argv, "--out", str(out)],
                            env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9 and list(marks.glob("cell-point-2-*")), killed.stderr[-2000:]  # it happened
    capsys.readouterr()
    assert run([*argv, "--out", out]) == 0
    check_same(reference, out, capsys.readouterr().err)
