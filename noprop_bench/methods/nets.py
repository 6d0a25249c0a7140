"""The networks of Figure 6 (reference section 7).

OUR CHOICES where the figure is silent: 3x3 convolutions with padding 1 and stride 1 (so the flatten
size is 128 * H/4 * W/4: 6272 on MNIST, 8192 on CIFAR), PyTorch's default initialisation of the blocks,
and, for image-sized embeddings, the noised label goes through the *same* conv module as x (shared
weights, one batched call; `label_conv = "own"` gives it a conv stack of its own) followed by its own
FC(256) + BN.

The linear head p_hat_theta_out is made by methods/heads.py (`head_init`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from noprop_bench.methods.embeddings import DIM20_ROWS, LabelEmbedding, make_embedding
from noprop_bench.methods.heads import HeadConfig, make_head

LABEL_CONVS = ("shared", "own")


@dataclass
class DiscreteConfig(HeadConfig):
    """What NoProp-DT and its back-prop baseline share: the "identical model structures" of the paper."""
    label_conv: str = "shared"  # image-sized labels (prototype): "shared" conv with x, or the block's "own"
    dim20_rows: str = "paper"   # dim20 rows as drawn ("paper"), or rescaled to norm 1 ("unit"); embeddings.py

    def validate(self) -> None:
        super().validate()
        if self.label_conv not in LABEL_CONVS:
            raise ValueError(f"config 'label_conv' must be one of {', '.join(LABEL_CONVS)}, got {self.label_conv!r}")
        if self.dim20_rows not in DIM20_ROWS:
            raise ValueError(f"config 'dim20_rows' must be one of {', '.join(DIM20_ROWS)}, got {self.dim20_rows!r}")


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

    def __init__(self, image_shape: tuple[int, int, int], embed_dim: int, num_classes: int,
                 label_conv: str = "shared"):
        super().__init__()
        self.image_shape = image_shape
        c, h, w = image_shape
        flat = conv_features(image_shape)
        self.conv = conv_stack(c)
        # "own": a second conv stack for an image-sized label, so the noised label image does not
        # share (and pull on) the filters that read x
        self.label_conv = conv_stack(c) if label_conv == "own" and embed_dim == c * h * w else None
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
        if self.label_conv is not None:
            fx, fz = self.conv(x), self.label_conv(z.view(-1, *self.image_shape))
            hx, hz = self.image_fc(fx), self.label_path(fz)
        elif self.label_is_image:
            feats = self.conv(torch.cat([x, z.view(-1, *self.image_shape)]))
            fx, fz = feats.chunk(2)
            hx, hz = self.image_fc(fx), self.label_path(fz)
        else:
            hx, hz = self.image_fc(self.conv(x)), self.label_path(z)
        return self.head(torch.cat([hx, hz], dim=1))


def discrete_model(spec, config, train=None) -> tuple[LabelEmbedding, nn.ModuleList, nn.Linear]:
    """W_Embed, T Figure-6-left blocks and the linear head p_hat_theta_out (NoProp-DT and back-prop).

    `train` (a noprop_bench.data.Split) is needed only to initialise prototype embeddings.
    """
    m = spec.num_classes
    embed = make_embedding(config, spec, train)
    blocks = nn.ModuleList(DTBlock(spec.image_shape, embed.dim, m, config.label_conv) for _ in range(config.timesteps))
    return embed, blocks, make_head(config, embed)
