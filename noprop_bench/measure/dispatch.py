"""What one training step asks of the device: ATen dispatches, host reads and host-to-device copies.

On a GPU every ATen dispatch is a kernel launch (or more), every host read of a device tensor
(`.item()`, `bool(t)`, `nonzero`) stalls the host until the device has drained its queue, and every
copy from host memory to the device is a transfer the step waits on. `StepAudit` counts the first and
records the others with the line of Python that caused them. Run on torch's `meta` device (no data,
no GPU needed) it tells what a training step would cost in launches and synchronisations on a GPU:
reads of CPU tensors (an optimiser's step counter) are host work there too and are not counted.

With `answer_grid_reads=True` (for the `meta` device, or a faked `cuda` one: no data) it also answers host reads of
small tensors built only from deterministic factories (`linspace`, `arange`, `zeros`, `full`, ...) and
ops on them: the time grids of torchdiffeq's fixed-grid solvers. Such a read is still recorded (on a GPU
it is a synchronisation); a read of anything else on `meta` raises, as it would be a read of model data.

    python -m noprop_bench.measure.dispatch OUT.csv   # dispatches and host reads per training step, every method
"""
from __future__ import annotations

import contextlib
import sys
import weakref
from collections import Counter
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

aten = torch.ops.aten
HOST_READS = {aten._local_scalar_dense.default, aten.is_nonzero.default, aten.nonzero.default,
              aten.equal.default, aten.masked_select.default}
FACTORIES = {aten.linspace.default, aten.arange.default, aten.arange.start, aten.arange.start_step,
             aten.zeros.default, aten.ones.default, aten.full.default, aten.scalar_tensor.default,
             aten.empty.memory_format}
SHADOW_LIMIT = 4096  # elements: grids and scalars, never a batch
_HERE = (str(Path(__file__).resolve()), str(Path(torch.__file__).resolve().parent) + "/")


def call_site() -> str:
    """`module:function:line` of the innermost frame outside torch and this file."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_HERE):
        frame = frame.f_back
    if frame is None:
        return "?"
    return f"{frame.f_globals.get('__name__', '?')}:{frame.f_code.co_name}:{frame.f_lineno}"


def _device(t) -> str | None:
    return t.device.type if isinstance(t, torch.Tensor) else None


class StepAudit(TorchDispatchMode):
    """with StepAudit() as audit: step()   then audit.dispatches, audit.host_reads, audit.h2d_copies
    (Counters of call sites) and audit.ops (a Counter of operator names)."""

    def __init__(self, answer_grid_reads: bool = False):
        super().__init__()
        self.dispatches = 0
        self.ops: Counter = Counter()
        self.host_reads: Counter = Counter()
        self.h2d_copies: Counter = Counter()
        self.answer_grid_reads = answer_grid_reads
        self._shadow: dict[int, torch.Tensor] = {}
        self._patches = contextlib.ExitStack()

    # host-to-device copies made from Python data never reach the dispatcher: watch the factories
    def __enter__(self):
        for name in ("tensor", "as_tensor"):
            original = getattr(torch, name)

            def watched(data, *args, _original=original, **kwargs):
                device = kwargs.get("device")
                if device is not None and torch.device(device).type != "cpu":
                    self.h2d_copies[call_site()] += 1
                return _original(data, *args, **kwargs)
            self._patches.enter_context(_patched(torch, name, watched))
        return super().__enter__()

    def __exit__(self, *exc):
        self._patches.close()
        return super().__exit__(*exc)

    def _remember(self, out, shadow) -> None:
        outs, shadows = tree_flatten(out)[0], tree_flatten(shadow)[0]
        for t, s in zip(outs, shadows):
            if isinstance(t, torch.Tensor) and isinstance(s, torch.Tensor) and t.numel() <= SHADOW_LIMIT:
                key = id(t)
                self._shadow[key] = s
                weakref.finalize(t, self._shadow.pop, key, None)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.dispatches += 1
        self.ops[func.__name__] += 1
        flat = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
        if func in HOST_READS and any(a.device.type != "cpu" for a in flat):  # a CPU tensor's value is on the host
            self.host_reads[call_site()] += 1
            if self.answer_grid_reads and flat and all(id(a) in self._shadow for a in flat):
                with _real():
                    return func(*tree_map(self._cpu, args), **tree_map(self._cpu, kwargs))
        elif func in (aten._to_copy.default, aten.copy_.default):
            src = args[1] if func is aten.copy_.default else args[0]
            dst = args[0].device if func is aten.copy_.default else kwargs.get("device", src.device)
            if _device(src) == "cpu" and torch.device(dst).type != "cpu":
                self.h2d_copies[call_site()] += 1
        out = func(*args, **kwargs)
        if self.answer_grid_reads:
            shadowable = all(id(a) in self._shadow for a in flat) and (flat or func in FACTORIES)
            if shadowable and any(_device(t) not in (None, "cpu") for t in tree_flatten(out)[0]):
                cpu_kwargs = {k: ("cpu" if k == "device" else v) for k, v in tree_map(self._cpu, kwargs).items()}
                with _real():
                    self._remember(out, func(*tree_map(self._cpu, args), **cpu_kwargs))
        return out

    def _cpu(self, a):
        return self._shadow.get(id(a), a) if isinstance(a, torch.Tensor) else a

    def summary(self) -> dict:
        return {"dispatches": self.dispatches, "host_reads": sum(self.host_reads.values()),
                "h2d_copies": sum(self.h2d_copies.values())}


def _real():
    """Real tensors for the shadow computations, also under a FakeTensorMode (a faked `cuda` device)."""
    from torch._subclasses.fake_tensor import unset_fake_temporarily
    return unset_fake_temporarily()


@contextlib.contextmanager
def _patched(owner, name, value):
    original = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, original)


def excused(sites: Counter, prefixes: tuple[str, ...]) -> tuple[Counter, Counter]:
    """(excused, the rest): call sites split by the module prefixes they are excused for."""
    ok = Counter({s: n for s, n in sites.items() if s.startswith(prefixes)})
    return ok, sites - ok


def audit_training_step(method, optimizer, split, batch_size: int, stage, precision: str = "fp32",
                        answer_grid_reads: bool = False) -> StepAudit:
    """One optimiser step of `stage` under a StepAudit (the caller's RNG stream is left alone)."""
    from noprop_bench.run.step import train_step
    x, y = next(split.batches(batch_size, shuffle=False))
    device = split.labels.device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        with StepAudit(answer_grid_reads) as audit:
            train_step(method, optimizer, x, y, stage, precision)
    return audit


def on_device(cls, spec, config, device, split):
    """(method, optimiser, split) of `cls` on `device` (e.g. `meta`): built on the CPU from a CPU split
    (prototype embeddings need real images), then moved, with the runner's layout."""
    from noprop_bench.data import Split
    from noprop_bench.run.precision import fast_layout
    method = cls(spec, config, "cpu", train=split)
    method = fast_layout(method.to(device))
    method.device = torch.device(device)
    moved = Split(*(t.to(device) for t in (split.images, split.labels, split._mean, split._std)))
    return method, method.make_optimizer(), moved


def tiny_split(spec, n: int = 256, seed: int = 0):
    """n random images of `spec`'s shape, labels cycling over its classes (CPU)."""
    from noprop_bench.data import Split
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, *spec.image_shape), dtype=torch.uint8, generator=g)
    c = spec.image_shape[0]
    return Split(images, torch.arange(n) % spec.num_classes, torch.full((1, c, 1, 1), 0.5), torch.full((1, c, 1, 1), 0.25))


def per_method_counts(methods=None, embedding: str = "one-hot", batch_size: int = 128, ode_steps: int = 10) -> list[dict]:
    """Dispatches, host reads of device tensors and host-to-device copies of one training step of each
    method (its first stage and, for multi-stage methods, its last), after a warm-up step, on the `meta`
    device with MNIST's shapes. Continuous-time methods run with T = `ode_steps` (the neural ODEs'
    counts grow in proportion to T)."""
    from noprop_bench.data import DATASETS
    from noprop_bench.methods import METHODS
    spec = DATASETS["mnist"]
    split = tiny_split(spec)
    rows = []
    for name in methods or METHODS:
        cls = METHODS[name]
        torch.manual_seed(0)
        overrides = {"timesteps": ode_steps} if cls.continuous else {}
        config = cls.default_config("mnist", embedding=embedding, **overrides)
        method, optimizer, moved = on_device(cls, spec, config, "meta", split)
        stages = method.stages()
        for stage in dict.fromkeys([stages[0], stages[-1]]):
            audit_training_step(method, optimizer, moved, batch_size, stage, answer_grid_reads=True)  # warm-up
            audit = audit_training_step(method, optimizer, moved, batch_size, stage, answer_grid_reads=True)
            sites = "; ".join(f"{site} x{n}" for site, n in audit.host_reads.most_common())
            rows.append({"method": name, "embedding": embedding, "T": config.timesteps, "stage": stage,
                         **audit.summary(), "host_read_sites": sites})
    return rows


if __name__ == "__main__":
    import argparse

    import pandas as pd
    p = argparse.ArgumentParser(description="ATen dispatches and host reads per training step, every method")
    p.add_argument("out", type=Path, help="CSV to write")
    p.add_argument("--methods", help="comma-separated (default: every registered method)")
    args = p.parse_args()
    torch.set_num_threads(1)
    table = pd.DataFrame(per_method_counts(args.methods.split(",") if args.methods else None))
    table.to_csv(args.out, index=False)
    print(table.drop(columns="host_read_sites").to_string(index=False))
