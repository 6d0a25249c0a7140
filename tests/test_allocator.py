"""The host allocator (run/allocator.py): with the harness's setting, a large block freed and allocated
again reuses its pages; with the C library's default, every allocation maps fresh pages and faults them in.
Measured in fresh processes with page-fault counts, without torch."""
import json
import os
import subprocess
import sys

import pytest

from noprop_bench.run import allocator

CHILD = r"""
import ctypes, json, resource, sys
from noprop_bench.run.allocator import keep_freed_memory
state = keep_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
size = 64 << 20  # above glibc's largest dynamic mmap threshold (32 MiB)
faults = []
for _ in range(4):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    p = libc.malloc(ctypes.c_size_t(size))
    ctypes.memset(p, 1, size)
    libc.free(ctypes.c_void_p(p))
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"state": state, "faults": faults}))
"""


def _run(env_value: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != allocator.ENV}
    if env_value is not None:
        env[allocator.ENV] = env_value
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_memory_is_reused_with_the_harness_setting_and_faulted_in_again_without_it():
    pages = (64 << 20) // os.sysconf("SC_PAGE_SIZE")
    default = _run("default")
    assert "default" in default["state"]
    assert all(f > pages // 2 for f in default["faults"])  # every round maps and faults in fresh pages
    fixed = _run(None)
    assert "glibc with fixed mmap and trim thresholds" in fixed["state"]
    assert fixed["faults"][0] > pages // 2  # the first round faults the heap in...
    assert all(f < pages // 20 for f in fixed["faults"][1:])  # ...and every later one reuses it


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_run_metadata_names_the_allocator(tiny_run):
    out, _ = tiny_run
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["allocator"].startswith("glibc with fixed mmap and trim thresholds")
