"""Structured regularizers: group lasso, orthogonality, spectral and nuclear
norms, L2-SP, DeCov, KL sparsity."""

import base64
import json
import os
import re
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import tfreg
from tests import battery

keras = battery.keras

KL_EPSILON = 1e-6


# ---------------------------------------------------------------- references
# Independent float64 numpy implementations (np.linalg.svd / eigh).

def _matrix(w):
    return w.reshape(-1, w.shape[-1])


def _groups(w, axis):
    return np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)


def group_lasso_reference(factor, axis=-1, l1=0.0):
    def reference(w):
        groups = _groups(w, axis)
        return (l1 * np.abs(w).sum() + factor * np.sqrt(groups.shape[1])
                * np.linalg.norm(groups, axis=1).sum())
    return reference


def group_lasso_gradient(factor, axis=-1, l1=0.0):
    def gradient(w):
        moved = np.moveaxis(w, axis, 0)
        groups = moved.reshape(moved.shape[0], -1)
        norms = np.linalg.norm(groups, axis=1, keepdims=True)
        g = factor * np.sqrt(groups.shape[1]) * groups / norms
        return l1 * np.sign(w) + np.moveaxis(g.reshape(moved.shape), 0, axis)
    return gradient


def _gram_minus_identity(m):
    columns = m.shape[1] <= m.shape[0]
    gram = m.T @ m if columns else m @ m.T
    return gram - np.eye(len(gram)), columns


def soft_orthogonal_reference(factor):
    def reference(w):
        return factor * np.square(_gram_minus_identity(_matrix(w))[0]).sum()
    return reference


def soft_orthogonal_gradient(factor):
    def gradient(w):
        m = _matrix(w)
        a, columns = _gram_minus_identity(m)
        g = 4 * factor * (m @ a if columns else a @ m)
        return g.reshape(w.shape)
    return gradient


def spectral_reference(factor):
    return lambda w: factor * np.linalg.svd(_matrix(w), compute_uv=False)[0]**2


def spectral_gradient(factor):
    def gradient(w):
        u, s, vt = np.linalg.svd(_matrix(w), full_matrices=False)
        return (2 * factor * s[0] * np.outer(u[:, 0], vt[0])).reshape(w.shape)
    return gradient


def srip_reference(factor):
    def reference(w):
        a, _ = _gram_minus_identity(_matrix(w))
        return factor * np.abs(np.linalg.eigvalsh(a)).max()
    return reference


def srip_gradient(factor):
    def gradient(w):
        m = _matrix(w)
        a, columns = _gram_minus_identity(m)
        values, vectors = np.linalg.eigh(a)
        top = np.argmax(np.abs(values))
        e = vectors[:, top]
        outer = np.sign(values[top]) * 2 * factor * np.outer(e, e)
        return (m @ outer if columns else outer @ m).reshape(w.shape)
    return gradient


def nuclear_reference(factor):
    return lambda w: factor * np.linalg.svd(_matrix(w), compute_uv=False).sum()


def nuclear_gradient(factor):
    def gradient(w):
        u, _, vt = np.linalg.svd(_matrix(w), full_matrices=False)
        return (factor * u @ vt).reshape(w.shape)
    return gradient


def _covariance(h):
    h = h.reshape(-1, h.shape[-1])
    centered = h - h.mean(axis=0)
    return centered, np.cov(h, rowvar=False, bias=True)


def decov_reference(factor):
    def reference(h):
        _, c = _covariance(h)
        off_diagonal = c - np.diag(np.diag(c))
        return factor * 0.5 * np.square(off_diagonal).sum()
    return reference


def decov_gradient(factor):
    def gradient(h):
        centered, c = _covariance(h)
        off = c - np.diag(np.diag(c))
        return (factor * 2 / len(centered) * centered @ off).reshape(h.shape)
    return gradient


def kl_reference(factor, target, upper=1 - KL_EPSILON):
    def reference(h):
        q = np.clip(h.reshape(-1, h.shape[-1]).mean(axis=0), KL_EPSILON,
                    upper)
        p = target
        return factor * np.sum(p * np.log(p / q)
                               + (1 - p) * np.log((1 - p) / (1 - q)))
    return reference


def kl_gradient(factor, target):
    def gradient(h):
        flat = h.reshape(-1, h.shape[-1])
        q = flat.mean(axis=0)  # test samples stay inside the clip range
        per_unit = factor * (-target / q + (1 - target) / (1 - q)) / len(flat)
        return np.broadcast_to(per_unit, flat.shape).reshape(h.shape)
    return gradient


def gapped_sample(rng, shape):
    """Normal kernels whose top singular value is >= 2x the next and >= 3.

    Power iterations then converge to float64 precision within 40 steps,
    also for SRIP's G - I (its top |eigenvalue| is >= 4x the next).
    """
    x = rng.normal(size=shape)
    u, s, vt = np.linalg.svd(_matrix(x), full_matrices=False)
    s[0] = 2 * max(s[1] if len(s) > 1 else 0.0, 1.0) + 1
    return (u * s @ vt).reshape(shape)


REFERENCE_34 = np.random.default_rng(7).normal(size=(3, 4))
REFERENCE_34_F32 = REFERENCE_34.astype(np.float32)
WEIGHT_SHAPES = ((3, 4), (5, 3), (2, 3, 2, 5), (1, 1))
ACTIVITY_SHAPES = ((6, 4), (3, 2, 5))

CASES = [
    battery.Case(
        "group_lasso", lambda: tfreg.GroupLasso(0.3),
        reference=group_lasso_reference(0.3),
        gradient=group_lasso_gradient(0.3), shapes=WEIGHT_SHAPES),
    battery.Case(
        "group_lasso_inputs", lambda: tfreg.GroupLasso(0.3, axis=-2),
        reference=group_lasso_reference(0.3, axis=-2),
        gradient=group_lasso_gradient(0.3, axis=-2),
        shapes=((3, 4), (2, 3, 2, 5), (2, 2, 2, 3, 4))),
    battery.Case(
        "sparse_group_lasso", lambda: tfreg.SparseGroupLasso(0.2, 0.3, axis=0),
        reference=group_lasso_reference(0.3, axis=0, l1=0.2),
        gradient=group_lasso_gradient(0.3, axis=0, l1=0.2),
        shapes=WEIGHT_SHAPES),
    battery.Case(
        "soft_orthogonal", lambda: tfreg.SoftOrthogonal(0.3),
        reference=soft_orthogonal_reference(0.3),
        gradient=soft_orthogonal_gradient(0.3), shapes=WEIGHT_SHAPES,
        # Central differences (step 2^-10) of a quartic: error ~ 1e-5.
        grad_atol=1e-4),
    battery.Case(
        "spectral_norm", lambda: tfreg.SpectralNorm(0.3, power_iterations=40),
        reference=spectral_reference(0.3), gradient=spectral_gradient(0.3),
        shapes=WEIGHT_SHAPES, sample=gapped_sample, grad_atol=1e-5),
    battery.Case(
        "srip", lambda: tfreg.SRIP(0.3, power_iterations=40),
        reference=srip_reference(0.3), gradient=srip_gradient(0.3),
        shapes=WEIGHT_SHAPES, sample=gapped_sample, grad_atol=1e-5),
    battery.Case(
        "nuclear_norm", lambda: tfreg.NuclearNorm(0.3),
        reference=nuclear_reference(0.3), gradient=nuclear_gradient(0.3),
        shapes=WEIGHT_SHAPES),
    battery.Case(
        "l2sp", lambda: tfreg.L2SP(0.3, reference=REFERENCE_34),
        reference=lambda w: 0.3 * np.square(w - REFERENCE_34).sum(),
        gradient=lambda w: 0.6 * (w - REFERENCE_34), shapes=((3, 4),)),
    battery.Case(
        "l2sp_float32_reference",
        lambda: tfreg.L2SP(0.3, reference=REFERENCE_34_F32),
        reference=lambda w: 0.3 * np.square(
            w - REFERENCE_34_F32.astype(np.float64)).sum(),
        gradient=lambda w: 0.6 * (w - REFERENCE_34_F32.astype(np.float64)),
        shapes=((3, 4),)),
    battery.Case(
        "decov", lambda: tfreg.DeCov(0.3), kind="activity",
        reference=decov_reference(0.3), gradient=decov_gradient(0.3),
        shapes=ACTIVITY_SHAPES),
    battery.Case(
        "kl_sparsity", lambda: tfreg.KLSparsity(0.3, target=0.1),
        kind="activity", reference=kl_reference(0.3, 0.1),
        gradient=kl_gradient(0.3, 0.1), shapes=ACTIVITY_SHAPES,
        sample=battery.unit_interval_sample),
]

WEIGHT_CLASSES = (
    ("group_lasso", tfreg.GroupLasso), ("sparse_group_lasso",
                                        tfreg.SparseGroupLasso),
    ("soft_orthogonal", tfreg.SoftOrthogonal),
    ("spectral_norm", tfreg.SpectralNorm), ("srip", tfreg.SRIP),
    ("nuclear_norm", tfreg.NuclearNorm))
MATRIX_CLASSES = WEIGHT_CLASSES[2:]


# One compiled function: calls with the same regularizer object and input
# shape reuse the XLA executable.
_XLA_VALUE_AND_GRADIENT = tf.function(battery.value_and_gradient,
                                      jit_compile=True)


def _all_modes(regularizer, x):
    """(value, gradient) as numpy, eagerly and under XLA."""
    eager = battery.value_and_gradient(regularizer, x)
    xla = _XLA_VALUE_AND_GRADIENT(regularizer, x)
    return [(v.numpy(), g.numpy()) for v, g in (eager, xla)]


def _escaped(text):
    return re.escape(text)


class StructuredTest(battery.battery(CASES)):

    # ---------------------------------------------------------- arguments

    @parameterized.named_parameters(
        *[(name, cls, "factor") for name, cls in WEIGHT_CLASSES],
        ("sparse_group_lasso_l1", tfreg.SparseGroupLasso, "l1"),
        ("decov", tfreg.DeCov, "factor"),
        ("kl_sparsity", tfreg.KLSparsity, "factor"))
    def test_rejects_bad_strengths(self, cls, argument):
        for value, error in ((-0.1, ValueError), (float("nan"), ValueError),
                             (float("inf"), ValueError), (True, TypeError),
                             ("0.1", TypeError), (None, TypeError)):
            with self.subTest(value=value):
                with self.assertRaisesRegex(error, _escaped(
                        f"Invalid value for argument `{argument}`. Expected a "
                        f"finite float >= 0. Received: {argument}={value!r}")):
                    cls(**{argument: value})

    def test_l2sp_rejects_bad_factor(self):
        with self.assertRaisesRegex(ValueError, _escaped(
                "Invalid value for argument `factor`. Expected a finite "
                "float >= 0. Received: factor=-1")):
            tfreg.L2SP(-1, reference=[1.0])

    @parameterized.named_parameters(
        ("group_lasso", tfreg.GroupLasso), ("sparse", tfreg.SparseGroupLasso))
    def test_rejects_non_integer_axis(self, cls):
        for value in (1.5, True, "0", None):
            with self.subTest(value=value):
                with self.assertRaisesRegex(TypeError, _escaped(
                        "Invalid value for argument `axis`. Expected an int. "
                        f"Received: axis={value!r}")):
                    cls(axis=value)

    def test_rejects_axis_outside_the_rank(self):
        for axis in (2, -3):
            with self.subTest(axis=axis):
                with self.assertRaisesRegex(ValueError, _escaped(
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
                with self.assertRaisesRegex(error, _escaped(
                        "Invalid value for argument `power_iterations`. "
                        f"Expected an int >= 1. Received: "
                        f"power_iterations={value!r}")):
                    cls(power_iterations=value)

    @parameterized.named_parameters(("spectral", tfreg.SpectralNorm),
                                    ("srip", tfreg.SRIP))
    def test_rejects_power_iterations_beyond_int32(self, cls):
        # The loop counts in int32: 2**31 ran no iteration, 2**32 + 20 ran 20.
        for value in (2**31, 2**32 + 20):
            message = _escaped(
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
                with self.assertRaisesRegex(error, _escaped(
                        "Invalid value for argument `target`. Expected a "
                        "float in the open interval (0, 1). Received: "
                        f"target={value!r}")):
                    tfreg.KLSparsity(target=value)

    @parameterized.named_parameters(*MATRIX_CLASSES)
    def test_matrix_penalties_reject_unsupported_ranks(self, cls):
        for shape in ((4,), (1, 1, 1, 1, 2, 3)):
            with self.subTest(shape=shape):
                with self.assertRaisesRegex(ValueError, _escaped(
                        "Expected a kernel of rank 2 (Dense) or 3 to 5 "
                        "(Conv1D/2D/3D) for `kernel`. Received: "
                        f"kernel.shape={tf.TensorShape(shape)}")):
                    cls()(tf.ones(shape))

    @parameterized.named_parameters(("decov", tfreg.DeCov),
                                    ("kl", tfreg.KLSparsity))
    def test_activity_penalties_reject_rank_one(self, cls):
        with self.assertRaisesRegex(ValueError, _escaped(
                "Expected activations of shape (batch, ..., features), rank "
                ">= 2. Received: activity.shape=(4,)")):
            cls()(tf.ones((4,)))

    def test_l2sp_rejects_bad_references(self):
        array_like = ("Invalid value for argument `reference`. Expected an "
                      "array-like of floats (numpy array, tensor, variable or "
                      "nested list). Received: reference=")
        for value in (None, "weights", True, np.array(["a"])):
            with self.subTest(value=value):
                with self.assertRaisesRegex(TypeError, _escaped(array_like)):
                    tfreg.L2SP(reference=value)
        with self.assertRaisesRegex(ValueError, _escaped(
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
                with self.assertRaisesRegex(ValueError, _escaped(
                        "Invalid value for argument `reference`. Expected an "
                        "array-like of floats of a rectangular shape that "
                        f"numpy can hold. Received: {received}")):
                    tfreg.L2SP(reference=value)

    def test_l2sp_rejects_reference_configs_of_shapes_numpy_cannot_hold(self):
        # Zero-size shapes pass the byte-size check whatever their sizes.
        for shape, data in (([10**30, 0], ""), ([2**40, 2**40, 0], ""),
                            ([1] * 65, "AAAAAA==")):
            with self.subTest(rank=len(shape)):
                with self.assertRaisesRegex(ValueError, _escaped(
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
                                            _escaped(prefix + expected)):
                    tfreg.L2SP(reference=config)

    def test_l2sp_rejects_kernels_of_another_shape(self):
        with self.assertRaisesRegex(ValueError, _escaped(
                "Expected a tensor of the shape of `reference`, (3, 4), for "
                "L2SP. Received: x.shape=(4, 3)")):
            tfreg.L2SP(reference=REFERENCE_34)(tf.ones((4, 3)))

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

    # ------------------------------------------------------ degenerate inputs

    def assertFiniteEverywhere(self, regularizer, x):
        results = _all_modes(regularizer, x)
        for value, gradient in results:
            self.assertTrue(np.isfinite(value), value)
            self.assertTrue(np.all(np.isfinite(gradient)), gradient)
        return results

    @parameterized.named_parameters(*WEIGHT_CLASSES)
    def test_zero_kernels_give_zero_or_exact_value_and_finite_gradient(
            self, cls):
        regularizer = cls()
        for shape in ((4, 3), (2, 2, 3, 5), (1, 1)):
            with self.subTest(shape=shape):
                x = tf.zeros(shape)
                m = int(np.prod(shape[:-1]))
                expected = (min(m, shape[-1]) * 0.01
                            if cls is tfreg.SoftOrthogonal else
                            0.01 if cls is tfreg.SRIP else 0.0)
                for value, gradient in self.assertFiniteEverywhere(
                        regularizer, x):
                    np.testing.assert_allclose(value, expected, rtol=1e-6)
                    np.testing.assert_array_equal(gradient, 0.0)

    @parameterized.named_parameters(
        *WEIGHT_CLASSES,
        ("l2sp", lambda factor: tfreg.L2SP(factor, reference=np.ones((2, 2)))),
        ("decov", tfreg.DeCov),
        ("kl_sparsity", lambda factor: tfreg.KLSparsity(factor, target=0.1)))
    def test_nan_and_inf_are_not_masked(self, make):
        # As sum(x^2): NaN anywhere gives NaN, eagerly and under XLA (whose
        # max skips NaN). An inf gives inf, or NaN where inf - inf or 0 * inf
        # arises on the way (Gram matrix, SVD, power iterations, covariance).
        regularizer = make(1.0)
        inf_gives_inf = isinstance(regularizer, (
            tfreg.GroupLasso, tfreg.SparseGroupLasso, tfreg.L2SP,
            tfreg.KLSparsity))
        nan, inf = np.nan, np.inf
        for kernel in ([[nan, 0.1], [0.2, 0.3]], [[nan, 0.0], [0.0, 0.0]],
                       [[nan, nan], [nan, nan]], [[nan, inf], [0.0, 0.1]]):
            with self.subTest(kernel=kernel):
                for value, _ in _all_modes(regularizer, tf.constant(kernel)):
                    self.assertTrue(np.isnan(value), value)
        for kernel in ([[inf, 0.1], [0.2, 0.3]], [[-inf, 0.0], [0.0, 0.0]]):
            with self.subTest(kernel=kernel):
                for value, _ in _all_modes(regularizer, tf.constant(kernel)):
                    if inf_gives_inf:
                        self.assertEqual(value, inf)
                    else:
                        self.assertFalse(np.isfinite(value), value)

    @parameterized.named_parameters(*WEIGHT_CLASSES)
    def test_weights_with_a_zero_length_axis_give_zero(self, cls):
        regularizers = [cls(1.0)]
        if cls is tfreg.GroupLasso:
            regularizers += [cls(1.0, axis=axis) for axis in (0, 1, -2)]
        for shape in ((3, 0), (0, 3), (0, 0), (2, 0, 3), (3, 3, 2, 0),
                      (3, 3, 0, 4)):
            for regularizer in regularizers:
                with self.subTest(shape=shape, regularizer=repr(regularizer)):
                    for value, gradient in self.assertFiniteEverywhere(
                            regularizer, tf.zeros(shape)):
                        self.assertEqual(value, 0.0)
                        self.assertEqual(gradient.shape, shape)
        if cls is tfreg.GroupLasso:
            for value, _ in _all_modes(cls(1.0), tf.zeros((0,))):
                self.assertEqual(value, 0.0)

    def test_l2sp_of_an_empty_reference_is_zero(self):
        for shape in ((0,), (3, 0)):
            regularizer = tfreg.L2SP(1.0, reference=np.zeros(shape))
            for value, _ in self.assertFiniteEverywhere(regularizer,
                                                        tf.zeros(shape)):
                self.assertEqual(value, 0.0)

    @parameterized.named_parameters(("decov", tfreg.DeCov),
                                    ("kl", tfreg.KLSparsity))
    def test_activity_penalties_of_no_samples_or_features_are_zero(self, cls):
        for shape in ((0, 3), (3, 0), (0, 0), (2, 0, 3), (2, 3, 0)):
            with self.subTest(shape=shape):
                for value, gradient in self.assertFiniteEverywhere(
                        cls(1.0), tf.zeros(shape)):
                    self.assertEqual(value, 0.0)
                    self.assertEqual(gradient.shape, shape)

    def test_zero_group_has_zero_gradient(self):
        w = np.random.default_rng(5).normal(size=(2, 3, 4)).astype(np.float32)
        w[..., 1] = 0.0
        for regularizer in (tfreg.GroupLasso(1.0),
                            tfreg.SparseGroupLasso(0.5, 1.0)):
            for value, gradient in self.assertFiniteEverywhere(
                    regularizer, tf.constant(w)):
                np.testing.assert_array_equal(gradient[..., 1], 0.0)
                self.assertTrue(np.all(gradient[..., 0] != 0.0))

    def test_rank_deficient_and_repeated_singular_values(self):
        rng = np.random.default_rng(6)
        q, _ = np.linalg.qr(rng.normal(size=(6, 3)))
        kernels = {
            # Rank 1 (singular values s, 0, 0).
            "rank_one": np.outer(rng.normal(size=6), rng.normal(size=3)),
            # All three singular values equal to 2.
            "repeated": 2.0 * q,
            # Orthonormal columns: SRIP and SoftOrthogonal at their minimum.
            "orthonormal": q,
        }
        regularizers = {name: cls(1.0) for name, cls in MATRIX_CLASSES}
        for name, kernel in kernels.items():
            x = tf.constant(kernel, tf.float32)
            for cls_name, regularizer in regularizers.items():
                with self.subTest(kernel=name, cls=cls_name):
                    self.assertFiniteEverywhere(regularizer, x)
        # U V^T of 2Q is Q: the nuclear gradient is exact with repeated values.
        for _, gradient in _all_modes(regularizers["nuclear_norm"],
                                      tf.constant(2.0 * q, tf.float32)):
            np.testing.assert_allclose(gradient, q, atol=1e-5)
        for value, _ in _all_modes(regularizers["spectral_norm"],
                                   tf.constant(2.0 * q, tf.float32)):
            np.testing.assert_allclose(value, 4.0, rtol=1e-5)
        for value, gradient in _all_modes(regularizers["srip"],
                                          tf.constant(q, tf.float32)):
            self.assertLess(value, 1e-5)

    @parameterized.named_parameters(*WEIGHT_CLASSES)
    def test_huge_and_tiny_magnitudes(self, cls):
        # Scales whose exact penalty is a normal float32 number.
        degree = {tfreg.GroupLasso: 1, tfreg.SparseGroupLasso: 1,
                  tfreg.NuclearNorm: 1, tfreg.SpectralNorm: 2,
                  tfreg.SoftOrthogonal: 4, tfreg.SRIP: 2}[cls]
        reference = {
            tfreg.GroupLasso: group_lasso_reference(1.0),
            tfreg.SparseGroupLasso: group_lasso_reference(1.0, l1=1.0),
            tfreg.NuclearNorm: nuclear_reference(1.0),
            tfreg.SpectralNorm: spectral_reference(1.0),
            tfreg.SoftOrthogonal: soft_orthogonal_reference(1.0),
            tfreg.SRIP: srip_reference(1.0)}[cls]
        regularizer = (cls(1.0, 1.0) if cls is tfreg.SparseGroupLasso
                       else cls(1.0))
        base = gapped_sample(np.random.default_rng(8), (5, 3))
        for scale in (1e32 ** (1 / degree), 1e-30 ** (1 / degree)):
            with self.subTest(scale=scale):
                w = (base * scale).astype(np.float32)
                results = self.assertFiniteEverywhere(regularizer,
                                                      tf.constant(w))
                for value, gradient in results:
                    np.testing.assert_allclose(
                        value, reference(w.astype(np.float64)), rtol=1e-4)
                    self.assertGreater(np.abs(gradient).max(), 0.0)

    def test_kl_sparsity_is_finite_at_zero_and_one(self):
        for fill in (0.0, 1.0):
            x = tf.fill((4, 3), fill)
            for value, gradient in self.assertFiniteEverywhere(
                    tfreg.KLSparsity(1.0, target=0.05), x):
                # float32 rounds the upper clip 1 - 1e-6 to 0.99999899.
                reference = kl_reference(
                    1.0, 0.05, upper=float(np.float32(1 - KL_EPSILON)))
                np.testing.assert_allclose(
                    value, reference(np.full((4, 3), fill)), rtol=1e-5)

    def test_decov_of_a_single_sample_and_constant_features_is_zero(self):
        for x in (tf.ones((1, 4)), tf.ones((5, 4))):
            for value, gradient in self.assertFiniteEverywhere(
                    tfreg.DeCov(1.0), x):
                self.assertEqual(value, 0.0)
                np.testing.assert_array_equal(gradient, 0.0)

    # --------------------------------------------------------- real models

    def test_trains_in_dense_and_conv2d_models_with_xla(self):
        keras.utils.set_random_seed(0)
        rng = np.random.default_rng(9)
        conv_shape, dense_shape = (3, 3, 2, 3), (3, 2)

        def weight_regularizers(shape):
            return [tfreg.GroupLasso(0.01), tfreg.SparseGroupLasso(0.01, 0.01),
                    tfreg.SoftOrthogonal(0.01), tfreg.SpectralNorm(0.01),
                    tfreg.SRIP(0.01), tfreg.NuclearNorm(0.01),
                    tfreg.L2SP(0.01, reference=rng.normal(size=shape))]

        inputs = keras.Input((6, 6, 2))
        branches = []
        for index, (conv_reg, dense_reg) in enumerate(zip(
                weight_regularizers(conv_shape),
                weight_regularizers(dense_shape))):
            hidden = keras.layers.Conv2D(
                3, 3, kernel_regularizer=conv_reg, name=f"conv{index}")(inputs)
            hidden = keras.layers.GlobalAveragePooling2D()(hidden)
            activity = (tfreg.DeCov(0.01) if index % 2 else
                        tfreg.KLSparsity(0.01, target=0.1))
            branches.append(keras.layers.Dense(
                2, activation="sigmoid", kernel_regularizer=dense_reg,
                activity_regularizer=activity, name=f"dense{index}")(hidden))
        outputs = keras.layers.Dense(1)(keras.layers.Concatenate()(branches))
        model = keras.Model(inputs, outputs)
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse",
                      jit_compile=True)
        data = rng.normal(size=(16, 6, 6, 2)).astype(np.float32)
        targets = rng.normal(size=(16, 1)).astype(np.float32)
        history = model.fit(data, targets, epochs=2, batch_size=8, verbose=0)
        self.assertTrue(np.all(np.isfinite(history.history["loss"])))
        before = battery._model_penalties(model, data[:4])
        self.assertEqual(before.shape, (21,))  # 7 conv, 7 dense, 7 activity
        self.assertTrue(np.all(np.isfinite(before)))
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "model.keras")
            model.save(path)
            loaded = keras.models.load_model(path)
        np.testing.assert_array_equal(
            battery._model_penalties(loaded, data[:4]), before)

    # ------------------------------------------------------- does its job

    def _fit_linear(self, regularizer, target_kernel, start=None, steps=300,
                    learning_rate=0.05, noise=0.3):
        """Gradient descent on mse(X W, X W_true + noise) + penalty(W)."""
        rng = np.random.default_rng(10)
        inputs = tf.constant(rng.normal(size=(24, 8)), tf.float32)
        targets = inputs @ tf.constant(target_kernel, tf.float32) + noise * \
            tf.constant(rng.normal(size=(24, target_kernel.shape[1])),
                        tf.float32)
        start = (rng.normal(size=target_kernel.shape) * 0.5 if start is None
                 else start)
        kernel = tf.Variable(tf.constant(start, tf.float32))

        @tf.function(jit_compile=True)
        def train():
            for _ in tf.range(steps):
                with tf.GradientTape() as tape:
                    loss = tf.reduce_mean(tf.square(inputs @ kernel - targets))
                    if regularizer is not None:
                        loss += regularizer(kernel)
                kernel.assign_sub(learning_rate * tape.gradient(loss, kernel))

        train()
        return kernel.numpy().astype(np.float64)

    def _compare(self, regularizer, target_kernel, metric, **kwargs):
        plain = metric(self._fit_linear(None, target_kernel, **kwargs))
        penalized = metric(self._fit_linear(regularizer, target_kernel,
                                            **kwargs))
        return plain, penalized

    def test_group_lasso_drives_whole_groups_to_zero(self):
        target = np.random.default_rng(11).normal(size=(8, 6))
        target[:, 3:] = 0.0
        for regularizer in (tfreg.GroupLasso(0.05),
                            tfreg.SparseGroupLasso(0.002, 0.05)):
            def irrelevant(w):
                return np.linalg.norm(w[:, 3:], axis=0).max()
            plain, penalized = self._compare(regularizer, target, irrelevant)
            self.assertLess(penalized, 0.1 * plain)

    def test_soft_orthogonal_and_srip_lower_the_distance_to_orthonormal(self):
        target = np.random.default_rng(12).normal(size=(8, 4))

        def distance(w):
            return np.linalg.norm(w.T @ w - np.eye(4))

        plain, penalized = self._compare(tfreg.SoftOrthogonal(0.1), target,
                                         distance)
        self.assertLess(penalized, 0.5 * plain)

        def spectral_distance(w):
            return np.abs(np.linalg.eigvalsh(w.T @ w - np.eye(4))).max()

        plain, penalized = self._compare(tfreg.SRIP(0.5), target,
                                         spectral_distance)
        self.assertLess(penalized, 0.7 * plain)

    def test_spectral_norm_lowers_the_top_singular_value(self):
        target = np.random.default_rng(13).normal(size=(8, 4))

        def top(w):
            return np.linalg.svd(w, compute_uv=False)[0]

        plain, penalized = self._compare(tfreg.SpectralNorm(0.1), target, top)
        self.assertLess(penalized, 0.8 * plain)

    def test_nuclear_norm_lowers_the_numerical_rank(self):
        rng = np.random.default_rng(14)
        target = rng.normal(size=(8, 2)) @ rng.normal(size=(2, 6))

        def tail(w):
            singular_values = np.linalg.svd(w, compute_uv=False)
            return singular_values[2:].sum() / singular_values[0]

        def rank(w):
            singular_values = np.linalg.svd(w, compute_uv=False)
            return int(np.sum(singular_values > 0.05 * singular_values[0]))

        regularizer = tfreg.NuclearNorm(0.1)
        plain = self._fit_linear(None, target, noise=1.0)
        penalized = self._fit_linear(regularizer, target, noise=1.0)
        self.assertLess(tail(penalized), 0.3 * tail(plain))
        self.assertLess(rank(penalized), rank(plain))

    def test_l2sp_keeps_weights_near_the_reference(self):
        rng = np.random.default_rng(15)
        start = rng.normal(size=(8, 4))
        target = rng.normal(size=(8, 4))

        def distance(w):
            return np.linalg.norm(w - start)

        plain, penalized = self._compare(
            tfreg.L2SP(0.5, reference=start), target, distance, start=start)
        self.assertLess(penalized, 0.5 * plain)

    def _fit_hidden(self, activity_regularizer, steps=300):
        """A sigmoid hidden layer trained on a regression; mean activations."""
        rng = np.random.default_rng(16)
        inputs = tf.constant(rng.normal(size=(32, 6)), tf.float32)
        targets = tf.constant(rng.normal(size=(32, 3)), tf.float32)
        hidden_kernel = tf.Variable(tf.constant(
            rng.normal(size=(6, 8)) * 0.5, tf.float32))
        output_kernel = tf.Variable(tf.constant(
            rng.normal(size=(8, 3)) * 0.5, tf.float32))
        variables = [hidden_kernel, output_kernel]

        @tf.function(jit_compile=True)
        def train():
            for _ in tf.range(steps):
                with tf.GradientTape() as tape:
                    hidden = tf.sigmoid(inputs @ hidden_kernel)
                    loss = tf.reduce_mean(tf.square(hidden @ output_kernel
                                                    - targets))
                    if activity_regularizer is not None:
                        # Keras divides activity penalties by the batch size.
                        loss += activity_regularizer(hidden) / 32.0
                for variable, gradient in zip(
                        variables, tape.gradient(loss, variables)):
                    variable.assign_sub(0.5 * gradient)

        train()
        return tf.sigmoid(inputs @ hidden_kernel).numpy().astype(np.float64)

    def test_kl_sparsity_lowers_the_mean_activation(self):
        plain = self._fit_hidden(None).mean()
        penalized = self._fit_hidden(
            tfreg.KLSparsity(32.0, target=0.05)).mean()
        self.assertLess(penalized, plain - 0.1)

    def test_decov_lowers_the_covariance_between_units(self):
        def off_diagonal(h):
            c = np.cov(h, rowvar=False, bias=True)
            return np.linalg.norm(c - np.diag(np.diag(c)))

        plain = off_diagonal(self._fit_hidden(None))
        penalized = off_diagonal(self._fit_hidden(tfreg.DeCov(50.0)))
        self.assertLess(penalized, 0.5 * plain)


if __name__ == "__main__":
    absltest.main()
