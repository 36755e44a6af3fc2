"""tfreg.apply and tfreg.remove on built models, in the active Keras."""

import collections
import os
import tempfile
from unittest import mock
import warnings

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import tfreg
from tfreg import _coverage
from tfreg import _keras
from tfreg import walk
from tests import battery

keras = _keras.keras
SAVE_FORMATS = battery.SAVE_FORMATS


def _model():
    """Dense -> BatchNorm -> Dense -> Dense with distinct constant kernels."""
    return keras.Sequential([
        keras.Input((3,)),
        keras.layers.Dense(4, name="first",
                           kernel_initializer=keras.initializers.Constant(1.0),
                           bias_initializer="ones"),
        keras.layers.BatchNormalization(name="norm"),
        keras.layers.Dense(4, name="second",
                           kernel_initializer=keras.initializers.Constant(2.0)),
        keras.layers.Dense(1, name="third",
                           kernel_initializer=keras.initializers.Constant(3.0)),
    ])


@keras.saving.register_keras_serializable(package="tfreg_attach_test")
class _Block(keras.layers.Layer):
    """Two Dense sublayers made in __init__; `kernel_regularizer` reaches `a`."""

    def __init__(self, kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.a = keras.layers.Dense(2, name="a",
                                    kernel_regularizer=self.kernel_regularizer)
        self.b = keras.layers.Dense(2, name="b")

    def build(self, input_shape):
        self.a.build(input_shape)
        self.b.build(tuple(input_shape[:-1]) + (2,))
        super().build(input_shape)

    def call(self, inputs):
        return self.b(self.a(inputs))

    def get_config(self):
        return {**super().get_config(), "kernel_regularizer":
                keras.regularizers.serialize(self.kernel_regularizer)}


@keras.saving.register_keras_serializable(package="tfreg_attach_test")
class _Twins(keras.layers.Layer):
    """Two sibling Dense sublayers with the same name."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.first = keras.layers.Dense(1, name="proj",
                                        kernel_initializer="ones")
        self.second = keras.layers.Dense(1, name="proj",
                                         kernel_initializer="zeros")

    def call(self, inputs):
        return self.first(inputs) + self.second(inputs)


class _Outer(keras.layers.Layer):
    """A kernel of its own and a Dense sublayer named like the layer."""

    def __init__(self, **kwargs):
        super().__init__(name="outer", **kwargs)
        self.inner = keras.layers.Dense(1, name="outer")

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(1,), name="kernel")
        self.inner.build(input_shape)
        super().build(input_shape)

    def call(self, inputs):
        return self.inner(inputs) * self.kernel


@keras.saving.register_keras_serializable(package="tfreg_attach_test")
class _Subclassed(keras.Model):
    """A subclassed model: its config does not hold its layers'."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(2, name="hidden")

    def call(self, inputs):
        return self.hidden(inputs)


def _attention(**kwargs):
    """A model around one MultiHeadAttention layer named "attention"."""
    inputs = keras.Input((3, 4))
    outputs = keras.layers.MultiHeadAttention(
        num_heads=1, key_dim=2, name="attention", **kwargs)(inputs, inputs)
    return keras.Model(inputs, outputs)


def _bidirectional():
    return keras.Sequential([
        keras.Input((3, 2)),
        keras.layers.Bidirectional(keras.layers.LSTM(2, name="lstm"),
                                   name="bi")])


def _penalties(model):
    """{path: penalty} of every regularized weight of `model`."""
    return {weight.path: float(weight.regularizer(weight.variable))
            for weight in walk.regularized_weights(model)}


def _total(model):
    return float(tf.add_n([tf.cast(loss, tf.float32)
                           for loss in model.losses])) if model.losses else 0.0


class ApplyTest(parameterized.TestCase):

    def test_defaults_select_kernels_only(self):
        model = _model()
        attached = tfreg.apply(model, tfreg.L2(0.5))
        self.assertEqual(attached, {"first/kernel": True,
                                    "second/kernel": True,
                                    "third/kernel": True})
        self.assertLen(model.losses, 3)
        # 0.5 * sum(w^2) per kernel: 12 ones, 16 twos, 4 threes.
        self.assertAlmostEqual(_total(model),
                               0.5 * (12 * 1 + 16 * 4 + 4 * 9), places=4)

    def test_each_weight_gets_its_own_penalty(self):
        model = _model()
        tfreg.apply(model, tfreg.L1(1.0))
        values = sorted(float(loss) for loss in model.losses)
        self.assertEqual(values, [12.0, 12.0, 32.0])  # 4*3, 12*1, 16*2

    @parameterized.named_parameters(
        ("regex", "^(first|third)/kernel", None),
        ("exclude_regex", None, "second"),
        ("predicate", lambda layer, variable: (
            layer.name in ("first", "third")
            and walk.weight_name(variable) == "kernel"), None),
        ("exclude_predicate", None,
         lambda layer, variable: layer.name == "second"))
    def test_include_and_exclude(self, include, exclude):
        model = _model()
        attached = tfreg.apply(model, "l1", include=include, exclude=exclude)
        self.assertEqual(sorted(attached), ["first/kernel", "third/kernel"])
        self.assertAlmostEqual(_total(model), 0.01 * (12 + 12), places=5)

    def test_include_reaches_biases_and_normalization_when_asked(self):
        model = _model()
        attached = tfreg.apply(model, tfreg.L1(1.0), include="/(bias|gamma)$")
        self.assertEqual(sorted(attached), [
            "first/bias", "norm/gamma", "second/bias", "third/bias"])
        self.assertAlmostEqual(_total(model), 4 + 4, places=5)

    def test_replaces_a_constructor_regularizer(self):
        model = keras.Sequential([
            keras.Input((2,)),
            keras.layers.Dense(2, name="d", kernel_initializer="ones",
                               kernel_regularizer=tfreg.L1(1.0))])
        self.assertEqual(_total(model), 4.0)
        tfreg.apply(model, tfreg.L2(0.25))
        self.assertLen(model.losses, 1)
        self.assertEqual(_total(model), 1.0)
        self.assertIsInstance(model.layers[0].kernel_regularizer, tfreg.L2)

    def test_nested_model(self):
        inner = keras.Sequential([keras.Input((3,)),
                                  keras.layers.Dense(2, name="inner_dense",
                                                     kernel_initializer="ones")],
                                 name="inner")
        inputs = keras.Input((3,))
        outputs = keras.layers.Dense(1, name="outer_dense",
                                     kernel_initializer="ones")(inner(inputs))
        model = keras.Model(inputs, outputs)
        attached = tfreg.apply(model, tfreg.L1(1.0))
        self.assertEqual(attached, {"inner/inner_dense/kernel": True,
                                    "outer_dense/kernel": True})
        self.assertEqual(_total(model), 8.0)
        self.assertEqual(tfreg.remove(model, include="^inner/"),
                         ["inner/inner_dense/kernel"])
        self.assertEqual(_total(model), 2.0)

    def test_training_uses_the_penalty_even_after_a_first_fit(self):
        model = _model()
        model.compile(optimizer="sgd", loss="mse", jit_compile=True)
        x, y = np.ones((8, 3), np.float32), np.zeros((8, 1), np.float32)
        model.fit(x, y, epochs=1, verbose=0)
        before = model.evaluate(x, y, verbose=0)
        tfreg.apply(model, tfreg.L2(1e-3))
        penalty = _total(model)
        after = model.evaluate(x, y, verbose=0)
        self.assertGreater(penalty, 0.0)
        self.assertAlmostEqual(after - before, penalty, places=2)
        history = model.fit(x, y, epochs=1, verbose=0)
        self.assertTrue(np.isfinite(history.history["loss"][0]))

    def test_survives_save_and_load(self):
        model = _model()
        tfreg.apply(model, tfreg.L1L2(l1=0.1, l2=0.2))
        expected = sorted(float(loss) for loss in model.losses)
        for save_format in SAVE_FORMATS:
            with self.subTest(save_format=save_format), \
                    tempfile.TemporaryDirectory() as directory:
                loaded = battery.save_and_load(model, directory, save_format)
                self.assertIsInstance(loaded.get_layer("second")
                                      .kernel_regularizer, tfreg.L1L2)
                self.assertIsNone(loaded.get_layer("first").bias_regularizer)
                np.testing.assert_allclose(
                    sorted(float(loss) for loss in loaded.losses), expected,
                    rtol=1e-6)

    def test_errors(self):
        unbuilt = keras.Sequential([keras.layers.Dense(2)], name="unbuilt")
        with self.assertRaisesWithLiteralMatch(
                ValueError,
                "Invalid value for argument `model`. Expected a built model "
                "(call it on data or build it first). Received: "
                "model='unbuilt', which has no weights"):
            tfreg.apply(unbuilt, "l2")
        model = _model()
        with self.assertRaisesWithLiteralMatch(
                ValueError,
                "Invalid value for argument `regularizer`. Expected a "
                "regularizer (tfreg.remove takes regularizers off). "
                "Received: regularizer=None"):
            tfreg.apply(model, None)
        not_a_regularizer = lambda x: tf.reduce_sum(x)
        with self.assertRaisesWithLiteralMatch(
                TypeError,
                "Invalid value for argument `regularizer`. Expected a Keras "
                "regularizer (for example a tfreg.Regularizer). Received: "
                f"regularizer={not_a_regularizer!r}"):
            tfreg.apply(model, not_a_regularizer)
        with self.assertRaisesRegex(ValueError, "argument `include`"):
            tfreg.apply(model, "l2", include="(")
        with self.assertRaisesRegex(TypeError, "argument `exclude`"):
            tfreg.apply(model, "l2", exclude=3)
        with self.assertRaisesRegex(ValueError, "Unknown regularizer"):
            tfreg.apply(model, "no_such_regularizer")

    def test_attach_l2sp_refuses_a_regularized_weight(self):
        model = _model()
        regularizer = tfreg.L2(0.5)
        tfreg.apply(model, regularizer, include="second/kernel")
        with self.assertRaisesWithLiteralMatch(
                ValueError,
                "Invalid value for argument `model`. Expected selected "
                f"weights without a regularizer. Received: model={model.name!r}"
                ", whose weight 'second/kernel' already has a regularizer "
                f"({regularizer!r}): attach_l2sp does not stack regularizers"):
            tfreg.attach_l2sp(model)

    def test_reads_each_layer_config_once(self):
        # Finding the constructor argument of each weight, and whether the
        # model's config saves it, reads a layer's config once, not once
        # per weight and step.
        model = _model()
        reads = collections.Counter()
        config = _coverage._config  # pylint: disable=protected-access

        def counted(layer):
            reads[layer.name] += 1
            return config(layer)

        with mock.patch.object(_coverage, "_config", counted):
            attached = tfreg.apply(model, tfreg.L2(0.1), include="first|second")
        self.assertLen(attached, 4)  # two kernels, two biases
        self.assertEqual(reads["first"], 1)
        self.assertEqual(reads["second"], 1)


class PathTest(absltest.TestCase):
    """Every weight has its own path, also where layer names repeat."""

    def test_bidirectional_directions_have_their_own_paths(self):
        model = _bidirectional()
        attached = tfreg.apply(model, tfreg.L2(0.5))
        directions = ("forward", "backward")
        kernels = [f"bi/{direction}_lstm/lstm_cell/{name}"
                   for direction in directions
                   for name in ("kernel", "recurrent_kernel")]
        self.assertEqual(attached, dict.fromkeys(kernels, True))
        self.assertLen(model.losses, 4)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            removed = tfreg.remove(model, include="^bi/forward_")
        self.assertEqual(removed, sorted(kernels[:2]))
        # tf_keras saves one wrapped layer and rebuilds both directions from
        # it, so removing one direction's regularizers cannot be saved.
        self.assertEqual(
            [str(warning.message)[:40] for warning in caught
             if "in memory only" in str(warning.message)],
            ["Removed the regularizers of ['bi/forward"] if _keras.LEGACY
            else [])
        self.assertEqual(sorted(_penalties(model)), sorted(kernels[2:]))
        self.assertEqual(tfreg.remove(model), sorted(kernels[2:]))

    def test_sibling_layers_with_one_name(self):
        model = keras.Sequential([keras.Input((3,)), _Twins(name="twins")])
        self.assertEqual(tfreg.apply(model, tfreg.L1(1.0)),
                         {"twins/proj/kernel": False,
                          "twins/proj#1/kernel": False})
        self.assertEqual(tfreg.remove(model, include="proj#1"),
                         ["twins/proj#1/kernel"])
        self.assertEqual(_penalties(model), {"twins/proj/kernel": 3.0})

    def test_a_layer_named_like_its_parent_is_refused(self):
        # The layer's own kernel and its sublayer's are both "outer/kernel".
        layer = _Outer()
        layer(tf.ones((1, 3)))
        with self.assertRaisesWithLiteralMatch(
                ValueError,
                "Invalid value for argument `model`. Expected a distinct path "
                "for every selected weight (rename one of the layers). "
                "Received: model='outer', with several weights at "
                "['outer/kernel']"):
            tfreg.apply(layer, tfreg.L1(1.0))
        self.assertEmpty(layer.losses)


class SavingTest(absltest.TestCase):
    """`apply` reports True exactly for the regularizers that loading restores."""

    def assertRestored(self, model, save_formats=SAVE_FORMATS):
        expected = _penalties(model)
        for save_format in save_formats:
            with self.subTest(save_format=save_format), \
                    tempfile.TemporaryDirectory() as directory:
                loaded = battery.save_and_load(model, directory, save_format)
                restored = _penalties(loaded)
                self.assertEqual(sorted(restored), sorted(expected))
                for path, penalty in expected.items():
                    self.assertAlmostEqual(restored[path], penalty, places=5)

    def test_attention_kernels_are_saved_through_the_layer_argument(self):
        model = _attention()
        attached = tfreg.apply(model, tfreg.L2(0.5))
        self.assertEqual(attached, {
            f"attention/{name}/kernel": True
            for name in ("query", "key", "value", "attention_output")})
        self.assertIsInstance(
            model.get_layer("attention").get_config()["kernel_regularizer"],
            dict)
        self.assertRestored(model)

    def test_one_attention_kernel_is_not_saved(self):
        model = _attention()
        self.assertEqual(tfreg.apply(model, tfreg.L2(0.5), include="query/k"),
                         {"attention/query/kernel": False})
        self.assertLen(model.losses, 1)
        for save_format in SAVE_FORMATS:
            with self.subTest(save_format=save_format), \
                    tempfile.TemporaryDirectory() as directory:
                loaded = battery.save_and_load(model, directory, save_format)
                self.assertEmpty(loaded.losses)

    def test_bidirectional_survives_save_and_load(self):
        model = _bidirectional()
        self.assertTrue(all(tfreg.apply(model, tfreg.L1(0.5)).values()))
        self.assertRestored(model)

    def test_parent_argument_that_reaches_some_sublayers(self):
        model = keras.Sequential([keras.Input((3,)), _Block(name="block")])
        self.assertEqual(tfreg.apply(model, tfreg.L2(0.5)),
                         {"block/a/kernel": True, "block/b/kernel": False})
        self.assertLen(model.losses, 2)
        with tempfile.TemporaryDirectory() as directory:
            loaded = battery.save_and_load(model, directory, "keras")
        self.assertEqual(_penalties(loaded),
                         {"block/a/kernel": _penalties(model)["block/a/kernel"]})

    def test_subclassed_model_layers_are_not_saved(self):
        model = _Subclassed(name="sub")
        model(np.ones((1, 3), np.float32))
        self.assertEqual(tfreg.apply(model, tfreg.L2(0.5)),
                         {"hidden/kernel": False})
        with tempfile.TemporaryDirectory() as directory:
            loaded = battery.save_and_load(model, directory, "keras")
        loaded(np.ones((1, 3), np.float32))
        self.assertEmpty(loaded.losses)

    def test_remove_clears_the_parent_argument(self):
        model = _attention(kernel_regularizer=tfreg.L1(1.0))
        self.assertLen(tfreg.remove(model), 4)
        self.assertEmpty(model.losses)
        self.assertRestored(model)

    def test_partial_remove_under_a_parent_argument_warns(self):
        model = _attention(kernel_regularizer=tfreg.L1(1.0))
        with self.assertWarnsRegex(
                UserWarning, r"'attention/query/kernel'.*back on loading"):
            removed = tfreg.remove(model, include="query/kernel")
        self.assertEqual(removed, ["attention/query/kernel"])
        self.assertLen(model.losses, 3)
        with tempfile.TemporaryDirectory() as directory:
            loaded = battery.save_and_load(model, directory, "keras")
        self.assertLen(loaded.losses, 4)


class RemoveTest(absltest.TestCase):

    def test_remove_undoes_apply(self):
        model = _model()
        tfreg.apply(model, tfreg.L2(0.5))
        self.assertEqual(tfreg.remove(model),
                         ["first/kernel", "second/kernel", "third/kernel"])
        self.assertEmpty(model.losses)
        self.assertIsNone(model.get_layer("first").kernel_regularizer)

    def test_remove_selected_and_constructor_regularizers(self):
        model = keras.Sequential([
            keras.Input((2,)),
            keras.layers.Dense(2, name="a", kernel_initializer="ones",
                               kernel_regularizer=tfreg.L1(1.0),
                               bias_regularizer=tfreg.L1(1.0)),
            keras.layers.Dense(1, name="b", kernel_initializer="ones",
                               kernel_regularizer=tfreg.L1(1.0))])
        self.assertEqual(tfreg.remove(model, include="^a/"),
                         ["a/bias", "a/kernel"])
        self.assertEqual(_total(model), 2.0)
        self.assertEqual(tfreg.remove(model), ["b/kernel"])
        self.assertEmpty(model.losses)
        self.assertEqual(tfreg.remove(model), [])

    def test_removed_stays_removed_after_save_and_load(self):
        model = _model()
        tfreg.apply(model, tfreg.L2(0.5))
        tfreg.remove(model, exclude="third")
        for save_format in SAVE_FORMATS:
            with self.subTest(save_format=save_format), \
                    tempfile.TemporaryDirectory() as directory:
                loaded = battery.save_and_load(model, directory, save_format)
                self.assertLen(loaded.losses, 1)
                self.assertAlmostEqual(float(loaded.losses[0]), 0.5 * 36,
                                       places=4)


if __name__ == "__main__":
    absltest.main()
