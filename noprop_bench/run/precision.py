"""Numeric precision of a cell: a recorded setting, applied the same way to training, evaluation, the
warm-up, the memory probe and the FLOP count.

  fp32           strict float32: full-precision matmuls and convolutions everywhere. On an Ampere or
                 newer GPU this is NOT PyTorch's default, which runs convolutions in TF32
  torch-default  PyTorch's own defaults, as a user's script gets them: float32 storage, float32 matmuls,
                 TF32 convolutions on Ampere and newer GPUs (cudnn.allow_tf32); the same as fp32 on a CPU
  tf32           float32 storage, TF32 tensor-core matmuls and convolutions (CUDA only)
  bf16           torch.autocast to bfloat16 around every forward (CPU, and GPUs that support bf16);
                 weights, gradients and optimiser state stay float32 (master weights), and backward runs
                 outside autocast, as PyTorch recommends

The paper does not state its precision; the paper suites use fp32.

Determinism (`--deterministic`): PyTorch's deterministic algorithms, cuDNN without autotuning, and a
fixed cuBLAS workspace. Off by default: on a GPU, cuDNN's autotuning (cudnn.benchmark) picks the fastest
convolution per shape, and some kernels (atomic adds) then make two runs of one seed differ in the last
bits. On a CPU, a fixed thread count already gives bit-identical runs.
"""
from __future__ import annotations

import contextlib
import os

import torch

PRECISIONS = ("fp32", "torch-default", "tf32", "bf16")
# precision -> (TF32 matmuls, TF32 convolutions, float32 matmul precision)
MODES = {"fp32": (False, False, "highest"), "torch-default": (False, True, "highest"), "tf32": (True, True, "high"),
         "bf16": (False, False, "highest")}


def check_precision(precision: str, device: torch.device | None = None) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision '{precision}'; valid: {', '.join(PRECISIONS)}")
    device = torch.device(device) if device is not None else None
    if precision == "tf32" and device is not None and device.type != "cuda":
        raise ValueError(f"precision tf32 is a CUDA tensor-core mode; on {device.type} use --precision fp32 or bf16")
    if precision == "bf16" and device is not None and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"precision bf16: {torch.cuda.get_device_name(device)} has no bfloat16 support "
                         f"(compute capability 8.0 or newer is needed); use --precision fp32 or tf32")


@contextlib.contextmanager
def matmul_mode(precision: str, device: torch.device):
    """TF32 on or off for matmuls and convolutions for the region, as MODES says; restored after."""
    cuda, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = (cuda.allow_tf32, cudnn.allow_tf32, torch.get_float32_matmul_precision())
    matmul_tf32, conv_tf32, highest = MODES[precision]
    cuda.allow_tf32, cudnn.allow_tf32 = matmul_tf32, conv_tf32
    torch.set_float32_matmul_precision(highest)
    try:
        yield
    finally:
        cuda.allow_tf32, cudnn.allow_tf32 = saved[:2]
        torch.set_float32_matmul_precision(saved[2])


def autocast(precision: str, device: torch.device):
    """The context every forward pass runs in: bfloat16 autocast for bf16, nothing otherwise."""
    if precision == "bf16":
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def fast_layout(module: torch.nn.Module) -> torch.nn.Module:
    """Convolution weights in channels_last (NHWC), the layout oneDNN and cuDNN run fastest (the
    benchmarks in tests/test_throughput.py compare both). Only 4-d tensors change; results are the
    same up to floating-point summation order."""
    return module.to(memory_format=torch.channels_last)


@contextlib.contextmanager
def determinism(deterministic: bool, device: torch.device):
    """For a run: deterministic algorithms, or cuDNN autotuning on CUDA; the previous settings after."""
    cudnn = torch.backends.cudnn
    saved = (torch.are_deterministic_algorithms_enabled(), cudnn.benchmark, cudnn.deterministic)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS first starts
    torch.use_deterministic_algorithms(deterministic)
    cudnn.deterministic = deterministic
    cudnn.benchmark = not deterministic and torch.device(device).type == "cuda"
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0])
        cudnn.benchmark, cudnn.deterministic = saved[1:]
