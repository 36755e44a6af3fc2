"""Prior penalties: Normal, Laplace, StudentT, Cauchy, Horseshoe, SpikeAndSlab, Prior, MeanFieldKL."""

import json
import os
import subprocess
import sys
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
from scipy import integrate
from scipy import special
from scipy import stats
import tensorflow as tf
import tensorflow_probability as tfp

import tfreg
from tests import battery
from tfreg import penalties
from tfreg import priors

keras = battery.keras
tfd = tfp.distributions

NUM_EXAMPLES = 7

# Parity with TFP: |ours - TFP| <= TOLERANCE * |TFP| for the penalty and
# <= TOLERANCE * max|TFP gradient| elementwise for the gradient. Measured
# worst cases are 1.1e-7 (value) and 5e-6 (gradient) in float32 and 1.3e-16
# and 1.6e-14 in float64.
PARITY_TOLERANCE = {tf.float32: 1e-5, tf.float64: 1e-12}


def _away_from_zero(rng, shape):
    """Samples with |x| >= 0.5, where finite differences of spiky priors are exact."""
    x = rng.normal(size=shape)
    return np.sign(x) * (0.5 + np.abs(x))


def _posterior_sample(rng, shape):
    """Means ~ N(0, 1) in [0], unconstrained scales in [-3, 0.5] in [1]."""
    return np.stack([rng.normal(size=shape[1:]),
                     rng.uniform(-3.0, 0.5, size=shape[1:])])


def _softplus(r):
    return np.logaddexp(0.0, r)


def _mean_field_kl_reference(prior_scale, prior_loc, parameterization):
    def reference(posterior):
        mean, rho = posterior[0], posterior[1]
        scale = np.exp(rho) if parameterization == "log" else _softplus(rho)
        kl = (np.log(prior_scale / scale)
              + (scale**2 + (mean - prior_loc)**2) / (2 * prior_scale**2) - 0.5)
        return kl.sum() / NUM_EXAMPLES
    return reference


def _tfp_horseshoe_reference(scale):
    def reference(x):
        log_prob = tfd.Horseshoe(np.float64(scale)).log_prob(x)
        return -np.sum(log_prob.numpy()) / NUM_EXAMPLES
    return reference


def _scipy_reference(distribution):
    return lambda x: -distribution.logpdf(x).sum() / NUM_EXAMPLES


def _spike_and_slab_reference(spike, slab, probability):
    def reference(x):
        log_prob = np.logaddexp(
            np.log(probability) + stats.norm(0, slab).logpdf(x),
            np.log1p(-probability) + stats.norm(0, spike).logpdf(x))
        return -log_prob.sum() / NUM_EXAMPLES
    return reference


def _spike_and_slab_gradient(spike, slab, probability):
    """The mixture's -d log p / dx: each component's x / scale^2 weighted by
    its posterior responsibility at x."""
    def gradient(x):
        slab_log = np.log(probability) + stats.norm(0, slab).logpdf(x)
        spike_log = np.log1p(-probability) + stats.norm(0, spike).logpdf(x)
        spike_share = np.exp(spike_log - np.logaddexp(slab_log, spike_log))
        return x * ((1.0 - spike_share) / slab**2
                    + spike_share / spike**2) / NUM_EXAMPLES
    return gradient


CASES = [
    battery.Case(
        "normal", lambda: priors.Normal(0.7, 0.3, NUM_EXAMPLES),
        reference=_scipy_reference(stats.norm(0.3, 0.7)),
        gradient=lambda x: (x - 0.3) / 0.49 / NUM_EXAMPLES,
        xla_shape=(256, 256)),
    battery.Case(
        "laplace", lambda: priors.Laplace(0.7, 0.3, NUM_EXAMPLES),
        reference=_scipy_reference(stats.laplace(0.3, 0.7)),
        gradient=lambda x: np.sign(x - 0.3) / 0.7 / NUM_EXAMPLES),
    battery.Case(
        "student_t", lambda: priors.StudentT(2.5, 0.7, 0.3, NUM_EXAMPLES),
        reference=_scipy_reference(stats.t(2.5, 0.3, 0.7))),
    battery.Case(
        "cauchy", lambda: priors.Cauchy(0.7, 0.3, NUM_EXAMPLES),
        reference=_scipy_reference(stats.cauchy(0.3, 0.7))),
    battery.Case(
        "horseshoe", lambda: priors.Horseshoe(0.7, NUM_EXAMPLES),
        reference=_tfp_horseshoe_reference(0.7), sample=_away_from_zero,
        xla_shape=(256, 256)),
    battery.Case(
        "spike_and_slab",
        lambda: priors.SpikeAndSlab(0.1, 1.5, 0.3, NUM_EXAMPLES),
        reference=_spike_and_slab_reference(0.1, 1.5, 0.3),
        gradient=_spike_and_slab_gradient(0.1, 1.5, 0.3),
        sample=_away_from_zero, xla_shape=(256, 256)),
    battery.Case(
        "prior_gumbel",
        lambda: priors.Prior(tfd.Gumbel(loc=0.2, scale=1.5), NUM_EXAMPLES),
        reference=_scipy_reference(stats.gumbel_r(0.2, 1.5))),
    battery.Case(
        "prior_logistic_spec",
        lambda: priors.Prior({"class_name": "Logistic",
                              "parameters": {"loc": -0.1, "scale": 0.5}},
                             NUM_EXAMPLES),
        reference=_scipy_reference(stats.logistic(-0.1, 0.5))),
    battery.Case(
        "mean_field_kl_softplus",
        lambda: priors.MeanFieldKL(0.8, 0.1, NUM_EXAMPLES),
        reference=_mean_field_kl_reference(0.8, 0.1, "softplus"),
        shapes=((2, 3, 4), (2, 5)), sample=_posterior_sample),
    battery.Case(
        "mean_field_kl_log",
        lambda: priors.MeanFieldKL(0.8, 0.1, NUM_EXAMPLES, "log"),
        reference=_mean_field_kl_reference(0.8, 0.1, "log"),
        shapes=((2, 3, 4), (2, 2, 3, 2)), sample=_posterior_sample),
]


def _tfp_penalty(log_prob, x):
    return -tf.reduce_sum(log_prob(x)) / NUM_EXAMPLES


def _constant(value, dtype):
    return tf.constant(value, dtype)


# Each entry: (our regularizer, TFP's penalty of a tensor x in x's dtype).
TFP_PAIRS = {
    "normal": (
        priors.Normal(0.7, 0.3, NUM_EXAMPLES),
        lambda x: _tfp_penalty(tfd.Normal(_constant(0.3, x.dtype),
                                          _constant(0.7, x.dtype)).log_prob, x)),
    "laplace": (
        priors.Laplace(0.7, 0.3, NUM_EXAMPLES),
        lambda x: _tfp_penalty(tfd.Laplace(_constant(0.3, x.dtype),
                                           _constant(0.7, x.dtype)).log_prob, x)),
    "student_t": (
        priors.StudentT(2.5, 0.7, 0.3, NUM_EXAMPLES),
        lambda x: _tfp_penalty(tfd.StudentT(
            _constant(2.5, x.dtype), _constant(0.3, x.dtype),
            _constant(0.7, x.dtype)).log_prob, x)),
    "cauchy": (
        priors.Cauchy(0.7, 0.3, NUM_EXAMPLES),
        lambda x: _tfp_penalty(tfd.Cauchy(_constant(0.3, x.dtype),
                                          _constant(0.7, x.dtype)).log_prob, x)),
    "horseshoe": (
        priors.Horseshoe(0.7, NUM_EXAMPLES),
        lambda x: _tfp_penalty(
            tfd.Horseshoe(_constant(0.7, x.dtype)).log_prob, x)),
    "spike_and_slab": (
        priors.SpikeAndSlab(0.05, 1.5, 0.3, NUM_EXAMPLES),
        lambda x: _tfp_penalty(tfd.MixtureSameFamily(
            tfd.Categorical(probs=_constant([0.3, 0.7], x.dtype)),
            tfd.Normal(_constant(0.0, x.dtype),
                       _constant([1.5, 0.05], x.dtype))).log_prob, x)),
}


def _extreme_weights():
    """+-10^e for e in -6..6, around 0 and around the priors' loc of 0.3."""
    magnitudes = np.array([10.0**e for e in range(-6, 7)])
    around_zero = np.concatenate([magnitudes, -magnitudes])
    return np.concatenate([around_zero, 0.3 + around_zero])


def _random_weights(rng):
    """Normal weights at three very different scales."""
    return (rng.normal(size=(30, 20))
            * rng.choice([0.01, 1.0, 30.0], size=(30, 20)))


def _assert_parity(test, ours, theirs, dtype):
    tolerance = PARITY_TOLERANCE[dtype]
    value, gradient = ours
    expected_value, expected_gradient = theirs
    test.assertEqual(value.dtype, dtype)
    np.testing.assert_allclose(value, expected_value, rtol=tolerance)
    np.testing.assert_allclose(
        gradient, expected_gradient, rtol=0,
        atol=tolerance * np.max(np.abs(expected_gradient)))


class PriorsTest(battery.battery(CASES)):

    # -- The battery's save/load test uses a Dense kernel of shape (3, 4); a
    # MeanFieldKL weight must have shape (2, ...), so for it these two
    # replace the generated tests with a save/load of a variational layer.

    def test_save_and_load_in_model_mean_field_kl_softplus(self):
        self._check_variational_save_and_load("softplus")

    def test_save_and_load_in_model_mean_field_kl_log(self):
        self._check_variational_save_and_load("log")

    def _check_variational_save_and_load(self, parameterization):
        regularizer = priors.MeanFieldKL(0.8, 0.1, NUM_EXAMPLES,
                                         parameterization)
        inputs = keras.Input((3,))
        layer = VariationalDense(4, posterior_regularizer=regularizer)
        model = keras.Model(inputs, layer(inputs))
        x = tf.constant(self.rng.normal(size=(2, 3)), tf.float32)
        model(x)
        before = np.array([np.asarray(loss) for loss in model.losses])
        self.assertLen(before, 1)
        np.testing.assert_allclose(
            before[0], regularizer(layer.posterior), rtol=1e-6)
        for save_format in battery.SAVE_FORMATS:
            with self.subTest(save_format=save_format), \
                    tempfile.TemporaryDirectory() as directory:
                loaded = battery.save_and_load(
                    model, directory, save_format)
                restored = loaded.layers[-1].posterior_regularizer
                self.assertIs(type(restored), priors.MeanFieldKL)
                self.assertEqual(restored.get_config(),
                                 regularizer.get_config())
                loaded(x)
                np.testing.assert_array_equal(
                    [np.asarray(loss) for loss in loaded.losses], before)

    # -- Parity with TFP.

    @parameterized.product(name=sorted(TFP_PAIRS),
                           dtype=(tf.float32, tf.float64),
                           weights=("random", "extreme"))
    def test_matches_tfp(self, name, dtype, weights):
        ours, theirs = TFP_PAIRS[name]
        x = (_random_weights(self.rng) if weights == "random"
             else _extreme_weights())
        x = tf.constant(x, dtype)
        _assert_parity(self, battery.value_and_gradient(ours, x),
                       battery.value_and_gradient(theirs, x), dtype)

    @parameterized.product(name=sorted(TFP_PAIRS),
                           dtype=(tf.float32, tf.float64))
    def test_fast_form_matches_log_prob(self, name, dtype):
        # The penalty's written-out sum and derivative against autodiff of
        # the elementwise `log_prob`, including weights near 0 where TFP's
        # Horseshoe density is infinite. There autodiff of the Horseshoe's
        # log_prob overflows (through g / u^2) where the true derivative,
        # about -1 / (x log(1 / u)), is finite; the written-out one must be.
        prior = TFP_PAIRS[name][0]
        x = tf.constant(np.concatenate([
            _extreme_weights(), _random_weights(self.rng).ravel(),
            [0.0, 1e-30, -1e-20, 1e-12]]), dtype)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            fast = prior.negative_log_prob_sum(x)
            reference = -tf.reduce_sum(prior.log_prob(x))
        gradient = tape.gradient(fast, x).numpy()
        expected = tape.gradient(reference, x).numpy()
        self.assertTrue(np.all(np.isfinite(gradient)))
        finite = np.isfinite(expected)
        if name != "horseshoe":
            self.assertTrue(np.all(finite))
        _assert_parity(self, (fast, gradient[finite]),
                       (reference, expected[finite]), dtype)

    @parameterized.product(parameterization=("softplus", "log"),
                           dtype=(tf.float32, tf.float64))
    def test_mean_field_kl_matches_tfp(self, parameterization, dtype):
        regularizer = priors.MeanFieldKL(0.8, 0.1, NUM_EXAMPLES,
                                         parameterization)
        transform = tf.exp if parameterization == "log" else tf.nn.softplus

        def theirs(posterior):
            posterior_normal = tfd.Normal(posterior[0], transform(posterior[1]))
            prior = tfd.Normal(_constant(0.1, dtype), _constant(0.8, dtype))
            kl = tfd.kl_divergence(posterior_normal, prior)
            return tf.reduce_sum(kl) / NUM_EXAMPLES

        mean = np.concatenate([self.rng.normal(size=40),
                               [1e-6, -1e-3, 1e3, -1e5]])
        rho = np.concatenate([self.rng.uniform(-8, 4, size=40),
                              [-10.0, -5.0, 3.0, 8.0]])
        x = tf.constant(np.stack([mean, rho]), dtype)
        _assert_parity(self, battery.value_and_gradient(regularizer, x),
                       battery.value_and_gradient(theirs, x), dtype)

    def test_prior_matches_named_prior(self):
        x = tf.constant(self.rng.normal(size=(5, 6)), tf.float64)
        for prior, named in (
                (priors.Prior(tfd.Normal(0.3, 0.7), 3),
                 priors.Normal(0.7, 0.3, 3)),
                (priors.Prior(tfd.StudentT(df=2.5, loc=0.3, scale=0.7), 3),
                 priors.StudentT(2.5, 0.7, 0.3, 3)),
                (priors.Prior(tfd.Horseshoe(scale=0.7), 3),
                 priors.Horseshoe(0.7, 3))):
            with self.subTest(prior=prior):
                value, gradient = battery.value_and_gradient(prior, x)
                named_value, named_gradient = battery.value_and_gradient(named, x)
                np.testing.assert_allclose(value, named_value, rtol=1e-12)
                np.testing.assert_allclose(gradient, named_gradient,
                                           rtol=1e-12, atol=1e-14)

    # -- Where TFP fails: bfloat16 StudentT, float16 Horseshoe gradients.

    def test_student_t_in_bfloat16(self):
        x = tf.constant(self.rng.normal(size=(8, 8)) * 3, tf.bfloat16)
        value, gradient = battery.value_and_gradient(priors.StudentT(), x)
        self.assertEqual(value.dtype, tf.float32)
        self.assertEqual(gradient.dtype, tf.bfloat16)
        reference = -stats.t(3.0).logpdf(tf.cast(x, tf.float64).numpy()).sum()
        np.testing.assert_allclose(value, reference, rtol=2e-5)
        self.assertTrue(np.all(np.isfinite(tf.cast(gradient, tf.float32))))

    def test_horseshoe_gradient_is_finite_in_float16(self):
        # TFP's float16 value is inf and its gradient NaN for |w| <= 1e-3.
        # Here the gradient is finite wherever the exact one fits in float16
        # (|w / scale| >= 2e-6) and 0 at w = 0.
        small = self.rng.normal(size=64)
        x = np.concatenate([np.sign(small) * (1e-4 + 0.01 * np.abs(small)),
                            self.rng.normal(size=64),
                            [0.0, -0.0, 2e-6, -1e-5, 1e-3, 6e4]])
        x = tf.constant(x, tf.float16)
        value, gradient = battery.value_and_gradient(priors.Horseshoe(), x)
        self.assertTrue(np.isfinite(value.numpy()))
        gradient = tf.cast(gradient, tf.float32).numpy()
        self.assertTrue(np.all(np.isfinite(gradient)), gradient)
        self.assertEqual(gradient[128], 0.0)
        # It is float32's gradient on the same values, rounded to float16.
        x32 = tf.cast(x, tf.float32)
        _, gradient32 = battery.value_and_gradient(priors.Horseshoe(), x32)
        np.testing.assert_allclose(gradient, gradient32, rtol=1e-3)

    def test_horseshoe_float16_gradient_overflows_only_beyond_float16(self):
        # At float16's smallest subnormal the exact gradient is ~1e6 > 65504.
        x = tf.constant([6e-8], tf.float16)
        _, gradient32 = battery.value_and_gradient(priors.Horseshoe(),
                                            tf.cast(x, tf.float32))
        self.assertGreater(float(gradient32[0]), 65504.0)
        _, gradient = battery.value_and_gradient(priors.Horseshoe(), x)
        self.assertEqual(float(gradient[0]), np.inf)

    @parameterized.parameters(1e-25, 0.7)
    def test_horseshoe_far_tail_where_u_overflows_float32(self, scale):
        # u = (w / scale)^2 / 2 overflows float32 for |w / scale| > 2.6e19,
        # e.g. any weight near 1 under scale=1e-25; there TFP's float32 value
        # is NaN. Beyond u = 1e17 the penalty is log(u / g) + c, computed
        # from log|w|: it must match TFP in float64, where u still fits, on
        # both sides of that switch, and be finite and equal in float32.
        switch = np.sqrt(2.0 * 1e17) * scale
        x = np.concatenate([
            switch * np.array([0.5, 0.999999, 1.000001, 3.0, -2.0, 1e5]),
            self.rng.normal(size=8)])
        prior = priors.Horseshoe(scale)

        def tfp_penalty(x):
            return -tf.reduce_sum(tfd.Horseshoe(np.float64(scale)).log_prob(x))

        expected = battery.value_and_gradient(tfp_penalty, tf.constant(x))
        for dtype, rtol in ((tf.float64, 1e-12), (tf.float32, 1e-5)):
            with self.subTest(dtype=dtype.name):
                value, gradient = battery.value_and_gradient(
                    prior, tf.constant(x, dtype))
                self.assertTrue(np.all(np.isfinite(gradient.numpy())))
                np.testing.assert_allclose(value, expected[0], rtol=rtol)
                np.testing.assert_allclose(gradient, expected[1], rtol=rtol)
                np.testing.assert_allclose(
                    -tf.reduce_sum(prior.log_prob(tf.constant(x, dtype))),
                    expected[0], rtol=rtol)

    def test_horseshoe_scale_whose_inverse_overflows_the_dtype(self):
        prior = priors.Horseshoe(1e-40)
        with self.assertRaisesRegex(ValueError, r"float32.*scale=1e-40"):
            prior(tf.ones((3,)))
        value = prior(tf.ones((3,), tf.float64))
        self.assertTrue(np.isfinite(value.numpy()))

    # -- Extreme parameters. Every constant a penalty applies to the weights
    # must be a normal number of the dtype it is computed in: beyond the
    # largest it is inf, below the smallest TensorFlow flushes it to 0.

    @parameterized.named_parameters(
        # The penalty scales (w - loc) before squaring, so only 1 / scale,
        # not 1 / scale^2, must fit: scale=1e-20 in float32 (1 / scale^2
        # overflows it: NaN), scale=1e-200 in float64 (ZeroDivisionError).
        ("cauchy_float32", lambda: priors.Cauchy(1e-20, num_examples=7),
         tf.float32, 1e-20, stats.cauchy(0, 1e-20), 1.0),
        ("student_t_float32",
         lambda: priors.StudentT(2.5, 1e-20, num_examples=7), tf.float32,
         1e-20, stats.t(2.5, 0, 1e-20), 2.5),
        ("cauchy_float64", lambda: priors.Cauchy(1e-200, num_examples=7),
         tf.float64, 1e-200, stats.cauchy(0, 1e-200), 1.0),
        ("student_t_float64",
         lambda: priors.StudentT(2.5, 1e-200, num_examples=7), tf.float64,
         1e-200, stats.t(2.5, 0, 1e-200), 2.5))
    def test_tiny_scales_where_their_inverse_fits(self, make, dtype, scale,
                                                  distribution, df):
        y = np.array([0.0, 0.0, 0.5, -2.0, 30.0])  # (w - loc) / scale
        x = y * scale
        value, gradient = battery.value_and_gradient(make(),
                                                     tf.constant(x, dtype))
        np.testing.assert_allclose(
            value, -distribution.logpdf(x).sum() / NUM_EXAMPLES,
            rtol=PARITY_TOLERANCE[dtype])
        # -d log p / dw = (df + 1) y / (scale (df + y^2)).
        expected = (df + 1.0) * y / (df + y**2) / scale / NUM_EXAMPLES
        np.testing.assert_allclose(gradient, expected,
                                   rtol=PARITY_TOLERANCE[dtype])

    def test_spike_narrower_than_float32_in_float64(self):
        # Before: 1 / spike_scale^2 raised ZeroDivisionError.
        x = np.array([0.0, 5e-201, -2e-200, 0.5, -3.0])
        value, gradient = battery.value_and_gradient(
            priors.SpikeAndSlab(1e-200, 1.0, 0.5, NUM_EXAMPLES),
            tf.constant(x))
        np.testing.assert_allclose(
            value, _spike_and_slab_reference(1e-200, 1.0, 0.5)(x), rtol=1e-12)
        # Each component's x / scale^2, weighted by its responsibility,
        # with x / spike^2 as (x / spike) / spike.
        slab_log = np.log(0.5) + stats.norm(0, 1.0).logpdf(x)
        spike_log = np.log(0.5) + stats.norm(0, 1e-200).logpdf(x)
        share = np.exp(spike_log - np.logaddexp(slab_log, spike_log))
        expected = ((1.0 - share) * x + share * (x / 1e-200) / 1e-200)
        np.testing.assert_allclose(gradient, expected / NUM_EXAMPLES,
                                   rtol=1e-12)

    @parameterized.parameters(1e8, 1e16, 1e20, 1e100, 1e291)
    def test_student_t_with_large_df(self, df):
        # lgamma(df / 2) - lgamma((df + 1) / 2) cancels to ~ -log(df / 2) / 2
        # while each lgamma grows like df log(df): subtracted as floats it
        # was off by 1e-7 at df=1e8, by 1.3 at 1e16, and math.lgamma
        # overflowed from 5e305 on. The reference takes it from
        # betaln(df / 2, 1 / 2) = lgamma(df / 2) + lgamma(1 / 2)
        # - lgamma((df + 1) / 2), which SciPy evaluates asymptotically.
        x = self.rng.normal(size=40) * 0.7 + 0.3
        y = (x - 0.3) / 0.7
        expected = np.sum(0.5 * (df + 1.0) * np.log1p(y**2 / df)
                          + special.betaln(0.5 * df, 0.5) - 0.5 * np.log(np.pi)
                          + 0.5 * (np.log(df) + np.log(np.pi)) + np.log(0.7))
        prior = priors.StudentT(df, 0.7, 0.3, NUM_EXAMPLES)
        value = prior(tf.constant(x))
        np.testing.assert_allclose(value, expected / NUM_EXAMPLES, rtol=1e-12)
        np.testing.assert_allclose(-tf.reduce_sum(prior.log_prob(x)),
                                   expected, rtol=1e-12)
        if df <= 1e31:  # float32 holds y^2 / df where it counts.
            np.testing.assert_allclose(prior(tf.constant(x, tf.float32)),
                                       expected / NUM_EXAMPLES, rtol=1e-6)

    def test_student_t_with_the_smallest_df(self):
        # df / 2 rounds to 0 (math.lgamma(0) raised); the penalty at 0 is
        # lgamma(df / 2) - lgamma(1 / 2) + log(df pi) / 2
        # = log 2 - log(df) / 2.
        value = priors.StudentT(5e-324)(tf.zeros((3,), tf.float64))
        np.testing.assert_allclose(
            value, 3 * (np.log(2.0) - 0.5 * np.log(5e-324)), rtol=1e-12)

    @parameterized.named_parameters(
        # name, prior, argument, float64 weights, float64 reference.
        ("normal_narrow", lambda: priors.Normal(1e-20, num_examples=7),
         "scale=1e-20", 1e-20 * np.array([0.0, 0.5, -2.0]),
         _scipy_reference(stats.norm(0, 1e-20))),
        ("normal_wide", lambda: priors.Normal(1e19, num_examples=7),
         "scale=1e+19", 1e19 * np.array([0.0, 0.5, -2.0]),
         _scipy_reference(stats.norm(0, 1e19))),
        ("normal_far_loc", lambda: priors.Normal(1.0, 1e39, 7),
         "loc=1e+39", 1e39 * np.array([1.0, 1.5, -2.0]),
         _scipy_reference(stats.norm(1e39, 1.0))),
        ("laplace_narrow", lambda: priors.Laplace(1e-39, num_examples=7),
         "scale=1e-39", 1e-39 * np.array([0.0, 0.5, -2.0]),
         _scipy_reference(stats.laplace(0, 1e-39))),
        ("cauchy_narrow", lambda: priors.Cauchy(1e-39, num_examples=7),
         "scale=1e-39", 1e-39 * np.array([0.0, 0.5, -2.0]),
         _scipy_reference(stats.cauchy(0, 1e-39))),
        # y^2 / df underflows float32 where (df + 1) / 2 log1p(y^2 / df),
        # which is y^2 / 2, still counts.
        ("student_t_large_df", lambda: priors.StudentT(1e32, num_examples=7),
         "df=1e+32", np.array([0.0, 1e-6, 0.5, -2.0]),
         _scipy_reference(stats.norm(0, 1))),
        ("spike_and_slab_narrow_spike",
         lambda: priors.SpikeAndSlab(1e-200, 1.0, 0.5, 7),
         "spike_scale=1e-200", np.array([0.0, 5e-201, 0.5, -3.0]),
         _spike_and_slab_reference(1e-200, 1.0, 0.5)),
        ("spike_and_slab_wide_slab",
         lambda: priors.SpikeAndSlab(1.0, 1e20, 0.5, 7),
         "slab_scale=1e+20", np.array([0.0, 0.5, -3.0, 1e19]),
         _spike_and_slab_reference(1.0, 1e20, 0.5)),
        ("horseshoe_wide", lambda: priors.Horseshoe(1e38, 7),
         "scale=1e+38", 1e38 * np.array([0.5, -2.0, 3.0]),
         _tfp_horseshoe_reference(1e38)),
        ("mean_field_kl_narrow",
         lambda: priors.MeanFieldKL(1e-200, 0.0, 7, "log"),
         "prior_scale=1e-200",
         np.array([[0.0, 0.5e-200, -2e-200],
                   np.log([1e-200, 2e-200, 5e-201])]),
         lambda x: np.sum(0.5 * (np.exp(x[1] - np.log(1e-200))**2
                                 + (x[0] / 1e-200)**2 - 1.0)
                          - (x[1] - np.log(1e-200))) / NUM_EXAMPLES),
        ("mean_field_kl_subnormal_loc",
         lambda: priors.MeanFieldKL(1.0, 1e-40, 7, "log"),
         "prior_loc=1e-40", np.array([[0.0, 0.5, -2.0], [0.0, -1.0, 0.5]]),
         _mean_field_kl_reference(1.0, 1e-40, "log")))
    def test_constants_beyond_float32_raise_when_called(
            self, make, received, x, reference):
        prior = make()
        message = (f"{type(prior).__name__} cannot be computed in float32: "
                   f"it needs .*Received: {_escape(received)}\\. Use float64 "
                   "weights\\.$")
        x32 = tf.constant(x, tf.float32)
        for regime, run in (
                ("eager", prior), ("graph", tf.function(prior)),
                ("xla", tf.function(prior, jit_compile=True)),
                ("gradient", tf.function(
                    lambda x: battery.value_and_gradient(prior, x)))):
            with self.subTest(regime=regime):
                with self.assertRaisesRegex(ValueError, message):
                    run(x32)
        if not isinstance(prior, priors.MeanFieldKL):
            with self.assertRaisesRegex(ValueError, message):
                prior.log_prob(x32)
        value, gradient = battery.value_and_gradient(prior, tf.constant(x))
        np.testing.assert_allclose(value, reference(x), rtol=1e-12)
        self.assertTrue(np.all(np.isfinite(gradient.numpy())))

    @parameterized.named_parameters(
        ("normal_wide", priors.Normal, "scale", 1e200,
         "1 / (2 scale^2) within float64's normal range [2.23e-308, "
         "1.8e+308] (1 / (2 scale^2) = 0)"),
        ("normal_narrow", priors.Normal, "scale", 1e-200,
         "1 / (2 scale^2) within float64's normal range [2.23e-308, "
         "1.8e+308] (1 / (2 scale^2) = inf)"),
        ("normal_subnormal_loc", priors.Normal, "loc", 1e-310,
         "loc = 0 or within float64's normal range [2.23e-308, 1.8e+308]"),
        ("laplace_subnormal", priors.Laplace, "scale", 1e-310,
         "1 / scale within float64's normal range [2.23e-308, 1.8e+308] "
         "(1 / scale = inf)"),
        ("cauchy_wide", priors.Cauchy, "scale", 1e308,
         "1 / scale within float64's normal range [2.23e-308, 1.8e+308] "
         "(1 / scale = 1e-308)"),
        ("student_t_df", priors.StudentT, "df", 1e308,
         "df <= 9.98e+291 in float64 (beyond it ((w - loc) / scale)^2 / df "
         "underflows where its log1p times (df + 1) / 2 still counts)"),
        ("student_t_scale", priors.StudentT, "scale", 1e-310,
         "1 / (sqrt(df) scale) within float64's normal range [2.23e-308, "
         "1.8e+308] (1 / (sqrt(df) scale) = inf)"),
        ("horseshoe_subnormal", priors.Horseshoe, "scale", 1e-310,
         "sqrt(2) / scale within float64's normal range [2.23e-308, "
         "1.8e+308] (sqrt(2) / scale = inf)"),
        ("spike_subnormal", priors.SpikeAndSlab, "spike_scale", 1e-310,
         "sqrt((1 / spike_scale^2 - 1 / slab_scale^2) / 2) within float64's "
         "normal range [2.23e-308, 1.8e+308] (sqrt((1 / spike_scale^2 - "
         "1 / slab_scale^2) / 2) = inf)"),
        ("slab_wide", priors.SpikeAndSlab, "slab_scale", 1e160,
         "1 / (2 slab_scale^2) within float64's normal range [2.23e-308, "
         "1.8e+308] (1 / (2 slab_scale^2) = 5e-321)"),
        ("kl_prior_scale", priors.MeanFieldKL, "prior_scale", 1e308,
         "1 / prior_scale within float64's normal range [2.23e-308, "
         "1.8e+308] (1 / prior_scale = 1e-308)"),
        ("kl_subnormal_prior_loc", priors.MeanFieldKL, "prior_loc", 1e-320,
         "prior_loc = 0 or within float64's normal range [2.23e-308, "
         "1.8e+308]"))
    def test_rejects_parameters_that_no_dtype_can_hold(
            self, cls, argument, value, expected):
        with self.assertRaisesRegex(ValueError, "^" + _escape(
                f"Invalid value for argument `{argument}`. Expected "
                f"{expected}. Received: {argument}={value!r}") + "$"):
            cls(**{argument: value})
        config = {"class_name": cls.__name__, "config": {argument: value}}
        with self.assertRaisesRegex(ValueError, f"argument `{argument}`"):
            tfreg.deserialize(config)

    @parameterized.named_parameters(*[(case.name, case) for case in CASES])
    def test_finite_in_every_dtype_including_zero(self, case):
        regularizer = case.make()
        shape = case.shapes[0]
        x = np.zeros(shape)
        x.flat[::2] = self.rng.normal(size=x.size)[::2] * 5
        for dtype in battery.DTYPES:
            with self.subTest(dtype=dtype.name):
                value, gradient = battery.value_and_gradient(
                    regularizer, tf.constant(x, dtype))
                self.assertTrue(np.isfinite(value.numpy()))
                self.assertTrue(np.all(np.isfinite(
                    tf.cast(gradient, tf.float32).numpy())))

    def test_horseshoe_at_zero_is_finite_with_zero_gradient(self):
        for dtype in (tf.float32, tf.float64):
            x = tf.zeros((3,), dtype)
            value, gradient = battery.value_and_gradient(priors.Horseshoe(), x)
            self.assertTrue(np.isfinite(value.numpy()))
            np.testing.assert_array_equal(gradient, np.zeros(3))

    def test_horseshoe_approximates_exact_marginal(self):
        # Exact: p(w) = int_0^inf N(w; 0, lambda^2) 2 / (pi (1 + lambda^2)),
        # integrated over t = log(lambda).
        def exact_density(w):
            def integrand(t):
                lam = np.exp(t)
                normal = np.exp(-0.5 * (w / lam)**2) / (lam * np.sqrt(2 * np.pi))
                return normal * 2 / (np.pi * (1 + lam**2)) * lam
            center = np.log(abs(w))
            value, _ = integrate.quad(integrand, center - 40, center + 40,
                                      points=[center, 0.0], limit=500,
                                      epsabs=0, epsrel=1e-12)
            return value

        w = np.logspace(-6, 6, 49)
        approximate = np.exp(priors.horseshoe_log_prob(
            tf.constant(w, tf.float64), 1.0).numpy())
        exact = np.array([exact_density(v) for v in w])
        # Documented accuracy: within 0.07% everywhere, 1e-8 in the tails.
        np.testing.assert_allclose(approximate, exact, rtol=7e-4)
        tails = (w < 0.01) | (w > 100)
        np.testing.assert_allclose(approximate[tails], exact[tails], rtol=1e-8)

    def test_spike_and_slab_never_underflows(self):
        # Far outside the spike both Gaussian densities underflow float32.
        x = tf.constant([30.0, -60.0, 1e3], tf.float32)
        value, gradient = battery.value_and_gradient(
            priors.SpikeAndSlab(0.01, 1.0, 0.5), x)
        expected = -np.sum(np.log(0.5) + stats.norm(0, 1).logpdf(x.numpy()))
        np.testing.assert_allclose(value, expected, rtol=1e-6)
        np.testing.assert_allclose(gradient, x.numpy(), rtol=1e-6)

    @parameterized.parameters(False, True)
    def test_spike_and_slab_with_a_spike_too_narrow_for_float32(self, jit):
        # D = 1 / spike_scale^2 = 1e40 overflows float32, not float64.
        regularizer = priors.SpikeAndSlab(1e-20, 1.0, 0.5)
        x = np.array([0.0, 3e-21, -1e-20, 2e-20, 0.5, -3.0, 1e3])
        compute = tf.function(battery.value_and_gradient, jit_compile=jit)
        value, gradient = compute(regularizer, tf.constant(x, tf.float32))
        np.testing.assert_allclose(
            value, _spike_and_slab_reference(1e-20, 1.0, 0.5)(x) * NUM_EXAMPLES,
            rtol=1e-6)
        np.testing.assert_allclose(
            gradient, _spike_and_slab_gradient(1e-20, 1.0, 0.5)(x)
            * NUM_EXAMPLES, rtol=1e-6)

    def test_mean_field_kl_is_finite_for_very_negative_rho(self):
        x = tf.constant([[0.0, 0.0], [-200.0, -1e4]], tf.float32)
        value, gradient = battery.value_and_gradient(priors.MeanFieldKL(), x)
        # KL ~ -log(scale) = -rho for rho << 0 (mean 0 = prior mean).
        np.testing.assert_allclose(value, 200.0 + 1e4 - 1.0, rtol=1e-6)
        np.testing.assert_allclose(gradient, [[0.0, 0.0], [-1.0, -1.0]])

    def test_mean_field_kl_is_zero_at_the_prior(self):
        rho = np.log(np.expm1(0.8))  # softplus(rho) = 0.8
        x = tf.constant([[0.1] * 3, [rho] * 3], tf.float64)
        value, gradient = battery.value_and_gradient(
            priors.MeanFieldKL(0.8, 0.1), x)
        self.assertAlmostEqual(float(value), 0.0, places=12)
        np.testing.assert_allclose(gradient, np.zeros((2, 3)), atol=1e-12)

    def test_mean_field_kl_rejects_other_shapes(self):
        for shape in ((3, 4), (4,), ()):
            with self.subTest(shape=shape):
                with self.assertRaisesRegex(
                        ValueError, r"MeanFieldKL expects a posterior weight "
                        r"of shape \(2, \.\.\.\).*Received: posterior.shape="):
                    priors.MeanFieldKL()(tf.ones(shape))

    def test_variational_layer_trains_in_a_model(self):
        rng = np.random.default_rng(1)
        x = rng.normal(size=(64, 3)).astype(np.float32)
        y = (x @ np.array([[1.0], [-2.0], [0.5]])).astype(np.float32)
        inputs = keras.Input((3,))
        layer = VariationalDense(
            1, posterior_regularizer=priors.MeanFieldKL(num_examples=64))
        model = keras.Model(inputs, layer(inputs))
        model.compile(optimizer=keras.optimizers.Adam(0.1), loss="mse")
        kl_before = float(layer.posterior_regularizer(layer.posterior))
        history = model.fit(x, y, epochs=30, batch_size=64, verbose=0)
        self.assertLess(history.history["loss"][-1],
                        0.2 * history.history["loss"][0])
        self.assertNotEqual(
            float(layer.posterior_regularizer(layer.posterior)), kl_before)
        np.testing.assert_allclose(
            np.asarray(layer.posterior)[0].ravel(), [1.0, -2.0, 0.5],
            atol=0.3)

    # -- Meaning.

    @parameterized.named_parameters(
        ("normal", priors.Normal), ("laplace", priors.Laplace),
        ("student_t", priors.StudentT), ("cauchy", priors.Cauchy),
        ("horseshoe", priors.Horseshoe), ("spike_and_slab", priors.SpikeAndSlab),
        ("mean_field_kl", priors.MeanFieldKL))
    def test_weight_multiplies_the_penalty(self, cls):
        x = tf.constant(self.rng.normal(size=(2, 4, 3)), tf.float64)
        np.testing.assert_allclose(float(cls(weight=0.25)(x)),
                                   0.25 * float(cls()(x)), rtol=1e-12)
        self.assertEqual(float(cls(weight=0.0)(x)), 0.0)
        with self.assertRaisesRegex(
                ValueError, "Invalid value for argument `weight`. Expected a "
                "finite float >= 0. Received: weight=-1"):
            cls(weight=-1)

    def test_normal_gradient_equals_l2(self):
        x = tf.constant(self.rng.normal(size=(6, 5)), tf.float64)
        for scale in (0.1, 0.5, 2.0):
            with self.subTest(scale=scale):
                _, ours = battery.value_and_gradient(priors.Normal(scale=scale), x)
                _, l2 = battery.value_and_gradient(tfreg.L2(1 / (2 * scale**2)), x)
                np.testing.assert_allclose(ours, l2, rtol=1e-12)

    def test_laplace_gradient_equals_l1(self):
        x = tf.constant(self.rng.normal(size=(6, 5)), tf.float64)
        for scale in (0.1, 0.5, 2.0):
            with self.subTest(scale=scale):
                _, ours = battery.value_and_gradient(priors.Laplace(scale=scale), x)
                _, l1 = battery.value_and_gradient(tfreg.L1(1 / scale), x)
                np.testing.assert_allclose(ours, l1, rtol=1e-12)

    def test_num_examples_divides_the_penalty(self):
        x = tf.constant(self.rng.normal(size=(4, 4)), tf.float64)
        for make in (lambda n: priors.Cauchy(num_examples=n),
                     lambda n: priors.SpikeAndSlab(num_examples=n),
                     lambda n: priors.MeanFieldKL(num_examples=n)):
            with self.subTest(prior=make(1)):
                x_ = x[:2] if isinstance(make(1), priors.MeanFieldKL) else x
                np.testing.assert_allclose(
                    make(1000)(x_), make(1)(x_) / 1000, rtol=1e-12)

    def test_mean_loss_plus_normal_prior_is_map(self):
        # Linear regression with Gaussian noise of variance 1/2, so that the
        # per-example negative log-likelihood is the MSE up to a constant;
        # the MAP solution is (X^T X + I / (2 s^2))^-1 X^T y.
        rng = np.random.default_rng(3)
        n, p, scale = 50, 4, 0.3
        x = rng.normal(size=(n, p))
        y = x @ rng.normal(size=(p, 1)) + 0.7 * rng.normal(size=(n, 1))
        w_map = np.linalg.solve(x.T @ x + np.eye(p) / (2 * scale**2),
                                x.T @ y)
        inputs = keras.Input((p,), dtype="float64")
        layer = keras.layers.Dense(
            1, use_bias=False, dtype="float64",
            kernel_regularizer=priors.Normal(scale, num_examples=n))
        model = keras.Model(inputs, layer(inputs))
        layer.kernel.assign(w_map)
        with tf.GradientTape() as tape:
            mse = tf.reduce_mean(tf.square(model(x) - y))
            objective = mse + tf.add_n(model.losses)
        gradient = tape.gradient(objective, layer.kernel)
        np.testing.assert_allclose(gradient, np.zeros((p, 1)), atol=1e-12)

    def test_horseshoe_recovers_sparse_support_better_than_l2(self):
        # 200 features, 20 true nonzeros, 100 training examples, noise 0.5.
        rng = np.random.default_rng(0)
        n, n_val, p, k, noise = 100, 200, 200, 20, 0.5
        support = rng.choice(p, k, replace=False)
        true_w = np.zeros(p)
        true_w[support] = rng.choice([-1, 1], k) * rng.uniform(1, 2, k)
        x = rng.normal(size=(n + n_val, p)).astype(np.float32)
        y = (x @ true_w + noise * rng.normal(size=n + n_val)).astype(np.float32)
        x_train, y_train = tf.constant(x[:n]), tf.constant(y[:n])

        def fit(regularizer, steps=1500, learning_rate=0.02):
            @tf.function
            def train():  # Full-batch Adam, written out for both generations.
                w, m, v = tf.zeros(p), tf.zeros(p), tf.zeros(p)
                for step in tf.range(1, steps + 1):
                    with tf.GradientTape() as tape:
                        tape.watch(w)
                        residual = y_train - tf.linalg.matvec(x_train, w)
                        nll = tf.reduce_mean(tf.square(residual)) / (2 * noise**2)
                        objective = nll + regularizer(w)
                    g = tape.gradient(objective, w)
                    m = 0.9 * m + 0.1 * g
                    v = 0.999 * v + 0.001 * tf.square(g)
                    t = tf.cast(step, tf.float32)
                    w -= learning_rate * (m / (1 - 0.9**t)) / (
                        tf.sqrt(v / (1 - 0.999**t)) + 1e-7)
                return w

            w = train().numpy()
            validation_mse = np.mean((x[n:] @ w - y[n:])**2)
            ranks = stats.rankdata(np.abs(w))
            in_support = np.isin(np.arange(p), support)
            hits = len(set(np.argsort(-np.abs(w))[:k]) & set(support))
            auc = ((ranks[in_support].sum() - k * (k + 1) / 2)
                   / (k * (p - k)))
            return validation_mse, hits, auc

        # L2 at its best validation loss over a grid of prior scales.
        l2_mse, l2_hits, l2_auc = min(
            fit(priors.Normal(scale, num_examples=n))
            for scale in (0.1, 0.3, 1.0))
        horseshoe_mse, horseshoe_hits, horseshoe_auc = fit(
            priors.Horseshoe(0.1, num_examples=n))
        # Measured: L2 24.5 / 17 of 20 / 0.986; Horseshoe 10.6 / 19 / 0.999.
        self.assertLess(horseshoe_mse, 0.6 * l2_mse)
        self.assertGreaterEqual(horseshoe_hits, l2_hits + 2)
        self.assertGreater(horseshoe_auc, l2_auc + 0.01)

    # -- Validation.

    @parameterized.named_parameters(
        ("normal_scale", priors.Normal, "scale", "a finite float > 0"),
        ("laplace_scale", priors.Laplace, "scale", "a finite float > 0"),
        ("student_t_df", priors.StudentT, "df", "a finite float > 0"),
        ("student_t_scale", priors.StudentT, "scale", "a finite float > 0"),
        ("cauchy_scale", priors.Cauchy, "scale", "a finite float > 0"),
        ("horseshoe_scale", priors.Horseshoe, "scale", "a finite float > 0"),
        ("spike_scale", priors.SpikeAndSlab, "spike_scale",
         "a finite float > 0"),
        ("slab_scale", priors.SpikeAndSlab, "slab_scale", "a finite float > 0"),
        ("kl_prior_scale", priors.MeanFieldKL, "prior_scale",
         "a finite float > 0"))
    def test_rejects_bad_scales(self, cls, argument, expected):
        for value, error in ((0.0, ValueError), (-1.0, ValueError),
                             (float("nan"), ValueError),
                             (float("inf"), ValueError), (True, TypeError),
                             ("1.0", TypeError), (None, TypeError)):
            with self.subTest(value=value):
                with self.assertRaisesRegex(
                        error, _escape(f"Invalid value for argument "
                                       f"`{argument}`. Expected {expected}. "
                                       f"Received: {argument}={value!r}")):
                    cls(**{argument: value})

    def test_rejects_bad_slab_probability(self):
        for value, error in ((0.0, ValueError), (1.0, ValueError),
                             (1.5, ValueError), (float("nan"), ValueError),
                             (False, TypeError)):
            with self.subTest(value=value):
                with self.assertRaisesRegex(error, _escape(
                        "Invalid value for argument `slab_probability`. "
                        "Expected a float in the open interval (0, 1). "
                        f"Received: slab_probability={value!r}")):
                    priors.SpikeAndSlab(slab_probability=value)

    def test_rejects_spike_wider_than_slab(self):
        with self.assertRaisesRegex(ValueError, _escape(
                "Invalid value for argument `spike_scale`. Expected a float < "
                "slab_scale=1.0. Received: spike_scale=2.0")):
            priors.SpikeAndSlab(spike_scale=2.0, slab_scale=1.0)

    @parameterized.named_parameters(
        ("normal", priors.Normal), ("cauchy", priors.Cauchy),
        ("horseshoe", priors.Horseshoe), ("kl", priors.MeanFieldKL),
        ("prior", lambda num_examples: priors.Prior(
            tfd.Normal(0.0, 1.0), num_examples=num_examples)))
    def test_rejects_bad_num_examples(self, cls):
        for value, error in ((0, ValueError), (-3, ValueError),
                             (2.5, TypeError), (100.0, TypeError),
                             (float("nan"), TypeError), (True, TypeError)):
            with self.subTest(value=value):
                with self.assertRaisesRegex(error, _escape(
                        "Invalid value for argument `num_examples`. Expected "
                        f"an int >= 1. Received: num_examples={value!r}")):
                    cls(num_examples=value)

    @parameterized.named_parameters(
        ("normal", priors.Normal), ("horseshoe", priors.Horseshoe),
        ("kl", priors.MeanFieldKL),
        ("prior", lambda num_examples: priors.Prior(
            tfd.Normal(0.0, 1.0), num_examples=num_examples)))
    def test_num_examples_at_most_two_to_the_53(self, cls):
        # Beyond 2**53 not every int is a float, the penalty's divisor; an
        # int beyond float range (a valid JSON number) crashed every call.
        x = tf.constant([0.5, -1.0], tf.float64)
        np.testing.assert_allclose(cls(num_examples=2**53)(x),
                                   cls(num_examples=1)(x) / 2**53, rtol=1e-12)
        for value in (2**53 + 1, 10**400):
            with self.subTest(value=value):
                with self.assertRaisesRegex(ValueError, "^" + _escape(
                        "Invalid value for argument `num_examples`. ")
                                            + ".*" + _escape(
                        f"Received: num_examples={value!r}") + "$"):
                    cls(num_examples=value)

    def test_rejects_bad_locs(self):
        for cls, argument in ((priors.Normal, "loc"), (priors.Laplace, "loc"),
                              (priors.StudentT, "loc"), (priors.Cauchy, "loc"),
                              (priors.MeanFieldKL, "prior_loc")):
            with self.subTest(cls=cls.__name__):
                with self.assertRaisesRegex(ValueError, _escape(
                        f"Invalid value for argument `{argument}`. Expected a "
                        f"finite float. Received: {argument}=nan")):
                    cls(**{argument: float("nan")})

    def test_rejects_bad_parameterization(self):
        with self.assertRaisesRegex(ValueError, _escape(
                "Invalid value for argument `parameterization`. Expected one "
                "of ('softplus', 'log'). Received: parameterization='exp'")):
            priors.MeanFieldKL(parameterization="exp")

    # -- Prior: allowlist and plain-number parameters.

    def test_prior_config_is_class_name_and_numbers(self):
        prior = priors.Prior(tfd.Gumbel(loc=np.float32(0.25), scale=2),
                             num_examples=5)
        self.assertEqual(prior.get_config(), {
            "distribution": {"class_name": "Gumbel",
                             "parameters": {"loc": 0.25, "scale": 2.0}},
            "num_examples": 5, "weight": 1.0})
        config = json.loads(json.dumps(tfreg.serialize(prior)))
        self.assertEqual(tfreg.deserialize(config).get_config(),
                         prior.get_config())

    @parameterized.named_parameters(
        ("unknown_class", {"class_name": "NoSuchDistribution",
                           "parameters": {}}, "a class among"),
        ("not_allowlisted", {"class_name": "Gamma",
                             "parameters": {"concentration": 1.0,
                                            "rate": 1.0}}, "a class among"),
        ("base_class", {"class_name": "Distribution", "parameters": {}},
         "a class among"),
        ("dunder", {"class_name": "__class__", "parameters": {}},
         "a class among"),
        ("dotted_path", {"class_name": "tensorflow_probability.distributions."
                                       "Normal", "parameters": {}},
         "a class name \\(not a path\\)"),
        ("os_system", {"class_name": "os.system", "parameters": {}},
         "a class name \\(not a path\\)"),
        ("string_parameter", {"class_name": "Normal",
                              "parameters": {"loc": "0.0", "scale": 1.0}},
         "parameter 'loc' is '0.0'"),
        ("list_parameter", {"class_name": "Normal",
                            "parameters": {"loc": [0.0, 1.0], "scale": 1.0}},
         "parameter 'loc' is \\[0.0, 1.0\\]"),
        ("none_parameter", {"class_name": "Normal",
                            "parameters": {"loc": None, "scale": 1.0}},
         "parameter 'loc' is None"),
        ("bool_parameter", {"class_name": "Normal",
                            "parameters": {"loc": True, "scale": 1.0}},
         "parameter 'loc' is True"),
        ("nan_parameter", {"class_name": "Normal",
                           "parameters": {"loc": float("nan"), "scale": 1.0}},
         "parameter 'loc' is nan"),
        ("dict_parameter", {"class_name": "Normal",
                            "parameters": {"loc": {"class_name": "Normal"},
                                           "scale": 1.0}},
         "parameter 'loc' is"),
        ("non_parameter_key", {"class_name": "Normal",
                               "parameters": {"name": "x", "scale": 1.0}},
         "parameter 'name' is 'x'"),
        ("unknown_parameter", {"class_name": "Normal",
                               "parameters": {"loc": 0.0, "scale": 1.0,
                                              "bogus": 1.0}},
         "parameters that Normal accepts"),
        ("invalid_value", {"class_name": "Normal",
                           "parameters": {"loc": 0.0, "scale": -1.0}},
         "parameters that Normal accepts"),
        ("extra_key", {"class_name": "Normal", "parameters": {},
                       "module": "os"}, "exactly the keys"),
        ("missing_parameters", {"class_name": "Normal"}, "exactly the keys"),
        # An int beyond float range overflowed math.isfinite.
        ("huge_int_parameter", {"class_name": "Normal",
                                "parameters": {"loc": 10**400, "scale": 1.0}},
         f"parameter 'loc' is {10**400}"),
        # A constructor argument that is not a numeric parameter raised an
        # AttributeError deep inside TFP.
        ("not_a_numeric_parameter",
         {"class_name": "SinhArcsinh",
          "parameters": {"loc": 0.0, "scale": 1.0, "distribution": 1.0}},
         "parameters that SinhArcsinh accepts, among \\['loc', 'scale', "
         "'skewness', 'tailweight'\\]; parameter 'distribution' is not one"),
        # Flushed to 0 in every dtype.
        ("subnormal_parameter", {"class_name": "Normal",
                                 "parameters": {"loc": 0.0, "scale": 1e-310}},
         "parameter 'scale' = 0 or within float64's normal range "
         "\\[2.23e-308, 1.8e\\+308\\] \\(scale = 1e-310\\)"),
        ("not_a_dict", "Normal", "a tfp.distributions instance"),
    )
    def test_prior_rejects_config(self, distribution, message):
        with self.assertRaisesRegex(
                ValueError, "Invalid value for argument `distribution`. "
                f"Expected .*{message}"):
            priors.Prior(distribution)
        config = {"class_name": "Prior", "registered_name": "tfreg>Prior",
                  "config": {"distribution": distribution, "num_examples": 1}}
        with self.assertRaisesRegex(ValueError, "argument `distribution`"):
            tfreg.deserialize(config)

    def test_prior_rejects_instances(self):
        for distribution, message in (
                (tfd.Normal(tf.constant(0.0), 1.0),
                 "parameter 'loc' is <tf.Tensor"),
                (tfd.Normal(np.zeros(()), 1.0), "parameter 'loc' is array"),
                (tfd.Normal(0.0, tf.Variable(1.0)),
                 "parameter 'scale' is <tf.Variable"),
                (tfd.Normal([0.0, 1.0], 1.0), "parameter 'loc' is \\[0.0"),
                (tfd.Gamma(1.0, 1.0), "a class among"),
                (tfd.Sample(tfd.Normal(0.0, 1.0), 3), "a class among"),
                (stats.norm(0, 1), "a tfp.distributions instance"),
                (print, "a tfp.distributions instance")):
            with self.subTest(distribution=distribution):
                with self.assertRaisesRegex(
                        ValueError, "Invalid value for argument "
                        f"`distribution`. Expected.*{message}"):
                    priors.Prior(distribution)

    @parameterized.parameters(1e300, 1e-50)
    def test_prior_parameter_beyond_float32(self, scale):
        # TFP computes in the parameters' dtype: float32 makes scale=1e300
        # inf (penalty inf, true 2074.8) and scale=1e-50 zero. They raise
        # there and are exact in float64.
        prior = priors.Prior(tfd.Normal(0.0, scale), NUM_EXAMPLES)
        x = scale * np.array([0.0, 0.5, -2.0])
        np.testing.assert_allclose(
            prior(tf.constant(x)),
            _scipy_reference(stats.norm(0.0, scale))(x), rtol=1e-12)
        with self.assertRaisesRegex(ValueError, "^" + _escape(
                "Prior cannot be computed in float32: it needs parameter "
                "'scale' = 0 or within float32's normal range [1.18e-38, "
                f"3.4e+38] (scale = {scale!r}). Received: distribution="
                "{'class_name': 'Normal', 'parameters': {'loc': 0.0, "
                f"'scale': {scale!r}}}}}. Use float64 weights.") + "$"):
            prior(tf.constant(x, tf.float32))

    def test_every_allowlisted_class_exists_in_tfp(self):
        for name in priors.ALLOWED_DISTRIBUTIONS:
            with self.subTest(name=name):
                self.assertTrue(issubclass(getattr(tfd, name),
                                           tfd.Distribution))

    # -- Names and light import.

    def test_get_resolves_names(self):
        for name, cls in (("normal", priors.Normal), ("laplace", priors.Laplace),
                          ("student_t", priors.StudentT),
                          ("StudentT", priors.StudentT),
                          ("cauchy", priors.Cauchy),
                          ("horseshoe", priors.Horseshoe),
                          ("spike_and_slab", priors.SpikeAndSlab),
                          ("mean_field_kl", priors.MeanFieldKL),
                          ("tfreg>Laplace", priors.Laplace)):
            with self.subTest(name=name):
                self.assertIs(type(tfreg.get(name)), cls)
        self.assertIs(tfreg.priors, priors)
        self.assertIn("priors", tfreg.__all__)

    def test_import_tfreg_does_not_import_tfp(self):
        code = (
            "import sys, tensorflow as tf, tfreg\n"
            "assert 'tensorflow_probability' not in sys.modules\n"
            "x = tf.constant([0.5, -1.0])\n"
            "for name in ('normal', 'laplace', 'student_t', 'cauchy',\n"
            "             'horseshoe', 'spike_and_slab'):\n"
            "    float(tfreg.get(name)(x))\n"
            "float(tfreg.get('mean_field_kl')(tf.ones((2, 3))))\n"
            "assert 'tensorflow_probability' not in sys.modules\n"
            "tfreg.deserialize({'class_name': 'Prior', 'config': {\n"
            "    'distribution': {'class_name': 'Normal',\n"
            "                     'parameters': {'loc': 0.0, 'scale': 1.0}}}})\n"
            "assert 'tensorflow_probability' in sys.modules\n")
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = {**os.environ,
               "PYTHONPATH": os.pathsep.join(
                   [root, os.environ.get("PYTHONPATH", "")])}
        result = subprocess.run([sys.executable, "-c", code], env=env,
                                capture_output=True, text=True, timeout=300,
                                check=False)
        self.assertEqual(result.returncode, 0, result.stderr[-2000:])


def _escape(text):
    for char in "\\.^$*+?()[]{}|":
        text = text.replace(char, "\\" + char)
    return text


@keras.saving.register_keras_serializable(package="tfreg_priors_test")
class VariationalDense(keras.layers.Layer):
    """Bayes-by-backprop Dense: the posterior is one (2, in, units) weight."""

    def __init__(self, units, posterior_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.posterior_regularizer = keras.regularizers.get(posterior_regularizer)

    def build(self, input_shape):
        def initializer(shape, dtype=None):
            mean = tf.random.normal(shape[1:], stddev=0.1, dtype=dtype)
            return tf.stack([mean, tf.fill(shape[1:], tf.constant(-4.0, dtype))])

        self.posterior = self.add_weight(
            name="posterior", shape=(2, int(input_shape[-1]), self.units),
            initializer=initializer, regularizer=self.posterior_regularizer)
        self.built = True

    def call(self, inputs, training=None):
        mean = self.posterior[0]
        if not training:
            return tf.matmul(inputs, mean)
        scale = tf.nn.softplus(self.posterior[1])
        return tf.matmul(inputs, mean + scale * tf.random.normal(tf.shape(mean)))

    def get_config(self):
        return {**super().get_config(), "units": self.units,
                "posterior_regularizer": keras.regularizers.serialize(
                    self.posterior_regularizer)}


# tf_keras' SavedModel loader resolves a layer by its bare class name.
if battery._keras.LEGACY:  # pylint: disable=protected-access
    keras.saving.get_custom_objects()["VariationalDense"] = VariationalDense


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
    def test_elementwise_log1p_of_the_priors_within_rounding(self, dtype, rtol):
        # priors._log1p (SpikeAndSlab's and Horseshoe's softplus and logs):
        # log(1 + s) plus the rounding of 1 + s under XLA, log1p outside.
        s = np.concatenate([[0.0], np.geomspace(1e-30, 1e30, 4001)]).astype(
            dtype.as_numpy_dtype)
        expected = np.log1p(s.astype(np.float64))
        for jit in (False, True):
            with self.subTest(jit=jit):
                function = tf.function(priors._log1p, jit_compile=jit)  # pylint: disable=protected-access
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
