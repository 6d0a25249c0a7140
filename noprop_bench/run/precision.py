"""Numeric precision of a cell: a recorded setting, applied the same way to training, evaluation, the
memory probe and the FLOP count.

  fp32  strict float32: TF32 off on CUDA, full-precision float32 matmuls everywhere
  tf32  float32 storage, TF32 tensor-core matmuls and convolutions (CUDA only: no other device has them)
  bf16  torch.autocast to bfloat16 around every forward (CPU and CUDA); weights, gradients and optimiser
        state stay float32 (master weights), and backward runs outside autocast, as PyTorch recommends

The paper does not state its precision; the paper suites default to fp32.
"""
from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("fp32", "tf32", "bf16")


def check_precision(precision: str, device: torch.device | None = None) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision '{precision}'; valid: {', '.join(PRECISIONS)}")
    if precision == "tf32" and device is not None and torch.device(device).type != "cuda":
        raise ValueError(f"precision tf32 is a CUDA tensor-core mode; on {torch.device(device).type} use "
                         f"--precision fp32 or bf16")


@contextlib.contextmanager
def matmul_mode(precision: str, device: torch.device):
    """TF32 on or off for the region (CUDA), float32 matmuls at full precision elsewhere; restored after."""
    cuda, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = (cuda.allow_tf32, cudnn.allow_tf32, torch.get_float32_matmul_precision())
    tf32 = precision == "tf32"
    cuda.allow_tf32 = cudnn.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
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
    """Convolution weights in channels_last (NHWC), the layout oneDNN and cuDNN run fastest: on the 2-core
    CPU, one NoProp-DT training step went 126.5 -> 106.9 ms in fp32 and 88.5 -> 74.4 ms in bf16
    (pytest-benchmark, README "Precision and efficiency"). Only 4-d tensors change; results are the
    same up to floating-point summation order."""
    return module.to(memory_format=torch.channels_last)
