"""`python -m tfreg`: the `tfreg` command (see `_tfreg_cli`).

`python -m` imports the `tfreg` package, and with it TensorFlow, before this
runs; the `tfreg` console script answers `--help` without that.
"""

import sys

import _tfreg_cli

if __name__ == "__main__":
    sys.exit(_tfreg_cli.main())
