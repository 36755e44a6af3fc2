"""Which constants a float dtype holds: the priors' range checks.

TensorFlow flushes subnormal numbers to zero on CPU (eager, graph and XLA,
float32 and float64 alike), so a constant a penalty applies to the weights
must be a normal number of the dtype it is computed in.
"""

import numpy as np
import tensorflow as tf


def normal_range(dtype):
    """The smallest and the largest positive normal number of a float dtype."""
    if dtype == tf.bfloat16:  # NumPy has no finfo for it; float32's exponents.
        return float(np.finfo(np.float32).tiny), float(dtype.max)
    info = np.finfo(dtype.as_numpy_dtype)
    return float(info.tiny), float(info.max)


def epsilon(dtype):
    """The spacing of `dtype`'s numbers at 1."""
    if dtype == tf.bfloat16:
        return 2.0**-7
    return float(np.finfo(dtype.as_numpy_dtype).eps)


def is_normal(value, dtype):
    """True when |value| is a normal number of `dtype`.

    TensorFlow flushes subnormal numbers to zero on CPU (eager, graph and
    XLA, float32 and float64 alike), so a smaller constant acts as 0: inf
    once it divides, NaN once inf meets a zero weight.
    """
    tiny, largest = normal_range(dtype)
    return tiny <= abs(value) <= largest


def normal_span(dtype):
    tiny, largest = normal_range(dtype)
    return f"within {dtype.name}'s normal range [{tiny:.3g}, {largest:.3g}]"

