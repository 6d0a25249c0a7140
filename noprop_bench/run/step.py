"""One optimiser step, the same in the training loop, the warm-up, the memory probe and the FLOP count;
the default trainer that repeats it; and the warm-up that runs before any clock starts."""
from __future__ import annotations

import copy

import torch

from noprop_bench.run.precision import autocast


def train_step(method, optimizer, x, y, stage, precision: str = "fp32"):
    """zero_grad, loss (forward under the cell's autocast), backward, step; returns (loss, terms).
    An optimiser whose state depends on the stage (NoProp-DT's per-pass W_Embed state) is told it first."""
    if hasattr(optimizer, "set_stage"):
        optimizer.set_stage(stage)
    optimizer.zero_grad(set_to_none=True)
    with autocast(precision, x.device):
        loss, terms = method.loss(x, y, stage)
    if not method.owns_backward:  # a method whose blocks each run their own backward has done so inside loss()
        loss.backward()
    optimizer.step()
    return loss, terms


def training_steps(method, optimizer, split, batch_size: int, precision: str = "fp32", position: dict | None = None):
    """Optimiser steps forever: epoch after epoch, every stage of the method a shuffled pass each.
    Yields each step's detached loss terms; the caller decides where to stop and evaluate.

    `position` ({"pass", "batch", "order"}: passes done, batches done in this pass, this pass's data
    order) is kept current as steps are taken, so a checkpoint can hold it and a new generator started
    from it takes the same steps as this one would have."""
    position = position if position is not None else {"pass": 0, "batch": 0, "order": None}
    stages = method.stages()
    while True:
        stage = stages[position["pass"] % len(stages)]
        if position["order"] is None:
            position["order"] = split.shuffled_order()
        for x, y in split.batches(batch_size, True, method.config.augment, position["order"], position["batch"]):
            loss, terms = train_step(method, optimizer, x, y, stage, precision)
            position["batch"] += 1
            yield {"loss": loss.detach(), **terms}
        position.update({"pass": position["pass"] + 1, "batch": 0, "order": None})


class TrainerError(RuntimeError):
    """A trainer could not go on (a worker process died): the cell fails with this message."""


class SequentialTrainer:
    """Every method's loop in this process (Algorithm 1 for NoProp-DT): `training_steps` in order.
    The runner's trainer interface: train(), gather(), close(), state() and load_state(); a method may
    supply another one (Method.make_trainer), as block-parallel NoProp-DT does."""

    def __init__(self, method, optimizer, split, batch_size: int, precision: str):
        self.position = {"pass": 0, "batch": 0, "order": None}
        self.steps = training_steps(method, optimizer, split, batch_size, precision, self.position)

    def train(self, done: int, point: int, total: int, progress) -> dict:
        """Steps done+1..point; the interval's mean loss terms (tensors: no host sync here)."""
        sums: dict[str, torch.Tensor] = {}
        for _ in range(point - done):
            for key, value in next(self.steps).items():
                sums[key] = sums[key] + value if key in sums else value.clone()
            progress(1)
        return {key: value / (point - done) for key, value in sums.items()}

    def gather(self) -> None:
        pass

    def diagnostics(self) -> list[dict]:
        return []

    def state(self) -> dict | None:
        """Where in the data the next step starts (None from a trainer that cannot be checkpointed)."""
        return dict(self.position)

    def load_state(self, state: dict) -> None:
        self.position.update(state)

    def close(self) -> None:
        pass


def warm_up(method, optimizer, split, batch_size: int, precision: str = "fp32") -> list[int]:
    """One step per stage at every batch shape an epoch has (the full batch, and the smaller last one:
    60000 % 128 = 96 images on MNIST), on a copy in a forked RNG, before any clock starts: cuDNN's
    algorithm search (cudnn.benchmark) and oneDNN's kernel creation for each shape then happen here,
    not in the first timed interval or in Table 2's peak. Returns the batch sizes warmed."""
    device = split.labels.device
    n = len(split)
    sizes = [min(batch_size, n)] + ([n % batch_size] if n > batch_size and n % batch_size else [])
    model, opt = copy.deepcopy((method, optimizer))
    model.train()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for stage in model.stages():
            for size in sizes:
                x, y = split.normalise(split.images[:size]), split.labels[:size]
                train_step(model, opt, x, y, stage, precision)
    return sizes
