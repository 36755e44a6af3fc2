"""Structured regularizers: group lasso, orthogonality, spectral and nuclear
norms, L2-SP, DeCov and KL sparsity.

The math lives in `tfreg.structured_math`; the classes here validate their
arguments, check shapes and hold configs. Weight penalties that need a matrix
use `tfreg.penalties.matrix_view`: Dense kernels `(in, out)` as they are,
convolution kernels `(*kernel_size, in_channels, out_channels)` reshaped to
`(prod(kernel_size) * in_channels, out_channels)`.
"""

import base64
import binascii
import math

import numpy as np
import tensorflow as tf

from tfreg import validation
from tfreg import base
from tfreg import penalties
from tfreg import serialization
from tfreg import structured_math

__all__ = [
    "DeCov",
    "GroupLasso",
    "KLSparsity",
    "L2SP",
    "NuclearNorm",
    "SRIP",
    "SoftOrthogonal",
    "SparseGroupLasso",
    "SpectralNorm",
]

# Bound on the raw bytes of an L2SP reference read from a config (256 MiB).
_MAX_REFERENCE_BYTES = 1 << 28
_REFERENCE_DTYPES = ("float32", "float64")
_REFERENCE_KEYS = ("dtype", "shape", "data")
_FLOAT32_MAX = float(np.finfo(np.float32).max)


@serialization.register
class GroupLasso(base.Regularizer):
    """Group lasso: summed L2 norms of groups of weights (Yuan & Lin 2006).

    Mathematical details:

    With one group `W_g` per index g along `axis` (all entries whose index
    along `axis` is g) and p = W.size / W.shape[axis] entries per group:

        penalty(W) = factor * sum_g sqrt(p) * ||W_g||_2

    The default `axis=-1` makes one group per output unit of a Dense kernel
    and one per filter of a convolution kernel; `axis=-2` groups by input
    unit (or input channel). Whole groups are driven to zero together. The
    gradient of an all-zero group is 0, not NaN. A NaN weight gives NaN, an
    inf one inf (as for L2); a weight with a zero-length axis gives 0.

    References:
      Yuan & Lin (2006). Model selection and estimation in regression with
      grouped variables. JRSS B 68(1).

    Args:
      factor: Non-negative finite float, the strength.
      axis: Int, the axis that indexes the groups (negative counts from the
        end).

    >>> import tensorflow as tf, tfreg
    >>> x = tf.constant([[3.0, 0.0], [4.0, 0.0]])
    >>> round(float(tfreg.GroupLasso(0.5)(x)), 4)  # 0.5 * sqrt(2) * 5
    3.5355
    """

    def __init__(self, factor=0.01, axis=-1):
        self.factor = validation.non_negative("factor", factor)
        self.axis = validation.axis("axis", axis)

    def penalty(self, x):
        _check_axis(x, self.axis)
        return structured_math.group_lasso(
            x, self.axis, penalties.operand(self.factor, x.dtype))


@serialization.register
class SparseGroupLasso(base.Regularizer):
    """Sparse group lasso: group lasso plus elementwise L1 (Simon et al. 2013).

    Mathematical details:

    With groups as in `GroupLasso` (one per index along `axis`, p entries
    each):

        penalty(W) = l1 * sum_i |w_i| + factor * sum_g sqrt(p) * ||W_g||_2

    The L1 term also sparsifies inside the groups that survive.

    References:
      Simon, Friedman, Hastie & Tibshirani (2013). A sparse-group lasso.
      Journal of Computational and Graphical Statistics 22(2).

    Args:
      l1: Non-negative finite float, the elementwise L1 strength.
      factor: Non-negative finite float, the group strength.
      axis: Int, the axis that indexes the groups.

    >>> import tensorflow as tf, tfreg
    >>> x = tf.constant([[3.0, 0.0], [4.0, 0.0]])
    >>> round(float(tfreg.SparseGroupLasso(l1=0.1, factor=0.5)(x)), 4)
    4.2355
    """

    def __init__(self, l1=0.01, factor=0.01, axis=-1):
        self.l1 = validation.non_negative("l1", l1)
        self.factor = validation.non_negative("factor", factor)
        self.axis = validation.axis("axis", axis)

    def penalty(self, x):
        _check_axis(x, self.axis)
        factor = penalties.operand(self.factor, x.dtype)
        if isinstance(self.l1, (int, float)) and self.l1 == 0:
            # Not 0 * sum|w|: NaN where the sum overflows.
            return structured_math.group_lasso(x, self.axis, factor)
        return (penalties.l1(x, self.l1)
                + structured_math.group_lasso(x, self.axis, factor))


class _MatrixPenalty(base.Regularizer):
    """factor * a function of the kernel's matrix view (`_of_matrix`)."""

    def __init__(self, factor=0.01):
        self.factor = validation.non_negative("factor", factor)

    def penalty(self, x):
        matrix = penalties.matrix_view(x, name="kernel")
        return _times_factor(self._of_matrix(matrix), self.factor)

    def _of_matrix(self, matrix):
        raise NotImplementedError


@serialization.register
class SoftOrthogonal(_MatrixPenalty):
    """Soft orthogonality: squared Frobenius distance of the Gram matrix to I.

    Mathematical details:

    With W the kernel's matrix view, shape (n_in, n_out):

        penalty(W) = factor * ||W^T W - I||_F^2   if n_out <= n_in
        penalty(W) = factor * ||W W^T - I||_F^2   otherwise

    i.e. it pushes the columns (output units, filters) to be orthonormal when
    there are at most as many of them as inputs, and the rows otherwise (only
    the smaller Gram matrix can equal the identity). Unlike
    `tfreg.Orthogonal`, which penalizes cosines, it also fixes the norms to 1.

    References:
      Bansal, Chen & Wang (2018). Can we gain more from orthogonality
      regularizations in training deep CNNs? NeurIPS.

    Args:
      factor: Non-negative finite float, the strength.

    >>> import tensorflow as tf, tfreg
    >>> float(tfreg.SoftOrthogonal(1.0)(tf.constant([[2.0, 0.0], [0.0, 1.0]])))
    9.0
    """

    def penalty(self, x):
        # The factor goes inside: G - I may overflow, or its square, where
        # their product with the factor does not.
        return structured_math.soft_orthogonality(
            penalties.matrix_view(x, name="kernel"),
            penalties.operand(self.factor, x.dtype))


class _PowerIteration(_MatrixPenalty):
    """A matrix penalty that power iterations estimate."""

    def __init__(self, factor=0.01, power_iterations=20):
        super().__init__(factor)
        self.power_iterations = validation.integer(
            "power_iterations", power_iterations, minimum=1,
            maximum=structured_math.MAX_POWER_ITERATIONS)


@serialization.register
class SpectralNorm(_PowerIteration):
    """Spectral norm regularization: the squared largest singular value.

    Mathematical details:

    With W the kernel's matrix view and sigma_max its largest singular value:

        penalty(W) = factor * sigma_max(W)^2

    (Yoshida & Miyato use factor / 2.) sigma_max is estimated by exactly
    `power_iterations` steps of the power method from a fixed pseudo-random
    unit vector, so the regularizer is stateless, reproducible and compiles
    with XLA: v <- W^T u / ||W^T u||, u <- W v / ||W v||, sigma = u^T W v.
    The gradient is 2 * sigma * u v^T (u, v held constant), the gradient of
    sigma_max^2 once the iterations have converged; the error shrinks like
    (sigma_2 / sigma_max)^(2 * power_iterations). Raise `power_iterations`
    when the top singular values are close.

    References:
      Yoshida & Miyato (2017). Spectral norm regularization for improving
      the generalizability of deep learning. arXiv:1705.10941.

    Args:
      factor: Non-negative finite float, the strength.
      power_iterations: Int in [1, 2**31 - 1], the number of power-method
        steps.

    >>> import tensorflow as tf, tfreg
    >>> x = tf.constant([[3.0, 0.0], [0.0, 1.0]])
    >>> round(float(tfreg.SpectralNorm(0.5)(x)), 4)
    4.5
    """

    def penalty(self, x):
        # sqrt(factor) sigma_max, squared: sigma_max^2 may overflow where
        # its product with the factor does not.
        return structured_math.squared_spectral_norm(
            penalties.matrix_view(x, name="kernel"), self.power_iterations,
            penalties.operand(self.factor, x.dtype))


@serialization.register
class SRIP(_PowerIteration):
    """Spectral restricted isometry property regularization (SRIP).

    Mathematical details:

    With W the kernel's matrix view, shape (n_in, n_out), and G its smaller
    Gram matrix (W^T W if n_out <= n_in, else W W^T, as in `SoftOrthogonal`):

        penalty(W) = factor * sigma_max(G - I)

    the spectral norm of G - I, i.e. the largest |lambda_i(G) - 1|, by
    `power_iterations` steps of the power method from a fixed start (as in
    `SpectralNorm`). The gradient is W (u v^T + v u^T) for the columns case
    (u, v the estimated top singular vectors of G - I) and is 0 at an exactly
    orthonormal W.

    References:
      Bansal, Chen & Wang (2018). Can we gain more from orthogonality
      regularizations in training deep CNNs? NeurIPS.

    Args:
      factor: Non-negative finite float, the strength.
      power_iterations: As in `SpectralNorm`.

    >>> import tensorflow as tf, tfreg
    >>> x = tf.constant([[2.0, 0.0], [0.0, 1.0]])
    >>> round(float(tfreg.SRIP(0.5)(x)), 4)
    1.5
    """

    def penalty(self, x):
        # The factor goes inside: G's scale s^2 may overflow where
        # factor s^2 does not.
        return structured_math.srip(
            penalties.matrix_view(x, name="kernel"), self.power_iterations,
            penalties.operand(self.factor, x.dtype))


@serialization.register
class NuclearNorm(_MatrixPenalty):
    """Nuclear (trace) norm: the sum of singular values, favouring low rank.

    Mathematical details:

    With W the kernel's matrix view and sigma_i its singular values:

        penalty(W) = factor * sum_i sigma_i(W)

    computed by `tf.linalg.svd`, which compiles with XLA on CPU. The gradient
    is factor * U V^T (reduced SVD), finite for repeated and zero singular
    values (at a zero singular value any U V^T is a subgradient; TensorFlow
    picks the one its SVD returns). A NaN or inf weight gives NaN.

    References:
      Fazel, Hindi & Boyd (2001). A rank minimization heuristic with
      application to minimum order system approximation. ACC.

    Args:
      factor: Non-negative finite float, the strength.

    >>> import tensorflow as tf, tfreg
    >>> x = tf.constant([[3.0, 0.0], [0.0, -1.0]])
    >>> round(float(tfreg.NuclearNorm(0.5)(x)), 4)
    2.0
    """

    def _of_matrix(self, matrix):
        return structured_math.nuclear_norm(matrix)


@serialization.register
class L2SP(base.Regularizer):
    """L2-SP: squared distance to the starting-point (pretrained) weights.

    Mathematical details:

    With W0 the reference weights (same shape as W):

        penalty(W) = factor * sum_i (w_i - w0_i)^2

    (Li et al. write alpha / 2.) The reference is part of the state: its
    config holds the raw little-endian bytes in base64 with dtype and shape,
    so `get_config`, JSON and saved models restore it bit for bit. float16
    and bfloat16 references are stored as float32 (exactly); float64 stays
    float64. Use `tfreg.attach_l2sp(model)` to put it on every kernel of a
    pretrained model.

    References:
      Li, Grandvalet & Davoine (2018). Explicit inductive bias for transfer
      learning with convolutional networks. ICML.

    Args:
      factor: Non-negative finite float, the strength.
      reference: The starting-point weights: an array-like of finite floats
        (numpy array, tensor, variable, nested list), or the dict that
        `get_config` writes.

    >>> import numpy as np, tensorflow as tf, tfreg
    >>> regularizer = tfreg.L2SP(0.5, reference=np.array([1.0, 2.0]))
    >>> float(regularizer(tf.constant([1.0, 0.0])))
    2.0
    """

    def __init__(self, factor=0.01, reference=None):
        self.factor = validation.non_negative("factor", factor)
        self.reference = _reference_array(reference)
        self._largest = float(np.max(np.abs(self.reference), initial=0.0))

    def penalty(self, x):
        if tuple(x.shape) != self.reference.shape:
            raise ValueError(validation.message(
                "x", x, f"a tensor of the shape of `reference`, "
                f"{self.reference.shape}", _tensor_shown(x)))
        if x.dtype != tf.float64 and self._largest > _FLOAT32_MAX:
            # Weights narrower than float64 are computed in float32, where
            # a larger reference value would be inf: an inf penalty and a
            # NaN gradient.
            raise ValueError(_invalid_reference(
                self.reference, f"values of magnitude at most "
                f"{_FLOAT32_MAX:.8g} for weights narrower than float64 "
                "(their penalty is computed in float32)",
                f"<a float64 array of shape {self.reference.shape} whose "
                f"largest magnitude is {self._largest:.3g}>"))
        reference = tf.cast(tf.constant(self.reference), x.dtype)
        return structured_math.squared_distance(
            x, reference, penalties.operand(self.factor, x.dtype))

    def get_config(self):
        config = super().get_config()
        config["reference"] = _encode_reference(self.reference)
        return config

    def __repr__(self):
        return (f"L2SP(factor={self.factor!r}, reference=<"
                f"{self.reference.dtype} array of shape "
                f"{self.reference.shape}>)")


@serialization.register
class DeCov(base.Regularizer):
    """DeCov: decorrelates hidden activations (Cogswell et al. 2016).

    An activity regularizer. Mathematical details:

    With h of shape (N, d) the activations (a layer output of shape
    (batch, ..., d) is reshaped so that every batch entry, time step or pixel
    is one of the N samples), mean m and covariance
    C = (h - m)^T (h - m) / N:

        penalty(h) = factor * 1/2 * (||C||_F^2 - ||diag(C)||_2^2)

    i.e. half the sum of squared off-diagonal covariances; 0 for no samples.
    As for every activity regularizer, Keras divides the value by the batch
    size.

    References:
      Cogswell, Ahmed, Girshick, Zitnick & Batra (2016). Reducing overfitting
      in deep networks by decorrelating representations. ICLR.

    Args:
      factor: Non-negative finite float, the strength.

    >>> import tensorflow as tf, tfreg
    >>> h = tf.constant([[0.0, 0.0], [2.0, 2.0]])
    >>> float(tfreg.DeCov(1.0)(h))
    1.0
    """

    def __init__(self, factor=0.01):
        self.factor = validation.non_negative("factor", factor)

    def penalty(self, x):
        activity = _activity_matrix(x)
        return structured_math.decov(
            activity, penalties.operand(self.factor, activity.dtype))


@serialization.register
class KLSparsity(base.Regularizer):
    """Sparse-autoencoder penalty: KL(target || mean activation) per unit.

    An activity regularizer for activations in [0, 1] (sigmoid).
    Mathematical details:

    With rho = target and rho_j the mean activation of unit j over the N
    samples (a layer output (batch, ..., d) is reshaped to (N, d)), clipped
    to [1e-6, 1 - 1e-6] so that activations in [0, 1] never give inf or NaN:

        penalty(h) = factor * sum_j [rho log(rho / rho_j)
                                     + (1 - rho) log((1 - rho) / (1 - rho_j))]

    The gradient is 0 where the mean is clipped. No samples give 0; a NaN
    or inf activation gives NaN or inf (the clip does not hide it). As for
    every activity regularizer, Keras divides the value by the batch size.

    References:
      Ng (2011). Sparse autoencoder. CS294A lecture notes, Stanford.

    Args:
      factor: Non-negative finite float, the strength.
      target: Float in (0, 1), the desired mean activation rho.

    >>> import tensorflow as tf, tfreg
    >>> h = tf.constant([[0.5], [0.5]])
    >>> round(float(tfreg.KLSparsity(1.0, target=0.5)(h)), 6)
    0.0
    """

    def __init__(self, factor=0.01, target=0.05):
        self.factor = validation.non_negative("factor", factor)
        self.target = validation.open_unit("target", target)

    def penalty(self, x):
        activity = _activity_matrix(x)
        return _times_factor(
            structured_math.kl_sparsity(activity, self.target), self.factor)


def _times_factor(value, factor):
    """factor * value, 0 for a zero factor where the value overflows."""
    if isinstance(factor, (int, float)) and factor:
        return factor * value
    return tf.math.multiply_no_nan(value, tf.cast(factor, value.dtype))


def _check_axis(x, axis):
    rank = x.shape.rank
    if rank is None or rank < 1 or not x.shape.is_fully_defined():
        raise ValueError(validation.message(
            "x", x, "a weight tensor of rank >= 1 with a fully defined "
            "(static) shape", _tensor_shown(x)))
    if not -rank <= axis < rank:
        raise ValueError(validation.message(
            "axis", axis, f"an int in [{-rank}, {rank}) for a tensor of rank "
            f"{rank}", note=f" with x.shape={x.shape}"))


def _tensor_shown(x):
    """A tensor as an error message shows it: by its shape."""
    return f"<a tensor of shape {x.shape}>"


def _activity_matrix(x):
    shape = x.shape
    if shape.rank is not None and shape.rank < 2:
        raise ValueError(validation.message(
            "activity", x, "activations of shape (batch, ..., features), "
            "rank >= 2", _tensor_shown(x)))
    # tf_keras' SavedModel loader traces activity regularizers on inputs of
    # unknown rank; the reshape then takes the feature count at run time.
    return structured_math.samples_by_features(x)


def _encode_reference(array):
    """The JSON form of an L2SP reference: dtype, shape, base64 of the bytes.

    The bytes are little-endian, C order, so the encoding is the same on
    every platform and decodes bit for bit.
    """
    array = np.asarray(array, order="C")  # keeps 0-d arrays 0-d
    little = array.astype(array.dtype.newbyteorder("<"), copy=False)
    return {"dtype": array.dtype.name, "shape": list(array.shape),
            "data": base64.b64encode(little.tobytes()).decode("ascii")}


def _decode_reference(config):
    """Inverse of `_encode_reference`; validates every field and the size."""
    def fail(expected):
        raise ValueError(_invalid_reference(config, expected))

    if set(config) != set(_REFERENCE_KEYS):
        fail(f"a dict with exactly the keys {list(_REFERENCE_KEYS)}")
    dtype, shape, data = (config[key] for key in _REFERENCE_KEYS)
    if dtype not in _REFERENCE_DTYPES:
        fail(f"a dtype in {_REFERENCE_DTYPES}")
    if not isinstance(shape, (list, tuple)) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0
            for d in shape):
        fail("a shape given as a list of non-negative ints")
    itemsize = np.dtype(dtype).itemsize
    size = math.prod(shape) * itemsize
    if size > _MAX_REFERENCE_BYTES:
        fail(f"at most {_MAX_REFERENCE_BYTES} bytes of data")
    if not isinstance(data, str) or len(data) != 4 * math.ceil(size / 3):
        fail(f"base64 data of {size} bytes for shape {list(shape)} and "
             f"dtype {dtype}")
    try:
        raw = base64.b64decode(data.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        fail("valid base64 data")
    if len(raw) != size:
        fail(f"base64 data of {size} bytes")
    array = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))
    try:
        # Zero-size shapes pass the size check whatever their other sizes.
        return array.astype(np.dtype(dtype), copy=True).reshape(shape)
    except (ValueError, OverflowError):
        raise ValueError(_invalid_reference(
            config, "a shape that numpy can hold",
            f"<a config of shape {_abbreviated(list(shape))} "
            f"({len(shape)} dimensions)>")) from None


def _abbreviated(value):
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


def _invalid_reference(reference, expected, shown=None):
    """The message for a bad L2SP reference, shown abbreviated."""
    return validation.message(
        "reference", reference, expected,
        _abbreviated(reference) if shown is None else shown)


def _reference_array(reference):
    """The L2SP reference as a read-only float32 or float64 numpy array."""
    array_like = ("an array-like of floats (numpy array, tensor, variable or "
                  "nested list)")
    if isinstance(reference, dict):
        array = _decode_reference(reference)
    else:
        if reference is None or isinstance(reference, (str, bytes, bool)):
            raise TypeError(_invalid_reference(reference, array_like))
        if isinstance(reference, (tf.Tensor, tf.Variable)) or hasattr(
                reference, "numpy"):
            reference = np.asarray(reference.numpy())
        try:
            array = np.asarray(reference)
        except (ValueError, TypeError, OverflowError):
            raise ValueError(_invalid_reference(
                reference, "an array-like of floats of a rectangular shape "
                "that numpy can hold")) from None
        if array.dtype.kind not in "fiu" and array.dtype.name != "bfloat16":
            raise TypeError(_invalid_reference(reference, array_like))
        dtype = np.float64 if array.dtype == np.float64 else np.float32
        if array.dtype.kind in "iu" and array.dtype.itemsize > 2:
            dtype = np.float64
        array = array.astype(dtype)
    if array.nbytes > _MAX_REFERENCE_BYTES:
        raise ValueError(_invalid_reference(
            array, f"at most {_MAX_REFERENCE_BYTES} bytes",
            f"<an array of shape {array.shape} and dtype {array.dtype}>"))
    if not np.all(np.isfinite(array)):
        raise ValueError(_invalid_reference(array, "finite values only"))
    array.setflags(write=False)
    return array
