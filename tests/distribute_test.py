"""MirroredStrategy on 2 logical CPUs: tfreg training matches one device."""

from tests import devices

# Before TensorFlow initializes its devices (pytest's conftest.py does it too).
_CPUS = devices.split_cpu(2)

# pylint: disable=g-import-not-at-top,g-bad-import-order
from absl.testing import absltest
import numpy as np
import tensorflow as tf

import tfreg
from tfreg import _keras

keras = _keras.keras
LEGACY = _keras.LEGACY

GLOBAL_BATCH = 8
STEPS = 4
EPOCHS = 2
LEARNING_RATE = 0.1
# Final weights: float32 sums taken in a different order (per replica, then
# all-reduced) after STEPS * EPOCHS SGD steps. Measured differences are
# printed by the tests; they are ~1e-7.
WEIGHT_TOLERANCE = dict(rtol=1e-5, atol=1e-6)
GRADIENT_TOLERANCE = dict(rtol=1e-5, atol=1e-7)


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(GLOBAL_BATCH * STEPS, 6)).astype(np.float32)
    y = rng.normal(size=(GLOBAL_BATCH * STEPS, 1)).astype(np.float32)
    return x, y


def build_model():
    """Weight regularizers on kernels and a bias, activity ones on outputs."""
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(
        8, activation="tanh",
        kernel_regularizer=tfreg.L1L2(l1=0.01, l2=0.02),
        bias_regularizer=tfreg.L2(0.01),
        activity_regularizer=tfreg.L2(0.05))(inputs)
    hidden = keras.layers.Dense(
        4, activation="sigmoid",
        kernel_regularizer=tfreg.Orthogonal(0.1),
        activity_regularizer=tfreg.L1(0.02))(hidden)
    outputs = keras.layers.Dense(
        1, kernel_regularizer=tfreg.GroupLasso(0.05))(hidden)
    return keras.Model(inputs, outputs)


def initial_weights():
    keras.utils.set_random_seed(1)
    return build_model().get_weights()


def mirrored():
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


def max_difference(a, b):
    return max(float(np.max(np.abs(u - v))) for u, v in zip(a, b))


def fit_weights(strategy, weights, make_optimizer=None):
    """Trains with `fit`; `make_optimizer(model)` gives the optimizer
    (default: SGD(LEARNING_RATE))."""
    x, y = data()
    with strategy.scope():
        model = build_model()
        model.set_weights(weights)
        model.compile(optimizer=(make_optimizer(model) if make_optimizer
                                 else keras.optimizers.SGD(LEARNING_RATE)),
                      loss="mse")
    # A dataset of global batches: under MultiWorkerMirroredStrategy each
    # worker then takes its half of every batch (Keras 3 rejects numpy input
    # there).
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA)
    model.fit(dataset.with_options(options), epochs=EPOCHS, verbose=0)
    return model.get_weights()


def custom_loop(strategy, weights, regularization):
    """Trains with a custom loop; `regularization(model)` is the reg term."""
    x, y = data()
    with strategy.scope():
        model = build_model()
        model.set_weights(weights)
        optimizer = keras.optimizers.SGD(LEARNING_RATE)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA)
    dataset = dataset.with_options(options)

    @tf.function
    def step(inputs, targets):
        def replica_step(inputs, targets):
            with tf.GradientTape() as tape:
                predictions = model(inputs, training=True)
                per_example = tf.reduce_mean(
                    tf.square(targets - predictions), axis=-1)
                loss = (tf.nn.compute_average_loss(
                    per_example, global_batch_size=GLOBAL_BATCH)
                        + regularization(model))
            variables = model.trainable_variables
            optimizer.apply_gradients(
                zip(tape.gradient(loss, variables), variables))
        strategy.run(replica_step, args=(inputs, targets))

    for _ in range(EPOCHS):
        for inputs, targets in strategy.experimental_distribute_dataset(
                dataset):
            step(inputs, targets)
    return model.get_weights()


def summed_gradients(strategy, weights, regularization, data_loss=True):
    """Gradients of one global batch, summed over replicas as apply does."""
    x, y = data()
    with strategy.scope():
        model = build_model()
        model.set_weights(weights)
    dataset = tf.data.Dataset.from_tensor_slices(
        (x[:GLOBAL_BATCH], y[:GLOBAL_BATCH])).batch(GLOBAL_BATCH)
    inputs, targets = next(iter(strategy.experimental_distribute_dataset(
        dataset)))

    @tf.function
    def gradients(inputs, targets):
        def replica_gradients(inputs, targets):
            with tf.GradientTape() as tape:
                predictions = model(inputs, training=True)
                loss = regularization(model)
                if data_loss:
                    per_example = tf.reduce_mean(
                        tf.square(targets - predictions), axis=-1)
                    loss += tf.nn.compute_average_loss(
                        per_example, global_batch_size=GLOBAL_BATCH)
            variables = model.trainable_variables
            # Zeros for unregularized variables when data_loss=False. (Not
            # UnconnectedGradients.ZERO: Keras 3 variables have a str dtype.)
            return [tf.zeros(v.shape) if g is None else g for g, v in zip(
                tape.gradient(loss, variables), variables)]
        per_replica = strategy.run(replica_gradients, args=(inputs, targets))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica,
                               axis=None)

    return [g.numpy() for g in gradients(inputs, targets)]


def naive_sum(model):
    """The common mistake: the regularization loss counted once per replica."""
    return tf.add_n([tf.cast(loss, tf.float32) for loss in model.losses])


def fit_with_a_shared_strength(strategy):
    """Equal StudentT/L2/L1L2 on same-shape layers (one shared trace each)
    weighted by one `Strength`, changed between two fits: the trace must
    read it on every replica."""
    x, y = data()
    with strategy.scope():
        strength = tfreg.Strength(0.5)
        keras.utils.set_random_seed(1)
        inputs = keras.Input((6,))
        hidden = inputs
        for _ in range(3):
            hidden = keras.layers.Dense(
                6, activation="tanh",
                kernel_regularizer=tfreg.priors.StudentT(3.0, weight=strength),
                activity_regularizer=tfreg.L2(strength))(hidden)
        outputs = keras.layers.Dense(
            1, kernel_regularizer=tfreg.L1L2(strength, strength))(hidden)
        model = keras.Model(inputs, outputs)
        model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE),
                      loss="mse")
    model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=EPOCHS, shuffle=False,
              verbose=0)
    strength.assign(5.0)
    model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=EPOCHS, shuffle=False,
              verbose=0)
    return model.get_weights()


class DistributeTest(absltest.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        if _CPUS < 2:
            raise AssertionError(
                "Expected 2 logical CPUs; TensorFlow initialized its devices "
                "before tests.devices.split_cpu() ran.")
        cls.weights = initial_weights()

    def test_shared_traces_read_a_changed_strength_on_every_replica(self):
        one = fit_with_a_shared_strength(tf.distribute.get_strategy())
        # Not collective all-reduces: after the other tests' strategies in
        # this process, whose models differ from this one, they fail with
        # "Shape mismatch in the collective instance" (with tfreg's shared
        # traces off too).
        two = fit_with_a_shared_strength(tf.distribute.MirroredStrategy(
            ["/cpu:0", "/cpu:1"],
            cross_device_ops=tf.distribute.ReductionToOneDevice()))
        for a, b in zip(one, two):
            np.testing.assert_allclose(b, a, **WEIGHT_TOLERANCE)

    def test_fit_matches_one_device(self):
        one = fit_weights(tf.distribute.get_strategy(), self.weights)
        two = fit_weights(mirrored(), self.weights)
        difference = max_difference(one, two)
        print(f"\nfit, MirroredStrategy(2) vs one device: max |dw| = "
              f"{difference:.3g}")
        for a, b in zip(one, two):
            np.testing.assert_allclose(b, a, **WEIGHT_TOLERANCE)
        # Training moved the weights far beyond the tolerance.
        movement = max_difference(one, self.weights)
        self.assertGreater(movement, 1e3 * WEIGHT_TOLERANCE["atol"])

    def test_regularizers_change_the_result(self):
        # Guards the parity tests against regularizers too weak to matter.
        zero = custom_loop(tf.distribute.get_strategy(), self.weights,
                           lambda model: tf.zeros(()))
        regularized = custom_loop(tf.distribute.get_strategy(), self.weights,
                                  tfreg.regularization_loss)
        self.assertGreater(max_difference(zero, regularized), 1e-3)

    def test_custom_loop_with_helper_matches_one_device(self):
        one = custom_loop(tf.distribute.get_strategy(), self.weights,
                          tfreg.regularization_loss)
        two = custom_loop(mirrored(), self.weights, tfreg.regularization_loss)
        difference = max_difference(one, two)
        print(f"\ncustom loop, MirroredStrategy(2) vs one device: max |dw| = "
              f"{difference:.3g}")
        for a, b in zip(one, two):
            np.testing.assert_allclose(b, a, **WEIGHT_TOLERANCE)
        # And the helper's loop is the same training as fit.
        fitted = fit_weights(tf.distribute.get_strategy(), self.weights)
        for a, b in zip(fitted, one):
            np.testing.assert_allclose(b, a, **WEIGHT_TOLERANCE)

    def test_helper_gradients_sum_to_one_device(self):
        one = summed_gradients(tf.distribute.get_strategy(), self.weights,
                               tfreg.regularization_loss)
        two = summed_gradients(mirrored(), self.weights,
                               tfreg.regularization_loss)
        print(f"\ngradients, MirroredStrategy(2) vs one device: max |dg| = "
              f"{max_difference(one, two):.3g}")
        for a, b in zip(one, two):
            np.testing.assert_allclose(b, a, **GRADIENT_TOLERANCE)

    def test_naive_unscaled_sum_is_wrong(self):
        strategy = mirrored()
        replicas = strategy.num_replicas_in_sync
        one = summed_gradients(tf.distribute.get_strategy(), self.weights,
                               tfreg.regularization_loss)
        naive = summed_gradients(strategy, self.weights, naive_sum)
        regularization_only = summed_gradients(
            tf.distribute.get_strategy(), self.weights,
            tfreg.regularization_loss, data_loss=False)
        error = max_difference(one, naive)
        print(f"\nnaive sum over {replicas} replicas: max |dg| = {error:.3g}")
        self.assertGreater(error, 1e-3)
        # Exactly the regularization gradient counted (replicas - 1) extra
        # times (activity penalties are local means, so they too).
        for a, b, r in zip(one, naive, regularization_only):
            np.testing.assert_allclose(b, a + (replicas - 1) * r,
                                       rtol=1e-5, atol=1e-6)

    def test_helper_scaling_by_context(self):
        model = build_model()
        model(np.ones((2, 6), np.float32))
        total = float(naive_sum(model))
        self.assertAlmostEqual(float(tfreg.regularization_loss(model)), total,
                               places=6)
        strategy = mirrored()
        with strategy.scope():
            # Cross-replica context: the whole loss, as on one device.
            self.assertAlmostEqual(
                float(tfreg.regularization_loss(model)), total, places=6)
        per_replica = strategy.run(
            tf.function(lambda: tfreg.distribute.scale_for_replicas(
                tf.constant(total))))
        for value in strategy.experimental_local_results(per_replica):
            self.assertAlmostEqual(float(value), total / 2, places=6)

    def test_no_losses_is_zero(self):
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        value = tfreg.regularization_loss(model)
        self.assertEqual(value.dtype, tf.float32)
        self.assertEqual(float(value), 0.0)


if __name__ == "__main__":
    absltest.main()
