"""`tfreg.export_saved_model`: served outside Python Keras, in a fresh process."""

import os
import tempfile

from absl.testing import absltest
import numpy as np
import tensorflow as tf

import tfreg
from tfreg import export
from tests import saving_util

keras = saving_util.keras

ALL_SIGNATURES = (export.SERVING_SIGNATURE, export.WEIGHT_SIGNATURE,
                  export.INPUTS_SIGNATURE)


def _graph_call(model, x):
    """`model(x)` run as a graph, as the SavedModel runs it.

    Eager and graph execution may round differently (grappler fuses MatMul
    and BiasAdd); served predictions are compared with the same graph.
    """
    return tf.function(lambda t: model(t, training=False))(x).numpy()


def _activity_reference(model, x):
    """Sum over activity-regularized layers of penalty(output) / batch."""
    total = 0.0
    for layer in model.layers:
        if layer.name.endswith("_activity"):
            output = keras.Model(model.inputs, layer.output)(x)
            total += float(layer.activity_regularizer(output)) / len(x)
    return total


def _graph_total(model, x=None):
    """tf.add_n(model.losses) in a graph, as the exported signatures sum it.

    With `x`, after `model(x)`, so activity penalties count. Grappler may
    reassociate a graph's sum (a Strength shared by two layers is a common
    factor), so eager agrees with it only to float rounding (asserted).
    """
    def total():
        if x is not None:
            model(x, training=False)
        return tf.add_n(model.losses)
    in_graph = tf.function(total)().numpy()
    np.testing.assert_allclose(in_graph, total(), rtol=1e-6)
    return in_graph


class ExportTest(absltest.TestCase):

    def test_every_registered_class_in_a_fresh_process(self):
        model, skipped = saving_util.zoo_model()
        for name, reason in skipped.items():
            print(f"export_test: skipping {name}: {reason}")
        x = saving_util.inputs()
        predictions = _graph_call(model, x)
        graph_total = _graph_total(model, x)
        model(x)
        live_losses = list(model.losses)
        live_total = tf.add_n(live_losses).numpy()
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "saved_model")
            tfreg.export_saved_model(model, path)
            served = saving_util.serve_in_fresh_process(
                path, directory, {"features": x}, ALL_SIGNATURES)
        # The export must not disturb the live model's losses.
        self.assertLen(model.losses, len(live_losses))
        np.testing.assert_array_equal(tf.add_n(model.losses).numpy(),
                                      live_total)
        np.testing.assert_array_equal(served["serving_default/output_0"],
                                      predictions)
        on_inputs = "regularization_loss_on_inputs/"
        np.testing.assert_array_equal(
            served[on_inputs + "regularization_loss"], graph_total)
        np.testing.assert_array_equal(
            served[on_inputs + "weight_regularization_loss"],
            served["regularization_loss/regularization_loss"])
        np.testing.assert_allclose(
            served[on_inputs + "activity_regularization_loss"],
            _activity_reference(model, x), rtol=1e-6)
        np.testing.assert_allclose(
            served[on_inputs + "weight_regularization_loss"]
            + served[on_inputs + "activity_regularization_loss"],
            live_total, rtol=1e-6)

    def test_weight_penalty_needs_no_inputs(self):
        model, _ = saving_util.zoo_model(with_activity=False)
        # A model that was never called reports only its weight penalties.
        weight_total = _graph_total(model)
        self.assertTrue(np.isfinite(weight_total))
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "saved_model")
            tfreg.export_saved_model(model, path)
            served = saving_util.serve_in_fresh_process(
                path, directory, {}, (export.WEIGHT_SIGNATURE,))
        np.testing.assert_array_equal(
            served["regularization_loss/regularization_loss"], weight_total)

    def test_signatures_and_loaded_attributes(self):
        model, _ = saving_util.zoo_model(with_activity=False)
        x = saving_util.inputs()
        with tempfile.TemporaryDirectory() as directory:
            tfreg.export_saved_model(model, directory)
            loaded = tf.saved_model.load(directory)
            self.assertCountEqual(loaded.signatures, ALL_SIGNATURES)
            inputs_of = {name: loaded.signatures[name].structured_input_signature
                         for name in ALL_SIGNATURES}
            self.assertEqual(inputs_of[export.WEIGHT_SIGNATURE], ((), {}))
            for name in (export.SERVING_SIGNATURE, export.INPUTS_SIGNATURE):
                self.assertEqual(
                    inputs_of[name],
                    ((), {"features": tf.TensorSpec((None, 3), tf.float32,
                                                    name="features")}))
            self.assertCountEqual(
                loaded.signatures[export.INPUTS_SIGNATURE].structured_outputs,
                ["regularization_loss", "weight_regularization_loss",
                 "activity_regularization_loss"])
            np.testing.assert_array_equal(
                loaded.serve(tf.constant(x))["output_0"],
                _graph_call(model, x))
            np.testing.assert_array_equal(
                loaded.regularization_loss()["regularization_loss"],
                _graph_total(model))
            self.assertLen(loaded.model_variables, len(model.variables))

    def test_strength_is_exported_with_its_current_value(self):
        strength = tfreg.Strength(0.5, name="s")
        inputs = keras.Input((3,))
        model = keras.Model(inputs, keras.layers.Dense(
            2, kernel_regularizer=tfreg.L2(strength))(inputs))
        expected = tf.add_n(model.losses).numpy()
        with tempfile.TemporaryDirectory() as directory:
            tfreg.export_saved_model(model, directory)
            strength.assign(0.0)
            loaded = tf.saved_model.load(directory)
            np.testing.assert_array_equal(
                loaded.regularization_loss()["regularization_loss"], expected)

    def test_multiple_inputs_and_no_regularizers(self):
        first, second = keras.Input((3,), name="a"), keras.Input((2,), name="b")
        merged = keras.layers.Concatenate()([first, second])
        model = keras.Model([first, second], [
            keras.layers.Dense(1, activity_regularizer=tfreg.L1(0.1))(merged),
            keras.layers.Dense(2)(merged)])
        a = np.ones((4, 3), np.float32)
        b = np.full((4, 2), 2.0, np.float32)
        with tempfile.TemporaryDirectory() as directory:
            tfreg.export_saved_model(model, directory)
            loaded = tf.saved_model.load(directory)
            served = loaded.signatures["serving_default"](
                a=tf.constant(a), b=tf.constant(b))
            self.assertCountEqual(served, ["output_0", "output_1"])
            losses = loaded.signatures[export.INPUTS_SIGNATURE](
                a=tf.constant(a), b=tf.constant(b))
            self.assertEqual(float(losses["weight_regularization_loss"]), 0.0)
            model([a, b])
            np.testing.assert_array_equal(losses["regularization_loss"],
                                          tf.add_n(model.losses))

    def test_subclassed_model_needs_an_input_signature(self):

        class Subclassed(keras.Model):

            def __init__(self):
                super().__init__()
                self.dense = keras.layers.Dense(
                    2, kernel_regularizer=tfreg.L2(0.1))

            def call(self, x):
                return self.dense(x)

        model = Subclassed()
        x = np.ones((2, 3), np.float32)
        model(x)
        with tempfile.TemporaryDirectory() as directory:
            with self.assertRaisesWithLiteralMatch(
                    ValueError,
                    "Invalid value for argument `input_signature`. Expected "
                    "a tf.TensorSpec (or a nested structure of them) for a "
                    "model without `inputs` (a subclassed model, or a "
                    "Sequential model without an Input), e.g. "
                    "tf.TensorSpec((None, 3), tf.float32). Received: "
                    f"input_signature=None for model={model.name!r}"):
                tfreg.export_saved_model(model, directory)
            with self.assertRaisesWithLiteralMatch(
                    TypeError,
                    "Invalid value for argument `input_signature`. Expected "
                    "a tf.TensorSpec or a nested structure of tf.TensorSpec. "
                    "Received: input_signature=[(None, 3)]"):
                tfreg.export_saved_model(model, directory,
                                         input_signature=[(None, 3)])
            tfreg.export_saved_model(
                model, directory,
                input_signature=tf.TensorSpec((None, 3), tf.float32))
            loaded = tf.saved_model.load(directory)
            np.testing.assert_array_equal(
                loaded.signatures["serving_default"](
                    inputs=tf.constant(x))["output_0"], _graph_call(model, x))
            np.testing.assert_array_equal(
                loaded.regularization_loss()["regularization_loss"],
                _graph_total(model))

    def test_rejects_non_models(self):
        layer = keras.layers.Dense(2)
        with self.assertRaisesWithLiteralMatch(
                TypeError,
                "Invalid value for argument `model`. Expected a "
                f"{keras.__name__} Model. Received: model={layer!r}"):
            tfreg.export_saved_model(layer, "unused")


if __name__ == "__main__":
    absltest.main()
