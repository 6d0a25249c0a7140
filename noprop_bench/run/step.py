"""One optimiser step, the same in the training loop, the memory probe and the FLOP count."""
from __future__ import annotations

from noprop_bench.run.precision import autocast


def train_step(method, optimizer, x, y, stage, precision: str = "fp32"):
    """zero_grad, loss (forward under the cell's autocast), backward, step; returns (loss, terms)."""
    optimizer.zero_grad(set_to_none=True)
    with autocast(precision, x.device):
        loss, terms = method.loss(x, y, stage)
    loss.backward()
    optimizer.step()
    return loss, terms
