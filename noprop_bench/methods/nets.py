"""The networks of Figure 6 (reference section 7): the image path every model shares, and the NoProp-DT
block (left); the continuous-time model (right) is in continuous.py.

Two choices the figure leaves open, settled by the paper's v2 Table 5 (parameters per block, reference
section 14), whose 18 entries all come out within 0.005 M only with:
  conv_padding = 0   unpadded ("valid") 3x3 convolutions: 28 -> 26 -> pool 13 -> 11 -> 9 -> pool 4 on MNIST
                     (flatten 128*4*4 = 2048), 32 -> ... -> 5 on CIFAR (3200). Padding 1 (flatten 128*H/4*W/4)
                     makes every block about 2.2x larger; it stays reachable as --set conv_padding=1
  label_conv = "own" an image-sized noised label (prototype embeddings) goes through a conv stack of its
                     own, of the same shape as x's ("the same convolutional module", Section 2.3.2, read as the
                     same architecture); "shared" feeds it through x's stack (one set of filters for both)
PyTorch's default initialisation; the linear head p_hat_theta_out is made by methods/heads.py. The
`backbone` key swaps the conv stack for a torchvision ResNet (methods/backbones.py; not the paper's).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from noprop_bench.methods.backbones import BACKBONES, resnet_encoder
from noprop_bench.methods.base import MethodConfig
from noprop_bench.methods.embeddings import DIM20_ROWS, PROTOTYPE_INITS, LabelEmbedding, make_embedding
from noprop_bench.methods.heads import HeadConfig, make_head

LABEL_CONVS = ("own", "shared")
PADDINGS = (0, 1)


@dataclass
class ImageConfig(MethodConfig):
    """How images (and image-sized labels) enter every Figure-6 model."""
    conv_padding: int = 0       # 0: valid 3x3 convolutions (Table 5); 1: "same" padding
    label_conv: str = "own"     # image-sized labels (prototype): a conv stack of their "own", or x's ("shared")
    backbone: str = "paper"     # the image encoder: Figure 6's conv stack, or resnet18 / resnet50 / resnet152

    def validate(self) -> None:
        super().validate()
        if self.backbone not in BACKBONES:
            raise ValueError(f"config 'backbone' must be one of {', '.join(BACKBONES)}, got {self.backbone!r}")
        if self.conv_padding not in PADDINGS:
            raise ValueError(f"config 'conv_padding' must be 0 (valid) or 1 (same), got {self.conv_padding!r}")
        if self.label_conv not in LABEL_CONVS:
            raise ValueError(f"config 'label_conv' must be one of {', '.join(LABEL_CONVS)}, got {self.label_conv!r}")


@dataclass
class DiscreteConfig(HeadConfig, ImageConfig):
    """What NoProp-DT and its back-prop baseline share: the "identical model structures" of the paper."""
    dim20_rows: str = "paper"   # dim20 rows as drawn ("paper"), or rescaled to norm 1 ("unit"); embeddings.py
    prototype_init: str = "medoid"  # prototype rows: the paper's class medoids, or "orthogonal" / "random" (Figure 5)

    def validate(self) -> None:
        super().validate()
        if self.dim20_rows not in DIM20_ROWS:
            raise ValueError(f"config 'dim20_rows' must be one of {', '.join(DIM20_ROWS)}, got {self.dim20_rows!r}")
        if self.prototype_init not in PROTOTYPE_INITS:
            raise ValueError(f"config 'prototype_init' must be one of {', '.join(PROTOTYPE_INITS)}, "
                             f"got {self.prototype_init!r}")


def conv_stack(in_channels: int, padding: int = 0, extra: bool = False) -> nn.Sequential:
    """conv32-ReLU-pool-drop, conv64-ReLU-drop (no pool), conv128-ReLU-pool-drop, [conv256-ReLU-pool-drop:
    v2's Tiny ImageNet block], flatten."""
    layers = [nn.Conv2d(in_channels, 32, 3, padding=padding), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.2),
              nn.Conv2d(32, 64, 3, padding=padding), nn.ReLU(), nn.Dropout(0.2),
              nn.Conv2d(64, 128, 3, padding=padding), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.2)]
    if extra:
        layers += [nn.Conv2d(128, 256, 3, padding=padding), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.2)]
    return nn.Sequential(*layers, nn.Flatten())


def conv_features(image_shape: tuple[int, int, int], padding: int = 0, extra: bool = False) -> int:
    """The flattened size of conv_stack's output for one image."""
    c, h, w = image_shape
    shrink = 2 - 2 * padding  # each 3x3 convolution loses this many pixels per side pair
    sizes = []
    for side in (h, w):
        side = ((side - shrink) // 2 - shrink - shrink) // 2
        sizes.append((side - shrink) // 2 if extra else side)
    if min(sizes) < 1:
        raise ValueError(f"images of {h}x{w} are too small for conv_padding={padding} (3x3 convolutions and 2x2 "
                         f"pools); use --set conv_padding=1")
    return (256 if extra else 128) * sizes[0] * sizes[1]


def image_encoder(spec, config: ImageConfig) -> tuple[nn.Module, int]:
    """The image encoder the config asks for and its flattened output size."""
    if config.backbone != "paper":
        return resnet_encoder(config.backbone, spec.image_shape[0])
    extra = spec.extra_conv
    return conv_stack(spec.image_shape[0], config.conv_padding, extra), conv_features(spec.image_shape, config.conv_padding, extra)


class ImagePath(nn.Module):
    """The conv stack for x, and, for an image-sized label, either its own stack or x's: features(x) and
    label_features(z), each flattened."""

    def __init__(self, spec, label_is_image: bool, config: ImageConfig):
        super().__init__()
        self.image_shape = spec.image_shape
        self.conv, self.flat = image_encoder(spec, config)
        own = label_is_image and config.label_conv == "own"
        self.label_conv = image_encoder(spec, config)[0] if own else None
        self.label_is_image = label_is_image

    def both(self, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flattened conv features of x and of the image-sized label z (one batched call when shared)."""
        z = z.view(-1, *self.image_shape)
        if self.label_conv is not None:
            return self.conv(x), self.label_conv(z)
        fx, fz = self.conv(torch.cat([x, z])).chunk(2)
        return fx, fz

    def label(self, z: torch.Tensor) -> torch.Tensor:
        """Conv features of an image-sized label alone (when x's are already known)."""
        return (self.label_conv or self.conv)(z.view(-1, *self.image_shape))


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

    def __init__(self, spec, embed_dim: int, config: ImageConfig):
        super().__init__()
        num_classes = spec.num_classes
        self.path = ImagePath(spec, embed_dim == spec.image_dim, config)
        self.image_fc = nn.Sequential(nn.Linear(self.path.flat, 256), nn.BatchNorm1d(256))
        if self.path.label_is_image:
            self.label_path = nn.Sequential(nn.Linear(self.path.flat, 256), nn.BatchNorm1d(256))
        else:
            self.label_path = LabelMLP(embed_dim)
        self.head = nn.Sequential(
            nn.Linear(512, 256), nn.BatchNorm1d(256), nn.ReLU(),
            nn.Linear(256, 128), nn.BatchNorm1d(128), nn.ReLU(),
            nn.Linear(128, num_classes),
        )

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.path.label_is_image:
            fx, fz = self.path.both(x, z)
            hx, hz = self.image_fc(fx), self.label_path(fz)
        else:
            hx, hz = self.image_fc(self.path.conv(x)), self.label_path(z)
        return self.head(torch.cat([hx, hz], dim=1))


def discrete_model(spec, config, train=None) -> tuple[LabelEmbedding, nn.ModuleList, nn.Linear]:
    """W_Embed, T Figure-6-left blocks and the linear head p_hat_theta_out (NoProp-DT and back-prop).

    `train` (a data.device.Split) is needed only to initialise prototype embeddings.
    """
    embed = make_embedding(config, spec, train)
    blocks = nn.ModuleList(DTBlock(spec, embed.dim, config) for _ in range(config.timesteps))
    return embed, blocks, make_head(config, embed)
