"""tfreg's model-facing tools on real architectures, in the active Keras.

`apply`, `remove`, `summary`, `strengths`, `StrengthScheduler`,
`export_saved_model` and save/load on models nobody on this project wrote
(`keras.applications` MobileNetV2, EfficientNetB0, ResNet50), a transformer
encoder block, a nested functional model and a subclassed model (see
`tests/architectures.py`). Each model is built once per test class; every
test starts from it with no regularizer.

Expected values are computed without tfreg: the selected weights from the
weights' names (cross-checked with a count from the layer types), penalties
as numpy sums over those weights in float64.
"""

import os
import tempfile
import warnings

from absl.testing import absltest
import numpy as np
import tensorflow as tf

import tfreg
from tfreg import _keras
from tests import architectures

keras = _keras.keras

FACTOR = 1e-3
# The penalty the strength schedule reaches in the fit, of the order of the
# data loss so that float32 resolves both.
SCHEDULED_PENALTY = 2.0
# float32 sums over up to 24M weights against float64 references.
RTOL = 1e-5
SAVE_FORMATS = ("keras", "h5", "tf") if _keras.LEGACY else ("keras",)


def _total(model):
    """sum(model.losses) in float64; 0.0 without losses."""
    return float(sum(np.float64(loss) for loss in model.losses))


def _variable_path(variable):
    """'layer/weight' as Keras names the variable ('layer/weight:0' in tf_keras)."""
    if _keras.LEGACY:
        return variable.name.split(":")[0]
    return variable.path


def _l2(values, factor):
    return factor * np.sum(np.square(values, dtype=np.float64))


def _l1(values, factor):
    return factor * np.sum(np.abs(values.astype(np.float64)))


def _save(model, directory, save_format):
    if save_format == "tf":
        path = os.path.join(directory, "model_tf")
        model.save(path, save_format="tf")
        loaded = keras.models.load_model(path)
        # tf_keras leaves the optimizer state behind without this
        # (tensorflow/tensorflow#44670).
        loaded.load_weights(path)
        return loaded
    path = os.path.join(directory, f"model.{save_format}")
    model.save(path)
    return keras.models.load_model(path)


class _Checks:
    """The tests every architecture runs; subclasses set what differs.

    Class attributes:
      build: a function returning the built model.
      head: the path of the classifier's kernel.
      selected_type: a layer class for the predicate-selection test (the
        predicate sees the layer that owns the weight).
      saved: what `apply` must report for every weight (True: the model's
        config carries the regularizer; False: in memory only).
      logits: whether the model outputs logits (else probabilities).
      jit_compile: the fit's `jit_compile`.
      export: whether to run the export test.
      save_formats: the formats saved and loaded.
      input_signature: for `export_saved_model` (None: the model's inputs).
    """

    build = None
    head = None
    selected_type = None
    saved = True
    logits = False
    jit_compile = True
    export = True
    save_formats = SAVE_FORMATS
    input_signature = None

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.model = cls.build()
        cls.x = architectures.inputs(cls.model)
        cls.y = architectures.targets()
        cls.kernels = architectures.kernels(cls.model)

    def setUp(self):
        super().setUp()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tfreg.remove(self.model)
        self.assertEmpty(self.model.losses)

    # The regularizer under test and its independent reference; L2 unless a
    # subclass says otherwise. Both are linear in `strength`.
    def regularizer(self, strength):
        return tfreg.L2(strength)

    def reference(self, values, strength):
        return _l2(values, strength)

    def expected_path(self, variable):
        """The path `tfreg.apply` gives `variable`."""
        return _variable_path(variable)

    def _penalties(self, variables, strength):
        return [self.reference(v.numpy(), strength) for v in variables]

    def _head_kernel(self):
        [kernel] = [v for v in self.kernels
                    if self.expected_path(v) == self.head]
        return kernel

    def test_default_selection_is_every_kernel(self):
        self.assertLen(self.kernels, architectures.kernel_count(self.model))
        attached = tfreg.apply(self.model, tfreg.L2(FACTOR))
        self.assertEqual(sorted(attached),
                         sorted(self.expected_path(v) for v in self.kernels))
        self.assertEqual(set(attached.values()), {self.saved})
        self.assertLen(self.model.losses, len(self.kernels))

    def test_include_predicate_and_exclude_regex(self):
        wanted = [layer for layer in architectures.layers(self.model)
                  if type(layer) is self.selected_type]  # pylint: disable=unidiomatic-typecheck
        # A predicate replaces the default selection: biases too.
        expected = sorted(self.expected_path(v) for layer in wanted
                          for v in layer.trainable_weights)
        self.assertNotEmpty(expected)
        attached = tfreg.apply(
            self.model, tfreg.L2(FACTOR),
            include=lambda layer, variable: (
                type(layer) is self.selected_type))  # pylint: disable=unidiomatic-typecheck
        self.assertEqual(sorted(attached), expected)
        self.assertLen(self.model.losses, len(expected))
        tfreg.remove(self.model)
        attached = tfreg.apply(self.model, tfreg.L2(FACTOR),
                               exclude=f"^{self.head}$")
        self.assertEqual(
            sorted(attached),
            sorted(self.expected_path(v) for v in self.kernels
                   if self.expected_path(v) != self.head))

    def test_penalty_and_summary_equal_numpy_sums(self):
        attached = tfreg.apply(self.model, self.regularizer(FACTOR))
        penalties = self._penalties(self.kernels, FACTOR)
        expected = sum(penalties)
        self.assertGreater(expected, 0.0)
        np.testing.assert_allclose(_total(self.model), expected, rtol=RTOL)
        printed = []
        rows = tfreg.summary(self.model, print_fn=printed.append)
        self.assertEqual(sorted(row["path"] for row in rows), sorted(attached))
        np.testing.assert_allclose(sorted(row["penalty"] for row in rows),
                                   sorted(penalties), rtol=RTOL)
        np.testing.assert_allclose(sum(row["share"] for row in rows), 1.0,
                                   rtol=1e-9)
        [table] = printed
        total_line = table.splitlines()[-1].split()
        self.assertEqual(total_line[0], "total")
        # The table prints 6 significant digits.
        np.testing.assert_allclose(float(total_line[1]), expected, rtol=1e-5)

    def test_remove_restores_zero_penalty(self):
        attached = tfreg.apply(self.model, self.regularizer(FACTOR))
        head_penalty = self.reference(self._head_kernel().numpy(), FACTOR)
        expected = sum(self._penalties(self.kernels, FACTOR))
        self.assertEqual(tfreg.remove(self.model, include=f"^{self.head}$"),
                         [self.head])
        self.assertLen(self.model.losses, len(self.kernels) - 1)
        np.testing.assert_allclose(_total(self.model), expected - head_penalty,
                                   rtol=RTOL)
        self.assertEqual(tfreg.remove(self.model),
                         sorted(set(attached) - {self.head}))
        self.assertEmpty(self.model.losses)
        self.assertEqual(tfreg.summary(self.model, print_fn=None), [])

    def test_strength_scheduled_in_fit(self):
        name = "arch_strength"
        strength = tfreg.Strength(0.0, name=name)
        tfreg.apply(self.model, self.regularizer(strength))
        found = tfreg.strengths(self.model)
        self.assertEqual(list(found), [name])
        self.assertLen(found[name], 1)
        self.assertIs(found[name][0], strength.variable)
        late = SCHEDULED_PENALTY / sum(self._penalties(self.kernels, 1.0))
        # Dropout off, so that both epochs have the same data loss (the
        # weights stay put: the learning rate is 0).
        for layer in architectures.layers(self.model):
            if isinstance(layer, keras.layers.Dropout):
                self.addCleanup(setattr, layer, "rate", layer.rate)
                layer.rate = 0.0
        self.model.compile(
            optimizer=keras.optimizers.SGD(0.0),
            loss=keras.losses.SparseCategoricalCrossentropy(
                from_logits=self.logits),
            jit_compile=self.jit_compile)
        history = self.model.fit(
            self.x, self.y, batch_size=len(self.y), epochs=2, shuffle=False,
            verbose=0, callbacks=[tfreg.StrengthScheduler(
                {name: lambda epoch: (0.0, late)[epoch]})])
        np.testing.assert_allclose(history.history[f"strength/{name}"],
                                   [0.0, late], rtol=1e-7)
        np.testing.assert_allclose(float(strength.variable), late, rtol=1e-7)
        before, after = history.history["loss"]
        # The first epoch's loss is the data loss alone (strength 0).
        np.testing.assert_allclose(after - before, SCHEDULED_PENALTY,
                                   rtol=1e-4)
        np.testing.assert_allclose(_total(self.model), SCHEDULED_PENALTY,
                                   rtol=RTOL)

    def test_export_saved_model_computes_the_penalty(self):
        if not self.export:
            self.skipTest("export is tested on the smaller models")
        strength = tfreg.Strength(FACTOR, name="arch_export")
        tfreg.apply(self.model, self.regularizer(strength))
        in_memory = float(tf.add_n(self.model.losses))
        expected = sum(self._penalties(self.kernels, FACTOR))
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "export")
            tfreg.export_saved_model(self.model, path,
                                     input_signature=self.input_signature)
            loaded = tf.saved_model.load(path)
        penalty = loaded.signatures["regularization_loss"]
        served = float(penalty()["regularization_loss"])
        np.testing.assert_allclose(served, in_memory, rtol=1e-6)
        np.testing.assert_allclose(served, expected, rtol=RTOL)
        # The Strength is a variable of the export: the penalty follows it.
        [variable] = [v for v in loaded.regularizer_variables
                      if v.shape.rank == 0 and np.isclose(float(v), FACTOR)]
        variable.assign(3 * FACTOR)
        np.testing.assert_allclose(float(penalty()["regularization_loss"]),
                                   3 * expected, rtol=RTOL)

    def test_save_and_load(self):
        name = "arch_saved"
        strength = tfreg.Strength(FACTOR, name=name)
        attached = tfreg.apply(self.model, self.regularizer(strength))
        saved = sorted(path for path, kept in attached.items() if kept)
        losses = sorted(float(loss) for loss in self.model.losses)
        for save_format in self.save_formats:
            with self.subTest(save_format=save_format), \
                    tempfile.TemporaryDirectory() as directory:
                loaded = _save(self.model, directory, save_format)
                for mine, theirs in zip(self.model.weights, loaded.weights):
                    np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
                rows = tfreg.summary(loaded, print_fn=None)
                self.assertEqual(sorted(row["path"] for row in rows), saved)
                self.assertLen(loaded.losses, len(saved))
                if saved:
                    np.testing.assert_array_equal(
                        sorted(float(loss) for loss in loaded.losses), losses)
                    found = tfreg.strengths(loaded)
                    self.assertEqual(list(found), [name])
                    self.assertEqual({float(v) for v in found[name]},
                                     {np.float32(FACTOR)})


class MobileNetV2Test(_Checks, absltest.TestCase):
    build = staticmethod(architectures.mobilenet_v2)
    head = "predictions/kernel"
    selected_type = keras.layers.DepthwiseConv2D
    # SavedModel directories of the applications take minutes under tf_keras.
    save_formats = ("keras", "h5") if _keras.LEGACY else ("keras",)


class EfficientNetB0Test(_Checks, absltest.TestCase):
    build = staticmethod(architectures.efficientnet_b0)
    head = "predictions/kernel"
    selected_type = keras.layers.DepthwiseConv2D
    # XLA compiles EfficientNet's train step in minutes on 2 cores: its fit
    # runs as a graph; jit_compile is tested on the other models.
    jit_compile = False
    export = False
    save_formats = ("keras", "h5") if _keras.LEGACY else ("keras",)


class ResNet50Test(_Checks, absltest.TestCase):
    """23.6M weights: one fit and one save, no export."""
    build = staticmethod(architectures.resnet50)
    head = "predictions/kernel"
    selected_type = keras.layers.Dense
    jit_compile = False
    export = False
    save_formats = ("keras",)


class TransformerEncoderTest(_Checks, absltest.TestCase):
    build = staticmethod(architectures.transformer_encoder)
    head = "classifier/kernel"
    selected_type = keras.layers.Dense
    logits = True

    def regularizer(self, strength):
        return tfreg.L1L2(l1=strength, l2=strength)

    def reference(self, values, strength):
        return _l1(values, strength) + _l2(values, strength)

    def test_removing_one_attention_projection_warns(self):
        attached = tfreg.apply(self.model, tfreg.L2(FACTOR))
        self.assertTrue(attached["attention/query/kernel"])
        with self.assertWarnsRegex(UserWarning, "attention/query/kernel"):
            removed = tfreg.remove(self.model, include="^attention/query/")
        self.assertEqual(removed, ["attention/query/kernel"])
        self.assertLen(self.model.losses, len(self.kernels) - 1)


class NestedFunctionalTest(_Checks, absltest.TestCase):
    """A functional model called twice inside another: shared weights."""
    build = staticmethod(architectures.nested_functional)
    head = "classifier/kernel"
    selected_type = keras.layers.SeparableConv2D
    logits = True

    def expected_path(self, variable):
        inner = self.model.get_layer("features")
        if any(variable is own for own in inner.trainable_weights):
            return f"features/{_variable_path(variable)}"
        return _variable_path(variable)

    def test_shared_weights_counted_once(self):
        tfreg.apply(self.model, tfreg.L2(FACTOR))
        # Five kernels: conv, separable (depthwise and pointwise), depthwise,
        # classifier; the inner model's are used on both inputs.
        self.assertLen(self.kernels, 5)
        self.assertLen(self.model.losses, 5)
        np.testing.assert_allclose(
            _total(self.model), sum(self._penalties(self.kernels, FACTOR)),
            rtol=RTOL)


class SubclassedTest(_Checks, absltest.TestCase):
    """Its config does not hold its layers: regularizers in memory only."""
    build = staticmethod(architectures.subclassed)
    head = "head/kernel"
    selected_type = architectures.Gate
    saved = False
    logits = True
    # tf_keras cannot write a subclassed model to h5.
    save_formats = ("keras", "tf") if _keras.LEGACY else ("keras",)
    input_signature = tf.TensorSpec((None,) + architectures.SMALL_IMAGE_SHAPE,
                                    tf.float32)

    def regularizer(self, strength):
        return tfreg.L1(strength)

    def reference(self, values, strength):
        return _l1(values, strength)

    def test_strength_on_the_custom_layer_weight_alone(self):
        # The gate's kernel has no constructor argument: only `apply` puts a
        # regularizer on it, and nothing else holds this Strength.
        strength = tfreg.Strength(0.5, name="gate")
        attached = tfreg.apply(
            self.model, tfreg.L2(strength),
            include=lambda layer, variable: isinstance(
                layer, architectures.Gate))
        self.assertEqual(attached, {"gate/kernel": False})
        found = tfreg.strengths(self.model)
        self.assertEqual(list(found), ["gate"])
        self.assertIs(found["gate"][0], strength.variable)
        scheduler = tfreg.StrengthScheduler({"gate": lambda epoch: 0.25})
        scheduler.set_model(self.model)
        scheduler.on_train_begin()
        scheduler.on_epoch_begin(0)
        self.assertEqual(float(strength.variable), 0.25)
        gain = self.model.get_layer("gate").kernel.numpy()
        np.testing.assert_allclose(_total(self.model), _l2(gain, 0.25),
                                   rtol=RTOL)

    def expected_path(self, variable):
        path = _variable_path(variable)
        prefix = f"{self.model.name}/"
        return path[len(prefix):] if path.startswith(prefix) else path


if __name__ == "__main__":
    absltest.main()
