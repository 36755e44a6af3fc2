"""Strengths that change during training: no retrace, saved, distributed."""

from tests import devices

LOGICAL_CPUS = devices.split_cpu()

import json  # pylint: disable=g-import-not-at-top,wrong-import-position
import os
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import tfreg
from tests import battery
from tfreg import _keras
from tools import xla_audit

keras = _keras.keras


class CountingL2(tfreg.L2):
    """L2 that counts how often its penalty is traced or run eagerly."""

    calls = 0

    def penalty(self, x):
        CountingL2.calls += 1
        return super().penalty(x)


def _data(n=64):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3)).astype("float32")
    return x, x @ np.array([[1.0], [-2.0], [0.5]], "float32")


def _mirrored():
    # Collective all-reduce instance keys clash between strategies created by
    # other test modules when pytest runs them all in one process.
    return tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1"],
        cross_device_ops=tf.distribute.ReductionToOneDevice())


class TraceRecorder(_keras.keras.callbacks.Callback):
    """Records CountingL2's count at the end of every epoch."""

    def __init__(self):
        super().__init__()
        self.counts = []

    def on_epoch_end(self, epoch, logs=None):
        self.counts.append(CountingL2.calls)


def _model(kernel_regularizer, activity_regularizer=None):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(
        4, kernel_regularizer=kernel_regularizer,
        activity_regularizer=activity_regularizer)(inputs)
    return keras.Model(inputs, keras.layers.Dense(1)(hidden))


class _ScaledDense(keras.layers.Layer):
    """x @ kernel * scale; `scale` is an extra weight with no config argument."""

    def build(self, input_shape):
        self.kernel = self.add_weight(
            name="kernel", shape=(input_shape[-1], 1), initializer="ones")
        self.scale = self.add_weight(name="scale", shape=(1,),
                                     initializer="ones")

    def call(self, inputs):
        return tf.matmul(inputs, self.kernel) * self.scale


class StrengthTest(parameterized.TestCase):

    def test_assign_changes_a_compiled_penalty_without_retrace(self):
        strength = tfreg.Strength(0.0, name="l2")
        penalty = tf.function(tfreg.L2(strength), jit_compile=True)
        x = tf.ones((3, 4))
        self.assertEqual(float(penalty(x)), 0.0)
        strength.assign(0.25)
        self.assertEqual(float(penalty(x)), 3.0)
        self.assertEqual(penalty.experimental_get_tracing_count(), 1)

    def test_python_float_strength_is_frozen_but_strength_is_not(self):
        x = tf.ones((2, 2))
        frozen = tfreg.L2(1.0)
        penalty = tf.function(frozen, jit_compile=True)
        penalty(x)
        frozen.l2 = 2.0  # A float is baked into the trace, as in Keras.
        self.assertEqual(float(penalty(x)), 4.0)
        strength = tfreg.Strength(1.0)
        live = tf.function(tfreg.L2(strength), jit_compile=True)
        live(x)
        strength.assign(2.0)
        self.assertEqual(float(live(x)), 8.0)

    def test_every_strength_argument_accepts_a_strength(self):
        x = tf.constant([[1.0, -2.0], [0.5, 3.0]])
        for regularizer, floats in (
                (tfreg.L1(tfreg.Strength(0.3)), tfreg.L1(0.3)),
                (tfreg.L1L2(tfreg.Strength(0.3), tfreg.Strength(0.2)),
                 tfreg.L1L2(0.3, 0.2)),
                (tfreg.Orthogonal(tfreg.Strength(0.3)), tfreg.Orthogonal(0.3))):
            with self.subTest(regularizer=regularizer):
                for dtype in (tf.bfloat16, tf.float32, tf.float64):
                    inputs = tf.cast(x, dtype)
                    for got, expected in zip(
                            battery.value_and_gradient(regularizer, inputs),
                            battery.value_and_gradient(floats, inputs)):
                        self.assertEqual(got.dtype, expected.dtype)
                        np.testing.assert_allclose(
                            tf.cast(got, tf.float64),
                            tf.cast(expected, tf.float64), rtol=1e-6)

    def test_strengths_on_a_large_tensor_under_xla(self):
        # Large tensors take a custom-gradient form under XLA (penalties.py).
        x = np.random.default_rng(0).normal(size=(256, 256))
        compiled = tf.function(battery.value_and_gradient, jit_compile=True)
        for regularizer, floats in (
                (tfreg.L2(tfreg.Strength(0.3)), tfreg.L2(0.3)),
                (tfreg.L1L2(tfreg.Strength(0.3), tfreg.Strength(0.2)),
                 tfreg.L1L2(0.3, 0.2))):
            for dtype in (tf.float32, tf.float64):
                inputs = tf.constant(x, dtype)
                with self.subTest(regularizer=regularizer, dtype=dtype.name):
                    for got, expected in zip(
                            compiled(regularizer, inputs),
                            battery.value_and_gradient(floats, inputs)):
                        self.assertEqual(got.dtype, expected.dtype)
                        np.testing.assert_allclose(got, expected, rtol=1e-5)

    def test_every_registered_class_has_a_schedulable_strength(self):
        """Each class takes a Strength for some argument: same value and
        gradient as the float, in float32 and float64 (a custom gradient runs
        outside the call's dtype scope), and a compiled penalty follows it."""
        rng = np.random.default_rng(0)
        for cls in xla_audit.registered_classes():
            kind = xla_audit.kinds_of(cls)[0]
            shape = ((4, 8) if kind == "activity"
                     else xla_audit.shapes_of(cls)[0][1])
            with self.subTest(cls=cls.__name__):
                regularizer = xla_audit.build_regularizer(cls, shape)
                self.assertNotIsInstance(regularizer, str)
                config = json.loads(json.dumps(regularizer.get_config()))
                values = (rng.uniform(0.05, 0.95, shape) if kind == "activity"
                          else rng.normal(size=shape))
                schedulable = []
                for key, value in config.items():
                    if not isinstance(value, float):
                        continue
                    value = value or 0.01  # L1L2's strengths default to 0.
                    try:
                        dynamic = cls.from_config({**config, key: {
                            "class_name": "Strength",
                            "config": {"value": value}}})
                    except (TypeError, ValueError):
                        continue  # Not a strength (a scale, a location).
                    schedulable.append(key)
                    constant = cls.from_config({**config, key: value})
                    for dtype in (tf.float32, tf.float64):
                        x = tf.constant(values, dtype)
                        for got, expected in zip(
                                battery.value_and_gradient(dynamic, x),
                                battery.value_and_gradient(constant, x)):
                            self.assertEqual(got.dtype, expected.dtype)
                            np.testing.assert_allclose(got, expected,
                                                       rtol=1e-6, atol=1e-12)
                    strength = getattr(dynamic, key)
                    compiled = tf.function(dynamic, jit_compile=True)
                    x = tf.constant(values, tf.float32)
                    before = float(compiled(x))
                    strength.assign(2 * value)
                    doubled = cls.from_config({**config, key: 2 * value})
                    np.testing.assert_allclose(float(compiled(x)),
                                               float(doubled(x)), rtol=1e-5)
                    self.assertNotEqual(float(compiled(x)), before)
                    self.assertEqual(compiled.experimental_get_tracing_count(),
                                     1)
                self.assertNotEmpty(schedulable)

    def test_rejects_bad_values_and_names(self):
        with self.assertRaisesRegex(
                ValueError, "Invalid value for argument `value`. Expected a "
                "finite float >= 0. Received: value=-1"):
            tfreg.Strength(-1)
        strength = tfreg.Strength(0.1)
        with self.assertRaisesRegex(ValueError, "Received: value=nan"):
            strength.assign(float("nan"))
        with self.assertRaisesRegex(TypeError, "Received: value=True"):
            strength.assign(True)
        with self.assertRaisesRegex(ValueError, "Received: name='a b'"):
            tfreg.Strength(0.1, name="a b")
        with self.assertRaisesRegex(ValueError, r"Received: name='l2\\n'"):
            tfreg.Strength(0.1, name="l2\n")
        with self.assertRaisesRegex(ValueError,
                                    "Received: value=1e.39, which is more than "
                                    "half of float32.s maximum"):
            tfreg.Strength(1e39)
        with self.assertRaisesRegex(ValueError,
                                    "Received: value=1e.39, which is more than "
                                    "half of float32.s maximum"):
            strength.assign(1e39)
        with self.assertRaisesRegex(ValueError, "Expected a strength"):
            tfreg.L2({"class_name": "os.system", "config": {}})
        with self.assertRaisesRegex(ValueError, "Expected a Strength config"):
            tfreg.L2({"class_name": "Strength", "config": {"value": 1,
                                                           "code": "x"}})
        self.assertEqual(strength.value, np.float32(0.1))

    def test_config_is_json_and_holds_the_current_value(self):
        strength = tfreg.Strength(0.1, name="warmup")
        regularizer = tfreg.L1L2(l1=strength, l2=0.5)
        strength.assign(0.75)
        config = json.loads(json.dumps(tfreg.serialize(regularizer)))
        restored = tfreg.deserialize(config)
        self.assertIsInstance(restored.l1, tfreg.Strength)
        self.assertIsNot(restored.l1, strength)
        self.assertEqual(restored.l1.value, 0.75)
        self.assertEqual(restored.l1.name, "warmup")
        self.assertEqual(restored.l2, 0.5)
        self.assertEqual(restored.get_config(), regularizer.get_config())

    def test_fit_with_jit_traces_once_and_follows_the_schedule(self):
        strength = tfreg.Strength(0.0, name="l2")
        model = _model(CountingL2(strength))
        model.compile("sgd", "mse", jit_compile=True)
        x, y = _data()
        schedule = tfreg.StrengthScheduler({"l2": lambda epoch: 0.1 * epoch})
        traces = TraceRecorder()
        history = model.fit(x, y, batch_size=16, epochs=4, verbose=0,
                            callbacks=[schedule, traces])
        # The train step is traced during the first epoch only (tf_keras
        # traces it twice there); new strengths never cause a retrace.
        self.assertGreater(traces.counts[0], 0)
        self.assertEqual(traces.counts, traces.counts[:1] * 4)
        np.testing.assert_array_equal(
            np.float32(history.history["strength/l2"]),
            np.float32([0.0, 0.1, 0.2, 0.3]))
        kernel = model.layers[1].kernel
        np.testing.assert_allclose(
            float(model.layers[1].losses[0]),
            0.3 * float(tf.reduce_sum(tf.square(kernel))), rtol=1e-5)

    def test_per_step_schedule(self):
        strength = tfreg.Strength(0.0, name="l2")
        model = _model(tfreg.L2(strength))
        model.compile("sgd", "mse", jit_compile=True)
        x, y = _data()
        model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[
            tfreg.StrengthScheduler({"l2": lambda step: 0.01 * step},
                                    per="step")])
        self.assertAlmostEqual(strength.value, 0.07, places=6)

    def test_per_step_schedule_sees_global_steps_of_multi_step_calls(self):
        strength = tfreg.Strength(0.0, name="l2")
        model = _model(tfreg.L2(strength))
        model.compile("sgd", "mse", steps_per_execution=4)
        x, y = _data()
        steps = []
        scheduler = tfreg.StrengthScheduler(
            {"l2": lambda step: steps.append(step) or 0.01 * step},
            per="step")
        # 64 examples in batches of 8: 8 steps an epoch, 2 calls of 4 each.
        model.fit(x, y, batch_size=8, epochs=2, verbose=0,
                  callbacks=[scheduler])
        self.assertEqual(steps, [0, 4, 8, 12])
        self.assertAlmostEqual(strength.value, 0.12, places=6)
        # A second fit carries on from the optimizer's step count.
        model.fit(x, y, batch_size=8, epochs=1, verbose=0,
                  callbacks=[scheduler])
        self.assertEqual(steps[4:], [16, 20])

    def test_schedule_returning_a_non_number_is_named(self):
        model = _model(tfreg.L2(tfreg.Strength(0.0, name="l2")))
        model.compile("sgd", "mse")
        x, y = _data()
        for value in (None, tf.ones(2)):
            with self.subTest(value=value):
                with self.assertRaisesRegex(
                        TypeError, "Invalid value for argument `schedules`. "
                        "Expected callables returning a finite float >= 0 "
                        "that float32 holds. Received: schedules=[{]'l2': <a "
                        "callable that returned .* for epoch 0>[}]"):
                    model.fit(x, y, epochs=1, verbose=0, callbacks=[
                        tfreg.StrengthScheduler({"l2": lambda epoch, v=value: v})])

    def test_scheduler_names_a_missing_strength(self):
        model = _model(tfreg.L2(tfreg.Strength(0.0, name="l2")))
        model.compile("sgd", "mse")
        x, y = _data()
        with self.assertRaisesWithLiteralMatch(
                ValueError,
                "Invalid value for argument `schedules`. Expected a dict "
                "keyed by names of the model's Strengths ['l2']. Received: "
                "schedules={'kl': ...}, where the model has no Strength "
                "named ['kl']"):
            model.fit(x, y, epochs=1, verbose=0, callbacks=[
                tfreg.StrengthScheduler({"kl": lambda epoch: 1.0})])

    def test_scheduler_finds_a_strength_applied_to_an_extra_weight(self):
        # A weight made by `add_weight` has no `*_regularizer` argument:
        # its regularizer is reachable only through the weight itself.
        model = keras.Sequential([keras.Input((3,)),
                                  _ScaledDense(name="scaled")])
        strength = tfreg.Strength(0.5, name="s")
        self.assertEqual(tfreg.apply(model, tfreg.L2(strength),
                                     include="scale$"),
                         {"scaled/scale": False})
        self.assertEqual(list(tfreg.strengths(model)), ["s"])
        self.assertIs(tfreg.strengths(model)["s"][0], strength.variable)
        model.compile("sgd", "mse")
        x, y = _data()
        history = model.fit(x, y, epochs=2, verbose=0, callbacks=[
            tfreg.StrengthScheduler({"s": lambda epoch: 0.25 * (epoch + 1)})])
        self.assertEqual(history.history["strength/s"], [0.25, 0.5])
        scale = model.get_layer("scaled").scale
        np.testing.assert_allclose(
            float(tf.add_n(model.losses)),
            0.5 * float(tf.reduce_sum(tf.square(scale))), rtol=1e-6)

    def test_saved_model_restores_the_current_value(self):
        strength = tfreg.Strength(0.0, name="l2")
        model = _model(tfreg.L2(strength))
        strength.assign(0.4)
        inputs = tf.ones((2, 3))
        model(inputs)
        before = [float(loss) for loss in model.losses]
        formats = ("keras", "h5") if _keras.LEGACY else ("keras",)
        for save_format in formats:
            with self.subTest(save_format=save_format), \
                    tempfile.TemporaryDirectory() as directory:
                path = os.path.join(directory, f"model.{save_format}")
                model.save(path)
                loaded = keras.models.load_model(path)
                loaded(inputs)
                self.assertEqual([float(loss) for loss in loaded.losses],
                                 before)
                restored = loaded.layers[1].kernel_regularizer.l2
                self.assertIsInstance(restored, tfreg.Strength)
                self.assertEqual(restored.value, np.float32(0.4))

    def test_checkpoint_restores_strengths(self):
        strength = tfreg.Strength(0.2, name="l2")
        model = _model(tfreg.L2(strength))
        found = tfreg.strengths(model)
        self.assertEqual(list(found), ["l2"])
        checkpoint = tf.train.Checkpoint(strengths=found)
        with tempfile.TemporaryDirectory() as directory:
            path = checkpoint.save(os.path.join(directory, "ckpt"))
            strength.assign(0.9)
            checkpoint.restore(path).assert_consumed()
        self.assertEqual(strength.value, np.float32(0.2))

    @absltest.skipIf(LOGICAL_CPUS < 2, "needs 2 logical CPUs")
    def test_mirrored_strategy_follows_the_schedule_without_retrace(self):
        # Not jit-compiled: Keras' XLA train step under MirroredStrategy on
        # logical CPU devices fails upstream even with no regularizer at all
        # ("Trying to access resource ... located in device CPU:1").
        strategy = _mirrored()
        with strategy.scope():
            strength = tfreg.Strength(0.0, name="l2")
            model = _model(CountingL2(strength))
            model.compile("sgd", "mse")
        x, y = _data()
        traces = TraceRecorder()
        model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[
            tfreg.StrengthScheduler({"l2": lambda epoch: 0.5 * epoch}),
            traces])
        self.assertEqual(strength.value, 1.0)
        # Traced for each replica in the first epoch, never again.
        self.assertGreaterEqual(traces.counts[0],
                                strategy.num_replicas_in_sync)
        self.assertEqual(traces.counts, traces.counts[:1] * 3)
        kernel = model.layers[1].kernel
        np.testing.assert_allclose(
            float(model.layers[1].losses[0]),
            1.0 * float(tf.reduce_sum(tf.square(kernel))), rtol=1e-5)

    @absltest.skipIf(LOGICAL_CPUS < 2, "needs 2 logical CPUs")
    def test_jit_replica_step_follows_the_schedule_like_one_device(self):
        mirrored = self._custom_loop(_mirrored())
        single = self._custom_loop(tf.distribute.get_strategy())
        for got, expected in zip(mirrored["weights"], single["weights"]):
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
        # The compiled step is traced once per replica during the first
        # epoch (tf_keras traces the outer step twice there, as it creates
        # the optimizer's variables), and never again.
        for run, replicas in ((mirrored, 2), (single, 1)):
            self.assertEqual(run["traces"][0][0], replicas)
            self.assertEqual(run["traces"][0], run["traces"][-1])
        self.assertFalse(np.allclose(mirrored["weights"][0],
                                     self._custom_loop(
                                         tf.distribute.get_strategy(),
                                         schedule=lambda epoch: 0.0)
                                     ["weights"][0]))

    def _custom_loop(self, strategy, schedule=lambda epoch: 0.5 * epoch):
        """Three epochs of a jit-compiled per-replica step, global batch 16."""
        x, y = _data()
        with strategy.scope():
            strength = tfreg.Strength(0.0, name="l2")
            model = _model(tfreg.L2(strength))
            optimizer = keras.optimizers.SGD(0.1)

        @tf.function(jit_compile=True)
        def gradients(x, y):
            with tf.GradientTape() as tape:
                loss = (tf.reduce_sum(tf.square(model(x) - y)) / 16
                        + tfreg.regularization_loss(model))
            return tape.gradient(loss, model.trainable_variables)

        @tf.function
        def step(x, y):
            def replica_step(x, y):
                optimizer.apply_gradients(
                    zip(gradients(x, y), model.trainable_variables))
            strategy.run(replica_step, args=(x, y))

        dataset = strategy.experimental_distribute_dataset(
            tf.data.Dataset.from_tensor_slices((x, y)).batch(16))
        traces = []
        for epoch in range(3):
            strength.assign(schedule(epoch))
            for features, targets in dataset:
                step(features, targets)
            traces.append((gradients.experimental_get_tracing_count(),
                           step.experimental_get_tracing_count()))
        return {"weights": [w.numpy() for w in model.weights],
                "traces": traces}


if __name__ == "__main__":
    absltest.main()
