"""DiffusionBlocks (Shing, Koyama & Akiba, arXiv 2506.14202, ICLR 2026) on NoProp's network, as its
Table 6 runs it ("NoProp-DT's architecture augmented with time conditioning from NoProp-CT"): B blocks,
each a denoiser of the label embedding for its own range of noise levels, one block trained per step.

  noise      z = u_y + sigma eps (variance exploding), log sigma ~ N(P_mean, P_std^2) truncated to
             [sigma_min, sigma_max] = [0.002, 80], P_mean = -1.2, P_std = 1.2
  blocks     the range split into B intervals of equal probability under that law: with
             q(s) = Phi((log s - P_mean) / P_std), q_b = q(sigma_min) + (b / B)(q(sigma_max) - q(sigma_min)),
             sigma_b = exp(P_mean + P_std Phi^-1(q_b)); block 1 takes the noisiest interval. Each block
             trains on its interval widened by alpha_b = (sigma_hi / sigma_lo)^gamma at both ends (overlap
             gamma = 0.1, the paper's setting for the NoProp comparison), clipped to [sigma_min, sigma_max]
  denoiser   EDM's preconditioning (sigma_data = 0.5): c_in = 1/sqrt(sigma^2 + sd^2), c_noise = log(sigma)/4,
             c_skip = sd^2/(sigma^2 + sd^2), c_out = sigma sd/sqrt(sigma^2 + sd^2);
             D(z, x, sigma) = c_skip z + c_out F_b(c_in z, x, c_noise), F_b a Figure-6-left block with
             NoProp-CT's time path fed c_noise, whose last layer gives an unbounded vector of the
             embedding's size (the public code's: its block returns a free hidden vector, so D can reach
             u_y at every noise level)
  loss       w(sigma) CE(head(D), y), w(sigma) = (sigma^2 + sd^2) / (sigma sd)^2 (EDM's weight), with
             gradients clipped to norm 1 (the public code's); one block per step, drawn uniformly, its
             sigma drawn per example from the law restricted to its interval. Each example is weighted
             by its own w (the equation). The VARIANT `diffusion-blocks-batch-weight` multiplies the
             batch's mean CE by its mean w instead, which is what the public code computes (a [B] by
             [B, 1] broadcast): a different objective, so a different name
  inference  Euler on the probability-flow ODE over N noise levels evenly spaced in probability from
             sigma_max to sigma_min (N = B: each block once): z += (sigma' - sigma)(z - u_hat)/sigma
             with u_hat = softmax(head(D)) @ W_Embed (the public code's denoised estimate), from
             z ~ N(0, sigma_max^2 I). The class (OUR CHOICE, `readout`, decided by an A/B): "nearest", the
             class embedding nearest the final z (whose denoised estimate at sigma_min is z itself, so this
             reads the sample the ODE produced); "head", argmax head(D) at sigma_min, the public code's,
             one more evaluation. The head is trained at sigma_min only on D near clean embeddings, while
             the final z is a softmax mixture of them: on MNIST's competitors budget the head's argmax
             there was right for about half the images while the chain's own argmax was right for 94 %
Label embeddings (the harness's): one-hot, or learned (dim20, prototype) with rows kept at unit norm (the
paper normalises its learned embedding). Published: CIFAR-100 46.88 % (B = 3, AdamW, lr 1e-4, batch 128,
1000 epochs); no MNIST or CIFAR-10 classification numbers.
"""
from __future__ import annotations

import math
import random
import statistics
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from noprop_bench.methods import catalog
from noprop_bench.methods import equations as eq
from noprop_bench.methods.base import Method
from noprop_bench.methods.continuous import time_embedding
from noprop_bench.methods.optim import ScheduledOptimizer
from noprop_bench.methods.nets import DiscreteConfig, DTBlock
from noprop_bench.methods.embeddings import make_embedding
from noprop_bench.methods.heads import make_head

SIGMA_DATA = 0.5
READOUTS = ("head", "nearest")


@dataclass
class DBConfig(DiscreteConfig):
    timesteps: int = 3          # B blocks
    lr: float = 1e-4            # Table 6's setting
    epochs: int = 1000          # Table 6's setting (CIFAR-100); an epoch is B passes, one block per step
    p_mean: float = -1.2
    p_std: float = 1.2
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    overlap: float = 0.1        # gamma
    clip: float = 1.0           # gradient norm clip (0: none)
    readout: str = "nearest"    # the class: the "nearest" embedding to the final z, or argmax "head"(D) at sigma_min (the public code)
    head_init: str = "default"

    def validate(self) -> None:
        super().validate()
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")
        if not self.p_std > 0 or not 0 <= self.overlap < 1 or self.clip < 0:
            raise ValueError("config needs p_std > 0, 0 <= overlap < 1 and clip >= 0")
        if self.readout not in READOUTS:
            raise ValueError(f"config 'readout' must be one of {', '.join(READOUTS)}, got {self.readout!r}")


NORMAL = statistics.NormalDist()


class NoiseLaw:
    """The truncated log-normal law of sigma and its partition into B equal-probability intervals (host
    floats: a sampler's noise levels never need the device)."""

    def __init__(self, config: DBConfig):
        self.mean, self.std, B = config.p_mean, config.p_std, config.timesteps
        self.q_min, self.q_max = self.q(config.sigma_min), self.q(config.sigma_max)
        qs = [self.q_min + (b / B) * (self.q_max - self.q_min) for b in range(B + 1)]
        # sigma_max = edges[0] > ... > edges[B] = sigma_min
        self.edges = [config.sigma_max, *[self.sigma(q) for q in reversed(qs[1:-1])], config.sigma_min]
        self.ranges = []  # per block: (sigma_lo, sigma_hi) it trains on, overlap included
        for b in range(B):
            hi, lo = self.edges[b], self.edges[b + 1]
            alpha = (hi / lo) ** config.overlap
            self.ranges.append((max(lo / alpha, config.sigma_min), min(hi * alpha, config.sigma_max)))

    def sigma(self, q: float) -> float:
        return math.exp(self.mean + self.std * NORMAL.inv_cdf(q))

    def q(self, s: float) -> float:
        return NORMAL.cdf((math.log(s) - self.mean) / self.std)

    def sample(self, block: int, n: int, device) -> torch.Tensor:
        """n draws of sigma from the law restricted to block's training interval (on the device)."""
        lo, hi = (self.q(v) for v in self.ranges[block])
        q = lo + (hi - lo) * torch.rand(n, device=device)
        return torch.exp(self.mean + self.std * math.sqrt(2) * torch.erfinv(2 * q - 1))

    def schedule(self, n: int) -> list[float]:
        """n noise levels evenly spaced in probability, sigma_max first."""
        return [self.sigma(self.q_max + (i / (n - 1)) * (self.q_min - self.q_max)) for i in range(n)]

    def block_of(self, sigma: float) -> int:
        """The block whose own interval (without overlap) holds sigma."""
        return sum(sigma < e for e in self.edges[1:-1])


class DBBlock(nn.Module):
    """A Figure-6-left block with NoProp-CT's time path (64-d embedding of c_noise -> FC256 -> ReLU) joined
    at the head, its last layer giving a vector of the embedding's size: F_b(c_in z, x, c_noise)."""

    def __init__(self, spec, embed_dim: int, config):
        super().__init__()
        self.body = DTBlock(spec, embed_dim, config)
        self.time_fc = nn.Sequential(nn.Linear(64, 256), nn.ReLU())
        first, last = self.body.head[0], self.body.head[-1]
        self.body.head[0] = nn.Linear(first.in_features + 256, first.out_features)
        self.body.head[-1] = nn.Linear(last.in_features, embed_dim)

    def forward(self, z, x, c_noise):
        body = self.body
        if body.path.label_is_image:
            fx, fz = body.path.both(x, z)
            hx, hz = body.image_fc(fx), body.label_path(fz)
        else:
            hx, hz = body.image_fc(body.path.conv(x)), body.label_path(z)
        ht = self.time_fc(time_embedding((c_noise + 2.0) / 4.0))  # c_noise in about [-1.6, 1.1]: into [0, 1]
        return body.head(torch.cat([hx, hz, ht], dim=1))


class DiffusionBlocks(Method):
    name = "diffusion-blocks"
    summary = catalog.summary("diffusion-blocks")
    default_solver = "euler"
    solvers = ("euler",)
    Config = DBConfig
    batch_weight: ClassVar[bool] = False  # the variant's objective: mean(w) * mean(CE)
    TABLE3 = {"mnist": {"epochs": 100}, "cifar10": {"epochs": 500}, "cifar100": {"epochs": 1000}}

    def __init__(self, spec, config: DBConfig, device="cpu", train=None):
        super().__init__(spec, config, device)
        self.embed = make_embedding(config, spec, train)
        self.blocks = nn.ModuleList(DBBlock(spec, self.embed.dim, config) for _ in range(config.timesteps))
        self.head = make_head(config, self.embed)
        self.law = NoiseLaw(config)
        # which block a step trains: drawn on the host from a generator seeded by the cell's seed, so a
        # step reads nothing back from the device
        self.block_draws = random.Random(int(torch.randint(2 ** 31, ())))
        self.to(self.device)

    def block(self):
        return self.blocks[0]

    def get_extra_state(self) -> dict:
        """The host generator's state goes into state_dict, so a checkpointed cell draws the same blocks."""
        return {"block_draws": self.block_draws.getstate()}

    def set_extra_state(self, state: dict) -> None:
        self.block_draws.setstate(state["block_draws"])

    @classmethod
    def num_stages(cls, config) -> int:
        return config.timesteps

    def stages(self) -> list[int]:
        return list(range(1, self.config.timesteps + 1))  # B passes per epoch; each step draws its block

    def embeddings(self) -> torch.Tensor:
        w = self.embed.weight
        return F.normalize(w, dim=1) if w.requires_grad else w

    def denoise(self, b: int, z: torch.Tensor, x: torch.Tensor, sigma) -> torch.Tensor:
        """D(z, x, sigma) with EDM's preconditioning; sigma a tensor [B] (training) or a float (sampling)."""
        sd2 = SIGMA_DATA ** 2
        if isinstance(sigma, float):
            s, c_noise = sigma, torch.full((len(z),), math.log(sigma) / 4, device=z.device)
            c_in, c_skip, c_out = 1 / math.sqrt(s * s + sd2), sd2 / (s * s + sd2), s * SIGMA_DATA / math.sqrt(s * s + sd2)
        else:
            s, c_noise = sigma[:, None], sigma.log() / 4
            c_in, c_skip, c_out = 1 / (s ** 2 + sd2).sqrt(), sd2 / (s ** 2 + sd2), s * SIGMA_DATA / (s ** 2 + sd2).sqrt()
        return c_skip * z + c_out * self.blocks[b](c_in * z, x, c_noise)

    def loss(self, x, y, stage=None):
        B = self.config.timesteps
        b = self.block_draws.randrange(B)  # one block per step, uniformly
        sigma = self.law.sample(b, len(y), x.device)
        u = self.embeddings()[y]
        z = u + sigma[:, None] * torch.randn_like(u)
        logits = self.head(self.denoise(b, z, x, sigma))
        weight = (sigma ** 2 + SIGMA_DATA ** 2) / (sigma * SIGMA_DATA) ** 2
        ce = F.cross_entropy(logits, y, reduction="none")
        loss = weight.mean() * ce.mean() if self.batch_weight else (weight * ce).mean()
        return loss, {"ce": ce.mean().detach()}

    @torch.no_grad()
    def predict(self, x, steps=None, solver=None):
        steps = steps or self.config.timesteps
        self.check_solver(solver or self.default_solver)
        levels = self.law.schedule(max(steps, 2))
        z = levels[0] * torch.randn(len(x), self.embed.dim, device=x.device)
        for s, s_next in zip(levels[:-1], levels[1:]):  # noise levels are host floats: no device read
            u_hat = eq.expected_embedding(self.head(self.denoise(self.law.block_of(s), z, x, s)), self.embeddings())
            z = z + (s_next - s) * (z - u_hat) / s
        if self.config.readout == "nearest":
            self.last_nfe = len(levels) - 1
            return -torch.cdist(z, self.embeddings())  # the nearest class embedding scores highest
        self.last_nfe = len(levels)
        return self.head(self.denoise(self.law.block_of(levels[-1]), z, x, levels[-1]))

    def make_optimizer(self):
        optimizer = super().make_optimizer()
        return ScheduledOptimizer(optimizer, lambda step: 1.0, clip=self.config.clip,
                                  params=[p for p in self.parameters() if p.requires_grad])

    @classmethod
    def default_setting(cls, config):
        return config.timesteps, cls.default_solver

    @classmethod
    def nfe_per_image(cls, config, steps: int, solver: str) -> int:
        levels = max(steps, 2)
        return levels - 1 if config.readout == "nearest" else levels

    @classmethod
    def train_nfe_per_image(cls, config) -> int:
        return config.timesteps  # B passes, one block each

    @torch.no_grad()
    def diagnostics(self, x, y):
        """Each block's accuracy (head(D)) at the middle of its own noise interval."""
        u, rows = self.embeddings()[y], []
        for b, (lo, hi) in enumerate(self.law.ranges):
            sigma = math.sqrt(lo * hi)
            z = u + sigma * torch.randn_like(u)
            rows.append({"diagnostic": "block_acc", "block": b + 1, "z": "q",
                         "value": self.percent_correct(self.head(self.denoise(b, z, x, sigma)), y)})
        return rows


class DiffusionBlocksBatchWeight(DiffusionBlocks):
    """VARIANT: the loss the public DiffusionBlocks code computes, mean(w(sigma)) * mean(CE) over the batch,
    in place of the equation's per-example w(sigma) CE. Everything else is DiffusionBlocks'."""
    name = "diffusion-blocks-batch-weight"
    summary = catalog.summary("diffusion-blocks-batch-weight")
    batch_weight = True
