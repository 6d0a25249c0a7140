"""LG-FG-A: forward gradient with activity perturbation and local greedy losses (Ren, Kornblith, Liao &
Hinton 2023, "Scaling forward gradient with local losses", arXiv 2210.03310), in its MNIST form (the
LocalMixer M/1/16 that the NoProp paper cites at 97.45 %: one block, one patch, 512 channels, 16 groups).

No gradient is back-propagated through the network: each layer's weight gradient comes from a forward-mode
directional derivative of local losses.

  block      z_1 = LN(W_1 x + b_1),  a_1 = relu(z_1);   z_2 = LN_g(W_2,g a_1,g + b_2,g),  a_2 = relu(z_2)
             (W_2 grouped: 16 groups of 32 -> 32 channels, each group's LayerNorm its own)
  local loss one per example b and group g: L_bg = CE(H [SG(LN_1(a_2,1)), ..., LN_g(a_2,g), ..., SG(LN_G(a_2,G))], y_b)
             (the replicated aggregator: group g sees the others through a stop-gradient, H shared)
  FG-A       u ~ N(0, I) added to every pre-activation z (one draw per example and unit); one forward-mode
             pass (torch.func.jvp) gives d_bg = sum over units j of dL_bg/dz_j u_j; the estimate of
             dL/dz_j is d_{b,g(j)} u_j 1[a_j > 0] (g(j): the group unit j feeds; inactive units carry none),
             and each layer's weight gradient is that estimate back-propagated through its own LayerNorm
             and linear map only
  heads      H gets the exact gradient of sum_g L_bg / G; a readout on LN(a_2).detach(), zero-initialised,
             gets the exact gradient of its own cross-entropy at `readout_lr_scale` x the learning rate, and
             classifies
Reported: MNIST test error 2.55 % (M/1/16, the paper's Table 3). The paper's appendix with the MNIST
optimiser settings was not reachable; OUR CHOICES follow its public code's defaults (SGD, lr 0.1, no
momentum, weight decay 1e-4, batch 100, the learning rate decayed linearly to 0, 200 epochs).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import jvp

from noprop_bench.methods import catalog
from noprop_bench.methods.base import Method, MethodConfig
from noprop_bench.methods.optim import ScheduledOptimizer


@dataclass
class FGConfig(MethodConfig):
    batch_size: int = 100
    epochs: int = 200
    optimizer: str = "sgd"
    lr: float = 0.1
    weight_decay: float = 1e-4
    momentum: float = 0.0
    timesteps: int = 1          # blocks (the MNIST model has one)
    hidden: int = 512           # channels
    groups: int = 16            # local losses per example (channels / groups per group)
    readout_lr_scale: float = 0.1

    def validate(self) -> None:
        super().validate()
        if self.timesteps != 1:
            raise ValueError("forward-gradient builds the one-block MNIST model (M/1/16): timesteps must be 1")
        if self.hidden % self.groups:
            raise ValueError(f"config 'hidden' ({self.hidden}) must be a multiple of 'groups' ({self.groups})")
        if self.embedding != "one-hot":
            raise ValueError("forward-gradient trains on class labels; use --embeddings one-hot")


class GroupedLinear(nn.Module):
    """G independent linear maps of C/G -> C/G channels."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.groups, width = groups, channels // groups
        self.weight = nn.Parameter(torch.empty(groups, width, width))
        self.bias = nn.Parameter(torch.zeros(groups, width))
        for w in self.weight:
            nn.init.kaiming_uniform_(w, a=5 ** 0.5)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        a = a.view(len(a), self.groups, -1)
        return (torch.einsum("bgi,gij->bgj", a, self.weight) + self.bias).flatten(1)


class ForwardGradient(Method):
    label_embeddings = ("one-hot",)
    name = "forward-gradient"
    summary = catalog.summary("forward-gradient")
    default_solver = "readout"
    stochastic = False
    owns_backward = True  # the trunk's gradients are forward gradients, set inside loss()
    Config = FGConfig

    def __init__(self, spec, config: FGConfig, device="cpu", train=None):
        super().__init__(spec, config, device)
        C, G = config.hidden, config.groups
        self.fc1, self.ln1 = nn.Linear(spec.image_dim, C), nn.LayerNorm(C)
        self.fc2, self.ln2 = GroupedLinear(C, G), nn.LayerNorm(C // G)
        self.head_ln = nn.LayerNorm(C // G)
        self.head = nn.Linear(C, spec.num_classes)
        self.readout_ln, self.readout = nn.LayerNorm(C), nn.Linear(C, spec.num_classes)
        nn.init.zeros_(self.readout.weight)
        nn.init.zeros_(self.readout.bias)
        self.batches_per_epoch = -(-len(train) // config.batch_size) if train is not None else None
        self.to(self.device)

    def block(self):
        return nn.ModuleList([self.fc1, self.ln1, self.fc2, self.ln2])

    def trunk(self, x, noise1=None, noise2=None):
        """(z_1, a_1, z_2, a_2), with noise added to the pre-activations where given."""
        G = self.config.groups
        z1 = self.ln1(self.fc1(x.flatten(1)))
        if noise1 is not None:
            z1 = z1 + noise1
        a1 = F.relu(z1)
        z2 = self.ln2(self.fc2(a1).view(len(x), G, -1)).flatten(1)
        if noise2 is not None:
            z2 = z2 + noise2
        return z1, a1, z2, F.relu(z2)

    def group_logits(self, a2: torch.Tensor) -> torch.Tensor:
        """[B, G, classes]: group g's loss input, the other groups behind a stop-gradient (the replicated
        aggregator; its value is the same for every g)."""
        G = self.config.groups
        h = self.head_ln(a2.view(len(a2), G, -1))          # [B, G, C/G]
        frozen = h.detach()
        eye = torch.eye(G, device=a2.device, dtype=h.dtype)[None, :, :, None]  # [1, g, g', 1]
        mixed = eye * h[:, None] + (1 - eye) * frozen[:, None]                 # [B, g, g', C/G]
        return self.head(mixed.flatten(2))

    def group_losses(self, x, y, noise1, noise2) -> torch.Tensor:
        """[B, G]: L_bg, with the trunk's parameters as constants (the forward-mode pass's function)."""
        _, _, _, a2 = self.trunk(x, noise1, noise2)
        logits = self.group_logits(a2)
        return F.cross_entropy(logits.flatten(0, 1), y.repeat_interleave(self.config.groups), reduction="none").view(len(y), -1)

    def loss(self, x, y, stage=None):
        B, C, G = len(y), self.config.hidden, self.config.groups
        u1, u2 = torch.randn(B, C, device=x.device), torch.randn(B, C, device=x.device)
        zero = torch.zeros(B, C, device=x.device)
        with torch.no_grad():
            losses, d = jvp(lambda n1, n2: self.group_losses(x, y, n1, n2), (zero, zero), (u1, u2))  # [B, G] each
        z1, a1, z2, a2 = self.trunk(x.detach())
        group_of = torch.arange(C, device=x.device) // (C // G)
        g1 = d[:, group_of] * u1 * (a1 > 0)  # the estimate of dL/dz_1 (unit j feeds group g(j) through W_2)
        g2 = d[:, group_of] * u2 * (a2 > 0)
        # each layer's own local backward: the estimate through its LayerNorm and linear map, inputs detached
        z1_local = self.ln1(self.fc1(x.flatten(1)))
        z2_local = self.ln2(self.fc2(a1.detach()).view(B, G, -1)).flatten(1)
        surrogate = (z1_local * g1).sum() / B + (z2_local * g2).sum() / B
        head_loss = F.cross_entropy(self.group_logits(a2.detach()).flatten(0, 1), y.repeat_interleave(G))
        readout = F.cross_entropy(self.readout(self.readout_ln(a2.detach())), y)
        (surrogate + head_loss + self.config.readout_lr_scale * readout).backward()
        return losses.mean().detach(), {"ce": readout.detach(), "mse": losses.mean().detach()}

    @torch.no_grad()
    def predict(self, x, steps=None, solver=None):
        self.check_inference(steps, solver)
        self.last_nfe = 1
        return self.readout(self.readout_ln(self.trunk(x)[3]))

    def lr_factor(self, step: int) -> float:
        """Linear decay to zero over training (the public code's schedule)."""
        if not self.batches_per_epoch:
            return 1.0
        return max(0.0, 1 - step / (self.batches_per_epoch * self.config.epochs))

    def make_optimizer(self):
        return ScheduledOptimizer(super().make_optimizer(), self.lr_factor)

    @torch.no_grad()
    def diagnostics(self, x, y):
        """The local heads' accuracy (group 1's loss input) beside the readout's."""
        a2 = self.trunk(x)[3]
        return [{"diagnostic": "block_acc", "block": 1, "z": "local head", "value":
                 self.percent_correct(self.group_logits(a2)[:, 0], y)}]
