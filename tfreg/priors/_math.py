"""The priors' closed-form math: log densities and their fast sums.

Pure, elementwise tensor functions of float32 or float64 `x` (no Keras, no
validation). The parameters are Python floats, and every constant they make
must be a normal number of x's dtype (the prior classes check that).
"""

import math

import numpy as np
import tensorflow as tf
# No public API tells whether a gradient tape is recording.
from tensorflow.python.eager import record  # pylint: disable=g-direct-tensorflow-import

from tfreg import penalties
from tfreg.priors import _dtypes

_HALF_LOG_TWO_PI = 0.5 * math.log(2.0 * math.pi)

# Constants of TFP's Horseshoe density approximation (tfd.Horseshoe._log_prob,
# a log-space version of Carvalho, Polson & Scott 2010, Theorem 1 bounds).
_HORSESHOE_G = 0.5614594835668851  # exp(-euler_gamma)
_HORSESHOE_B = 1.0420764938351215  # sqrt(2 (1 - g) / (g (2 - g)))
_HORSESHOE_H_INF = 1.0801359952503342  # (1-g)(g^2-6g+12) / (3g (2-g)^2 b)
_HORSESHOE_Q_POWER = 1.0919284281983377
_HORSESHOE_Z = math.log1p(-_HORSESHOE_G) - math.log(_HORSESHOE_G)
# Beyond u = (w / scale)^2 / 2 = 1e17 the approximation's -log p(w) equals
# log(u / g) + log(2 pi^3) / 2 + log(g scale) to within 0.3 / u < 3e-18, below
# float64's resolution; there it is computed from log|w|, which stays finite
# where u itself overflows (|w / scale| > 2.6e19 in float32).
_HORSESHOE_TAIL_U = 1e17

# Below this, log(softplus(r)) equals r to float64 precision's relative
# accuracy of the approximation softplus(r) ~ exp(r) (error exp(r) / 2).
_LOG_SOFTPLUS_LINEAR_BELOW = -30.0

# exp(t) stays finite (and 1 + exp(t) exact enough) in float32 for t below this.
_EXP_IS_SAFE_BELOW = 30.0

# Constants of the penalties, computed from the parameters as Python floats
# with neither overflow exceptions (`**`, `math.lgamma`) nor a division by an
# underflowed 0: a constant out of range comes out as inf or 0, which the
# priors' checks below reject.


def inverse_square(scale):
    """1 / scale^2: inf or 0 out of float64's range (`scale**2` raises)."""
    inverse = 1.0 / scale
    return inverse * inverse


def scaled(x, k):
    """x * k, kept whole for the square XLA takes of it.

    XLA:CPU rewrites (x k)^2 as x^2 k^2 (seen on one-element tensors). Where
    k^2 overflows x's dtype (k > 1.8e19 in float32: a scale below 5.4e-20)
    that is 0 * inf = NaN at x = 0 and inf near it. A clamp to the dtype's
    range, which changes no finite product, keeps the product one operand;
    other k pay nothing.
    """
    product = x * k
    limit = float(x.dtype.max)
    if k * k <= limit:
        return product
    return tf.clip_by_value(product, -limit, limit)


def student_t_inverse_width(df, scale):
    """k = 1 / (sqrt(df) scale), so that ((x - loc) / scale)^2 / df is
    (k (x - loc))^2."""
    return 1.0 / math.sqrt(df) / scale


# From a = df / 2 = 32 on, Stirling's series gives lgamma(a) - lgamma(a + 1/2)
# to within 2e-17; there each lgamma has grown to 80 and its rounding starts
# to show in the difference (7e-13 at a = 1000, all of it from a = 1e15 on).
_STIRLING_FROM = 32.0


def _stirling_remainder(x):
    """lgamma(x) - ((x - 1/2) log x - x + log(2 pi) / 2) by Stirling's series
    to x^-7: the first term left out, 1 / (1188 x^9), is 2.4e-17 at x = 32."""
    inverse = 1.0 / x
    square = inverse * inverse
    return inverse * (1.0 / 12.0 - square * (1.0 / 360.0 - square * (
        1.0 / 1260.0 - square / 1680.0)))


def student_t_log_normalizer(df, scale):
    """lgamma(df / 2) - lgamma((df + 1) / 2) + log(df pi) / 2 + log(scale).

    For every positive finite df: the lgamma difference, which cancels to
    about -log(df / 2) / 2 while each lgamma grows like df log(df), is taken
    from Stirling's series where the lgammas would lose it, and the limit
    log(2 pi) / 2 + log(scale) (a Normal's) is reached without overflow.
    """
    a = 0.5 * df
    if a >= _STIRLING_FROM:
        # lgamma(a) - lgamma(a + 1/2) + log(a) / 2 from the series; its
        # 1/2 - a log1p(1 / (2 a)) is ~1 / (8 a), without cancellation.
        log_gamma_ratio = ((0.5 - a * math.log1p(0.5 / a))
                           + _stirling_remainder(a)
                           - _stirling_remainder(a + 0.5))
        return log_gamma_ratio + _HALF_LOG_TWO_PI + math.log(scale)
    # lgamma(a) = lgamma(a + 1) - log(a): a = df / 2 may round to 0.
    log_gamma_a = math.lgamma(a + 1.0) - (math.log(df) - math.log(2.0))
    return (log_gamma_a - math.lgamma(a + 0.5)
            + 0.5 * (math.log(df) + math.log(math.pi)) + math.log(scale))


def normal_log_normalizer(scale):
    """log(scale) + log(2 pi) / 2."""
    return math.log(scale) + _HALF_LOG_TWO_PI


def laplace_log_normalizer(scale):
    """log(2 scale)."""
    return math.log(2.0) + math.log(scale)


def cauchy_log_normalizer(scale):
    """log(pi scale)."""
    return math.log(math.pi) + math.log(scale)


def normal_log_prob(x, loc, scale):
    """log N(x; loc, scale) = -((x - loc) / scale)^2 / 2 - log(scale) - log(2 pi) / 2."""
    z = scaled(x - loc, 1.0 / scale)
    return -0.5 * tf.square(z) - normal_log_normalizer(scale)


def laplace_log_prob(x, loc, scale):
    """log Laplace(x; loc, scale) = -|x - loc| / scale - log(2 scale)."""
    return -tf.abs(x - loc) * (1.0 / scale) - laplace_log_normalizer(scale)


def student_t_log_prob(x, df, loc, scale):
    """log StudentT(x; df, loc, scale), with the lgamma terms as Python floats."""
    log1p_square_z = log1p_square(x, loc, student_t_inverse_width(df, scale))
    return (-0.5 * (df + 1.0) * log1p_square_z
            - student_t_log_normalizer(df, scale))


def cauchy_log_prob(x, loc, scale):
    """log Cauchy(x; loc, scale) = -log1p(((x - loc) / scale)^2) - log(pi scale)."""
    return (-log1p_square(x, loc, 1.0 / scale)
            - cauchy_log_normalizer(scale))


def _horseshoe_log_normalizer(scale):
    return 0.5 * math.log(2.0 * math.pi**3) + math.log(_HORSESHOE_G * scale)


def _check_horseshoe_scale(scale, dtype):
    """Its constants sqrt(2) / scale and sqrt(1/2) / scale must be normal."""
    if not (_dtypes.is_normal(math.sqrt(2.0) / scale, dtype)
            and _dtypes.is_normal(math.sqrt(0.5) / scale, dtype)):
        tiny, largest = _dtypes.normal_range(dtype)
        other = "" if dtype == tf.float64 else " or float64 weights"
        raise ValueError(
            f"Horseshoe needs 1 / scale to be a normal {dtype.name} number. "
            f"Received: scale={scale!r} (use scale in "
            f"[{math.sqrt(2.0) / largest:.2g}, {math.sqrt(0.5) / tiny:.2g}]"
            f"{other}).")


def horseshoe_log_prob(x, scale):
    """TFP's approximation of the Horseshoe(scale) log density, in closed form.

    The exact density is infinite at 0. With u = (x / scale)^2 / 2 floored at
    the smallest normal number of x's dtype, the value equals
    `tfd.Horseshoe(scale).log_prob(x)` wherever TFP's is finite, and stays
    finite (with zero gradient) at and very near 0 where TFP's is +inf. For
    u > 1e17 it is -log(u / g) - c, finite where u overflows (TFP: NaN).

    Raises:
      ValueError: when 1 / scale is not a normal number of x's dtype.
    """
    _check_horseshoe_scale(scale, x.dtype)
    # Split at the far tail so that neither branch, not even the one
    # `tf.where` discards (whose gradient would still be NaN), sees an
    # overflowing u or log(0).
    tail = tf.abs(x) > math.sqrt(2.0 * _HORSESHOE_TAIL_U) * scale
    core_x = tf.where(tail, tf.zeros_like(x), x)
    tail_x = tf.where(tail, x, tf.ones_like(x))
    tiny = float(np.finfo(x.dtype.as_numpy_dtype).tiny)
    u = tf.maximum(tf.square(scaled(core_x, 1.0 / scale)) * 0.5, tiny)
    g, b = _HORSESHOE_G, _HORSESHOE_B
    q = (20.0 / 47.0) * tf.pow(u, _HORSESHOE_Q_POWER)
    h = 1.0 / (1.0 + tf.pow(u, 1.5)) + _HORSESHOE_H_INF * q / (1.0 + q)
    core = (-tf.math.softplus(_HORSESHOE_Z - u / (1.0 - g))
            + tf.math.log(tf.math.log1p(g / u - (1.0 - g) / tf.square(h + b * u))))
    log_u = 2.0 * (tf.math.log(tf.abs(tail_x)) - math.log(scale)) - math.log(2.0)
    far = math.log(g) - log_u
    return tf.where(tail, far, core) - _horseshoe_log_normalizer(scale)


def spike_and_slab_log_prob(x, spike_scale, slab_scale, slab_probability):
    """log of p N(x; 0, slab_scale) + (1 - p) N(x; 0, spike_scale).

    Computed as logaddexp(a, b) = a + softplus(b - a) of the two weighted log
    densities, which neither underflows nor overflows and has the exact
    gradient everywhere.
    """
    slab = math.log(slab_probability) + normal_log_prob(x, 0.0, slab_scale)
    spike = math.log1p(-slab_probability) + normal_log_prob(x, 0.0, spike_scale)
    return slab + tf.math.softplus(spike - slab)


# Elements per block of `_blockwise`: the long elementwise chains below
# (Horseshoe: some 30 full-size intermediates, a tape keeping those its
# derivative reads) hold their temporaries a block at a time, so a penalty's
# peak memory is a few times its weight's, not tens of times.
_BLOCK = 1 << 20


def _blockwise(x, terms, with_derivative, block):
    """(sum of terms over x, derivative of x's shape or None), by blocks.

    `terms(block)` gives the block's sum and a function of no arguments
    giving its elementwise derivative. The flat x is cut into blocks of
    `block` elements (and the remainder): a Python loop in eager mode, a
    `tf.while_loop` of one iteration at a time in a graph (XLA included).
    The block sums are summed by `penalties.total`.
    """
    size = x.shape.num_elements()
    flat = tf.reshape(x, [-1])
    count = size // block
    whole = count * block
    sums, pieces = [], []
    if tf.executing_eagerly():
        for index in range(count):
            block_sum, derivative = terms(
                flat[index * block:(index + 1) * block])
            sums.append(block_sum)
            if with_derivative:
                pieces.append(derivative())
        sums = [tf.stack(sums)]
    else:
        blocks = tf.reshape(flat if whole == size else flat[:whole],
                            [count, block])

        def body(index, block_sums, derivatives):
            block_sum, derivative = terms(blocks[index])
            block_sums = block_sums.write(index, block_sum)
            if with_derivative:
                derivatives = derivatives.write(index, derivative())
            return index + 1, block_sums, derivatives

        loop = (tf.constant(0),
                tf.TensorArray(x.dtype, size=count),
                tf.TensorArray(x.dtype, size=count if with_derivative else 0,
                               element_shape=[block]))
        _, block_sums, derivatives = tf.while_loop(
            lambda index, *_: index < count, body, loop,
            parallel_iterations=1,
            # A static count: XLA differentiates the loop (a second
            # derivative) only with bounded accumulators.
            maximum_iterations=count)
        sums = [block_sums.stack()]
        if with_derivative:
            pieces = [tf.reshape(derivatives.stack(), [-1])]
    if whole < size:
        block_sum, derivative = terms(flat[whole:])
        sums.append(tf.reshape(block_sum, [1]))
        if with_derivative:
            pieces.append(derivative())
    total = penalties.total(tf.concat(sums, 0) if len(sums) > 1 else sums[0])
    if not with_derivative:
        return total, None
    flat_derivative = tf.concat(pieces, 0) if len(pieces) > 1 else pieces[0]
    return total, tf.reshape(flat_derivative, x.shape)


def _sum_with_derivative(x, terms, factor, offset, xla_fuses=False,
                         block=_BLOCK):
    """factor * sum + offset, its gradient upstream * factor * derivative.

    `terms(x)` gives the sum over x and a function of no arguments that
    gives its elementwise derivative from the same intermediates, so the
    backward pass is one multiply instead of autodiff's chain of full-size
    ops through every intermediate again. `factor` and `offset` (Python
    floats or scalar tensors) are applied inside the custom gradient:
    outside it each scalar op would trace its own gradient's ops for every
    regularized weight (Student-t: 13 of 41 graph ops per weight). The
    forward pass reads x through `stop_gradient`: an eager tape would
    otherwise record every intermediate op and keep its tensors alive. A
    gradient taken under a recording tape (a second derivative) recomputes
    the derivative from x instead.

    Tensors of more than `block` elements (static size) go by blocks
    (`_blockwise`), so the intermediates are block-sized: the peak memory
    is the derivative's and the gradient's, about twice x's bytes. Under
    XLA a chain that XLA fuses into one pass (`xla_fuses`) keeps no
    intermediate and stays whole (1x: the gradient alone).
    """
    size = x.shape.num_elements()
    if (size is not None and size > block
            and not (xla_fuses and penalties.under_xla())):
        def value(x):
            return factor * _blockwise(x, terms, False, block)[0] + offset

        def forward(x):
            total, derivative = _blockwise(tf.stop_gradient(x), terms, True,
                                           block)

            def gradient(upstream):
                if record.could_possibly_record():
                    # Differentiated again: the derivative as a function of x.
                    return (upstream * factor) * _blockwise(
                        x, terms, True, block)[1]
                return (upstream * factor) * derivative
            return factor * total + offset, gradient
        return penalties.differentiated_as(x, value, forward)

    def forward(x):
        total, derivative = terms(tf.stop_gradient(x))

        def gradient(upstream):
            if record.could_possibly_record():
                # Differentiated again: the derivative as a function of x.
                return (upstream * factor) * terms(x)[1]()
            return (upstream * factor) * derivative()
        return factor * total + offset, gradient
    return penalties.differentiated_as(
        x, lambda x: factor * terms(x)[0] + offset, forward)


def autodiff_sum(x, elementwise, factor=1.0):
    """factor * sum(elementwise(x)) for an elementwise function of x.

    On a tensor of more than `_BLOCK` elements (static size) it goes by
    blocks, each block's derivative by autodiff of that block alone, so
    that no full-size intermediate of `elementwise` is kept.
    """
    size = x.shape.num_elements()
    if size is None or size <= _BLOCK:
        return factor * penalties.total(elementwise(x))

    def terms(block):
        with tf.GradientTape() as tape:
            tape.watch(block)
            block_sum = penalties.total(elementwise(block))
        return block_sum, lambda: tape.gradient(block_sum, block)
    return _sum_with_derivative(x, terms, factor, 0.0)


def _num_elements(x):
    count = x.shape.num_elements()
    if count is None:
        return tf.cast(tf.size(x), x.dtype)
    return float(count)


def constant_sum(x, factor, constant):
    """factor * constant summed over x's elements (a log normalizer)."""
    return _num_elements(x) * (factor * constant)


def centered(x, loc):
    return x - loc if loc else x


# Beyond |z| = 1e19, z^2 overflows float32 soon after, and log1p(z^2) is
# 2 log|z| to within 1e-38.
_LOG_FORM_FROM = 1e19


def _near_and_far(x, loc, inverse_width):
    """(far, z where not far else 0, (x - loc) / 2 where far else 1).

    Far is |z| > 1e19, z = (x - loc) * inverse_width, where z^2 (or z, or
    x - loc) may overflow; (x - loc) / 2 cannot. Double where: neither side
    sees the other's values, so a second derivative stays finite.
    """
    half = x * 0.5 - loc * 0.5 if loc else x * 0.5
    far = tf.abs(half) > min(0.5 * _LOG_FORM_FROM / inverse_width,
                             float(x.dtype.max))
    near = centered(x, loc)  # finite wherever `far` is False
    z = scaled(tf.where(far, tf.zeros_like(near), near), inverse_width)
    return far, z, tf.where(far, half, tf.ones_like(half))


def log1p_square(x, loc, inverse_width):
    """log1p(z^2), z = (x - loc) * inverse_width, for every finite x:
    2 (log|(x - loc) / 2| + log(2 k)) where |z| > 1e19."""
    far, z, far_half = _near_and_far(x, loc, inverse_width)
    return tf.where(far, 2.0 * (tf.math.log(tf.abs(far_half))
                                + math.log(2.0 * inverse_width)),
                    tf.math.log1p(tf.square(z)))


def log1p_square_derivative(x, loc, inverse_width):
    """d log1p(z^2) / dx = 2 k z / (1 + z^2) for every finite x:
    2 / (x - loc) where |z| > 1e19."""
    far, z, far_half = _near_and_far(x, loc, inverse_width)
    return tf.where(far, 1.0 / far_half,
                    z * (2.0 * inverse_width / (1.0 + tf.square(z))))


def log1p_square_sum(x, loc, inverse_width, factor=1.0, offset=0.0):
    """factor * sum(log1p(z^2)) + offset, z = (x - loc) * inverse_width.

    The gradient is factor 2 k z / (1 + z^2) (k = inverse_width). The
    Student-t (k = 1 / (sqrt(df) scale)) and Cauchy (k = 1 / scale) negative
    log densities. Scaling before squaring needs k, not k^2, in x's dtype
    (scale=1e-20 in float32: 1 / scale^2 overflows), for the same ops; the
    derivative z (2 k / (1 + z^2)) is at most k, so it cannot overflow.
    Where z^2 overflows (the sum is then inf) the sum and the derivative are
    recomputed by `log1p_square` and `log1p_square_derivative`: a scalar
    test on every call, and the extra ops only on that rare path.
    """
    twice = 2.0 * inverse_width

    def terms(x):
        z = scaled(centered(x, loc), inverse_width)
        square = tf.square(z)
        fast = penalties.total(tf.math.log1p(square))
        finite = tf.math.is_finite(fast)

        def derivative():
            return tf.cond(
                finite, lambda: z * (twice / (1.0 + square)),
                lambda: log1p_square_derivative(x, loc, inverse_width))
        return (tf.cond(finite, lambda: fast, lambda: penalties.total(
            log1p_square(x, loc, inverse_width))), derivative)
    return _sum_with_derivative(x, terms, factor, offset, xla_fuses=True)


def horseshoe_negative_log_prob_sum(x, scale, factor=1.0):
    """-factor sum(horseshoe_log_prob(x, scale)), its derivative written out.

    With u = (x / scale)^2 / 2 (floored at the dtype's smallest normal
    number, where the derivative is 0), B = (1 - g) / (h + b u)^2 and
    L = log1p(g / u - B):

        d(-log p)/dx = -(x / scale^2) [sigmoid(z - u / (1 - g)) / (1 - g)
                       + (2 B u (h' + b) / (h + b u) - g / u)
                         / (L (u + g - B u))]
        h'(u) = -1.5 sqrt(u) / (1 + u^1.5)^2 + h_inf p q / (u (1 + q)^2)

    (p = 1.0919284281983377), in a form that stays finite at the floor.
    For u > 1e17 the term is log(u / g) with derivative 2 / x.

    Raises:
      ValueError: when 1 / scale is not a normal number of x's dtype.
    """
    _check_horseshoe_scale(scale, x.dtype)
    g, b, h_inf = _HORSESHOE_G, _HORSESHOE_B, _HORSESHOE_H_INF
    tiny = float(np.finfo(x.dtype.as_numpy_dtype).tiny)
    log_tail_u = math.log(_HORSESHOE_TAIL_U)
    inverse_width = math.sqrt(0.5) / scale
    # u's floor is tiny and |x|'s sqrt(tiny) / inverse_width; where that is
    # not normal, |x|'s floor is tiny and u's (tiny inverse_width)^2.
    least_x = max(math.sqrt(tiny) / inverse_width, tiny)
    least_u = max((least_x * inverse_width)**2, tiny)

    # Eigen's pow, softplus and sigmoid are slow on CPU; u^p = exp(p log u),
    # and since the logit below is at most z < 0, exp(logit) cannot overflow
    # and gives softplus = log1p(e) and sigmoid = e / (1 + e) from one exp.
    # u is clipped to [least_u, 1e17]; log u = 2 (log|x| +
    # log(inverse_width)) is not, so the far tail stays finite where u, or
    # w = x inverse_width itself, overflows.
    def terms(x):
        w = scaled(x, inverse_width)
        raw_u = tf.square(w)
        u = tf.clip_by_value(raw_u, least_u, _HORSESHOE_TAIL_U)
        log_u = 2.0 * (tf.math.log(tf.maximum(tf.abs(x), least_x))
                       + math.log(inverse_width))
        q = (20.0 / 47.0) * tf.exp(
            _HORSESHOE_Q_POWER * tf.minimum(log_u, log_tail_u))
        root_u = tf.sqrt(u)
        one_plus_u_1_5 = 1.0 + u * root_u
        one_plus_q = 1.0 + q
        hb = 1.0 / one_plus_u_1_5 + h_inf * q / one_plus_q + b * u
        big_b = (1.0 - g) / tf.square(hb)
        log_term = tf.math.log1p(g / u - big_b)
        e = tf.exp(_HORSESHOE_Z - u / (1.0 - g))

        def derivative():
            h_prime = (-1.5 * root_u / tf.square(one_plus_u_1_5)
                       + (h_inf * _HORSESHOE_Q_POWER) * q
                       / (u * tf.square(one_plus_q)))
            d_log_p = (e / ((1.0 - g) * (1.0 + e))
                       + (2.0 * big_b * u * (h_prime + b) / hb - g / u)
                       / (log_term * (u + g - big_b * u)))
            core = tf.where(raw_u >= tiny,
                            (-math.sqrt(2.0) / scale) * w * d_log_p,
                            tf.zeros_like(x))
            return tf.where(raw_u > _HORSESHOE_TAIL_U, 2.0 / x, core)

        # log(log_term) = log(log_term u) - log u, and log_term u -> g as
        # u -> inf: with u clipped and log u not, this is the far tail too.
        values = tf.math.log1p(e) - tf.math.log(log_term * u) + log_u
        return penalties.total(values), derivative
    # Some 25 block-sized intermediates live at once: half a block.
    return _sum_with_derivative(
        x, terms, factor,
        constant_sum(x, factor, _horseshoe_log_normalizer(scale)),
        block=_BLOCK // 2)


def spike_and_slab_inverse_width(spike_scale, slab_scale):
    """k = sqrt(D / 2), D = 1 / spike_scale^2 - 1 / slab_scale^2, without
    forming either square."""
    ratio = spike_scale / slab_scale
    return math.sqrt(0.5 * (1.0 - ratio) * (1.0 + ratio)) / spike_scale


def spike_and_slab_negative_log_prob_sum(x, spike_scale, slab_scale,
                                         slab_probability, factor=1.0):
    """-factor sum(spike_and_slab_log_prob(x, ...)), derivative written out.

    With D = 1 / spike_scale^2 - 1 / slab_scale^2 and
    t(x) = log((1 - p) slab_scale / (p spike_scale)) - D x^2 / 2 (the log
    odds of the spike against the slab at x):

        -log p(x) = x^2 / (2 slab_scale^2) - softplus(t(x)) + c
        d(-log p)/dx = x (1 / slab_scale^2 + D sigmoid(t(x)))
    """
    slab_precision = inverse_square(slab_scale)
    log_odds = (math.log1p(-slab_probability) - math.log(slab_probability)
                + math.log(slab_scale) - math.log(spike_scale))
    constant = normal_log_normalizer(slab_scale) - math.log(slab_probability)

    # D x^2 / 2 = (k x)^2 with k = sqrt(D / 2), which fits float32 even when
    # D does not (a spike_scale below 1e-19).
    k = spike_and_slab_inverse_width(spike_scale, slab_scale)
    d = 2.0 * k * k

    def terms(x):
        kx = scaled(x, k)
        t = log_odds - tf.square(kx)
        if log_odds > _EXP_IS_SAFE_BELOW:
            softplus = tf.math.softplus(t)

            def sigmoid():
                return tf.sigmoid(t)
        else:
            # t <= log_odds, so exp(t) is finite: one exp gives softplus and
            # sigmoid (Eigen's own are slow on CPU).
            e = tf.exp(t)
            softplus = tf.math.log1p(e)

            def sigmoid():
                return e / (1.0 + e)

        def derivative():
            if d < float(np.finfo(x.dtype.as_numpy_dtype).max):
                return x * (slab_precision + d * sigmoid())
            # D x = 2 k (k x); where that overflows, sigmoid(t) is 0.
            return slab_precision * x + tf.math.multiply_no_nan(
                (2.0 * k) * kx, sigmoid())

        slab = (0.5 * slab_precision) * tf.square(x)
        return penalties.total(slab - softplus), derivative
    return _sum_with_derivative(x, terms, factor,
                                constant_sum(x, factor, constant),
                                xla_fuses=True)


def _times_inverse_square(x, k, x_times_k):
    """x k^2, given x k; inf where it overflows, 0 at x = 0.

    XLA folds (x k) k into x (k k), which is inf * 0 = NaN at x = 0, and
    inf for small x, where k^2 overflows x's dtype (prior_scale < 5.4e-20
    in float32); there it is sign(x) exp(log|x| + 2 log k).
    """
    if k * k <= float(x.dtype.max):
        return x_times_k * k
    return tf.sign(x) * tf.exp(tf.math.log(tf.abs(x)) + 2.0 * math.log(k))


def mean_field_kl_sum(posterior, prior_loc, prior_scale, parameterization,
                      factor):
    """factor * sum_i KL(N(mean_i, scale_i) || N(prior_loc, prior_scale)).

    posterior[0] holds the means, posterior[1] the unconstrained rho, with
    scale = softplus(rho) or exp(rho) (`parameterization` "softplus" or
    "log"). Written as TFP's `kl_divergence` of two Normals, with
    m = (mean - prior_loc) / prior_scale and d = log(scale) - log(prior_scale):

        KL = m^2 / 2 + expm1(2 d) / 2 - d
        dKL/dmean = m / prior_scale
        dKL/drho = expm1(2 d) * sigmoid(rho) / softplus(rho)   (softplus)
                 = expm1(2 d)                                  (log)

    Below rho = -30, log(softplus(rho)) is rho and its derivative 1 to
    float64's precision, so both stay finite for every finite rho. The
    derivative is written out, computed in the forward pass (its
    intermediates freed there: an eager tape holds only the gradient), and
    multiplied by the factor with `multiply_no_nan`: a zero factor gives 0
    and a zero gradient where the KL or its derivative overflows.
    """
    inverse_scale = 1.0 / prior_scale
    log_prior_scale = math.log(prior_scale)

    def terms(posterior, with_derivative):
        """(the KL's sum, its derivative or None)."""
        distance = centered(posterior[0], prior_loc)
        m = scaled(distance, inverse_scale)
        total = 0.5 * penalties.total(tf.square(m))
        d_mean = (_times_inverse_square(distance, inverse_scale, m)
                  if with_derivative else None)
        del m  # eager mode frees each intermediate once nothing holds it
        rho = posterior[1]
        if parameterization == "log":
            d = rho - log_prior_scale
            growth = tf.math.expm1(2.0 * d)
            d_rho = growth
        else:
            linear = rho < _LOG_SOFTPLUS_LINEAR_BELOW
            # Double where: the discarded side sees 0, never a huge -rho.
            safe = tf.where(linear, tf.zeros_like(rho), rho)
            softplus = tf.math.softplus(safe)
            d = tf.where(linear, rho, tf.math.log(softplus)) - log_prior_scale
            growth = tf.math.expm1(2.0 * d)
            # growth / softplus first: where growth is inf, the sigmoid
            # may be flushed to 0 in their product's other order.
            d_rho = (tf.where(linear, growth,
                              growth / softplus * tf.math.sigmoid(safe))
                     if with_derivative else None)
            del linear, safe, softplus
        total += penalties.total(0.5 * growth - d)
        if not with_derivative:
            return total, None
        del d, growth
        return total, tf.stack([d_mean, d_rho])

    def times(value, scalar):
        return tf.math.multiply_no_nan(
            value, tf.convert_to_tensor(scalar, value.dtype))

    def forward(posterior):
        total, derivative = terms(tf.stop_gradient(posterior), True)

        def gradient(upstream):
            if record.could_possibly_record():
                # Differentiated again: the derivative as a function of x.
                return times(terms(posterior, True)[1], upstream * factor)
            return times(derivative, upstream * factor)
        return times(total, factor), gradient
    return penalties.differentiated_as(
        posterior,
        lambda posterior: times(terms(posterior, False)[0], factor), forward)
