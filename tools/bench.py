"""Runs the benchmarks of tools/bench/: `python tools/bench.py --quick`.

See tools/bench/__init__.py for the cases and how to add one.
"""

import os
import sys

# The clone's root, so that `tools.bench` and `tfreg` import from it.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools.bench import cli  # pylint: disable=g-import-not-at-top

if __name__ == "__main__":
    cli.main()
