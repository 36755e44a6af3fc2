"""Structured regularizers: the battery, argument checks and L2SP's reference."""

import base64
import json
import os
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import tfreg
from tests import battery
from tests import structured_util as util

keras = battery.keras


class StructuredTest(battery.battery(util.CASES)):

    # ---------------------------------------------------------- arguments

    @parameterized.named_parameters(
        *[(name, cls, "factor") for name, cls in util.WEIGHT_CLASSES],
        ("sparse_group_lasso_l1", tfreg.SparseGroupLasso, "l1"),
        ("decov", tfreg.DeCov, "factor"),
        ("kl_sparsity", tfreg.KLSparsity, "factor"))
    def test_rejects_bad_strengths(self, cls, argument):
        for value, error in ((-0.1, ValueError), (float("nan"), ValueError),
                             (float("inf"), ValueError), (True, TypeError),
                             ("0.1", TypeError), (None, TypeError)):
            with self.subTest(value=value):
                with self.assertRaisesRegex(error, util.escaped(
                        f"Invalid value for argument `{argument}`. Expected a "
                        f"finite float >= 0. Received: {argument}={value!r}")):
                    cls(**{argument: value})

    def test_l2sp_rejects_bad_factor(self):
        with self.assertRaisesRegex(ValueError, util.escaped(
                "Invalid value for argument `factor`. Expected a finite "
                "float >= 0. Received: factor=-1")):
            tfreg.L2SP(-1, reference=[1.0])

    @parameterized.named_parameters(
        ("group_lasso", tfreg.GroupLasso), ("sparse", tfreg.SparseGroupLasso))
    def test_rejects_non_integer_axis(self, cls):
        for value in (1.5, True, "0", None):
            with self.subTest(value=value):
                with self.assertRaisesRegex(TypeError, util.escaped(
                        "Invalid value for argument `axis`. Expected an int. "
                        f"Received: axis={value!r}")):
                    cls(axis=value)

    def test_rejects_axis_outside_the_rank(self):
        for axis in (2, -3):
            with self.subTest(axis=axis):
                with self.assertRaisesRegex(ValueError, util.escaped(
                        "Invalid value for argument `axis`. Expected an int "
                        "in [-2, 2) for a tensor of rank 2. Received: "
                        f"axis={axis} with x.shape=(3, 4)")):
                    tfreg.GroupLasso(axis=axis)(tf.ones((3, 4)))

    @parameterized.named_parameters(("spectral", tfreg.SpectralNorm),
                                    ("srip", tfreg.SRIP))
    def test_rejects_bad_power_iterations(self, cls):
        for value, error in ((0, ValueError), (-3, ValueError),
                             (2.0, TypeError), (True, TypeError)):
            with self.subTest(value=value):
                with self.assertRaisesRegex(error, util.escaped(
                        "Invalid value for argument `power_iterations`. "
                        f"Expected an int >= 1. Received: "
                        f"power_iterations={value!r}")):
                    cls(power_iterations=value)

    @parameterized.named_parameters(("spectral", tfreg.SpectralNorm),
                                    ("srip", tfreg.SRIP))
    def test_rejects_power_iterations_beyond_int32(self, cls):
        # The loop counts in int32: 2**31 ran no iteration, 2**32 + 20 ran 20.
        for value in (2**31, 2**32 + 20):
            message = util.escaped(
                "Invalid value for argument `power_iterations`. Expected an "
                f"int <= 2147483647. Received: power_iterations={value}")
            with self.subTest(value=value):
                with self.assertRaisesRegex(ValueError, message):
                    cls(power_iterations=value)
                with self.assertRaisesRegex(ValueError, message):
                    cls.from_config({"factor": 0.01,
                                     "power_iterations": value})
        self.assertEqual(cls(power_iterations=2**31 - 1).power_iterations,
                         2**31 - 1)

    def test_kl_rejects_targets_outside_the_open_unit_interval(self):
        for value, error in ((0.0, ValueError), (1.0, ValueError),
                             (1.5, ValueError), ("0.1", TypeError)):
            with self.subTest(value=value):
                with self.assertRaisesRegex(error, util.escaped(
                        "Invalid value for argument `target`. Expected a "
                        "float in the open interval (0, 1). Received: "
                        f"target={value!r}")):
                    tfreg.KLSparsity(target=value)

    @parameterized.named_parameters(*util.MATRIX_CLASSES)
    def test_matrix_penalties_reject_unsupported_ranks(self, cls):
        for shape in ((4,), (1, 1, 1, 1, 2, 3)):
            with self.subTest(shape=shape):
                with self.assertRaisesRegex(ValueError, util.escaped(
                        "Invalid value for argument `kernel`. Expected a "
                        "kernel of rank 2 (Dense) or 3 to 5 (Conv1D/2D/3D). "
                        "Received: kernel=<a tensor of shape "
                        f"{tf.TensorShape(shape)}>")):
                    cls()(tf.ones(shape))

    @parameterized.named_parameters(("decov", tfreg.DeCov),
                                    ("kl", tfreg.KLSparsity))
    def test_activity_penalties_reject_rank_one(self, cls):
        with self.assertRaisesRegex(ValueError, util.escaped(
                "Invalid value for argument `activity`. Expected activations "
                "of shape (batch, ..., features), rank >= 2. Received: "
                "activity=<a tensor of shape (4,)>")):
            cls()(tf.ones((4,)))

    def test_l2sp_rejects_bad_references(self):
        array_like = ("Invalid value for argument `reference`. Expected an "
                      "array-like of floats (numpy array, tensor, variable or "
                      "nested list). Received: reference=")
        for value in (None, "weights", True, np.array(["a"])):
            with self.subTest(value=value):
                with self.assertRaisesRegex(TypeError, util.escaped(array_like)):
                    tfreg.L2SP(reference=value)
        with self.assertRaisesRegex(ValueError, util.escaped(
                "Invalid value for argument `reference`. Expected finite "
                "values only. Received: reference=array([ 1., nan])")):
            tfreg.L2SP(reference=[1.0, np.nan])

    def test_l2sp_rejects_references_numpy_cannot_hold(self):
        deep = 1.0
        for _ in range(65):
            deep = [deep]
        for value, received in (([[1.0], [1.0, 2.0]],
                                 "reference=[[1.0], [1.0, 2.0]]"),
                                (deep, "reference=" + repr(deep)[:200])):
            with self.subTest(received=received[:30]):
                with self.assertRaisesRegex(ValueError, util.escaped(
                        "Invalid value for argument `reference`. Expected an "
                        "array-like of floats of a rectangular shape that "
                        f"numpy can hold. Received: {received}")):
                    tfreg.L2SP(reference=value)

    def test_l2sp_rejects_reference_configs_of_shapes_numpy_cannot_hold(self):
        # Zero-size shapes pass the byte-size check whatever their sizes.
        for shape, data in (([10**30, 0], ""), ([2**40, 2**40, 0], ""),
                            ([1] * 65, "AAAAAA==")):
            with self.subTest(rank=len(shape)):
                with self.assertRaisesRegex(ValueError, util.escaped(
                        "Invalid value for argument `reference`. Expected a "
                        "shape that numpy can hold. Received: reference=<a "
                        f"config of shape {str(shape)[:200]}")):
                    tfreg.L2SP(reference={"dtype": "float32", "shape": shape,
                                          "data": data})

    def test_l2sp_rejects_bad_reference_configs(self):
        good = tfreg.L2SP(reference=np.ones((2, 3), np.float32)).get_config()[
            "reference"]
        prefix = "Invalid value for argument `reference`. Expected "
        bad = [
            ({**good, "extra": 1},
             "a dict with exactly the keys ['dtype', 'shape', 'data']"),
            ({**good, "dtype": "int32"},
             "a dtype in ('float32', 'float64')"),
            ({**good, "dtype": "object"},
             "a dtype in ('float32', 'float64')"),
            ({**good, "shape": [2, -3]},
             "a shape given as a list of non-negative ints"),
            ({**good, "shape": "2,3"},
             "a shape given as a list of non-negative ints"),
            ({**good, "shape": [3, 3]},
             "base64 data of 36 bytes for shape [3, 3] and dtype float32"),
            ({**good, "shape": [1 << 20, 1 << 20]},
             f"at most {1 << 28} bytes of data"),
            ({**good, "data": "!" * len(good["data"])}, "valid base64 data"),
            ({**good, "data": 7},
             "base64 data of 24 bytes for shape [2, 3] and dtype float32"),
            ({**good, "data": base64.b64encode(
                np.full(6, np.inf, np.float32).tobytes()).decode()},
             "finite values only"),
        ]
        for config, expected in bad:
            with self.subTest(expected=expected):
                with self.assertRaisesRegex(ValueError,
                                            util.escaped(prefix + expected)):
                    tfreg.L2SP(reference=config)

    def test_l2sp_rejects_kernels_of_another_shape(self):
        with self.assertRaisesRegex(ValueError, util.escaped(
                "Invalid value for argument `x`. Expected a tensor of the "
                "shape of `reference`, (3, 4). Received: x=<a tensor of "
                "shape (4, 3)>")):
            tfreg.L2SP(reference=util.REFERENCE_34)(tf.ones((4, 3)))

    # ------------------------------------------------ L2SP state and helper

    def test_l2sp_reference_survives_json_bit_for_bit(self):
        rng = np.random.default_rng(1)
        specials = [0.0, -0.0, 5e-324, -1e-310, 1.7976931348623157e308,
                    np.nextafter(1.0, 2.0)]
        references = {
            "float64": np.concatenate([rng.normal(size=58), specials]),
            "float32": np.concatenate([rng.normal(size=58), [
                0.0, -0.0, 1e-45, -1e-40, 3.4028235e38, 1.0000001]]).astype(
                    np.float32).reshape(2, 4, 8),
            "scalar": np.float32(0.1),
        }
        for name, reference in references.items():
            with self.subTest(name):
                regularizer = tfreg.L2SP(0.1, reference=reference)
                text = json.dumps(tfreg.serialize(regularizer))
                restored = tfreg.deserialize(json.loads(text))
                self.assertEqual(restored.reference.dtype, reference.dtype)
                self.assertEqual(restored.reference.shape, reference.shape)
                self.assertEqual(restored.reference.tobytes(),
                                 np.asarray(reference).tobytes())
                self.assertFalse(restored.reference.flags.writeable)

    def test_l2sp_accepts_tensors_variables_and_half_types_exactly(self):
        values = np.random.default_rng(2).normal(size=(3, 2))
        for dtype in (tf.float16, tf.bfloat16, tf.float32):
            with self.subTest(dtype=dtype.name):
                tensor = tf.constant(values, dtype)
                for reference in (tensor, tf.Variable(tensor)):
                    regularizer = tfreg.L2SP(1.0, reference=reference)
                    self.assertEqual(regularizer.reference.dtype, np.float32)
                    np.testing.assert_array_equal(
                        regularizer.reference,
                        tf.cast(tensor, tf.float32).numpy())
                    self.assertEqual(float(regularizer(tensor)), 0.0)
        self.assertEqual(
            tfreg.L2SP(reference=[[1, 2]]).get_config()["reference"]["dtype"],
            "float64")  # Python ints are int64: float64 holds them exactly.
        self.assertEqual(
            repr(tfreg.L2SP(0.5, reference=np.zeros((2, 3)))),
            "L2SP(factor=0.5, reference=<float64 array of shape (2, 3)>)")

    def _kernel_model(self):
        inner = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)],
                                 name="inner")
        inputs = keras.Input((5, 5, 2))
        hidden = keras.layers.Conv2D(3, 3, name="conv")(inputs)
        hidden = keras.layers.GlobalAveragePooling2D()(hidden)
        hidden = inner(hidden)
        outputs = keras.layers.Dense(1, name="head")(hidden)
        return keras.Model(inputs, outputs)

    def test_attach_l2sp_regularizes_every_kernel_and_saves(self):
        keras.utils.set_random_seed(0)
        model = self._kernel_model()
        data = np.random.default_rng(3).normal(size=(8, 5, 5, 2))
        targets = np.random.default_rng(4).normal(size=(8, 1))
        inner = model.get_layer("inner").layers[0]
        layers = [model.get_layer("conv"), model.get_layer("head"), inner]
        self.assertEqual(tfreg.attach_l2sp(model, 0.5),
                         {"conv/kernel": True, "head/kernel": True,
                          f"inner/{inner.name}/kernel": True})
        references = [layer.kernel.numpy() for layer in layers]
        # Every kernel starts at its reference: every penalty is exactly 0.
        losses = battery._model_penalties(model, data[:2])
        self.assertEqual(losses.shape, (3,))
        np.testing.assert_array_equal(losses, 0.0)
        # Each penalty is bound to its own layer's kernel (no late binding).
        for index, layer in enumerate(layers):
            layer.kernel.assign(references[index] + 0.1 * (index + 1.0))
        expected = sorted(0.5 * (0.1 * (index + 1.0)) ** 2
                          * references[index].size
                          for index in range(len(layers)))
        np.testing.assert_allclose(
            sorted(battery._model_penalties(model, data[:2])), expected,
            rtol=1e-6)
        with self.assertRaisesRegex(ValueError, "already has a regularizer "
                                    r"\(L2SP.*does not stack"):
            tfreg.attach_l2sp(model)
        # It trains compiled; the penalty is part of the loss.
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse",
                      jit_compile=True)
        history = model.fit(data, targets, epochs=3, batch_size=8, verbose=0)
        self.assertTrue(np.all(np.isfinite(history.history["loss"])))
        self.assertGreater(history.history["loss"][0],
                           float(np.sum(expected)) * 0.9)
        before = battery._model_penalties(model, data[:2])
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "model.keras")
            model.save(path)
            loaded = keras.models.load_model(path)
        np.testing.assert_array_equal(
            battery._model_penalties(loaded, data[:2]), before)
        head = loaded.get_layer("head").kernel_regularizer
        self.assertIsInstance(head, tfreg.L2SP)
        self.assertEqual(head.reference.tobytes(),
                         model.get_layer("head").kernel_regularizer
                         .reference.tobytes())

    def test_attach_l2sp_retraces_a_trained_model(self):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
        data, targets = np.ones((4, 3)), np.zeros((4, 1))
        plain = model.evaluate(data, targets, verbose=0)
        tfreg.attach_l2sp(model, 2.0)
        model.layers[0].kernel.assign_add(np.ones((3, 1)))
        with_penalty = model.evaluate(data, targets, verbose=0)
        self.assertGreater(with_penalty, plain + 2.0 * 3 * 0.99)

    def test_attach_l2sp_needs_a_built_model(self):
        model = keras.Sequential([keras.layers.Dense(2)])
        with self.assertRaisesRegex(ValueError, "Expected a built model"):
            tfreg.attach_l2sp(model)


if __name__ == "__main__":
    absltest.main()
