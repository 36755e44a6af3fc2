"""Penalty math: penalties.total, the sum every penalty takes of its terms."""

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

import tfreg
from tfreg import penalties

tfd = tfp.distributions

# The size from which penalties.total sums rows under XLA:CPU.
ROWS = penalties._TOTAL_BY_ROWS_MIN_ELEMENTS  # pylint: disable=protected-access


def _total_ops(size, dtype, jit):
    function = tf.function(penalties.total, jit_compile=jit)
    graph = function.get_concrete_function(tf.TensorSpec((size,), dtype)).graph
    return {op.type for op in graph.get_operations()}


_XLA_TOTAL = tf.function(penalties.total, jit_compile=True)


class TotalTest(parameterized.TestCase):
    """penalties.total: reduce_sum, or row sums by a matvec under XLA:CPU."""

    def test_rows_only_under_xla_from_the_threshold(self):
        self.assertIn("MatMul", _total_ops(ROWS, tf.float32, True))
        self.assertIn("MatMul", _total_ops(ROWS, tf.float64, True))
        for size, dtype, jit in ((ROWS, tf.float32, False),
                                 (ROWS - 1, tf.float32, True),
                                 (ROWS, tf.float16, True)):
            with self.subTest(size=size, dtype=dtype.name, jit=jit):
                self.assertNotIn("MatMul", _total_ops(size, dtype, jit))

    @parameterized.product(
        size=(ROWS, ROWS + 1000, (1 << 24) + 3),
        dtype=(tf.float32, tf.float64))
    def test_matches_float64_sum(self, size, dtype):
        # Positive terms of very different sizes: a running float32
        # accumulator loses the small ones (-6e-4 at 16M).
        rng = np.random.default_rng(size)
        terms = (rng.normal(size=size) ** 2
                 * rng.choice([1e-3, 1.0, 1e3], size=size))
        terms = terms.astype(dtype.as_numpy_dtype)
        expected = terms.astype(np.float64).sum()
        rtol = 1e-6 if dtype == tf.float32 else 1e-12
        np.testing.assert_allclose(_XLA_TOTAL(tf.constant(terms)), expected,
                                   rtol=rtol)

    @parameterized.product(term=(np.nan, np.inf, -np.inf),
                           size=(ROWS, ROWS + 7))
    def test_non_finite_term_reaches_the_sum(self, term, size):
        for position in (0, size - 1):
            with self.subTest(position=position):
                terms = np.full(size, 0.5, np.float32)
                terms[position] = term
                self.assertTrue(np.array_equal(
                    _XLA_TOTAL(tf.constant(terms)), term, equal_nan=True))

    @parameterized.product(
        priors=((lambda: tfreg.priors.StudentT(3.0, 0.5, loc=0.1),
                 lambda: tfd.StudentT(3.0, 0.1, 0.5)),
                (lambda: tfreg.priors.Cauchy(0.3, loc=-0.2),
                 lambda: tfd.Cauchy(-0.2, 0.3))),
        size=(ROWS + 5, 4095))
    def test_priors_under_xla_match_tfp_and_eager(self, priors, size):
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


if __name__ == "__main__":
    absltest.main()
