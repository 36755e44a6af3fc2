"""The battery of tests every tfreg regularizer passes.

A test file lists its regularizers as `Case`s and subclasses
`battery.battery(cases)`; each case then gets, in the active Keras generation:

- value against an independent float64 numpy reference, for every shape and
  for float16, bfloat16, float32 and float64 inputs (half inputs are compared
  with the reference on the same rounded values: tfreg accumulates in float32);
- gradient parity: autodiff against a numeric Jacobian (float64) and, when
  the case gives one, against the analytic gradient;
- eager = tf.function = tf.function(jit_compile=True), value and gradient;
- value and gradient under jit_compile on a tensor of 16M elements (the
  case's `xla_shape`, by default (2^18, 64)) against the float64 reference,
  within 1e-5 relative in float32: XLA:CPU's own sum of a large tensor errs
  by 1e-4 there (see `tfreg.penalties.total`);
- peak extra memory on that large tensor (eager with a tape, eager value,
  tf.function and jit_compile) within `memory.bound` times its bytes;
- parity with Keras' own regularizer when the case names a `twin`;
- config round trip through JSON (`tfreg.serialize`/`deserialize` and Keras'
  `deserialize_keras_object` without custom objects) and completeness (the
  config's keys are exactly the constructor's arguments);
- save/load inside a real model in every format of the Keras generation,
  with `model.losses` equal to the last bit after loading.
"""

import dataclasses
import json
import os
import tempfile
from typing import Any, Callable, Optional, Sequence

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import tfreg
from tfreg import _keras

from tools import memory

keras = _keras.keras

DTYPES = (tf.float16, tf.bfloat16, tf.float32, tf.float64)
# Relative tolerance of the value against the float64 reference, per input
# dtype. Half inputs are accumulated in float32, so they get float32's bound.
VALUE_RTOL = {tf.float16: 2e-5, tf.bfloat16: 2e-5, tf.float32: 2e-5,
              tf.float64: 1e-10}
SAVE_FORMATS = ("h5", "keras", "tf") if _keras.LEGACY else ("keras",)
# 16M elements: under XLA:CPU a plain reduce_sum of this many terms errs by
# 1e-4 to 1e-3 relative; every penalty must stay within LARGE_RTOL.
LARGE_SHAPE = (1 << 18, 64)
LARGE_RTOL = {tf.float32: 1e-5, tf.float64: 1e-10}


def normal_sample(rng, shape):
    return rng.normal(size=shape)


def unit_interval_sample(rng, shape):
    """Values in (0.05, 0.95), for penalties on sigmoid activations."""
    return rng.uniform(0.05, 0.95, size=shape)


@dataclasses.dataclass(frozen=True)
class Case:
    """One regularizer under test.

    Attributes:
      name: Readable test-case name.
      make: Builds the regularizer.
      reference: float64 numpy array -> float, independent of tfreg.
      shapes: Input shapes to test (weights: kernels; activity: (batch, ...)).
      kind: "weight" (kernel regularizer) or "activity".
      sample: (rng, shape) -> float64 array of test inputs.
      gradient: Optional float64 analytic gradient, array -> array.
      twin: Optional factory of Keras' own regularizer with the same math.
      twin_shapes: Shapes for the twin comparison (default: `shapes`).
      grad_atol: Bound on |autodiff - numeric Jacobian| in float64.
      xla_shape: The large shape checked under jit_compile against the
        reference; None skips the check (a case that another one covers).
      xla_make: Builds the regularizer for the large shape (default: make).
      xla_reference: The reference for it (default: reference).
    """
    name: str
    make: Callable[[], Any]
    reference: Callable[[np.ndarray], float]
    shapes: Sequence[tuple] = ((3, 4), (2, 3, 2, 5))
    kind: str = "weight"
    sample: Callable[..., np.ndarray] = normal_sample
    gradient: Optional[Callable[[np.ndarray], np.ndarray]] = None
    twin: Optional[Callable[[], Any]] = None
    twin_shapes: Optional[Sequence[tuple]] = None
    grad_atol: float = 1e-6
    xla_shape: Optional[tuple] = LARGE_SHAPE
    xla_make: Optional[Callable[[], Any]] = None
    xla_reference: Optional[Callable[[np.ndarray], float]] = None


def _rounded(x, dtype):
    """x as `dtype` tensor, and the same rounded values as float64 numpy."""
    tensor = tf.constant(x, dtype=dtype)
    return tensor, tf.cast(tensor, tf.float64).numpy()


def value_and_gradient(regularizer, x):
    """regularizer(x) and its gradient with respect to the tensor x."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        value = regularizer(x)
    return value, tape.gradient(value, x)


def _model(case, regularizer):
    """A tiny functional model regularized by `regularizer`."""
    inputs = keras.Input((3,))
    if case.kind == "weight":
        layer = keras.layers.Dense(4, kernel_regularizer=regularizer)
    else:
        layer = keras.layers.Dense(4, activation="sigmoid",
                                   activity_regularizer=regularizer)
    return keras.Model(inputs, layer(inputs))


def _model_penalties(model, inputs):
    """The model's regularization losses on `inputs`, as numpy."""
    model(inputs)
    return np.array([np.asarray(loss) for loss in model.losses])


def save_and_load(model, directory, save_format):
    """Saves `model` in `save_format` and loads it without custom_objects.

    tf_keras' SavedModel loader leaves the optimizer unrestored (upstream
    tensorflow/tensorflow#44670); `load_weights` on the same directory, the
    documented workaround, restores it when the optimizer builds, so it is
    built here, while `directory` still exists.
    """
    if save_format == "tf":
        path = os.path.join(directory, "saved_model")
        model.save(path, save_format="tf")
        loaded = keras.models.load_model(path)
        loaded.load_weights(path)
        if loaded.optimizer is not None:
            loaded.optimizer.build(loaded.trainable_variables)
        return loaded
    path = os.path.join(directory, f"model.{save_format}")
    model.save(path)
    return keras.models.load_model(path)


def battery(cases):
    """A `parameterized.TestCase` class running the battery on `cases`."""
    named = [(case.name, case) for case in cases]

    class Battery(parameterized.TestCase):
        """Battery generated by tests/battery.py."""

        def setUp(self):
            super().setUp()
            self.rng = np.random.default_rng(0)

        @parameterized.named_parameters(*named)
        def test_value_matches_reference(self, case):
            regularizer = case.make()
            for shape in case.shapes:
                x = case.sample(self.rng, shape)
                for dtype in DTYPES:
                    with self.subTest(shape=shape, dtype=dtype.name):
                        tensor, rounded = _rounded(x, dtype)
                        value = regularizer(tensor)
                        expected_dtype = (tf.float64 if dtype == tf.float64
                                          else tf.float32)
                        self.assertEqual(value.dtype, expected_dtype)
                        self.assertEqual(value.shape, ())
                        np.testing.assert_allclose(
                            value.numpy(), case.reference(rounded),
                            rtol=VALUE_RTOL[dtype], atol=1e-30)

        @parameterized.named_parameters(*named)
        def test_gradient_matches_numeric_and_analytic(self, case):
            regularizer = case.make()
            for shape in case.shapes:
                with self.subTest(shape=shape):
                    x = tf.constant(case.sample(self.rng, shape), tf.float64)
                    theoretical, numerical = tf.test.compute_gradient(
                        regularizer, [x])
                    np.testing.assert_allclose(
                        theoretical[0], numerical[0], atol=case.grad_atol)
                    if case.gradient is not None:
                        _, gradient = value_and_gradient(regularizer, x)
                        np.testing.assert_allclose(
                            gradient.numpy(), case.gradient(x.numpy()),
                            rtol=1e-10, atol=1e-12)

        @parameterized.named_parameters(*named)
        def test_eager_function_and_xla_agree(self, case):
            regularizer = case.make()
            for shape in case.shapes:
                with self.subTest(shape=shape):
                    x = tf.constant(case.sample(self.rng, shape), tf.float32)
                    eager = value_and_gradient(regularizer, x)
                    graph = tf.function(value_and_gradient)(regularizer, x)
                    xla = tf.function(value_and_gradient, jit_compile=True)(
                        regularizer, x)
                    for other in (graph, xla):
                        np.testing.assert_allclose(other[0], eager[0],
                                                   rtol=1e-5)
                        np.testing.assert_allclose(other[1], eager[1],
                                                   rtol=1e-5, atol=1e-7)

        large = [n for n in named if n[1].xla_shape]
        if large:  # absl rejects an empty parameter list
            @parameterized.named_parameters(*large)
            def test_xla_matches_reference_on_a_large_tensor(self, case):
                regularizer = (case.xla_make or case.make)()
                reference = case.xla_reference or case.reference
                compiled = tf.function(value_and_gradient, jit_compile=True)
                x = case.sample(self.rng, case.xla_shape)
                for dtype in (tf.float32, tf.float64):
                    with self.subTest(dtype=dtype.name):
                        tensor, rounded = _rounded(x, dtype)
                        value, gradient = compiled(regularizer, tensor)
                        np.testing.assert_allclose(
                            value.numpy(), reference(rounded),
                            rtol=LARGE_RTOL[dtype])
                        # float64 autodiff where the analytic gradient
                        # belongs to the small shapes (xla_make).
                        expected = (
                            case.gradient(rounded)
                            if case.gradient and not case.xla_make
                            else value_and_gradient(
                                regularizer, tf.constant(rounded))[1])
                        # Centering (x - loc) in float32 errs by about
                        # eps |loc|: an absolute bound at the gradient's scale.
                        np.testing.assert_allclose(
                            gradient.numpy(), expected, rtol=LARGE_RTOL[dtype],
                            atol=LARGE_RTOL[dtype] * np.abs(expected).max())

        if large:  # absl rejects an empty parameter list
            @parameterized.named_parameters(*large)
            def test_peak_memory_is_bounded(self, case):
                if not memory.supported():
                    self.skipTest("peak memory cannot be read here")
                regularizer = (case.xla_make or case.make)()
                x = tf.constant(case.sample(self.rng, case.xla_shape),
                                tf.float32)
                nbytes = 4 * x.shape.num_elements()
                bound = memory.bound(regularizer)
                graph = tf.function(value_and_gradient)
                xla = tf.function(value_and_gradient, jit_compile=True)
                for mode, call in (
                        ("eager, tape", lambda: value_and_gradient(
                            regularizer, x)),
                        ("eager, value", lambda: regularizer(x)),
                        ("tf.function", lambda: graph(regularizer, x)),
                        ("jit_compile", lambda: xla(regularizer, x))):
                    with self.subTest(mode=mode):
                        ratio = memory.peak_extra_ratio(call, nbytes)
                        self.assertLessEqual(
                            ratio, bound, f"peak extra memory {ratio:.2f}x "
                            f"the weight's {nbytes} bytes ({mode})")

        twinned = [n for n in named if n[1].twin]
        if twinned:  # absl rejects an empty parameter list
            @parameterized.named_parameters(*twinned)
            def test_matches_keras_twin(self, case):
                regularizer, twin = case.make(), case.twin()
                for shape in case.twin_shapes or case.shapes:
                    with self.subTest(shape=shape):
                        x = tf.constant(case.sample(self.rng, shape),
                                        tf.float32)
                        value, gradient = value_and_gradient(regularizer, x)
                        twin_value, twin_gradient = value_and_gradient(
                            twin, x)
                        np.testing.assert_allclose(value, twin_value,
                                                   rtol=1e-5)
                        np.testing.assert_allclose(gradient, twin_gradient,
                                                   rtol=1e-5, atol=1e-7)

        @parameterized.named_parameters(*named)
        def test_config_round_trip(self, case):
            regularizer = case.make()
            config = json.loads(json.dumps(tfreg.serialize(regularizer)))
            x = tf.constant(case.sample(self.rng, case.shapes[0]), tf.float32)
            for restored in (
                    tfreg.deserialize(config),
                    tfreg.get(config),
                    type(regularizer).from_config(regularizer.get_config()),
                    keras.saving.deserialize_keras_object(config)):
                self.assertIs(type(restored), type(regularizer))
                self.assertEqual(restored.get_config(),
                                 regularizer.get_config())
                self.assertEqual(float(restored(x)), float(regularizer(x)))

        @parameterized.named_parameters(*named)
        def test_config_is_complete(self, case):
            regularizer = case.make()
            self.assertIsInstance(regularizer, tfreg.Regularizer)
            self.assertIsInstance(regularizer, keras.regularizers.Regularizer)
            self.assertCountEqual(regularizer.get_config(),
                                  type(regularizer).config_keys())
            with self.assertRaisesRegex(ValueError, "Unknown key"):
                type(regularizer).from_config(
                    {**regularizer.get_config(), "surprise": 1})

        @parameterized.named_parameters(*named)
        def test_save_and_load_in_model(self, case):
            regularizer = case.make()
            model = _model(case, regularizer)
            inputs = tf.constant(self.rng.normal(size=(2, 3)), tf.float32)
            before = _model_penalties(model, inputs)
            for save_format in SAVE_FORMATS:
                with self.subTest(save_format=save_format), \
                        tempfile.TemporaryDirectory() as directory:
                    loaded = save_and_load(model, directory, save_format)
                    loaded_layer = loaded.layers[-1]
                    restored = (loaded_layer.kernel_regularizer
                                if case.kind == "weight"
                                else loaded_layer.activity_regularizer)
                    self.assertIs(type(restored), type(regularizer))
                    self.assertEqual(restored.get_config(),
                                     regularizer.get_config())
                    np.testing.assert_array_equal(
                        _model_penalties(loaded, inputs), before)

    return Battery
