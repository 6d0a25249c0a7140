"""Throughput benchmarks (pytest-benchmark): one training step and one inference batch per method.

Not timed in the normal test run (pyproject's addopts has --benchmark-disable: each body runs once, as
a test that it still works). Measure with

    bin/test tests/test_throughput.py --benchmark-enable --benchmark-json=results/benchmarks/NAME.json
    bin/test tests/test_throughput.py --benchmark-enable --benchmark-compare=PATH_OR_ID   # against a baseline

Inputs are random MNIST-shaped batches (pixel values do not change the work). The model is Table 3's
MNIST configuration, except that the continuous-time methods integrate NOPROP_BENCH_STEPS steps
(default 20; the paper's 1000 makes one CPU step take minutes): training steps for the neural-ODE
baselines, inference steps for all of them. Every benchmark runs in fp32 and in bf16 (autocast), with
the runner's channels_last layout (NOPROP_BENCH_LAYOUT=contiguous for NCHW). Each result's extra_info
records method, device, batch, steps, precision, layout and images per second. On CUDA every timed call ends with a synchronisation.
"""
import os

import pandas as pd

import pytest
import torch

from noprop_bench.data import DATASETS
from noprop_bench.run.precision import autocast, fast_layout
from noprop_bench.run.step import train_step
from noprop_bench.methods import BUILTIN as METHODS

BATCH = 128
STEPS = int(os.environ.get("NOPROP_BENCH_STEPS", "20"))
# channels_last is the runner's layout; NOPROP_BENCH_LAYOUT=contiguous times the NCHW layout it replaced
LAYOUT = os.environ.get("NOPROP_BENCH_LAYOUT", "channels_last")
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
SPEC = DATASETS["mnist"]


def build(name):
    cls = METHODS[name]
    overrides = {"timesteps": STEPS} if cls.continuous else {}
    torch.manual_seed(0)
    method = cls(SPEC, cls.default_config("mnist", **overrides), DEVICE)
    return fast_layout(method) if LAYOUT == "channels_last" else method  # the runner uses fast_layout


def batch(n):
    x = torch.randn(n, *SPEC.image_shape, device=DEVICE)
    y = torch.randint(0, SPEC.num_classes, (n,), device=DEVICE)
    return x, y


def sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def record(benchmark, name, images, steps, precision):
    benchmark.extra_info.update(method=name, device=str(DEVICE), batch=images, steps=steps, precision=precision,
                                layout=LAYOUT)
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["images_per_s"] = images / benchmark.stats.stats.mean


PRECISIONS = ["fp32", "bf16"]  # tf32 is CUDA-only: benchmark it there with --precision in a suite


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("name", list(METHODS))
def test_train_step(benchmark, name, precision):
    """One optimiser step on one minibatch (for NoProp-DT: one block's step; an epoch has T of them)."""
    method = build(name)
    method.train()
    optimizer = method.make_optimizer()
    stage = method.stages()[-1]
    x, y = batch(BATCH)

    def step():
        loss, _ = train_step(method, optimizer, x, y, stage, precision)
        sync()
        return loss

    loss = benchmark.pedantic(step, rounds=5, warmup_rounds=1)
    assert torch.isfinite(loss)
    record(benchmark, name, BATCH, STEPS if method.continuous else method.config.timesteps, precision)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("name", list(METHODS))
def test_inference(benchmark, name, precision):
    """Class scores for one batch with the method's default rule (continuous: STEPS steps)."""
    method = build(name)
    method.eval()
    x, _ = batch(256)

    @torch.no_grad()
    def infer():
        with autocast(precision, DEVICE):
            scores = method.predict(x)
        sync()
        return scores

    scores = benchmark.pedantic(infer, rounds=5, warmup_rounds=1)
    assert scores.shape == (256, SPEC.num_classes)
    record(benchmark, name, 256, method.last_nfe, precision)


class RecordingBar:
    def __init__(self):
        self.updates, self.descriptions = [], []

    def update(self, n):
        self.updates.append(n)

    def set_description(self, text):
        self.descriptions.append(text)


@pytest.mark.parametrize("method,extra", [("noprop-dt", {"timesteps": 2}), ("noprop-fm", {"timesteps": 4})])
def test_the_progress_bar_counts_evaluation_and_ends_exactly_at_its_total(method, extra):
    """The ETA is honest only if evaluation is in the total: the updates of a cell (training steps and
    every evaluation, sweeps and train accuracy included) sum to the cell's share of the total."""
    from noprop_bench.run.plan import make_plan
    from noprop_bench.run.runner import TRAIN_WORK, RunOptions, load_cell_data, run_cell
    from noprop_bench.run.suites import expand, load_suite
    suite = load_suite("quick") | {"methods": [method], "datasets": ["digits"], "train_limit": 200,
                                   "test_limit": 100, "eval_points": 3, "inference_runs": 2, "train_accuracy": True,
                                   "inference_steps": [2]}
    (cell,) = expand("quick", suite, {**extra, "epochs": 2})
    data = load_cell_data(cell, torch.device("cpu"))
    bar = RecordingBar()
    plan = make_plan(cell, len(data.train), len(data.test))
    outcome = run_cell(plan, data, RunOptions(torch.device("cpu"), diagnostics=False, memory_probe=False), None, bar)
    assert outcome.error is None
    cost = plan.cost()
    assert cost == make_plan(cell).cost()  # the same plan before the data is read (--dry-run's)
    assert cost["eval_nfe"] > 0
    assert sum(bar.updates) == pytest.approx(TRAIN_WORK * cost["train_nfe"] + cost["eval_nfe"])
    assert any("evaluating" in d for d in bar.descriptions)


@pytest.mark.slow  # two fresh processes, each importing torch
def test_the_step_profile_measures_both_allocators_in_fresh_processes(tmp_path):
    from noprop_bench.measure import step_profile
    assert step_profile.main([str(tmp_path), "--methods", "noprop-fm", "--precisions", "fp32", "--dataset",
                              "digits", "--steps", "2", "--repeats", "1", "--profile-steps", "1"]) == 0
    rows = pd.read_csv(tmp_path / "steps.csv")
    assert list(rows["allocator"]) == ["default", "fixed"] and (rows["ms_per_step"] > 0).all()
    assert "default" in rows["allocator_state"].iloc[0] and "glibc with fixed" in rows["allocator_state"].iloc[1]
    table = (tmp_path / "profile-noprop-fm-fp32.txt").read_text()
    assert "aten::convolution_backward" in table and "Self CPU" in table
