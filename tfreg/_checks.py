"""Argument checks on plain Python values, and the text of their errors.

The leaf of tfreg's imports (no TensorFlow, no other tfreg module), so that
`strength` can use the checks that `validation` publishes; `validation`
re-exports them and adds `non_negative`, which also takes a `Strength`.
"""

import math
import numbers
import reprlib

import numpy as np


# Strengths are held in float32 and every penalty but float64's is computed
# in it, so a strength must be finite there.
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_STRENGTH_MAX = _FLOAT32_MAX / 2

# A value read from a file (a config) can nest, repeat or grow without bound;
# past these limits an error message shows it abbreviated.
_SHOWN_DEPTH = 8
_SHOWN_ITEMS = 1000
_SHOWN_CHARACTERS = 1000
# An int's repr has one digit per 3.3 bits; Python refuses more than 4300.
_SHOWN_INT_BITS = 3000


def message(name, value, expected, shown=None, note=""):
    """The text of every tfreg argument error.

        Invalid value for argument `name`. Expected <expected>.
        Received: name=<shown><note>

    Args:
      name: The argument's name.
      value: The value received.
      expected: What the argument must be, e.g. "a finite float > 0".
      shown: The value as text, when `repr(value)` would not do (an
        abbreviated array); default `short_repr(value)`.
      note: Text after the received value, e.g. ", which overflows float32".

    >>> from tfreg import validation
    >>> validation.message("scale", -1.0, "a finite float > 0")
    'Invalid value for argument `scale`. Expected a finite float > 0. Received: scale=-1.0'
    """
    shown = short_repr(value) if shown is None else shown
    return (f"Invalid value for argument `{name}`. Expected {expected}. "
            f"Received: {name}={shown}{note}")


class _Abbreviated(reprlib.Repr):
    """reprlib's abbreviations, with limits for a message of a few lines."""

    def __init__(self):
        super().__init__()
        self.maxlevel = _SHOWN_DEPTH
        self.maxdict = self.maxlist = self.maxtuple = self.maxset = 8
        self.maxstring = self.maxlong = self.maxother = 80

    def repr_int(self, x, level):
        if x.bit_length() > _SHOWN_INT_BITS:
            return f"<int of {x.bit_length()} bits>"
        return super().repr_int(x, level)


def _is_small(value):
    """Whether `repr(value)` is short and safe: walked without recursion."""
    pending = [(value, 1)]
    items = 0
    while pending:
        item, depth = pending.pop()
        items += 1
        if isinstance(item, (str, bytes)):
            if len(item) > _SHOWN_CHARACTERS:
                return False
        elif isinstance(item, int):
            if item.bit_length() > _SHOWN_INT_BITS:
                return False
        elif isinstance(item, (dict, list, tuple, set, frozenset)):
            items += len(item)
            if depth > _SHOWN_DEPTH or items > _SHOWN_ITEMS:
                return False
            children = (list(item.keys()) + list(item.values())
                        if isinstance(item, dict) else list(item))
            pending.extend((child, depth + 1) for child in children)
    return True


def short_repr(value):
    """`repr(value)` for an error message, abbreviated when it is large.

    A value that nests containers deeper than 8 levels, holds more than 1000
    items, a string of more than 1000 characters or an int of more than 3000
    bits is shown abbreviated (by `reprlib`), so that a message about a
    config read from a file stays short and building it never recurses
    without bound.

    >>> from tfreg import validation
    >>> validation.short_repr([1.5, "a"])
    "[1.5, 'a']"
    >>> nested = []
    >>> for _ in range(5000):
    ...     nested = [nested]
    >>> validation.short_repr(nested)
    '[[[[[[[[[...]]]]]]]]]'
    """
    return repr(value) if _is_small(value) else _Abbreviated().repr(value)


def _finite_float(value):
    """`value` as a float, or None when no float holds it (10**400)."""
    try:
        return float(value)
    except OverflowError:
        return None


def _is_number(value):
    return not isinstance(value, bool) and isinstance(value, numbers.Real)


def real(name, value, expected="a finite float"):
    """Returns `value` as a Python float; rejects bools, non-numbers, NaN, inf."""
    if not _is_number(value):
        raise TypeError(message(name, value, expected))
    number = _finite_float(value)
    if number is None or not math.isfinite(number):
        raise ValueError(message(name, value, expected))
    return number


def non_negative_float(name, value):
    """A plain strength: a float >= 0 whose double is finite in float32.

    Gradients take 2 x strength (d/dx s x^2 = 2 s x), which compilers fold
    into one constant: past half of float32's maximum it would be inf, and
    inf times a zero weight NaN.
    """
    expected = "a finite float >= 0"
    if not _is_number(value):
        raise TypeError(message(name, value, expected))
    number = _finite_float(value)  # None beyond float64's range
    if number is not None and not 0 <= number < math.inf:
        raise ValueError(message(name, value, expected))
    if number is None or number > _STRENGTH_MAX:
        raise ValueError(message(
            name, value, expected,
            note=f", which is more than half of float32's maximum (at most "
                 f"{_STRENGTH_MAX:.8g}): twice a strength must be finite in "
                 "float32, the dtype penalties are computed in."))
    return number


def positive(name, value):
    """A scale: a finite float > 0."""
    expected = "a finite float > 0"
    number = real(name, value, expected)
    if number <= 0:
        raise ValueError(message(name, value, expected))
    return number


def open_unit(name, value):
    """A probability strictly between 0 and 1."""
    expected = "a float in the open interval (0, 1)"
    number = real(name, value, expected)
    if not 0 < number < 1:
        raise ValueError(message(name, value, expected))
    return number


def integer(name, value, minimum, maximum):
    """An int (not a bool) in [minimum, maximum]; the error names the bound."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(message(name, value, f"an int >= {minimum}"))
    if value < minimum:
        raise ValueError(message(name, value, f"an int >= {minimum}"))
    if value > maximum:
        raise ValueError(message(name, value, f"an int <= {maximum}"))
    return int(value)


def axis(name, value):
    """An axis: an int (not a bool); negative values count from the end."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(message(name, value, "an int"))
    return int(value)


def known_keys(config, expected, where):
    """Raises ValueError naming the keys of `config` (a dict) outside
    `expected` (shown as given), found in `where` ("a ... config")."""
    unknown = sorted(set(config) - set(expected), key=str)
    if unknown:
        raise ValueError(
            f"Unknown key(s) {short_repr(unknown)} in {where}. Expected a "
            f"subset of {expected}.")


def choice(name, value, options):
    """One of `options` (strings), with Keras' message word for word.

    >>> from tfreg import validation
    >>> validation.choice("mode", "diag", ("rows", "columns"))
    Traceback (most recent call last):
    ...
    ValueError: Invalid value for argument `mode`. Expected one of {"rows", "columns"}. Received: mode=diag
    """
    if not isinstance(value, str) or value not in options:
        listed = ", ".join(f'"{option}"' for option in options)
        # Keras shows a string as it is (mode=diag), anything else by repr.
        shown = value if isinstance(value, str) else repr(value)
        raise ValueError(message(name, value, f"one of {{{listed}}}", shown))
    return value
