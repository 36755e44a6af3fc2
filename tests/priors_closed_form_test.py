"""The closed-form priors and MeanFieldKL: values, TFP parity, meaning, validation."""

import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
from scipy import stats
import tensorflow as tf
import tensorflow_probability as tfp

import tfreg
from tests import battery
from tests import priors_util as util
from tfreg import priors

keras = battery.keras
tfd = tfp.distributions


def _tfp_penalty(log_prob, x):
    return -tf.reduce_sum(log_prob(x)) / util.NUM_EXAMPLES


def _constant(value, dtype):
    return tf.constant(value, dtype)


# Each entry: (our regularizer, TFP's penalty of a tensor x in x's dtype).
TFP_PAIRS = {
    "normal": (
        priors.Normal(0.7, 0.3, util.NUM_EXAMPLES),
        lambda x: _tfp_penalty(tfd.Normal(_constant(0.3, x.dtype),
                                          _constant(0.7, x.dtype)).log_prob, x)),
    "laplace": (
        priors.Laplace(0.7, 0.3, util.NUM_EXAMPLES),
        lambda x: _tfp_penalty(tfd.Laplace(_constant(0.3, x.dtype),
                                           _constant(0.7, x.dtype)).log_prob, x)),
    "student_t": (
        priors.StudentT(2.5, 0.7, 0.3, util.NUM_EXAMPLES),
        lambda x: _tfp_penalty(tfd.StudentT(
            _constant(2.5, x.dtype), _constant(0.3, x.dtype),
            _constant(0.7, x.dtype)).log_prob, x)),
    "cauchy": (
        priors.Cauchy(0.7, 0.3, util.NUM_EXAMPLES),
        lambda x: _tfp_penalty(tfd.Cauchy(_constant(0.3, x.dtype),
                                          _constant(0.7, x.dtype)).log_prob, x)),
    "horseshoe": (
        priors.Horseshoe(0.7, util.NUM_EXAMPLES),
        lambda x: _tfp_penalty(
            tfd.Horseshoe(_constant(0.7, x.dtype)).log_prob, x)),
    "spike_and_slab": (
        priors.SpikeAndSlab(0.05, 1.5, 0.3, util.NUM_EXAMPLES),
        lambda x: _tfp_penalty(tfd.MixtureSameFamily(
            tfd.Categorical(probs=_constant([0.3, 0.7], x.dtype)),
            tfd.Normal(_constant(0.0, x.dtype),
                       _constant([1.5, 0.05], x.dtype))).log_prob, x)),
}


class ClosedFormPriorsTest(battery.battery(util.CLOSED_FORM_CASES)):

    # -- The battery's save/load test uses a Dense kernel of shape (3, 4); a
    # MeanFieldKL weight must have shape (2, ...), so for it these two
    # replace the generated tests with a save/load of a variational layer.

    def test_save_and_load_in_model_mean_field_kl_softplus(self):
        self._check_variational_save_and_load("softplus")

    def test_save_and_load_in_model_mean_field_kl_log(self):
        self._check_variational_save_and_load("log")

    def _check_variational_save_and_load(self, parameterization):
        regularizer = priors.MeanFieldKL(0.8, 0.1, util.NUM_EXAMPLES,
                                         parameterization)
        inputs = keras.Input((3,))
        layer = util.VariationalDense(4, posterior_regularizer=regularizer)
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
        x = (util.random_weights(self.rng) if weights == "random"
             else util.extreme_weights())
        x = tf.constant(x, dtype)
        util.assert_parity(self, battery.value_and_gradient(ours, x),
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
            util.extreme_weights(), util.random_weights(self.rng).ravel(),
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
        util.assert_parity(self, (fast, gradient[finite]),
                       (reference, expected[finite]), dtype)

    @parameterized.product(parameterization=("softplus", "log"),
                           dtype=(tf.float32, tf.float64))
    def test_mean_field_kl_matches_tfp(self, parameterization, dtype):
        regularizer = priors.MeanFieldKL(0.8, 0.1, util.NUM_EXAMPLES,
                                         parameterization)
        transform = tf.exp if parameterization == "log" else tf.nn.softplus

        def theirs(posterior):
            posterior_normal = tfd.Normal(posterior[0], transform(posterior[1]))
            prior = tfd.Normal(_constant(0.1, dtype), _constant(0.8, dtype))
            kl = tfd.kl_divergence(posterior_normal, prior)
            return tf.reduce_sum(kl) / util.NUM_EXAMPLES

        mean = np.concatenate([self.rng.normal(size=40),
                               [1e-6, -1e-3, 1e3, -1e5]])
        rho = np.concatenate([self.rng.uniform(-8, 4, size=40),
                              [-10.0, -5.0, 3.0, 8.0]])
        x = tf.constant(np.stack([mean, rho]), dtype)
        util.assert_parity(self, battery.value_and_gradient(regularizer, x),
                       battery.value_and_gradient(theirs, x), dtype)

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
        layer = util.VariationalDense(
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

    @parameterized.product(
        prior=(lambda: priors.StudentT(3.0, 0.5), lambda: priors.Cauchy(0.5),
               lambda: priors.SpikeAndSlab(), lambda: priors.Horseshoe(),
               lambda: priors.Normal(0.5),
               lambda: priors.Prior(tfp.distributions.Logistic(0.0, 0.5))),
        # Whole, and past the block size of the priors' blocked forms.
        size=(6, (1 << 20) + 5),
        jit=(None, True))
    def test_second_derivative_matches_differences(self, prior, size, jit):
        # A Hessian-vector product differentiates the custom gradient:
        # its derivative must stay a function of x (the forward pass reads
        # x through stop_gradient). Weights away from 0, where Horseshoe's
        # curvature is finite.
        rng = np.random.default_rng(size)
        x = tf.constant(rng.choice([-1.0, 1.0], size) * rng.uniform(
            0.3, 3.0, size))
        regularizer = prior()

        def row_sums(x):
            with tf.GradientTape() as outer:
                outer.watch(x)
                _, gradient = battery.value_and_gradient(regularizer, x)
            return outer.gradient(gradient, x)

        run = row_sums if jit is None else tf.function(row_sums,
                                                       jit_compile=True)
        step = 1e-5
        differences = (battery.value_and_gradient(regularizer, x + step)[1]
                       - battery.value_and_gradient(regularizer, x - step)[1]
                       ) / (2 * step)
        np.testing.assert_allclose(
            run(x), differences, rtol=0,
            atol=1e-6 * np.abs(differences.numpy()).max())

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
                        error, util.escape(f"Invalid value for argument "
                                       f"`{argument}`. Expected {expected}. "
                                       f"Received: {argument}={value!r}")):
                    cls(**{argument: value})

    def test_rejects_bad_slab_probability(self):
        for value, error in ((0.0, ValueError), (1.0, ValueError),
                             (1.5, ValueError), (float("nan"), ValueError),
                             (False, TypeError)):
            with self.subTest(value=value):
                with self.assertRaisesRegex(error, util.escape(
                        "Invalid value for argument `slab_probability`. "
                        "Expected a float in the open interval (0, 1). "
                        f"Received: slab_probability={value!r}")):
                    priors.SpikeAndSlab(slab_probability=value)

    def test_rejects_spike_wider_than_slab(self):
        with self.assertRaisesRegex(ValueError, util.escape(
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
                with self.assertRaisesRegex(error, util.escape(
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
                with self.assertRaisesRegex(ValueError, "^" + util.escape(
                        "Invalid value for argument `num_examples`. ")
                                            + ".*" + util.escape(
                        f"Received: num_examples={value!r}") + "$"):
                    cls(num_examples=value)

    def test_rejects_bad_locs(self):
        for cls, argument in ((priors.Normal, "loc"), (priors.Laplace, "loc"),
                              (priors.StudentT, "loc"), (priors.Cauchy, "loc"),
                              (priors.MeanFieldKL, "prior_loc")):
            with self.subTest(cls=cls.__name__):
                with self.assertRaisesRegex(ValueError, util.escape(
                        f"Invalid value for argument `{argument}`. Expected a "
                        f"finite float. Received: {argument}=nan")):
                    cls(**{argument: float("nan")})

    def test_rejects_bad_parameterization(self):
        with self.assertRaisesRegex(ValueError, util.escape(
                "Invalid value for argument `parameterization`. Expected one "
                'of {"softplus", "log"}. Received: parameterization=exp')):
            priors.MeanFieldKL(parameterization="exp")


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


if __name__ == "__main__":
    absltest.main()
