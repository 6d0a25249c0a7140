"""Pickled data files are untrusted: only numpy arrays in plain containers may load."""
import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest

from noprop_bench.data import safe_pickle
from noprop_bench.data import DataError, load_data
from tests.conftest import py2_pickle, write_cifar


class RunsACommand:
    """Pickles as a call to os.system; built here, never loaded with plain pickle."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_calls_os_system_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    payload = py2_pickle({b"data": RunsACommand(marker)})
    assert b"system" in payload
    with pytest.raises(safe_pickle.UnsafePickleError, match=r"evil\.pkl: refused to load global '(posix|os)\.system'"):
        safe_pickle.load(payload, source="evil.pkl")
    assert not marker.exists()


def test_a_malicious_cifar_batch_is_refused_with_the_file_named(tmp_path):
    write_cifar(tmp_path, "cifar10")
    marker = tmp_path / "pwned"
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    batch.write_bytes(py2_pickle({b"data": RunsACommand(marker), b"labels": []}))
    with pytest.raises(DataError, match=re.escape(str(batch)) + ": refused to load global"):
        load_data("cifar10", "cpu", tmp_path)
    assert not marker.exists()


def test_the_cli_refuses_a_malicious_cifar_batch_in_one_line_exit_2(tmp_path, capsys):
    from noprop_bench import cli as run_bench
    write_cifar(tmp_path, "cifar10")
    marker = tmp_path / "pwned"
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    batch.write_bytes(py2_pickle({b"data": RunsACommand(marker), b"labels": []}))
    argv = ["--suite", "quick", "--datasets", "cifar10", "--methods", "noprop-dt", "--set", "timesteps=2",
            "--train-limit", "50", "--test-limit", "20", "--data-dir", str(tmp_path), "--no-progress",
            "--out", str(tmp_path / "out")]
    assert run_bench.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: {batch}: refused to load global")
    assert not any("Traceback" in line for line in err)
    assert not marker.exists()


@pytest.mark.parametrize("module", ["builtins", "subprocess", "numpy.lib.npyio", "torch"])
def test_other_globals_are_refused(module):
    payload = b"\x80\x02c" + module.encode() + b"\neval\nq\x00."
    with pytest.raises(safe_pickle.UnsafePickleError, match=f"'{re.escape(module)}.eval'"):
        safe_pickle.load(payload, source="x")


@pytest.mark.parametrize("spelling", ["numpy.core.multiarray", "numpy._core.multiarray"])
def test_both_numpy_spellings_of_reconstruct_load(spelling):
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    payload = py2_pickle(array).replace(b"cnumpy.core.multiarray\n", f"c{spelling}\n".encode())
    assert f"c{spelling}\n_reconstruct".encode() in payload
    np.testing.assert_array_equal(safe_pickle.load(payload, source="a"), array)


def test_python3_protocol_2_bytes_need_codecs_and_are_refused():
    """Python 3 writes bytes under protocol 2 through _codecs.encode: not in the real formats, refused."""
    with pytest.raises(safe_pickle.UnsafePickleError, match="'_codecs.encode'"):
        safe_pickle.load(pickle.dumps({b"data": b"x"}, protocol=2), source="py3.pkl")


def test_python2_style_cifar_dict_loads_with_bytes_keys(tmp_path):
    written = write_cifar(tmp_path, "cifar100", n_per_file=3)
    with open(tmp_path / "cifar-100-python" / "train", "rb") as f:
        batch = safe_pickle.load(f, source="train", encoding="bytes")
    np.testing.assert_array_equal(batch[b"data"], written["train"][b"data"])
    assert batch[b"fine_labels"] == written["train"][b"fine_labels"]
