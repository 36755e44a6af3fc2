"""Structured penalty math as pure tensor functions (no Keras, no validation).

Every function takes a float32 or float64 tensor and returns a scalar of the
same dtype. Shapes are static, nothing branches on tensor values, and every
function compiles with XLA (`tf.function(jit_compile=True)`), including the
SVD (`tf.linalg.svd` compiles on XLA CPU) and the fixed-length power
iterations. Norms are computed by scaling with the largest magnitude first,
so neither huge nor tiny weights overflow or underflow a square, and the
gradient of a norm at zero is 0 instead of NaN.
"""

import numpy as np
import tensorflow as tf

from tfreg import penalties

# Activity means are clipped into [KL_EPSILON, 1 - KL_EPSILON] before logs.
KL_EPSILON = 1e-6
# Seed of the fixed start vector of the power iterations.
_POWER_ITERATION_SEED = 0


def _safe_norm(x, axis=None, keepdims=False):
    """Euclidean norm, exact at huge and tiny scales, gradient 0 at x = 0.

    The largest magnitude m is held constant for differentiation, which is
    exact because ||x|| = m * ||x / m|| for every m > 0. A zero slice uses
    m = 1 and a square root of a value replaced by 1 (the "double where"), so
    neither the value nor the gradient sees sqrt(0).
    """
    scale = tf.stop_gradient(
        tf.reduce_max(tf.abs(x), axis=axis, keepdims=True))
    nonzero = scale > 0
    scale = tf.where(nonzero, scale, tf.ones_like(scale))
    squared = tf.reduce_sum(tf.square(x / scale), axis=axis, keepdims=True)
    positive = squared > 0
    root = tf.sqrt(tf.where(positive, squared, tf.ones_like(squared)))
    norm = tf.where(positive, scale * root, tf.zeros_like(squared))
    if not keepdims:
        norm = tf.squeeze(norm, axis=axis)
    return norm


def _normalize(x):
    """x / ||x||, and 0 for x = 0."""
    norm = _safe_norm(x, keepdims=True)
    return x / tf.where(norm > 0, norm, tf.ones_like(norm))


def group_norms(x, axis):
    """||x_g||_2 for each index g along `axis` (a vector of x.shape[axis])."""
    rank = x.shape.rank
    others = [i for i in range(rank) if i != axis % rank]
    return _safe_norm(x, axis=others)


def group_lasso(x, axis):
    """sum_g sqrt(p_g) * ||x_g||_2, one group per index along `axis`.

    p_g is the number of entries in a group: x.size / x.shape[axis].
    """
    size = x.shape.num_elements() // x.shape[axis]
    return tf.sqrt(tf.cast(size, x.dtype)) * tf.reduce_sum(
        group_norms(x, axis))


def gram_minus_identity(matrix):
    """W^T W - I when columns <= rows, else W W^T - I (the smaller Gram)."""
    rows, columns = matrix.shape
    transpose_a = columns <= rows
    gram = tf.matmul(matrix, matrix, transpose_a=transpose_a,
                     transpose_b=not transpose_a)
    return gram - tf.eye(min(rows, columns), dtype=matrix.dtype)


def soft_orthogonality(matrix):
    """||G - I||_F^2 with G the smaller Gram matrix of `matrix`."""
    return tf.reduce_sum(tf.square(gram_minus_identity(matrix)))


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


def _power_iteration_body(matrix, iterations):
    rows, columns = matrix.shape
    v = start_vector(columns, matrix.dtype)[:, None]

    def step(i, u, v):
        u = _normalize(tf.matmul(matrix, v))
        v = _normalize(tf.matmul(matrix, u, transpose_a=True))
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


def srip(matrix, iterations):
    """sigma_max(G - I), G the smaller Gram matrix (Bansal et al. 2018)."""
    return spectral_norm(gram_minus_identity(matrix), iterations)


def nuclear_norm(matrix):
    """sum_i sigma_i(W), by `tf.linalg.svd`.

    TensorFlow differentiates singular values alone (compute_uv=False) as
    U V^T, which stays finite for repeated and zero singular values. The
    matrix is divided by its largest magnitude m first (sum_i sigma_i(W) =
    m * sum_i sigma_i(W / m), and U V^T does not depend on m), so that the
    SVD neither overflows nor underflows at huge or tiny scales. At W = 0
    the gradient is 0.
    """
    scale = tf.stop_gradient(tf.reduce_max(tf.abs(matrix)))
    nonzero = scale > 0
    scale = tf.where(nonzero, scale, tf.ones_like(scale))
    total = scale * tf.reduce_sum(
        tf.linalg.svd(matrix / scale, compute_uv=False))
    # The zero matrix gets the zero subgradient rather than an arbitrary U V^T.
    return tf.where(nonzero, total, tf.zeros_like(total))


def squared_distance(x, reference):
    """sum((x - reference)^2)."""
    return penalties.l2(x - reference)


def samples_by_features(activity):
    """Activations (batch, ..., features) as (samples, features).

    Every leading position (batch entry, time step, pixel) is one sample.
    """
    features = activity.shape[-1] if activity.shape.rank else None
    if features is None:
        features = tf.shape(activity)[-1]
    return tf.reshape(activity, (-1, features))


def decov(activity):
    """1/2 (||C||_F^2 - ||diag(C)||_2^2), C the batch covariance (1/N).

    `activity` is (samples, features); C = (h - mean)^T (h - mean) / N.
    """
    count = tf.cast(tf.shape(activity)[0], activity.dtype)
    centered = activity - tf.reduce_mean(activity, axis=0, keepdims=True)
    covariance = tf.matmul(centered, centered, transpose_a=True) / count
    off_diagonal = covariance - tf.linalg.diag(
        tf.linalg.diag_part(covariance))
    return 0.5 * tf.reduce_sum(tf.square(off_diagonal))


def kl_sparsity(activity, target):
    """sum_j KL(target || mean_j), mean_j clipped to [eps, 1 - eps].

    `activity` is (samples, features); mean_j is the mean of feature j.
    KL(p || q) = p log(p / q) + (1 - p) log((1 - p) / (1 - q)).
    """
    mean = tf.clip_by_value(tf.reduce_mean(activity, axis=0),
                            KL_EPSILON, 1.0 - KL_EPSILON)
    return tf.reduce_sum(
        target * tf.math.log(target / mean)
        + (1.0 - target) * tf.math.log((1.0 - target) / (1.0 - mean)))
