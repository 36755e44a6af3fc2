"""Save/load round trips of models holding every registered regularizer.

Keras 3: `.keras`. tf_keras: SavedModel directory, `.h5` and `.keras`. Each
format restores identical configs (scheduled strengths and L2-SP references
included), bit-identical `model.losses` and identical training curves.
`tf.saved_model.save` and `model.export` serve equal predictions in a fresh
process where tfreg and Keras cannot be imported.
"""

import os
import pathlib
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import tfreg
from tfreg import _keras
from tests import battery
from tests import saving_util

keras = saving_util.keras

FORMATS = ("tf", "h5", "keras") if _keras.LEGACY else ("keras",)
STEPS_BEFORE, STEPS_AFTER = 2, 3


def _batches(count, seed):
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(saving_util.BATCH, saving_util.INPUT_DIM))
             .astype(np.float32),
             rng.normal(size=(saving_util.BATCH, 1)).astype(np.float32))
            for _ in range(count)]


def _train(model, batches):
    return [float(np.asarray(model.train_on_batch(x, y))) for x, y in batches]


def _graph_call(model, x):
    return tf.function(lambda t: model(t, training=False))(x).numpy()


class SaveLoadTest(parameterized.TestCase):

    @parameterized.named_parameters(*[(f, f) for f in FORMATS])
    def test_round_trip_restores_every_registered_class(self, save_format):
        model, skipped = saving_util.zoo_model()
        for name, reason in skipped.items():
            print(f"save_load_test: skipping {name}: {reason}")
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
        _train(model, _batches(STEPS_BEFORE, seed=2))
        x = saving_util.inputs()
        before = saving_util.penalties(model, x)
        with tempfile.TemporaryDirectory() as directory:
            loaded = battery.save_and_load(model, directory, save_format)
        original = saving_util.regularizers_of(model)
        restored = saving_util.regularizers_of(loaded)
        self.assertEqual(list(restored), list(original))
        for name, regularizer in original.items():
            with self.subTest(layer=name):
                self.assertIs(type(restored[name]), type(regularizer))
                self.assertEqual(restored[name].get_config(),
                                 regularizer.get_config())
        self.assertEqual(
            restored["L2_scheduled_kernel"].get_config()["l2"],
            {"class_name": "Strength",
             "config": {"value": float(np.float32(0.37)),
                        "name": "l2_strength"}})
        np.testing.assert_array_equal(saving_util.penalties(loaded, x), before)
        # The same seeded batches train both to the same weights, bit for
        # bit, step after step. Their reported losses, sums of some 30
        # penalties and the MSE, agree to float32 rounding: grappler
        # reassociates that sum depending on the graph's node names, which
        # differ between the original and the loaded model.
        after = _batches(STEPS_AFTER, seed=3)
        np.testing.assert_allclose(_train(loaded, after),
                                   _train(model, after), rtol=1e-6)
        for ours, theirs in zip(loaded.weights, model.weights):
            np.testing.assert_array_equal(ours.numpy(), theirs.numpy(),
                                          err_msg=ours.name)

    @parameterized.named_parameters(*[(f, f) for f in FORMATS])
    def test_strength_shared_by_two_layers(self, save_format):
        strength = tfreg.Strength(0.2, name="shared")
        inputs = keras.Input((saving_util.INPUT_DIM,))
        hidden = keras.layers.Dense(
            4, kernel_regularizer=tfreg.L2(strength), name="a")(inputs)
        model = keras.Model(inputs, keras.layers.Dense(
            1, kernel_regularizer=tfreg.L1(strength), name="b")(hidden))
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
        _train(model, _batches(STEPS_BEFORE, seed=2))
        strength.assign(0.25)
        x = saving_util.inputs()
        before = saving_util.penalties(model, x)
        with tempfile.TemporaryDirectory() as directory:
            loaded = battery.save_and_load(model, directory, save_format)
        # A config-based load rebuilds one Strength per regularizer, each
        # with the saved name and value, so the name still drives both.
        np.testing.assert_array_equal(saving_util.penalties(loaded, x), before)
        variables = tfreg.strengths(loaded)["shared"]
        self.assertEqual([float(v.numpy()) for v in variables],
                         [np.float32(0.25)] * len(variables))
        after = _batches(STEPS_AFTER, seed=3)
        # Grappler factors the one shared variable out of the original's sum
        # (s * a + s * b -> s * (a + b)) but not two equal variables, so
        # the curves agree to float32 rounding rather than to the bit.
        np.testing.assert_allclose(_train(loaded, after), _train(model, after),
                                   rtol=1e-6)
        for variable in variables:
            variable.assign(0.0)
        self.assertEqual(float(tf.add_n(loaded.losses)), 0.0)

    def test_saved_model_serves_without_tfreg(self):
        model, _ = saving_util.zoo_model()
        x = saving_util.inputs()
        expected = _graph_call(model, x)
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "saved_model")
            tf.saved_model.save(model, path)
            served = saving_util.serve_in_fresh_process(
                path, directory, {"features": x}, ["serving_default"])
        (output,) = served.values()
        np.testing.assert_array_equal(output, expected)

    def test_model_export_serves_without_tfreg(self):
        model, _ = saving_util.zoo_model()
        x = saving_util.inputs()
        expected = _graph_call(model, x)
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "exported")
            model.export(path)
            served = saving_util.serve_in_fresh_process(
                path, directory, {"features": x}, ["serving_default"])
        (output,) = served.values()
        np.testing.assert_array_equal(output, expected)

    def test_checkpoint_of_the_model_restores_its_strengths(self):
        shared = tfreg.Strength(0.3, name="shared")
        inputs = keras.Input((3,))
        hidden = keras.layers.Dense(
            4, kernel_regularizer=tfreg.L2(shared),
            bias_regularizer=tfreg.L1L2(shared, tfreg.Strength(0.2)))(inputs)
        model = keras.Model(inputs, keras.layers.Dense(
            1, kernel_regularizer=tfreg.priors.Laplace(
                weight=tfreg.Strength(0.5, name="prior")))(hidden))
        strengths = tfreg.strengths(model)
        with tempfile.TemporaryDirectory() as directory:
            path = tf.train.Checkpoint(model=model).save(
                os.path.join(directory, "checkpoint"))
            saved = [name for name, _ in tf.train.list_variables(path)]
            for name, variables in strengths.items():
                for variable in variables:
                    variable.assign(variable + 1.0)
            tf.train.Checkpoint(model=model).restore(path).assert_consumed()
        self.assertEqual(
            {name: [float(v.numpy()) for v in variables]
             for name, variables in tfreg.strengths(model).items()},
            {"shared": [np.float32(0.3)], "strength": [np.float32(0.2)],
             "prior": [np.float32(0.5)]})
        self.assertEqual(
            len([name for name in saved if "_regularizer/" in name]), 3)

    @parameterized.named_parameters(*[(f, f) for f in FORMATS])
    def test_keras_objects_named_like_tfreg_classes_still_load(self, save_format):
        # tfreg's Orthogonal regularizer must not shadow Keras' Orthogonal
        # initializer (LSTM's default recurrent initializer), in memory or
        # in a file; tfreg's own regularizer of that name loads beside it.
        self.assertIsInstance(keras.initializers.get("Orthogonal"),
                              keras.initializers.Orthogonal)
        model = keras.Sequential([
            keras.Input((4, 3)),
            keras.layers.LSTM(2, kernel_regularizer=tfreg.Orthogonal(0.1)),
            keras.layers.Dense(1, kernel_initializer="orthogonal")])
        with tempfile.TemporaryDirectory() as directory:
            loaded = battery.save_and_load(model, directory, save_format)
        self.assertIsInstance(loaded.layers[0].cell.recurrent_initializer,
                              keras.initializers.Orthogonal)
        self.assertIsInstance(loaded.layers[0].cell.kernel_regularizer,
                              tfreg.Orthogonal)
        np.testing.assert_array_equal(
            [np.asarray(loss) for loss in loaded.losses],
            [np.asarray(loss) for loss in model.losses])

    def test_safe_mode_still_refuses_lambdas(self):
        inputs = keras.Input((3,))
        hidden = keras.layers.Dense(
            2, kernel_regularizer=tfreg.L2(0.1))(inputs)
        model = keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2)(hidden))
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "model.keras")
            model.save(path)
            with self.assertRaisesRegex(ValueError, "safe_mode"):
                keras.models.load_model(path)
            with self.assertRaisesRegex(ValueError, "safe_mode"):
                keras.models.load_model(path, safe_mode=True)

    def test_a_lambda_inside_a_tfreg_config_is_rejected(self):
        smuggled = {"class_name": "__lambda__",
                    "config": {"code": "print('hi')", "defaults": None,
                               "closure": None}}
        for config in (
                {"class_name": "L2", "config": {"l2": smuggled}},
                {"class_name": "L2", "registered_name": "tfreg>L2",
                 "module": "os", "config": {"l2": smuggled}}):
            with self.subTest(config=config):
                with self.assertRaises(ValueError):
                    tfreg.deserialize(config)
                if "registered_name" in config:  # Keras' own lookup key.
                    with self.assertRaises(ValueError):
                        keras.saving.deserialize_keras_object(config)

    def test_no_tfreg_source_enables_unsafe_deserialization(self):
        package = pathlib.Path(tfreg.__file__).parent
        for source in sorted(package.glob("*.py")):
            with self.subTest(source=source.name):
                text = source.read_text()
                self.assertNotIn("enable_unsafe_deserialization", text)
                self.assertNotIn("safe_mode", text)
                self.assertNotIn("SafeModeScope", text)


if __name__ == "__main__":
    absltest.main()
