"""NoProp-DT (reference sections 1, 2, 5, 6, 7): T independent blocks, one linear head, one W_Embed.

Training (Algorithm 1, Eq. 8): an epoch is T sequential passes over the data, pass t training block t
on its own loss; no gradient crosses blocks. Per minibatch, with u_y = W_Embed[y]:
  z_{t-1} ~ q(z_{t-1} | y) = N(sqrt(ab_{t-1}) u_y, 1 - ab_{t-1})         (Eq. 8's expectation; Algorithm
                                                                         1's "z_t" is the index slip)
  u_hat   = softmax(block_t(z_{t-1}, x)) @ W_Embed                      (section 5)
  z_T     ~ q(z_T | y) = N(sqrt(ab_T) u_y, 1 - ab_T)                     (a noised label, not a block output)
  L_t = CE(head(z_T), y) + KL(q(z_0|y) || N(0, I)) + (T/2) eta (SNR(t) - SNR(t-1)) ||u_hat - u_y||^2
Inference (Eq. 3): z_0 ~ N(0, I); z_t = a_t u_hat_t(z_{t-1}, x) + b_t z_{t-1} + sqrt(c_t) eps; scores = head(z_T).

The class probability p_hat(y | z_T), in the CE term and at inference, is config 'class_prob': "softmax"
(Eq. 14, default: softmax(head(z_T))) or "posterior" (Eqs. 15-16, Figure 4: the radial posterior around
y_tilde = softmax(head(z_T)) @ W_Embed, with 'posterior_sigma', which the paper does not give;
equations.radial_posterior).

OUR CHOICE for learned embeddings (dim20, prototype), config 'embed_state': every pass updates W_Embed, and
Algorithm 1 does not say whose optimiser state it has. "per_pass" (default): pass t keeps its own state for
W_Embed; "shared": one Adam state across the T passes, so its moment estimates after pass T (weight ~480
with alpha_bar_max = 0.999) steer and shrink the steps of the low-weight passes that follow.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from noprop_bench.methods.base import Method, make_optimizer
from noprop_bench.methods.nets import DiscreteConfig, discrete_model
from noprop_bench.methods.schedules import DiscreteSchedule, cosine_alpha_bar
from noprop_bench.methods import catalog
from noprop_bench.methods import equations as eq


EMBED_STATES = ("shared", "per_pass")
CLASS_PROBS = ("softmax", "posterior")


@dataclass
class DTConfig(DiscreteConfig):
    eta: float = 0.1               # weight of the SNR-weighted denoising term (Table 3)
    cosine_s: float = 0.008        # offset of the cosine schedule (our choice, see schedules.py)
    alpha_bar_min: float = 1e-3    # clip of alpha_bar_0 (our choice)
    alpha_bar_max: float = 0.999   # clip of alpha_bar_T (our choice)
    embed_state: str = "per_pass"  # W_Embed's optimiser state: one per pass, or "shared" by the T passes (docs/choices.md)
    workers: int = 1               # K processes training the blocks concurrently (methods/parallel_dt.py); 1: Algorithm 1 in order
    threads: int = 0               # torch threads per worker (0: this process's threads, shared out among the workers)
    class_prob: str = "softmax"    # p_hat(y | z_T): Eq. 14's "softmax" or Eqs. 15-16's radial "posterior" (Figure 4)
    posterior_sigma: float = 0.5   # sigma of Eq. 16, in units of the rms distance between class embeddings (docs/choices.md)

    def validate(self) -> None:
        super().validate()
        if self.embed_state not in EMBED_STATES:
            raise ValueError(f"config 'embed_state' must be one of {', '.join(EMBED_STATES)}, got {self.embed_state!r}")
        if not 1 <= self.workers <= self.timesteps:
            raise ValueError(f"config 'workers' must be between 1 and T = {self.timesteps}, got {self.workers!r}")
        if self.threads < 0:
            raise ValueError(f"config 'threads' must be >= 0 (0: automatic), got {self.threads!r}")
        if self.workers > 1 and self.embedding != "one-hot":
            raise ValueError(f"workers = {self.workers} needs a fixed embedding: with {self.embedding}, W_Embed is "
                             f"trained by every block's pass, so the blocks are not independent and a parallel "
                             f"run would be another algorithm; use --embeddings one-hot or workers = 1")
        if not self.eta >= 0:
            raise ValueError(f"config 'eta' must be >= 0, got {self.eta!r}")
        if self.class_prob not in CLASS_PROBS:
            raise ValueError(f"config 'class_prob' must be one of {', '.join(CLASS_PROBS)}, got {self.class_prob!r}")
        if not self.posterior_sigma > 0:
            raise ValueError(f"config 'posterior_sigma' must be > 0, got {self.posterior_sigma!r}")
        cosine_alpha_bar(self.timesteps, self.cosine_s, self.alpha_bar_min, self.alpha_bar_max)


class PerPassEmbeddingOptimizer:
    """Table 3's optimiser over every trainable parameter but W_Embed, plus one of the same kind per pass
    over W_Embed, stepped only in its pass: each pass's moment estimates see only its own gradients.
    The trainer names the pass before each step (`set_stage`, run/step.train_step)."""

    def __init__(self, method: "NoPropDT"):
        cfg, embed = method.config, method.embed.weight
        make = lambda params: make_optimizer(cfg, params, method.device)
        self.method = method
        self.main = make([p for p in method.parameters() if p.requires_grad and p is not embed])
        self.per_pass = {t: make([embed]) for t in method.stages()}
        self.stage = method.stages()[0]

    def set_stage(self, stage) -> None:
        self.stage = stage

    @property
    def state(self) -> dict:
        """Every inner optimiser's per-parameter state, as torch.optim.Optimizer.state (W_Embed's is the
        latest pass's; measure/memory.py counts them all)."""
        return {**self.main.state, **{(t, p): s for t, o in self.per_pass.items() for p, s in o.state.items()}}

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.main.zero_grad(set_to_none=set_to_none)
        self.method.embed.weight.grad = None

    def step(self) -> None:
        self.main.step()
        self.per_pass[self.stage].step()

    def state_dict(self) -> dict:
        return {"main": self.main.state_dict(), "per_pass": {t: o.state_dict() for t, o in self.per_pass.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.main.load_state_dict(state["main"])
        for t, o in self.per_pass.items():
            o.load_state_dict(state["per_pass"][t])


class NoPropDT(Method):
    name = "noprop-dt"
    summary = catalog.summary("noprop-dt")
    default_solver = "ancestral"  # Eq. 3
    Config = DTConfig
    TABLE3 = {"mnist": {"epochs": 100}, "cifar10": {"epochs": 150}, "cifar100": {"epochs": 150}}

    def __init__(self, spec, config: DTConfig, device="cpu", train=None):
        super().__init__(spec, config, device)
        T = config.timesteps
        self.embed, self.blocks, self.head = discrete_model(spec, config, train)  # head: Eq. 14
        sched = DiscreteSchedule(cosine_alpha_bar(T, config.cosine_s, config.alpha_bar_min, config.alpha_bar_max))
        for key in ("alpha_bar", "snr", "a", "b", "c"):
            self.register_buffer(key, getattr(sched, key).float())
        self.to(self.device)

    @classmethod
    def num_stages(cls, config: DTConfig) -> int:
        return config.timesteps

    def stages(self) -> list[int]:
        return list(range(1, self.config.timesteps + 1))  # Algorithm 1: block t trained in pass t

    def noised_label(self, u: torch.Tensor, t: int) -> torch.Tensor:
        """A sample of q(z_t | y) (Eq. 6) on the fixed schedule."""
        return eq.noised_label(u, self.alpha_bar[t])

    def denoise(self, t: int, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """u_hat_t(z_{t-1}, x): block t's class mixture of embeddings (section 5)."""
        return eq.expected_embedding(self.blocks[t - 1](z, x), self.embed.weight)

    def block(self):
        return self.blocks[0]

    def make_trainer(self, optimizer, split, seed: int, precision: str):
        if self.config.workers > 1:  # block-parallel training (parallel_dt.py); the workers start now, off the clock
            from noprop_bench.methods.parallel_dt import ParallelDT
            workers = self.config.workers
            threads = self.config.threads or max(1, torch.get_num_threads() // workers)
            return ParallelDT(self, split, seed, workers, threads, precision)
        return super().make_trainer(optimizer, split, seed, precision)

    def make_optimizer(self):
        if self.config.embed_state == "per_pass" and self.embed.weight.requires_grad:
            return PerPassEmbeddingOptimizer(self)
        return super().make_optimizer()

    def denoising_term(self, x: torch.Tensor, u: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Block t's term of Eq. 8, (T/2) eta (SNR(t) - SNR(t-1)) ||u_hat_t - u_y||^2, and the unweighted
        error: the only term through which block t gets a gradient."""
        cfg = self.config
        mse = (self.denoise(t, self.noised_label(u, t - 1), x) - u).pow(2).sum(1).mean()
        return 0.5 * cfg.timesteps * cfg.eta * (self.snr[t] - self.snr[t - 1]) * mse, mse

    def class_scores(self, z: torch.Tensor) -> torch.Tensor:
        """log p_hat(y | z_T) up to a constant per row: Eq. 14's head(z_T), or Eqs. 15-16's radial posterior."""
        if self.config.class_prob == "posterior":
            return eq.radial_posterior(self.head(z), self.embed.weight, self.config.posterior_sigma)
        return self.head(z)

    def head_terms(self, u: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 8's CE(p_hat(. | z_T), y) with z_T ~ q(z_T | y), and its KL term (no parameters but W_Embed's)."""
        ce = F.cross_entropy(self.class_scores(self.noised_label(u, self.config.timesteps)), y)
        return ce, eq.kl_to_prior(u, self.alpha_bar[0]).mean()

    def loss(self, x, y, t: int):
        u = self.embed(y)
        weighted, mse = self.denoising_term(x, u, t)
        ce, kl = self.head_terms(u, y)
        loss = ce + kl + weighted
        return loss, {"ce": ce.detach(), "kl": kl.detach(), "mse": mse.detach()}

    @torch.no_grad()
    def diagnostics(self, x, y):
        """Each block's accuracy on its own training input z_{t-1} ~ q(z_{t-1} | y)."""
        u = self.embed(y)
        return [{"diagnostic": "block_acc", "block": t, "z": "q",
                 "value": self.percent_correct(self.blocks[t - 1](self.noised_label(u, t - 1), x), y)}
                for t in self.stages()]

    @torch.no_grad()
    def predict(self, x, steps=None, solver=None):
        self.check_inference(steps, solver)
        z = torch.randn(len(x), self.embed.dim, device=x.device)
        for t in range(1, self.config.timesteps + 1):
            z = eq.ancestral_step(z, self.denoise(t, z, x), self.a[t], self.b[t], self.c[t])
        self.last_nfe = self.config.timesteps
        return self.class_scores(z)
