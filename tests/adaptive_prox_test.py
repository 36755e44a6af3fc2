"""Proximal steps in the wrapped optimizer's own metric (metric="adaptive"):
TensorFlow's ProximalAdagrad, numpy references of Adam's, the first step of
every known optimizer, and the training features (schedules, strengths,
mixed precision, clipping, distribution, saving) with Adam."""

import os
import re
import tempfile
import warnings

import numpy as np
import tensorflow as tf
from absl.testing import absltest
from absl.testing import parameterized

import tfreg
from tests import devices
from tfreg import _keras
from tfreg import _updates
from tfreg import optimizers

keras = _keras.keras
devices.split_cpu()

N, D, UNITS = 32, 6, 3
REGIMES = (("eager", False), ("jit", True))
B1, B2, EPS = 0.9, 0.999, 1e-7


def _data(seed=0, units=UNITS):
    rng = np.random.RandomState(seed)
    x = rng.randn(N, D).astype(np.float32)
    w = np.zeros((D, units), np.float32)
    w[:3] = rng.randn(3, units)
    y = (x @ w + 0.1 * rng.randn(N, units)).astype(np.float32)
    return x, y


def _initial(units=UNITS):
    return np.linspace(-1.0, 1.0, D * units).reshape(D, units).astype(
        np.float32)


def _model(regularizer=None, units=UNITS):
    return keras.Sequential([
        keras.Input((D,)),
        keras.layers.Dense(units, use_bias=False, name="dense",
                           kernel_initializer=keras.initializers.Constant(
                               _initial(units)),
                           kernel_regularizer=regularizer)])


def _trained(optimizer, regularizer, steps, jit, units=UNITS, **kwargs):
    x, y = _data(units=units)
    model = _model(regularizer, units)
    model.compile(optimizers.Regularized(optimizer, model=model, **kwargs),
                  "mse", jit_compile=jit, run_eagerly=not jit)
    model.fit(x, y, batch_size=N, epochs=steps, shuffle=False, verbose=0)
    return model


def _gradient(w, x, y):
    return 2.0 / y.size * x.T @ (x @ w - y)


def _soft(v, t):
    return np.sign(v) * np.maximum(np.abs(v) - t, 0.0)


def _prox(kind, v, steps, strength):
    """The prox of `kind` with per-weight steps (GroupLasso: per unit, eta
    over the unit's mean D)."""
    if kind == "l1":
        return _soft(v, steps * strength)
    if kind == "l1l2":
        return _soft(v, steps * strength) / (1.0 + 2.0 * steps * strength)
    group = 1.0 / np.mean(1.0 / steps, axis=0, keepdims=True)
    norms = np.linalg.norm(v, axis=0, keepdims=True)
    threshold = group * strength * np.sqrt(v.shape[0])
    return v * np.maximum(1.0 - threshold / np.maximum(norms, 1e-30), 0.0)


_REGULARIZERS = {"l1": lambda s: tfreg.L1(s),
                 "l1l2": lambda s: tfreg.L1L2(s, s),
                 "group_lasso": lambda s: tfreg.GroupLasso(s)}


def _adam_reference(kind, strength, rate, steps):
    """Adam, then the prox in D = (sqrt(v) + eps) / sqrt(1 - b2^t)."""
    x, y = _data()
    w = _initial().astype(np.float64)
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    for t in range(1, steps + 1):
        g = _gradient(w, x, y)
        m = B1 * m + (1 - B1) * g
        v = B2 * v + (1 - B2) * g * g
        alpha = rate * np.sqrt(1 - B2**t) / (1 - B1**t)
        w = w - alpha * m / (np.sqrt(v) + EPS)
        metric = (np.sqrt(v) + EPS) / np.sqrt(1 - B2**t)
        w = _prox(kind, w, rate / metric, strength)
    return w


class ReferenceTest(parameterized.TestCase):

    @parameterized.named_parameters(*REGIMES)
    def test_adagrad_equals_tensorflow_proximal_adagrad(self, jit):
        rate, l1, l2, accumulator, steps = 0.3, 0.2, 0.05, 0.1, 12
        x, y = _data()
        model = _model(tfreg.L1L2(l1, l2))
        model.compile(optimizers.Regularized(
            keras.optimizers.Adagrad(rate, initial_accumulator_value=(
                accumulator), epsilon=1e-30), model=model),
                      "mse", jit_compile=jit, run_eagerly=not jit)
        weights = tf.Variable(_initial())
        accumulators = tf.Variable(tf.fill(weights.shape, accumulator))
        zeros = 0
        for _ in range(steps):
            # TensorFlow's l2 is the prox of (l2 / 2) w^2; Keras' L2 is l2 w^2.
            tf.raw_ops.ResourceApplyProximalAdagrad(
                var=weights.handle, accum=accumulators.handle, lr=rate,
                l1=l1, l2=2.0 * l2,
                grad=_gradient(weights.numpy(), x, y).astype(np.float32))
            model.fit(x, y, batch_size=N, epochs=1, shuffle=False, verbose=0)
            mine, expected = model.layers[0].kernel.numpy(), weights.numpy()
            np.testing.assert_allclose(mine, expected, rtol=1e-5, atol=1e-6)
            np.testing.assert_array_equal(mine == 0, expected == 0)
            zeros += int(np.sum(expected == 0))
        self.assertGreater(zeros, 0)

    @parameterized.named_parameters(
        (f"{kind}_{regime}", kind, jit)
        for kind in ("l1", "l1l2", "group_lasso") for regime, jit in REGIMES)
    def test_adam_equals_numpy_reference(self, kind, jit):
        strength, rate, steps = {"l1": 0.5, "l1l2": 0.3,
                                 "group_lasso": 0.4}[kind], 0.05, 20
        model = _trained(keras.optimizers.Adam(rate, epsilon=EPS),
                         _REGULARIZERS[kind](strength), steps, jit)
        expected = _adam_reference(kind, strength, rate, steps)
        mine = model.layers[0].kernel.numpy()
        # Adam divides by sqrt(v): float32 rounding of the gradients grows
        # to about 1e-5 over the steps.
        np.testing.assert_allclose(mine, expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(mine == 0, expected == 0)
        self.assertGreater(np.sum(expected == 0), 0)

    @parameterized.named_parameters(
        ("rmsprop", "RMSprop",
         lambda g: np.sqrt(0.1 * g * g + EPS)),
        ("rmsprop_centered", "RMSprop",
         lambda g: np.sqrt(0.1 * g * g - (0.1 * g)**2 + EPS),
         {"centered": True}),
        ("adam", "Adam", lambda g: np.abs(g) + EPS / np.sqrt(1 - B2)),
        ("adam_amsgrad", "Adam", lambda g: np.abs(g) + EPS / np.sqrt(1 - B2),
         {"amsgrad": True}),
        ("adamw", "AdamW", lambda g: np.abs(g) + EPS / np.sqrt(1 - B2)),
        ("nadam", "Nadam", lambda g: np.abs(g) + EPS),
        ("adamax", "Adamax", lambda g: np.abs(g) + EPS),
        ("adagrad", "Adagrad", lambda g: np.sqrt(0.1 + g * g + EPS)))
    def test_first_step_in_each_metric(self, name, metric, arguments=None):
        """After one step from a fresh state D is known from the gradient:
        w1 = prox with steps lr / D(g) of the unregularized step's result."""
        rate, l1 = 0.01, 0.5
        arguments = dict(arguments or {}, epsilon=EPS)
        plain = _trained(getattr(keras.optimizers, name)(rate, **arguments),
                         None, 1, False)
        proximal = _trained(getattr(keras.optimizers, name)(rate, **arguments),
                            tfreg.L1(l1), 1, False)
        x, y = _data()
        g = _gradient(_initial().astype(np.float64), x, y)
        expected = _soft(plain.layers[0].kernel.numpy(),
                         rate * l1 / metric(g))
        mine = proximal.layers[0].kernel.numpy()
        np.testing.assert_allclose(mine, expected, rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(mine == 0, expected == 0)

    @parameterized.named_parameters(
        ("rmsprop", "RMSprop", {}),
        ("rmsprop_centered", "RMSprop", {"centered": True}),
        ("adam", "Adam", {}), ("adam_amsgrad", "Adam", {"amsgrad": True}),
        ("adamw", "AdamW", {}), ("nadam", "Nadam", {}),
        ("adamax", "Adamax", {}), ("adagrad", "Adagrad", {}))
    def test_group_step_is_the_harmonic_mean(self, name, arguments):
        """Metric.steps over axes (from the group mean of D) equals the
        harmonic mean of the per-weight steps eta / D_i there."""
        model = _trained(getattr(keras.optimizers, name)(0.05, **arguments),
                         None, 3, False)
        metric = _updates.Metric(model.optimizer.optimizer, "adaptive")
        kernel = model.layers[0].kernel
        steps = metric.steps(kernel, 0.1).numpy()
        self.assertGreater(np.ptp(steps), 0.0)
        for axes in ([0], [1], [0, 1]):
            np.testing.assert_allclose(
                metric.steps(kernel, 0.1, axes).numpy(),
                1.0 / np.mean(1.0 / steps, axis=tuple(axes), keepdims=True),
                rtol=1e-5)

    def test_scalar_metric_and_sgd_are_ista(self):
        rate, l1 = 0.05, 0.3
        scalar = _trained(keras.optimizers.Adam(rate), tfreg.L1(l1), 1, True,
                          metric="scalar")
        plain = _trained(keras.optimizers.Adam(rate), None, 1, True)
        np.testing.assert_allclose(
            scalar.layers[0].kernel.numpy(),
            _soft(plain.layers[0].kernel.numpy(), rate * l1), rtol=1e-6,
            atol=1e-7)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            optimizers.Regularized(keras.optimizers.SGD(0.1, momentum=0.9))
            optimizers.Regularized(keras.optimizers.Ftrl(0.1),
                                   metric="scalar")

    def test_unknown_optimizer_warns_once_naming_it(self):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = _trained(keras.optimizers.Ftrl(0.05), tfreg.L1(0.3), 3,
                             True)
        messages = [str(w.message) for w in caught
                    if "tfreg.optimizers.Regularized" in str(w.message)]
        self.assertLen(messages, 1)
        self.assertIn("Ftrl", messages[0])
        self.assertIn("metric='scalar'", messages[0])
        self.assertEqual(model.optimizer.metric, "adaptive")


def _kernel_passes(regularizer=None, metric="adaptive", shape=(D, UNITS)):
    """Passes over the kernel in the optimized HLO of a compiled step of
    Adam (wrapped when `regularizer` is given) on a Dense kernel of `shape`:
    the instructions that make a kernel-shaped array plus, per instruction,
    its kernel-shaped operands."""
    rows, units = shape
    model = keras.Sequential([keras.Input((rows,)),
                              keras.layers.Dense(units, use_bias=False)])
    optimizer = keras.optimizers.Adam(0.01)
    if regularizer is not None:
        optimizer = optimizers.Regularized(optimizer, regularizer=regularizer,
                                           model=model, metric=metric)
    variables = model.trainable_variables
    rng = np.random.RandomState(0)
    x, y = (tf.constant(rng.randn(N, size).astype(np.float32))
            for size in (rows, units))

    @tf.function(jit_compile=True)
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x) - y))
        gradients = tape.gradient(loss, variables)
        if _keras.LEGACY:
            optimizer.apply_gradients(zip(gradients, variables))
        else:
            optimizer.apply(gradients, variables)

    hlo = step.experimental_get_compiler_ir()(stage="optimized_hlo")
    entry = hlo[hlo.index("\nENTRY"):]
    made = set()
    passes = 0
    for name, kind, rest in re.findall(
            r"^\s*(?:ROOT )?(%\S+) = (\S+) (.*)$", entry, re.MULTILINE):
        if kind.startswith(f"f32[{rows},{units}]"):
            made.add(name)
            passes += 1
        passes += sum(operand in made
                      for operand in re.findall(r"%[\w.-]+", rest))
    return passes


class CompiledTest(parameterized.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.adam = _kernel_passes()

    @parameterized.named_parameters(
        ("l1_adaptive", lambda: tfreg.L1(0.1), "adaptive"),
        ("l1_scalar", lambda: tfreg.L1(0.1), "scalar"),
        ("l1l2_adaptive", lambda: tfreg.L1L2(0.1, 0.1), "adaptive"))
    def test_prox_fuses_into_adams_update(self, regularizer, metric):
        """Under jit_compile the prox, its per-weight steps included (D is
        the sqrt(v) + eps Adam's own update computes), joins the loop in
        which Adam writes the kernel: no pass over the weights of its own."""
        self.assertEqual(_kernel_passes(regularizer(), metric), self.adam)

    def test_a_pass_of_its_own_is_counted(self):
        # GroupLasso's prox needs the group norms first: a reduction.
        self.assertGreater(_kernel_passes(tfreg.GroupLasso(0.1)), self.adam)

    def test_group_step_reads_adams_square_root_once(self):
        """Adam's metric costs a group prox one reduction of sqrt(v) over
        and above the scalar metric: sqrt(v) written once (Adam's own update
        reads it too) and read once by the group means; at most 3 passes.
        The kernel is large enough that XLA gives each reduction a kernel of
        its own, as on real layers."""
        shape = (64, 16)
        scalar = _kernel_passes(tfreg.GroupLasso(0.1), "scalar", shape)
        adaptive = _kernel_passes(tfreg.GroupLasso(0.1), "adaptive", shape)
        self.assertGreater(scalar, _kernel_passes(shape=shape))
        self.assertLessEqual(adaptive, scalar + 3)


class BehaviourTest(parameterized.TestCase):

    def test_zeros_stay_zero_while_the_step_is_below_the_threshold(self):
        """A zero weight w stays 0 iff Adam's step on it, lr m_hat / D, is
        at most the threshold lr l1 / D: iff |m_hat| <= l1."""
        l1, rate = 0.5, 0.05
        x, y = _data()
        model = _model(tfreg.L1(l1))
        optimizer = optimizers.Regularized(keras.optimizers.Adam(rate),
                                           model=model)
        model.compile(optimizer, "mse", jit_compile=True)
        kernel = model.layers[0].kernel
        optimizer.build(model.trainable_variables)
        # Adam's first moments, one variable (the kernel) in both generations.
        moments = optimizer.optimizer._momentums  # pylint: disable=protected-access
        self.assertLen(moments, 1)
        checked = 0
        previous = kernel.numpy()
        for t in range(1, 31):
            model.fit(x, y, batch_size=N, epochs=1, shuffle=False, verbose=0)
            m_hat = moments[0].numpy() / (1 - B1**t)
            current = kernel.numpy()
            was_zero = previous == 0
            # Off the boundary by a margin: float32 rounding decides at it.
            clear = np.abs(np.abs(m_hat) - l1) > 1e-4
            np.testing.assert_array_equal(
                (current == 0)[was_zero & clear],
                (np.abs(m_hat) <= l1)[was_zero & clear])
            checked += int(np.sum(was_zero & clear))
            previous = current
        self.assertGreater(checked, 10)

    @parameterized.named_parameters(*REGIMES)
    def test_learning_rate_schedule(self, jit):
        schedule = keras.optimizers.schedules.ExponentialDecay(
            0.08, decay_steps=1, decay_rate=0.9)
        model = _trained(keras.optimizers.Adam(schedule, epsilon=EPS),
                         tfreg.L1(0.5), 1, jit)
        constant = _trained(keras.optimizers.Adam(0.08, epsilon=EPS),
                            tfreg.L1(0.5), 1, jit)
        np.testing.assert_array_equal(model.layers[0].kernel.numpy(),
                                      constant.layers[0].kernel.numpy())
        model.fit(*_data(), batch_size=N, epochs=4, shuffle=False, verbose=0)
        expected = _adam_schedule_reference(0.5, [0.08 * 0.9**t
                                                  for t in range(5)])
        np.testing.assert_allclose(model.layers[0].kernel.numpy(), expected,
                                   rtol=1e-5, atol=1e-5)

    def test_strength_and_scheduler(self):
        x, y = _data()
        strength = tfreg.Strength(0.0, name="l1")
        model = _model(tfreg.L1(strength))
        model.compile(optimizers.Regularized(
            keras.optimizers.Adam(0.05, epsilon=EPS), model=model), "mse",
                      jit_compile=True)
        model.fit(x, y, batch_size=N, epochs=6, shuffle=False, verbose=0,
                  callbacks=[tfreg.StrengthScheduler(
                      {"l1": lambda epoch: 0.2 * epoch})])
        expected = _adam_schedule_reference(
            [0.2 * epoch for epoch in range(6)], [0.05] * 6)
        np.testing.assert_allclose(model.layers[0].kernel.numpy(), expected,
                                   rtol=1e-5, atol=1e-5)
        self.assertGreater(np.sum(expected == 0), 0)

    @parameterized.named_parameters(*REGIMES)
    def test_gradient_clipping(self, jit):
        x, y = _data()
        clip = 0.5
        model = _trained(keras.optimizers.Adam(0.05, epsilon=EPS,
                                               clipnorm=clip),
                         tfreg.L1(0.5), 10, jit)
        expected = _adam_schedule_reference(0.5, [0.05] * 10, clip=clip)
        self.assertGreater(np.linalg.norm(_gradient(_initial(), x, y)), clip)
        np.testing.assert_allclose(model.layers[0].kernel.numpy(), expected,
                                   rtol=1e-5, atol=1e-5)

    @parameterized.named_parameters(("float16", "mixed_float16"),
                                    ("bfloat16", "mixed_bfloat16"))
    def test_mixed_precision(self, policy):
        keras.mixed_precision.set_global_policy(policy)
        try:
            x, y = _data()
            model = _model(tfreg.L1(0.5))
            optimizer = optimizers.Regularized(
                keras.optimizers.Adam(0.05, epsilon=EPS), model=model)
            if policy == "mixed_float16":
                # A scale that never overflows here: every step runs, and
                # the prox must see the unscaled gradient's moments.
                optimizer = keras.mixed_precision.LossScaleOptimizer(
                    optimizer, initial_scale=2.0**6,
                    dynamic_growth_steps=1000)
            model.compile(optimizer, "mse", jit_compile=True)
            model.fit(x, y, batch_size=N, epochs=20, shuffle=False, verbose=0)
            self.assertEqual(int(model.optimizer.iterations), 20)
        finally:
            keras.mixed_precision.set_global_policy("float32")
        expected = _adam_reference("l1", 0.5, 0.05, 20)
        mine = model.layers[0].kernel.numpy()
        tolerance = 3e-2 if policy == "mixed_bfloat16" else 5e-3
        np.testing.assert_allclose(mine, expected, atol=tolerance)
        # Weights far from the threshold land on the same side of it.
        self.assertGreater(np.sum(expected == 0), 0)
        far = np.abs(_adam_reference("l1", 0.45, 0.05, 20)) > 0.05
        np.testing.assert_array_equal((mine == 0)[far], (expected == 0)[far])

    @parameterized.named_parameters(*REGIMES)
    def test_float64_weights(self, jit):
        previous = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy("float64")
        try:
            model = _trained(keras.optimizers.Adam(0.05, epsilon=EPS),
                             tfreg.GroupLasso(0.4), 20, jit)
        finally:
            keras.mixed_precision.set_global_policy(previous)
        mine = model.layers[0].kernel.numpy()
        self.assertEqual(mine.dtype, np.float64)
        expected = _adam_reference("group_lasso", 0.4, 0.05, 20)
        # Keras' float64 Adam without a penalty is as far from it (6e-6).
        np.testing.assert_allclose(mine, expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(mine == 0, expected == 0)
        self.assertGreater(np.sum(expected == 0), 0)

    def test_mirrored_strategy_equals_one_device(self):
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            mirrored = _model(tfreg.GroupLasso(0.8))
            mirrored.compile(optimizers.Regularized(
                keras.optimizers.Adam(0.05, epsilon=EPS), model=mirrored),
                             "mse")
        x, y = _data()
        mirrored.fit(x, y, batch_size=N, epochs=8, shuffle=False, verbose=0)
        expected = _adam_reference("group_lasso", 0.8, 0.05, 8)
        np.testing.assert_allclose(mirrored.layers[0].kernel.numpy(),
                                   expected, rtol=1e-5, atol=1e-5)
        self.assertGreater(np.sum(expected == 0), 0)

    def test_save_load_resumes_to_the_same_weights(self):
        x, y = _data()

        def make():
            model = _model(tfreg.L1(0.5))
            model.compile(optimizers.Regularized(
                keras.optimizers.Adam(0.05, epsilon=EPS), model=model), "mse",
                          jit_compile=True)
            return model

        straight = make()
        straight.fit(x, y, batch_size=N, epochs=8, shuffle=False, verbose=0)
        resumed = make()
        resumed.fit(x, y, batch_size=N, epochs=4, shuffle=False, verbose=0)
        path = os.path.join(tempfile.mkdtemp(), "model.keras")
        resumed.save(path)
        loaded = keras.models.load_model(path)
        optimizers.bind(loaded)
        self.assertEqual(loaded.optimizer.metric, "adaptive")
        loaded.fit(x, y, batch_size=N, epochs=4, shuffle=False, verbose=0)
        np.testing.assert_allclose(loaded.layers[0].kernel.numpy(),
                                   straight.layers[0].kernel.numpy(),
                                   rtol=1e-6, atol=1e-7)
        self.assertGreater(np.sum(straight.layers[0].kernel.numpy() == 0), 0)


def _adam_schedule_reference(strengths, rates, clip=None):
    """Adam + adaptive L1 prox with a strength and a rate per step."""
    x, y = _data()
    w = _initial().astype(np.float64)
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    if not isinstance(strengths, list):
        strengths = [strengths] * len(rates)
    for t, (strength, rate) in enumerate(zip(strengths, rates), start=1):
        g = _gradient(w, x, y)
        if clip is not None:
            g = g * min(1.0, clip / np.linalg.norm(g))
        m = B1 * m + (1 - B1) * g
        v = B2 * v + (1 - B2) * g * g
        alpha = rate * np.sqrt(1 - B2**t) / (1 - B1**t)
        w = w - alpha * m / (np.sqrt(v) + EPS)
        metric = (np.sqrt(v) + EPS) / np.sqrt(1 - B2**t)
        w = _soft(w, rate / metric * strength)
    return w


class CoupledTest(absltest.TestCase):

    def test_coupled_groups_step_by_their_mean_metric(self):
        """apply_groups' group lasso: each unit's group (kernel column, bias,
        next kernel row) is thresholded by eta_g = p_g / sum_g(1 / eta_i)."""
        keras.utils.set_random_seed(1)
        model = keras.Sequential([keras.Input((D,)),
                                  keras.layers.Dense(4, name="hidden"),
                                  keras.layers.Dense(2, name="out")])
        factor = 0.3
        penalty = tfreg.apply_groups(model, tfreg.channel_groups(model),
                                     tfreg.GroupLasso(factor),
                                     via="optimizer")
        kernel, bias, following = [variable.numpy()
                                   for variable in penalty.variables]
        rng = np.random.RandomState(0)
        steps = [rng.uniform(0.05, 2.0, value.shape).astype(np.float32)
                 for value in (kernel, bias, following)]
        new = [value.numpy() for value in penalty.proximal_update(steps)]
        for unit in range(4):
            entries = [kernel[:, unit], bias[unit:unit + 1], following[unit]]
            unit_steps = [steps[0][:, unit], steps[1][unit:unit + 1],
                          steps[2][unit]]
            size = sum(entry.size for entry in entries)
            step = size / sum(np.sum(1.0 / part) for part in unit_steps)
            norm = np.sqrt(sum(np.sum(entry**2) for entry in entries))
            scale = max(1.0 - step * factor * np.sqrt(size) / norm, 0.0)
            np.testing.assert_allclose(new[0][:, unit], kernel[:, unit] * scale,
                                       rtol=1e-5)
            np.testing.assert_allclose(new[1][unit], bias[unit] * scale,
                                       rtol=1e-5)
            np.testing.assert_allclose(new[2][unit], following[unit] * scale,
                                       rtol=1e-5)

    def test_one_scalar_step_is_eta_over_the_mean_metric(self):
        """A coupled penalty without per-weight steps gets one scalar: eta
        over the mean of D over all entries of all its variables."""
        keras.utils.set_random_seed(1)
        model = keras.Sequential([keras.Input((D,)),
                                  keras.layers.Dense(4, name="hidden"),
                                  keras.layers.Dense(2, name="out")])
        model.compile(optimizers.Regularized(keras.optimizers.Adam(0.02),
                                             model=model), "mse")
        model.fit(*_data(units=2), batch_size=N, epochs=3, verbose=0)
        metric = _updates.Metric(model.optimizer.optimizer, "adaptive")
        variables = [layer.kernel for layer in model.layers]

        class Recorder:
            received = []

            def __init__(self):
                self.variables = tuple(variables)

            def proximal_update(self, step):
                self.received.append(step)
                return [tf.convert_to_tensor(v) for v in self.variables]

        _updates.coupled_values(Recorder(), 0.1, metric)
        steps = np.concatenate([metric.steps(v, 0.1).numpy().ravel()
                                for v in variables])
        self.assertGreater(np.ptp(steps), 0.0)
        np.testing.assert_allclose(float(Recorder.received[0]),
                                   1.0 / np.mean(1.0 / steps), rtol=1e-5)

    def test_adam_zeros_whole_coupled_groups(self):
        keras.utils.set_random_seed(1)
        model = keras.Sequential([keras.Input((D,)),
                                  keras.layers.Dense(8, name="hidden"),
                                  keras.layers.Dense(2, name="out")])
        penalty = tfreg.apply_groups(model, tfreg.channel_groups(model),
                                     tfreg.GroupLasso(0.05), via="optimizer")
        model.compile(optimizers.Regularized(
            keras.optimizers.Adam(0.02), penalties=[penalty], model=model),
                      "mse",
                      jit_compile=True)
        x, y = _data(units=2)
        model.fit(x, y, batch_size=N, epochs=60, shuffle=False, verbose=0)
        kernel, bias, following = [variable.numpy()
                                   for variable in penalty.variables]
        dead = np.all(kernel == 0, axis=0)
        self.assertGreater(np.sum(dead), 0)
        np.testing.assert_array_equal(bias[dead], 0.0)
        np.testing.assert_array_equal(following[dead], 0.0)
        self.assertTrue(np.all(np.any(kernel[:, ~dead] != 0, axis=0)))


if __name__ == "__main__":
    absltest.main()
