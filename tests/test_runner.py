"""The runner as a GPU user needs it, each checked on the CPU: a failing cell never ends a sweep (unless the
device is broken), one data set resident per cell, every batch shape warmed before the clock, NoProp-CT's
schedule evaluated once per step, the determinism switch, and refusals before anything is built."""
import weakref

import pandas as pd
import pytest
import torch

from conftest import TINY, run, write_idx_dataset
from noprop_bench.data import device as data_device
from noprop_bench.methods import METHODS
from noprop_bench.run import runner

ARGV = ["--suite", "quick", *TINY, "--train-limit", "150", "--set", "timesteps=2", "--no-report"]


def test_a_cell_that_raises_is_recorded_with_its_traceback_and_the_sweep_goes_on(tmp_path, monkeypatch, capsys):
    def broken(self, x, y, stage=None):
        raise KeyError("a bug in this method")
    monkeypatch.setattr(METHODS["backprop"], "loss", broken)
    out = tmp_path / "r"
    assert run([*ARGV, "--methods", "backprop,noprop-dt", "--out", out]) == 1
    err = capsys.readouterr().err
    assert "backprop/digits/one-hot/seed0[epochs=1;timesteps=2] raised KeyError: 'a bug in this method'" in err
    (trace,) = (out / "errors").glob("*.txt")
    assert "Traceback" in trace.read_text() and "a bug in this method" in trace.read_text()
    assert set(pd.read_csv(out / "results.csv")["method"]) == {"noprop-dt"}  # the next cell ran
    assert run([*ARGV, "--methods", "backprop,noprop-dt", "--out", out]) == 1  # a resume retries only the failed one
    assert "1 already finished" in capsys.readouterr().err


def test_an_error_that_breaks_the_device_stops_the_sweep(tmp_path, monkeypatch, capsys):
    def illegal(self, x, y, stage=None):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")
    monkeypatch.setattr(METHODS["backprop"], "loss", illegal)
    out = tmp_path / "r"
    assert run([*ARGV, "--methods", "backprop,noprop-dt", "--out", out]) == 1
    err = capsys.readouterr().err
    assert "stopped: the device is unusable after this error" in err and "run the same command again" in err
    assert pd.read_csv(out / "results.csv").empty  # noprop-dt never started in the broken process


def test_running_out_of_memory_fails_the_cell_only(monkeypatch):
    assert not runner._breaks_device(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert runner._breaks_device(RuntimeError("CUDA error: device-side assert triggered"))
    assert not runner._breaks_device(ValueError("bad value"))


def test_only_one_data_set_is_resident_at_a_time(tmp_path, monkeypatch):
    """Cells run grouped by data set; the previous data set is released before the next is loaded, so a
    cell's CUDA peak holds its own data only."""
    write_idx_dataset(tmp_path / "FashionMNIST" / "raw", n_train=150, n_test=50)
    alive, seen = [], []
    original = data_device.load_data

    def tracking(name, *args, **kwargs):
        seen.append((name, [ref() is not None for ref in alive]))
        data = original(name, *args, **kwargs)
        alive.append(weakref.ref(data))
        return data
    monkeypatch.setattr(runner, "load_data", tracking)
    out = tmp_path / "r"
    assert run([*ARGV, "--datasets", "digits,fashion-mnist", "--methods", "noprop-dt,backprop",
                "--data-dir", tmp_path, "--out", out]) == 0
    assert seen == [("digits", []), ("fashion-mnist", [False])]  # each loaded once, the first gone by then
    df = pd.read_csv(out / "results.csv")
    sizes = df.groupby("dataset")["data_bytes"].first()
    assert sizes["fashion-mnist"] == 150 * 28 * 28 + 150 * 8 + 50 * 28 * 28 + 50 * 8  # uint8 images, int64 labels


def test_every_batch_shape_is_warmed_before_the_clock_starts(monkeypatch, tmp_path):
    """150 images in batches of 64: shapes 64 and 22 (the last batch) for every stage, before the first
    timed interval, so cuDNN's algorithm search for the short batch never lands inside the clock."""
    sizes, clock_started = [], []
    cls = METHODS["noprop-dt"]
    original = cls.loss

    def recording(self, x, y, stage=None):
        if not clock_started:
            sizes.append((stage, len(x)))
        return original(self, x, y, stage)
    monkeypatch.setattr(cls, "loss", recording)
    enter = runner.Clock.__enter__
    monkeypatch.setattr(runner.Clock, "__enter__", lambda self: (clock_started.append(True), enter(self))[1])
    assert run([*ARGV, "--methods", "noprop-dt", "--set", "batch_size=64", "--no-memory-probe", "--no-flops",
                "--no-diagnostics", "--out", tmp_path / "r"]) == 0
    assert {(1, 64), (1, 22), (2, 64), (2, 22)} <= set(sizes)


def test_noprop_ct_evaluates_its_schedule_network_once_per_training_step(digits):
    from noprop_bench.methods.continuous import LearnedSchedule
    cls = METHODS["noprop-ct"]
    model = cls(digits.spec, cls.default_config("digits", timesteps=4))
    calls = []
    original = LearnedSchedule._tilde
    LearnedSchedule._tilde = lambda self, t: (calls.append(t.shape), original(self, t))[1]
    try:
        x, y = next(digits.train.batches(32, shuffle=False))
        model.loss(x, y)
    finally:
        LearnedSchedule._tilde = original
    assert calls == [torch.Size([34])]  # the batch's 32 times, and 0 and 1, in one evaluation


def test_deterministic_is_recorded_and_restored(tmp_path):
    assert not torch.are_deterministic_algorithms_enabled()
    assert run([*ARGV, "--methods", "noprop-dt", "--deterministic", "--device", "cpu", "--out", tmp_path / "r"]) == 0
    assert pd.read_csv(tmp_path / "r" / "results.csv")["deterministic"].all()
    assert not torch.are_deterministic_algorithms_enabled()  # the process is left as it was


def test_block_parallel_on_a_gpu_is_refused_before_anything_is_built(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert run([*ARGV, "--methods", "noprop-dt", "--set", "workers=2", "--device", "cuda", "--out", tmp_path / "r"]) == 2
    err = capsys.readouterr().err
    assert "workers = 2 trains its blocks in CPU worker processes; on cuda use workers = 1" in err
    assert not (tmp_path / "r").exists()


def test_bf16_on_a_gpu_without_it_is_refused(monkeypatch):
    from noprop_bench.run.precision import check_precision
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100")
    with pytest.raises(ValueError, match="Tesla V100 has no bfloat16 support"):
        check_precision("bf16", torch.device("cuda"))
    check_precision("fp32", torch.device("cuda"))


def test_the_roof_uses_large_products_on_a_gpu():
    from noprop_bench.measure.flops import roof_size
    assert roof_size(torch.device("cuda:1")) == 8192 and roof_size(torch.device("cpu")) == 2048
