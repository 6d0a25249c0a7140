"""Where a CPU training step spends its time: milliseconds, page faults and kernel time per step, per
method, precision and host allocator, each measured in a fresh process, and torch.profiler's operator
table for one of them.

    python -m noprop_bench.measure.step_profile OUT_DIR [--methods noprop-dt,backprop,noprop-ct,noprop-fm]
        [--precisions fp32,bf16] [--allocators default,fixed] [--steps 30] [--repeats 3] [--data-dir DIR]

writes OUT_DIR/steps.csv (one row per method x precision x allocator x repeat; the allocator arms
alternate within each repeat, so a drift of the machine hits both) and OUT_DIR/profile-METHOD-PRECISION.txt
(the operators of `--profile-steps` steps, by self CPU time, with the fixed allocator). `fixed` is what
every harness process runs with (run/allocator.py); `default` is glibc as it starts. A step is the one
the runner times (run/step.train_step) on a full MNIST batch after the runner's warm-up, on the first
stage (NoProp-DT's blocks all cost the same). Run it on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ARMS = {"default": {"NOPROP_BENCH_MALLOC": "default"}, "fixed": {"NOPROP_BENCH_MALLOC": "fixed"}}  # run/allocator.py
COLUMNS = ["method", "precision", "allocator", "repeat", "threads", "steps", "ms_per_step", "minor_faults_per_step",
           "sys_ms_per_step", "allocator_state", "machine"]


def measure(method_name: str, precision: str, steps: int, data_dir: str | None, profile_out: str | None,
            profile_steps: int, dataset: str = "mnist") -> dict:
    """In this process: build the cell's method, warm it up as the runner does, time `steps` steps."""
    import torch
    from noprop_bench.data import load_data
    from noprop_bench.measure.machine import describe
    from noprop_bench.methods import get_method
    from noprop_bench.run import allocator
    from noprop_bench.run.precision import fast_layout, matmul_mode
    from noprop_bench.run.step import train_step, warm_up

    allocator.keep_freed_memory()  # leaves glibc alone where NOPROP_BENCH_MALLOC=default
    device = torch.device("cpu")
    data = load_data(dataset, device, data_dir, train_limit=4096, test_limit=128)
    cls = get_method(method_name)
    torch.manual_seed(0)
    method = fast_layout(cls(data.spec, cls.default_config(dataset), device, train=data.train))
    optimizer = method.make_optimizer()
    batch = method.config.batch_size
    stage = method.stages()[0]
    with matmul_mode(precision, device):
        warm_up(method, optimizer, data.train, batch, precision)
        method.train()
        batches = list(data.train.batches(batch, shuffle=True))
        batches = [b for b in batches if len(b[1]) == batch] or batches
        before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        for i in range(steps):
            x, y = batches[i % len(batches)]
            train_step(method, optimizer, x, y, stage, precision)
        elapsed, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
        if profile_out:
            from torch.profiler import ProfilerActivity, profile
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for i in range(profile_steps):
                    x, y = batches[i % len(batches)]
                    train_step(method, optimizer, x, y, stage, precision)
            table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
            Path(profile_out).write_text(f"{method_name}, {precision}, {profile_steps} training steps of batch "
                                         f"{batch}, {torch.get_num_threads()} threads, {allocator.state()}\n\n{table}\n")
    return {"method": method_name, "precision": precision, "threads": torch.get_num_threads(), "steps": steps,
            "ms_per_step": 1000 * elapsed / steps,
            "minor_faults_per_step": (after.ru_minflt - before.ru_minflt) / steps,
            "sys_ms_per_step": 1000 * (after.ru_stime - before.ru_stime) / steps,
            "allocator_state": allocator.state(), "machine": describe(device)["label"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m noprop_bench.measure.step_profile", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path)
    p.add_argument("--methods", default="noprop-dt,backprop,noprop-ct,noprop-fm")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--allocators", default="default,fixed")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--profile-steps", type=int, default=5)
    p.add_argument("--data-dir")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--child", help=argparse.SUPPRESS)  # METHOD,PRECISION[,PROFILE_PATH]: measure here
    args = p.parse_args(argv)
    if args.child:
        method, precision, *profile = args.child.split(",")
        print(json.dumps(measure(method, precision, args.steps, args.data_dir, profile[0] if profile else None,
                                 args.profile_steps, args.dataset)))
        return 0
    unknown = sorted(set(args.allocators.split(",")) - set(ARMS))
    if unknown:
        print(f"error: unknown allocator(s) {', '.join(unknown)}; valid: {', '.join(ARMS)}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for repeat in range(args.repeats):
        for method in args.methods.split(","):
            for precision in args.precisions.split(","):
                for arm in args.allocators.split(","):
                    child = f"{method},{precision}"
                    if repeat == 0 and arm == "fixed":
                        child += f",{args.out / f'profile-{method}-{precision}.txt'}"
                    cmd = [sys.executable, "-m", "noprop_bench.measure.step_profile", str(args.out), "--child", child,
                           "--steps", str(args.steps), "--profile-steps", str(args.profile_steps),
                           "--dataset", args.dataset]
                    cmd += ["--data-dir", args.data_dir] if args.data_dir else []
                    out = subprocess.run(cmd, env={**os.environ, **ARMS[arm]}, capture_output=True, text=True)
                    if out.returncode != 0:
                        print(f"error: {method} {precision} {arm}: {out.stderr.strip().splitlines()[-1]}", file=sys.stderr)
                        return 1
                    row = {**json.loads(out.stdout.strip().splitlines()[-1]), "allocator": arm, "repeat": repeat}
                    rows.append(row)
                    print(f"{method:10s} {precision:5s} {arm:8s} repeat {repeat}: {row['ms_per_step']:7.1f} ms/step, "
                          f"{row['minor_faults_per_step']:7.0f} faults, {row['sys_ms_per_step']:5.1f} ms kernel",
                          flush=True)
    with open(args.out / "steps.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({k: row[k] for k in COLUMNS} for row in rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
