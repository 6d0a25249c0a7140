"""NoProp-CT (reference section 3; Eq. 9, Algorithm 2, Appendix B).

One network u_hat(z_t, x, t) = softmax(CTNet(z_t, x, t)) @ W_Embed for all t in [0, 1]. Per minibatch,
with u_y = W_Embed[y] and t ~ U(0, 1) per example:
  z_t ~ q(z_t | y) = N(sqrt(ab(t)) u_y, 1 - ab(t))        ab(t) = sigmoid(-gamma(t)), learned (Appendix B)
  L = CE(head(z_1), y), z_1 ~ q(z_1 | y)  +  KL(q(z_0 | y) || N(0, I))  +  (eta / 2) SNR'(t) ||u_hat - u_y||^2
Gradients reach theta, the head, the schedule (psi) and W_Embed (Algorithm 2).

Inference (OUR CHOICE: the paper writes no CT update rule, section 9), from z_0 ~ N(0, I) to z_1, then
scores = head(z_1):
  "ancestral"                  Eq. 3 with a, b, c of Eq. 6 on the learned ab(t) at k uniform grid points
  "euler", "midpoint", "heun2", "rk4"   the deterministic probability-flow ODE
        dz/dt = ab'(t) / (2 (1 - ab(t))) (u_hat / sqrt(ab(t)) - z) = -gamma'(t) ab(t) / 2 (u_hat / sqrt(ab(t)) - z)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from methods.continuous import SOLVERS, ContinuousConfig, ContinuousMethod, LearnedSchedule, build_ct_model, integrate
from methods.noprop_dt import kl_to_standard_normal
from methods.schedules import DiscreteSchedule


@dataclass
class CTConfig(ContinuousConfig):
    optimizer: str = "adam"        # Table 3
    timesteps: int = 1000          # inference steps (Table 3); training samples t continuously
    eta: float = 1.0               # Table 3
    gamma_0: float = -7.0          # initial gamma(1) (our choice, see continuous.py)
    gamma_1: float = 7.0           # initial gamma(0)
    schedule_hidden: int = 1024    # units of the positive-weight schedule network (our choice)

    def validate(self) -> None:
        super().validate()
        if not self.eta >= 0:
            raise ValueError(f"config 'eta' must be >= 0, got {self.eta!r}")
        if not self.gamma_0 < self.gamma_1:
            raise ValueError(f"need gamma_0 < gamma_1 so that SNR increases with t, got {self.gamma_0}, {self.gamma_1}")


class NoPropCT(ContinuousMethod):
    name = "noprop-ct"
    summary = "NoProp-CT: one network denoising in continuous time, learned noise schedule (Eq. 9)"
    default_solver = "ancestral"
    solvers = ("ancestral", *SOLVERS)
    Config = CTConfig
    TABLE3 = {"mnist": {"epochs": 100}, "cifar10": {"epochs": 500}, "cifar100": {"epochs": 1000}}

    def __init__(self, spec, config: CTConfig, device="cpu", train=None):
        super().__init__(spec, config, device)
        self.embed, self.net, self.head = build_ct_model(spec, config, train)
        self.schedule = LearnedSchedule(config.schedule_hidden, config.gamma_0, config.gamma_1)
        self.to(self.device)

    def denoise(self, z, x, t):
        return self.net(z, x, t).softmax(dim=1) @ self.embed.weight

    def noised_label(self, u, alpha_bar):
        alpha_bar = alpha_bar.reshape(-1, 1) if alpha_bar.ndim else alpha_bar
        return alpha_bar.sqrt() * u + (1 - alpha_bar).sqrt() * torch.randn_like(u)

    def loss(self, x, y, stage=None):
        u = self.embed(y)
        t = torch.rand(len(y), device=u.device)
        gamma, _ = self.schedule.gamma_and_slope(t)
        _, snr_slope = self.schedule.snr_and_slope(t)
        mse = (self.denoise(self.noised_label(u, torch.sigmoid(-gamma)), x, t) - u).pow(2).sum(1)
        ab_0, ab_1 = self.schedule.alpha_bar(torch.tensor([0.0, 1.0], device=u.device))
        ce = F.cross_entropy(self.head(self.noised_label(u, ab_1)), y)
        kl = kl_to_standard_normal(u, ab_0).mean()
        loss = ce + kl + 0.5 * self.config.eta * (snr_slope * mse).mean()
        return loss, {"ce": ce.detach(), "kl": kl.detach(), "mse": mse.mean().detach()}

    @torch.no_grad()
    def predict(self, x, steps=None, solver=None):
        steps, solver = self.inference_setting(steps, solver)
        z = torch.randn(len(x), self.embed.dim, device=x.device)
        if solver == "ancestral":
            grid = torch.linspace(0.0, 1.0, steps + 1, device=x.device)
            sched = DiscreteSchedule(self.schedule.alpha_bar(grid).double())
            a, b, c = (v.to(x.dtype) for v in (sched.a, sched.b, sched.c))
            for i in range(1, steps + 1):
                z = a[i] * self.denoise(z, x, grid[i - 1]) + b[i] * z + c[i].sqrt() * torch.randn_like(z)
            self.last_nfe = steps
        else:
            z, counter = integrate(lambda t, z: self.probability_flow(t, z, x), z, steps, solver)
            self.last_nfe = counter.nfe
        return self.head(z)

    def probability_flow(self, t, z, x):
        gamma, slope = self.schedule.gamma_and_slope(t)
        ab = torch.sigmoid(-gamma)
        return -slope * ab / 2 * (self.denoise(z, x, t) / ab.sqrt() - z)
