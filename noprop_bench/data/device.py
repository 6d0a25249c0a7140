"""Data sets held on the run's device as uint8 tensors; shuffling and batching happen there.

No DataLoader and no per-batch host work: a split is loaded once, each epoch draws one device
permutation, and a batch is an index slice normalised on the device.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from noprop_bench import paths
from noprop_bench.data.augment import augment as augment_batch
from noprop_bench.data.sources import DataError, read_arrays
from noprop_bench.data.specs import DatasetSpec, get_spec

# A fixed seed for --train-limit/--test-limit subsets, so every training seed sees the same images.
SUBSET_SEED = 0


class Split:
    """One split on the device: `images` uint8 [N, C, H, W] and `labels` int64 [N]."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: torch.Tensor, std: torch.Tensor):
        self.images, self.labels = images, labels
        self._mean, self._std = mean, std

    def __len__(self) -> int:
        return len(self.labels)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        return (images.float().div_(255) - self._mean) / self._std

    def batches(self, batch_size: int, shuffle: bool, augment: str = "none", order: torch.Tensor | None = None,
                start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (normalised float images, labels); the last batch may be smaller (no data dropped).

        Shuffling and augmentation (data/augment.py, on the uint8 batch) draw from the device's global
        generator, so they follow the cell's seed. `order` (from `shuffled_order`) and `start` (a batch
        index) continue a pass part-way through, as a resumed checkpoint does.
        """
        if order is None and shuffle:
            order = self.shuffled_order()
        for first in range(start * batch_size, len(self), batch_size):
            idx = slice(first, first + batch_size) if order is None else order[first:first + batch_size]
            yield self.normalise(augment_batch(self.images[idx], augment)), self.labels[idx]

    def shuffled_order(self) -> torch.Tensor:
        """One pass's permutation of the split, on its device, from the global generator."""
        return torch.randperm(len(self), device=self.labels.device)

    def num_batches(self, batch_size: int) -> int:
        return -(-len(self) // batch_size)


@dataclass
class DeviceData:
    spec: DatasetSpec
    train: Split
    test: Split
    source: str  # where the files were read from, for the run metadata

    def nbytes(self) -> int:
        """Bytes the data set holds on its device (images and labels of both splits): part of a GPU run's
        CUDA peak, which rows carry as `data_bytes` so that readers can subtract it."""
        return sum(t.numel() * t.element_size() for s in (self.train, self.test) for t in (s.images, s.labels))


def _subset(images: torch.Tensor, labels: torch.Tensor, limit: int | None, name: str, split: str):
    if limit is None:
        return images, labels
    if limit <= 0:
        raise ValueError(f"--{split}-limit must be a positive number of images, got {limit}")
    if limit >= len(labels):
        return images, labels
    g = torch.Generator().manual_seed(SUBSET_SEED)
    keep = torch.randperm(len(labels), generator=g)[:limit].sort().values
    return images[keep], labels[keep]


def _hold_out(images: torch.Tensor, labels: torch.Tensor, n: int, name: str):
    """(rest, held out): a fixed seeded draw of n training images, disjoint from the rest."""
    if not 0 < n < len(labels):
        raise ValueError(f"--holdout must be between 1 and {len(labels) - 1} for {name} "
                         f"({len(labels)} training images), got {n}")
    g = torch.Generator().manual_seed(SUBSET_SEED + 1)  # not the train subset's draw
    order = torch.randperm(len(labels), generator=g)
    held, rest = order[:n].sort().values, order[n:].sort().values
    return (images[rest], labels[rest]), (images[held], labels[held])


def load_data(name: str, device: torch.device | str, data_dir: Path | str | None = None,
              train_limit: int | None = None, test_limit: int | None = None,
              holdout: int | None = None) -> DeviceData:
    """Load both splits of `name` onto `device`, optionally as fixed seeded subsets.

    With `holdout`, that many training images are set aside (a fixed draw) and serve as the
    evaluation split in place of the test set, so paper-silent choices are decided without looking at
    the test set; `train_limit` then draws from the remaining training images.
    """
    spec = get_spec(name)
    root = Path(data_dir) if data_dir is not None else paths.data_dir()
    arrays = read_arrays(spec, root)
    device = torch.device(device)
    (tr_x, tr_y), (te_x, te_y) = arrays["train"], arrays["test"]
    if tuple(tr_x.shape[1:]) != spec.image_shape:
        raise DataError(f"{name}: images have shape {tuple(tr_x.shape[1:])}, expected {spec.image_shape}")
    if holdout is not None:
        (tr_x, tr_y), (te_x, te_y) = _hold_out(tr_x, tr_y, holdout, name)
    else:
        te_x, te_y = _subset(te_x, te_y, test_limit, name, "test")
    tr_x, tr_y = _subset(tr_x, tr_y, train_limit, name, "train")
    tr_x, tr_y, te_x, te_y = (t.to(device) for t in (tr_x, tr_y, te_x, te_y))
    # Per-channel statistics of the training images actually used (the paper names no normalisation;
    # standardising the input is our choice, see docs/choices.md).
    pixels = tr_x.float().div_(255).transpose(0, 1).reshape(spec.image_shape[0], -1)
    mean = pixels.mean(dim=1).view(1, -1, 1, 1)
    std = pixels.std(dim=1).clamp_min(1e-6).view(1, -1, 1, 1)
    return DeviceData(spec, Split(tr_x, tr_y, mean, std), Split(te_x, te_y, mean, std),
                      source="scikit-learn" if name == "digits" else str(root))
