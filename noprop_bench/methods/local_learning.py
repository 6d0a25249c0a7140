"""Local supervised learning on NoProp's own blocks: the same T Figure-6-left blocks as back-prop and
NoProp-DT, each trained by its own cross-entropy on a detached input, so no gradient crosses a block.
With NoProp-DT on the same blocks this is the key ablation: a denoising target against a plain label
target, everything else equal.

The blocks form back-prop's chain (Eq. 18) with a fixed mixing weight a (no gradient could train it):
  z_0 ~ N(0, I);   logits_t = block_t(z_{t-1}.detach(), x);   z_t = (1 - a) z_{t-1} + a softmax(logits_t) @ W_Embed
  L_t = CE(logits_t, y)                                    each block's own loss, through its own output layer
Prediction: argmax of block T's logits along the chain (the last block's own classifier).

  local-greedy     Belilovsky, Eickenberg & Oyallon 2019 ("Greedy layerwise learning can scale to ImageNet"):
                   an epoch is T passes, pass t training block t alone on L_t, with z_{t-1} from the blocks
                   before it (forward only), as NoProp-DT's Algorithm 1 trains one block per pass
  local-decoupled  Belilovsky, Eickenberg & Oyallon 2020 ("Decoupled greedy learning of CNNs"): every step
                   trains every block on its own L_t. `backward = "per_block"` (default) runs each block's
                   backward as soon as its loss exists, so only one block's activations are alive at a time;
                   `"joint"` sums the losses and runs one backward, holding every block's activations at once
                   (the same gradients; the memory probe shows the difference)

OUR CHOICES: each block's classifier is its own output layer (NoProp's blocks already end in FC(m) class
logits, so no extra head is added); a = 0.5 (`mix`, back-prop's initial value); class labels only (one-hot:
a learned W_Embed would get no gradient from these losses).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from noprop_bench.methods import catalog
from noprop_bench.methods import equations as eq
from noprop_bench.methods.base import Method
from noprop_bench.methods.nets import DiscreteConfig, discrete_model

BACKWARDS = ("per_block", "joint")


@dataclass
class LocalConfig(DiscreteConfig):
    mix: float = 0.5              # a in z_t = (1 - a) z_{t-1} + a u_hat_t (fixed; back-prop's initial value)
    backward: str = "per_block"   # local-decoupled: each block's backward on its own, or one "joint" backward

    def validate(self) -> None:
        super().validate()
        if not 0 < self.mix <= 1:
            raise ValueError(f"config 'mix' must be in (0, 1], got {self.mix!r}")
        if self.backward not in BACKWARDS:
            raise ValueError(f"config 'backward' must be one of {', '.join(BACKWARDS)}, got {self.backward!r}")
        if self.embedding != "one-hot":
            raise ValueError(f"local learning trains on class labels, so a learned {self.embedding} W_Embed would "
                             f"get no gradient; use --embeddings one-hot")


class LocalLearning(Method):
    """What both forms share: the chain, the per-block losses, prediction by the last block."""
    label_embeddings = ("one-hot",)  # trained on class labels: a learned W_Embed would get no gradient
    default_solver = "chain"
    stochastic = True  # z_0 ~ N(0, I)
    Config = LocalConfig
    TABLE3 = {"mnist": {"epochs": 100}, "cifar10": {"epochs": 150}, "cifar100": {"epochs": 150}}  # back-prop's rows

    def __init__(self, spec, config: LocalConfig, device="cpu", train=None):
        super().__init__(spec, config, device)
        self.embed, self.blocks, _ = discrete_model(spec, config, train)  # no linear head: block T classifies
        self.to(self.device)

    def block(self):
        return self.blocks[0]

    @torch.no_grad()
    def chain(self, x: torch.Tensor, upto: int) -> torch.Tensor:
        """z_{upto-1}: blocks 1..upto-1 along the chain, forward only, in eval mode (frozen while a later
        block trains: greedy training fixes what lies below), from z_0 ~ N(0, I)."""
        z = torch.randn(len(x), self.embed.dim, device=x.device)
        for block in self.blocks[:upto - 1]:
            was = block.training
            block.eval()
            z = eq.mix(z, eq.expected_embedding(block(z, x), self.embed.weight), self.config.mix)
            block.train(was)
        return z

    @torch.no_grad()
    def diagnostics(self, x, y):
        """Each block's accuracy along the chain: how much each local classifier adds."""
        z, rows = torch.randn(len(x), self.embed.dim, device=x.device), []
        for t, block in enumerate(self.blocks, start=1):
            logits = block(z, x)
            rows.append({"diagnostic": "block_acc", "block": t, "z": "chain", "value": self.percent_correct(logits, y)})
            z = eq.mix(z, eq.expected_embedding(logits, self.embed.weight), self.config.mix)
        return rows

    @torch.no_grad()
    def predict(self, x, steps=None, solver=None):
        self.check_inference(steps, solver)
        T = self.config.timesteps
        self.last_nfe = T
        return self.blocks[T - 1](self.chain(x, T), x)


class LocalGreedy(LocalLearning):
    name = "local-greedy"
    summary = catalog.summary("local-greedy")

    @classmethod
    def num_stages(cls, config) -> int:
        return config.timesteps

    def stages(self) -> list[int]:
        return list(range(1, self.config.timesteps + 1))

    @classmethod
    def train_nfe_per_image(cls, config) -> int:
        T = config.timesteps
        return T * (T + 1) // 2  # pass t runs blocks 1..t forward

    def loss(self, x, y, stage: int):
        z = self.chain(x, stage)
        ce = F.cross_entropy(self.blocks[stage - 1](z, x), y)
        return ce, {"ce": ce.detach()}


class LocalDecoupled(LocalLearning):
    name = "local-decoupled"
    summary = catalog.summary("local-decoupled")
    owns_backward = True  # loss() runs the backward passes itself, one per block

    def loss(self, x, y, stage=None):
        z = torch.randn(len(x), self.embed.dim, device=x.device)
        losses = []
        for block in self.blocks:
            logits = block(z.detach(), x)
            ce = F.cross_entropy(logits, y)
            if self.config.backward == "per_block":
                ce.backward()  # this block's graph is freed before the next block runs
                ce = ce.detach()
            losses.append(ce)
            z = eq.mix(z, eq.expected_embedding(logits.detach(), self.embed.weight), self.config.mix)
        total = sum(losses)
        if self.config.backward == "joint":
            total.backward()
        return total.detach(), {"ce": losses[-1].detach()}
