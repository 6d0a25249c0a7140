"""An outside method for noprop-bench: greedy local learning ("local-ce").

A stack of T fully connected layers, each with its own linear classifier trained by its own
cross-entropy on the detached output of the layer below, so no gradient crosses a layer: like NoProp,
no end-to-end back-propagation, but with a local supervised target instead of a denoising one.

    h_0 = flatten(x),   h_t = relu(W_t h_{t-1}.detach()),   L = sum_t CE(C_t h_t, y),   predict: C_T h_T

It is registered with noprop-bench through the `noprop_bench.methods` entry point in this folder's
pyproject.toml; `pip install -e examples/local_ce` makes `--methods local-ce` work.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from noprop_bench.methods.base import Method, MethodConfig


@dataclass
class LocalCEConfig(MethodConfig):
    timesteps: int = 3    # T: layers, each with its own classifier
    hidden: int = 256     # width of every layer

    def validate(self) -> None:
        super().validate()
        if self.embedding != "one-hot":
            raise ValueError("local-ce trains on class labels only; use --embeddings one-hot")
        if self.hidden < 1:
            raise ValueError(f"config 'hidden' must be a positive integer, got {self.hidden!r}")


class LocalCE(Method):
    name = "local-ce"  # must equal the entry-point name
    summary = "example plugin: T layers, each trained by its own local classifier (no end-to-end back-prop)"
    default_solver = "forward"
    stochastic = False
    Config = LocalCEConfig

    def __init__(self, spec, config: LocalCEConfig, device="cpu", train=None):
        super().__init__(spec, config, device)
        widths = [spec.image_dim] + [config.hidden] * config.timesteps
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:]))
        self.heads = nn.ModuleList(nn.Linear(config.hidden, spec.num_classes) for _ in self.layers)
        self.to(self.device)

    def local_logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, out = x.flatten(1), []
        for layer, head in zip(self.layers, self.heads):
            h = F.relu(layer(h.detach()))  # detach: each layer learns from its own loss only
            out.append(head(h))
        return out

    def loss(self, x, y, stage=None):
        losses = [F.cross_entropy(logits, y) for logits in self.local_logits(x)]
        return sum(losses), {"ce": losses[-1].detach()}

    @torch.no_grad()
    def predict(self, x, steps=None, solver=None):
        self.check_inference(steps, solver)
        self.last_nfe = self.config.timesteps
        return self.local_logits(x)[-1]

    @torch.no_grad()
    def diagnostics(self, x, y):
        """Each layer's own classifier accuracy: how much each local target has learned."""
        return [{"diagnostic": "block_acc", "block": t, "z": "local", "value": self.percent_correct(logits, y)}
                for t, logits in enumerate(self.local_logits(x), start=1)]
