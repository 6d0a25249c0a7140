"""The linear head p_hat_theta_out(y | z) = softmax(head(z)) of NoProp-DT, back-prop and NoProp-CT
(Eqs. 8, 9, 14), and its initialisation, which the paper does not give.

  head_init = "decoder"  (default) the nearest-embedding classifier of W_Embed (init_decoder_head)
  head_init = "default"  PyTorch's nn.Linear initialisation

Why the decoder: in all three methods the head reads a z that lies near the rows of W_Embed (z_T or z_1
~ q(. | y) in NoProp's cross-entropy term; back-prop's z_T is a convex mixture of the rows). PyTorch's
default head maps them to logits of s.d. about 0.2, which Adam at 1e-3 grows slowly, so the head rather
than the blocks can limit accuracy for the first hundreds of steps. The evidence for the default, with its
command, is in docs/choices.md.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from noprop_bench.methods.base import MethodConfig

HEAD_INITS = ("decoder", "default")


@dataclass
class HeadConfig(MethodConfig):
    head_init: str = "decoder"   # "decoder": init_decoder_head; "default": PyTorch's nn.Linear init
    head_gain: float = 5.0       # the decoder's mean logit margin at a clean embedding

    def validate(self) -> None:
        super().validate()
        if self.head_init not in HEAD_INITS:
            raise ValueError(f"config 'head_init' must be one of {', '.join(HEAD_INITS)}, got {self.head_init!r}")
        if isinstance(self.head_gain, bool) or not isinstance(self.head_gain, (int, float)) or not self.head_gain > 0:
            raise ValueError(f"config 'head_gain' must be a number > 0, got {self.head_gain!r}")


@torch.no_grad()
def init_decoder_head(head: nn.Linear, embeddings: torch.Tensor, gain: float) -> None:
    """head(z)_c = s (u_c . z - |u_c|^2 / 2) = -s/2 |z - u_c|^2 + (a term that is the same for every c).

    A nearest-embedding classifier (the rule the paper uses to read NoProp-FM's z_1), so
    argmax head(u_y) = y for any distinct rows, including more classes than dimensions (CIFAR-100
    dim20). s = 2 gain / (mean squared distance between two rows), so the mean logit margin at a clean
    embedding is `gain`; for one-hot rows this is gain * e_y shifted by a constant, i.e. gain * pinv(W_Embed)^T.
    """
    u = embeddings.detach().float()
    m = len(u)
    mean_sq = torch.cdist(u, u).pow(2).sum() / (m * (m - 1)) if m > 1 else torch.ones(())
    scale = 2 * gain / mean_sq.clamp_min(1e-12)
    head.weight.copy_(scale * u)
    head.bias.copy_(-0.5 * scale * u.pow(2).sum(1))


def make_head(config: MethodConfig, embed) -> nn.Linear:
    """The linear head on z in R^d for the embedding `embed` (a LabelEmbedding), initialised per config
    (PyTorch's default for methods whose config has no head_init: FM, the neural-ODE baselines)."""
    head = nn.Linear(embed.dim, len(embed.weight))
    if getattr(config, "head_init", "default") == "decoder":
        init_decoder_head(head, embed.weight, config.head_gain)
    return head
