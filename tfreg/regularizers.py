"""Keras-parity regularizers: L1, L2, L1L2 and Orthogonal."""

from tfreg import validation
from tfreg import base
from tfreg import penalties
from tfreg import serialization

__all__ = ["L1", "L1L2", "L2", "Orthogonal"]


def _strength(name, value, default):
    """A strength argument; None means the default, as in both Keras
    generations (`L1(l1=None)` is `L1(0.01)`)."""
    return validation.non_negative(name, default if value is None else value)


@serialization.register
class L1(base.Regularizer):
    """L1 penalty, as `keras.regularizers.L1`.

    Mathematical details:

        penalty(x) = l1 * sum_i |x_i|

    Args:
      l1: Non-negative finite float (or `tfreg.Strength`), the strength;
        None means 0.01.

    >>> import tensorflow as tf, tfreg
    >>> float(tfreg.L1(0.5)(tf.constant([1.0, -2.0])))
    1.5
    """

    _traced_once_per_shape = True

    def __init__(self, l1=0.01):
        self.l1 = _strength("l1", l1, 0.01)

    def penalty(self, x):
        return penalties.l1(x, self.l1)


@serialization.register
class L2(base.Regularizer):
    """L2 penalty, as `keras.regularizers.L2` (no 1/2 factor).

    Mathematical details:

        penalty(x) = l2 * sum_i x_i^2

    Args:
      l2: Non-negative finite float (or `tfreg.Strength`), the strength;
        None means 0.01.

    >>> import tensorflow as tf, tfreg
    >>> float(tfreg.L2(0.5)(tf.constant([1.0, -2.0])))
    2.5
    """

    _traced_once_per_shape = True

    def __init__(self, l2=0.01):
        self.l2 = _strength("l2", l2, 0.01)

    def penalty(self, x):
        return penalties.l2(x, self.l2)


@serialization.register(aliases=("l1l2",))
class L1L2(base.Regularizer):
    """L1 plus L2 penalty, as `keras.regularizers.L1L2`.

    Mathematical details:

        penalty(x) = l1 * sum_i |x_i| + l2 * sum_i x_i^2

    The defaults are 0 as in Keras; the string 'l1_l2' means L1L2(0.01, 0.01).

    Args:
      l1: Non-negative finite float (or `tfreg.Strength`), the L1 strength;
        None means 0.
      l2: Non-negative finite float (or `tfreg.Strength`), the L2 strength;
        None means 0.

    >>> import tensorflow as tf, tfreg
    >>> float(tfreg.L1L2(l1=0.5, l2=0.5)(tf.constant([1.0, -2.0])))
    4.0
    """

    _traced_once_per_shape = True

    def __init__(self, l1=0.0, l2=0.0):
        self.l1 = _strength("l1", l1, 0.0)
        self.l2 = _strength("l2", l2, 0.0)

    def penalty(self, x):
        return penalties.l1_l2(x, self.l1, self.l2)


@serialization.register(
    aliases=("orthogonal_regularizer", "OrthogonalRegularizer"))
class Orthogonal(base.Regularizer):
    """Soft orthogonality of rows or columns, as Keras' `OrthogonalRegularizer`.

    Mathematical details:

    With `u_1..u_n` the rows (mode="rows") or columns (mode="columns") of the
    kernel's matrix view, each scaled to unit L2 norm:

        penalty(W) = factor * sum_{i != j} |u_i . u_j| / (n * (n - 1))

    i.e. `factor` times the mean absolute cosine similarity between distinct
    rows (or columns); 0 when they are orthogonal, and 0 when n = 1.
    Dense kernels `(in, out)` are used as they are; convolution kernels
    `(*kernel_size, in_channels, out_channels)` are reshaped to
    `(prod(kernel_size) * in_channels, out_channels)`, so mode="columns"
    decorrelates filters. Unlike Keras 3 it works in float16, bfloat16 and
    float64 (computed in float32 for the half types).

    Args:
      factor: Non-negative finite float, the strength.
      mode: "rows" or "columns".

    >>> import tensorflow as tf, tfreg
    >>> float(tfreg.Orthogonal(1.0)(tf.constant([[1.0, 0.0], [1.0, 0.0]])))
    1.0
    """

    def __init__(self, factor=0.01, mode="rows"):
        self.factor = validation.non_negative("factor", factor)
        self.mode = validation.choice("mode", mode, ("rows", "columns"))

    def penalty(self, x):
        matrix = penalties.matrix_view(x, name="kernel")
        return self.factor * penalties.mean_abs_cosine(matrix, self.mode)


serialization.add_preset("l1_l2", L1L2, l1=0.01, l2=0.01)
