"""The fixed discrete-time noise schedule of NoProp-DT and the coefficients it implies.

Indexing follows the paper (reference section 1): z_0 is the noisiest state, z_T the closest to u_y,
alpha_bar_t = prod_{s=t..T} alpha_s increases with t, and SNR(t) = alpha_bar_t / (1 - alpha_bar_t), so the
SNR differences that weight the loss are never negative.

OUR CHOICE (the paper says only "a fixed cosine noise schedule"): the cosine schedule of Nichol &
Dhariwal (2021), alpha_bar(tau) = cos^2(pi/2 (tau + s)/(1 + s)) / cos^2(pi/2 s/(1 + s)) with s = 0.008,
evaluated at diffusion time tau = 1 - t/T (so t = T is the clean end), then clipped to
[alpha_bar_min, alpha_bar_max] = [1e-3, 0.999]. The clip keeps alpha_bar_0 > 0 (the KL term is not
identically zero) and alpha_bar_T < 1 (SNR(T) finite, c_t > 0).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def cosine_alpha_bar(T: int, s: float = 0.008, alpha_bar_min: float = 1e-3,
                     alpha_bar_max: float = 0.999) -> torch.Tensor:
    """alpha_bar_0 .. alpha_bar_T (float64, length T + 1), non-decreasing in t."""
    if T < 1:
        raise ValueError(f"timesteps T must be >= 1, got {T}")
    if not 0 < alpha_bar_min < alpha_bar_max < 1:
        raise ValueError(f"need 0 < alpha_bar_min < alpha_bar_max < 1, got {alpha_bar_min}, {alpha_bar_max}")
    tau = 1 - torch.arange(T + 1, dtype=torch.float64) / T
    f = lambda u: torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = f(tau) / f(torch.zeros((), dtype=torch.float64))
    return alpha_bar.clamp(alpha_bar_min, alpha_bar_max)


@dataclass(frozen=True)
class DiscreteSchedule:
    """alpha_bar_t and the Eq. 6 posterior coefficients, all float64 tensors indexed by t = 0..T.

    a_t, b_t, c_t are defined for t = 1..T (index 0 holds NaN): q(z_t | z_{t-1}, y) = N(a_t u_y + b_t z_{t-1}, c_t).
    """
    alpha_bar: torch.Tensor

    @property
    def T(self) -> int:
        return len(self.alpha_bar) - 1

    @property
    def alpha(self) -> torch.Tensor:
        """Per-step alpha_t with alpha_bar_t = prod_{s=t..T} alpha_s: alpha_T = alpha_bar_T, else a ratio."""
        ab = self.alpha_bar
        return torch.cat([ab[:-1] / ab[1:], ab[-1:]])

    @property
    def snr(self) -> torch.Tensor:
        return self.alpha_bar / (1 - self.alpha_bar)

    def _shifted(self):
        """(alpha_bar_t, alpha_bar_{t-1}, alpha_{t-1}) for t = 1..T."""
        ab = self.alpha_bar
        return ab[1:], ab[:-1], self.alpha[:-1]

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.new_full((1,), float("nan")), x])  # on x's device: no host tensor joins it

    @property
    def a(self) -> torch.Tensor:
        ab_t, ab_prev, alpha_prev = self._shifted()
        return self._pad(ab_t.sqrt() * (1 - alpha_prev) / (1 - ab_prev))

    @property
    def b(self) -> torch.Tensor:
        ab_t, ab_prev, alpha_prev = self._shifted()
        return self._pad(alpha_prev.sqrt() * (1 - ab_t) / (1 - ab_prev))

    @property
    def c(self) -> torch.Tensor:
        ab_t, ab_prev, alpha_prev = self._shifted()
        return self._pad((1 - ab_t) * (1 - alpha_prev) / (1 - ab_prev))
