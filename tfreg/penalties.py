"""Penalty math as pure tensor functions, apart from any Keras plumbing.

Every function takes a floating tensor and returns a scalar of the same dtype.
They hold no Python branching on tensor values, use static shapes only and
compile with XLA. The `Regularizer` classes wrap them with validation, dtype
handling and configs.
"""

import math

import numpy as np
import tensorflow as tf
# No public API tells whether a gradient tape is recording.
from tensorflow.python.eager import record  # pylint: disable=g-direct-tensorflow-import

from tfreg import validation

__all__ = [
    "differentiated_as",
    "l1",
    "l1_l2",
    "l2",
    "matrix_view",
    "mean_abs_cosine",
    "operand",
    "total",
    "under_xla",
]

def differentiated_as(x, value, forward):
    """value(x); under a tape, forward(x) = (value, gradient of upstream).

    Only a recording gradient tape (or forward accumulator) uses a custom
    gradient; without one (evaluation, serving, monitoring) its identity
    node would still cost a graph op per weight, so the plain value is
    traced, and a later `tf.gradients` differentiates it: the same math
    through autodiff's ops.
    """
    if not record.could_possibly_record():
        return value(x)

    @tf.custom_gradient
    def penalty(x):
        return forward(x)
    return penalty(x)


def operand(strength, dtype):
    """A strength ready for a custom gradient's closure.

    A Python number stays as it is (it folds into constants); a `Strength`
    (or a tensor) is read now as a `dtype` tensor: a gradient function runs
    after the regularizer's call, outside its dtype scope.
    """
    if isinstance(strength, (int, float)):
        return strength
    return tf.cast(strength, dtype)


def _smallest_normal(dtype):
    # bfloat16 has float32's exponents, and NumPy has no finfo for it.
    numpy_dtype = np.float32 if dtype == tf.bfloat16 else dtype.as_numpy_dtype
    return float(np.finfo(numpy_dtype).tiny)


def _below_normal(x, *strengths):
    """True when a Python-number strength is above 0 but below the smallest
    normal number of x's dtype: TensorFlow flushes it to 0 on CPU, and 0
    times an overflowing sum is NaN."""
    smallest = _smallest_normal(x.dtype)
    return any(isinstance(strength, (int, float)) and 0 < strength < smallest
               for strength in strengths)


def _with_normal_strengths(function, x, *strengths):
    """function(x, *strengths) for strengths that `_below_normal` flags.

    Narrower weights are computed in float64, where such a strength is
    normal and x^2 cannot overflow: the true value, cast back. In float64
    a strength below 2.2e-308 acts as 0, as TensorFlow computes it.
    """
    if x.dtype == tf.float64:
        smallest = _smallest_normal(x.dtype)
        return function(x, *(
            0.0 if isinstance(strength, (int, float)) and strength < smallest
            else strength for strength in strengths))
    return tf.cast(function(tf.cast(x, tf.float64), *strengths), x.dtype)


def _times_strength(strength, value):
    """strength * value for a scalar `value` >= 0, which may be inf: a zero
    strength gives 0, not inf * 0 = NaN (so does a `Strength` below
    float32's smallest normal number, which TensorFlow flushes to 0)."""
    if isinstance(strength, (int, float)) and strength:
        return strength * value
    return tf.math.multiply_no_nan(value, tf.cast(strength, value.dtype))


def _with_gradient(x, value, gradient):
    """value(x), differentiated as gradient(x, upstream) under a tape."""
    return differentiated_as(
        x, value, lambda x: (value(x), lambda upstream: gradient(x, upstream)))


def l1(x, strength=1.0):
    """strength * sum(|x|); the gradient is strength sign(x) (0 at 0).

    Under a tape the gradient is written out: autodiff of reduce_sum would
    broadcast the upstream scalar to x's shape and multiply it in as one
    more full-size pass (in graph mode). The strength (a Python number or a
    `Strength`) is applied inside the custom gradient: a multiply outside it
    would trace its own gradient's ops for every regularized weight.
    """
    if _below_normal(x, strength):
        return _with_normal_strengths(l1, x, strength)
    strength = operand(strength, x.dtype)
    return _with_gradient(
        x, lambda x: _times_strength(strength, total(tf.abs(x))),
        lambda x, upstream: (upstream * strength) * tf.sign(x))


def under_xla():
    return tf.__internal__.get_enclosing_xla_context() is not None


# XLA:CPU (TF 2.21) sums a large tensor whose fused operand does not end in a
# multiply in one running accumulator per lane: terms below half the
# accumulator's ulp are lost, -1e-3 relative at 64M elements. A matrix-vector
# product with ones sums rows of this many terms each (Eigen's GEMV), and
# then the few row sums: within 1e-6 relative, and faster on one tensor.
_TOTAL_ROW = 1024
# Below this size the running accumulator errs by at most a few 1e-6, and
# XLA fuses a plain sum with the rest of a step (many weights of a model
# summed in one pass), where the product's separate pass costs more.
_TOTAL_BY_ROWS_MIN_ELEMENTS = 1 << 19


def _xla_on_cpu():
    """True while XLA traces for a machine without GPUs or TPUs, whose
    reductions (a tree) are accurate and whose float32 matmuls may round
    their operands (TF32, bfloat16 passes)."""
    return under_xla() and not any(
        tf.config.list_logical_devices(kind) for kind in ("GPU", "TPU"))


def total(terms):
    """sum(terms) over every element, within 1e-6 relative under XLA:CPU.

    Outside XLA:CPU, for sizes unknown at tracing, below 512K elements and
    for types other than float32 and float64 it is reduce_sum. Otherwise,
    with the flat terms cut into rows of 1024 (and the remainder r):

        sum(terms) = total(rows @ ones(1024)) + sum(r)
    """
    size = terms.shape.num_elements()
    if (size is None or size < _TOTAL_BY_ROWS_MIN_ELEMENTS
            or terms.dtype not in (tf.float32, tf.float64)
            or not _xla_on_cpu()):
        return tf.reduce_sum(terms)
    flat = tf.reshape(terms, [-1])
    whole = size - size % _TOTAL_ROW
    rows = tf.reshape(flat[:whole], [-1, _TOTAL_ROW])
    result = total(tf.linalg.matvec(rows, tf.ones([_TOTAL_ROW], terms.dtype)))
    if whole < size:
        result += tf.reduce_sum(flat[whole:])
    return result


def _total_pays(x):
    """True where `total` takes row sums (XLA:CPU, 512K elements or more)."""
    size = x.shape.num_elements()
    return (size is not None and size >= _TOTAL_BY_ROWS_MIN_ELEMENTS
            and _xla_on_cpu())


def l2(x, strength=1.0):
    """strength * sum(x^2); the gradient is 2 strength x.

    L2Loss reads x once in graph mode, where reduce_sum(square(x)) writes the
    square out first, and its registered gradient is the single multiply
    `upstream * x`, so it needs no custom gradient (whose wrapper costs
    tracing time per variable). A Python-number strength folds into the one
    constant 2 * strength: every op per weight costs tracing time. Large
    tensors under XLA:CPU take `total`.

    A zero strength gives 0 where sum(x^2) overflows, and a Python-number
    strength below float32's smallest normal number its true value on
    float32 weights (`_with_normal_strengths`).
    """
    if _below_normal(x, strength):
        return _with_normal_strengths(l2, x, strength)
    if not _total_pays(x):
        if isinstance(strength, (int, float)) and strength:
            return (2.0 * strength) * tf.nn.l2_loss(x)
        return tf.math.multiply_no_nan(
            tf.nn.l2_loss(x), 2.0 * operand(strength, x.dtype))
    strength = operand(strength, x.dtype)
    return _with_gradient(
        x, lambda x: _times_strength(strength, total(tf.square(x))),
        lambda x, upstream: (upstream * (2.0 * strength)) * x)


# Below this many elements a graph op costs more than a pass over the tensor:
# on a deep stack of small layers (no XLA) the regularizers' cost is their op
# count per variable, not their arithmetic.
_FEW_OPS_MAX_ELEMENTS = 1 << 14


def _op_count_matters(x):
    """True for a small tensor traced outside XLA, which fuses every op."""
    size = x.shape.num_elements()
    return (size is not None and size <= _FEW_OPS_MAX_ELEMENTS
            and not under_xla())


def l1_l2(x, l1_strength, l2_strength):
    """l1_strength * sum(|x|) + l2_strength * sum(x^2), in one gradient pass.

    The strengths are Python floats or scalar tensors. The gradient,
    l1_strength * sign(x) + 2 * l2_strength * x, is one elementwise
    expression instead of two gradients added together, and the upstream
    scalar multiplies the two coefficients rather than the tensor: one
    full-size pass fewer, and one op fewer per variable once grappler folds
    a constant upstream.
    """
    # A zero strength (a Python number) drops its term, as Keras does.
    if isinstance(l1_strength, (int, float)) and l1_strength == 0:
        return l2(x, l2_strength)
    if isinstance(l2_strength, (int, float)) and l2_strength == 0:
        return l1(x, l1_strength)
    if _below_normal(x, l1_strength, l2_strength):
        return _with_normal_strengths(l1_l2, x, l1_strength, l2_strength)
    l1_strength = operand(l1_strength, x.dtype)
    l2_strength = operand(l2_strength, x.dtype)

    def gradient(x, upstream):
        return ((upstream * l1_strength) * tf.sign(x)
                + (upstream * (2.0 * l2_strength)) * x)

    if _total_pays(x):
        def value(x):
            magnitude = tf.abs(x)
            return total(magnitude * (l1_strength + l2_strength * magnitude))
    else:
        def value(x):
            # 2 * l2_strength folds into one constant: on a deep stack of
            # small layers each op per variable is measurable.
            return (_times_strength(l1_strength, tf.reduce_sum(tf.abs(x)))
                    + _times_strength(2.0 * l2_strength, tf.nn.l2_loss(x)))
    if _op_count_matters(x):
        return differentiated_as(x, value, lambda x: _l1_l2_in_eight_ops(
            x, l1_strength, l2_strength))
    return _with_gradient(x, value, gradient)


def _l1_l2_in_eight_ops(x, l1_strength, l2_strength):
    """L1L2 value and gradient function sharing their terms (small tensors).

    With b = l2 x and t = l1 sign(x) + b:

        value = sum(x t)          (x t = l1 |x| + l2 x^2)
        gradient = upstream (t + b)

    Eight graph ops per variable where the separate value and gradient take
    ten, for two more full-size writes and three more reads, which cost more
    than two ops from about 32K elements on.
    """
    scaled = l2_strength * x
    terms = l1_strength * tf.sign(x) + scaled
    return (tf.reduce_sum(x * terms),
            lambda upstream: upstream * (terms + scaled))


def matrix_view(x, name="x"):
    """Reshapes a weight tensor into the matrix that structured penalties use.

    Dense kernels `(in, out)` stay as they are. Convolution kernels
    `(*kernel_size, in_channels, out_channels)` (Conv1D, Conv2D, Conv3D) become
    `(prod(kernel_size) * in_channels, out_channels)`: one column per filter,
    one row per input tap, so "columns" always means output units or filters.

    Raises:
      ValueError: when the rank is not 2 to 5 or a dimension is unknown.
    """
    shape = x.shape
    shown = f"<a tensor of shape {shape}>"
    if shape.rank is None or not 2 <= shape.rank <= 5:
        raise ValueError(validation.message(
            name, x, "a kernel of rank 2 (Dense) or 3 to 5 (Conv1D/2D/3D)",
            shown))
    if not shape.is_fully_defined():
        raise ValueError(validation.message(
            name, x, "a kernel with a fully defined (static) shape", shown))
    if shape.rank == 2:
        return x
    # Static rows: (-1, 0) would leave them unknown in a graph (no filters).
    return tf.reshape(x, (math.prod(shape[:-1]), shape[-1]))


def _unit_rows(matrix):
    """The rows scaled to unit L2 norm at any scale; zero rows stay zero.

    Each row is first divided by its largest |element|, so its squared norm
    is in [1, columns] and neither underflows nor overflows. The result does
    not depend on that divisor, so no gradient flows through it.
    """
    peak = tf.stop_gradient(
        tf.reduce_max(tf.abs(matrix), axis=1, keepdims=True))
    scaled = tf.math.divide_no_nan(matrix, peak)
    # A zero row has squared norm 0; every other row at least 1.
    squared_norm = tf.reduce_sum(tf.square(scaled), axis=1, keepdims=True)
    return scaled * tf.math.rsqrt(tf.maximum(squared_norm, 1.0))


def mean_abs_cosine(matrix, mode):
    """Mean |cosine similarity| between distinct rows (or columns).

    With `u_i` the rows (mode="rows") or columns (mode="columns") of the
    matrix, each scaled to unit L2 norm, and n their number:

        mean_{i<j} |u_i . u_j| = sum_{i != j} |u_i . u_j| / (n * (n - 1))

    This is the quantity behind Keras' `OrthogonalRegularizer`. With a single
    row (or column) there are no pairs and the value is 0.
    """
    if mode == "columns":
        matrix = tf.transpose(matrix)
    n = matrix.shape[0]
    if n < 2:
        return tf.zeros((), matrix.dtype)
    unit = _unit_rows(matrix)
    gram = tf.matmul(unit, unit, transpose_b=True)
    off_diagonal = gram * (1.0 - tf.eye(n, dtype=matrix.dtype))
    return tf.reduce_sum(tf.abs(off_diagonal)) / (n * (n - 1.0))
