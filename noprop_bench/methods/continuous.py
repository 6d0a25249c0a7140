"""Pieces shared by the continuous-time methods (NoProp-CT, NoProp-FM, the neural-ODE baselines).

  CTNet            Figure 6 right: u_hat(z_t, x, t) logits, no batch norm, 64-d time embedding.
  LearnedSchedule  Appendix B (Eqs. 65-67): gamma(t) from a positive-weight two-layer network.
  integrate        torchdiffeq's fixed-grid solvers on k uniform steps over [0, 1], counting NFE.

OUR CHOICES where the paper is silent: the time embedding is the sinusoidal one of Vaswani et al.
(2017) / Ho et al. (2020) applied to 1000 t; the schedule network has 1024 sigmoid units (as in
Kingma et al. 2021) with weights softplus(raw) > 0; gamma starts at gamma_0 = -4.6 (t = 1) and
gamma_1 = 4.6 (t = 0), i.e. SNR from about 0.01 to 100 (NoProp-CT's config keys, decided by an A/B:
at +-7, Eq. 9's weight SNR'(t) reaches thousands near t = 1 and single examples jolt the shared network).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchdiffeq import odeint, odeint_adjoint

from dataclasses import dataclass

from noprop_bench.methods.base import Method, MethodConfig
from noprop_bench.methods.embeddings import LabelEmbedding, make_embedding
from noprop_bench.methods.heads import make_head
from noprop_bench.methods.nets import ImageConfig, ImagePath

# torchdiffeq fixed-grid solvers offered for inference sweeps, with function evaluations per step.
SOLVERS = {"euler": 1, "midpoint": 2, "heun2": 2, "rk4": 4}
MAX_STEPS = 1000
T_BINS = 10  # per-t diagnostics are over 10 equal bins of [0, 1]


def t_bins(n: int, device) -> list[tuple[float, torch.Tensor]]:
    """For each of T_BINS equal bins of [0, 1]: (its centre, n times drawn uniformly inside it)."""
    return [((k + 0.5) / T_BINS, (k + torch.rand(n, device=device)) / T_BINS) for k in range(T_BINS)]


def check_steps(steps: int, what: str) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
        raise ValueError(f"{what}: inference steps must be an integer from 1 to {MAX_STEPS}, got {steps!r}")
    return steps


def time_embedding(t: torch.Tensor, dim: int = 64) -> torch.Tensor:
    """Sinusoidal embedding of t in [0, 1] (scaled to 0..1000, the DDPM convention): [B] -> [B, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=t.dtype) / half)
    angles = 1000.0 * t[:, None] * freqs[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


@dataclass
class ContinuousConfig(ImageConfig):
    timesteps: int = 1000  # inference steps (Table 3), 1 to MAX_STEPS

    def validate(self) -> None:
        super().validate()
        check_steps(self.timesteps, "config 'timesteps'")


class ContinuousMethod(Method):
    """Base of the continuous-time methods: any step count, several solvers, one network per step."""
    continuous = True

    def block(self):
        return self.net  # the continuous-time model of Figure 6 (right), Table 5's "continuous-time model"

    def inference_setting(self, steps: int | None, solver: str | None) -> tuple[int, str]:
        """predict()'s arguments, defaulted and checked: (steps, solver)."""
        steps = check_steps(self.config.timesteps if steps is None else steps, self.name)
        solver = solver or self.default_solver
        self.check_solver(solver)
        return steps, solver

    @classmethod
    def nfe_per_image(cls, config, steps: int, solver: str) -> int:
        return steps * SOLVERS.get(solver, 1)  # the ancestral sampler evaluates once per step

    @classmethod
    def train_nfe_per_image(cls, config) -> int:
        return 1  # one network evaluation at a sampled t per training image


class CTNet(nn.Module):
    """Figure 6 right: [conv stack -> FC256 -> ReLU] + [z -> FC256 -> ReLU] + [emb(t) -> FC256 -> ReLU],
    concatenated -> FC256 -> ReLU -> FC128 -> ReLU -> FC(m). No batch norm (Figure 6 caption).

    An image-sized z (prototype embeddings) goes through a conv stack first (nets.ImagePath, label_conv).
    """

    def __init__(self, spec, embed_dim: int, config: ImageConfig):
        super().__init__()
        num_classes = spec.num_classes
        self.path = ImagePath(spec, embed_dim == spec.image_dim, config)
        self.image_fc = nn.Sequential(nn.Linear(self.path.flat, 256), nn.ReLU())
        self.label_fc = nn.Sequential(nn.Linear(self.path.flat if self.path.label_is_image else embed_dim, 256), nn.ReLU())
        self.time_fc = nn.Sequential(nn.Linear(64, 256), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(768, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                                  nn.Linear(128, num_classes))

    def image_features(self, x: torch.Tensor) -> torch.Tensor:
        """The image path alone, FC256-ReLU(conv(x)): the same at every step of one inference, so
        samplers compute it once per batch and pass it as `image` (identical outputs in eval mode)."""
        return self.image_fc(self.path.conv(x))

    def forward(self, z: torch.Tensor, x: torch.Tensor, t: torch.Tensor,
                image: torch.Tensor | None = None) -> torch.Tensor:
        if image is not None:
            hz = self.label_fc(self.path.label(z) if self.path.label_is_image else z)
        elif self.path.label_is_image:
            fx, fz = self.path.both(x, z)
            image, hz = self.image_fc(fx), self.label_fc(fz)
        else:
            image, hz = self.image_fc(self.path.conv(x)), self.label_fc(z)
        if t.ndim == 0:  # one time for the whole batch (a solver step): embed it once
            emb = self.time_fc(time_embedding(t.reshape(1).to(z.dtype))).expand(len(z), -1)
        else:
            emb = self.time_fc(time_embedding(t.to(z.dtype)))
        return self.head(torch.cat([image, hz, emb], dim=1))


def build_ct_model(spec, config, train=None) -> tuple[LabelEmbedding, CTNet, nn.Linear]:
    """W_Embed, the one CT network and the linear head p_hat_theta_out (methods/heads.py)."""
    embed = make_embedding(config, spec, train)
    return embed, CTNet(spec, embed.dim, config), make_head(config, embed)


class LearnedSchedule(nn.Module):
    """gamma(t) = gamma_0 + (gamma_1 - gamma_0) (1 - gamma_bar(t)), decreasing in t (Appendix B).

    gamma_tilde(t) = w2 . sigmoid(w1 t + b1) + b2 with w1, w2 = softplus(raw) > 0, so gamma_tilde is
    increasing; gamma_bar = (gamma_tilde(t) - gamma_tilde(0)) / (gamma_tilde(1) - gamma_tilde(0)) runs
    from 0 to 1. alpha_bar(t) = sigmoid(-gamma(t)) and SNR(t) = exp(-gamma(t)) increase with t.
    """

    def __init__(self, hidden: int = 1024, gamma_0: float = -4.6, gamma_1: float = 4.6):
        super().__init__()
        self.raw_w1 = nn.Parameter(torch.randn(hidden))
        self.b1 = nn.Parameter(torch.randn(hidden))
        self.raw_w2 = nn.Parameter(torch.randn(hidden) / math.sqrt(hidden))
        self.gamma_0 = nn.Parameter(torch.tensor(float(gamma_0)))  # gamma at t = 1 (clean end)
        # gamma_1 = gamma_0 + softplus(gap): both endpoints train, and they can never cross (which
        # would make SNR decrease in t)
        self.raw_gap = nn.Parameter(torch.tensor(math.log(math.expm1(gamma_1 - gamma_0))))

    @property
    def gamma_1(self) -> torch.Tensor:
        """gamma at t = 0 (noisy end), always above gamma_0."""
        return self.gamma_0 + F.softplus(self.raw_gap)

    def weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        return F.softplus(self.raw_w1), F.softplus(self.raw_w2)

    def _tilde(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """gamma_tilde(t) and its derivative d gamma_tilde / dt, for t of any shape."""
        w1, w2 = self.weights()
        s = torch.sigmoid(t[..., None] * w1 + self.b1)
        return (s * w2).sum(-1), (s * (1 - s) * w1 * w2).sum(-1)  # b2 cancels in gamma_bar

    def gamma_and_slope(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """gamma(t) and gamma'(t) (<= 0), t of any shape: one evaluation of the network, at t, 0 and 1
        together (a training step calls this once)."""
        flat = t.reshape(-1)
        g, dg = self._tilde(torch.cat([flat, flat.new_zeros(1), flat.new_ones(1)]))
        g, dg, g0, g1 = g[:-2].reshape(t.shape), dg[:-2].reshape(t.shape), g[-2], g[-1]
        span = self.gamma_1 - self.gamma_0
        gamma_bar = (g - g0) / (g1 - g0)
        return self.gamma_0 + span * (1 - gamma_bar), -span * dg / (g1 - g0)

    def gamma(self, t: torch.Tensor) -> torch.Tensor:
        return self.gamma_and_slope(t)[0]

    def alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(-self.gamma(t))

    @staticmethod
    def snr_slope(gamma: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:
        """SNR'(t) = -gamma'(t) exp(-gamma(t)) (>= 0), from gamma(t) and gamma'(t)."""
        return -slope * torch.exp(-gamma)

    def snr_and_slope(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """SNR(t) = exp(-gamma(t)) and SNR'(t)."""
        gamma, slope = self.gamma_and_slope(t)
        return torch.exp(-gamma), self.snr_slope(gamma, slope)

    def end_alpha_bars(self) -> tuple[torch.Tensor, torch.Tensor]:
        """alpha_bar(0) and alpha_bar(1): gamma_bar is 0 at t = 0 and 1 at t = 1 by construction, so the
        endpoints are the parameters themselves (no evaluation of the network)."""
        return torch.sigmoid(-self.gamma_1), torch.sigmoid(-self.gamma_0)


class CountedField(nn.Module):
    """Wraps a vector field f(t, z) and counts its evaluations (NFE)."""

    def __init__(self, field):
        super().__init__()
        self.field = field
        self.nfe = 0

    def forward(self, t, z):
        self.nfe += 1
        return self.field(t, z)


def integrate(field: nn.Module, z0: torch.Tensor, steps: int, solver: str, adjoint: bool = False,
              adjoint_params=None) -> tuple[torch.Tensor, CountedField]:
    """z(1) from z(0) = z0 with `steps` uniform steps of a fixed-grid solver; returns (z1, counter).

    counter.nfe is the forward NFE on return, and forward + backward NFE after backward().

    With adjoint=True gradients come from torchdiffeq's adjoint method (`odeint_adjoint`) rather than
    from back-propagating through the solver's operations (`odeint`): same call, same arguments.
    """
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver '{solver}'; valid solvers: {', '.join(SOLVERS)}")
    check_steps(steps, "integrate")
    counted = CountedField(field)
    grid = torch.linspace(0.0, 1.0, steps + 1, device=z0.device, dtype=z0.dtype)
    if adjoint:
        params = tuple(adjoint_params) if adjoint_params is not None else tuple(field.parameters())
        zs = odeint_adjoint(counted, z0, grid, method=solver, adjoint_method=solver, adjoint_params=params)
    else:
        zs = odeint(counted, z0, grid, method=solver)
    return zs[-1], counted
