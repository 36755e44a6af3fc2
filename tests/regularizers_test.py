"""Keras-parity regularizers: L1, L2, L1L2, Orthogonal."""

import warnings

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import tfreg
from tests import battery

keras = battery.keras


def orthogonal_reference(factor, mode):
    def reference(w):
        matrix = w.reshape(-1, w.shape[-1])
        vectors = matrix if mode == "rows" else matrix.T
        n = len(vectors)
        total = 0.0
        for i in range(n):
            for j in range(n):
                if i != j:
                    u, v = vectors[i], vectors[j]
                    total += abs(u @ v) / (np.linalg.norm(u) * np.linalg.norm(v))
        return factor * total / (n * (n - 1))
    return reference


# Past penalties._TOTAL_BY_ROWS_MIN_ELEMENTS: XLA:CPU takes row sums.
LARGE = (1024, 512)


def traced_graph(function, shape, jit=False):
    """The GraphDef `function` traces on a float32 input of `shape`."""
    return tf.function(function, jit_compile=jit).get_concrete_function(
        tf.TensorSpec(shape, tf.float32)).graph.as_graph_def()


def traced_op_types(function, shape, jit=False):
    """The op types `function` traces, with those of the functions it calls
    (a penalty traced once per shape is one of them)."""
    graph = traced_graph(function, shape, jit)
    types = {node.op for node in graph.node}
    for called in graph.library.function:
        types |= {node.op for node in called.node_def}
    return types

CASES = [
    battery.Case(
        "l1", lambda: tfreg.L1(0.3),
        reference=lambda x: 0.3 * np.abs(x).sum(),
        gradient=lambda x: 0.3 * np.sign(x),
        twin=lambda: keras.regularizers.L1(0.3)),
    battery.Case(
        "l2", lambda: tfreg.L2(0.3),
        reference=lambda x: 0.3 * np.square(x).sum(),
        gradient=lambda x: 0.6 * x,
        twin=lambda: keras.regularizers.L2(0.3)),
    battery.Case(
        "l1l2", lambda: tfreg.L1L2(l1=0.2, l2=0.7),
        reference=lambda x: 0.2 * np.abs(x).sum() + 0.7 * np.square(x).sum(),
        gradient=lambda x: 0.2 * np.sign(x) + 1.4 * x,
        twin=lambda: keras.regularizers.L1L2(l1=0.2, l2=0.7)),
    battery.Case(
        "l2_activity", lambda: tfreg.L2(0.05), kind="activity",
        reference=lambda x: 0.05 * np.square(x).sum()),
    battery.Case(
        "orthogonal_rows", lambda: tfreg.Orthogonal(0.4),
        reference=orthogonal_reference(0.4, "rows"),
        shapes=((5, 3), (3, 4), (2, 3, 2, 5), (2, 2, 2, 1, 3)),
        twin=lambda: keras.regularizers.OrthogonalRegularizer(0.4),
        twin_shapes=((5, 3), (3, 4)),
        # Rows: a Gram matrix of 64 x 64, not 2^18 x 2^18.
        xla_shape=(64, 1 << 18)),
    battery.Case(
        "orthogonal_columns", lambda: tfreg.Orthogonal(0.4, mode="columns"),
        reference=orthogonal_reference(0.4, "columns"),
        shapes=((5, 3), (3, 4), (3, 2, 4)),
        twin=lambda: keras.regularizers.OrthogonalRegularizer(
            0.4, mode="columns"),
        twin_shapes=((5, 3), (3, 4))),
]


class RegularizersTest(battery.battery(CASES)):

    @parameterized.named_parameters(
        ("l1", tfreg.L1, "l1"), ("l2", tfreg.L2, "l2"),
        ("l1l2_l1", tfreg.L1L2, "l1"), ("l1l2_l2", tfreg.L1L2, "l2"),
        ("orthogonal", tfreg.Orthogonal, "factor"))
    def test_rejects_bad_strengths(self, cls, argument):
        rejected = [(-0.1, ValueError), (float("nan"), ValueError),
                    (float("inf"), ValueError), (True, TypeError),
                    ("0.1", TypeError), ([0.1], TypeError)]
        if cls is tfreg.Orthogonal:  # Only L1, L2 and L1L2 take None.
            rejected.append((None, TypeError))
        for value, error in rejected:
            with self.subTest(value=value):
                with self.assertRaisesRegex(
                        error,
                        f"Invalid value for argument `{argument}`. Expected a "
                        f"finite float >= 0. Received: {argument}="
                        f"{value!r}".replace("[", r"\[").replace(
                            "]", r"\]").replace(".", r"\.")):
                    cls(**{argument: value})

    @parameterized.named_parameters(("l2", tfreg.L2), ("l1", tfreg.L1))
    def test_rejects_strengths_whose_double_overflows_float32(self, cls):
        for value in (1.8e38, 2e38, 10**39, 10**400):
            with self.subTest(value=value):
                with self.assertRaisesRegex(
                        ValueError, "more than half of float32's maximum "
                        ".at most 1.7014117e.38."):
                    cls(value)
        self.assertEqual(cls(1.7e38).get_config(),
                         {cls.__name__.lower(): 1.7e38})

    def test_accepts_numpy_and_int_strengths(self):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # numpy's float32 overflow warning
            self.assertEqual(tfreg.L2(np.float32(0.5)).l2, 0.5)
            self.assertEqual(tfreg.Orthogonal(np.float32(0.25)).factor, 0.25)
        self.assertEqual(tfreg.L1(1).l1, 1.0)
        self.assertIsInstance(tfreg.L1(np.float64(0.5)).get_config()["l1"],
                              float)

    @parameterized.named_parameters(
        ("l1", "L1", {"l1": None}, {"l1": 0.01}),
        ("l2", "L2", {"l2": None}, {"l2": 0.01}),
        ("l1l2", "L1L2", {"l1": None, "l2": None}, {"l1": 0.0, "l2": 0.0}),
        ("l1l2_l1", "L1L2", {"l1": None, "l2": 0.5}, {"l1": 0.0, "l2": 0.5}),
        ("l1l2_l2", "L1L2", {"l1": 0.5, "l2": None}, {"l1": 0.5, "l2": 0.0}))
    def test_none_strength_means_the_default_as_in_keras(self, name, kwargs,
                                                         config):
        regularizer = getattr(tfreg, name)(**kwargs)
        self.assertEqual(regularizer.get_config(), config)
        x = tf.constant([[1.0, -2.0], [3.0, 0.5]])
        np.testing.assert_allclose(
            regularizer(x), getattr(keras.regularizers, name)(**kwargs)(x),
            rtol=1e-6)

    def test_orthogonal_rejects_unknown_mode_in_keras_words(self):
        expected = ("Invalid value for argument `mode`. Expected one of "
                    '{"rows", "columns"}. Received: mode=bad')
        with self.assertRaises(ValueError) as ours:
            tfreg.Orthogonal(mode="bad")
        self.assertEqual(str(ours.exception), expected)
        with self.assertRaises(ValueError) as theirs:
            keras.regularizers.OrthogonalRegularizer(mode="bad")
        self.assertEqual(str(theirs.exception), expected)
        with self.assertRaisesRegex(ValueError, "Received: mode=None$"):
            tfreg.Orthogonal(mode=None)

    def test_orthogonal_rejects_unsupported_ranks(self):
        for shape in ((4,), (1, 1, 1, 1, 2, 3)):
            with self.subTest(shape=shape):
                with self.assertRaisesRegex(
                        ValueError, r"Expected a kernel of rank 2 \(Dense\) or "
                        r"3 to 5 \(Conv1D/2D/3D\).*Received: kernel=<a tensor "
                        r"of shape "):
                    tfreg.Orthogonal()(tf.ones(shape))

    def test_orthogonal_single_vector_is_zero_not_nan(self):
        self.assertEqual(float(tfreg.Orthogonal()(tf.ones((1, 4)))), 0.0)
        self.assertEqual(
            float(tfreg.Orthogonal(mode="columns")(tf.ones((4, 1)))), 0.0)

    def test_orthogonal_zero_kernel_has_finite_gradient(self):
        x = tf.zeros((3, 4))
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = tfreg.Orthogonal()(x)
        self.assertEqual(float(value), 0.0)
        self.assertTrue(np.all(np.isfinite(tape.gradient(value, x))))

    def test_largest_strengths_give_no_nan(self):
        # 2 x 2e38 would overflow float32 and give inf * 0 = NaN at zero
        # weights once a compiler folds it; such strengths are rejected, and
        # the largest accepted one gives 0 at zero weights.
        with self.assertRaisesRegex(ValueError, "half of float32's maximum"):
            tfreg.Strength(2e38)
        with self.assertRaisesRegex(ValueError, "half of float32's maximum"):
            tfreg.Strength(1.0).assign(2e38)
        largest = 1.7014117e38
        x = tf.constant([[0.0, 1e-3], [-1e-3, 0.0]])
        for regularizer in (tfreg.L2(largest), tfreg.L1L2(0.1, largest),
                            tfreg.L2(tfreg.Strength(largest)),
                            tfreg.L1L2(0.1, tfreg.Strength(largest))):
            for shape in ((2, 2), LARGE):
                for jit in (None, False, True):
                    with self.subTest(regularizer=regularizer, shape=shape,
                                      jit=jit):
                        run = (battery.value_and_gradient if jit is None else
                               tf.function(battery.value_and_gradient,
                                           jit_compile=jit))
                        zeros = tf.zeros(shape)
                        value, gradient = run(regularizer, zeros)
                        self.assertEqual(float(value), 0.0)
                        np.testing.assert_array_equal(gradient, zeros)
                        value, gradient = run(regularizer, x)
                        np.testing.assert_allclose(
                            float(value), largest * 2e-6, rtol=1e-5)
                        np.testing.assert_allclose(
                            gradient[0, 1], 2 * largest * 1e-3, rtol=1e-5)
                        np.testing.assert_array_equal(gradient[0, 0], 0.0)

    @parameterized.named_parameters(
        ("l1", tfreg.L1, lambda x, s: s * np.abs(x).sum(),
         lambda x, s: s * np.sign(x)),
        ("l2", tfreg.L2, lambda x, s: s * np.square(x).sum(),
         lambda x, s: 2 * s * x),
        ("l1l2", lambda s: tfreg.L1L2(s, s),
         lambda x, s: s * (np.abs(x).sum() + np.square(x).sum()),
         lambda x, s: s * (np.sign(x) + 2 * x)),
        ("l1l2_tiny_l2", lambda s: tfreg.L1L2(1e-3, s),
         lambda x, s: 1e-3 * np.abs(x).sum() + s * np.square(x).sum(),
         lambda x, s: 1e-3 * np.sign(x) + 2 * s * x))
    def test_zero_and_tiny_strengths_give_no_nan_where_the_sum_overflows(
            self, make, reference, gradient):
        # sum(x^2) is inf in float32: a zero strength gives 0, not inf * 0;
        # one below float32's smallest normal number (flushed to 0 on CPU)
        # gives its true value.
        entries = np.array([1e20, -3e38, 0.0, 1e-3])
        for shape in ((2, 2), LARGE):
            x = np.zeros(shape)
            x.flat[:4] = entries
            for strength in (0.0, 1e-45, 1e-300, tfreg.Strength(0.0)):
                s = float(strength)
                for jit in (None, False, True):
                    with self.subTest(strength=strength, shape=shape, jit=jit):
                        run = (battery.value_and_gradient if jit is None else
                               tf.function(battery.value_and_gradient,
                                           jit_compile=jit))
                        value, grad = run(make(strength),
                                          tf.constant(x, tf.float32))
                        # The true value, rounded to float32 (0 where it
                        # underflows).
                        np.testing.assert_allclose(
                            float(value), np.float32(reference(x, s)),
                            rtol=1e-6)
                        # Gradients below float32's normal range are 0.
                        expected = gradient(x, s).astype(np.float32)
                        expected[np.abs(expected) < 1.2e-38] = 0.0
                        np.testing.assert_allclose(grad, expected, rtol=1e-6)

    @parameterized.parameters(1e-20, 1e-8, 1.0, 1e20, 1e30)
    def test_orthogonal_is_scale_invariant(self, scale):
        # Two equal rows: mean |cosine| 1 at every scale (the squared norm
        # of 1e-8 rows is below a 1e-12 floor, of 1e20 rows beyond float32).
        for dtype in (tf.float16, tf.bfloat16, tf.float32, tf.float64):
            rounded = float(tf.cast(scale, dtype))
            if rounded == 0 or np.isinf(rounded):  # not representable
                continue
            with self.subTest(dtype=dtype.name):
                x = tf.constant([[scale, 0.0], [scale, 0.0]], dtype)
                value, gradient = battery.value_and_gradient(
                    tfreg.Orthogonal(1.0), x)
                np.testing.assert_allclose(float(value), 1.0, rtol=1e-6)
                self.assertTrue(np.isfinite(
                    tf.cast(gradient, tf.float64).numpy()).all())

    def test_rejects_integer_inputs(self):
        with self.assertRaisesWithLiteralMatch(
                TypeError, "Invalid value for argument `x`. Expected a "
                "floating-point tensor (L2). Received: x=<a tensor of dtype "
                "int32>"):
            tfreg.L2()(tf.constant([1, 2]))

    def test_half_precision_sum_does_not_overflow(self):
        # 64 * 64 * 300^2 = 3.7e8 is far beyond float16's maximum of 65504.
        x = tf.fill((64, 64), tf.constant(300.0, tf.float16))
        np.testing.assert_allclose(float(tfreg.L2(1.0)(x)),
                                   64 * 64 * 300.0**2, rtol=1e-6)

    def test_large_tensors_take_row_sums_only_under_xla(self):
        # penalties.total; the battery checks the values at 16M elements.
        for regularizer in (tfreg.L1(0.3), tfreg.L2(0.3), tfreg.L1L2(0.2, 0.7),
                            tfreg.priors.Normal(0.7, 0.3, 100)):
            with self.subTest(regularizer=regularizer):
                self.assertIn("MatMul",
                              traced_op_types(regularizer, LARGE, jit=True))
                self.assertNotIn("MatMul", traced_op_types(regularizer, LARGE))
                self.assertNotIn("MatMul", traced_op_types(
                    regularizer, (1023, 512), jit=True))

    def test_custom_gradients_are_traced_only_under_a_tape(self):
        # Without a tape the custom gradient's identity node is an op per
        # weight that nothing uses (BENCHMARKS.md, "never slower than Keras").
        for regularizer in (tfreg.L1(0.3), tfreg.L1L2(0.2, 0.7),
                            tfreg.priors.Laplace(scale=2.0)):
            with self.subTest(regularizer=regularizer):
                self.assertIn("IdentityN", traced_op_types(
                    lambda x, r=regularizer: battery.value_and_gradient(r, x),
                    (3, 4)))
                self.assertNotIn("IdentityN",
                                 traced_op_types(regularizer, (3, 4)))

    def test_small_l1l2_shares_value_and_gradient_terms_only_in_graphs(self):
        # tfreg/penalties.py: a small tensor traced outside XLA takes the
        # eight-op form (no |x|, no L2Loss); large ones and XLA do not.
        regularizer = tfreg.L1L2(0.2, 0.7)

        def traced(shape, jit=False):
            return traced_op_types(
                lambda x: battery.value_and_gradient(regularizer, x), shape,
                jit)
        self.assertNotIn("Abs", traced((128, 128)))
        self.assertTrue({"Abs", "L2Loss"} <= traced((128, 129)))
        self.assertIn("Abs", traced((3, 4), jit=True))

    def test_large_l1l2_matches_reference_outside_xla(self):
        # The battery's shapes are small; this is the other graph-mode form.
        x = np.random.default_rng(0).normal(size=LARGE).astype(np.float32)
        x[0, :3] = 0.0
        for run in (battery.value_and_gradient,
                    tf.function(battery.value_and_gradient)):
            value, gradient = run(tfreg.L1L2(0.2, 0.7), tf.constant(x))
            np.testing.assert_allclose(
                float(value), 0.2 * np.abs(x).sum() + 0.7 * np.square(x).sum(),
                rtol=1e-5)
            np.testing.assert_allclose(gradient.numpy(),
                                       0.2 * np.sign(x) + 1.4 * x, rtol=1e-6)

    def test_second_derivatives_go_through_the_custom_gradients(self):
        # Hessian-vector products (second-order methods, influence
        # functions) differentiate the gradient: every form must keep x in it.
        def hessian_row_sums(regularizer, x):
            with tf.GradientTape() as outer:
                outer.watch(x)
                _, gradient = battery.value_and_gradient(regularizer, x)
                total = tf.reduce_sum(gradient)
            return outer.gradient(total, x)
        for shape in ((3, 4), LARGE):
            x = tf.constant(np.random.default_rng(0).normal(size=shape),
                            tf.float32)
            for jit in (False, True):
                run = tf.function(hessian_row_sums, jit_compile=jit)
                for regularizer, curvature in ((tfreg.L1L2(0.2, 0.7), 1.4),
                                               (tfreg.L2(0.7), 1.4),
                                               (tfreg.L1(0.2), 0.0)):
                    with self.subTest(shape=shape, jit=jit,
                                      regularizer=regularizer):
                        np.testing.assert_allclose(
                            run(regularizer, x).numpy(),
                            np.full(shape, curvature), rtol=1e-6)

    def test_forward_mode_matches_the_gradient(self):
        # A forward accumulator also records: jvp = <gradient, tangent>.
        rng = np.random.default_rng(1)
        for shape in ((3, 4), LARGE):
            x = rng.normal(size=shape).astype(np.float32)
            x.flat[:2] = 0.0
            tangent = rng.normal(size=shape).astype(np.float32)
            for regularizer, gradient in (
                    (tfreg.L1(0.2), 0.2 * np.sign(x)),
                    (tfreg.L2(0.7), 1.4 * x),
                    (tfreg.L1L2(0.2, 0.7), 0.2 * np.sign(x) + 1.4 * x)):
                with self.subTest(shape=shape, regularizer=regularizer):
                    primal = tf.constant(x)
                    with tf.autodiff.ForwardAccumulator(
                            primal, tf.constant(tangent)) as accumulator:
                        value = regularizer(primal)
                    np.testing.assert_allclose(
                        float(accumulator.jvp(value)),
                        np.sum(gradient.astype(np.float64) * tangent),
                        rtol=1e-4)

    def test_symbolic_gradients_without_a_tape_are_exact(self):
        # tf.gradients after a tape-less trace differentiates the plain value.
        x = np.array([[0.0, -1.5, 2.0], [0.25, 0.0, -3.0]], np.float32)
        for regularizer, gradient in (
                (tfreg.L1(0.3), 0.3 * np.sign(x)),
                (tfreg.L1L2(0.2, 0.7), 0.2 * np.sign(x) + 1.4 * x)):
            with self.subTest(regularizer=regularizer):
                symbolic = tf.function(
                    lambda w, r=regularizer: tf.gradients(r(w), w)[0])
                np.testing.assert_allclose(
                    symbolic(tf.constant(x)).numpy(), gradient, rtol=1e-6)


def _functions_with(op_type, graph):
    """The names of the graph's library functions that contain `op_type`."""
    return {called.signature.name for called in graph.library.function
            if any(node.op == op_type for node in called.node_def)}


class SharedTraceTest(absltest.TestCase):
    """Equal penalties on weights of one shape are traced once per graph."""

    def test_equal_regularizers_on_one_shape_share_one_trace(self):
        # Separate but equal instances, as `kernel_regularizer=` per layer.
        def penalties(x):
            return tf.add_n(
                [tfreg.priors.StudentT(3.0)(x * k) for k in range(1, 5)]
                + [tfreg.priors.StudentT(4.0)(x),  # other arguments
                   tfreg.priors.StudentT(3.0)(tf.concat([x, x], 0))])
        graph = traced_graph(penalties, (3, 4))
        # The penalties' own functions, not the branches of their far path.
        self.assertLen({name for name in _functions_with("Log1p", graph)
                        if not name.startswith("cond_")}, 3)
        self.assertEqual(sum(node.op == "PartitionedCall"
                             for node in graph.node), 6)

    def test_gradients_share_one_trace_and_match_eager(self):
        regularizer = tfreg.L1L2(0.2, 0.7)
        x = tf.constant(np.random.default_rng(0).normal(size=(3, 4)),
                        tf.float32)

        def value_and_gradients(x):
            inputs = [x * k for k in range(1, 4)]
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                total = tf.add_n([tfreg.L1L2(0.2, 0.7)(w) for w in inputs])
            return total, tape.gradient(total, inputs)

        # The custom gradient's identity is in the one shared trace and in
        # the forward function derived from it, not once per weight.
        graph = traced_graph(value_and_gradients, (3, 4))
        self.assertNotIn("IdentityN", {node.op for node in graph.node})
        self.assertLen(_functions_with("IdentityN", graph), 2)
        for jit in (False, True):
            total, gradients = tf.function(
                value_and_gradients, jit_compile=jit)(x)
            np.testing.assert_allclose(
                float(total),
                sum(float(regularizer(x * k)) for k in range(1, 4)),
                rtol=1e-6)
            for k, gradient in zip(range(1, 4), gradients):
                np.testing.assert_allclose(
                    gradient.numpy(), 0.2 * np.sign(x) + 1.4 * k * x.numpy(),
                    rtol=1e-6)

    def test_strengths_share_a_trace_only_when_they_are_one_variable(self):
        shared, equal = tfreg.Strength(0.1), tfreg.Strength(0.1)

        def penalties(x):
            return tf.add_n([tfreg.L2(shared)(x), tfreg.L2(shared)(x),
                             tfreg.L2(equal)(x)])
        graph = traced_graph(penalties, (3, 4))
        self.assertLen(_functions_with("L2Loss", graph), 2)

    def test_penalties_with_shape_dependent_gradients_are_inline(self):
        graph = traced_graph(tfreg.DeCov(0.1), (3, 4))
        self.assertEmpty(graph.library.function)


if __name__ == "__main__":
    absltest.main()
