"""The `tfreg` command's application, built on the library.

`compare` runs `tfreg compare` with `data` (the user's data), `sweep` (the
candidates), `training` and `report`. The arguments are parsed before
TensorFlow loads, by the `_tfreg_cli` launcher beside this package; the
library never imports this package.
"""


class UsageError(Exception):
    """A problem with the user's input: reported as one line, exit code 2."""
