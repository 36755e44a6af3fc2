"""Shared by the priors tests: references, cases, a variational layer."""

import numpy as np
from scipy import stats
import tensorflow as tf
import tensorflow_probability as tfp

from tests import battery
from tfreg import priors

keras = battery.keras
tfd = tfp.distributions

NUM_EXAMPLES = 7

# Parity with TFP: |ours - TFP| <= TOLERANCE * |TFP| for the penalty and
# <= TOLERANCE * max|TFP gradient| elementwise for the gradient. Measured
# worst cases are 1.1e-7 (value) and 5e-6 (gradient) in float32 and 1.3e-16
# and 1.6e-14 in float64.
PARITY_TOLERANCE = {tf.float32: 1e-5, tf.float64: 1e-12}


def away_from_zero(rng, shape):
    """Samples with |x| >= 0.5, where finite differences of spiky priors are exact."""
    x = rng.normal(size=shape)
    return np.sign(x) * (0.5 + np.abs(x))


def posterior_sample(rng, shape):
    """Means ~ N(0, 1) in [0], unconstrained scales in [-3, 0.5] in [1]."""
    return np.stack([rng.normal(size=shape[1:]),
                     rng.uniform(-3.0, 0.5, size=shape[1:])])


def softplus(r):
    return np.logaddexp(0.0, r)


def mean_field_kl_reference(prior_scale, prior_loc, parameterization):
    def reference(posterior):
        mean, rho = posterior[0], posterior[1]
        scale = np.exp(rho) if parameterization == "log" else softplus(rho)
        kl = (np.log(prior_scale / scale)
              + (scale**2 + (mean - prior_loc)**2) / (2 * prior_scale**2) - 0.5)
        return kl.sum() / NUM_EXAMPLES
    return reference


def tfp_horseshoe_reference(scale):
    def reference(x):
        log_prob = tfd.Horseshoe(np.float64(scale)).log_prob(x)
        return -np.sum(log_prob.numpy()) / NUM_EXAMPLES
    return reference


def scipy_reference(distribution):
    return lambda x: -distribution.logpdf(x).sum() / NUM_EXAMPLES


def spike_and_slab_reference(spike, slab, probability):
    def reference(x):
        log_prob = np.logaddexp(
            np.log(probability) + stats.norm(0, slab).logpdf(x),
            np.log1p(-probability) + stats.norm(0, spike).logpdf(x))
        return -log_prob.sum() / NUM_EXAMPLES
    return reference


def spike_and_slab_gradient(spike, slab, probability):
    """The mixture's -d log p / dx: each component's x / scale^2 weighted by
    its posterior responsibility at x."""
    def gradient(x):
        slab_log = np.log(probability) + stats.norm(0, slab).logpdf(x)
        spike_log = np.log1p(-probability) + stats.norm(0, spike).logpdf(x)
        spike_share = np.exp(spike_log - np.logaddexp(slab_log, spike_log))
        return x * ((1.0 - spike_share) / slab**2
                    + spike_share / spike**2) / NUM_EXAMPLES
    return gradient


# The battery's cases: every closed-form prior and MeanFieldKL.
CLOSED_FORM_CASES = [
    battery.Case(
        "normal", lambda: priors.Normal(0.7, 0.3, NUM_EXAMPLES),
        reference=scipy_reference(stats.norm(0.3, 0.7)),
        gradient=lambda x: (x - 0.3) / 0.49 / NUM_EXAMPLES),
    battery.Case(
        "laplace", lambda: priors.Laplace(0.7, 0.3, NUM_EXAMPLES),
        reference=scipy_reference(stats.laplace(0.3, 0.7)),
        gradient=lambda x: np.sign(x - 0.3) / 0.7 / NUM_EXAMPLES),
    battery.Case(
        "student_t", lambda: priors.StudentT(2.5, 0.7, 0.3, NUM_EXAMPLES),
        reference=scipy_reference(stats.t(2.5, 0.3, 0.7))),
    battery.Case(
        "cauchy", lambda: priors.Cauchy(0.7, 0.3, NUM_EXAMPLES),
        reference=scipy_reference(stats.cauchy(0.3, 0.7))),
    battery.Case(
        "horseshoe", lambda: priors.Horseshoe(0.7, NUM_EXAMPLES),
        reference=tfp_horseshoe_reference(0.7), sample=away_from_zero),
    battery.Case(
        "spike_and_slab",
        lambda: priors.SpikeAndSlab(0.1, 1.5, 0.3, NUM_EXAMPLES),
        reference=spike_and_slab_reference(0.1, 1.5, 0.3),
        gradient=spike_and_slab_gradient(0.1, 1.5, 0.3),
        sample=away_from_zero),
    battery.Case(
        "mean_field_kl_softplus",
        lambda: priors.MeanFieldKL(0.8, 0.1, NUM_EXAMPLES),
        reference=mean_field_kl_reference(0.8, 0.1, "softplus"),
        shapes=((2, 3, 4), (2, 5)), sample=posterior_sample,
        xla_shape=(2, 1 << 17, 64)),
    battery.Case(
        "mean_field_kl_log",
        lambda: priors.MeanFieldKL(0.8, 0.1, NUM_EXAMPLES, "log"),
        reference=mean_field_kl_reference(0.8, 0.1, "log"),
        shapes=((2, 3, 4), (2, 2, 3, 2)), sample=posterior_sample,
        xla_shape=(2, 1 << 17, 64)),
]

# The battery's cases of the TFP-backed Prior, from an instance and a spec.
TFP_CASES = [
    battery.Case(
        "prior_gumbel",
        lambda: priors.Prior(tfd.Gumbel(loc=0.2, scale=1.5), NUM_EXAMPLES),
        reference=scipy_reference(stats.gumbel_r(0.2, 1.5))),
    battery.Case(
        "prior_logistic_spec",
        lambda: priors.Prior({"class_name": "Logistic",
                              "parameters": {"loc": -0.1, "scale": 0.5}},
                             NUM_EXAMPLES),
        reference=scipy_reference(stats.logistic(-0.1, 0.5))),
]


def extreme_weights():
    """+-10^e for e in -6..6, around 0 and around the priors' loc of 0.3."""
    magnitudes = np.array([10.0**e for e in range(-6, 7)])
    around_zero = np.concatenate([magnitudes, -magnitudes])
    return np.concatenate([around_zero, 0.3 + around_zero])


def random_weights(rng):
    """Normal weights at three very different scales."""
    return (rng.normal(size=(30, 20))
            * rng.choice([0.01, 1.0, 30.0], size=(30, 20)))


def assert_parity(test, ours, theirs, dtype):
    tolerance = PARITY_TOLERANCE[dtype]
    value, gradient = ours
    expected_value, expected_gradient = theirs
    test.assertEqual(value.dtype, dtype)
    np.testing.assert_allclose(value, expected_value, rtol=tolerance)
    np.testing.assert_allclose(
        gradient, expected_gradient, rtol=0,
        atol=tolerance * np.max(np.abs(expected_gradient)))


def escape(text):
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

