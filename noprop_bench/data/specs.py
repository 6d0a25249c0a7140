"""The data set registry: one spec per data set, with what a method needs to build itself, the reader
of its files, its accuracy targets and its place in reports. Importing this module does not import torch.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetSpec:
    """What a method needs to know about a data set to build itself, and what the harness needs to read
    and report it."""
    name: str
    num_classes: int
    image_shape: tuple[int, int, int]  # C, H, W as the networks see it
    n_train: int  # full split sizes, for cost estimates before any file is read
    n_test: int
    reader: str   # the format family in data/sources.py: idx, cifar, tiny-imagenet, svhn, digits
    targets: tuple[float, ...] = ()  # accuracy ladder (%) for time to accuracy: from "learns" to near the paper
    paper: bool = False              # in the paper's accuracy tables (v1 Table 1, or v2's Tiny ImageNet table)
    table3: str = "mnist"            # whose Table 3 row (epochs, optimiser, ...) its cells take
    extra_conv: bool = False         # v2's Tiny ImageNet block: one more conv (256 channels, pool) in the image path

    @property
    def image_dim(self) -> int:
        c, h, w = self.image_shape
        return c * h * w


# In display order (reports sort data sets as listed here).
DATASETS = {spec.name: spec for spec in (
    DatasetSpec("mnist", 10, (1, 28, 28), 60000, 10000, "idx", (90.0, 95.0, 98.0, 99.0), paper=True),
    DatasetSpec("cifar10", 10, (3, 32, 32), 50000, 10000, "cifar", (50.0, 60.0, 70.0, 80.0), paper=True,
                table3="cifar10"),
    DatasetSpec("cifar100", 100, (3, 32, 32), 50000, 10000, "cifar", (20.0, 30.0, 40.0, 50.0), paper=True,
                table3="cifar100"),
    # v2's table gives no hyperparameters for Tiny ImageNet: it takes CIFAR-100's row (our choice)
    DatasetSpec("tiny-imagenet", 200, (3, 64, 64), 100000, 10000, "tiny-imagenet", (10.0, 20.0, 25.0, 30.0),
                paper=True, table3="cifar100", extra_conv=True),
    DatasetSpec("fashion-mnist", 10, (1, 28, 28), 60000, 10000, "idx", (80.0, 85.0, 90.0)),
    # not in the paper; colour 32x32 digits like CIFAR's images, so it takes CIFAR-10's Table 3 row (our choice)
    DatasetSpec("svhn", 10, (3, 32, 32), 73257, 26032, "svhn", (80.0, 85.0, 90.0, 95.0), table3="cifar10"),
    # scikit-learn's 8x8 digits, shown to the networks at 16x16 (each pixel repeated 2x2): the paper's
    # unpadded 3x3 convolutions need at least 14x14
    DatasetSpec("digits", 10, (1, 16, 16), 1437, 360, "digits", (80.0, 90.0, 95.0)),
)}
PAPER_DATASETS = tuple(name for name, spec in DATASETS.items() if spec.paper)


def get_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise ValueError(f"unknown data set '{name}'; valid data sets: {', '.join(DATASETS)}")
    return DATASETS[name]
