"""tfreg.proximal: each prox against its numpy definition, gradients against
autodiff of the penalty, eager and XLA, single and stacked weights."""

import numpy as np
import tensorflow as tf
from absl.testing import absltest
from absl.testing import parameterized

import tfreg
from tfreg import _keras
from tfreg import priors
from tfreg import proximal

STEP = 0.3
REGIMES = (("eager", False), ("xla", True))


def _run(function, jit, *args):
    if jit:
        return tf.function(function, jit_compile=True)(*args).numpy()
    return function(*args).numpy()


def _soft(v, t):
    return np.sign(v) * np.maximum(np.abs(v) - t, 0.0)


def _block(v, t, axis):
    others = tuple(i for i in range(v.ndim) if i != axis % v.ndim)
    norms = np.sqrt(np.sum(v * v, axis=others, keepdims=True))
    scale = np.where(norms > t, 1.0 - t / np.where(norms > 0, norms, 1.0), 0.0)
    return v * scale


def _svt(v, t):
    u, s, vt = np.linalg.svd(v.reshape(-1, v.shape[-1]), full_matrices=False)
    return ((u * np.maximum(s - t, 0.0)) @ vt).reshape(v.shape)


def _weights():
    rng = np.random.RandomState(0)
    w = rng.randn(6, 4).astype(np.float32)
    w[0, 0] = 0.0           # an exact zero
    w[1, 1] = 0.05          # below every threshold used
    w[:, 2] = 0.0           # a zero group
    w[:, 3] *= 0.01         # a group below the group threshold
    return w


# (name, regularizer, numpy prox of (v, step)).
PROX_CASES = (
    ("l1", tfreg.L1(0.5), lambda v, s: _soft(v, 0.5 * s)),
    ("l2", tfreg.L2(0.5), lambda v, s: v / (1 + 2 * 0.5 * s)),
    ("l1l2", tfreg.L1L2(0.5, 0.25),
     lambda v, s: _soft(v, 0.5 * s) / (1 + 2 * 0.25 * s)),
    ("keras_l1", _keras.keras.regularizers.L1(0.5),
     lambda v, s: _soft(v, 0.5 * s)),
    ("keras_l2", _keras.keras.regularizers.L2(0.5),
     lambda v, s: v / (1 + s)),
    ("laplace", priors.Laplace(scale=2.0, loc=0.1, num_examples=2),
     lambda v, s: 0.1 + _soft(v - 0.1, s * 0.5 / 2.0)),
    ("normal", priors.Normal(scale=0.5, loc=-0.2, num_examples=4, weight=2.0),
     lambda v, s: -0.2 + (v + 0.2) / (1 + s * 0.5 / 0.25)),
    ("group_lasso", tfreg.GroupLasso(0.4),
     lambda v, s: _block(v, s * 0.4 * np.sqrt(6), -1)),
    ("group_lasso_rows", tfreg.GroupLasso(0.4, axis=0),
     lambda v, s: _block(v, s * 0.4 * np.sqrt(4), 0)),
    ("sparse_group_lasso", tfreg.SparseGroupLasso(l1=0.2, factor=0.4),
     lambda v, s: _block(_soft(v, 0.2 * s), s * 0.4 * np.sqrt(6), -1)),
    ("nuclear_norm", tfreg.NuclearNorm(1.0), lambda v, s: _svt(v, s)),
)


class ProxTest(parameterized.TestCase):

    @parameterized.named_parameters(
        (f"{name}_{regime}", regularizer, reference, jit)
        for name, regularizer, reference in PROX_CASES
        for regime, jit in REGIMES)
    def test_matches_numpy_definition(self, regularizer, reference, jit):
        w = _weights()
        self.assertTrue(proximal.has_prox(regularizer))
        got = _run(lambda x: proximal.prox(regularizer, x, STEP), jit,
                   tf.constant(w))
        # An SVD in float32 is exact to a few eps ||W|| (||W|| ~ 3 here).
        atol = 2e-6 if isinstance(regularizer, tfreg.NuclearNorm) else 2e-7
        np.testing.assert_allclose(got, reference(w.astype(np.float64), STEP),
                                   rtol=2e-6, atol=atol)
        # Zeros are exact where the definition gives exact zeros.
        expected_zero = reference(w.astype(np.float64), STEP) == 0
        np.testing.assert_array_equal(got[expected_zero], 0.0)

    @parameterized.named_parameters(
        (f"{name}_{regime}", regularizer, jit)
        for name, regularizer, _ in PROX_CASES
        for regime, jit in REGIMES)
    def test_stacked_equals_one_by_one(self, regularizer, jit):
        rng = np.random.RandomState(1)
        stack = np.stack([_weights(), rng.randn(6, 4).astype(np.float32)])
        got = _run(lambda x: proximal.prox(regularizer, x, STEP, 1), jit,
                   tf.constant(stack))
        for index in range(2):
            single = _run(lambda x: proximal.prox(regularizer, x, STEP), jit,
                          tf.constant(stack[index]))
            np.testing.assert_allclose(got[index], single, rtol=1e-5,
                                       atol=1e-6)

    @parameterized.named_parameters(*PROX_CASES)
    def test_per_weight_steps(self, regularizer, reference):
        """A step per weight (an adaptive optimizer's metric): elementwise
        penalties use each weight's own, a group the harmonic mean of its
        group's (NuclearNorm: of the whole kernel)."""
        w = _weights()
        steps = np.random.RandomState(1).uniform(0.1, 0.6, w.shape)
        axes = {"GroupLasso": 0, "SparseGroupLasso": 0, "NuclearNorm": None}
        if type(regularizer).__name__ in axes:
            axis = axes[type(regularizer).__name__]
            if getattr(regularizer, "axis", -1) == 0:
                axis = 1
            steps_used = 1.0 / np.mean(1.0 / steps, axis=axis,
                                       keepdims=axis is not None)
        else:
            steps_used = steps
        for _, jit in REGIMES:
            got = _run(lambda x, s: proximal.prox(regularizer, x, s), jit,
                       tf.constant(w), tf.constant(steps, tf.float32))
            np.testing.assert_allclose(
                got, reference(w.astype(np.float64), steps_used), rtol=1e-5,
                atol=1e-6)

    @parameterized.named_parameters(
        ("group_lasso", tfreg.GroupLasso(0.4), [0]),
        ("group_lasso_rows", tfreg.GroupLasso(0.4, axis=0), [1]),
        ("sparse_group_lasso", tfreg.SparseGroupLasso(0.2, 0.4), [0]),
        ("nuclear_norm", tfreg.NuclearNorm(1.0), [0, 1]),
        ("l1", tfreg.L1(0.5), None))
    def test_one_step_per_group(self, regularizer, axes):
        """`group_axes` names the axes of one step; a step of size 1 there
        is taken as is, as the harmonic mean of per-weight steps."""
        w = _weights()
        self.assertEqual(proximal.group_axes(regularizer, w.ndim), axes)
        if axes is None:
            return
        steps = np.random.RandomState(1).uniform(0.1, 0.6, w.shape)
        harmonic = 1.0 / np.mean(1.0 / steps, axis=tuple(axes), keepdims=True)
        for _, jit in REGIMES:
            per_weight = _run(lambda x, s: proximal.prox(regularizer, x, s),
                              jit, tf.constant(w), tf.constant(steps,
                                                               tf.float32))
            per_group = _run(lambda x, s: proximal.prox(regularizer, x, s),
                             jit, tf.constant(w), tf.constant(harmonic,
                                                              tf.float32))
            np.testing.assert_allclose(per_group, per_weight, rtol=1e-5,
                                       atol=1e-6)

    def test_exact_zeros_stay_zero(self):
        w = tf.constant(_weights())
        for regularizer in (tfreg.L1(0.5), tfreg.GroupLasso(0.4),
                            tfreg.SparseGroupLasso(0.2, 0.4)):
            once = proximal.prox(regularizer, w, STEP)
            twice = proximal.prox(regularizer, once, STEP)
            zeros = once.numpy() == 0
            self.assertTrue(zeros.any())
            np.testing.assert_array_equal(twice.numpy()[zeros], 0.0)

    def test_repeated_singular_values(self):
        # Singular values 3, 3, 1: two equal ones shrink alike, one to 0.
        q, _ = np.linalg.qr(np.random.RandomState(2).randn(5, 3))
        matrix = (q * np.array([3.0, 3.0, 1.0])).astype(np.float32)
        for _, jit in REGIMES:
            got = _run(lambda x: proximal.prox(tfreg.NuclearNorm(2.0), x, 0.5),
                       jit, tf.constant(matrix))
            np.testing.assert_allclose(got, _svt(matrix.astype(np.float64), 1.0),
                                       atol=2e-6)
            np.testing.assert_allclose(np.linalg.svd(got, compute_uv=False),
                                       [2.0, 2.0, 0.0], atol=2e-6)

    def test_strength_read_on_every_call(self):
        strength = tfreg.Strength(0.5, name="l1")
        prox = tf.function(
            lambda x: proximal.prox(tfreg.L1(strength), x, 1.0),
            jit_compile=True)
        x = tf.constant([1.0, -0.25])
        np.testing.assert_array_equal(prox(x).numpy(), [0.5, 0.0])
        strength.assign(0.0)
        np.testing.assert_array_equal(prox(x).numpy(), [1.0, -0.25])

    def test_no_closed_form(self):
        for regularizer in (tfreg.Orthogonal(0.1), tfreg.SpectralNorm(0.1),
                            priors.StudentT()):
            self.assertFalse(proximal.has_prox(regularizer))
            self.assertIsNone(proximal.prox(regularizer, tf.ones((2, 2)), 0.1))
        self.assertIsNone(
            proximal.gradient(tfreg.Orthogonal(0.1), tf.ones((2, 2))))


GRADIENT_CASES = (
    ("l1", tfreg.L1(0.5)),
    ("l2", tfreg.L2(0.5)),
    ("l1l2", tfreg.L1L2(0.5, 0.25)),
    ("keras_l1l2", _keras.keras.regularizers.L1L2(0.5, 0.25)),
    ("normal", priors.Normal(scale=0.5, loc=-0.2, num_examples=4, weight=2.0)),
    ("laplace", priors.Laplace(scale=2.0, loc=0.1, num_examples=2)),
    ("student_t", priors.StudentT(df=3.0, scale=0.5, loc=0.1,
                                  num_examples=3)),
    ("cauchy", priors.Cauchy(scale=0.5, loc=-0.1, num_examples=2)),
    ("spike_and_slab", priors.SpikeAndSlab(0.05, 1.0, 0.3, num_examples=2)),
    ("horseshoe", priors.Horseshoe(scale=0.3, num_examples=2)),
    ("group_lasso", tfreg.GroupLasso(0.4)),
    ("sparse_group_lasso", tfreg.SparseGroupLasso(l1=0.2, factor=0.4)),
    ("nuclear_norm", tfreg.NuclearNorm(1.0)),
)


class GradientTest(parameterized.TestCase):

    @parameterized.named_parameters(
        (f"{name}_{regime}", regularizer, jit)
        for name, regularizer in GRADIENT_CASES
        for regime, jit in REGIMES)
    def test_matches_autodiff_of_the_penalty(self, regularizer, jit):
        w = _weights()
        w[:, 1] += 1.0  # away from the kinks of |.| (autodiff picks a side)
        self.assertTrue(proximal.has_gradient(regularizer))

        def autodiff(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                value = regularizer(x)
            return tape.gradient(value, x)

        x = tf.constant(w)
        got = _run(lambda x: proximal.gradient(regularizer, x), jit, x)
        np.testing.assert_allclose(got, _run(autodiff, jit, x), rtol=1e-4,
                                   atol=1e-6)

    @parameterized.named_parameters(
        (name, regularizer) for name, regularizer in GRADIENT_CASES
        if proximal.is_elementwise(regularizer))
    def test_elementwise_gradient_takes_no_log(self, regularizer):
        if isinstance(regularizer, priors.Horseshoe):
            self.skipTest("The Horseshoe's derivative holds a log1p.")
        graph = tf.function(lambda x: proximal.gradient(regularizer, x))
        ops = {op.type for op in graph.get_concrete_function(
            tf.TensorSpec((4, 3), tf.float32)).graph.get_operations()}
        self.assertFalse(ops & {"Log", "Log1p", "Lgamma"}, ops)


if __name__ == "__main__":
    absltest.main()
