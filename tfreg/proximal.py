"""Closed-form proximal operators and penalty gradients of tfreg's regularizers.

For a penalty R and a step eta (the learning rate of a training step),

    prox_{eta R}(v) = argmin_w  R(w) + ||w - v||^2 / (2 eta)

is the update a proximal optimizer applies after its gradient step on the
loss alone (`tfreg.optimizers.Regularized(mode="proximal")`); `gradient`
gives grad R(w) in closed form for the decoupled update w - eta grad R(w).
Both read a `tfreg.Strength` anew on every call, need no value of R (a
prior's gradient takes no log), are pure tensor code with static shapes and
compile with XLA.

Every function takes `x` with `batch_dims` leading axes that stack equal
weights (same shape and regularizer), so one call updates many variables;
an elementwise penalty (L1, L2, L1L2, priors.Normal, priors.Laplace and the
other closed-form priors' gradients) takes any tensor, e.g. several
variables flattened and concatenated.

Closed-form proximal operators:

| regularizer | prox_{eta R}(v) |
|---|---|
| `L1(l1)`, Keras' `L1` | soft threshold: sign(v) max(|v| - eta l1, 0) |
| `L2(l2)`, Keras' `L2` | v / (1 + 2 eta l2) |
| `L1L2(l1, l2)`, Keras' `L1L2` | soft threshold by eta l1, then / (1 + 2 eta l2) |
| `priors.Laplace(scale, loc)` | loc + soft threshold of v - loc by eta f / scale |
| `priors.Normal(scale, loc)` | loc + (v - loc) / (1 + eta f / scale^2) |
| `GroupLasso(factor, axis)` | V_g max(1 - eta factor sqrt(p) / ||V_g||, 0) per group |
| `SparseGroupLasso(l1, factor, axis)` | soft threshold by eta l1, then the group lasso's |
| `NuclearNorm(factor)` | U diag(max(s - eta factor, 0)) V^T of the matrix view |

(f = weight / num_examples for the priors; p = entries per group.) The
soft then block threshold is the exact prox of the sparse group lasso
(Simon et al. 2013, eq. 9); each is exact at zeros: a weight or group that
the threshold reaches is set to exactly 0.

Closed-form gradients: all of the above and priors.StudentT, priors.Cauchy,
priors.SpikeAndSlab (no log: sigmoid from one exp) and priors.Horseshoe
(its written-out derivative). The Horseshoe's cannot be log-free: with
u = (x / scale)^2 / 2, TFP's approximation holds log L(u), L = log1p(g / u
- B(u)), whose derivative L'(u) / L(u) divides by that log1p, and h(u)
holds u^1.0919..., a non-integer power (exp(p log u)); a log-free formula
would not be the gradient of the penalty the loss path minimizes. Its
step needs one log1p and one log per weight (the value's own logs are
unused and pruned from a traced step). Other regularizers have neither here (`prox` and
`gradient` return None).
"""

import math

import numpy as np
import tensorflow as tf

from tfreg import _keras
from tfreg import penalties
from tfreg import priors
from tfreg import regularizers
from tfreg import structured

__all__ = ["block_threshold", "composes_with_groups", "gradient",
           "group_axes", "has_gradient", "has_prox", "is_elementwise", "prox",
           "prox_parts", "singular_value_threshold", "soft_threshold"]

# Keras' own L1, L2, L1L2 (same math and attribute names as tfreg's).
_KERAS_ELEMENTWISE = tuple(
    getattr(_keras.keras.regularizers, name) for name in ("L1", "L2", "L1L2"))

_PROX_ELEMENTWISE = (regularizers.L1, regularizers.L2, regularizers.L1L2,
                     priors.Laplace, priors.Normal) + _KERAS_ELEMENTWISE
_PROX_STRUCTURED = (structured.GroupLasso, structured.SparseGroupLasso,
                    structured.NuclearNorm)
_GRADIENT_ELEMENTWISE = _PROX_ELEMENTWISE + (
    priors.StudentT, priors.Cauchy, priors.SpikeAndSlab, priors.Horseshoe)


def _is(regularizer, classes):
    return type(regularizer) in classes


def has_prox(regularizer):
    """True when `prox` has a closed form for `regularizer`."""
    return _is(regularizer, _PROX_ELEMENTWISE + _PROX_STRUCTURED)


def has_gradient(regularizer):
    """True when `gradient` has a closed form for `regularizer`."""
    return _is(regularizer, _GRADIENT_ELEMENTWISE + _PROX_STRUCTURED)


def is_elementwise(regularizer):
    """True when prox and gradient act elementwise, on any shape."""
    return _is(regularizer, _GRADIENT_ELEMENTWISE)


def composes_with_groups(regularizer):
    """True when R(w) = sum_i l1 |w_i| + l2 w_i^2 (L1, L2, L1L2, Keras'
    ones, priors.Laplace and priors.Normal centered at 0): then the prox of
    R plus a group norm is the composition of `prox_parts`."""
    kind = type(regularizer)
    if kind in (regularizers.L1, regularizers.L2, regularizers.L1L2) or (
            kind in _KERAS_ELEMENTWISE):
        return True
    return kind in (priors.Laplace, priors.Normal) and regularizer.loc == 0


def _scalar(value, dtype):
    """A strength (Python number, `Strength`, tensor) as a `dtype` scalar."""
    return tf.cast(penalties.operand(value, dtype), dtype)


def _is_zero(strength):
    return isinstance(strength, (int, float)) and strength == 0


def _prior_factor(prior, dtype):
    """weight / num_examples, the multiplier of a prior's -log p."""
    return _scalar(prior.weight, dtype) / float(prior.num_examples)


def soft_threshold(x, threshold):
    """sign(x) max(|x| - threshold, 0): exactly 0 where |x| <= threshold."""
    return tf.sign(x) * tf.nn.relu(tf.abs(x) - threshold)


def _group_axes(rank, axis, batch_dims):
    """The axes summed over for a group's norm: all but batch and `axis`."""
    axis = axis % (rank - batch_dims) + batch_dims
    return [i for i in range(batch_dims, rank) if i != axis]


def _group_size(x, axis, batch_dims):
    shape = x.shape[batch_dims:]
    groups = shape[axis]
    return shape.num_elements() // groups if groups else 0


def _tiny(dtype):
    """The smallest positive normal number of a float dtype."""
    if dtype == tf.bfloat16:
        return float(np.finfo(np.float32).tiny)
    return float(np.finfo(dtype.as_numpy_dtype).tiny)


def _norms(x, axes):
    return tf.sqrt(tf.reduce_sum(tf.square(x), axis=axes, keepdims=True))


def block_threshold(x, threshold, axis, batch_dims=0):
    """Each group (index along `axis`) scaled by max(1 - threshold / ||g||, 0).

    A group whose norm is at most `threshold` becomes exactly 0; a zero group
    stays 0 (no division by its zero norm).
    """
    norms = _norms(x, _group_axes(x.shape.rank, axis, batch_dims))
    tiny = tf.constant(_tiny(x.dtype), x.dtype)
    return x * (tf.nn.relu(norms - threshold) / tf.maximum(norms, tiny))


def _matrices(x, batch_dims):
    """x as a batch of matrix views (Dense as is, convolutions reshaped)."""
    shape = x.shape
    inner = shape[batch_dims:]
    if inner.rank is None or not 2 <= inner.rank <= 5:
        raise ValueError(
            "Expected a kernel of rank 2 (Dense) or 3 to 5 (Conv1D/2D/3D). "
            f"Received: x.shape={inner}")
    return tf.reshape(x, shape[:batch_dims].as_list() + [
        math.prod(inner[:-1]), inner[-1]])


def singular_value_threshold(x, threshold, batch_dims=0):
    """U diag(max(s - threshold, 0)) V^T of each matrix view of x."""
    matrices = _matrices(x, batch_dims)
    s, u, v = tf.linalg.svd(matrices)
    shrunk = tf.nn.relu(s - threshold)
    return tf.reshape(
        tf.matmul(u * shrunk[..., None, :], v, adjoint_b=True), x.shape)


def group_axes(regularizer, rank, batch_dims=0):
    """The axes over which `prox` takes one step per group for
    `regularizer` on a weight of `rank` (NuclearNorm: all but the batch
    axes), or None where each weight takes its own."""
    kind = type(regularizer)
    if kind in (structured.GroupLasso, structured.SparseGroupLasso):
        return _group_axes(rank, regularizer.axis, batch_dims)
    if kind is structured.NuclearNorm:
        return list(range(batch_dims, rank))
    return None


def _group_step(step, axes):
    """One step per group from per-weight steps eta_i: eta / mean(D_i) with
    D_i = eta / eta_i, the harmonic mean of eta_i over `axes`. A step of
    size 1 along `axes` is one per group already."""
    axes = [axis for axis in axes if step.shape.rank and step.shape[axis] != 1]
    if not axes:
        return step
    return 1.0 / tf.reduce_mean(1.0 / step, axis=axes, keepdims=True)


def prox(regularizer, x, step, batch_dims=0):
    """prox_{step R}(x) for `regularizer` R, or None without a closed form.

    Args:
      regularizer: The penalty R (a Keras regularizer).
      x: Float tensor: weights, with `batch_dims` leading axes stacking
        weights of one shape (an elementwise R takes any shape).
      step: The step size eta > 0: a scalar (Python float or tensor), or a
        tensor of x's shape, each weight's own eta_i (the prox in the
        diagonal metric diag(eta / eta_i)). A group penalty then takes one
        step per group (NuclearNorm: per matrix), the harmonic mean of its
        eta_i, so that the whole group can land on 0; it also takes that
        step directly, of size 1 along `group_axes`.
      batch_dims: Number of leading stacking axes (structured penalties).
    """
    dtype = x.dtype
    step = tf.cast(step, dtype)
    kind = type(regularizer)
    if kind in (regularizers.L1, regularizers.L2, regularizers.L1L2) or (
            kind in _KERAS_ELEMENTWISE):
        l1 = getattr(regularizer, "l1", 0.0)
        l2 = getattr(regularizer, "l2", 0.0)
        # A Python-number zero drops its part (full passes fewer).
        if not _is_zero(l1):
            x = soft_threshold(x, step * _scalar(l1, dtype))
        if not _is_zero(l2):
            x = x * (1.0 / (1.0 + 2.0 * step * _scalar(l2, dtype)))
        return x
    if kind is priors.Laplace:
        factor = _prior_factor(regularizer, dtype)
        centered = x - regularizer.loc if regularizer.loc else x
        shrunk = soft_threshold(centered, step * factor / regularizer.scale)
        return shrunk + regularizer.loc if regularizer.loc else shrunk
    if kind is priors.Normal:
        factor = _prior_factor(regularizer, dtype)
        precision = 1.0 / regularizer.scale / regularizer.scale
        loc = regularizer.loc
        return loc + (x - loc) / (1.0 + step * factor * precision)
    if kind in (structured.GroupLasso, structured.SparseGroupLasso):
        step = _group_step(step, group_axes(regularizer, x.shape.rank,
                                            batch_dims))
        if kind is structured.SparseGroupLasso:
            x = soft_threshold(x, step * _scalar(regularizer.l1, dtype))
        size = _group_size(x, regularizer.axis, batch_dims)
        threshold = step * _scalar(regularizer.factor, dtype) * math.sqrt(size)
        return block_threshold(x, threshold, regularizer.axis, batch_dims)
    if kind is structured.NuclearNorm:
        step = _group_step(step, group_axes(regularizer, x.shape.rank,
                                            batch_dims))
        if step.shape.rank:
            # One step per matrix, against its singular values' axis.
            step = tf.reshape(step, step.shape[:batch_dims] + [1])
        return singular_value_threshold(
            x, step * _scalar(regularizer.factor, dtype), batch_dims)
    return None


def _student_like(x, loc, inverse_width, coefficient):
    """d/dx coefficient log1p(z^2), z = inverse_width (x - loc)."""
    z = (x - loc if loc else x) * inverse_width
    return (2.0 * inverse_width * coefficient) * z / (1.0 + tf.square(z))


def prox_parts(regularizer, x, step):
    """prox_{step R}(x) as (soft_threshold(x, step l1), 1 / (1 + 2 step l2)).

    For R(w) = sum_i l1 |w_i| + l2 w_i^2 (`composes_with_groups`), whose
    prox is the threshold times the scale. The scale is a Python 1.0 where
    R has no l2 part.

    Mathematical details:

    Next to G(w) = sum_g c_g ||w_g||_2 over non-overlapping groups, the
    prox of the sum is exact by composition (the sparse group lasso's prox,
    Friedman, Hastie and Tibshirani 2010; Simon et al. 2013, eq. 9):

        prox_{eta (R + G)}(v) = prox_{eta G}(soft_threshold(v, eta l1))
                                / (1 + 2 eta l2)

    since the group shrink only rescales a group by a factor in [0, 1],
    which keeps each soft-thresholded weight's sign (|.|'s subgradient),
    and the ridge scaling keeps each group's direction (||.||'s).
    With per-weight steps eta_i each part takes its own step, as when
    applied alone.
    """
    dtype = x.dtype
    step = tf.cast(step, dtype)
    kind = type(regularizer)
    if kind is priors.Laplace:
        factor = _prior_factor(regularizer, dtype)
        return soft_threshold(x, step * factor / regularizer.scale), 1.0
    if kind is priors.Normal:
        factor = _prior_factor(regularizer, dtype)
        return x, 1.0 / (1.0 + step * factor / regularizer.scale
                         / regularizer.scale)
    l1 = getattr(regularizer, "l1", 0.0)
    l2 = getattr(regularizer, "l2", 0.0)
    shrunk = x if _is_zero(l1) else soft_threshold(x, step * _scalar(l1, dtype))
    scale = 1.0 if _is_zero(l2) else 1.0 / (
        1.0 + 2.0 * step * _scalar(l2, dtype))
    return shrunk, scale


def _spike_and_slab(prior, x, factor):
    """x (1 / slab^2 + D sigmoid(t)), t = log_odds - D x^2 / 2 (no log)."""
    spike, slab = prior.spike_scale, prior.slab_scale
    ratio = spike / slab
    k = math.sqrt(0.5 * (1.0 - ratio) * (1.0 + ratio)) / spike  # D = 2 k^2
    log_odds = (math.log1p(-prior.slab_probability)
                - math.log(prior.slab_probability)
                + math.log(slab) - math.log(spike))
    kx = x * k
    t = log_odds - tf.square(kx)
    if log_odds < 30.0:
        # t <= log_odds: exp(t) is finite, and e / (1 + e) is the sigmoid.
        e = tf.exp(t)
        sigmoid = e / (1.0 + e)
    else:
        sigmoid = tf.sigmoid(t)
    precision = 1.0 / slab / slab
    # D x = 2 k (k x), finite where D itself would overflow.
    return factor * (precision * x + (2.0 * k) * kx * sigmoid)


def _horseshoe(prior, x):
    """The Horseshoe penalty's own written-out derivative (tfreg.priors): its
    value's ops, unused, are pruned from a traced step."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        value = prior(x)
    return tf.cast(tape.gradient(value, x), x.dtype)


def gradient(regularizer, x, batch_dims=0):
    """grad R(x) in closed form for `regularizer` R, or None.

    Same arguments as `prox`. At a kink (|x| = 0 for L1, a zero group, a zero
    singular value) it is the subgradient 0 (sign(0) = 0), as the penalties'
    own gradients.
    """
    dtype = x.dtype
    kind = type(regularizer)
    if kind in (regularizers.L1, regularizers.L2, regularizers.L1L2) or (
            kind in _KERAS_ELEMENTWISE):
        # A Python-number zero drops its term (one full pass fewer).
        l1 = getattr(regularizer, "l1", 0.0)
        l2 = getattr(regularizer, "l2", 0.0)
        terms = []
        if not _is_zero(l1):
            terms.append(_scalar(l1, dtype) * tf.sign(x))
        if not _is_zero(l2):
            terms.append((2.0 * _scalar(l2, dtype)) * x)
        return tf.add_n(terms) if terms else tf.zeros_like(x)
    if kind in (structured.GroupLasso, structured.SparseGroupLasso):
        size = _group_size(x, regularizer.axis, batch_dims)
        norms = _norms(x, _group_axes(x.shape.rank, regularizer.axis,
                                      batch_dims))
        unit = x / tf.where(norms > 0, norms, tf.ones_like(norms))
        result = (_scalar(regularizer.factor, dtype) * math.sqrt(size)) * unit
        if kind is structured.SparseGroupLasso:
            result += _scalar(regularizer.l1, dtype) * tf.sign(x)
        return result
    if kind is structured.NuclearNorm:
        _, u, v = tf.linalg.svd(_matrices(x, batch_dims))
        return _scalar(regularizer.factor, dtype) * tf.reshape(
            tf.matmul(u, v, adjoint_b=True), x.shape)
    if kind is priors.Horseshoe:
        return _horseshoe(regularizer, x)
    if kind not in _GRADIENT_ELEMENTWISE:
        return None
    factor = _prior_factor(regularizer, dtype)
    centered = x - regularizer.loc if getattr(regularizer, "loc", 0) else x
    if kind is priors.Normal:
        return (factor / regularizer.scale / regularizer.scale) * centered
    if kind is priors.Laplace:
        return (factor / regularizer.scale) * tf.sign(centered)
    if kind is priors.StudentT:
        df = regularizer.df
        return _student_like(x, regularizer.loc,
                             1.0 / math.sqrt(df) / regularizer.scale,
                             factor * (0.5 * (df + 1.0)))
    if kind is priors.Cauchy:
        return _student_like(x, regularizer.loc, 1.0 / regularizer.scale,
                             factor)
    if kind is priors.SpikeAndSlab:
        return _spike_and_slab(regularizer, x, factor)
    return None
