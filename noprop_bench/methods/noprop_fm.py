"""NoProp-FM (reference section 4; Eqs. 10-13, Algorithm 3).

Linear path from z_0 ~ N(0, I) to z_1 = u_y: z_t ~ N(t u_y + (1 - t) z_0, sigma^2), t ~ U(0, 1).
v_hat(z_t, x, t) = CTNet(z_t, x, t) @ W_Embed (logits as unrestricted weights, section 5).
  L = ||v_hat - (u_y - z_0)||^2                     (summed over dimensions, mean over the batch)
    + CE(head(z_t + (1 - t) v_hat), y)              only when W_Embed is learned (the anchor term)
Prediction: integrate dz/dt = v_hat from z_0 ~ N(0, I) to z_1; the class is the nearest class embedding
(Euclidean), so the scores are minus the distances.
OUR CHOICE: sigma = 0 by default (the paper gives no value; torchcfm's default), configurable.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from noprop_bench.methods import equations as eq
from noprop_bench.methods.continuous import SOLVERS, ContinuousConfig, ContinuousMethod, build_ct_model, integrate, t_bins
from noprop_bench.methods import catalog


@dataclass
class FMConfig(ContinuousConfig):
    optimizer: str = "adam"   # Table 3
    timesteps: int = 1000     # inference steps (Table 3)
    sigma: float = 0.0        # std of the path around the straight line (our choice)

    def validate(self) -> None:
        super().validate()
        if not self.sigma >= 0:
            raise ValueError(f"config 'sigma' must be >= 0, got {self.sigma!r}")


class NoPropFM(ContinuousMethod):
    name = "noprop-fm"
    summary = catalog.summary("noprop-fm")
    default_solver = "euler"
    solvers = tuple(SOLVERS)
    Config = FMConfig
    TABLE3 = {"mnist": {"epochs": 100}, "cifar10": {"epochs": 500}, "cifar100": {"epochs": 1000}}

    def __init__(self, spec, config: FMConfig, device="cpu", train=None):
        super().__init__(spec, config, device)
        self.embed, self.net, self.head = build_ct_model(spec, config, train)
        self.to(self.device)

    def velocity(self, z, x, t, image=None):
        return self.net(z, x, t, image) @ self.embed.weight

    def loss(self, x, y, stage=None):
        u = self.embed(y)
        z0 = torch.randn_like(u)
        t = torch.rand(len(y), device=u.device)
        z_t, target = eq.flow_path(u, z0, t, self.config.sigma)
        v = self.velocity(z_t, x, t)
        fm = (v - target).pow(2).sum(1).mean()
        if not self.embed.weight.requires_grad:
            return fm, {"mse": fm.detach()}
        ce = F.cross_entropy(self.head(z_t + (1 - t)[:, None] * v), y)  # anchor: keeps embeddings apart
        return fm + ce, {"mse": fm.detach(), "ce": ce.detach()}

    @torch.no_grad()
    def diagnostics(self, x, y):
        """Per t-bin: accuracy of the predicted end point z_t + (1 - t) v_hat (nearest embedding), with z_t
        on the training path and with z_t = 0 (the image alone)."""
        u, image, rows = self.embed(y), self.net.image_features(x), []
        for centre, t in t_bins(len(y), x.device):
            s = t[:, None]
            z_t, _ = eq.flow_path(u, torch.randn_like(u), t, self.config.sigma)
            for kind, z in (("q", z_t), ("zero", torch.zeros_like(u))):
                end = z + (1 - s) * self.velocity(z, x, t, image)
                rows.append({"diagnostic": "denoise_acc", "t": centre, "z": kind,
                             "value": self.percent_correct(-torch.cdist(end, self.embed.weight), y)})
        return rows

    @torch.no_grad()
    def predict(self, x, steps=None, solver=None):
        steps, solver = self.inference_setting(steps, solver)
        z0 = torch.randn(len(x), self.embed.dim, device=x.device)
        image = self.net.image_features(x)  # computed once, not at every step
        z1, counter = integrate(lambda t, z: self.velocity(z, x, t, image), z0, steps, solver)
        self.last_nfe = counter.nfe
        return -torch.cdist(z1, self.embed.weight)
