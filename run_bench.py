#!/usr/bin/env python3
"""`python run_bench.py ...` from a checkout: the same as the installed `noprop-bench ...`."""
import sys

from noprop_bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
