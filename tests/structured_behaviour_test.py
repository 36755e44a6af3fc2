"""Structured regularizers at their limits, in real models, and doing their job."""

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


class StructuredBehaviourTest(parameterized.TestCase):

    def setUp(self):
        super().setUp()
        self.rng = np.random.default_rng(0)

    # ------------------------------------------------------ degenerate inputs

    def assertFiniteEverywhere(self, regularizer, x):
        results = util.all_modes(regularizer, x)
        for value, gradient in results:
            self.assertTrue(np.isfinite(value), value)
            self.assertTrue(np.all(np.isfinite(gradient)), gradient)
        return results

    @parameterized.named_parameters(*util.WEIGHT_CLASSES)
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
        *util.WEIGHT_CLASSES,
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
                for value, _ in util.all_modes(regularizer, tf.constant(kernel)):
                    self.assertTrue(np.isnan(value), value)
        for kernel in ([[inf, 0.1], [0.2, 0.3]], [[-inf, 0.0], [0.0, 0.0]]):
            with self.subTest(kernel=kernel):
                for value, _ in util.all_modes(regularizer, tf.constant(kernel)):
                    if inf_gives_inf:
                        self.assertEqual(value, inf)
                    else:
                        self.assertFalse(np.isfinite(value), value)

    @parameterized.named_parameters(*util.WEIGHT_CLASSES)
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
            for value, _ in util.all_modes(cls(1.0), tf.zeros((0,))):
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
        regularizers = {name: cls(1.0) for name, cls in util.MATRIX_CLASSES}
        for name, kernel in kernels.items():
            x = tf.constant(kernel, tf.float32)
            for cls_name, regularizer in regularizers.items():
                with self.subTest(kernel=name, cls=cls_name):
                    self.assertFiniteEverywhere(regularizer, x)
        # U V^T of 2Q is Q: the nuclear gradient is exact with repeated values.
        for _, gradient in util.all_modes(regularizers["nuclear_norm"],
                                      tf.constant(2.0 * q, tf.float32)):
            np.testing.assert_allclose(gradient, q, atol=1e-5)
        for value, _ in util.all_modes(regularizers["spectral_norm"],
                                   tf.constant(2.0 * q, tf.float32)):
            np.testing.assert_allclose(value, 4.0, rtol=1e-5)
        for value, gradient in util.all_modes(regularizers["srip"],
                                          tf.constant(q, tf.float32)):
            self.assertLess(value, 1e-5)

    @parameterized.named_parameters(*util.WEIGHT_CLASSES)
    def test_huge_and_tiny_magnitudes(self, cls):
        # Scales whose exact penalty is a normal float32 number.
        degree = {tfreg.GroupLasso: 1, tfreg.SparseGroupLasso: 1,
                  tfreg.NuclearNorm: 1, tfreg.SpectralNorm: 2,
                  tfreg.SoftOrthogonal: 4, tfreg.SRIP: 2}[cls]
        reference = {
            tfreg.GroupLasso: util.group_lasso_reference(1.0),
            tfreg.SparseGroupLasso: util.group_lasso_reference(1.0, l1=1.0),
            tfreg.NuclearNorm: util.nuclear_reference(1.0),
            tfreg.SpectralNorm: util.spectral_reference(1.0),
            tfreg.SoftOrthogonal: util.soft_orthogonal_reference(1.0),
            tfreg.SRIP: util.srip_reference(1.0)}[cls]
        regularizer = (cls(1.0, 1.0) if cls is tfreg.SparseGroupLasso
                       else cls(1.0))
        base = util.gapped_sample(np.random.default_rng(8), (5, 3))
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
                reference = util.kl_reference(
                    1.0, 0.05, upper=float(np.float32(1 - util.KL_EPSILON)))
                np.testing.assert_allclose(
                    value, reference(np.full((4, 3), fill)), rtol=1e-5)

    def test_decov_of_a_single_sample_and_constant_features_is_zero(self):
        for x in (tf.ones((1, 4)), tf.ones((5, 4))):
            for value, gradient in self.assertFiniteEverywhere(
                    tfreg.DeCov(1.0), x):
                self.assertEqual(value, 0.0)
                np.testing.assert_array_equal(gradient, 0.0)

    def test_kl_sparsity_with_a_target_below_the_normal_range(self):
        # Such a target flushes to 0 in its dtype (0 log(0 / q) = NaN); its
        # term is below 1.2e-36 and is left out, within rounding.
        h = self.rng.uniform(0.0, 0.4, size=(6, 3))
        cases = [(dtype, target) for dtype in battery.DTYPES
                 for target in (1e-45, 1e-40, 1e-38, 1.17e-38)]
        cases += [(tf.float64, target) for target in (5e-324, 1e-310)]
        for dtype, target in cases:
            with self.subTest(dtype=dtype.name, target=target):
                x = tf.constant(h, dtype)
                exact = tf.cast(x, tf.float64).numpy()
                rtol = 1e-12 if dtype == tf.float64 else 1e-5
                for value, gradient in self.assertFiniteEverywhere(
                        tfreg.KLSparsity(1.0, target=target), x):
                    np.testing.assert_allclose(
                        value, util.kl_reference(1.0, target)(exact),
                        rtol=rtol)
                    # The gradient takes the input's dtype: bfloat16
                    # rounds to within 2^-8 relative.
                    np.testing.assert_allclose(
                        gradient, util.kl_gradient(1.0, target)(exact),
                        rtol=rtol if dtype in (tf.float32, tf.float64)
                        else 2.0**-8)

    def test_decov_where_the_diagonal_overflows_but_the_penalty_does_not(
            self):
        # The true value is 0: C = diag(1e40, 0) overflows only on the
        # diagonal, which must not be subtracted (inf - inf).
        for value, gradient in self.assertFiniteEverywhere(
                tfreg.DeCov(1.0), tf.constant([[1e20, 0.0], [-1e20, 0.0]])):
            self.assertEqual(value, 0.0)
            np.testing.assert_array_equal(gradient, 0.0)
        # Their sum overflows float32 although the mean does not.
        h = np.array([[3e38, 0.0], [3e38, 0.0], [-3e38, 1e-30]])
        for value, _ in util.all_modes(tfreg.DeCov(1.0),
                                       tf.constant(h, tf.float32)):
            np.testing.assert_allclose(
                value, util.decov_reference(1.0)(h), rtol=1e-5)

    def test_decov_whose_true_value_overflows_is_inf_not_nan(self):
        for h in ([[1e20, 1e20], [-1e20, -1e20]],
                  [[3e38, -3e38], [-3e38, 3e38], [3e38, 3e38]]):
            for value, _ in util.all_modes(tfreg.DeCov(1.0), tf.constant(h)):
                self.assertEqual(value, np.inf)

    def test_srip_where_the_gram_matrix_overflows(self):
        # G = W^T W overflows float32 from |W| ~ 1.8e19; the true penalty
        # 1e-20 sigma_max(G - I) ~ 1e21 does not (it was NaN).
        base = util.gapped_sample(np.random.default_rng(3), (5, 3))
        w = (base / np.abs(base).max() * 1e20).astype(np.float32)
        exact = w.astype(np.float64)
        for value, gradient in self.assertFiniteEverywhere(
                tfreg.SRIP(1e-20, power_iterations=40), tf.constant(w)):
            np.testing.assert_allclose(
                value, util.srip_reference(1e-20)(exact), rtol=1e-5)
            np.testing.assert_allclose(
                gradient, util.srip_gradient(1e-20)(exact), rtol=1e-4,
                atol=1e-4 * np.abs(util.srip_gradient(1e-20)(exact)).max())
        # Where the true value overflows too it is inf, not NaN.
        for value, _ in util.all_modes(tfreg.SRIP(1.0),
                                       tf.constant(w * 1e18)):
            self.assertEqual(value, np.inf)

    @parameterized.named_parameters(
        ("decov", tfreg.DeCov, util.decov_reference, 4),
        ("soft_orthogonal", tfreg.SoftOrthogonal,
         util.soft_orthogonal_reference, 4),
        ("spectral_norm", lambda factor: tfreg.SpectralNorm(factor, 40),
         util.spectral_reference, 2),
        ("srip", lambda factor: tfreg.SRIP(factor, 40),
         util.srip_reference, 2))
    def test_small_factor_times_a_penalty_beyond_float32(
            self, make, reference, degree):
        # The penalty without its factor (about 1e50) overflows float32; the
        # factor applies first, so the value is the finite true one, and a
        # zero factor gives 0 (it gave inf * 0 = NaN).
        base = util.gapped_sample(np.random.default_rng(5), (5, 3))
        w = (base / np.abs(base).max() * 1e50 ** (1 / degree)).astype(
            np.float32)
        exact = w.astype(np.float64)
        for value, gradient in util.all_modes(make(1e-30), tf.constant(w)):
            np.testing.assert_allclose(value, reference(1e-30)(exact),
                                       rtol=1e-4)
            self.assertTrue(np.all(np.isfinite(gradient)))
        for value, gradient in self.assertFiniteEverywhere(make(0.0),
                                                           tf.constant(w)):
            self.assertEqual(value, 0.0)
            np.testing.assert_array_equal(gradient, 0.0)

    @parameterized.named_parameters(
        ("group_lasso", tfreg.GroupLasso),
        ("sparse_group_lasso", lambda f: tfreg.SparseGroupLasso(f, f)),
        ("soft_orthogonal", tfreg.SoftOrthogonal),
        ("srip", lambda f: tfreg.SRIP(f, 40)),
        ("spectral_norm", lambda f: tfreg.SpectralNorm(f, 40)),
        ("decov", tfreg.DeCov),
        ("nuclear_norm", tfreg.NuclearNorm),
        ("l2sp", lambda f: tfreg.L2SP(f, reference=np.zeros((5, 3)))))
    def test_gradient_where_the_value_overflows_is_never_nan(self, make):
        # Weights up to 3e38: the value overflows float32 (or a zero factor
        # meets it), where autodiff met inf * 0. The gradient is float64's,
        # rounded to float32: finite, or inf where float64's exceeds float32.
        base = util.gapped_sample(np.random.default_rng(5), (5, 3))
        base[0, 0] = 0.0
        for peak in (1e10, 3e38):
            w = (base / np.abs(base).max() * peak).astype(np.float32)
            for factor in (1.0, 0.0):
                regularizer = make(factor)
                _, exact = battery.value_and_gradient(
                    regularizer, tf.constant(w, tf.float64))
                exact = exact.numpy()
                for mode, (value, gradient) in zip(
                        ("eager", "jit"),
                        util.all_modes(regularizer, tf.constant(w))):
                    with self.subTest(peak=peak, factor=factor, mode=mode):
                        self.assertFalse(np.isnan(value))
                        self.assertFalse(np.isnan(gradient).any(), gradient)
                        fits = np.abs(exact) < 1e37
                        np.testing.assert_allclose(
                            gradient[fits], exact[fits], rtol=1e-3,
                            atol=1e-6 * np.abs(exact[fits]).max(initial=0))
                        beyond = ~fits & (np.abs(exact) > 3.5e38)
                        np.testing.assert_array_equal(
                            gradient[beyond], np.sign(exact[beyond]) * np.inf)

    @parameterized.named_parameters(
        ("group_lasso", tfreg.GroupLasso,
         lambda factor: util.group_lasso_reference(factor)),
        ("sparse_group_lasso", lambda factor: tfreg.SparseGroupLasso(
            0.0, factor),
         lambda factor: util.group_lasso_reference(factor, l1=0.0)))
    def test_small_factor_times_group_norms_beyond_float32(
            self, make, reference):
        # Each group norm (2.8e38) fits float32, their sum does not.
        w = np.array([[2e38, -2e38], [2e38, 2e38]], np.float32)
        exact = w.astype(np.float64)
        for value, gradient in self.assertFiniteEverywhere(
                make(1e-30), tf.constant(w)):
            np.testing.assert_allclose(value, reference(1e-30)(exact),
                                       rtol=1e-6)
        for value, gradient in self.assertFiniteEverywhere(
                make(0.0), tf.constant(w)):
            self.assertEqual(value, 0.0)
            np.testing.assert_array_equal(gradient, 0.0)

    def test_l2sp_reference_beyond_float32_for_narrower_weights(self):
        reference = np.array([[1e100, 0.0], [0.0, -4e38]])
        regularizer = tfreg.L2SP(1e-30, reference=reference)
        for dtype in (tf.float16, tf.bfloat16, tf.float32):
            with self.subTest(dtype=dtype.name):
                with self.assertRaisesRegex(
                        ValueError, r"argument `reference`.*at most "
                        r"3\.4028235e\+38.*largest magnitude is 1e\+100"):
                    regularizer(tf.zeros((2, 2), dtype))
        np.testing.assert_allclose(
            regularizer(tf.zeros((2, 2), tf.float64)), 1e170, rtol=1e-12)
        # A float64 reference within float32's range still serves float32.
        fits = tfreg.L2SP(1.0, reference=np.array([3e38, -1e-40]))
        np.testing.assert_allclose(fits(tf.constant([3e38, 0.0])), 0.0)

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

