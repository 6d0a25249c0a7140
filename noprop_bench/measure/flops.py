"""Model FLOPs of a cell and the device's matmul roof, so every row can say how fast it ran and how far
from the hardware's best that is.

FLOPs are counted once per cell, outside the clock, by torch.utils.flop_counter (matrix products and
convolutions, forward and backward; elementwise work is not counted, so they are "model FLOPs"):
  - one training step per stage, on a copy in a forked RNG (the caller's model and stream untouched);
  - one inference batch per evaluated (steps, solver) setting, per image.
The roof is a large matrix product in the run's precision on the cell's own device (8192^3 on a GPU,
2048^3 on a CPU), timed after a warm-up: what one dense kernel achieves there, the ceiling a training
step can approach.
"""
from __future__ import annotations

import copy
import functools
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from noprop_bench.run.precision import autocast, matmul_mode
from noprop_bench.run.step import train_step

ROOF_N = 2048
FLOP_IMAGES = 100  # images in the counted inference batch (FLOPs per image do not depend on it)


class _NoModules:
    """Stands in for FlopCounterMode's module tracker: we need the total only, and the tracker's
    backward hooks break methods that call autograd.grad inside backward (the adjoint ODE)."""
    parents = {"Global"}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _counter() -> FlopCounterMode:
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _NoModules()
    return counter


def count_training_flops(method, optimizer, split, batch_size: int, precision: str) -> float:
    """Mean FLOPs of one optimiser step over the method's stages (one full batch each)."""
    device = split.labels.device
    model, opt = copy.deepcopy((method, optimizer))
    model.train()
    x, y = split.normalise(split.images[:batch_size]), split.labels[:batch_size]
    per_stage = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), matmul_mode(precision, device):
        for stage in model.stages():
            with _counter() as counter:
                train_step(model, opt, x, y, stage, precision)
            per_stage.append(counter.get_total_flops())
    return sum(per_stage) / len(per_stage)


@torch.no_grad()
def count_inference_flops(method, split, steps, solver, precision: str) -> float:
    """FLOPs per image of one prediction with (steps, solver)."""
    device = split.labels.device
    was_training = method.training
    method.eval()
    x = split.normalise(split.images[:FLOP_IMAGES])
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), matmul_mode(precision, device):
        with _counter() as counter, autocast(precision, device):
            method.predict(x, steps=steps, solver=solver)
    method.train(was_training)
    return counter.get_total_flops() / len(x)


def roof_size(device: torch.device) -> int:
    """The product's size: large enough to reach a GPU's tensor-core rate (8192^3 is 1.1 TFLOP), 2048 on
    a CPU (where it already runs at the BLAS's best and a larger one only takes longer)."""
    return 8192 if torch.device(device).type == "cuda" else ROOF_N


def matmul_roof(device: torch.device, precision: str, n: int | None = None, seconds: float = 0.5) -> float:
    """GFLOP/s of an n^3 matrix product in `precision` (bf16 operands for bf16) on `device`.

    On CUDA the products are queued back to back and timed with CUDA events on the device itself (no
    synchronisation between them, which would add launch gaps); elsewhere by the wall clock.
    """
    device = torch.device(device)
    n = n or roof_size(device)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    cuda = device.type == "cuda"
    with matmul_mode(precision, device):
        for _ in range(2):
            a @ b
        if cuda:
            torch.cuda.synchronize(device)
        reps, elapsed = 0, 0.0
        while elapsed < seconds or reps < 3:
            batch = max(1, reps)  # double the batch each round: few timer reads, none between products
            if cuda:
                with torch.cuda.device(device):
                    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    start.record()
                    for _ in range(batch):
                        a @ b
                    stop.record()
                    stop.synchronize()
                    elapsed += start.elapsed_time(stop) / 1e3
            else:
                t0 = time.perf_counter()
                for _ in range(batch):
                    a @ b
                elapsed += time.perf_counter() - t0
            reps += batch
    return 2 * n ** 3 * reps / elapsed / 1e9


@functools.lru_cache(maxsize=None)
def _roof(device: str, precision: str) -> float:
    return matmul_roof(torch.device(device), precision)


def roof(device: torch.device, precision: str) -> float:
    """The roof of `device` in `precision`, measured once per process (every cell of a run shares it)."""
    return _roof(str(torch.device(device)), precision)
