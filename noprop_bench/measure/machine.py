"""The machine a run ran on, as metadata.json, the report and every RUN.md name it: CPU model, physical
cores and hardware threads (and how many this process may use), memory, GPU name, memory, compute
capability and driver, CUDA and cuDNN versions, and the torch build with its BLAS, LAPACK and oneDNN.

Read once per process, from what the system says about itself (/proc/cpuinfo, /proc/meminfo,
torch.__config__, nvidia-smi where there is one); a field that cannot be read is None, never a guess.
"""
from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import torch


def _cpuinfo() -> list[dict[str, str]]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    blocks = []
    for block in text.strip().split("\n\n"):
        entry = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                entry[key.strip()] = value.strip()
        blocks.append(entry)
    return blocks


def cpu() -> dict:
    info = _cpuinfo()
    model = info[0].get("model name") if info else None
    cores = {(b.get("physical id"), b.get("core id")) for b in info if "core id" in b}
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    flags = set(info[0].get("flags", "").split()) if info else set()
    return {"model": model or platform.processor() or platform.machine(),
            "vendor": info[0].get("vendor_id") if info else None,
            "physical_cores": len(cores) or None, "hardware_threads": os.cpu_count(), "usable_threads": usable,
            "isa": [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags] or None,
            "architecture": platform.machine()}


def memory_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _nvidia_smi(index: int) -> dict:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return {}
    try:
        out = subprocess.run([exe, "-i", str(index), "--query-gpu=driver_version,name,memory.total",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=20).stdout
        driver, name, mem = [v.strip() for v in out.strip().split(",")]
        return {"driver": driver, "smi_name": name, "smi_memory_mib": int(mem)}
    except (OSError, subprocess.SubprocessError, ValueError):
        return {}


def gpu(device: torch.device) -> dict | None:
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    return {"name": props.name, "memory_bytes": props.total_memory, "capability": f"{props.major}.{props.minor}",
            "multiprocessors": props.multi_processor_count, "index": index, "count": torch.cuda.device_count(),
            "cuda_runtime": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
            "bf16": torch.cuda.is_bf16_supported(), **_nvidia_smi(index)}


def torch_build() -> dict:
    config = torch.__config__.show()

    def find(pattern):
        m = re.search(pattern, config)
        return m.group(1).strip() if m else None
    return {"version": torch.__version__, "cuda_build": torch.version.cuda, "debug": torch.version.debug,
            "blas": find(r"BLAS_INFO=([^,\n]+)"), "lapack": find(r"LAPACK_INFO=([^,\n]+)"),
            "onednn": find(r"Intel\(R\) MKL-DNN (v[\d.]+)|oneDNN (v[\d.]+)") or _onednn(config),
            "mkl": find(r"Intel\(R\) oneAPI Math Kernel Library Version ([^\n]+)"),
            "openmp": find(r"OpenMP (\d+)"), "threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads()}


def _onednn(config: str) -> str | None:
    m = re.search(r"(?:MKL-DNN|oneDNN)[^\n]*?(v\d+\.\d+(?:\.\d+)?)", config)
    return m.group(1) if m else None


def describe(device: torch.device) -> dict:
    """Everything above, for metadata.json."""
    c, g = cpu(), gpu(torch.device(device))
    return {"label": label(c, g), "cpu": c, "memory_bytes": memory_bytes(), "gpu": g, "torch": torch_build(),
            "python": sys.version.split()[0], "os": platform.platform(), "host": platform.node()}


def label(c: dict, g: dict | None) -> str:
    """One line: `NVIDIA H200 (139.8 GB); AMD EPYC, 2 cores` or `AMD EPYC, 2 cores / 2 threads`."""
    cores = f"{c['physical_cores']} cores" if c.get("physical_cores") else f"{c['hardware_threads']} threads"
    text = f"{c['model']}, {cores}"
    if c.get("usable_threads") and c["usable_threads"] != c.get("hardware_threads"):
        text += f" ({c['usable_threads']} usable)"
    if g:
        text = f"{g['name']} ({g['memory_bytes'] / 1e9:.1f} GB); {text}"
    return text
