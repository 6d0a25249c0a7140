"""An optimiser wrapped with what some methods' papers add to the plain update: a learning-rate schedule
over optimiser steps, and gradient-norm clipping. It keeps torch.optim's interface (zero_grad, step,
state, param_groups), so the runner, the memory probe and the FLOP count treat it like any optimiser."""
from __future__ import annotations

import torch


class ScheduledOptimizer:
    """lr = base lr x factor(step); gradients clipped to norm `clip` first (0: no clipping)."""

    def __init__(self, optimizer: torch.optim.Optimizer, factor=None, clip: float = 0.0, params=None):
        self.optimizer, self.factor, self.clip, self.steps = optimizer, factor, clip, 0
        self.params = list(params) if params is not None else [p for g in optimizer.param_groups for p in g["params"]]
        self.base = [group["lr"] for group in optimizer.param_groups]

    @property
    def state(self):
        return self.optimizer.state

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        if self.factor is not None:
            factor = self.factor(self.steps)
            for group, lr in zip(self.optimizer.param_groups, self.base):
                group["lr"] = lr * factor
        if self.clip:
            torch.nn.utils.clip_grad_norm_([p for p in self.params if p.grad is not None], self.clip)
        self.optimizer.step()
        self.steps += 1

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.steps = state["steps"]
