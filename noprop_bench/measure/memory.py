"""Table 2's quantity on any device: the peak bytes of live tensors during training steps.

TensorMemory is a TorchDispatchMode: every ATen call passes through it (forward, backward, optimiser
step, on CPU and CUDA alike), and each storage an op creates is counted until Python's finaliser sees it
freed. Its peak is what `torch.cuda.max_memory_allocated` reports after `reset_peak_memory_stats`, for
the tensors that exist between the two, except that the CUDA allocator rounds each block up (to 512 B)
and also counts library workspaces (cuBLAS, cuDNN) that no ATen op returns. Views and in-place ops
allocate nothing and count nothing.

Every counted byte has a category, so the peak splits into what Table 2 readers ask about:
  parameters        parameters and buffers (registered at the start)
  gradients         .grad storages (moved here by a post-accumulate-grad hook when autograd stores them)
  optimizer_state   the optimiser's state tensors (registered at the start; the probe warms it up)
  activations       everything else: the batch, tensors saved for backward, temporaries of forward,
                    backward and the optimiser step
The split is the one at the moment of the peak.

probe_training_memory runs the probe on a deep copy of the method and its optimiser, with the RNG forked,
before the cell's clock starts: the cell's training trajectory and its timings are unchanged.
"""
from __future__ import annotations

import copy
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from noprop_bench.run.step import train_step

CATEGORIES = ("parameters", "gradients", "optimizer_state", "activations")
PROBE_STEPS = 1  # measured steps per stage, after one warm-up step per stage (every step after the
                 # first of its stage allocates the same tensors)


class TensorMemory(TorchDispatchMode):
    """with TensorMemory() as mem: ...   then mem.peak, mem.at_peak[category], mem.live."""

    def __init__(self):
        super().__init__()
        self.storages: dict[int, list] = {}   # id(storage) -> [bytes, category]
        self.totals = dict.fromkeys(CATEGORIES, 0)
        self.peak = 0
        self.at_peak = dict(self.totals)
        self._finalizers: list[weakref.finalize] = []

    @property
    def live(self) -> int:
        return sum(self.totals.values())

    def track(self, tensor: torch.Tensor, category: str) -> None:
        """Count a tensor's storage (once) under `category`; move it there if already counted."""
        storage = tensor.untyped_storage()
        entry = self.storages.get(id(storage))
        if entry is None:
            entry = self.storages[id(storage)] = [storage.nbytes(), category]
            self.totals[category] += entry[0]
            self._finalizers.append(weakref.finalize(storage, self._free, id(storage)))
        elif entry[1] != category:
            self.totals[entry[1]] -= entry[0]
            self.totals[category] += entry[0]
            entry[1] = category
        self._update_peak()

    def _free(self, key: int) -> None:
        nbytes, category = self.storages.pop(key)
        self.totals[category] -= nbytes

    def _update_peak(self) -> None:
        if self.live > self.peak:
            self.peak, self.at_peak = self.live, dict(self.totals)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func._schema.is_mutable or getattr(func, "is_view", False):
            return out  # in place, out= or a view: the result's storage is an input's
        inputs = {id(t.untyped_storage()) for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and id(t.untyped_storage()) not in inputs:
                self.track(t, "activations")
        return out

    def __exit__(self, *exc):
        for f in self._finalizers:
            f.detach()  # storages that outlive the probe no longer report to it
        return super().__exit__(*exc)


def _optimizer_state(optimizer) -> list[torch.Tensor]:
    return [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]


def probe_training_memory(method, optimizer, split, batch_size: int, steps: int = PROBE_STEPS,
                          precision: str = "fp32") -> dict[str, int]:
    """Peak tensor bytes (and its split) of `steps` training steps per stage, in steady state.

    Steady state: one warm-up step per stage first, so every optimiser state exists (as after the
    first epoch) and gradients were set to None by zero_grad, as in every later step of the loop.
    Runs on a copy, in a forked RNG: the caller's method, optimiser and random stream are untouched.
    """
    device = split.labels.device
    model, opt = copy.deepcopy((method, optimizer))
    model.train()

    def step(stage, batches):
        train_step(model, opt, *next(batches), stage, precision)

    def forever():
        while True:
            yield from split.batches(batch_size, shuffle=True, augment=method.config.augment)

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        batches = forever()
        for stage in model.stages():
            step(stage, batches)
        opt.zero_grad(set_to_none=True)
        params = [p for p in model.parameters() if p.requires_grad]
        with TensorMemory() as mem:
            for t in [*model.parameters(), *model.buffers()]:
                mem.track(t, "parameters")
            for t in _optimizer_state(opt):
                mem.track(t, "optimizer_state")
            hooks = [p.register_post_accumulate_grad_hook(lambda p: mem.track(p.grad, "gradients")) for p in params]
            for stage in model.stages():
                for _ in range(steps):
                    step(stage, batches)
        for h in hooks:
            h.remove()
    return {"tensor_peak_bytes": mem.peak, **{f"mem_{c}_bytes": mem.at_peak[c] for c in CATEGORIES}}
