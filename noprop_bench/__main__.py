import sys

from noprop_bench.cli import main

sys.exit(main())
