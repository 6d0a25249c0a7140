"""NoProp-CT-reweighted: NoProp-CT with another weight on the denoising term. NOT the paper's objective.

Eq. 9 weights ||u_hat(z_t, x, t) - u_y||^2 by SNR'(t). With lambda(t) = log SNR(t) = -gamma(t) that is
lambda'(t) e^lambda per unit t: per unit of log-SNR the weight is SNR itself, so the high-SNR end,
where z_t is almost u_y and denoising is copying, carries SNR times the weight of the region SNR ~ 1
where inference decides the class: about 100 times with the initial schedule (SNR up to e^4.6), about
1100 times with endpoints +-7 (docs: the choices, NoProp-CT's endpoints). This variant keeps everything else of NoProp-CT (network, learned schedule,
CE and KL terms, sampler) and replaces SNR'(t) by w(t) (Kingma & Gao 2023, "Understanding diffusion
objectives", write such weights as functions of lambda):

  weighting = "logsnr"   w = lambda': every unit of log-SNR weighs the same (the default: docs/choices.md)
  weighting = "sigmoid"  w = lambda' e^lambda sigmoid(-lambda) = lambda' alpha_bar(t)
                         = SNR'(t) / (1 + SNR(t)): Eq. 9's weight where SNR << 1, capped at lambda' where
                         SNR >> 1 (their sigmoid weighting with bias 0)

Both stay non-negative, so the term is still a weighted denoising loss whose minimiser at each t is
E[u_y | z_t, x]; what changes is how the network's capacity and the optimiser's steps are shared
across t. Rows carry this method's own name, so a paper row is never this variant.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from noprop_bench.methods.noprop_ct import CTConfig, NoPropCT
from noprop_bench.methods import catalog

WEIGHTINGS = ("sigmoid", "logsnr")


@dataclass
class CTReweightedConfig(CTConfig):
    weighting: str = "logsnr"    # docs/choices.md

    def validate(self) -> None:
        super().validate()
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"config 'weighting' must be one of {', '.join(WEIGHTINGS)}, got {self.weighting!r}")


class NoPropCTReweighted(NoPropCT):
    name = "noprop-ct-reweighted"
    summary = catalog.summary("noprop-ct-reweighted")
    Config = CTReweightedConfig

    def mse_weight(self, gamma: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:
        log_snr_slope = -slope                     # lambda'(t) >= 0
        if self.config.weighting == "logsnr":
            return log_snr_slope
        return log_snr_slope * torch.sigmoid(-gamma)  # lambda' * alpha_bar(t)
