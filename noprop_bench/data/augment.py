"""Training-batch augmentation behind the `augment` config key, off by default (the paper: "we do not apply any
data augmentation"). The public NoProp-CT implementation trains CIFAR with torchvision's
RandomCrop(32, padding=4) and RandomHorizontalFlip(); these are the same two transforms, drawn per image on
the device from the cell's random stream, on the uint8 batch before normalisation (so the padding is black,
as torchvision pads), with no per-batch host work.

  none       the batch as stored
  crop       each image zero-padded by PAD pixels per side and cropped back to its size at a random offset
  crop-flip  crop, then each image mirrored left-right with probability 1/2
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

AUGMENTS = ("none", "crop", "crop-flip")
PAD = 4


def check_augment(mode: str) -> str:
    if mode not in AUGMENTS:
        raise ValueError(f"config 'augment' must be one of {', '.join(AUGMENTS)}, got {mode!r}")
    return mode


def augment(images: torch.Tensor, mode: str) -> torch.Tensor:
    """`images` [B, C, H, W] (any dtype) augmented by `mode`; a new tensor unless mode is 'none'."""
    if mode == "none":
        return images
    b, _, h, w = images.shape
    padded = F.pad(images, (PAD, PAD, PAD, PAD))
    dy, dx = (torch.randint(0, 2 * PAD + 1, (2, b, 1), device=images.device)).unbind(0)
    rows = dy + torch.arange(h, device=images.device)      # [B, H]: the rows each image keeps
    cols = dx + torch.arange(w, device=images.device)      # [B, W]
    if mode == "crop-flip":
        flip = torch.rand(b, 1, device=images.device) < 0.5
        cols = torch.where(flip, cols.flip(1), cols)
    index = torch.arange(b, device=images.device)[:, None, None]
    # advanced indexing on dims 0, 2, 3 puts them first: [B, H, W, C] -> back to [B, C, H, W]
    return padded.permute(0, 2, 3, 1)[index, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()
