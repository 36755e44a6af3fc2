"""Penalty math as pure tensor functions, apart from any Keras plumbing.

Every function takes a floating tensor and returns a scalar of the same dtype.
They hold no Python branching on tensor values, use static shapes only and
compile with XLA. The `Regularizer` classes wrap them with validation, dtype
handling and configs.
"""

import math

import tensorflow as tf
# No public API tells whether a gradient tape is recording.
from tensorflow.python.eager import record  # pylint: disable=g-direct-tensorflow-import

__all__ = [
    "differentiated_as",
    "l1",
    "l1_l2",
    "l2",
    "log1p",
    "log1p_by_log",
    "log1p_sum",
    "matrix_view",
    "mean_abs_cosine",
    "operand",
    "under_xla",
]

# Floor on a squared norm before its inverse square root (as tf.math.l2_normalize):
# a zero row normalizes to zero instead of NaN.
_NORMALIZE_EPSILON = 1e-12


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
    strength = operand(strength, x.dtype)
    return _with_gradient(x, lambda x: strength * tf.reduce_sum(tf.abs(x)),
                          lambda x, upstream: (upstream * strength) * tf.sign(x))


# XLA:CPU (TF 2.21) emits a sum whose fused operand ends in a multiply (every
# x^2) as its own tree of reduce-windows, but writes an operand ending in a max
# (relu) out once and sums it with YNNPACK's reduction: faster from this many
# elements per tensor, slower below 16K, and it costs compile time per
# tensor. The relu is the identity on the non-negative terms it wraps.
_RELU_SUM_MIN_ELEMENTS = 1 << 16


def under_xla():
    return tf.__internal__.get_enclosing_xla_context() is not None


def _xla_traces_at_least(x, elements):
    """True while XLA traces x of a static size of at least `elements`."""
    size = x.shape.num_elements()
    return size is not None and size >= elements and under_xla()


def _relu_sum_pays(x):
    """True while XLA traces a tensor large enough for the relu-rooted sum."""
    return _xla_traces_at_least(x, _RELU_SUM_MIN_ELEMENTS)


def l2(x, strength=1.0):
    """strength * sum(x^2); the gradient is 2 strength x.

    L2Loss reads x once in graph mode, where reduce_sum(square(x)) writes the
    square out first, and its registered gradient is the single multiply
    `upstream * x`, so it needs no custom gradient (whose wrapper costs
    tracing time per variable). A Python-number strength folds into the one
    constant 2 * strength: every op per weight costs tracing time. Large
    tensors under XLA take the relu-rooted sum above.
    """
    if not _relu_sum_pays(x):
        return (2.0 * strength) * tf.nn.l2_loss(x)
    strength = operand(strength, x.dtype)
    return _with_gradient(
        x, lambda x: strength * tf.reduce_sum(tf.nn.relu(tf.square(x))),
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
    l1_strength = operand(l1_strength, x.dtype)
    l2_strength = operand(l2_strength, x.dtype)

    def gradient(x, upstream):
        return ((upstream * l1_strength) * tf.sign(x)
                + (upstream * (2.0 * l2_strength)) * x)

    if _relu_sum_pays(x):
        def value(x):
            # |x| (l1 + l2 |x|) >= 0: both strengths are validated >= 0.
            magnitude = tf.abs(x)
            terms = magnitude * (l1_strength + l2_strength * magnitude)
            return tf.reduce_sum(tf.nn.relu(terms))
    else:
        def value(x):
            # 2 * l2_strength folds into one constant: on a deep stack of
            # small layers each op per variable is measurable.
            return (l1_strength * tf.reduce_sum(tf.abs(x))
                    + (2.0 * l2_strength) * tf.nn.l2_loss(x))
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


# XLA:CPU (TF 2.21) spends more on one log per weight than on reading the
# weight. In float32 under XLA, `log1p_sum` takes one log per group of this
# many terms (groups of 16 to 32 run fastest).
_LOG_GROUP = 16
# From this size on: below it the grouped form's extra ops cost more compile
# time per tensor than they save in run time (deep models of small layers
# reach their first step later).
_LOG_GROUP_MIN_ELEMENTS = 1 << 14
# Below this, log1p(s) is its series s - s^2/2 + s^3/3 - s^4/4, whose first
# omitted term s^5/5 is under 1.2e-8 s: within float32's rounding.
_LOG1P_SERIES_BELOW = 1.0 / 64
# Below this size XLA takes log1p(s) as log(1 + s) plus the rounding error
# of 1 + s: XLA:CPU compiles a log several times faster than its log1p, and
# the two forms run at the same speed on small tensors (from this size on
# this form is slower).
_LOG1P_BY_LOG_BELOW = 1 << 12


def _one_plus_rounding(s, f):
    """The rounding error s - (f - 1) of f = 1 + s where f < 2, else 0.

    Below f = 2 the error is exact (Sterbenz) and log1p(s) = log(f) +
    log1p(r / f) is log(f) + r to within r (1 - 1 / f) < 6e-8 s; from f = 2
    on, r / f is below the resolution of log(f) >= 0.69.
    """
    return tf.where(f < 2.0, s - (f - 1.0), 0.0)


def log1p_by_log(s):
    """log1p(s) of s >= 0, elementwise, as log(1 + s) plus the rounding error
    of 1 + s: within 1.6e-7 in float32. Under XLA:CPU it runs and compiles
    faster than log1p."""
    f = 1.0 + s
    return tf.math.log(f) + _one_plus_rounding(s, f)


def log1p(s):
    """log1p(s) of s >= 0, elementwise: `log1p_by_log` under XLA, where it
    is about twice as fast; graph mode keeps the one op."""
    if under_xla():
        return log1p_by_log(s)
    return tf.math.log1p(s)


def log1p_sum(s):
    """sum(log1p(s)) over a tensor of s >= 0, in the form XLA runs fastest.

    Outside XLA (and for sizes unknown at tracing) it is
    reduce_sum(log1p(s)). Under XLA:

    - below 4K elements, sum(log(1 + s) + r) with r the rounding error of
      1 + s (`log1p_by_log`): within 1.6e-7 of log1p(s) per term,
      and it compiles faster than log1p (which matters for the first step
      of deep models);
    - for float32 tensors of 16K elements or more, with f = 1 + s = m 2^e
      (m in [1, 2), read off f's bits) for s >= 1/64 and the series below:

        sum(log1p(s)) = sum_small(series(s)) + ln 2 sum(e) + sum(r)
                        + sum_j log(prod_{i < 16} m_{i n / 16 + j})

      A product of 16 mantissas stays below 2^16, so one log serves 16
      terms, 16 slices of the padded flat tensor multiplied elementwise.
      Each term is within 1.7e-7 of log1p(s).

    Either way an infinite or NaN s gives inf or NaN as log1p does.
    """
    size = s.shape.num_elements()
    if size is not None and size < _LOG1P_BY_LOG_BELOW and under_xla():
        return tf.reduce_sum(log1p_by_log(s))
    if (s.dtype != tf.float32
            or not _xla_traces_at_least(s, _LOG_GROUP_MIN_ELEMENTS)):
        return tf.reduce_sum(tf.math.log1p(s))
    flat = tf.reshape(s, [-1])
    if size % _LOG_GROUP:
        flat = tf.pad(flat, [[0, -size % _LOG_GROUP]])  # log1p(0) = 0
    small = flat < _LOG1P_SERIES_BELOW
    f = 1.0 + flat
    bits = tf.bitcast(tf.where(small, 1.0, f), tf.int32)
    exponent = tf.bitwise.right_shift(bits, 23) - 127
    mantissa = tf.bitcast(
        tf.bitwise.bitwise_or(tf.bitwise.bitwise_and(bits, 0x7FFFFF),
                              0x3F800000), tf.float32)
    series = flat * (1.0 + flat * (-0.5 + flat * (1.0 / 3.0 - 0.25 * flat)))
    # A NaN or inf s is its own term: its bits would read as a finite
    # mantissa and exponent.
    rest = tf.where(small, series, tf.where(
        tf.math.is_finite(flat), _one_plus_rounding(flat, f), flat))
    return (tf.reduce_sum(math.log(2.0) * tf.cast(exponent, tf.float32) + rest)
            + tf.reduce_sum(tf.math.log(tf.reduce_prod(
                tf.reshape(mantissa, [_LOG_GROUP, -1]), axis=0))))


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
    if shape.rank is None or not 2 <= shape.rank <= 5:
        raise ValueError(
            f"Expected a kernel of rank 2 (Dense) or 3 to 5 (Conv1D/2D/3D) for "
            f"`{name}`. Received: {name}.shape={shape}")
    if not shape.is_fully_defined():
        raise ValueError(
            f"Expected a kernel with a fully defined (static) shape for "
            f"`{name}`. Received: {name}.shape={shape}")
    if shape.rank == 2:
        return x
    # Static rows: (-1, 0) would leave them unknown in a graph (no filters).
    return tf.reshape(x, (math.prod(shape[:-1]), shape[-1]))


def _l2_normalize(x, axis):
    squared_norm = tf.reduce_sum(tf.square(x), axis=axis, keepdims=True)
    return x * tf.math.rsqrt(tf.maximum(squared_norm, _NORMALIZE_EPSILON))


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
    unit = _l2_normalize(matrix, axis=1)
    gram = tf.matmul(unit, unit, transpose_b=True)
    off_diagonal = gram * (1.0 - tf.eye(n, dtype=matrix.dtype))
    return tf.reduce_sum(tf.abs(off_diagonal)) / (n * (n - 1.0))
