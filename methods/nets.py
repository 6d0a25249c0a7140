"""The networks of Figure 6 (reference section 7).

OUR CHOICES where the figure is silent: 3x3 convolutions with padding 1 and stride 1 (so the flatten
size is 128 * H/4 * W/4: 6272 on MNIST, 8192 on CIFAR), PyTorch's default initialisation of the blocks,
and, for image-sized embeddings, the noised label goes through the *same* conv module as x (shared
weights, one batched call) followed by its own FC(256) + BN.

The linear head p_hat_theta_out of NoProp-DT and back-prop starts, by default, as the decoder of the
embeddings (`head_init = "decoder"`, see `init_decoder_head`): the paper gives no initialisation, and
with PyTorch's default the back-prop baseline learns several times more slowly (README, table of choices).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from methods.base import MethodConfig
from methods.embeddings import LabelEmbedding, make_embedding

HEAD_INITS = ("decoder", "default")


@dataclass
class DiscreteConfig(MethodConfig):
    """What NoProp-DT and its back-prop baseline share: the "identical model structures" of the paper."""
    head_init: str = "decoder"   # "decoder": init_decoder_head; "default": PyTorch's nn.Linear init
    head_gain: float = 5.0       # decoder's mean logit margin at a clean embedding

    def validate(self) -> None:
        super().validate()
        if self.head_init not in HEAD_INITS:
            raise ValueError(f"config 'head_init' must be one of {', '.join(HEAD_INITS)}, got {self.head_init!r}")
        if not (isinstance(self.head_gain, (int, float)) and self.head_gain > 0):
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
    sq = torch.cdist(u, u).pow(2)
    m = len(u)
    mean_sq = sq.sum() / (m * (m - 1)) if m > 1 else torch.ones(())
    scale = 2 * gain / mean_sq.clamp_min(1e-12)
    head.weight.copy_(scale * u)
    head.bias.copy_(-0.5 * scale * u.pow(2).sum(1))


def conv_stack(in_channels: int) -> nn.Sequential:
    """conv32-ReLU-pool-drop, conv64-ReLU-drop (no pool), conv128-ReLU-pool-drop, flatten."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.Dropout(0.2),
        nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.2),
        nn.Flatten(),
    )


def conv_features(image_shape: tuple[int, int, int]) -> int:
    c, h, w = image_shape
    return 128 * (h // 4) * (w // 4)


class LabelMLP(nn.Module):
    """Noised-label path of Figure 6 left: h1 = FC-BN-ReLU(z); out = BN(FC(ReLU(BN(FC(h1))))) + h1."""

    def __init__(self, dim: int, width: int = 256):
        super().__init__()
        self.inp = nn.Sequential(nn.Linear(dim, width), nn.BatchNorm1d(width), nn.ReLU())
        self.res = nn.Sequential(nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU(),
                                 nn.Linear(width, width), nn.BatchNorm1d(width))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h1 = self.inp(z)
        return self.res(h1) + h1


class DTBlock(nn.Module):
    """One NoProp-DT block u_hat_t(z_{t-1}, x) of Figure 6 left; returns class logits [B, m]."""

    def __init__(self, image_shape: tuple[int, int, int], embed_dim: int, num_classes: int):
        super().__init__()
        self.image_shape = image_shape
        c, h, w = image_shape
        flat = conv_features(image_shape)
        self.conv = conv_stack(c)
        self.image_fc = nn.Sequential(nn.Linear(flat, 256), nn.BatchNorm1d(256))
        self.label_is_image = embed_dim == c * h * w
        if self.label_is_image:
            self.label_path = nn.Sequential(nn.Linear(flat, 256), nn.BatchNorm1d(256))
        else:
            self.label_path = LabelMLP(embed_dim)
        self.head = nn.Sequential(
            nn.Linear(512, 256), nn.BatchNorm1d(256), nn.ReLU(),
            nn.Linear(256, 128), nn.BatchNorm1d(128), nn.ReLU(),
            nn.Linear(128, num_classes),
        )

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.label_is_image:
            feats = self.conv(torch.cat([x, z.view(-1, *self.image_shape)]))
            fx, fz = feats.chunk(2)
            hx, hz = self.image_fc(fx), self.label_path(fz)
        else:
            hx, hz = self.image_fc(self.conv(x)), self.label_path(z)
        return self.head(torch.cat([hx, hz], dim=1))


def discrete_model(spec, config, train=None) -> tuple[LabelEmbedding, nn.ModuleList, nn.Linear]:
    """W_Embed, T Figure-6-left blocks and the linear head p_hat_theta_out (NoProp-DT and back-prop).

    `train` (a bench.data.Split) is needed only to initialise prototype embeddings.
    """
    m = spec.num_classes
    embed = make_embedding(config, spec, train)
    blocks = nn.ModuleList(DTBlock(spec.image_shape, embed.dim, m) for _ in range(config.timesteps))
    head = nn.Linear(embed.dim, m)
    if config.head_init == "decoder":
        init_decoder_head(head, embed.weight, config.head_gain)
    return embed, blocks, head
