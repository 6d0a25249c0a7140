"""Label embeddings W_Embed (reference section 6): row y is u_y.

  one-hot    fixed identity, d = number of classes
  dim20      learned, d = 20, orthogonal rows when classes <= 20, else N(0, 1) ("randomly otherwise").
             OUR CHOICE, config 'dim20_rows' (NoProp-DT, back-prop): "paper" keeps the draw; "unit" rescales
             each row to norm 1. Orthogonal rows already have norm 1, but N(0, 1) rows in R^20 have norm
             about 4.5 (CIFAR-100), which scales every SNR-weighted term of Eq. 8 by about 20
  prototype  learned, d = image size, row c initialised with the class-c training image whose median
             distance to the other class-c images is smallest (computed on normalised images).
             Figure 5 compares other initialisations at this size, config 'prototype_init' (NoProp-DT,
             back-prop): "medoid" (the paper's prototypes, default), "orthogonal" (orthonormal rows, as
             dim20's) or "random" (N(0, 1), as dim20's "randomly otherwise")
"""
from __future__ import annotations

import torch
from torch import nn

from noprop_bench.methods.catalog import EMBEDDINGS

DIM20_ROWS = ("paper", "unit")
PROTOTYPE_INITS = ("medoid", "orthogonal", "random")


def check_embedding(kind: str) -> str:
    if kind not in EMBEDDINGS:
        raise ValueError(f"unknown embedding '{kind}'; valid embeddings: {', '.join(EMBEDDINGS)}")
    return kind


def class_medoids(images: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per class, the image with the smallest median Euclidean distance to the class's other images.

    `images` are float [N, ...]; returns [num_classes, prod(...)]. Cost: one N_c x N_c distance matrix
    per class (6000^2 floats = 144 MB for an MNIST class).
    """
    flat = images.flatten(1)
    rows = []
    for c in range(num_classes):
        xc = flat[labels == c]
        if len(xc) == 0:
            raise ValueError(f"class {c} has no training images, so it has no prototype; "
                             f"use more training data (raise --train-limit)")
        dist = torch.cdist(xc, xc)
        dist.fill_diagonal_(float("nan"))  # "distance to all *other* images"
        median = dist.nanmedian(dim=1).values if len(xc) > 1 else torch.zeros(1, device=xc.device)
        rows.append(xc[median.argmin()])
    return torch.stack(rows)


class LabelEmbedding(nn.Module):
    def __init__(self, kind: str, num_classes: int, image_dim: int,
                 prototype_images: torch.Tensor | None = None, prototype_labels: torch.Tensor | None = None,
                 dim20_rows: str = "paper", prototype_init: str = "medoid"):
        super().__init__()
        self.kind = check_embedding(kind)
        self.image_dim = image_dim
        if kind == "one-hot":
            self.register_buffer("weight", torch.eye(num_classes))
        elif kind == "dim20":
            w = torch.empty(num_classes, 20)
            nn.init.orthogonal_(w) if num_classes <= 20 else nn.init.normal_(w)
            if dim20_rows == "unit":
                w = w / w.norm(dim=1, keepdim=True)
            self.weight = nn.Parameter(w)
        elif prototype_init == "medoid":
            if prototype_images is None:
                raise ValueError("the prototype embedding is initialised from training images; none were given")
            self.weight = nn.Parameter(class_medoids(prototype_images, prototype_labels, num_classes))
        else:
            w = torch.empty(num_classes, image_dim)
            nn.init.orthogonal_(w) if prototype_init == "orthogonal" else nn.init.normal_(w)
            self.weight = nn.Parameter(w)

    @property
    def dim(self) -> int:
        return self.weight.shape[1]

    @property
    def is_image(self) -> bool:
        """True when u_y has the image's size, so the network treats noised labels as images."""
        return self.dim == self.image_dim

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.weight[y]


def make_embedding(config, spec, train=None) -> LabelEmbedding:
    """W_Embed for a method config; `train` (a noprop_bench.data.Split) only feeds prototype initialisation."""
    init = getattr(config, "prototype_init", "medoid")
    medoids = config.embedding == "prototype" and init == "medoid"
    protos = (train.normalise(train.images), train.labels) if medoids else (None, None)
    return LabelEmbedding(config.embedding, spec.num_classes, spec.image_dim, *protos,
                          dim20_rows=getattr(config, "dim20_rows", "paper"), prototype_init=init)
