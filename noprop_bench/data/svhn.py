"""SVHN (Street View House Numbers, cropped digits: 10 classes, 32x32 RGB; not in the paper) from the
`.mat` files torchvision's `SVHN` reads and downloads, kept in `svhn/` under the data directory:

  svhn/train_32x32.mat   73,257 images     X: uint8 [32, 32, 3, N], y: [N, 1] with labels 1..10
  svhn/test_32x32.mat    26,032 images     (label 10 is the digit 0)

The extra split (531,131 easier images) is not used. MATLAB v5 files are read with scipy (no pickle).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

FOLDER = "svhn"
FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}


class SVHNError(ValueError):
    pass


def present(root: Path) -> bool:
    return all((Path(root) / FOLDER / f).is_file() for f in FILES.values())


def read_split(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images [N, 3, 32, 32] and int64 labels [N] in 0..9 from one SVHN .mat file."""
    from scipy.io import loadmat
    try:
        mat = loadmat(path, variable_names=["X", "y"])
    except (ValueError, TypeError, OSError, NotImplementedError) as e:
        raise SVHNError(f"{path}: not a readable SVHN .mat file ({type(e).__name__}: {e})") from None
    if "X" not in mat or "y" not in mat:
        raise SVHNError(f"{path}: an SVHN .mat file holds X (images) and y (labels); found {sorted(k for k in mat if not k.startswith('__'))}")
    x, y = mat["X"], np.asarray(mat["y"]).reshape(-1)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise SVHNError(f"{path}: X must be uint8 [32, 32, 3, N], got {x.dtype} {list(x.shape)}")
    if x.shape[3] != len(y):
        raise SVHNError(f"{path}: {x.shape[3]} images but {len(y)} labels (truncated or corrupt)")
    if len(y) and (y.min() < 1 or y.max() > 10):
        raise SVHNError(f"{path}: labels must be 1..10 (10 is the digit 0), got {int(y.min())}..{int(y.max())}")
    images = torch.from_numpy(np.ascontiguousarray(x.transpose(3, 2, 0, 1)))
    return images, torch.from_numpy((y.astype(np.int64) % 10))


def read(root: Path) -> dict:
    base = Path(root) / FOLDER
    return {split: read_split(base / name) for split, name in FILES.items()}


def download(root: Path, stage: Path) -> None:
    """torchvision's download of both splits into `stage`, then into root/svhn (a complete file or none)."""
    import os
    import torchvision.datasets as tvd
    for split in FILES:
        tvd.SVHN(str(stage), split=split, download=True)
    (Path(root) / FOLDER).mkdir(parents=True, exist_ok=True)
    for name in FILES.values():
        os.replace(stage / name, Path(root) / FOLDER / name)
