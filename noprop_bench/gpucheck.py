"""One call that checks the harness on a GPU and writes what it found (bin/gpu-check):

    bin/gpu-check --data-dir DIR_WITH_MNIST --out OUT            # on a GPU box (offline is fine)
    bin/gpu-check --device cpu --budget tiny --out OUT           # the same steps on a CPU, in minutes

Steps, each in its own process with its own timeout under one global deadline (a hang loses nothing
already written), each writing one file into OUT:

  environment.json   the machine (measure/machine.py), torch, CUDA, cuDNN, nvidia-smi
  device_checks.txt  one training step and one inference of every method under
                     torch.cuda.set_sync_debug_mode("warn"): every host synchronisation, with the line
                     that caused it (torchdiffeq's are expected); dispatches per step from StepAudit
  epoch.csv          one full-MNIST epoch of every method (the neural ODEs at T = 10), CUDA-timed, with the
                     CUDA peak against the paper's Table 2 and accuracy; NoProp-CT and NoProp-FM also
                     evaluated at 2 to 1000 inference steps
  adjoint.csv        a few adjoint training steps at Table 3's T = 1000: time and CUDA peak per step
  tests.txt          the fast test tier on this device (Ray is not needed)
  summary.md         all of the above in one page

The tiny budget (CPU) uses scikit-learn's digits and a handful of steps, so that CI runs every step.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

STEPS = ("environment", "device_checks", "epoch", "adjoint", "tests")
FILES = {"environment": "environment.json", "device_checks": "device_checks.txt", "epoch": "epoch.csv",
         "adjoint": "adjoint.csv", "tests": "tests.txt"}
TIMEOUT_S = {"environment": 60, "device_checks": 120, "epoch": 240, "adjoint": 90, "tests": 150}
DEADLINE_S = 480
STEP_COUNTS = "2,5,10,20,50,100,200,500,1000"


def budget(args) -> dict:
    if args.budget == "tiny":
        return {"dataset": "digits", "limits": ["--train-limit", "200", "--test-limit", "100"], "ode_T": 4,
                "adjoint_T": 10, "adjoint_steps": 2, "steps": "2,5", "ct_steps": 5,
                "tests": ["tests/test_architecture.py"]}
    return {"dataset": "mnist", "limits": [], "ode_T": 10, "adjoint_T": 1000, "adjoint_steps": 3,
            "steps": STEP_COUNTS, "ct_steps": 1000, "tests": ["-m", "not slow and not network"]}


def environment(args, out: Path) -> None:
    import torch

    from noprop_bench.measure import machine
    device = torch.device(args.device)
    info = {"machine": machine.describe(device), "cuda_available": torch.cuda.is_available(),
            "argv": sys.argv, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        info["nvidia_smi"] = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        info["nvidia_smi"] = None
    out.write_text(json.dumps(info, indent=2, default=str) + "\n")


def device_checks(args, out: Path) -> None:
    """Host synchronisations of one training step and one default inference of every method, as the CUDA
    runtime reports them (set_sync_debug_mode), and ATen dispatches per step."""
    import warnings

    import torch

    from noprop_bench.data import DATASETS
    from noprop_bench.measure.dispatch import StepAudit, on_device, tiny_split
    from noprop_bench.methods import METHODS
    from noprop_bench.run.step import train_step
    device = torch.device(args.device)
    spec = DATASETS["mnist"]
    lines = [f"device {device}; one training step (batch 128) and one inference (batch 128) per method", ""]
    for name, cls in METHODS.items():
        try:
            config = cls.default_config("mnist", timesteps=10)
        except ValueError:  # a method whose depth is fixed by its paper (forward gradient's one-block model)
            config = cls.default_config("mnist")
        torch.manual_seed(0)
        method, optimizer, split = on_device(cls, spec, config, device, tiny_split(spec, 256))
        x, y = next(split.batches(128, shuffle=False))
        for stage in method.stages()[:1]:
            train_step(method, optimizer, x, y, stage)  # warm-up: optimiser state, cuDNN's search
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                torch.cuda.set_sync_debug_mode("warn")
            try:
                with StepAudit() as audit:
                    train_step(method, optimizer, x, y, method.stages()[0])
                method.eval()
                with torch.no_grad():
                    method.predict(x)
            finally:
                if device.type == "cuda":
                    torch.cuda.set_sync_debug_mode("default")
        syncs = [f"{Path(w.filename).name}:{w.lineno}" for w in caught if "synchroniz" in str(w.message).lower()]
        where = ", ".join(sorted(set(syncs))[:6]) or "none"
        lines.append(f"{name:22s} dispatches/step {audit.dispatches:6d}  synchronisations {len(syncs):5d}  at: {where}")
    out.write_text("\n".join(lines) + "\n")


def epoch(args, out: Path) -> None:
    """One epoch of every method through the harness itself; rows copied to epoch.csv."""
    import shutil
    import tempfile

    from noprop_bench import cli
    b = budget(args)
    run_dir = Path(tempfile.mkdtemp(prefix="gpu-check-epoch-"))
    argv = ["run", "--suite", "paper-table2", "--datasets", b["dataset"], *b["limits"], "--epochs", "1",
            "--methods", "backprop,noprop-dt,noprop-ct,noprop-fm,adjoint,backprop-ode",
            "--set", f"adjoint.timesteps={b['ode_T']}", "--set", f"backprop-ode.timesteps={b['ode_T']}",
            "--set", f"noprop-ct.timesteps={b['ct_steps']}", "--set", f"noprop-fm.timesteps={b['ct_steps']}",
            "--inference-steps", b["steps"], "--solvers", "ancestral,euler",
            "--device", args.device, "--no-progress", "--no-report", "--out", str(run_dir)]
    if args.data_dir:
        argv += ["--data-dir", args.data_dir]
    code = cli.main(argv)
    shutil.copy(run_dir / "results.csv", out)
    if code != 0:
        raise SystemExit(f"the epoch run exited with {code}; its rows are in {out.name}")


def adjoint(args, out: Path) -> None:
    """A few adjoint training steps at T = 1000 (Table 3), CUDA-timed: the cost the paper's Figure 3 pays."""
    import torch

    from noprop_bench.data import DATASETS
    from noprop_bench.measure.dispatch import on_device, tiny_split
    from noprop_bench.measure.timing import Clock, PeakMemory
    from noprop_bench.methods import METHODS
    from noprop_bench.run.step import train_step
    b, device = budget(args), torch.device(args.device)
    spec, cls = DATASETS["mnist"], METHODS["adjoint"]
    torch.manual_seed(0)
    method, optimizer, split = on_device(cls, spec, cls.default_config("mnist", timesteps=b["adjoint_T"]), device,
                                         tiny_split(spec, 256))
    x, y = next(split.batches(128, shuffle=False))
    clock, memory = Clock(device), PeakMemory(device)
    rows = ["step,T,seconds,cuda_peak_bytes,nfe_per_image"]
    for step in range(b["adjoint_steps"]):
        memory.reset()
        with clock:
            train_step(method, optimizer, x, y, None)
        rows.append(f"{step},{b['adjoint_T']},{clock.last!r},{memory.peak_bytes() or ''},{method.last_nfe}")
        out.write_text("\n".join(rows) + "\n")  # each step as it finishes


def tests(args, out: Path) -> None:
    env = {**os.environ, "NOPROP_BENCH_FAST_LIMIT_S": "0"}  # a first CUDA call can take seconds
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *budget(args)["tests"]]
    with open(out, "w") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=Path(__file__).resolve().parent.parent)
    if proc.returncode != 0:
        raise SystemExit(f"the tests exited with {proc.returncode}")


RUNNERS = {"environment": environment, "device_checks": device_checks, "epoch": epoch, "adjoint": adjoint,
           "tests": tests}


def summary(out_dir: Path, results: dict) -> None:
    lines = ["# GPU check", "", "| step | file | result | seconds |", "|---|---|---|---|"]
    for step, (status, seconds) in results.items():
        lines.append(f"| {step} | {FILES[step]} | {status} | {seconds:.0f} |")
    env = out_dir / "environment.json"
    if env.exists():
        info = json.loads(env.read_text())
        lines += ["", f"Machine: {info['machine']['label']}; torch {info['machine']['torch']['version']}"]
    epoch_csv = out_dir / "epoch.csv"
    if epoch_csv.exists():
        import pandas as pd
        df = pd.read_csv(epoch_csv)
        d = df[df["eval_setting"] == "default"].groupby("method").agg(
            train_s=("train_time_s", "sum"), acc=("test_acc", "mean"), peak_gb=("peak_mem_bytes", "max"),
            data_gb=("data_bytes", "max"), tensor_gb=("tensor_peak_bytes", "max"))
        for c in ("peak_gb", "data_gb", "tensor_gb"):
            d[c] = d[c] / 1e9
        lines += ["", "One epoch per method (neural ODEs at T = 10; GB of 10^9 bytes):", "", "```", d.round(3).to_string(), "```"]
        sweep = df[df["eval_setting"] == "sweep"]
        if not sweep.empty:
            pivot = sweep.pivot_table(index=["method", "solver"], columns="inference_steps", values="test_acc")
            lines += ["", "Accuracy (%) against inference steps after one epoch:", "", "```", pivot.round(2).to_string(), "```"]
    for name in ("device_checks.txt", "adjoint.csv"):
        path = out_dir / name
        if path.exists():
            lines += ["", f"{name}:", "", "```", path.read_text().strip(), "```"]
    (out_dir / "summary.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gpu-check", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder for the (at most 6) files")
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu")
    p.add_argument("--budget", choices=["full", "tiny"], default="full", help="tiny: digits, a few steps (CPU, CI)")
    p.add_argument("--data-dir", help="a data directory holding MNIST (MNIST/raw), for machines without network")
    p.add_argument("--steps", default=",".join(STEPS), help="which steps (default: all)")
    p.add_argument("--step", help=argparse.SUPPRESS)  # internal: run one step in this process
    p.add_argument("--deadline-s", type=float, default=DEADLINE_S, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.step:
        from noprop_bench import faults
        faults.point(f"gpucheck-{args.step}")
        RUNNERS[args.step](args, args.out / FILES[args.step])
        return 0
    start, results = time.monotonic(), {}
    for step in args.steps.split(","):
        left = args.deadline_s - (time.monotonic() - start)
        if left <= 5:
            results[step] = ("skipped: global deadline", 0.0)
            continue
        t0 = time.monotonic()
        cmd = [sys.executable, "-m", "noprop_bench.gpucheck", "--step", step, "--out", str(args.out),
               "--device", args.device, "--budget", args.budget] + (["--data-dir", args.data_dir] if args.data_dir else [])
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=min(TIMEOUT_S[step], left))
            status = "ok" if proc.returncode == 0 else f"failed ({(proc.stderr.strip().splitlines() or ['?'])[-1][:200]})"
        except subprocess.TimeoutExpired:
            status = f"timed out after {min(TIMEOUT_S[step], left):.0f} s"
        results[step] = (status, time.monotonic() - t0)
        summary(args.out, results)  # rewritten after every step
        print(f"{step}: {status}", file=sys.stderr)
    return 0 if all(s == "ok" for s, _ in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
