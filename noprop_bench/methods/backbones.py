"""Image encoders behind the `backbone` config key: the paper's Figure-6 conv stack (nets.conv_stack), or a
torchvision ResNet as the public NoProp-CT implementation uses for CIFAR (its reported 83.9 % on CIFAR-10
is ResNet-18 with crop and flip augmentation). Never the default and never a paper row: a cell with a
ResNet departs from the paper's protocol (run/plan.departures), and suites marked `paper = true` refuse it.

A ResNet here is torchvision's, randomly initialised (weights=None: nothing is downloaded), with two
changes: its first convolution takes the data set's channels (a grey image is not repeated to three: a
3-channel convolution of a repeated image is a 1-channel one with summed filters, the same function
class), and its classifier `fc` is removed, so it returns the pooled features (512 for ResNet-18, 2048
for ResNet-50 and -152). The stem (7x7 stride-2 convolution and max-pool) stays as torchvision builds it,
as in the public implementation; on 28x28 images the last stage then sees 1x1 maps.
"""
from __future__ import annotations

from torch import nn

BACKBONES = ("paper", "resnet18", "resnet50", "resnet152")


def resnet_encoder(name: str, in_channels: int) -> tuple[nn.Module, int]:
    """torchvision's ResNet `name` without its classifier, taking `in_channels`: (module, feature size)."""
    from torchvision import models  # imported here: only a ResNet cell pays torchvision's import

    net = getattr(models, name)(weights=None)
    stem = net.conv1
    net.conv1 = nn.Conv2d(in_channels, stem.out_channels, stem.kernel_size, stem.stride, stem.padding, bias=False)
    features = net.fc.in_features
    net.fc = nn.Identity()
    return net, features
