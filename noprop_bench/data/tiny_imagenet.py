"""Tiny ImageNet (200 classes, 64x64 RGB; the paper's v2 table) from the standard `tiny-imagenet-200`
folder (what tiny-imagenet-200.zip unpacks to):

  wnids.txt                                  200 WordNet ids, one a line: the class order
  train/<wnid>/images/<wnid>_<k>.JPEG        500 training images per class
  val/images/val_<k>.JPEG                    10,000 images, labelled by
  val/val_annotations.txt                    file <TAB> wnid <TAB> four box numbers
  test/images/                               unlabelled: not used

The validation split is the usual test set. Decoding 110,000 JPEGs takes a minute or two, so the decoded
arrays are cached beside them (`noprop-bench-cache.npz`, plain arrays, read without pickle), keyed by
the list of files and their sizes: a changed folder is decoded again.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

FOLDER = "tiny-imagenet-200"
CACHE = "noprop-bench-cache.npz"
SIZE = 64


class TinyImageNetError(ValueError):
    pass


def present(root: Path) -> bool:
    base = Path(root) / FOLDER
    return (base / "wnids.txt").is_file() and (base / "train").is_dir() and (base / "val" / "val_annotations.txt").is_file()


def _files(base: Path, wnids: list[str]) -> tuple[list[tuple[Path, int]], list[tuple[Path, int]]]:
    index = {w: i for i, w in enumerate(wnids)}
    train = [(p, index[w]) for w in wnids for p in sorted((base / "train" / w / "images").glob("*.JPEG"))]
    val = []
    annotations = base / "val" / "val_annotations.txt"
    for n, line in enumerate(annotations.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in index:
            raise TinyImageNetError(f"{annotations}:{n}: expected 'file<TAB>wnid<TAB>boxes' with a wnid of wnids.txt, "
                                    f"got {line[:80]!r}")
        val.append((base / "val" / "images" / fields[0], index[fields[1]]))
    return train, val


def _decode(files: list[tuple[Path, int]]) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image, UnidentifiedImageError
    images = np.empty((len(files), 3, SIZE, SIZE), dtype=np.uint8)
    for i, (path, _) in enumerate(files):
        try:
            with Image.open(path) as im:
                pixels = np.asarray(im.convert("RGB"))  # a few Tiny ImageNet images are greyscale
        except (OSError, UnidentifiedImageError) as e:
            raise TinyImageNetError(f"{path}: not a readable JPEG ({e})") from None
        if pixels.shape != (SIZE, SIZE, 3):
            raise TinyImageNetError(f"{path}: {pixels.shape[1]}x{pixels.shape[0]} pixels, expected {SIZE}x{SIZE}")
        images[i] = pixels.transpose(2, 0, 1)
    return images, np.array([label for _, label in files], dtype=np.int64)


def read(root: Path, classes: int = 200) -> dict:
    """{"train": (uint8 [N, 3, 64, 64], int64 [N]), "test": (the validation split)}."""
    base = Path(root) / FOLDER
    wnids = (base / "wnids.txt").read_text().split()
    if len(wnids) != classes or len(set(wnids)) != classes:
        raise TinyImageNetError(f"{base / 'wnids.txt'}: {len(set(wnids))} distinct ids, expected {classes}")
    train, val = _files(base, wnids)
    if not train or not val:
        raise TinyImageNetError(f"{base}: {len(train)} training and {len(val)} validation images found")
    key = hashlib.sha256("".join(f"{p.relative_to(base)}:{os.path.getsize(p)}:{y}\n"
                                 for p, y in (*train, *val)).encode()).hexdigest()
    cache = base / CACHE
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            if str(z["key"]) == key:
                return {"train": (torch.from_numpy(z["train_x"]), torch.from_numpy(z["train_y"])),
                        "test": (torch.from_numpy(z["test_x"]), torch.from_numpy(z["test_y"]))}
    (tx, ty), (vx, vy) = _decode(train), _decode(val)
    from noprop_bench.files import atomic_write_bytes
    import io
    buffer = io.BytesIO()
    np.savez(buffer, key=np.array(key), train_x=tx, train_y=ty, test_x=vx, test_y=vy)
    try:
        atomic_write_bytes(cache, buffer.getvalue())
    except OSError:
        pass  # a read-only data folder: decode again next time
    return {"train": (torch.from_numpy(tx), torch.from_numpy(ty)), "test": (torch.from_numpy(vx), torch.from_numpy(vy))}
