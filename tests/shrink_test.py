"""Coupled channel groups, their group lasso and `tfreg.shrink`."""

import gc
import os
import tempfile
from unittest import mock
import warnings

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import tfreg
from tfreg import optimizers
from tfreg import _keras
from tfreg._keras import keras
from tfreg.pruning import surgery

L = keras.layers


def _units(groups):
    return [group.units for group in groups]


def _slices(group):
    """{(layer, weight, axis, role): indices} of a group (axis >= 0)."""
    return {(piece.layer.name, _short(piece.variable), piece.axis,
             piece.role): piece.indices for piece in group.slices}


def _short(variable):
    return variable.name.split("/")[-1].split(":")[0]


def _randomize(model, seed=0):
    """Random weights (positive variances) so no unit is zero by chance."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        values = []
        for variable in layer.weights:
            value = rng.normal(size=variable.shape)
            if "variance" in _short(variable):
                value = np.abs(value) + 0.5
            values.append(value.astype("float32"))
        layer.set_weights(values)


def _zero(model, layer, axis, indices):
    """Sets entries `indices` along `axis` of `layer`'s kernel to zero."""
    kernel = model.get_layer(layer).weights[0]
    value = kernel.numpy()
    index = [slice(None)] * value.ndim
    index[axis] = list(indices)
    value[tuple(index)] = 0
    kernel.assign(value)


def dense_chain():
    return keras.Sequential([
        keras.Input((3,)), L.Dense(4, activation="relu", name="a"),
        L.Dense(5, activation="tanh", name="b"), L.Dense(2, name="out")])


def conv_bn_chain():
    x = keras.Input((6, 6, 2))
    h = L.Conv2D(3, 3, padding="same", use_bias=False, name="conv")(x)
    h = L.BatchNormalization(name="bn")(h)
    h = L.ReLU(name="relu")(h)
    h = L.Conv2D(2, 3, name="head")(h)
    return keras.Model(x, L.GlobalAveragePooling2D()(h))


def residual_block():
    x = keras.Input((6, 6, 1))
    stem = L.Conv2D(3, 3, padding="same", name="stem")(x)
    h = L.Conv2D(4, 1, activation="relu", name="c1")(stem)
    h = L.Conv2D(3, 3, padding="same", name="c2")(h)
    h = L.Add(name="add")([stem, h])
    h = L.GlobalAveragePooling2D(name="gap")(h)
    return keras.Model(x, L.Dense(2, name="out")(h))


def concatenation():
    x = keras.Input((4,))
    a = L.Dense(2, name="a")(x)
    b = L.Dense(3, name="b")(x)
    h = L.Concatenate(name="cat")([a, b])
    return keras.Model(x, L.Dense(2, name="out")(h))


def flatten_after_conv():
    return keras.Sequential([
        keras.Input((4, 4, 1)), L.Conv2D(3, 3, name="conv"),
        L.Flatten(name="flat"), L.Dense(2, name="out")])


def separable():
    x = keras.Input((5, 5, 2))
    h = L.Conv2D(3, 1, name="expand")(x)
    h = L.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(h)
    h = L.Conv2D(2, 1, name="project")(h)
    return keras.Model(x, L.GlobalMaxPooling2D()(h))


def residual_cnn():
    """Conv-BN-ReLU stem, a residual block, a depthwise branch, a
    concatenation, flatten and two Dense layers (sigmoid: f(0) != 0)."""
    x = keras.Input((8, 8, 1))
    h = L.Conv2D(4, 3, padding="same", name="stem")(x)
    h = L.BatchNormalization(name="bn")(h)
    h = L.ReLU()(h)
    r = L.Conv2D(5, 3, padding="same", activation="relu", name="c1")(h)
    r = L.Conv2D(4, 3, padding="same", name="c2")(r)
    h = L.Add()([h, r])
    d = L.DepthwiseConv2D(3, padding="same", name="dw")(h)
    p = L.Conv2D(3, 1, name="pw")(d)
    h = L.Concatenate()([p, h])
    h = L.Flatten()(L.MaxPooling2D(4)(h))
    h = L.Dense(5, activation="sigmoid", name="fc")(h)
    return keras.Model(x, L.Dense(2, name="out")(h))


class ChannelGroupsTest(parameterized.TestCase):

    def test_dense_chain(self):
        groups = tfreg.channel_groups(dense_chain())
        self.assertEqual(_units(groups), [(("a", i),) for i in range(4)]
                         + [(("b", i),) for i in range(5)])
        self.assertEqual(_slices(groups[1]), {
            ("a", "kernel", 1, "kernel"): (1,),
            ("a", "bias", 0, "other"): (1,),
            ("b", "kernel", 0, "consumer"): (1,)})
        # 3 kernel + 1 bias + 5 consumer entries.
        self.assertEqual(groups[1].size, 9)
        self.assertEqual(groups.unsupported, [])

    def test_conv_bn_chain(self):
        groups = tfreg.channel_groups(conv_bn_chain())
        self.assertEqual(_units(groups), [(("conv", i),) for i in range(3)])
        self.assertEqual(_slices(groups[2]), {
            ("conv", "kernel", 3, "kernel"): (2,),
            ("bn", "gamma", 0, "other"): (2,),
            ("bn", "beta", 0, "other"): (2,),
            ("bn", "moving_mean", 0, "other"): (2,),
            ("bn", "moving_variance", 0, "other"): (2,),
            ("head", "kernel", 2, "consumer"): (2,)})
        # 3*3*2 kernel + gamma + beta + 3*3*2 consumer (statistics are not
        # trainable).
        self.assertEqual(groups[2].size, 38)

    def test_residual_block_couples_the_add(self):
        groups = tfreg.channel_groups(residual_block())
        self.assertEqual(_units(groups), [(("stem", i), ("c2", i))
                                          for i in range(3)]
                         + [(("c1", i),) for i in range(4)])
        self.assertEqual(_slices(groups[0]), {
            ("stem", "kernel", 3, "kernel"): (0,),
            ("stem", "bias", 0, "other"): (0,),
            ("c1", "kernel", 2, "consumer"): (0,),
            ("c2", "kernel", 3, "kernel"): (0,),
            ("c2", "bias", 0, "other"): (0,),
            ("out", "kernel", 0, "consumer"): (0,)})

    def test_slices_come_in_the_order_they_were_traced(self):
        groups = tfreg.channel_groups(residual_block())
        self.assertEqual(
            [(piece.layer.name, _short(piece.variable))
             for piece in groups[0].slices],
            [("stem", "kernel"), ("stem", "bias"), ("c1", "kernel"),
             ("c2", "kernel"), ("c2", "bias"), ("out", "kernel")])

    def test_the_garbage_collector_is_on_after_tracing_and_shrinking(self):
        model = residual_block()
        tfreg.shrink(model, groups=tfreg.channel_groups(model))
        self.assertTrue(gc.isenabled())
        with self.assertRaises(TypeError):
            tfreg.channel_groups("not a model")
        self.assertTrue(gc.isenabled())

    def test_concatenation_maps_by_offset(self):
        groups = tfreg.channel_groups(concatenation())
        consumers = [_slices(group)[("out", "kernel", 0, "consumer")]
                     for group in groups]
        self.assertEqual(_units(groups), [(("a", 0),), (("a", 1),),
                                          (("b", 0),), (("b", 1),),
                                          (("b", 2),)])
        self.assertEqual(consumers, [(0,), (1,), (2,), (3,), (4,)])

    def test_flatten_maps_a_channel_to_strided_rows(self):
        groups = tfreg.channel_groups(flatten_after_conv())
        # 2x2 positions of 3 channels: channel c is row c, c+3, c+6, c+9.
        self.assertEqual(
            [_slices(group)[("out", "kernel", 0, "consumer")]
             for group in groups],
            [(0, 3, 6, 9), (1, 4, 7, 10), (2, 5, 8, 11)])

    def test_depthwise_passes_channels_through(self):
        groups = tfreg.channel_groups(separable())
        self.assertEqual(_units(groups), [(("expand", i),) for i in range(3)])
        # depth multiplier 2: input channel 1 makes outputs 2 and 3.
        self.assertEqual(_slices(groups[1]), {
            ("expand", "kernel", 3, "kernel"): (1,),
            ("expand", "bias", 0, "other"): (1,),
            ("dw", _short(groups[1].slices[2].variable), 2, "other"): (1,),
            ("dw", "bias", 0, "other"): (2, 3),
            ("project", "kernel", 2, "consumer"): (2, 3)})

    def test_unsupported_layers_end_the_coupling_and_are_listed(self):
        x = keras.Input((4,))
        a = L.Dense(3, name="a")(x)
        h = L.LayerNormalization(name="norm")(a)
        h = L.Dense(2, name="b")(h)
        c = L.Dense(2, activation="softmax", name="c")(h)
        model = keras.Model(x, L.Dense(1, name="out")(c))
        groups = tfreg.channel_groups(model)
        # a feeds the normalization, c mixes its units through softmax.
        self.assertEqual(_units(groups), [(("b", 0),), (("b", 1),)])
        self.assertEqual(
            [(entry.layer, entry.class_name, entry.reason)
             for entry in groups.unsupported],
            [("norm", "LayerNormalization", "normalizes across channels")])

    def test_attention_heads_are_units(self):
        x = keras.Input((3, 4))
        h = L.Dense(4, name="proj")(x)
        h = L.MultiHeadAttention(2, 2, name="mha")(h, h)
        model = keras.Model(x, L.Dense(1, name="out")(h))
        groups = tfreg.channel_groups(model)
        self.assertEqual(
            _units(groups), [(("proj", i),) for i in range(4)]
            + [(("mha", "head0"),), (("mha", "head1"),)]
            + [(("mha", i),) for i in range(4)])
        self.assertEqual({key[:2] + key[3:]: indices for key, indices
                          in _slices(groups[5]).items()}, {
            ("mha", "kernel", "kernel"): (1,),   # value kernel, axis 1
            ("mha", "kernel", "other"): (1,),    # query and key kernels
            ("mha", "bias", "other"): (1,),
            ("mha", "kernel", "consumer"): (1,)})  # output rows
        self.assertEqual(groups.unsupported, [])

    def test_bad_model(self):
        with self.assertRaisesRegex(TypeError, "Invalid value for argument "
                                    "`model`. Expected a Keras functional"):
            tfreg.channel_groups("model")

        class Sub(keras.Model):
            def call(self, x):
                return x

        with self.assertRaisesRegex(ValueError, "Sequential model built"):
            tfreg.channel_groups(Sub())


class ShrinkTest(parameterized.TestCase):

    def _check_same(self, model, small, shape, atol=2e-5):
        x = np.random.default_rng(1).normal(size=(16,) + shape)
        x = x.astype("float32")
        np.testing.assert_allclose(small(x, training=False),
                                   model(x, training=False), atol=atol,
                                   rtol=1e-5)

    def test_sequential_dense(self):
        model = dense_chain()
        _randomize(model)
        _zero(model, "a", 1, [0, 2])      # kernel zero: relu(bias) folded
        _zero(model, "out", 0, [1, 4])    # rows zero: b units 1, 4 unread
        small = tfreg.shrink(model)
        self.assertIsInstance(small, keras.Sequential)
        self.assertEqual([layer.units for layer in small.layers], [2, 3, 2])
        self._check_same(model, small, (3,))

    def test_residual_cnn_with_constant_folding(self):
        model = residual_cnn()
        _randomize(model)
        # stem/c2 channel 1 (a residual group) unread downstream.
        _zero(model, "c1", 2, [1])
        _zero(model, "pw", 2, [1])
        fc = model.get_layer("fc").kernel
        value = fc.numpy()
        value[[4 + 7 * i for i in range(4)]] = 0  # flat rows of channel 1
        fc.assign(value)
        # fc unit 3 and c1 unit 0: kernel zero, constant output folded.
        _zero(model, "fc", 1, [3])
        _zero(model, "c1", 3, [0])
        c1 = model.get_layer("c1")
        c1.bias.assign(-np.abs(c1.bias.numpy()))  # relu(bias) = 0 (c2: same)
        small = tfreg.shrink(model)
        self.assertEqual(small.get_layer("stem").filters, 3)
        self.assertEqual(small.get_layer("c2").filters, 3)
        self.assertEqual(small.get_layer("c1").filters, 4)
        self.assertEqual(small.get_layer("fc").units, 4)
        self.assertEqual(small.get_layer("bn").gamma.shape, (3,))
        self.assertEqual(small.get_layer("fc").kernel.shape, (4 * 6, 4))
        self._check_same(model, small, (8, 8, 1))

    def test_folding_is_needed(self):
        # sigmoid(bias) of a dead unit is not 0: dropping it without the
        # fold changes the output.
        model = keras.Sequential([
            keras.Input((3,)), L.Dense(3, activation="sigmoid", name="a"),
            L.Dense(2, name="out")])
        _randomize(model)
        _zero(model, "a", 1, [1])
        small = tfreg.shrink(model)
        self.assertEqual(small.layers[0].units, 2)
        self._check_same(model, small, (3,))
        expected = model.get_layer("out").bias.numpy() + (
            1 / (1 + np.exp(-model.get_layer("a").bias.numpy()[1]))
            * model.get_layer("out").kernel.numpy()[1])
        np.testing.assert_allclose(small.get_layer("out").bias.numpy(),
                                   expected, rtol=1e-5, atol=1e-7)

    def test_conv1d_bn_chain(self):
        model = keras.Sequential([
            keras.Input((7, 2)), L.Conv1D(4, 3, name="conv"),
            L.BatchNormalization(name="bn"), L.ReLU(),
            L.Conv1D(3, 3, padding="causal", name="causal"),
            L.GlobalAveragePooling1D(), L.Dense(2, name="out")])
        _randomize(model)
        # conv filters 0 and 2: kernel zero, so a constant BN(bias) each;
        # 2's reaches a causal convolution (kept), 0's is unread (goes).
        _zero(model, "conv", 2, [0, 2])
        _zero(model, "causal", 1, [0])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            small = tfreg.shrink(model)
        self.assertEqual(small.get_layer("conv").filters, 3)
        self.assertEqual(small.get_layer("bn").gamma.shape, (3,))
        self.assertLen([w for w in caught if "conv[2]" in str(w.message)], 1)
        self._check_same(model, small, (7, 2))

    def test_fold_into_valid_conv_and_a_consumer_without_bias(self):
        x = keras.Input((6, 6, 1))
        h = L.Conv2D(3, 3, activation="sigmoid", name="a")(x)
        h = L.Conv2D(2, 3, use_bias=False, name="b")(h)
        model = keras.Model(x, L.Flatten()(h))
        _randomize(model)
        _zero(model, "a", 3, [0])
        small = tfreg.shrink(model)
        self.assertTrue(small.get_layer("b").use_bias)
        self._check_same(model, small, (6, 6, 1))

    def test_constant_into_same_padding_is_kept_with_a_warning(self):
        x = keras.Input((6, 6, 1))
        h = L.Conv2D(3, 3, activation="sigmoid", name="a")(x)
        h = L.Conv2D(2, 3, padding="same", name="b")(h)
        model = keras.Model(x, L.Flatten()(h))
        _randomize(model)
        _zero(model, "a", 3, [0])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            small = tfreg.shrink(model)
        self.assertEqual(small.get_layer("a").filters, 3)
        self.assertTrue(any("padding (not foldable)" in str(w.message)
                            for w in caught))
        self._check_same(model, small, (6, 6, 1))

    def test_fully_zero_layer_keeps_one_unit(self):
        model = dense_chain()
        _randomize(model)
        _zero(model, "b", 1, range(5))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            small = tfreg.shrink(model)
        # b's output is constant, so nothing reads a either: each keeps one
        # unit, b's folded into out's bias.
        self.assertEqual([layer.units for layer in small.layers], [1, 1, 2])
        for name in ("a", "b"):
            self.assertTrue(any(f"`{name}` would have no units left"
                                in str(w.message) for w in caught))
        self._check_same(model, small, (3,))

    def test_nested_model_ends_the_coupling_and_is_copied(self):
        inner = keras.Sequential([keras.Input((4,)),
                                  L.Dense(3, name="inner_dense")],
                                 name="inner")
        x = keras.Input((3,))
        h = L.Dense(4, name="a")(x)
        h = inner(h)
        h = L.Dense(5, activation="relu", name="b")(h)
        model = keras.Model(x, L.Dense(2, name="out")(h))
        _randomize(model)
        inner.set_weights([np.ones((4, 3), "float32"),
                           np.ones(3, "float32")])
        groups = tfreg.channel_groups(model)
        self.assertEqual(_units(groups), [(("b", i),) for i in range(5)])
        self.assertEqual([(entry.layer, entry.class_name)
                          for entry in groups.unsupported],
                         [("inner", "Sequential")])
        _zero(model, "b", 1, [0, 3])
        small = tfreg.shrink(model)
        self.assertEqual(small.get_layer("b").units, 3)
        self._check_same(model, small, (3,))

    def test_shared_layer(self):
        shared = L.Dense(3, activation="relu", name="shared")
        x = keras.Input((4,))
        h = L.Add()([shared(x), shared(L.Activation("tanh")(x))])
        model = keras.Model(x, L.Dense(2, name="out")(h))
        _randomize(model)
        groups = tfreg.channel_groups(model)
        self.assertEqual(_units(groups), [(("shared", i),) for i in range(3)])
        _zero(model, "out", 0, [2])
        small = tfreg.shrink(model)
        self.assertEqual(small.get_layer("shared").units, 2)
        self._check_same(model, small, (4,))

    def test_tolerance(self):
        model = dense_chain()
        _randomize(model)
        kernel = model.get_layer("a").kernel
        kernel.assign(kernel.numpy() * [1, 1e-4, 1, 1])
        self.assertEqual(tfreg.shrink(model).layers[0].units, 4)
        self.assertEqual(tfreg.shrink(model, tolerance=1e-3).layers[0].units,
                         3)

    def test_bad_arguments(self):
        model = dense_chain()
        for bad, error in ((-1.0, ValueError), ("0", TypeError),
                           (float("nan"), ValueError)):
            with self.assertRaisesRegex(error, "Invalid value for argument "
                                        "`tolerance`. Expected a finite "
                                        "float >= 0"):
                tfreg.shrink(model, tolerance=bad)
        other = tfreg.channel_groups(dense_chain())
        with self.assertRaisesRegex(ValueError, "argument `groups`"):
            tfreg.shrink(model, groups=other)

    def test_save_export_and_train_the_shrunk_model(self):
        model = residual_cnn()
        _randomize(model)
        _zero(model, "c1", 3, [0, 2])
        small = tfreg.shrink(model)
        directory = tempfile.mkdtemp()
        path = os.path.join(directory, "small.keras")
        small.save(path)
        loaded = keras.models.load_model(path)
        self._check_same(small, loaded, (8, 8, 1), atol=1e-6)
        exported = os.path.join(directory, "saved")
        tfreg.export_saved_model(small, exported)
        served = tf.saved_model.load(exported).signatures["serving_default"]
        x = np.ones((2, 8, 8, 1), "float32")
        np.testing.assert_allclose(list(served(tf.constant(x)).values())[0],
                                   small(x), atol=1e-5)
        small.compile(optimizer="sgd", loss="mse")
        y = np.zeros((2, 2), "float32")
        before = small.evaluate(x, y, verbose=0)
        small.fit(x, y, epochs=3, verbose=0)
        self.assertLess(small.evaluate(x, y, verbose=0), before)

    def test_cost_and_summary(self):
        model = dense_chain()
        _randomize(model)
        _zero(model, "a", 1, [0, 2])
        small = tfreg.shrink(model)
        cost = tfreg.model_cost(model)
        # params 16 + 25 + 12; FLOPs 2 x (12 + 20 + 10).
        self.assertEqual((cost["params"], cost["flops"]), (53, 84))
        lines = []
        rows = tfreg.shrink_summary(model, small, print_fn=lines.append)
        self.assertEqual(rows[-1], {
            "layer": "total", "params_before": 53, "params_after": 8 + 15 + 12,
            "flops_before": 84, "flops_after": 2 * (6 + 10 + 10)})
        self.assertEqual([row["layer"] for row in rows], ["a", "b", "total"])
        self.assertIn("1.51x fewer parameters, 1.62x fewer FLOPs", lines[0])


def _shrunk_quietly(model, **kwargs):
    """`tfreg.shrink(model)` and the texts of its warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        small = tfreg.shrink(model, **kwargs)
    return small, [str(warning.message) for warning in caught]


def _outputs_agree(test, model, small, x, atol=2e-5):
    np.testing.assert_allclose(small(x, training=False),
                               model(x, training=False), atol=atol, rtol=1e-5)


def two_constants_concatenated(axis):
    """d1, d2 concatenated along `axis`; their unit 0 is +1 and -1."""
    x = keras.Input((3, 4))
    d1, d2 = L.Dense(5, name="d1"), L.Dense(5, name="d2")
    h = L.Concatenate(axis=axis, name="cat")([d1(x), d2(x)])
    if axis != -2:
        h = L.Flatten()(h)
    h = L.Dense(4, name="d3")(h)
    model = keras.Model(x, L.Dense(2, name="out")(h))
    _randomize(model)
    for layer, constant in ((d1, 1.0), (d2, -1.0)):
        _zero(model, layer.name, 1, [0])
        bias = layer.bias.numpy()
        bias[0] = constant
        layer.bias.assign(bias)
    return model


class ShrinkSafetyTest(parameterized.TestCase):
    """shrink folds only uniform constants, checks itself, never crashes."""

    def test_constant_that_differs_between_positions_is_kept(self):
        model = two_constants_concatenated(axis=-2)
        self.assertIn((("d1", 0), ("d2", 0)),
                      _units(tfreg.channel_groups(model)))
        small, caught = _shrunk_quietly(model)
        self.assertEqual(small.get_layer("d1").units, 5)
        self.assertIn("shrink keeps the zero group ChannelGroup(d1[0], "
                      "d2[0]; 5 slices): its constant output differs "
                      "between the positions `d3` reads (not foldable).",
                      caught)
        _outputs_agree(self, model, small, np.ones((2, 3, 4), "float32"))

    def test_constant_per_position_after_flatten_is_folded(self):
        model = two_constants_concatenated(axis=1)
        small, caught = _shrunk_quietly(model)
        self.assertEqual((small.get_layer("d1").units,
                          small.get_layer("d2").units), (4, 4))
        self.assertEqual(caught, [])
        _outputs_agree(self, model, small, np.ones((2, 3, 4), "float32"))

    def test_the_check_names_the_group_of_a_wrong_fold(self):
        model = dense_chain()
        _randomize(model)
        _zero(model, "a", 1, [0])   # folded: relu(1)
        _zero(model, "out", 0, [2])  # unread: exact without a fold
        bias = model.get_layer("a").bias
        bias.assign(np.abs(bias.numpy()) + 1)
        real_fold = surgery._fold

        def wrong_fold(group, *args):
            fold, reason = real_fold(group, *args)
            return {key: delta + 1.0 for key, delta in fold.items()}, reason

        with mock.patch.object(surgery, "_fold", wrong_fold):
            with self.assertRaisesRegex(
                    ValueError, r"shrink would change the outputs of `.*` by "
                    r"[0-9.e-]+ \(relative to their scale\) on the probe "
                    r"batch; removing ChannelGroup\(a\[0\]; 3 slices\) "
                    r"changes them"):
                tfreg.shrink(model)
            self.assertEqual(tfreg.shrink(model, check=False).layers[0].units,
                             3)
        x = np.ones((2, 3), "float32")
        _outputs_agree(self, model, tfreg.shrink(model, probe=x),
                       np.random.default_rng(3).normal(size=(4, 3)))

    def test_bad_check_arguments(self):
        model = dense_chain()
        with self.assertRaisesRegex(ValueError, r"argument `probe`. Expected "
                                    r"a batch of the model's inputs \(shapes "
                                    r"\[\(None, 3\)\]\)"):
            tfreg.shrink(model, probe=np.zeros((1, 4), "float32"))
        with self.assertRaisesRegex(TypeError, "argument `check`"):
            tfreg.shrink(model, check="yes")

    def test_tolerance_warns_with_the_difference(self):
        model = keras.Sequential([
            keras.Input((3,)), L.Dense(3, activation="sigmoid", name="a"),
            L.Dense(2, name="out")])
        _randomize(model)
        kernel = model.get_layer("a").kernel
        kernel.assign(kernel.numpy() * [1, 0.05, 1])
        small, caught = _shrunk_quietly(model, tolerance=0.2)
        self.assertEqual(small.layers[0].units, 2)
        self.assertTrue(any(text.startswith(
            "shrink(tolerance=0.2) changes the outputs on the probe batch by")
            for text in caught), caught)

    @parameterized.named_parameters(("lstm", "LSTM"), ("gru", "GRU"),
                                    ("pooling", "GlobalAveragePooling1D"))
    def test_masked_embedding(self, reader):
        x = keras.Input((5,), dtype="int32")
        h = L.Embedding(10, 4, mask_zero=True, name="embed")(x)
        h = L.Dense(6, activation="relu", name="d")(h)
        h = L.Dense(3, name="e")(h)
        h = getattr(L, reader)(**({"units": 3} if reader != (
            "GlobalAveragePooling1D") else {}), name="reader")(h)
        model = keras.Model(x, L.Dense(2, name="out")(h))
        _randomize(model)
        _zero(model, "e", 0, [1, 4])
        groups = tfreg.channel_groups(model)
        listed = {entry.layer: entry.reason for entry in groups.unsupported}
        self.assertEqual(list(listed), ["reader"] if reader != (
            "GlobalAveragePooling1D") else [])
        small = tfreg.shrink(model, groups=groups)
        self.assertEqual(small.get_layer("d").units, 4)
        tokens = np.array([[1, 2, 0, 0, 0], [3, 4, 5, 6, 0]], "int32")
        _outputs_agree(self, model, small, tokens)

    def test_transposed_channels_end_the_coupling(self):
        x = keras.Input((3, 4))
        h = L.Dense(5, name="a")(x)
        h = L.Permute((2, 1), name="permute")(h)
        h = L.Dense(2, name="b")(h)
        model = keras.Model(x, L.Dense(2, name="out")(L.Flatten()(h)))
        _randomize(model)
        _zero(model, "a", 1, [0])
        groups = tfreg.channel_groups(model)
        self.assertEqual([(entry.layer, entry.class_name)
                          for entry in groups.unsupported],
                         [("permute", "Permute")])
        self.assertNotIn((("a", 0),), _units(groups))
        small = tfreg.shrink(model)
        self.assertEqual(small.get_layer("a").units, 5)
        _outputs_agree(self, model, small, np.ones((2, 3, 4), "float32"))

    @absltest.skipIf(_keras.LEGACY, "tf_keras has no keras.ops")
    def test_ops_transpose_ends_the_coupling(self):
        x = keras.Input((3, 4))
        h = L.Dense(5, name="a")(x)
        h = keras.ops.transpose(h, (0, 2, 1))
        h = L.Dense(2, name="b")(h)
        model = keras.Model(x, L.Flatten()(h))
        _randomize(model)
        _zero(model, "a", 1, [0])
        _zero(model, "b", 1, [1])
        groups = tfreg.channel_groups(model)
        self.assertEqual([entry.class_name for entry in groups.unsupported],
                         ["Transpose"])
        small = tfreg.shrink(model, groups=groups)
        self.assertEqual(small.get_layer("a").units, 5)
        _outputs_agree(self, model, small, np.ones((2, 3, 4), "float32"))

    def test_layer_applied_to_its_own_output(self):
        x = keras.Input((4,))
        twice = L.Dense(4, name="twice")
        h = L.Dense(3, name="after")(twice(twice(x)))
        model = keras.Model(x, L.Dense(2, name="out")(h))
        _randomize(model)
        _zero(model, "twice", 1, [0])
        groups = tfreg.channel_groups(model)
        self.assertEqual(
            [(entry.layer, entry.reason) for entry in groups.unsupported],
            [("twice", "a shared layer whose calls read channels that "
                       "cannot be removed together")])
        self.assertEqual(_units(groups), [(("after", i),) for i in range(3)])
        small = tfreg.shrink(model, groups=groups)
        self.assertEqual(small.get_layer("twice").units, 4)
        _outputs_agree(self, model, small, np.ones((2, 4), "float32"))


class CoupledGroupLassoTest(parameterized.TestCase):

    def _reference(self, groups, factor):
        total = 0.0
        for group in groups:
            entries = np.concatenate([
                np.take(piece.variable.numpy(), piece.indices,
                        axis=piece.axis).ravel()
                for piece in group.trainable_slices()])
            total += factor * np.sqrt(entries.size) * np.linalg.norm(entries)
        return total

    def test_value_and_gradient(self):
        model = residual_cnn()
        _randomize(model)
        groups = tfreg.channel_groups(model)
        penalty = tfreg.CoupledGroupLasso(groups, 0.01)
        np.testing.assert_allclose(float(penalty()),
                                   self._reference(groups, 0.01), rtol=1e-5)
        with tf.GradientTape() as tape:
            value = penalty()
        expected = tape.gradient(value, list(penalty.variables))
        for got, want in zip(penalty.gradients(), expected):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)

    def test_compiled_matches_eager(self):
        model = residual_cnn()
        _randomize(model)
        penalty = tfreg.CoupledGroupLasso(tfreg.channel_groups(model), 0.05)
        compiled = tf.function(
            lambda: (penalty(), penalty.gradients(),
                     penalty.proximal_update(0.1)), jit_compile=True)
        value, gradients, updated = compiled()
        np.testing.assert_allclose(value, penalty(), rtol=1e-5)
        for got, want in zip(gradients + updated,
                             penalty.gradients() + penalty.proximal_update(0.1)):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)

    def test_an_all_zero_group_has_gradient_zero(self):
        model = dense_chain()
        _randomize(model)
        _zero(model, "a", 1, [0])
        model.get_layer("a").bias.assign([0.0, 1.0, 1.0, 1.0])
        _zero(model, "b", 0, [0])
        penalty = tfreg.CoupledGroupLasso(tfreg.channel_groups(model), 0.1)
        with tf.GradientTape() as tape:
            value = penalty()
        for gradient in tape.gradient(value, list(penalty.variables)):
            self.assertTrue(np.all(np.isfinite(gradient)))

    def test_proximal_update_is_a_block_soft_threshold(self):
        model = dense_chain()
        _randomize(model)
        groups = tfreg.channel_groups(model)
        # Groups of a alone do not overlap within themselves: one group per
        # unit, disjoint slices.
        first = [group for group in groups if group.units[0][0] == "a"]
        penalty = tfreg.CoupledGroupLasso(first, 0.5)
        norms = [np.linalg.norm(np.concatenate([
            np.take(p.variable.numpy(), p.indices, axis=p.axis).ravel()
            for p in group.trainable_slices()])) for group in first]
        sizes = [group.size for group in first]
        step = 0.9 * min(n / (0.5 * np.sqrt(s)) for n, s in zip(norms, sizes))
        new = dict(zip([id(v) for v in penalty.variables],
                       penalty.proximal_update(step)))
        kernel = model.get_layer("a").kernel
        scale = [1 - step * 0.5 * np.sqrt(s) / n for n, s in zip(norms, sizes)]
        np.testing.assert_allclose(new[id(kernel)], kernel.numpy() * scale,
                                   rtol=1e-5)
        # A step large enough zeroes every group exactly.
        for value in penalty.proximal_update(1e3):
            self.assertEqual(np.count_nonzero(value), 0)

    def test_manual_proximal_loop_zeroes_groups_then_shrink(self):
        model = dense_chain()
        _randomize(model)
        groups = tfreg.channel_groups(model)
        penalty = tfreg.CoupledGroupLasso(groups, 0.05)
        for _ in range(20):
            for variable, value in zip(penalty.variables,
                                       penalty.proximal_update(0.5)):
                variable.assign(value)
        dead = [group for group in groups if group.max_abs() == 0.0]
        self.assertNotEmpty(dead)
        small = tfreg.shrink(model)
        self.assertLess(small.count_params(), model.count_params())
        x = np.random.default_rng(2).normal(size=(8, 3)).astype("float32")
        np.testing.assert_allclose(small(x), model(x), atol=1e-6)

    def test_apply_groups_counts_in_the_loss_and_training(self):
        model = dense_chain()
        groups = tfreg.channel_groups(model)
        penalty = tfreg.apply_groups(model, groups, tfreg.GroupLasso(0.1))
        self.assertLen(model.losses, 1)
        np.testing.assert_allclose(float(model.losses[0]), float(penalty()),
                                   rtol=1e-6)
        rows = tfreg.summary(model, print_fn=None)
        self.assertLen(rows, 1)
        np.testing.assert_allclose(rows[0]["penalty"], float(penalty()),
                                   rtol=1e-6)
        exported = os.path.join(tempfile.mkdtemp(), "saved")
        tfreg.export_saved_model(model, exported)
        loss = tf.saved_model.load(exported).signatures["regularization_loss"]
        np.testing.assert_allclose(
            float(loss()["regularization_loss"]), float(penalty()), rtol=1e-6)
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
        x = np.random.default_rng(3).normal(size=(32, 3)).astype("float32")
        before = float(penalty())
        model.fit(x, np.zeros((32, 2), "float32"), epochs=5, verbose=0)
        self.assertLess(float(penalty()), before)

    def test_proximal_optimizer_zeroes_groups_and_shrink_keeps_outputs(self):
        model = residual_cnn()
        groups = tfreg.channel_groups(model)
        penalty = tfreg.apply_groups(model, groups, tfreg.GroupLasso(0.15),
                                     via="optimizer")
        self.assertEmpty(model.losses)
        model.compile(
            optimizer=optimizers.Regularized(
                keras.optimizers.SGD(0.05), penalties=[penalty], model=model),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        rng = np.random.default_rng(4)
        x = rng.normal(size=(64, 8, 8, 1)).astype("float32")
        y = (x.mean(axis=(1, 2, 3)) > 0).astype("int32")
        model.fit(x, y, batch_size=16, epochs=4, verbose=0)
        zero = [group for group in groups if group.max_abs() == 0.0]
        # Whole groups, all their slices across layers, exactly 0.
        self.assertNotEmpty(zero)
        self.assertLess(len(zero), len(groups))
        small = tfreg.shrink(model)
        self.assertLess(small.count_params(), model.count_params())
        np.testing.assert_allclose(small(x, training=False),
                                   model(x, training=False), atol=2e-5)

    def _fit_coupled(self, via):
        """A dense chain trained with a proximal coupled group lasso
        attached `via` the loss (taken from the model) or the optimizer."""
        model = dense_chain()
        _randomize(model, seed=5)
        penalty = tfreg.apply_groups(model, tfreg.channel_groups(model),
                                     tfreg.GroupLasso(1.0), via=via)
        optimizer = optimizers.Regularized(
            keras.optimizers.SGD(0.1), model=model,
            penalties=[penalty] if via == "optimizer" else None)
        self.assertEmpty(model.losses)
        model.compile(optimizer=optimizer, loss="mse")
        x = np.random.default_rng(6).normal(size=(32, 3)).astype("float32")
        model.fit(x, np.zeros((32, 2), "float32"), batch_size=8, epochs=3,
                  shuffle=False, verbose=0)
        return model, penalty, optimizer

    def test_loss_penalty_moves_into_the_optimizer_as_coupled(self):
        model, penalty, optimizer = self._fit_coupled("loss")
        reference, _, _ = self._fit_coupled("optimizer")
        # One block threshold over all the group's variables, exactly as
        # when given as `penalties=[...]`.
        self.assertEqual(optimizer.penalties, (penalty,))
        for ours, theirs in zip(model.weights, reference.weights):
            np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7)
        self.assertTrue(any(group.max_abs() == 0.0
                            for group in penalty.groups))
        rows = tfreg.summary(model, print_fn=None)
        self.assertEqual([(row["via"], row["regularizer"]) for row in rows],
                         [("optimizer", repr(penalty))])
        np.testing.assert_allclose(rows[0]["penalty"], float(penalty()),
                                   rtol=1e-6)
        self.assertEqual(len(optimizer.release()), 1)
        self.assertLen(model.losses, 1)
        self.assertEqual(optimizer.penalties, ())

    def test_built_optimizer_finds_a_loss_penalty_without_the_model(self):
        if tfreg._keras.LEGACY:
            self.skipTest("tf_keras keeps regularizers in the layers; there "
                          "the optimizer needs the model")
        model = dense_chain()
        penalty = tfreg.apply_groups(model, tfreg.channel_groups(model),
                                     tfreg.GroupLasso(0.1))
        optimizer = optimizers.Regularized(keras.optimizers.SGD(0.1))
        optimizer.build(model.trainable_variables)
        self.assertEqual(optimizer.penalties, (penalty,))
        self.assertEqual(optimizer.tfreg_penalties(),
                         [(penalty.variables[0], penalty)])
        self.assertEmpty(model.losses)

    def test_coupled_and_elementwise_penalties_on_one_weight_both_listed(self):
        model = dense_chain()
        _randomize(model)
        tfreg.apply(model, tfreg.L2(0.5), include="^a/kernel$")
        penalty = tfreg.apply_groups(model, tfreg.channel_groups(model),
                                     tfreg.GroupLasso(0.1), via="optimizer")
        optimizer = optimizers.Regularized(
            keras.optimizers.SGD(0.1), penalties=[penalty], model=model)
        model.compile(optimizer=optimizer, loss="mse")
        rows = tfreg.summary(model, print_fn=None)
        self.assertCountEqual([row["regularizer"] for row in rows],
                              [repr(penalty), repr(tfreg.L2(0.5))])
        self.assertEqual({row["via"] for row in rows}, {"optimizer"})
        kernel = model.get_layer("a").kernel
        np.testing.assert_allclose(
            sum(row["penalty"] for row in rows),
            float(penalty()) + 0.5 * float(tf.reduce_sum(kernel ** 2)),
            rtol=1e-5)

    def test_bad_arguments(self):
        model = dense_chain()
        groups = tfreg.channel_groups(model)
        with self.assertRaisesRegex(TypeError, "argument `regularizer`. "
                                    "Expected a tfreg.GroupLasso"):
            tfreg.apply_groups(model, groups, tfreg.L2(0.1))
        with self.assertRaisesRegex(ValueError, "argument `groups`"):
            tfreg.apply_groups(dense_chain(), groups, tfreg.GroupLasso(0.1))
        with self.assertRaisesRegex(ValueError, "argument `via`"):
            tfreg.apply_groups(model, groups, tfreg.GroupLasso(0.1),
                               via="both")
        with self.assertRaisesRegex(ValueError, "argument `groups`"):
            tfreg.CoupledGroupLasso([], 0.1)
        with self.assertRaisesRegex(ValueError, "argument `factor`"):
            tfreg.CoupledGroupLasso(groups, -1.0)


if __name__ == "__main__":
    absltest.main()
