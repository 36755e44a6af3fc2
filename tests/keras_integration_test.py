"""tfreg inside tf.keras: the documented example, mixed precision, `get`."""

import json
import sys

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import tfreg
from tfreg import _keras

keras = _keras.keras


class SeedExampleTest(parameterized.TestCase):

    @parameterized.named_parameters(
        ("tfreg", tfreg.L1, tfreg.L2),
        ("keras", keras.regularizers.L1, keras.regularizers.L2))
    def test_layer_losses_sum_to_5_25(self, l1, l2):
        layer = keras.layers.Dense(5, kernel_initializer="ones",
                                   kernel_regularizer=l1(0.01),
                                   activity_regularizer=l2(0.01))
        layer(tf.ones((5, 5)) * 2.0)
        self.assertAlmostEqual(float(tf.reduce_sum(layer.losses)), 5.25,
                               places=5)


class MixedPrecisionTest(parameterized.TestCase):

    def tearDown(self):
        keras.mixed_precision.set_global_policy("float32")
        super().tearDown()

    @parameterized.product(policy=("mixed_float16", "mixed_bfloat16"),
                           jit_compile=(False, True))
    def test_fit_with_weight_and_activity_regularizers(self, policy,
                                                       jit_compile):
        keras.mixed_precision.set_global_policy(policy)
        keras.utils.set_random_seed(0)
        inputs = keras.Input((6,))
        hidden = keras.layers.Dense(
            8, activation="relu",
            kernel_regularizer=tfreg.L1L2(0.01, 0.01),
            bias_regularizer=tfreg.L2(0.01),
            activity_regularizer=tfreg.L2(0.01))(inputs)
        hidden = keras.layers.Dense(
            8, kernel_regularizer=tfreg.Orthogonal(0.1),
            activity_regularizer=tfreg.L1(0.001))(hidden)
        # Half-precision activations of 64 elements (without jit, the
        # eight-op form of penalties.l1_l2).
        hidden = keras.layers.Dense(
            8, activity_regularizer=tfreg.L1L2(0.001, 0.001))(hidden)
        outputs = keras.layers.Dense(1, dtype="float32")(hidden)
        model = keras.Model(inputs, outputs)
        model.compile("adam", "mse", jit_compile=jit_compile)
        rng = np.random.default_rng(0)
        x = rng.normal(size=(32, 6)).astype("float32")
        y = rng.normal(size=(32, 1)).astype("float32")
        history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
        self.assertTrue(np.all(np.isfinite(history.history["loss"])))
        model(x[:4])
        for loss in model.losses:
            self.assertEqual(loss.dtype, tf.float32)

    def test_large_float16_activations_do_not_overflow(self):
        keras.mixed_precision.set_global_policy("mixed_float16")
        layer = keras.layers.Dense(64, kernel_initializer="ones",
                                   activity_regularizer=tfreg.L2(1.0))
        # Every output is 300: the float16 sum of squares would be inf.
        layer(tf.fill((4, 300), 1.0))
        penalty = float(layer.losses[0])
        np.testing.assert_allclose(penalty, 64 * 300.0**2, rtol=1e-3)


class GetSerializeDeserializeTest(parameterized.TestCase):

    @parameterized.named_parameters(
        ("l1", "l1", tfreg.L1, {"l1": 0.01}),
        ("l2", "l2", tfreg.L2, {"l2": 0.01}),
        ("l1_l2", "l1_l2", tfreg.L1L2, {"l1": 0.01, "l2": 0.01}),
        ("l1l2", "l1l2", tfreg.L1L2, {"l1": 0.0, "l2": 0.0}),
        ("class_name", "L1L2", tfreg.L1L2, {"l1": 0.0, "l2": 0.0}),
        ("orthogonal", "orthogonal", tfreg.Orthogonal,
         {"factor": 0.01, "mode": "rows"}),
        ("keras_spelling", "orthogonal_regularizer", tfreg.Orthogonal,
         {"factor": 0.01, "mode": "rows"}),
        ("keras_class", "OrthogonalRegularizer", tfreg.Orthogonal,
         {"factor": 0.01, "mode": "rows"}),
        ("registered", "tfreg>L2", tfreg.L2, {"l2": 0.01}))
    def test_get_string(self, identifier, cls, config):
        regularizer = tfreg.get(identifier)
        self.assertIs(type(regularizer), cls)
        self.assertEqual(regularizer.get_config(), config)

    def test_get_none_callables_and_instances(self):
        self.assertIsNone(tfreg.get(None))
        instance = tfreg.L2(0.3)
        self.assertIs(tfreg.get(instance), instance)
        function = lambda w: tf.reduce_sum(w)  # pylint: disable=unnecessary-lambda-assignment
        self.assertIs(tfreg.get(function), function)

    @parameterized.named_parameters(
        ("zero", 0), ("float", 1.5), ("bool", True), ("list", ["l2"]),
        ("tensor", tf.constant(0.1)))
    def test_get_uninterpretable_identifier_raises_as_keras(self, identifier):
        message = "Could not interpret regularizer identifier: "
        with self.assertRaisesRegex(ValueError, message):
            tfreg.get(identifier)
        with self.assertRaisesRegex(ValueError, message):
            keras.regularizers.get(identifier)

    def test_get_instantiates_a_class_as_keras_3_does(self):
        regularizer = tfreg.get(tfreg.L2)
        self.assertIs(type(regularizer), tfreg.L2)
        self.assertEqual(regularizer.get_config(), {"l2": 0.01})
        self.assertIs(type(tfreg.get(tfreg.priors.StudentT)),
                      tfreg.priors.StudentT)
        with self.assertRaisesRegex(TypeError, "reference"):
            tfreg.get(tfreg.L2SP)  # no default reference

    def test_get_dict_and_keras_configs(self):
        config = json.loads(json.dumps(tfreg.serialize(tfreg.L1L2(0.1, 0.2))))
        self.assertEqual(tfreg.get(config).get_config(),
                         {"l1": 0.1, "l2": 0.2})
        self.assertEqual(config["registered_name"], "tfreg>L1L2")
        self.assertIs(type(keras.regularizers.get(config)), tfreg.L1L2)
        self.assertIs(keras.saving.get_registered_object("tfreg>Orthogonal"),
                      tfreg.Orthogonal)
        self.assertEqual(
            tfreg.deserialize({"class_name": "L2", "config": {"l2": 0.5}}).l2,
            0.5)
        # tf_keras' SavedModel format adds shared_object_id to nested configs.
        self.assertEqual(tfreg.deserialize(
            {"class_name": "L2", "config": {"l2": 0.5},
             "shared_object_id": 140}).l2, 0.5)

    def test_unknown_and_malformed_identifiers(self):
        with self.assertRaisesRegex(ValueError,
                                    "Unknown regularizer: 'l3'. Expected one"):
            tfreg.get("l3")
        with self.assertRaisesRegex(ValueError, r"Unknown key\(s\) \['extra'\]"):
            tfreg.deserialize({"class_name": "L1", "config": {}, "extra": 1})
        with self.assertRaisesRegex(TypeError, "Expected a string `class_name`"):
            tfreg.deserialize({"class_name": 7, "config": {}})
        with self.assertRaisesRegex(ValueError, r"Unknown key\(s\) \['code'\]"):
            tfreg.deserialize({"class_name": "L1", "config": {"code": "x"}})
        with self.assertRaisesRegex(TypeError, "Received: l1='1'"):
            tfreg.deserialize({"class_name": "L1", "config": {"l1": "1"}})

    def test_config_never_imports_its_module(self):
        before = set(sys.modules)
        for config in (
                {"module": "antigravity", "class_name": "L1", "config": {}},
                {"module": "os", "class_name": "system", "config": {}},
                {"class_name": "os.system", "config": {}}):
            try:
                tfreg.deserialize(config)
            except ValueError:
                pass
        self.assertEqual(set(sys.modules) - before, set())

    def test_registering_a_taken_name_fails(self):
        with self.assertRaisesRegex(ValueError,
                                    "'L1' is already registered to"):
            @tfreg.register
            class L1(tfreg.Regularizer):  # pylint: disable=unused-variable
                pass

    def test_custom_subclass_round_trips(self):

        @tfreg.register
        class Cubic(tfreg.Regularizer):

            def __init__(self, factor=0.01):
                self.factor = tfreg.validation.non_negative("factor", factor)

            def penalty(self, x):
                return self.factor * tf.reduce_sum(tf.abs(x) ** 3)

        regularizer = tfreg.get({"class_name": "Cubic",
                                 "config": {"factor": 0.5}})
        self.assertEqual(float(regularizer(tf.constant([1.0, -2.0]))), 4.5)
        self.assertIs(tfreg.get("cubic").__class__, Cubic)


    def test_a_subclass_penalty_keeps_autograph(self):
        # tfreg's own penalties skip AutoGraph (plain tensor code, cheaper to
        # trace); a subclass's `penalty` is converted like any code in a
        # tf.function, so Python control flow on tensors works in it.
        class PositivePart(tfreg.Regularizer):

            def penalty(self, x):
                total = tf.reduce_sum(x)
                if total > 0:
                    return total
                return tf.zeros_like(total)

        penalty = tf.function(PositivePart())
        self.assertEqual(float(penalty(tf.constant([1.0, 2.0]))), 3.0)
        self.assertEqual(float(penalty(tf.constant([-1.0, -2.0]))), 0.0)
        self.assertEqual(penalty.experimental_get_tracing_count(), 1)

if __name__ == "__main__":
    absltest.main()
