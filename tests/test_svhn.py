"""SVHN read from `.mat` files in the real format (MATLAB v5, as torchvision downloads them), generated here:
images transposed to [N, 3, 32, 32], label 10 read as the digit 0, bad files named with what is wrong."""
import numpy as np
import pytest
import torch
from scipy.io import savemat

from conftest import run
from noprop_bench.data import DataError, DataNotFoundError, load_data
from noprop_bench.data.sources import read_arrays
from noprop_bench.data.specs import get_spec


def write_svhn(root, n_train=30, n_test=12, seed=0):
    rng = np.random.default_rng(seed)
    folder = root / "svhn"
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = rng.integers(1, 11, (n, 1)).astype(np.uint8)
        y[0, 0] = 10  # always one digit 0
        savemat(folder / f"{split}_32x32.mat", {"X": x, "y": y})
        written[split] = (x, y)
    return written


def test_svhn_mat_files_are_read_with_channels_first_and_label_10_as_zero(tmp_path):
    written = write_svhn(tmp_path)
    arrays = read_arrays(get_spec("svhn"), tmp_path)
    for split in ("train", "test"):
        images, labels = arrays[split]
        x, y = written[split]
        assert images.dtype == torch.uint8 and images.shape == (x.shape[3], 3, 32, 32)
        assert torch.equal(images[5, 1], torch.from_numpy(x[:, :, 1, 5]))  # image 5, green channel
        assert labels[0] == 0 and torch.equal(labels, torch.from_numpy(y.reshape(-1).astype(np.int64) % 10))


def test_svhn_trains_through_the_harness(tmp_path):
    write_svhn(tmp_path, n_train=64, n_test=16)
    out = tmp_path / "r"
    assert run(["--suite", "quick", "--datasets", "svhn", "--methods", "backprop", "--data-dir", tmp_path,
                "--no-progress", "--no-memory-probe", "--no-report", "--set", "timesteps=2", "--out", out,
                "--train-limit", "64", "--test-limit", "16"]) == 0
    data = load_data("svhn", "cpu", tmp_path)
    assert len(data.train) == 64 and data.spec.table3 == "cifar10"


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_bytes(p.read_bytes()[:200]), "not a readable SVHN .mat file"),
    (lambda p: savemat(p, {"X": np.zeros((32, 32, 3, 4), np.uint8), "y": np.ones((3, 1), np.uint8)}),
     "4 images but 3 labels"),
    (lambda p: savemat(p, {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[0], [1]], np.uint8)}),
     "labels must be 1..10"),
    (lambda p: savemat(p, {"X": np.zeros((28, 28, 2), np.uint8), "y": np.ones((2, 1), np.uint8)}),
     "X must be uint8 \\[32, 32, 3, N\\]"),
    (lambda p: savemat(p, {"images": np.zeros(3)}), "holds X \\(images\\) and y \\(labels\\)"),
])
def test_a_bad_svhn_file_is_named_with_what_is_wrong(tmp_path, damage, message):
    write_svhn(tmp_path)
    path = tmp_path / "svhn" / "test_32x32.mat"
    damage(path)
    with pytest.raises(DataError, match=message) as e:
        read_arrays(get_spec("svhn"), tmp_path)
    assert str(e.value).startswith(f"{path}: ")


def test_missing_svhn_lists_where_it_looked_and_how_to_get_it(tmp_path):
    with pytest.raises(DataNotFoundError) as e:
        read_arrays(get_spec("svhn"), tmp_path)
    text = str(e.value)
    assert str(tmp_path / "svhn") in text and "torchvision download (skipped: NOPROP_BENCH_OFFLINE is set)" in text
    assert "train_32x32.mat and test_32x32.mat" in text
