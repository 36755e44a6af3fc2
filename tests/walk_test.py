"""tfreg.walk: layers, paths and regularized weights, each once, in the active Keras."""

import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import tfreg
from tfreg import _keras
from tfreg import _losses
from tfreg import walk

keras = _keras.keras


class _Tied(keras.layers.Layer):
    """x @ W^T with another layer's kernel W: a weight two layers track."""

    def __init__(self, kernel, **kwargs):
        super().__init__(**kwargs)
        self.tied = kernel

    def call(self, inputs):
        return tf.matmul(inputs, self.tied, transpose_b=True)


class _Scaled(keras.layers.Layer):
    """x * scale, `scale` an extra weight that no config argument holds."""

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(input_shape[-1],),
                                     initializer="ones")

    def call(self, inputs):
        return inputs * self.scale


def _shared_model():
    """encode -> shared -> shared (one layer called twice) -> tied to encode.

    encode's kernel (all 2) has L2(0.5): 0.5 * 9 * 4 = 18; shared's kernel
    (all 1) has L1(1): 9; `tied` tracks encode's kernel as its own weight.
    """
    encode = keras.layers.Dense(
        3, name="encode", kernel_initializer=keras.initializers.Constant(2.0),
        kernel_regularizer=tfreg.L2(0.5))
    encode.build((None, 3))
    shared = keras.layers.Dense(3, name="shared", kernel_initializer="ones",
                                kernel_regularizer=tfreg.L1(1.0))
    inputs = keras.Input((3,))
    outputs = _Tied(encode.kernel, name="tied")(shared(shared(encode(inputs))))
    return keras.Model(inputs, outputs, name="model")


class _Penalties:
    """Optimizer-like: applies `pairs` (variable, regularizer) itself."""

    def __init__(self, pairs):
        self.pairs = pairs

    def tfreg_penalties(self):
        return list(self.pairs)


class _LossScaled:
    """Optimizer-like wrapper, as a loss-scale optimizer wraps another."""

    def __init__(self, inner):
        self.inner_optimizer = inner


def _sum(values):
    return float(tf.add_n([tf.cast(value, tf.float32) for value in values]))


def _paths(model):
    """{id(variable): path} of every weight of `model`."""
    return {id(variable): path
            for _, variable, path in walk.Tree(model).weights()}


class WalkTest(parameterized.TestCase):

    def test_layers_and_weights_are_each_visited_once(self):
        model = _shared_model()
        names = [layer.name for layer in walk.layers(model)]
        self.assertEqual(names[0], "model")
        self.assertEqual(len(names), len(set(names)))
        self.assertContainsSubset(["encode", "shared", "tied"], names)
        paths = _paths(model)
        encode = model.get_layer("encode")
        self.assertEqual(paths[id(encode.kernel)], "encode/kernel")
        self.assertEqual(walk.weight_name(encode.kernel), "kernel")
        self.assertEqual(sorted(paths.values()), [
            "encode/bias", "encode/kernel", "shared/bias", "shared/kernel"])

    def test_regularized_weights_count_as_model_losses_do(self):
        model = _shared_model()
        self.assertEqual(walk.RegularizedWeight._fields,
                         ("layer", "variable", "regularizer", "path", "via"))
        weights = walk.regularized_weights(model)
        self.assertEqual([(weight.layer.name, weight.path, weight.via)
                          for weight in weights],
                         [("encode", "encode/kernel", "loss"),
                          ("shared", "shared/kernel", "loss")])
        self.assertLen(model.losses, 2)
        self.assertAlmostEqual(_sum(model.losses), 27.0, places=5)
        self.assertAlmostEqual(
            _sum([weight.regularizer(weight.variable) for weight in weights]),
            27.0, places=5)

    def test_public_tools_count_shared_layers_and_weights_once(self):
        model = _shared_model()
        strength = tfreg.Strength(0.5, name="s")
        # `tied` takes a variable, so the model has no config to save.
        self.assertEqual(tfreg.apply(model, tfreg.L2(strength)),
                         {"encode/kernel": False, "shared/kernel": False})
        self.assertLen(model.losses, 2)
        rows = tfreg.summary(model, print_fn=None)
        self.assertEqual([row["path"] for row in rows],
                         ["encode/kernel", "shared/kernel"])
        # 0.5 * (9 * 4 + 9 * 1)
        self.assertAlmostEqual(sum(row["penalty"] for row in rows), 22.5,
                               places=5)
        self.assertAlmostEqual(_sum(model.losses), 22.5, places=5)
        self.assertEqual(tfreg.strengths(model), {"s": [strength.variable]})
        model.compile("sgd", "mse")
        x = np.ones((4, 3), np.float32)
        history = model.fit(x, x, epochs=1, verbose=0,
                            callbacks=[tfreg.PenaltyLogger()])
        self.assertEqual(sorted(key for key in history.history
                                if key.startswith("penalty/")),
                         ["penalty/encode/kernel", "penalty/shared/kernel",
                          "penalty/total"])
        self.assertEqual(tfreg.remove(model),
                         ["encode/kernel", "shared/kernel"])
        self.assertEmpty(model.losses)

    def test_set_regularizer_replaces_and_removes(self):
        model = keras.Sequential([
            keras.Input((2,)),
            keras.layers.Dense(2, name="d", kernel_initializer="ones",
                               kernel_regularizer=tfreg.L1(1.0))])
        layer = model.get_layer("d")
        replacement = tfreg.L2(0.25)
        walk.set_regularizer(layer, layer.kernel, replacement)
        self.assertIs(walk.regularizer_of(layer, layer.kernel), replacement)
        self.assertLen(model.losses, 1)
        self.assertAlmostEqual(_sum(model.losses), 1.0)
        self.assertIsNone(walk.regularizer_of(layer, layer.bias))
        walk.set_regularizer(layer, layer.kernel, None)
        self.assertIsNone(walk.regularizer_of(layer, layer.kernel))
        self.assertEmpty(model.losses)
        self.assertEmpty(walk.regularized_weights(model))

    def test_frozen_layers_are_listed_as_model_losses_count_them(self):
        # Keras 3 leaves the penalties of frozen layers out of
        # `model.losses`; tf_keras keeps them.
        model = _shared_model()
        model.get_layer("shared").trainable = False
        self.assertLen(walk.regularized_weights(model), len(model.losses))

    def test_extra_weight_regularizer_is_found(self):
        model = keras.Sequential([keras.Input((3,)), _Scaled(name="scaled")])
        regularizer = tfreg.L2(tfreg.Strength(0.5, name="s"))
        self.assertEqual(tfreg.apply(model, regularizer, include="scale$"),
                         {"scaled/scale": False})
        self.assertEqual([(weight.path, weight.regularizer)
                          for weight in walk.regularized_weights(model)],
                         [("scaled/scale", regularizer)])
        self.assertIn(regularizer, walk.regularizers(model))
        self.assertEqual(list(tfreg.strengths(model)), ["s"])

    def test_regularizers_include_layer_arguments(self):
        activity = tfreg.L1(0.1)
        kernel = tfreg.L2(0.2)
        model = keras.Sequential([
            keras.Input((2,)),
            keras.layers.Dense(2, activity_regularizer=activity,
                               kernel_regularizer=kernel,
                               bias_regularizer=kernel)])
        found = walk.regularizers(model)
        self.assertLen(found, 2)
        self.assertTrue(any(value is activity for value in found))
        self.assertTrue(any(value is kernel for value in found))

    def test_optimizer_penalties_are_listed(self):
        model = keras.Sequential([
            keras.Input((2,)),
            keras.layers.Dense(2, name="a", kernel_initializer="ones",
                               kernel_regularizer=tfreg.L1(1.0)),
            keras.layers.Dense(1, name="b", kernel_initializer="ones")])
        in_optimizer = tfreg.L2(tfreg.Strength(0.25, name="opt"))
        elsewhere = tf.Variable(np.ones(3, np.float32))
        model.optimizer = _LossScaled(_LossScaled(_Penalties([
            (model.get_layer("b").kernel, in_optimizer),
            (elsewhere, tfreg.L2(1.0))])))
        self.assertEqual(walk.optimizer_penalties(model)[0],
                         (model.get_layer("b").kernel, in_optimizer))
        weights = walk.regularized_weights(model)
        self.assertEqual([(weight.path, weight.via) for weight in weights],
                         [("a/kernel", "loss"), ("b/kernel", "optimizer")])
        self.assertIs(weights[1].regularizer, in_optimizer)
        self.assertLen(model.losses, 1)
        rows = tfreg.summary(model, print_fn=None)
        self.assertEqual([(row["path"], row["penalty"], row["via"])
                          for row in rows],
                         [("a/kernel", 4.0, "loss"),
                          ("b/kernel", 0.5, "optimizer")])
        self.assertEqual(sorted(tfreg.strengths(model)), ["opt"])
        with tempfile.TemporaryDirectory() as directory:
            tfreg.export_saved_model(model, directory)
            loaded = tf.saved_model.load(directory)
            self.assertAlmostEqual(
                float(loaded.regularization_loss()["regularization_loss"]),
                4.5, places=5)
        # `remove` takes off the loss-side penalties only.
        self.assertEqual(tfreg.remove(model), ["a/kernel"])
        self.assertEqual([weight.via for weight
                          in walk.regularized_weights(model)], ["optimizer"])

    def test_no_optimizer_penalties_without_the_method(self):
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        self.assertEqual(walk.optimizer_penalties(model), [])
        model.compile("sgd", "mse")
        self.assertEqual(walk.optimizer_penalties(model), [])


class SelectionTest(absltest.TestCase):
    """One default selection for `tfreg.apply` and the optimizer."""

    def _model(self):
        inputs = keras.Input((3,), dtype="int32")
        x = keras.layers.Embedding(5, 4, name="embed")(inputs)
        x = keras.layers.LayerNormalization(name="norm")(x)
        x = keras.layers.Dense(2, name="dense")(x)
        return keras.Model(inputs, x)

    def test_default_is_kernels_and_embeddings_everywhere(self):
        model = self._model()
        attached = tfreg.apply(model, tfreg.L2(0.1))
        self.assertCountEqual(attached, ["embed/embeddings", "dense/kernel"])
        tfreg.remove(model)
        optimizer = tfreg.optimizers.Regularized(
            keras.optimizers.SGD(0.1), regularizer=tfreg.L2(0.1), model=model)
        optimizer.build(model.trainable_variables)
        selected = {id(variable) for variable, _ in optimizer.tfreg_penalties()}
        paths = _paths(model)
        self.assertCountEqual([paths[key] for key in selected],
                              ["embed/embeddings", "dense/kernel"])
        norm = model.get_layer("norm")
        self.assertFalse(walk.is_kernel(norm, norm.weights[0]))
        self.assertTrue(walk.is_kernel(None, model.get_layer("dense").kernel))

    def test_selection_arguments(self):
        dense = self._model().get_layer("dense")
        select = walk.selection("dense", "bias")
        self.assertTrue(select(dense, dense.kernel, "dense/kernel"))
        self.assertFalse(select(dense, dense.bias, "dense/bias"))
        by_predicate = walk.selection(lambda layer, variable: True)
        self.assertTrue(by_predicate(dense, dense.bias, "dense/bias"))
        with self.assertRaisesRegex(TypeError, "argument `include`"):
            walk.selection(lambda layer, variable: True, predicates=False)
        with self.assertRaisesRegex(ValueError, "argument `exclude`.*\\("):
            walk.selection(exclude="(")


class GraphReadsTest(absltest.TestCase):
    """The Keras graph reads that the pruning and the optimizer need."""

    def test_calls_and_tensor_keys(self):
        inputs = keras.Input((3,))
        hidden = keras.layers.Dense(4, name="a")(inputs)
        outputs = keras.layers.Add(name="add")([hidden, hidden])
        model = keras.Model(inputs, outputs)
        functional = walk.functional_graph(model)
        self.assertIs(functional, model)
        calls = [walk.node_call(node)
                 for depth in sorted(walk.nodes_by_depth(functional),
                                     reverse=True)
                 for node in walk.nodes_by_depth(functional)[depth]]
        by_name = {layer.name: (ins, outs) for layer, ins, outs in calls}
        self.assertEqual(walk.tensor_key(by_name["a"][1][0]),
                         walk.tensor_key(by_name["add"][0][0]))
        self.assertEqual(walk.tensor_key(by_name["add"][0][0]),
                         walk.tensor_key(by_name["add"][0][1]))
        self.assertNotEqual(walk.tensor_key(by_name["a"][0][0]),
                            walk.tensor_key(by_name["a"][1][0]))
        sequential = keras.Sequential([keras.Input((3,)),
                                       keras.layers.Dense(2)])
        self.assertIsNotNone(walk.functional_graph(sequential))

    def test_no_graph_for_subclassed_models(self):
        class Sub(keras.Model):
            def call(self, inputs):
                return inputs

        self.assertIsNone(walk.functional_graph(Sub()))

    def test_learning_rate_schedule(self):
        schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)
        self.assertIsNone(walk.learning_rate_schedule(
            keras.optimizers.SGD(0.1)))
        found = walk.learning_rate_schedule(keras.optimizers.SGD(schedule))
        if _keras.LEGACY:
            self.assertIs(found, schedule)
        else:
            # Keras 3 reads the schedule through `learning_rate` itself.
            self.assertIn(found, (None, schedule))


class TotalTest(parameterized.TestCase):

    @parameterized.named_parameters(
        ("empty", [], tf.float32, 0.0),
        ("half_in_float32", [np.float16(1.5), np.float32(2.0)], tf.float32,
         3.5),
        ("float64_wins", [np.float32(1.0), np.float64(0.25)], tf.float64,
         1.25),
        ("tensor_elements", [np.ones(3, np.float16), 2.0], tf.float32, 5.0))
    def test_sum_and_dtype(self, losses, dtype, expected):
        for function in (_losses.total, tf.function(_losses.total)):
            total = function([tf.constant(loss) for loss in losses])
            self.assertEqual(total.dtype, dtype)
            self.assertEqual(total.shape, ())
            self.assertEqual(float(total), expected)

    def test_half_precision_does_not_overflow(self):
        # 2 * 60000 overflows float16 (max 65504), not float32.
        big = tf.constant(60000.0, tf.float16)
        self.assertEqual(float(_losses.total([big, big])), 120000.0)


if __name__ == "__main__":
    absltest.main()
