"""noprop-bench: NoProp (Li, Teh & Pascanu 2025) against back-propagation, under one clock.

Importing the package does no work; the command line is `noprop-bench` (noprop_bench.cli).
"""
from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("noprop-bench")
except _metadata.PackageNotFoundError:  # a checkout run without installing (python run_bench.py)
    __version__ = "0+checkout"
