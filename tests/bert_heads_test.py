"""`shrink` removes attention heads (and feed-forward units) of a keras_hub
BertBackbone: fewer heads of the same width, the same outputs, and a model
that saves, loads and trains."""

import os
import subprocess
import sys
import tempfile

from absl.testing import absltest
import numpy as np

import tfreg
from tfreg import _keras
from tfreg._keras import keras
from tests import pruning_cases

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LENGTH = 16
LAYERS = ("transformer_layer_0", "transformer_layer_1")
# Different heads, and a different number of them, in the two layers.
REMOVED_HEADS = {"transformer_layer_0": (1, 3), "transformer_layer_1": (0,)}
REMOVED_UNITS = {"transformer_layer_0": (2, 5, 40),
                 "transformer_layer_1": (7,)}


def backbone():
    import keras_hub  # pylint: disable=g-import-not-at-top

    model = keras_hub.models.BertBackbone(
        vocabulary_size=50, num_layers=2, num_heads=4, hidden_dim=32,
        intermediate_dim=64, max_sequence_length=LENGTH, dropout=0.0)
    pruning_cases.randomize(model)
    return model


def inputs(batch=3, seed=1):
    """Random token ids; the first two examples end in padding."""
    rng = np.random.default_rng(seed)
    lengths = [9, 13] + [LENGTH] * (batch - 2)
    mask = np.array([[1] * n + [0] * (LENGTH - n) for n in lengths], "int32")
    return {"token_ids": rng.integers(1, 50, (batch, LENGTH)).astype(
                "int32") * mask,
            "segment_ids": (np.arange(LENGTH) >= 6).astype("int32")[None]
                           * mask,
            "padding_mask": mask}


def zero(groups, wanted):
    """Zeroes the groups whose units are in `wanted` ((layer, index)
    pairs); returns them."""
    chosen = [group for group in groups
              if any(unit in wanted for unit in group.units)]
    return pruning_cases.zero_groups(chosen, fraction=1.0)


def wanted_units():
    heads = {(name, f"head{head}") for name, removed in REMOVED_HEADS.items()
             for head in removed}
    return heads | {(name, unit) for name, removed in REMOVED_UNITS.items()
                    for unit in removed}


def assert_same_outputs(test, expected_model, model, x, atol=1e-5):
    expected, found = expected_model(x), model(x)
    test.assertEqual(set(found), {"sequence_output", "pooled_output"})
    for key, value in expected.items():
        np.testing.assert_allclose(np.asarray(found[key]), np.asarray(value),
                                   atol=atol, err_msg=key)


@absltest.skipIf(_keras.LEGACY, "keras_hub's BertBackbone needs Keras 3 "
                                "(TF_USE_LEGACY_KERAS=1 is tf_keras)")
class BertHeadsTest(absltest.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.model = backbone()
        cls.groups = tfreg.channel_groups(cls.model)
        cls.zeroed = zero(cls.groups, wanted_units())
        cls.small = tfreg.shrink(cls.model, groups=cls.groups)
        cls.x = inputs()

    def encoder(self, name):
        return self.small.get_layer(name)

    def test_heads_and_feed_forward_units_are_groups(self):
        self.assertLen(self.zeroed, 7)
        units = [unit for group in self.groups for unit in group.units]
        self.assertLen(self.groups, len(units))
        self.assertEqual(
            sorted(units, key=str),
            sorted([(name, f"head{head}") for name in LAYERS
                    for head in range(4)]
                   + [(name, unit) for name in LAYERS for unit in range(64)],
                   key=str))
        head = next(group for group in self.groups
                    if group.units == (("transformer_layer_1", "head2"),))
        roles = {(piece.variable.path.split("/", 2)[-1], piece.axis,
                  piece.indices, piece.role) for piece in head.slices}
        self.assertEqual(roles, {
            ("query/kernel", 1, (2,), "other"),
            ("key/kernel", 1, (2,), "other"),
            ("value/kernel", 1, (2,), "kernel"),
            ("query/bias", 0, (2,), "other"),
            ("key/bias", 0, (2,), "other"),
            ("value/bias", 0, (2,), "other"),
            ("attention_output/kernel", 0, (2,), "consumer")})

    def test_the_layer_it_does_not_trace_is_listed_with_its_reason(self):
        self.assertEqual(
            [tuple(entry) for entry in self.groups.unsupported],
            [("position_embedding", "PositionEmbedding",
              "not a layer channel_groups understands")])

    def test_fewer_heads_of_the_same_width(self):
        from tfreg.pruning import hub  # pylint: disable=g-import-not-at-top

        for name in LAYERS:
            config = self.encoder(name).get_config()
            self.assertEqual(config["num_heads"],
                             4 - len(REMOVED_HEADS[name]), name)
            self.assertEqual(config["key_dim"], 8, name)
            self.assertEqual(config["intermediate_dim"],
                             64 - len(REMOVED_UNITS[name]), name)
            self.assertIsInstance(self.encoder(name),
                                  hub.PrunedTransformerEncoder)
        attention = self.encoder("transformer_layer_1")._self_attention_layer  # pylint: disable=protected-access
        self.assertEqual(tuple(attention._query_dense.kernel.shape),  # pylint: disable=protected-access
                         (32, 3, 8))
        self.assertEqual(
            self.model.count_params() - self.small.count_params(),
            # Per head: 3 kernels of 32 x 8, 3 biases of 8, 8 x 32 output
            # rows; per unit: 32 kernel entries, a bias, 32 output rows.
            3 * (4 * 32 * 8 + 3 * 8) + 4 * (32 + 1 + 32))

    def test_fewer_flops(self):
        flops = [tfreg.pruning.model_cost(model)["flops"]
                 for model in (self.model, self.small)]
        # The free sequence axis counts one position. Per head 2 x (query
        # 32 x 8, key and value 32 x 16, scores and their sum 16, output
        # 8 x 32); per unit 2 x (32 in, 32 out).
        self.assertEqual(flops[0] - flops[1],
                         3 * 2 * (32 * 8 + 32 * 16 + 16 + 8 * 32)
                         + 4 * 2 * (32 + 32))

    def test_equal_outputs_with_padding(self):
        assert_same_outputs(self, self.model, self.small, self.x)

    def test_save_and_load_safe_mode(self):
        path = os.path.join(tempfile.mkdtemp(), "small.keras")
        self.small.save(path)
        loaded = keras.saving.load_model(path, safe_mode=True)
        assert_same_outputs(self, self.small, loaded, self.x, atol=1e-6)
        self.assertEqual(
            loaded.get_layer("transformer_layer_0").get_config()["num_heads"],
            2)

    def test_loads_in_a_process_that_did_not_import_keras_hub(self):
        path = os.path.join(tempfile.mkdtemp(), "small.keras")
        self.small.save(path)
        x_path = os.path.join(os.path.dirname(path), "x.npz")
        np.savez(x_path, **self.x)
        out_path = os.path.join(os.path.dirname(path), "out.npz")
        script = (
            "import sys, numpy as np, tfreg\n"
            "from tfreg._keras import keras\n"
            "assert 'keras_hub' not in sys.modules\n"
            "model = keras.saving.load_model(sys.argv[1], safe_mode=True)\n"
            "x = dict(np.load(sys.argv[2]))\n"
            "np.savez(sys.argv[3], **{k: np.asarray(v) for k, v in "
            "model(x).items()})\n")
        result = subprocess.run(
            [sys.executable, "-c", script, path, x_path, out_path],
            cwd=ROOT, capture_output=True, text=True, timeout=300,
            check=False)
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        found = np.load(out_path)
        for key, value in self.small(self.x).items():
            np.testing.assert_allclose(found[key], np.asarray(value),
                                       atol=1e-6, err_msg=key)

    def test_a_text_classifier_on_it_trains_saves_and_loads(self):
        import keras_hub  # pylint: disable=g-import-not-at-top

        path = os.path.join(tempfile.mkdtemp(), "small.keras")
        self.small.save(path)
        small = keras.saving.load_model(path)  # Trained below.
        classifier = keras_hub.models.BertTextClassifier(
            backbone=small, num_classes=3, preprocessor=None, dropout=0.0)
        np.testing.assert_allclose(
            classifier(self.x),
            classifier.output_dense(self.small(self.x)["pooled_output"]),
            atol=1e-6)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        classifier.compile(optimizer=keras.optimizers.SGD(0.01), loss=loss)
        y = np.array([0, 1, 2])
        query = small.get_layer(
            "transformer_layer_0")._self_attention_layer._query_dense.kernel  # pylint: disable=protected-access
        before_kernel = query.numpy()
        before = float(loss(y, classifier(self.x)))
        classifier.train_on_batch(self.x, y)
        self.assertLess(float(loss(y, classifier(self.x))), before)
        self.assertFalse(np.allclose(query.numpy(), before_kernel))
        path = os.path.join(os.path.dirname(path), "classifier.keras")
        classifier.save(path)
        loaded = keras.saving.load_model(path, safe_mode=True, compile=False)
        np.testing.assert_allclose(loaded(self.x), classifier(self.x),
                                   atol=1e-6)

    def test_a_shrunk_backbone_shrinks_again(self):
        path = os.path.join(tempfile.mkdtemp(), "small.keras")
        self.small.save(path)
        small = keras.saving.load_model(path)
        groups = tfreg.channel_groups(small)
        self.assertLen([group for group in groups
                        if isinstance(group.units[0][1], str)], 5)
        # The second of layer 1's three heads left (its head 2).
        zero(groups, {("transformer_layer_1", "head1")})
        smaller = tfreg.shrink(small, groups=groups)
        config = smaller.get_layer("transformer_layer_1").get_config()
        self.assertEqual((config["num_heads"], config["key_dim"]), (2, 8))
        assert_same_outputs(self, small, smaller, self.x)

    def test_a_layer_keeps_one_head(self):
        model = backbone()
        groups = tfreg.channel_groups(model)
        zero(groups, {("transformer_layer_0", f"head{head}")
                      for head in range(4)})
        with self.assertWarnsRegex(UserWarning, "would have no units left"):
            small = tfreg.shrink(model, groups=groups)
        self.assertEqual([small.get_layer(name).get_config()["num_heads"]
                          for name in LAYERS], [1, 4])
        # Only the layer that lost heads changes class.
        self.assertIs(type(small.get_layer("transformer_layer_1")),
                      type(model.get_layer("transformer_layer_1")))
        assert_same_outputs(self, model, small, self.x)


@absltest.skipIf(_keras.LEGACY, "keras_hub's TransformerEncoder needs "
                                "Keras 3 (TF_USE_LEGACY_KERAS=1 is tf_keras)")
class PrunedTransformerEncoderTest(absltest.TestCase):

    def test_the_heads_of_a_subclass_stay(self):
        import keras_hub  # pylint: disable=g-import-not-at-top

        class Encoder(keras_hub.layers.TransformerEncoder):
            """Another build might size its heads otherwise."""

        x = keras.Input((4, 8))
        h = Encoder(intermediate_dim=6, num_heads=2, name="encoder")(x)
        model = keras.Model(x, keras.layers.Dense(2, name="out")(h))
        groups = tfreg.channel_groups(model)
        self.assertEqual([group.units for group in groups],
                         [(("encoder", unit),) for unit in range(6)])

    def test_key_dim_is_checked(self):
        from tfreg.pruning import hub  # pylint: disable=g-import-not-at-top

        with self.assertRaisesRegex(
                ValueError, "Invalid value for argument `key_dim`.*"
                            "Received: key_dim=0"):
            hub.PrunedTransformerEncoder(key_dim=0, intermediate_dim=4,
                                         num_heads=1)


if __name__ == "__main__":
    absltest.main()
