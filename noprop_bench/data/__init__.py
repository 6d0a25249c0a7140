"""Data: the registry of data sets (specs.py, no torch), their readers and fetchers (sources.py), and
the splits held on the run's device (device.py). The names below are importable from here; the torch
parts load on first use, so listing data sets stays fast."""
from noprop_bench.data.specs import DATASETS, PAPER_DATASETS, DatasetSpec, get_spec  # noqa: F401

_LAZY = {"Split": "device", "DeviceData": "device", "load_data": "device", "SUBSET_SEED": "device",
         "DataError": "sources", "DataNotFoundError": "sources", "read_arrays": "sources"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f"noprop_bench.data.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'noprop_bench.data' has no attribute {name!r}")
