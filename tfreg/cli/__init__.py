"""The `tfreg` command line: an application built on the library.

`tfreg.cli.main` parses the arguments; `tfreg.cli.compare` runs
`tfreg compare` with `data` (reading the user's data), `sweep` (the
candidates), `training` and `report`. The library never imports this package.
"""


class UsageError(Exception):
    """A problem with the user's input: reported as one line, exit code 2."""
