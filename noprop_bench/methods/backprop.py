"""The back-propagation baseline of Eqs. 17-19 (reference section 7).

The same T blocks and head as NoProp-DT, chained: z_0 ~ N(0, I),
z_t = (1 - a_t) z_{t-1} + a_t u_hat_t(z_{t-1}, x) with a_t = tanh(w_t) and u_hat_t = softmax(block_t) @ W_Embed,
prediction argmax head(z_T); trained end to end with cross-entropy through every block.
OUR CHOICE (the paper gives no initial value): w_t starts at atanh(0.5), so every a_t starts at 0.5.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from noprop_bench.methods.base import Method
from noprop_bench.methods.nets import DiscreteConfig, discrete_model
from noprop_bench.methods import catalog
from noprop_bench.methods import equations as eq


@dataclass
class BackpropConfig(DiscreteConfig):
    a_init: float = 0.5  # initial mixing weight a_t = tanh(w_t) (our choice)

    def validate(self) -> None:
        super().validate()
        if not 0 < self.a_init < 1:
            raise ValueError(f"config 'a_init' must be in (0, 1), got {self.a_init!r}")


class Backprop(Method):
    name = "backprop"
    summary = catalog.summary("backprop")
    default_solver = "chain"  # Eq. 18, the only rule
    Config = BackpropConfig
    TABLE3 = {"mnist": {"epochs": 100}, "cifar10": {"epochs": 150}, "cifar100": {"epochs": 150}}

    def __init__(self, spec, config: BackpropConfig, device="cpu", train=None):
        super().__init__(spec, config, device)
        self.embed, self.blocks, self.head = discrete_model(spec, config, train)
        self.w = nn.Parameter(torch.full((config.timesteps,), math.atanh(config.a_init)))
        self.to(self.device)

    def block(self):
        return self.blocks[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.randn(len(x), self.embed.dim, device=x.device)
        for block, a in zip(self.blocks, torch.tanh(self.w)):
            z = eq.mix(z, eq.expected_embedding(block(z, x), self.embed.weight), a)
        return self.head(z)

    def loss(self, x, y, stage=None):
        ce = F.cross_entropy(self(x), y)
        return ce, {"ce": ce.detach()}

    @torch.no_grad()
    def diagnostics(self, x, y):
        """Along the forward chain of Eq. 18: each block's argmax accuracy, and its mixing weight a_t."""
        rows = []
        z = torch.randn(len(x), self.embed.dim, device=x.device)
        for t, (block, a) in enumerate(zip(self.blocks, torch.tanh(self.w)), start=1):
            logits = block(z, x)
            rows += [{"diagnostic": "block_acc", "block": t, "z": "chain", "value": self.percent_correct(logits, y)},
                     {"diagnostic": "mix", "block": t, "value": a.item()}]
            z = eq.mix(z, eq.expected_embedding(logits, self.embed.weight), a)
        return rows

    @torch.no_grad()
    def predict(self, x, steps=None, solver=None):
        self.check_inference(steps, solver)
        self.last_nfe = self.config.timesteps
        return self(x)
