"""`python -m tfreg`: the `tfreg` command line (see `tfreg.cli`)."""

import sys

from tfreg.cli import main

if __name__ == "__main__":
    sys.exit(main.main())
