"""Structured penalty math as pure tensor functions (no Keras, no validation).

Every function takes a float32 or float64 tensor and returns a scalar of the
same dtype. Shapes are static, nothing branches on tensor values, and every
function compiles with XLA (`tf.function(jit_compile=True)`), including the
SVD (`tf.linalg.svd` compiles on XLA CPU) and the fixed-length power
iterations. Norms are computed by scaling with the largest magnitude first,
so neither huge nor tiny weights overflow or underflow a square, and the
gradient of a norm at zero is 0 instead of NaN. No function masks a NaN or
inf input: the value is then NaN or inf, never finite. An empty input (a
zero-length axis) gives 0.
"""

import math

import numpy as np
import tensorflow as tf
# No public API tells whether a gradient tape is recording.
from tensorflow.python.eager import record  # pylint: disable=g-direct-tensorflow-import

from tfreg import penalties

__all__ = [
    "KL_EPSILON",
    "MAX_POWER_ITERATIONS",
    "decov",
    "gram_minus_identity",
    "group_lasso",
    "group_norms",
    "kl_sparsity",
    "nuclear_norm",
    "samples_by_features",
    "soft_orthogonality",
    "spectral_norm",
    "squared_distance",
    "squared_spectral_norm",
    "srip",
    "start_vector",
    "top_singular_vectors",
]

# Activity means are clipped into [KL_EPSILON, 1 - KL_EPSILON] before logs.
KL_EPSILON = 1e-6
# Seed of the fixed start vector of the power iterations.
_POWER_ITERATION_SEED = 0


def _safe_norm(x, axis=None, keepdims=False):
    """Euclidean norm, exact at huge and tiny scales, gradient 0 at x = 0.

    The largest magnitude m is held constant for differentiation, which is
    exact because ||x|| = m * ||x / m|| for every m > 0. A zero slice uses
    m = 1 and a square root of a value replaced by 1 (the "double where"), so
    neither the value nor the gradient sees sqrt(0). NaN and inf are not
    masked: a slice holding a NaN has norm NaN, one holding an inf (and no
    NaN) norm inf, as sqrt(sum(x^2)) would give.
    """
    scale, _, zero, root = _norm_parts(x, axis)
    norm = tf.where(zero, tf.zeros_like(root), scale * root)
    if not keepdims:
        norm = tf.squeeze(norm, axis=axis)
    return norm


def _norm_parts(x, axis):
    """(m, x / m, ||x / m|| == 0, ||x / m|| or 1 where 0), keeping dims."""
    scale = tf.stop_gradient(
        tf.reduce_max(tf.abs(x), axis=axis, keepdims=True))
    # m = 1 also when m is inf or NaN (XLA's max skips NaN, eager's keeps it):
    # x / 1 keeps every NaN, and an inf squares to inf, not inf / inf = NaN.
    usable = tf.math.is_finite(scale) & (scale > 0)
    scale = tf.where(usable, scale, tf.ones_like(scale))
    scaled = x / scale
    squared = tf.reduce_sum(tf.square(scaled), axis=axis, keepdims=True)
    # Tested with ==, not > 0, which would be False for NaN and hide it.
    zero = tf.equal(squared, 0)
    root = tf.sqrt(tf.where(zero, tf.ones_like(squared), squared))
    return scale, scaled, zero, root


def _normalize(x):
    """x / ||x||, and 0 for x = 0 (NaN and inf are not masked)."""
    norm = _safe_norm(x, keepdims=True)
    return x / tf.where(tf.equal(norm, 0), tf.ones_like(norm), norm)


def group_norms(x, axis):
    """||x_g||_2 for each index g along `axis` (a vector of x.shape[axis]).

    The gradient, x_g / ||x_g|| (0 for a zero group), is written out as
    (x_g / m) / ||x_g / m||: autodiff multiplies the upstream gradient by m
    first, inf for m ~ 3e38, then by 0 at a zero weight.
    """
    rank = x.shape.rank
    others = [i for i in range(rank) if i != axis % rank]

    def unit(x):
        _, scaled, _, root = _norm_parts(x, others)
        # A zero group: 0 / 1. Not scaled / root: XLA rewrites (x / m) / r
        # as x / (m r), which overflows.
        return scaled * tf.math.reciprocal(root)

    def forward(x):
        fixed_unit = unit(tf.stop_gradient(x))

        def gradient(upstream):
            if record.could_possibly_record():
                # Differentiated again: the unit vectors as functions of x.
                return _expand(upstream, others) * unit(x)
            return _expand(upstream, others) * fixed_unit
        return _safe_norm(x, axis=others), gradient
    return penalties.differentiated_as(
        x, lambda x: _safe_norm(x, axis=others), forward)


def _expand(vector, axes):
    for axis in sorted(axes):
        vector = tf.expand_dims(vector, axis)
    return vector


def group_lasso(x, axis, factor=1.0):
    """factor sum_g sqrt(p_g) * ||x_g||_2, one group per index along `axis`.

    p_g is the number of entries in a group: x.size / x.shape[axis]. A
    tensor with a zero-length axis has no groups or empty ones: 0. With
    a b = factor sqrt(p) (`_split`) it is b sum_g (a ||x_g||): a factor
    below 1 applies before the sum can overflow, and a zero factor gives 0.
    """
    groups = x.shape[axis]
    size = x.shape.num_elements() // groups if groups else 0
    small, large = _split(factor * math.sqrt(size))
    return large * penalties.total(_times(group_norms(x, axis), small))


def gram_minus_identity(matrix, identity=1.0):
    """W^T W - identity I when columns <= rows, else W W^T - identity I
    (the smaller Gram matrix)."""
    rows, columns = matrix.shape
    transpose_a = columns <= rows
    gram = tf.matmul(matrix, matrix, transpose_a=transpose_a,
                     transpose_b=not transpose_a)
    return gram - identity * tf.eye(min(rows, columns), dtype=matrix.dtype)


def start_vector(size, dtype):
    """The fixed pseudo-random unit vector that power iterations start from."""
    vector = np.random.default_rng(_POWER_ITERATION_SEED).standard_normal(size)
    return tf.constant(vector / np.linalg.norm(vector), dtype)


def top_singular_vectors(matrix, iterations):
    """(u, v): unit estimates of the top singular vectors by power iteration.

    Starts from `start_vector` and runs exactly `iterations` steps of
    v <- normalize(W^T normalize(W v)). No gradient flows through u and v.
    A zero matrix gives u = v = 0. Runs as one graph even when called
    eagerly (traced once per shape, dtype and `iterations`).
    """
    return _power_iteration(tf.stop_gradient(matrix), iterations)


# The loop counts in int32.
MAX_POWER_ITERATIONS = 2**31 - 1


# W^T u of a tall W sums each column's products over blocks of this many
# rows, then the blocks: one float32 dot over 2^18 rows errs by 1e-5.
_PRODUCT_BLOCK = 1024


def _transposed_product(matrix, u):
    """W^T u, summed by blocks of rows when W is tall."""
    rows, columns = matrix.shape
    if rows < 2 * _PRODUCT_BLOCK:
        return tf.matmul(matrix, u, transpose_a=True)
    whole = rows - rows % _PRODUCT_BLOCK
    blocks = tf.einsum(
        "bij,bik->bjk",
        tf.reshape(matrix[:whole], (-1, _PRODUCT_BLOCK, columns)),
        tf.reshape(u[:whole], (-1, _PRODUCT_BLOCK, 1)))
    product = tf.reduce_sum(blocks, axis=0)
    if whole < rows:
        product += tf.matmul(matrix[whole:], u[whole:], transpose_a=True)
    return product


def _power_iteration_body(matrix, iterations):
    rows, columns = matrix.shape
    v = start_vector(columns, matrix.dtype)[:, None]

    def step(i, u, v):
        u = _normalize(tf.matmul(matrix, v))
        v = _normalize(_transposed_product(matrix, u))
        return i + 1, u, v

    u = _normalize(tf.matmul(matrix, v))
    _, u, v = tf.while_loop(
        lambda i, u, v: i < iterations, step,
        (tf.constant(0), u, v), maximum_iterations=iterations)
    u = _normalize(tf.matmul(matrix, v))
    return tf.stop_gradient(u), tf.stop_gradient(v)


_power_iteration = tf.function(_power_iteration_body, autograph=False)


def spectral_norm(matrix, iterations):
    """sigma_max(W) = u^T W v, u and v from `top_singular_vectors`.

    Its gradient is u v^T (Yoshida & Miyato 2017), exact once the iterations
    have converged.
    """
    u, v = top_singular_vectors(matrix, iterations)
    return tf.reduce_sum(u * tf.matmul(matrix, v))


def squared_spectral_norm(matrix, iterations, factor=1.0):
    """factor sigma_max(W)^2, u and v as in `spectral_norm`.

    With m = max |W| (held constant) and sigma' = u^T (W / m) v, it is
    (b (m (a sigma')))^2, a b = sqrt(factor) (`_split`): the power
    iteration runs on W / m, so neither W v nor sigma_max overflows on the
    way, and the factor applies before the square (XLA rewrites (c x)^2 of
    a constant c as c^2 x^2, which overflows). The gradient,
    2 factor sigma_max u v^T, is written out as
    b^2 ((a^2 m) (2 sigma' u v^T)): where the value overflows it is
    finite, or inf where it overflows too, never NaN.
    """
    m = _peak(matrix)
    small, large = _split(_root(factor))

    def parts(matrix):
        scaled = matrix / m
        u, v = top_singular_vectors(scaled, iterations)
        return tf.reduce_sum(u * tf.matmul(scaled, v)), u, v

    def value(matrix):
        return tf.square(large * (m * (small * parts(matrix)[0])))

    def forward(matrix):
        sigma, u, v = parts(tf.stop_gradient(matrix))

        def gradient(upstream):
            outer = (2.0 * sigma) * tf.matmul(u, v, transpose_b=True)
            return upstream * ((outer * (small * small * m))
                               * (large * large))
        return value(matrix), gradient
    return penalties.differentiated_as(matrix, value, forward)


def _peak(matrix):
    """max |W|, held constant; 1 for a zero matrix and for an inf or NaN
    entry, which then reaches the value as in `_safe_norm`."""
    peak = tf.stop_gradient(tf.reduce_max(tf.abs(matrix)))
    return tf.where(tf.math.is_finite(peak) & (peak > 0), peak,
                    tf.ones_like(peak))


def _times(values, factor):
    """values * factor, 0 for a zero factor where values are inf."""
    if isinstance(factor, (int, float)) and factor:
        return values * factor
    return tf.math.multiply_no_nan(
        values, tf.convert_to_tensor(factor, values.dtype))


def _gram_scale(matrix):
    """s = max(1, max |W|), held constant; 1 for an inf or NaN entry, which
    then reaches the Gram matrix."""
    peak = tf.stop_gradient(tf.reduce_max(tf.abs(matrix)))
    return tf.where(tf.math.is_finite(peak) & (peak > 1), peak,
                    tf.ones_like(peak))


def _scaled_gram_minus_identity(matrix, s):
    """G' - I / s^2, G' the smaller Gram matrix of W / s: G - I = s^2 times
    it. 1 / s may be subnormal (flushed to 0): W is divided by s instead."""
    return gram_minus_identity(matrix / s, 1.0 / s / s)


def _root(factor):
    """sqrt(factor) of a Python number or a scalar tensor."""
    if isinstance(factor, (int, float)):
        return math.sqrt(factor)
    return tf.sqrt(factor)


def _split(factor):
    """(min(factor, 1), max(factor, 1)), whose product is factor.

    b (a x y) for x, y >= 0 finite: a x cannot overflow, and b multiplies
    a finite value, inf or 0, so the product is never inf * 0 = NaN.
    """
    if isinstance(factor, (int, float)):
        return min(factor, 1.0), max(factor, 1.0)
    return tf.minimum(factor, 1.0), tf.maximum(factor, 1.0)


def _gram_gradient(scaled, difference):
    """W' D (columns <= rows, D the columns' Gram matrix term) or D W'."""
    rows, columns = scaled.shape
    if columns <= rows:
        return tf.matmul(scaled, difference)
    return tf.matmul(difference, scaled)


def soft_orthogonality(matrix, factor=1.0):
    """factor ||G - I||_F^2 with G the smaller Gram matrix of `matrix`.

    Computed as sum((b (s ((a s) (G' - I / s^2))))^2) with s as in `srip`
    and a b = sqrt(factor) (`_split`): neither G (from |W| ~ 1.8e19 in
    float32) nor its square (from |W| ~ 1e10) overflows before a factor
    below 1 applies. For |W| <= 1 and factor = 1 it is the formula as
    written. The gradient, 4 factor W (G - I) (columns; (G - I) W for
    rows) = 4 factor s^3 W' D with D = G' - I / s^2, is written out with
    the scalars applied one at a time to the finite W' D: where the value
    overflows it is finite, or +-inf where it overflows too, never NaN.
    """
    s = _gram_scale(matrix)
    small, large = _split(_root(factor))

    def value(matrix):
        difference = _scaled_gram_minus_identity(matrix, s)
        return tf.reduce_sum(
            tf.square(large * (s * ((small * s) * difference))))

    def forward(matrix):
        scaled = tf.stop_gradient(matrix) / s
        difference = gram_minus_identity(scaled, 1.0 / s / s)

        def gradient(upstream):
            product = _gram_gradient(scaled, difference)
            return upstream * ((((4.0 * small * small * s) * product) * s)
                               * s * (large * large))
        return value(matrix), gradient
    return penalties.differentiated_as(matrix, value, forward)


def srip(matrix, iterations, factor=1.0):
    """factor sigma_max(G - I), G the smaller Gram matrix (Bansal et al.
    2018).

    Computed as b (s ((a s) sigma_max(G' - I / s^2))), G' the Gram matrix
    of W / s, s = max(1, max |W|) held constant and a b = factor
    (`_split`): G overflows from |W| ~ 1.8e19 in float32 and its power
    iteration would give NaN, where G' does not, and a factor below 1
    applies before the product with s^2 could overflow. A true value that
    overflows is inf. For |W| <= 1, s = 1: factor sigma_max(G - I). The
    gradient, factor W (u v^T + v u^T) (columns; (u v^T + v u^T) W for
    rows), u and v the top singular vectors of G' - I / s^2, is written out
    as b ((a s) W' (u v^T + v u^T)): finite, or +-inf where it overflows,
    never NaN.
    """
    s = _gram_scale(matrix)
    small, large = _split(factor)

    def value(matrix):
        sigma = spectral_norm(_scaled_gram_minus_identity(matrix, s),
                              iterations)
        return large * (s * ((small * s) * sigma))

    def forward(matrix):
        scaled = tf.stop_gradient(matrix) / s
        difference = gram_minus_identity(scaled, 1.0 / s / s)
        u, v = top_singular_vectors(difference, iterations)
        sigma = tf.reduce_sum(u * tf.matmul(difference, v))

        def gradient(upstream):
            outer = tf.matmul(u, v, transpose_b=True)
            product = _gram_gradient(scaled, outer + tf.transpose(outer))
            return upstream * ((product * (small * s)) * large)
        return large * (s * ((small * s) * sigma)), gradient
    return penalties.differentiated_as(matrix, value, forward)


def _polar_pairs(matrix):
    """(U, V) of an n x k matrix W (n >= k), U V^T its polar factor.

    From W's SVD refined once: with B = U^T W V (diagonal up to the SVD's
    tolerance, about 1e-6 relative under XLA in float64 too), U (I + K) V^T
    is the polar factor to second order, K_ij = (B_ij - B_ji) / (B_ii + B_jj)
    (0 where both are 0).
    """
    _, u, v = tf.linalg.svd(matrix)
    b = tf.matmul(u, tf.matmul(matrix, v), transpose_a=True)
    diagonal = tf.linalg.diag_part(b)
    skew = tf.math.divide_no_nan(b - tf.transpose(b),
                                 diagonal[:, None] + diagonal[None, :])
    return u + tf.matmul(u, skew), v


def nuclear_norm(matrix):
    """sum_i sigma_i(W) = sum_i u_i^T W v_i, (u_i, v_i) W's singular pairs.

    The pairs come from `tf.linalg.svd` of W / m, m W's largest magnitude
    (so that the SVD neither overflows nor underflows), through W = Q R
    when W is tall (u = Q u_R: XLA's SVD of a tall matrix is slow), and no
    gradient flows through them: the gradient is U V^T (refined by
    `_polar_pairs`), finite for repeated and zero singular values. Summed as
    u_i^T W v_i, the value errs only to second order in the pairs' error.
    The zero matrix gets value and gradient 0; a NaN or inf entry gives NaN.
    """
    rows, columns = matrix.shape
    if rows * columns == 0:
        # XLA's SVD fails on an empty matrix; the sum of no values is 0.
        return tf.reduce_sum(matrix)
    if columns > rows:
        return nuclear_norm(tf.transpose(matrix))
    fixed = tf.stop_gradient(matrix)
    scale = tf.reduce_max(tf.abs(fixed))
    # As in `_safe_norm`: NaN and inf reach the SVD, which returns NaN.
    usable = tf.math.is_finite(scale) & (scale > 0)
    scaled = fixed / tf.where(usable, scale, tf.ones_like(scale))
    q, r = tf.linalg.qr(scaled) if rows >= 2 * columns else (None, scaled)
    u, v = _polar_pairs(r)
    if q is not None:
        u = tf.matmul(q, u)
    total = penalties.total(u * tf.matmul(matrix, v))
    # The zero matrix gets the zero subgradient rather than an arbitrary U V^T.
    # Decided on the entries: a max that skips NaN (as XLA's does) would
    # take a NaN matrix for zero.
    zero = tf.reduce_all(tf.equal(matrix, 0))
    return tf.where(zero, tf.zeros_like(total), total)


def squared_distance(x, reference, factor=1.0):
    """factor sum((x - reference)^2); 0 for a zero factor where the sum
    overflows."""
    return penalties.l2(x - reference, factor)


def samples_by_features(activity):
    """Activations (batch, ..., features) as (samples, features).

    Every leading position (batch entry, time step, pixel) is one sample.
    """
    features = activity.shape[-1] if activity.shape.rank else None
    if features is None:
        features = tf.shape(activity)[-1]
    return tf.reshape(activity, (-1, features))


def _sample_mean(activity):
    """(mean over samples, N): N the number of samples, at least 1, so that
    the mean (and a covariance) of no samples is 0."""
    samples = tf.cast(tf.maximum(tf.shape(activity)[0], 1), activity.dtype)
    rows = activity.shape[0]
    if rows is None or rows < 2 * _PRODUCT_BLOCK:
        sums = tf.reduce_sum(activity, axis=0, keepdims=True)
    else:  # sums of many rows: by blocks, as in _transposed_product
        sums = tf.transpose(_transposed_product(
            activity, tf.ones((rows, 1), activity.dtype)))
    return sums / samples, samples


def decov(activity, factor=1.0):
    """factor/2 sum_{i != j} C_ij^2, C the batch covariance (1/N).

    `activity` is (samples, features); C = (h - mean)^T (h - mean) / N. No
    samples give C = 0. Each feature j is first divided by its largest
    magnitude m_j (held constant; 1 for a zero, inf or NaN feature), so the
    covariance C' of h / m has |C'_ij| <= 4 and C_ij = m_i (m_j C'_ij):
    neither a mean nor a product overflows or underflows on the way at
    large or tiny activations. The diagonal (which may be the only part of
    C to overflow) is masked out rather than subtracted, and sqrt(factor)
    multiplies each C_ij before it is squared (its part below 1 first, see
    `_split`), so a penalty whose true value overflows is inf, never
    inf - inf or inf * 0 = NaN. The gradient, (2 factor / N) (h - mean) C
    (diagonal zeroed), is written out from C' and m with the scalars
    applied one at a time: finite, or +-inf where it overflows, never NaN.
    """
    peak = tf.stop_gradient(
        tf.reduce_max(tf.abs(activity), axis=0, keepdims=True))
    usable = tf.math.is_finite(peak) & (peak > 0)
    peak = tf.where(usable, peak, tf.ones_like(peak))
    small, large = _split(_root(factor))

    def parts(activity):
        """(h / m - mean, N, C' with its diagonal zeroed)."""
        mean, samples = _sample_mean(activity / peak)
        centered = activity / peak - mean
        scaled = tf.matmul(centered, centered, transpose_a=True) / samples
        off_diagonal = tf.where(
            tf.eye(tf.shape(scaled)[0], dtype=tf.bool),
            tf.zeros_like(scaled), scaled)
        return centered, samples, off_diagonal

    def of(off_diagonal):
        covariance = large * (
            (small * tf.transpose(peak)) * (peak * off_diagonal))
        return 0.5 * tf.reduce_sum(tf.square(covariance))

    def forward(activity):
        centered, samples, off_diagonal = parts(tf.stop_gradient(activity))

        def gradient(upstream):
            # (2 factor / N) ((h - mean) C_offdiagonal), with
            # m_j = P r_j, P = max_j m_j: P^2 m_k (2 / N)
            # sum_j (h / m - mean)_nj r_j^2 C'_jk, scalars one at a time.
            largest = tf.reduce_max(peak)
            inner = tf.matmul(centered * tf.square(peak / largest),
                              off_diagonal)
            product = ((inner * (2.0 / samples)) * peak) * (small * largest)
            return upstream * ((product * (small * largest))
                               * (large * large))
        return of(off_diagonal), gradient
    return penalties.differentiated_as(
        activity, lambda activity: of(parts(activity)[2]), forward)


def kl_sparsity(activity, target):
    """sum_j KL(target || mean_j), mean_j clipped to [eps, 1 - eps].

    `activity` is (samples, features); mean_j is the mean of feature j.
    KL(p || q) = p log(p / q) + (1 - p) log((1 - p) / (1 - q)). No samples
    give 0; a NaN or inf activation gives NaN or inf.

    A target p below the activity dtype's smallest normal number would be
    flushed to 0 (and 0 log(0 / q) is NaN); its term p log(p / q) is then
    below 1.2e-36 (q >= eps) while the other term is at least about
    q - p >= eps - p, so it is left out: the sum is exact to the dtype's
    rounding, and so is the gradient (p / q <= 1.2e-32 against about 1).
    """
    raw_mean, _ = _sample_mean(activity)
    mean = tf.clip_by_value(raw_mean, KL_EPSILON, 1.0 - KL_EPSILON)
    terms = (1.0 - target) * tf.math.log((1.0 - target) / (1.0 - mean))
    if target >= np.finfo(activity.dtype.as_numpy_dtype).tiny:
        terms = target * tf.math.log(target / mean) + terms
    divergence = tf.reduce_sum(terms)
    # The clip would turn an inf mean into a finite divergence: add |mean|
    # over the non-finite means (none when every activation is finite).
    non_finite = tf.reduce_sum(tf.where(
        tf.math.is_finite(raw_mean), tf.zeros_like(raw_mean),
        tf.abs(raw_mean)))
    return tf.where(tf.shape(activity)[0] > 0, divergence + non_finite,
                    tf.zeros_like(divergence))
