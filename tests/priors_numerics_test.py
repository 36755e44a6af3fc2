"""The priors at their limits: extreme weights and parameters, dtypes TFP fails in."""

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
from tests import priors_util as util
from tfreg import priors
from tfreg.priors import _math as prior_math

keras = battery.keras
tfd = tfp.distributions


class PriorNumericsTest(parameterized.TestCase):

    def setUp(self):
        super().setUp()
        self.rng = np.random.default_rng(0)

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
            value, -distribution.logpdf(x).sum() / util.NUM_EXAMPLES,
            rtol=util.PARITY_TOLERANCE[dtype])
        # -d log p / dw = (df + 1) y / (scale (df + y^2)).
        expected = (df + 1.0) * y / (df + y**2) / scale / util.NUM_EXAMPLES
        np.testing.assert_allclose(gradient, expected,
                                   rtol=util.PARITY_TOLERANCE[dtype])

    @parameterized.named_parameters(
        ("cauchy", lambda: priors.Cauchy(1e-38, num_examples=7), 1.0, True),
        ("student_t", lambda: priors.StudentT(2.5, 1e-38, num_examples=7),
         2.5, True),
        ("cauchy_far_loc",
         lambda: priors.Cauchy(1e-38, loc=-3e38, num_examples=7), 1.0, False),
        ("student_t_unit_scale",
         lambda: priors.StudentT(3.0, 1.0, num_examples=7), 3.0, False))
    def test_where_the_squared_distance_overflows(self, make, df, blocked):
        # ((w - loc) / scale)^2 overflows float32 (and so may w - loc, or
        # (w - loc) / scale): log1p of it was inf, its gradient inf / inf.
        # The value is -log p in float64, the gradient
        # (df + 1) c / (df scale^2 + c^2), c = w - loc.
        prior = make()
        size = (1 << 20) + 3  # blocks of 1M elements, and the remainder
        far = np.array([0.05, -3.0, 1e20, -3e38, 0.0, 1e-30, 1e-3])
        for shape in ((len(far),), (size,)) if blocked else ((len(far),),):
            x = np.zeros(shape)
            x[:len(far)] = far
            c = x - prior.loc
            distribution = stats.t(df, prior.loc, prior.scale)
            expected_value = -distribution.logpdf(x).sum() / 7
            expected_gradient = np.float32(
                (df + 1.0) * c / (df * prior.scale**2 + c**2) / 7)
            for jit in (None, False, True):
                with self.subTest(shape=shape, jit=jit):
                    run = (battery.value_and_gradient if jit is None else
                           tf.function(battery.value_and_gradient,
                                       jit_compile=jit))
                    value, gradient = run(prior, tf.constant(x, tf.float32))
                    np.testing.assert_allclose(value, expected_value,
                                               rtol=1e-5)
                    np.testing.assert_allclose(gradient, expected_gradient,
                                               rtol=1e-5, atol=1e-37)
        for dtype in (tf.float16, tf.bfloat16):
            with self.subTest(dtype=dtype.name):
                x = tf.constant([0.05, -3.0, 0.0, 1e-3], dtype)
                value, gradient = battery.value_and_gradient(prior, x)
                rounded = tf.cast(x, tf.float64).numpy()
                c = rounded - prior.loc
                np.testing.assert_allclose(
                    value, -stats.t(df, prior.loc, prior.scale).logpdf(
                        rounded).sum() / 7, rtol=1e-5)
                np.testing.assert_allclose(
                    tf.cast(gradient, tf.float64),
                    (df + 1.0) * c / (df * prior.scale**2 + c**2) / 7,
                    rtol=1e-2, atol=1e-37)

    def test_spike_narrower_than_float32_in_float64(self):
        # Before: 1 / spike_scale^2 raised ZeroDivisionError.
        x = np.array([0.0, 5e-201, -2e-200, 0.5, -3.0])
        value, gradient = battery.value_and_gradient(
            priors.SpikeAndSlab(1e-200, 1.0, 0.5, util.NUM_EXAMPLES),
            tf.constant(x))
        np.testing.assert_allclose(
            value, util.spike_and_slab_reference(1e-200, 1.0, 0.5)(x), rtol=1e-12)
        # Each component's x / scale^2, weighted by its responsibility,
        # with x / spike^2 as (x / spike) / spike.
        slab_log = np.log(0.5) + stats.norm(0, 1.0).logpdf(x)
        spike_log = np.log(0.5) + stats.norm(0, 1e-200).logpdf(x)
        share = np.exp(spike_log - np.logaddexp(slab_log, spike_log))
        expected = ((1.0 - share) * x + share * (x / 1e-200) / 1e-200)
        np.testing.assert_allclose(gradient, expected / util.NUM_EXAMPLES,
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
        prior = priors.StudentT(df, 0.7, 0.3, util.NUM_EXAMPLES)
        value = prior(tf.constant(x))
        np.testing.assert_allclose(value, expected / util.NUM_EXAMPLES, rtol=1e-12)
        np.testing.assert_allclose(-tf.reduce_sum(prior.log_prob(x)),
                                   expected, rtol=1e-12)
        if df <= 1e31:  # float32 holds y^2 / df where it counts.
            np.testing.assert_allclose(prior(tf.constant(x, tf.float32)),
                                       expected / util.NUM_EXAMPLES, rtol=1e-6)

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
         util.scipy_reference(stats.norm(0, 1e-20))),
        ("normal_wide", lambda: priors.Normal(1e19, num_examples=7),
         "scale=1e+19", 1e19 * np.array([0.0, 0.5, -2.0]),
         util.scipy_reference(stats.norm(0, 1e19))),
        ("normal_far_loc", lambda: priors.Normal(1.0, 1e39, 7),
         "loc=1e+39", 1e39 * np.array([1.0, 1.5, -2.0]),
         util.scipy_reference(stats.norm(1e39, 1.0))),
        ("laplace_narrow", lambda: priors.Laplace(1e-39, num_examples=7),
         "scale=1e-39", 1e-39 * np.array([0.0, 0.5, -2.0]),
         util.scipy_reference(stats.laplace(0, 1e-39))),
        ("cauchy_narrow", lambda: priors.Cauchy(1e-39, num_examples=7),
         "scale=1e-39", 1e-39 * np.array([0.0, 0.5, -2.0]),
         util.scipy_reference(stats.cauchy(0, 1e-39))),
        # y^2 / df underflows float32 where (df + 1) / 2 log1p(y^2 / df),
        # which is y^2 / 2, still counts.
        ("student_t_large_df", lambda: priors.StudentT(1e32, num_examples=7),
         "df=1e+32", np.array([0.0, 1e-6, 0.5, -2.0]),
         util.scipy_reference(stats.norm(0, 1))),
        ("spike_and_slab_narrow_spike",
         lambda: priors.SpikeAndSlab(1e-200, 1.0, 0.5, 7),
         "spike_scale=1e-200", np.array([0.0, 5e-201, 0.5, -3.0]),
         util.spike_and_slab_reference(1e-200, 1.0, 0.5)),
        ("spike_and_slab_wide_slab",
         lambda: priors.SpikeAndSlab(1.0, 1e20, 0.5, 7),
         "slab_scale=1e+20", np.array([0.0, 0.5, -3.0, 1e19]),
         util.spike_and_slab_reference(1.0, 1e20, 0.5)),
        ("horseshoe_wide", lambda: priors.Horseshoe(1e38, 7),
         "scale=1e+38", 1e38 * np.array([0.5, -2.0, 3.0]),
         util.tfp_horseshoe_reference(1e38)),
        ("mean_field_kl_narrow",
         lambda: priors.MeanFieldKL(1e-200, 0.0, 7, "log"),
         "prior_scale=1e-200",
         np.array([[0.0, 0.5e-200, -2e-200],
                   np.log([1e-200, 2e-200, 5e-201])]),
         lambda x: np.sum(0.5 * (np.exp(x[1] - np.log(1e-200))**2
                                 + (x[0] / 1e-200)**2 - 1.0)
                          - (x[1] - np.log(1e-200))) / util.NUM_EXAMPLES),
        ("mean_field_kl_subnormal_loc",
         lambda: priors.MeanFieldKL(1.0, 1e-40, 7, "log"),
         "prior_loc=1e-40", np.array([[0.0, 0.5, -2.0], [0.0, -1.0, 0.5]]),
         util.mean_field_kl_reference(1.0, 1e-40, "log")))
    def test_constants_beyond_float32_raise_when_called(
            self, make, received, x, reference):
        prior = make()
        message = (f"{type(prior).__name__} cannot be computed in float32: "
                   f"it needs .*Received: {util.escape(received)}\\. Use float64 "
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
        with self.assertRaisesRegex(ValueError, "^" + util.escape(
                f"Invalid value for argument `{argument}`. Expected "
                f"{expected}. Received: {argument}={value!r}") + "$"):
            cls(**{argument: value})
        config = {"class_name": cls.__name__, "config": {argument: value}}
        with self.assertRaisesRegex(ValueError, f"argument `{argument}`"):
            tfreg.deserialize(config)

    @parameterized.named_parameters(*[
        (case.name, case)
        for case in util.CLOSED_FORM_CASES + util.TFP_CASES])
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

    def test_normal_is_finite_for_every_scale_its_checks_accept(self):
        # 1 / (2 scale^2) fits float32 from scale = 3.8e-20 up to 6.5e18;
        # its double overflowed inside [3.8e-20, 5.4e-20] (NaN at zeros).
        tiny, largest = (float(np.finfo(np.float32).tiny),
                         float(np.finfo(np.float32).max))
        lower, upper = np.sqrt(0.5 / largest), np.sqrt(0.5 / tiny)
        scales = np.concatenate([
            np.geomspace(1e-20, 1e-19, 160),
            lower * np.array([1.0, 1.0 + 1e-7, 1.0 + 1e-6, 1.001]),
            upper * np.array([1.0, 1.0 - 1e-7, 1.0 - 1e-6, 0.999])])
        x = np.zeros((3, 4))
        normal = self.rng.normal(size=(3, 4)) * 0.05
        accepted = 0
        for scale in scales:
            prior = priors.Normal(scale=float(scale))
            for weights in (x, normal):
                try:
                    value, gradient = battery.value_and_gradient(
                        prior, tf.constant(weights, tf.float32))
                except ValueError:
                    self.assertFalse(lower * (1 + 1e-6) <= scale
                                     <= upper * (1 - 1e-6), scale)
                    continue
                accepted += 1
                with self.subTest(scale=scale, zeros=weights is x):
                    self.assertTrue(np.isfinite(value.numpy()))
                    self.assertTrue(np.all(np.isfinite(gradient.numpy())))
                    expected = (np.square(weights).sum() / (2 * scale**2)
                                + weights.size * (np.log(scale)
                                                  + np.log(2 * np.pi) / 2))
                    np.testing.assert_allclose(value, expected, rtol=1e-5)
        self.assertGreater(accepted, 130)

    @parameterized.parameters(
        (lambda: priors.Normal(scale=1e-19, weight=1e38)),
        (lambda: priors.Normal(scale=4.1e-20, loc=1.0, weight=1.7e38)),
        (lambda: priors.Laplace(scale=1e-20, weight=1e38)),
        (lambda: priors.Laplace(scale=1e-38, weight=1.7e38)))
    def test_weight_times_a_constant_beyond_float32_is_never_nan(self, make):
        # weight * 1 / (2 scale^2) (or * 1 / scale) overflows float32 though
        # each fits: inf * 0 at zero weights, inf - inf (penalty term minus
        # normalizer) elsewhere. The true values overflow too (inf of the
        # sign of the sum); the gradient at w = loc = 0 is 0.
        prior = make()
        for weights in (np.zeros((2, 3)), self.rng.normal(size=(2, 3))):
            with self.subTest(zeros=not weights.any()):
                value, gradient = battery.value_and_gradient(
                    prior, tf.constant(weights, tf.float32))
                value = value.numpy()
                scale = prior.scale
                loc = prior.loc
                if not weights.any() and not loc:
                    np.testing.assert_array_equal(gradient, 0.0)
                if isinstance(prior, priors.Normal):
                    terms = (np.square(weights - loc) / (2 * scale**2)
                             + np.log(scale) + np.log(2 * np.pi) / 2)
                else:
                    terms = np.abs(weights - loc) / scale + np.log(2 * scale)
                self.assertEqual(value, np.sign(terms.sum()) * np.inf)

    @parameterized.named_parameters(
        ("student_t", lambda s: priors.StudentT(3.0, s)),
        ("cauchy", lambda s: priors.Cauchy(s)),
        ("horseshoe", lambda s: priors.Horseshoe(s)),
        ("spike_and_slab", lambda s: priors.SpikeAndSlab(s, 1.0, 0.5)))
    def test_jit_equals_eager_where_one_over_scale_squared_overflows(
            self, make):
        # XLA:CPU rewrites (x / scale)^2 of a one-element weight as
        # x^2 (1 / scale)^2: 0 * inf = NaN at 0 and inf near it.
        for scale in (1e-20, 1e-30):
            prior = make(scale)
            for weights in ([0.0], [0.05 * scale], [[0.0]]):
                x = tf.Variable(weights, dtype=tf.float32)

                def value_and_gradient(prior=prior, x=x):
                    with tf.GradientTape() as tape:
                        value = prior(x)
                    return value, tape.gradient(value, x)
                with self.subTest(scale=scale, weights=weights):
                    eager = value_and_gradient()
                    jit = tf.function(value_and_gradient,
                                      jit_compile=True)()
                    self.assertTrue(np.isfinite(jit[0].numpy()))
                    np.testing.assert_allclose(jit[0], eager[0], rtol=1e-5)
                    np.testing.assert_allclose(jit[1], eager[1], rtol=1e-4)

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
        approximate = np.exp(prior_math.horseshoe_log_prob(
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
            value, util.spike_and_slab_reference(1e-20, 1.0, 0.5)(x) * util.NUM_EXAMPLES,
            rtol=1e-6)
        np.testing.assert_allclose(
            gradient, util.spike_and_slab_gradient(1e-20, 1.0, 0.5)(x)
            * util.NUM_EXAMPLES, rtol=1e-6)

    def test_mean_field_kl_is_finite_for_very_negative_rho(self):
        x = tf.constant([[0.0, 0.0], [-200.0, -1e4]], tf.float32)
        value, gradient = battery.value_and_gradient(priors.MeanFieldKL(), x)
        # KL ~ -log(scale) = -rho for rho << 0 (mean 0 = prior mean).
        np.testing.assert_allclose(value, 200.0 + 1e4 - 1.0, rtol=1e-6)
        np.testing.assert_allclose(gradient, [[0.0, 0.0], [-1.0, -1.0]])

    @parameterized.parameters(None, False, True)
    def test_mean_field_kl_with_zero_weight_is_zero_where_kl_overflows(
            self, jit):
        # ((mean - loc) / prior_scale)^2 and (scale / prior_scale)^2 overflow
        # float32: 0 * inf was NaN, in the value and the gradient. With a
        # nonzero weight the true value overflows: inf, and no NaN.
        x = tf.constant([[1.0, 3e38, 0.0], [0.0, 3e38, -50.0]], tf.float32)
        run = (battery.value_and_gradient if jit is None else
               tf.function(battery.value_and_gradient, jit_compile=jit))
        for weight in (0.0, tfreg.Strength(0.0)):
            for parameterization in ("softplus", "log"):
                with self.subTest(weight=weight, parameterization=parameterization):
                    value, gradient = run(priors.MeanFieldKL(
                        1e-20, weight=weight,
                        parameterization=parameterization), x)
                    self.assertEqual(float(value), 0.0)
                    np.testing.assert_array_equal(gradient, np.zeros((2, 3)))
        value, gradient = run(priors.MeanFieldKL(1e-20), x)
        self.assertEqual(float(value), np.inf)
        self.assertFalse(np.isnan(gradient.numpy()).any())

    def test_horseshoe_where_the_scaled_weight_overflows(self):
        # w / scale overflows float32 (1e20 / 1e-20): the penalty was inf.
        # It is TFP's float64 value, log(u / g) + c far in the tail, with
        # gradient 2 / w.
        for scale in (1e-20, 1e-25, 1e-3):
            x = np.array([1e20, -3e38, 2.0, 1e-3])
            prior = priors.Horseshoe(scale)
            expected = -tfd.Horseshoe(np.float64(scale)).log_prob(x).numpy()
            for jit in (None, False, True):
                with self.subTest(scale=scale, jit=jit):
                    run = (battery.value_and_gradient if jit is None else
                           tf.function(battery.value_and_gradient,
                                       jit_compile=jit))
                    value, gradient = run(prior, tf.constant(x, tf.float32))
                    np.testing.assert_allclose(value, expected.sum(),
                                               rtol=1e-6)
                    np.testing.assert_allclose(gradient[:2], 2.0 / x[:2],
                                               rtol=1e-6, atol=1e-37)
                    self.assertTrue(np.isfinite(gradient.numpy()).all())

    def test_mean_field_kl_is_zero_at_the_prior(self):
        rho = np.log(np.expm1(0.8))  # softplus(rho) = 0.8
        x = tf.constant([[0.1] * 3, [rho] * 3], tf.float64)
        value, gradient = battery.value_and_gradient(
            priors.MeanFieldKL(0.8, 0.1), x)
        self.assertAlmostEqual(float(value), 0.0, places=12)
        np.testing.assert_allclose(gradient, np.zeros((2, 3)), atol=1e-12)

if __name__ == "__main__":
    absltest.main()
