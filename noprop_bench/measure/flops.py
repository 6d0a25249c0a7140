"""Model FLOPs of a cell and the device's matmul roof, so every row can say how fast it ran and how far
from the hardware's best that is.

FLOPs are counted once per cell, outside the clock, by torch.utils.flop_counter (matrix products and
convolutions, forward and backward; elementwise work is not counted, so they are "model FLOPs"):
  - one training step per stage, on a copy in a forked RNG (the caller's model and stream untouched);
  - one inference batch per evaluated (steps, solver) setting, per image.
The roof is a large matrix product in the run's precision on the cell's own device, timed after a
warm-up: what one dense kernel achieves there, the ceiling a training step can approach. Its size is the
largest power of two from 256 up to 8192 on a GPU, 2048 on a CPU, whose one product is predicted to
take at most a second: a precision the device only emulates (bf16 on a CPU without AVX-512 BF16, about
1 GFLOP/s, where one 2048^3 product takes about 17 s and the roof runs six) is then measured in seconds
rather than minutes.
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
PRODUCT_SECONDS = 1.0  # the longest one roof product may take
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
    """The largest product: enough to reach a GPU's tensor-core rate (8192^3 is 1.1 TFLOP), 2048 on a CPU
    (where it already runs at the BLAS's best and a larger one only takes longer)."""
    return 8192 if torch.device(device).type == "cuda" else ROOF_N


def fitted_size(time_product, cap: int, max_seconds: float = PRODUCT_SECONDS, start: int = 256) -> int:
    """The largest power of two from `start` up to `cap` whose one product takes at most `max_seconds`.

    `time_product(n)` times one n^3 product. A size is tried only when its product, predicted as 8 times
    the last one's, fits, so the probe never runs a product much longer than `max_seconds`."""
    n = start
    while n < cap and 8 * time_product(n) <= max_seconds:
        n *= 2
    return n


def _product_timer(device: torch.device, precision: str):
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    gen = torch.Generator(device=device).manual_seed(0)  # the caller's random stream stays untouched

    def time_product(n: int) -> float:
        a = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
        with matmul_mode(precision, device):
            a @ a  # warm-up: the first product of a size pays for kernel selection
            _sync(device)
            t0 = time.perf_counter()
            a @ a
            _sync(device)
        return time.perf_counter() - t0
    return time_product


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
def _roof(device: str, precision: str) -> tuple[float, int]:
    device = torch.device(device)
    n = fitted_size(_product_timer(device, precision), roof_size(device))
    return matmul_roof(device, precision, n), n


def roof(device: torch.device, precision: str) -> float:
    """The roof of `device` in `precision`, measured once per process (every cell of a run shares it)."""
    return _roof(str(torch.device(device)), precision)[0]


def roof_n(device: torch.device, precision: str) -> int:
    """The size of the product that measured `roof(device, precision)`."""
    return _roof(str(torch.device(device)), precision)[1]
