"""NoProp-CT (reference section 3; Eq. 9, Algorithm 2, Appendix B).

One network u_hat(z_t, x, t) = softmax(CTNet(z_t, x, t)) @ W_Embed for all t in [0, 1]. Per minibatch,
with u_y = W_Embed[y] and t ~ U(0, 1) per example:
  z_t ~ q(z_t | y) = N(sqrt(ab(t)) u_y, 1 - ab(t))        ab(t) = sigmoid(-gamma(t)), learned (Appendix B)
  L = CE(head(z_1), y), z_1 ~ q(z_1 | y)  +  KL(q(z_0 | y) || N(0, I))  +  (eta / 2) SNR'(t) ||u_hat - u_y||^2
Gradients reach theta, the head, the schedule (psi) and W_Embed (Algorithm 2).

How (z_t, t) reach the network and how a batch's t are drawn are not in the paper; each is a config
key, and none changes Eq. 9 (the expectation over t ~ U(0, 1) and the per-t weight are the paper's):
  z_input     "raw": z_t as it is; "scaled": sqrt(ab(t)) z_t, the linear estimate of u_y from z_t,
              so z contributes little where it is nearly pure noise (a c_in of Karras et al. 2022)
  time_input  "t": the 64-d embedding of t; "gamma": of gamma(t) normalised by the initial endpoints
              (as the VDM score network of Kingma et al. 2021 is conditioned), so a change of the
              learned schedule's shape does not move what the network has learned about a noise level
  t_sampling  "uniform": i.i.d. U(0, 1); "stratified": t_i = (u + i/B) mod 1, each t_i still U(0, 1)
              (the low-discrepancy sampler of Kingma et al. 2021: same objective, less variance)

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

from noprop_bench.methods.continuous import (SOLVERS, ContinuousConfig, ContinuousMethod, LearnedSchedule, build_ct_model,
                                integrate, t_bins)
from noprop_bench.methods.heads import HeadConfig
from noprop_bench.methods.schedules import DiscreteSchedule
from noprop_bench.methods import catalog
from noprop_bench.methods import equations as eq


CHOICES = {"z_input": ("raw", "scaled"), "time_input": ("t", "gamma"), "t_sampling": ("uniform", "stratified")}


def sample_t(n: int, how: str, device) -> torch.Tensor:
    """n times in [0, 1), each marginally U(0, 1)."""
    if how == "stratified":
        return (torch.rand((), device=device) + torch.arange(n, device=device) / n) % 1.0
    return torch.rand(n, device=device)


@dataclass
class CTConfig(ContinuousConfig, HeadConfig):
    optimizer: str = "adam"        # Table 3
    timesteps: int = 1000          # inference steps (Table 3); training samples t continuously
    eta: float = 1.0               # Table 3
    gamma_0: float = -4.6          # initial gamma(1): SNR(1) = e^4.6, about 100 (our choice: docs, choices)
    gamma_1: float = 4.6           # initial gamma(0): SNR(0) = e^-4.6, about 0.01
    schedule_hidden: int = 1024    # units of the positive-weight schedule network (our choice)
    z_input: str = "raw"           # see the module docstring
    time_input: str = "t"
    t_sampling: str = "uniform"

    def validate(self) -> None:
        super().validate()
        for key, valid in CHOICES.items():
            if getattr(self, key) not in valid:
                raise ValueError(f"config '{key}' must be one of {', '.join(valid)}, got {getattr(self, key)!r}")
        if isinstance(self.schedule_hidden, bool) or not isinstance(self.schedule_hidden, int) or self.schedule_hidden < 1:
            raise ValueError(f"config 'schedule_hidden' must be a positive integer, got {self.schedule_hidden!r}")
        if not self.eta >= 0:
            raise ValueError(f"config 'eta' must be >= 0, got {self.eta!r}")
        if not self.gamma_0 < self.gamma_1:
            raise ValueError(f"need gamma_0 < gamma_1 so that SNR increases with t, got {self.gamma_0}, {self.gamma_1}")


class NoPropCT(ContinuousMethod):
    name = "noprop-ct"
    summary = catalog.summary("noprop-ct")
    default_solver = "ancestral"
    solvers = ("ancestral", *SOLVERS)
    Config = CTConfig
    TABLE3 = {"mnist": {"epochs": 100}, "cifar10": {"epochs": 500}, "cifar100": {"epochs": 1000}}

    def __init__(self, spec, config: CTConfig, device="cpu", train=None):
        super().__init__(spec, config, device)
        self.embed, self.net, self.head = build_ct_model(spec, config, train)
        self.schedule = LearnedSchedule(config.schedule_hidden, config.gamma_0, config.gamma_1)
        self.to(self.device)

    def logits(self, z, x, t, image=None, gamma=None):
        """CTNet on (z_t, x, t) as the config feeds them (z_input, time_input); t is [B] or a scalar;
        `gamma` = gamma(t) where the caller has it already."""
        cfg = self.config
        if cfg.z_input == "scaled" or cfg.time_input == "gamma":
            gamma = self.schedule.gamma(t) if gamma is None else gamma
            if cfg.z_input == "scaled":
                ab = torch.sigmoid(-gamma)
                z = z * (ab.sqrt().reshape(-1, 1) if ab.ndim else ab.sqrt())
            if cfg.time_input == "gamma":
                t = (cfg.gamma_1 - gamma) / (cfg.gamma_1 - cfg.gamma_0)  # 0 at t = 0, 1 at t = 1 initially
        return self.net(z, x, t, image)

    def denoise(self, z, x, t, image=None, gamma=None):
        return eq.expected_embedding(self.logits(z, x, t, image, gamma), self.embed.weight)

    def mse_weight(self, gamma: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:
        """Eq. 9's weight on ||u_hat - u_y||^2 at t, from gamma(t) and gamma'(t): SNR'(t)."""
        return self.schedule.snr_slope(gamma, slope)

    def loss(self, x, y, stage=None):
        u = self.embed(y)
        t = sample_t(len(y), self.config.t_sampling, u.device)
        gamma, slope = self.schedule.gamma_and_slope(t)  # the schedule's one evaluation this step
        z_t = eq.noised_label(u, torch.sigmoid(-gamma))
        mse = (self.denoise(z_t, x, t, gamma=gamma) - u).pow(2).sum(1)
        ab_0, ab_1 = self.schedule.end_alpha_bars()
        ce = F.cross_entropy(self.head(eq.noised_label(u, ab_1)), y)
        kl = eq.kl_to_prior(u, ab_0).mean()
        loss = ce + kl + 0.5 * self.config.eta * (self.mse_weight(gamma, slope) * mse).mean()
        return loss, {"ce": ce.detach(), "kl": kl.detach(), "mse": mse.mean().detach()}

    @torch.no_grad()
    def diagnostics(self, x, y):
        """Per t-bin: the network's accuracy with z ~ q(z_t | y) and with z = 0 (the image alone), the
        denoising error and Eq. 9's weight on it; and the schedule's endpoints gamma(0), gamma(1)."""
        u, image, rows = self.embed(y), self.net.image_features(x), []
        for centre, t in t_bins(len(y), x.device):
            gamma, slope = self.schedule.gamma_and_slope(t)
            logits = self.logits(eq.noised_label(u, torch.sigmoid(-gamma)), x, t, image, gamma)
            mse = (eq.expected_embedding(logits, self.embed.weight) - u).pow(2).sum(1).mean().item()
            rows += [{"diagnostic": "denoise_acc", "t": centre, "z": "q", "value": self.percent_correct(logits, y)},
                     {"diagnostic": "denoise_acc", "t": centre, "z": "zero",
                      "value": self.percent_correct(self.logits(torch.zeros_like(u), x, t, image, gamma), y)},
                     {"diagnostic": "mse", "t": centre, "z": "q", "value": mse},
                     {"diagnostic": "loss_weight", "t": centre, "value": 0.5 * self.config.eta * self.mse_weight(gamma, slope).mean().item()}]
        ends = (self.schedule.gamma_1, self.schedule.gamma_0)  # gamma(0), gamma(1)
        return rows + [{"diagnostic": "gamma", "t": t, "value": g.item()} for t, g in zip((0.0, 1.0), ends)]

    @torch.no_grad()
    def predict(self, x, steps=None, solver=None):
        steps, solver = self.inference_setting(steps, solver)
        z = torch.randn(len(x), self.embed.dim, device=x.device)
        image = self.net.image_features(x)
        if solver == "ancestral":
            grid = torch.linspace(0.0, 1.0, steps + 1, device=x.device)
            sched = DiscreteSchedule(self.schedule.alpha_bar(grid).double())
            a, b, c = (v.to(x.dtype) for v in (sched.a, sched.b, sched.c))
            for i in range(1, steps + 1):
                z = eq.ancestral_step(z, self.denoise(z, x, grid[i - 1], image), a[i], b[i], c[i])
            self.last_nfe = steps
        else:
            z, counter = integrate(lambda t, z: self.probability_flow(t, z, x, image), z, steps, solver)
            self.last_nfe = counter.nfe
        return self.head(z)

    def probability_flow(self, t, z, x, image=None):
        gamma, slope = self.schedule.gamma_and_slope(t)
        ab = torch.sigmoid(-gamma)
        return -slope * ab / 2 * (self.denoise(z, x, t, image) / ab.sqrt() - z)
