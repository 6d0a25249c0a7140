"""Neural-ODE baselines on the continuous-time network (reference section 7, "Adjoint baseline").

dz/dt = CTNet(z, x, t) @ W_Embed (for one-hot embeddings simply the network's output), integrated from
z(0) ~ N(0, I) to z(1) with T = 1000 fixed steps in training and inference (Table 3); a linear layer
on z(1) classifies; trained end to end with cross-entropy.
  adjoint       gradients by the adjoint sensitivity method, torchdiffeq's `odeint_adjoint` (Chen et al. 2018)
  backprop-ode  gradients by back-propagating through the unrolled solver, `odeint` (no such row in the
                paper; it puts adjoint and direct back-prop memory and time side by side on one model)
OUR CHOICES: the paper says only "presumably the same continuous-time network"; we use Figure 6 right
with the image features recomputed at every evaluation (the adjoint needs them inside the field to
reach the conv weights), and WITHOUT DROPOUT: the adjoint method re-evaluates the field backward in
time, where new dropout masks would make its gradients wrong (and both baselines must share one
model). The training solver is Euler, configurable with --set solver=...
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from noprop_bench.methods.continuous import SOLVERS, ContinuousConfig, ContinuousMethod, build_ct_model, integrate
from noprop_bench.methods import catalog


@dataclass
class ODEConfig(ContinuousConfig):
    timesteps: int = 1000     # solver steps in training and by default in inference (Table 3)
    solver: str = "euler"     # training solver (our choice; the paper names none)

    def validate(self) -> None:
        super().validate()
        if self.solver not in SOLVERS:
            raise ValueError(f"unknown solver '{self.solver}'; valid solvers: {', '.join(SOLVERS)}")


class _Field(nn.Module):
    """f(t, z) for one batch of images; a Module so that the adjoint finds the parameters."""

    def __init__(self, net, embed, x):
        super().__init__()
        self.net, self.embed, self.x = net, embed, x

    def forward(self, t, z):
        return self.net(z, self.x, t) @ self.embed.weight


class NeuralODE(ContinuousMethod):
    solvers = tuple(SOLVERS)
    Config = ODEConfig
    adjoint = False
    TABLE3 = {"mnist": {"epochs": 2}, "cifar10": {"epochs": 4}, "cifar100": {"epochs": 4}}

    def __init__(self, spec, config: ODEConfig, device="cpu", train=None):
        super().__init__(spec, config, device)
        self.embed, self.net, self.head = build_ct_model(spec, config, train)
        for module in self.net.modules():
            if isinstance(module, nn.Dropout):
                module.p = 0.0
        self.to(self.device)

    @property
    def default_solver(self) -> str:
        return self.config.solver

    @classmethod
    def default_setting(cls, config: ODEConfig) -> tuple[int, str]:
        return config.timesteps, config.solver

    @classmethod
    def train_nfe_per_image(cls, config: ODEConfig) -> int:
        return cls.nfe_per_image(config, config.timesteps, config.solver)

    def forward(self, x, steps: int, solver: str) -> torch.Tensor:
        field = _Field(self.net, self.embed, x)
        z0 = torch.randn(len(x), self.embed.dim, device=x.device)
        params = [p for p in field.parameters() if p.requires_grad]
        z1, counter = integrate(field, z0, steps, solver, adjoint=self.adjoint, adjoint_params=params)
        self.last_nfe = counter.nfe
        return self.head(z1)

    def loss(self, x, y, stage=None):
        ce = F.cross_entropy(self(x, self.config.timesteps, self.config.solver), y)
        return ce, {"ce": ce.detach()}

    @torch.no_grad()
    def predict(self, x, steps=None, solver=None):
        steps, solver = self.inference_setting(steps, solver)
        return self(x, steps, solver)


class Adjoint(NeuralODE):
    name = "adjoint"
    summary = catalog.summary("adjoint")
    adjoint = True


class BackpropODE(NeuralODE):
    name = "backprop-ode"
    summary = catalog.summary("backprop-ode")
