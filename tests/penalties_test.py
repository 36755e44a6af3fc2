"""Penalty math: penalties.log1p_sum and penalties.log1p, the log sums of Student-t and Cauchy."""

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

import tfreg
from tfreg import penalties

tfd = tfp.distributions


# The size from which penalties.log1p_sum groups its logs under XLA.
GROUPED = penalties._LOG_GROUP_MIN_ELEMENTS  # pylint: disable=protected-access
BY_LOG = penalties._LOG1P_BY_LOG_BELOW - 1  # pylint: disable=protected-access


def _log1p_sum_ops(size, dtype, jit):
    function = tf.function(penalties.log1p_sum, jit_compile=jit)
    graph = function.get_concrete_function(tf.TensorSpec((size,), dtype)).graph
    return {op.type for op in graph.get_operations()}


def _xla_log1p_sum():
    return tf.function(penalties.log1p_sum, jit_compile=True)


class Log1pSumTest(parameterized.TestCase):
    """penalties.log1p_sum, the log sum of Student-t and Cauchy."""

    def test_form_follows_size_dtype_and_xla(self):
        grouped = _log1p_sum_ops(GROUPED, tf.float32, True)
        self.assertIn("Bitcast", grouped)
        self.assertNotIn("Log1p", grouped)
        for dtype in (tf.float32, tf.float64):
            by_log = _log1p_sum_ops(BY_LOG, dtype, True)
            self.assertIn("Log", by_log)
            self.assertNotIn("Log1p", by_log)
        for size, dtype, jit in ((GROUPED, tf.float32, False),
                                 (BY_LOG, tf.float32, False),
                                 (GROUPED, tf.float64, True),
                                 (GROUPED - 1, tf.float32, True),
                                 (BY_LOG + 1, tf.float32, True)):
            ops = _log1p_sum_ops(size, dtype, jit)
            self.assertIn("Log1p", ops)
            self.assertNotIn("Bitcast", ops)
            self.assertNotIn("Log", ops)

    @parameterized.parameters((GROUPED, tf.float32, 3e-7),
                              (BY_LOG, tf.float32, 3e-7),
                              (BY_LOG, tf.float64, 1e-15))
    def test_every_term_within_rounding(self, size, dtype, rtol):
        # One s per sum (the rest zeros, whose log1p is exactly 0), over 38
        # decades: the series below 1/64, the rounding of 1 + s below 1 and
        # the exponents of huge s. Measured worst 1.6e-7 in float32 for
        # both forms (NumPy's own float32 log1p: 1.3e-7), 2.2e-16 in
        # float64; dropping the rounding term gives 3.8e-6 near 1/64.
        s = np.geomspace(1e-8, 1e30, 4001).astype(dtype.as_numpy_dtype)
        each = tf.function(lambda s: tf.map_fn(
            lambda v: penalties.log1p_sum(tf.pad(v[None], [[0, size - 1]])),
            s), jit_compile=True)
        expected = np.log1p(s.astype(np.float64))
        np.testing.assert_allclose(each(tf.constant(s)), expected, rtol=rtol)

    @parameterized.parameters((tf.float32, 3e-7), (tf.float64, 1e-15))
    def test_elementwise_log1p_within_rounding(self, dtype, rtol):
        # penalties.log1p (SpikeAndSlab's and Horseshoe's softplus and logs):
        # log(1 + s) plus the rounding of 1 + s under XLA, log1p outside.
        s = np.concatenate([[0.0], np.geomspace(1e-30, 1e30, 4001)]).astype(
            dtype.as_numpy_dtype)
        expected = np.log1p(s.astype(np.float64))
        for jit in (False, True):
            with self.subTest(jit=jit):
                function = tf.function(penalties.log1p, jit_compile=jit)
                ops = {op.type for op in function.get_concrete_function(
                    tf.TensorSpec(s.shape, dtype)).graph.get_operations()}
                self.assertEqual("Log1p" in ops, not jit)
                np.testing.assert_allclose(function(tf.constant(s)), expected,
                                           rtol=rtol)

    @parameterized.parameters(1e-6, 1e-3, 0.05, 1.0, 1e4, 1e30)
    def test_sum_matches_float64(self, scale):
        # Not a multiple of the group size, so padded.
        s = (np.abs(np.random.default_rng(0).standard_cauchy(GROUPED + 3))
             * scale).astype(np.float32)
        np.testing.assert_allclose(
            _xla_log1p_sum()(tf.constant(s)),
            np.log1p(s.astype(np.float64)).sum(), rtol=5e-7)

    @parameterized.product(
        priors=((lambda: tfreg.priors.StudentT(3.0, 0.5, loc=0.1),
                 lambda: tfd.StudentT(3.0, 0.1, 0.5)),
                (lambda: tfreg.priors.Cauchy(0.3, loc=-0.2),
                 lambda: tfd.Cauchy(-0.2, 0.3))),
        size=(GROUPED + 5, BY_LOG))
    def test_priors_under_xla_match_tfp_and_eager(self, priors, size):
        # The battery's tensors are below both XLA forms' sizes.
        ours, theirs = priors
        x = np.random.default_rng(1).normal(size=(size,))
        expected = -np.sum(theirs().log_prob(x).numpy())

        def value_and_gradient(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                value = ours()(x)
            return value, tape.gradient(value, x)

        x32 = tf.constant(x, tf.float32)
        value, gradient = tf.function(value_and_gradient, jit_compile=True)(x32)
        eager_value, eager_gradient = value_and_gradient(x32)
        np.testing.assert_allclose(value, expected, rtol=1e-6)
        np.testing.assert_allclose(value, eager_value, rtol=1e-6)
        np.testing.assert_allclose(gradient, eager_gradient, rtol=1e-6,
                                   atol=1e-7)

    @parameterized.product(term=(np.nan, np.inf), size=(GROUPED, BY_LOG))
    def test_non_finite_term_reaches_the_sum(self, term, size):
        s = np.full(size, 0.5, np.float32)
        s[:2] = 1.0, term
        total = _xla_log1p_sum()(tf.constant(s))
        self.assertTrue(np.array_equal(total, term, equal_nan=True))


if __name__ == "__main__":
    absltest.main()
