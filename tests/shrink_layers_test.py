"""`shrink` through each kind of layer the rules know, and `register_layer`."""

import os
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

import tfreg
from tfreg import _keras
from tfreg._keras import keras
from tests import pruning_cases

L = keras.layers


def separable_conv():
    x = keras.Input((9, 9, 3))
    h = L.Conv2D(6, 1, activation="relu", name="expand")(x)
    h = L.SeparableConv2D(8, 3, depth_multiplier=2, name="sep")(h)
    h = L.BatchNormalization(name="bn")(h)
    h = L.ReLU()(h)
    h = L.SeparableConv1D(5, 2, name="sep1d")(L.Reshape((49, 8))(h))
    return keras.Model(x, L.Dense(2, name="out")(L.Flatten()(h)))


def grouped_conv():
    x = keras.Input((6, 6, 4))
    h = L.Conv2D(8, 1, name="expand")(x)
    h = L.Conv2D(12, 3, groups=4, activation="relu", name="grouped")(h)
    return keras.Model(x, L.Dense(2, name="out")(
        L.GlobalAveragePooling2D()(h)))


def transposed_conv():
    x = keras.Input((4, 4, 2))
    h = L.Conv2D(5, 3, padding="same", activation="tanh", name="a")(x)
    h = L.Conv2DTranspose(6, 3, strides=2, name="up")(h)
    h = L.ZeroPadding2D(1)(h)
    h = L.Cropping2D(2)(h)
    h = L.Conv2D(3, 3, name="b")(h)
    return keras.Model(x, L.Flatten()(h))


def squeeze_excite():
    """EfficientNet's SE block: pooled channels reshaped to (1, 1, C)."""
    x = keras.Input((6, 6, 3))
    h = L.Conv2D(8, 3, padding="same", name="conv")(x)
    h = L.BatchNormalization(name="bn")(h)
    h = L.Activation("swish")(h)
    s = L.GlobalAveragePooling2D()(h)
    s = L.Reshape((1, 1, 8), name="se_reshape")(s)
    s = L.Conv2D(2, 1, activation="swish", name="se_reduce")(s)
    s = L.Conv2D(8, 1, activation="sigmoid", name="se_expand")(s)
    h = L.Multiply(name="excite")([h, s])
    h = L.Conv2D(4, 1, name="project")(h)
    return keras.Model(x, L.Dense(2, name="out")(
        L.GlobalAveragePooling2D()(h)))


def transformer_block(width=8, heads=4, hidden=16):
    x = keras.Input((5, 3))
    e = L.Dense(width, name="embed")(x)
    attention = L.MultiHeadAttention(heads, 3, name="mha")(e, e)
    h = L.LayerNormalization(name="norm1")(L.Add()([e, attention]))
    f = L.Dense(hidden, activation="relu", name="ffn_in")(h)
    f = L.Dense(width, name="ffn_out")(f)
    h = L.LayerNormalization(name="norm2")(L.Add()([h, f]))
    return keras.Model(x, L.Dense(2, name="out")(L.Flatten()(h)))


def keras_ops_block():
    """`x + y`, `x * 0.5` and activations as Keras 3 operations."""
    ops = keras.ops
    x = keras.Input((6,))
    a = L.Dense(4, name="a")(x)
    b = L.Dense(4, name="b")(x)
    h = ops.relu(a + b) * 0.5
    h = ops.sigmoid(L.Dense(5, name="c")(h))
    return keras.Model(x, L.Dense(2, name="out")(h))


# (name, builder, available, the layers that end a coupling)
BUILDERS = [("separable_conv", separable_conv, True, []),
            ("grouped_conv", grouped_conv, True, []),
            ("transposed_conv", transposed_conv, True, []),
            ("squeeze_excite", squeeze_excite, True, []),
            ("transformer_block", transformer_block, True, ["norm1"]),
            ("keras_ops", keras_ops_block, not _keras.LEGACY, [])]


class LayersTest(parameterized.TestCase):

    @parameterized.named_parameters(*BUILDERS)
    def test_half_the_groups_zeroed_shrink_with_equal_outputs(
            self, build, available, unsupported):
        if not available:
            self.skipTest("tf_keras has no keras.ops")
        model = build()
        pruning_cases.randomize(model)
        groups, _ = pruning_cases.assert_shrinks(self, model)
        self.assertEqual([entry.layer for entry in groups.unsupported],
                         unsupported)

    def test_separable_conv_units_and_rows(self):
        groups = tfreg.channel_groups(separable_conv())
        units = [unit for group in groups for unit in group.units]
        self.assertIn(("sep", 7), units)
        expand = next(group for group in groups
                      if group.units == (("expand", 1),))
        self.assertEqual(
            {(piece.variable.name.split("/")[-1].split(":")[0], piece.axis,
              piece.role): piece.indices
             for piece in expand.slices if piece.layer.name == "sep"},
            {("depthwise_kernel", 2, "consumer"): (1,),
             ("pointwise_kernel", 2, "consumer"): (2, 3)})

    def test_grouped_conv_goes_by_whole_groups(self):
        model = grouped_conv()
        pruning_cases.randomize(model)
        groups = tfreg.channel_groups(model)
        self.assertEqual([group.units for group in groups][:1], [
            (("expand", 0), ("expand", 1), ("grouped", 0), ("grouped", 1),
             ("grouped", 2))])
        pruning_cases.zero_groups([groups[1]], fraction=1.0)
        small = tfreg.shrink(model, groups=groups)
        self.assertEqual((small.get_layer("grouped").groups,
                          small.get_layer("grouped").filters), (3, 9))

    def test_squeeze_excite_reshape_target_is_rewritten(self):
        model = squeeze_excite()
        pruning_cases.randomize(model)
        groups = tfreg.channel_groups(model)
        conv = [group for group in groups
                if ("conv", 2) in group.units or ("conv", 5) in group.units]
        pruning_cases.zero_groups(conv, fraction=1.0)
        small = tfreg.shrink(model, groups=groups)
        self.assertEqual(small.get_layer("se_reshape").target_shape,
                         (1, 1, 6))
        x = pruning_cases.inputs_for(model)
        np.testing.assert_allclose(small(x), model(x), atol=1e-5)

    def test_reshape_to_rank_2_target_is_rewritten(self):
        x = keras.Input((4, 4, 2))
        h = L.Conv2D(3, 3, name="conv")(x)
        h = L.Reshape((12,), name="flat")(h)
        model = keras.Model(x, L.Dense(2, name="out")(h))
        pruning_cases.randomize(model)
        groups = tfreg.channel_groups(model)
        pruning_cases.zero_groups(groups[1:2], fraction=1.0)
        small = tfreg.shrink(model, groups=groups)
        self.assertEqual(small.get_layer("flat").target_shape, (8,))
        x = pruning_cases.inputs_for(model)
        np.testing.assert_allclose(small(x), model(x), atol=1e-5)

    def test_batch_normalization_gamma_zero_is_folded(self):
        x = keras.Input((6, 6, 2))
        h = L.Conv2D(4, 3, name="conv")(x)
        h = L.BatchNormalization(name="bn")(h)
        h = L.ReLU()(h)
        h = L.Conv2D(3, 3, name="next")(h)
        model = keras.Model(x, L.Flatten()(h))
        pruning_cases.randomize(model)
        bn = model.get_layer("bn")
        bn.gamma.assign(bn.gamma.numpy() * [1, 0, 1, 0])
        bn.beta.assign([0.5, 1.0, -0.3, -2.0])  # relu(1) = 1 is folded
        small = tfreg.shrink(model)
        self.assertEqual(small.get_layer("conv").filters, 2)
        x = pruning_cases.inputs_for(model)
        np.testing.assert_allclose(small(x), model(x), atol=1e-5)

    def test_attention_heads_shrink_save_load_and_train(self):
        model = transformer_block()
        pruning_cases.randomize(model)
        groups = tfreg.channel_groups(model)
        heads = [group for group in groups
                 if group.units in ((("mha", "head1"),), (("mha", "head3"),))]
        pruning_cases.zero_groups(heads, fraction=1.0)
        small = tfreg.shrink(model, groups=groups)
        self.assertEqual(small.get_layer("mha").get_config()["num_heads"], 2)
        x = pruning_cases.inputs_for(model)
        np.testing.assert_allclose(small(x), model(x), atol=1e-5)
        path = os.path.join(tempfile.mkdtemp(), "small.keras")
        small.save(path)
        loaded = keras.models.load_model(path)
        np.testing.assert_allclose(loaded(x), small(x), atol=1e-6)
        loaded.compile(optimizer="sgd", loss="mse")
        y = np.zeros((2, 2), "float32")
        before = loaded.evaluate(x, y, verbose=0)
        loaded.fit(x, y, epochs=3, verbose=0)
        self.assertLess(loaded.evaluate(x, y, verbose=0), before)

    def test_transformer_norms_end_the_residual_stream(self):
        groups = tfreg.channel_groups(transformer_block())
        units = {unit for group in groups for unit in group.units}
        self.assertTrue({("ffn_in", i) for i in range(16)} <= units)
        # The residual stream (embed, the attention output, ffn_out) ends
        # at the normalizations.
        self.assertFalse(any(name in ("embed", "ffn_out") or (
            name == "mha" and isinstance(index, int))
                             for name, index in units))
        self.assertEqual(
            [(entry.layer, entry.reason) for entry in groups.unsupported],
            [("norm1", "normalizes across channels")])


@absltest.skipIf(_keras.LEGACY, "keras_hub needs Keras 3")
class BertBackboneTest(absltest.TestCase):

    def test_feed_forward_units_shrink_save_load_and_train(self):
        import keras_hub  # pylint: disable=g-import-not-at-top

        backbone = keras_hub.models.BertBackbone(
            vocabulary_size=50, num_layers=2, num_heads=4, hidden_dim=16,
            intermediate_dim=32, max_sequence_length=8)
        groups = tfreg.channel_groups(backbone)
        self.assertEqual(
            {name for group in groups for name, _ in group.units},
            {"transformer_layer_0", "transformer_layer_1"})
        # 32 feed-forward units and 4 heads (tests/bert_heads_test.py) each.
        self.assertLen(groups, 72)
        pruning_cases.zero_groups([group for group in groups if isinstance(
            group.units[0][1], int)], fraction=0.5)
        small = tfreg.shrink(backbone, groups=groups)
        widths = [small.get_layer(f"transformer_layer_{i}").get_config()[
            "intermediate_dim"] for i in range(2)]
        self.assertLess(sum(widths), 64)
        self.assertLess(small.count_params(), backbone.count_params())
        x = {"token_ids": np.array([[1, 2, 3, 4, 5, 0, 0, 0],
                                    [6, 7, 8, 0, 0, 0, 0, 0]], "int32"),
             "segment_ids": np.zeros((2, 8), "int32"),
             "padding_mask": np.array([[1] * 5 + [0] * 3,
                                       [1] * 3 + [0] * 5], "int32")}
        for key, value in backbone(x).items():
            np.testing.assert_allclose(small(x)[key], value, atol=1e-5)
        path = os.path.join(tempfile.mkdtemp(), "small.keras")
        small.save(path)
        loaded = keras.models.load_model(path)
        np.testing.assert_allclose(loaded(x)["sequence_output"],
                                   small(x)["sequence_output"], atol=1e-6)
        model = keras.Model(loaded.input, loaded.output["pooled_output"])
        model.compile(optimizer="sgd", loss="mse")
        y = np.ones((2, 16), "float32")
        before = model.evaluate(x, y, verbose=0)
        model.fit(x, y, epochs=3, verbose=0)
        self.assertLess(model.evaluate(x, y, verbose=0), before)


class Scale(keras.layers.Layer):
    """A per-channel scale: a layer tfreg has no rule for."""

    def __init__(self, width, **kwargs):
        super().__init__(**kwargs)
        self.width = width

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(self.width,))

    def call(self, inputs):
        return inputs * self.scale

    def get_config(self):
        return dict(super().get_config(), width=self.width)


class RegisterLayerTest(absltest.TestCase):

    def _model(self):
        x = keras.Input((3,))
        h = L.Dense(4, name="a")(x)
        h = Scale(4, name="scale")(h)
        return keras.Model(x, L.Dense(2, name="out")(h))

    def test_a_registered_rule_makes_the_layer_prunable(self):
        model = self._model()
        pruning_cases.randomize(model)
        unknown = tfreg.channel_groups(model)
        self.assertEqual(len(unknown), 0)
        self.assertEqual(
            [(entry.layer, entry.reason) for entry in unknown.unsupported],
            [("scale", "not a layer channel_groups understands")])
        tfreg.pruning.register_layer(Scale, tfreg.pruning.PassThrough(
            per_channel=["scale"], width="width"))
        try:
            groups = tfreg.channel_groups(model)
            self.assertEqual([group.units for group in groups],
                             [(("a", i),) for i in range(4)])
            pruning_cases.zero_groups(groups[1:3], fraction=1.0)
            small = tfreg.shrink(model, groups=groups)
            self.assertEqual(small.get_layer("scale").width, 2)
            x = pruning_cases.inputs_for(model)
            np.testing.assert_allclose(small(x), model(x), atol=1e-5)
        finally:
            tfreg.pruning.rules.unregister_layer(Scale)

    def test_a_failing_rule_is_a_value_error_naming_the_layer(self):

        class Broken(tfreg.pruning.PassThrough):
            def config(self, layer, sizes):
                return {"width": sizes.size(layer.missing, 0)}

        model = self._model()
        pruning_cases.randomize(model)
        tfreg.pruning.register_layer(Scale, Broken(per_channel=["scale"]))
        try:
            groups = tfreg.channel_groups(model)
            pruning_cases.zero_groups(groups[:1], fraction=1.0)
            with self.assertRaisesRegex(
                    ValueError, r"shrink cannot rewrite the config of layer "
                    r"`scale` \(Scale\): its rule failed with "
                    r"AttributeError"):
                tfreg.shrink(model, groups=groups)
        finally:
            tfreg.pruning.rules.unregister_layer(Scale)

    def test_bad_arguments(self):
        with self.assertRaisesRegex(TypeError, "argument `layer_class`"):
            tfreg.pruning.register_layer("Scale", tfreg.pruning.PassThrough())
        with self.assertRaisesRegex(TypeError, "argument `rule`"):
            tfreg.pruning.register_layer(Scale, "pass")


if __name__ == "__main__":
    absltest.main()
