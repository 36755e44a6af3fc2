"""Argument checks for tfreg constructors (public: use them in your own regularizers).

Each check raises a `TypeError` (wrong type) or `ValueError` (wrong value)
whose message `message` builds, in the words of Keras:
"Invalid value for argument `mode`. Expected one of {"rows", "columns"}.
Received: mode=diag".
"""

from tfreg import strength
from tfreg._checks import axis
from tfreg._checks import choice
from tfreg._checks import integer
from tfreg._checks import message
from tfreg._checks import non_negative_float
from tfreg._checks import open_unit
from tfreg._checks import positive
from tfreg._checks import real
from tfreg._checks import short_repr

__all__ = [
    "axis",
    "choice",
    "integer",
    "message",
    "non_negative",
    "non_negative_float",
    "open_unit",
    "positive",
    "real",
    "short_repr",
]


def non_negative(name, value):
    """A strength: a finite float >= 0, or a `tfreg.Strength` (or its JSON).

    A `Strength` is returned as it is, so that the regularizer reads its
    current value on every call.
    """
    value = strength.from_json(value, name)
    if isinstance(value, strength.Strength):
        return value
    return non_negative_float(name, value)
