"""Argument checks for tfreg constructors (public: use them in your own regularizers).

Each check raises a `TypeError` or `ValueError` whose message names the
argument and the value received, in the style of Keras:
"Invalid value for argument `mode`. Expected one of ('rows', 'columns').
Received: mode='diag'".
"""

import math
import numbers

from tfreg import strength as strength_lib


def _describe(name, value, expected):
    return (f"Invalid value for argument `{name}`. Expected {expected}. "
                    f"Received: {name}={value!r}")


def real(name, value, expected="a finite float"):
    """Returns `value` as a Python float; rejects bools, non-numbers, NaN, inf."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(_describe(name, value, expected))
    number = strength_lib.finite_float(value)
    if number is None or not math.isfinite(number):
        raise ValueError(_describe(name, value, expected))
    return number


def non_negative(name, value):
    """A strength: a finite float >= 0, or a `tfreg.Strength` (or its JSON).

    A `Strength` is returned as it is, so that the regularizer reads its
    current value on every call.
    """
    value = strength_lib.from_json(value)
    if isinstance(value, strength_lib.Strength):
        return value
    return strength_lib.non_negative_float(name, value)


def positive(name, value):
    """A scale: a finite float > 0."""
    expected = "a finite float > 0"
    number = real(name, value, expected)
    if number <= 0:
        raise ValueError(_describe(name, value, expected))
    return number


def open_unit(name, value):
    """A probability strictly between 0 and 1."""
    expected = "a float in the open interval (0, 1)"
    number = real(name, value, expected)
    if not 0 < number < 1:
        raise ValueError(_describe(name, value, expected))
    return number


def integer(name, value, minimum, maximum):
    """An int (not a bool) in [minimum, maximum]; the error names the bound."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(_describe(name, value, f"an int >= {minimum}"))
    if value < minimum:
        raise ValueError(_describe(name, value, f"an int >= {minimum}"))
    if value > maximum:
        raise ValueError(_describe(name, value, f"an int <= {maximum}"))
    return int(value)


def axis(name, value):
    """An axis: an int (not a bool); negative values count from the end."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(_describe(name, value, "an int"))
    return int(value)


def choice(name, value, options):
    """One of `options` (strings)."""
    if not isinstance(value, str) or value not in options:
        raise ValueError(_describe(name, value, f"one of {tuple(options)}"))
    return value
