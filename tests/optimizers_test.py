"""tfreg.optimizers.Regularized: proximal and decoupled updates against numpy
references, in models (eager and jit_compile), saving, distribution."""

import os
import tempfile
import warnings

import numpy as np
import tensorflow as tf
from absl.testing import absltest
from absl.testing import parameterized

import tfreg
from tests import devices
from tools import xla_audit
from tfreg import _keras
from tfreg import optimizers
from tfreg import walk

keras = _keras.keras
devices.split_cpu()

N, D = 32, 6
REGIMES = (("eager", False), ("jit", True))


def _data(seed=0):
    rng = np.random.RandomState(seed)
    x = rng.randn(N, D).astype(np.float32)
    w = np.array([[1.5], [-2.0], [0.0], [0.05], [0.0], [0.7]], np.float32)
    y = (x @ w + 0.1 * rng.randn(N, 1)).astype(np.float32)
    return x, y


def _linear(regularizer=None, name="linear", initial=None):
    initial = (np.linspace(-1.0, 1.0, D).reshape(D, 1).astype(np.float32)
               if initial is None else initial)
    return keras.Sequential([
        keras.Input((D,)),
        keras.layers.Dense(1, use_bias=False, name=name,
                           kernel_initializer=keras.initializers.Constant(
                               initial),
                           kernel_regularizer=regularizer)])


def _compile(model, optimizer, jit):
    model.compile(optimizer, "mse", jit_compile=jit, run_eagerly=not jit)


def _fit(model, x, y, steps):
    model.fit(x, y, batch_size=N, epochs=steps, shuffle=False, verbose=0)


def _mse_gradient(w, x, y):
    return 2.0 / len(x) * x.T @ (x @ w - y)


def _soft(v, t):
    return np.sign(v) * np.maximum(np.abs(v) - t, 0.0)


def _kernel(model, index=0):
    return model.layers[index].kernel.numpy()


def _ista(x, y, w, rates, l1, clip=None):
    """w <- soft(w - lr grad, lr l1), one full batch per step."""
    w = w.astype(np.float64)
    trace = []
    for rate in rates:
        gradient = _mse_gradient(w, x, y)
        if clip is not None:
            norm = np.linalg.norm(gradient)
            gradient = gradient * min(1.0, clip / norm)
        w = _soft(w - rate * gradient, rate * l1)
        trace.append(w)
    return w, trace


class ProximalTest(parameterized.TestCase):

    @parameterized.named_parameters(*REGIMES)
    def test_ista_parity(self, jit):
        x, y = _data()
        model = _linear(tfreg.L1(0.3))
        _compile(model, optimizers.Regularized(
            keras.optimizers.SGD(0.05), model=model), jit)
        _fit(model, x, y, 25)
        expected, _ = _ista(x, y, _linear().layers[0].kernel.numpy(),
                            [0.05] * 25, 0.3)
        np.testing.assert_allclose(_kernel(model), expected, rtol=2e-5,
                                   atol=1e-6)
        self.assertEqual(np.sum(_kernel(model) == 0), np.sum(expected == 0))
        self.assertGreater(np.sum(expected == 0), 0)
        self.assertEqual(model.losses, [])

    @parameterized.named_parameters(*REGIMES)
    def test_adam_then_scalar_prox(self, jit):
        x, y = _data()
        rate, l1, b1, b2, eps = 0.05, 1.0, 0.9, 0.999, 1e-7
        model = _linear(tfreg.L1(l1))
        _compile(model, optimizers.Regularized(
            keras.optimizers.Adam(rate, epsilon=eps), model=model,
            metric="scalar"), jit)
        _fit(model, x, y, 20)
        w = _linear().layers[0].kernel.numpy().astype(np.float64)
        m = np.zeros_like(w)
        v = np.zeros_like(w)
        for t in range(1, 21):
            g = _mse_gradient(w, x, y)
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            alpha = rate * np.sqrt(1 - b2**t) / (1 - b1**t)
            w = _soft(w - alpha * m / (np.sqrt(v) + eps), rate * l1)
        # Adam divides by sqrt(v): float32 rounding of the gradients, about
        # 1e-7 relative, grows to about 1e-5 over the 20 steps.
        np.testing.assert_allclose(_kernel(model), w, rtol=1e-5, atol=1e-5)
        self.assertGreater(np.sum(w == 0), 0)
        np.testing.assert_array_equal(_kernel(model) == 0, w == 0)

    def test_zeros_are_stable(self):
        x, y = _data()
        model = _linear(tfreg.L1(0.3))
        _compile(model, optimizers.Regularized(
            keras.optimizers.SGD(0.05), model=model), True)
        previous = _kernel(model).astype(np.float64)
        stable = 0
        for _ in range(15):
            _fit(model, x, y, 1)
            current = _kernel(model)
            gradient = _mse_gradient(previous, x, y)
            # A zero whose loss gradient stays below the threshold stays 0.
            keep = (previous == 0) & (np.abs(gradient) < 0.3)
            np.testing.assert_array_equal(current[keep], 0.0)
            stable += int(keep.sum())
            previous = current.astype(np.float64)
        self.assertGreater(stable, 0)

    def test_group_lasso_zeros_whole_units(self):
        x, _ = _data()
        rng = np.random.RandomState(3)
        targets = np.concatenate([x[:, :2] @ rng.randn(2, 2),
                                  np.zeros((N, 2))], axis=1).astype(np.float32)
        model = keras.Sequential([
            keras.Input((D,)),
            keras.layers.Dense(4, use_bias=False, name="dense",
                               kernel_regularizer=tfreg.GroupLasso(0.05))])
        _compile(model, optimizers.Regularized(
            keras.optimizers.SGD(0.1), model=model), True)
        _fit(model, x, targets, 60)
        kernel = _kernel(model)
        np.testing.assert_array_equal(kernel[:, 2:], 0.0)
        self.assertTrue(np.all(np.any(kernel[:, :2] != 0, axis=0)))

    @parameterized.named_parameters(*REGIMES)
    def test_learning_rate_schedule(self, jit):
        x, y = _data()
        schedule = keras.optimizers.schedules.ExponentialDecay(
            0.08, decay_steps=1, decay_rate=0.9)
        model = _linear(tfreg.L1(0.3))
        _compile(model, optimizers.Regularized(
            keras.optimizers.SGD(schedule), model=model), jit)
        _fit(model, x, y, 12)
        rates = [0.08 * 0.9**t for t in range(12)]
        expected, _ = _ista(x, y, _linear().layers[0].kernel.numpy(), rates,
                            0.3)
        np.testing.assert_allclose(_kernel(model), expected, rtol=2e-5,
                                   atol=1e-6)

    def test_strength_and_scheduler(self):
        x, y = _data()
        strength = tfreg.Strength(0.0, name="l1")
        model = _linear(tfreg.L1(strength))
        _compile(model, optimizers.Regularized(
            keras.optimizers.SGD(0.05), model=model), True)
        model.fit(x, y, batch_size=N, epochs=6, shuffle=False, verbose=0,
                  callbacks=[tfreg.StrengthScheduler(
                      {"l1": lambda epoch: 0.1 * epoch})])
        w = _linear().layers[0].kernel.numpy().astype(np.float64)
        for epoch in range(6):
            w, _ = _ista(x, y, w, [0.05], 0.1 * epoch)
        np.testing.assert_allclose(_kernel(model), w, rtol=2e-5, atol=1e-6)

    @parameterized.named_parameters(*REGIMES)
    def test_gradient_clipping(self, jit):
        x, y = _data()
        model = _linear(tfreg.L1(0.3))
        _compile(model, optimizers.Regularized(
            keras.optimizers.SGD(0.05, clipnorm=0.5), model=model), jit)
        _fit(model, x, y, 10)
        expected, _ = _ista(x, y, _linear().layers[0].kernel.numpy(),
                            [0.05] * 10, 0.3, clip=0.5)
        np.testing.assert_allclose(_kernel(model), expected, rtol=2e-5,
                                   atol=1e-6)

    @parameterized.named_parameters(("float16", "mixed_float16"),
                                    ("bfloat16", "mixed_bfloat16"))
    def test_mixed_precision(self, policy):
        x, y = _data()
        keras.mixed_precision.set_global_policy(policy)
        try:
            model = _linear(tfreg.L1(0.3))
            optimizer = optimizers.Regularized(keras.optimizers.SGD(0.05),
                                               model=model)
            if policy == "mixed_float16":
                # Keras wraps it in a LossScaleOptimizer.
                probe = optimizers.Regularized(keras.optimizers.SGD(0.05))
                model.compile(probe, "mse")
                self.assertIs(model.optimizer.inner_optimizer, probe)
                # One whose scale never overflows here runs every step: the
                # prox must see the unscaled gradient step.
                optimizer = keras.mixed_precision.LossScaleOptimizer(
                    optimizer, initial_scale=2.0**6,
                    dynamic_growth_steps=1000)
            _compile(model, optimizer, True)
            _fit(model, x, y, 25)
            self.assertEqual(int(model.optimizer.iterations), 25)
        finally:
            keras.mixed_precision.set_global_policy("float32")
        expected, _ = _ista(x, y, _linear().layers[0].kernel.numpy(),
                            [0.05] * 25, 0.3)
        tolerance = 2e-2 if policy == "mixed_bfloat16" else 5e-3
        np.testing.assert_allclose(_kernel(model), expected, atol=tolerance)
        np.testing.assert_array_equal(_kernel(model) == 0, expected == 0)
        self.assertLen(walk.optimizer_penalties(model), 1)


class DecoupledTest(parameterized.TestCase):

    @parameterized.named_parameters(*REGIMES)
    def test_l2_half_equals_adamw(self, jit):
        x, y = _data()
        wd = 0.1

        def model():
            return keras.Sequential([
                keras.Input((D,)),
                keras.layers.Dense(3, kernel_initializer="glorot_uniform",
                                   name="a"),
                keras.layers.Dense(1, name="b")])

        keras.utils.set_random_seed(1)
        ours = model()
        keras.utils.set_random_seed(1)
        theirs = model()
        _compile(ours, optimizers.Regularized(
            keras.optimizers.Adam(0.01), mode="decoupled",
            regularizer=tfreg.L2(wd / 2), include=".", model=ours), jit)
        _compile(theirs, keras.optimizers.AdamW(0.01, weight_decay=wd), jit)
        _fit(ours, x, y, 15)
        _fit(theirs, x, y, 15)
        for mine, keras_weight in zip(ours.get_weights(), theirs.get_weights()):
            np.testing.assert_allclose(mine, keras_weight, rtol=1e-5,
                                       atol=1e-7)

    @parameterized.named_parameters(*REGIMES)
    def test_prior_gradient_step(self, jit):
        x, y = _data()
        prior = tfreg.priors.StudentT(df=3.0, scale=0.5, num_examples=4)
        model = _linear(prior)
        _compile(model, optimizers.Regularized(
            keras.optimizers.SGD(0.05), mode="decoupled", model=model), jit)
        _fit(model, x, y, 5)
        w = _linear().layers[0].kernel.numpy().astype(np.float64)
        for _ in range(5):
            z = w / (np.sqrt(3.0) * 0.5)
            prior_gradient = (4.0 / 2 / 4) * 2 * z / (np.sqrt(3.0) * 0.5) / (
                1 + z * z)
            w = w - 0.05 * prior_gradient - 0.05 * _mse_gradient(w, x, y)
        np.testing.assert_allclose(_kernel(model), w, rtol=2e-5, atol=1e-6)

    def test_autodiff_fallback(self):
        # Orthogonal has no closed form: proximal mode applies it decoupled,
        # w <- w - lr grad_loss(w) - lr grad_R(w), grad_R by autodiff.
        x, _ = _data()
        targets = np.random.RandomState(4).randn(N, 3).astype(np.float32)
        regularizer = tfreg.Orthogonal(0.5)
        model = keras.Sequential([
            keras.Input((D,)),
            keras.layers.Dense(3, use_bias=False, name="dense",
                               kernel_regularizer=regularizer)])
        _compile(model, optimizers.Regularized(
            keras.optimizers.SGD(0.1), mode="proximal", model=model), True)
        before = tf.constant(model.layers[0].kernel.numpy())
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(before)
            penalty = regularizer(before)
            loss = tf.reduce_mean(tf.square(tf.matmul(x, before) - targets))
        expected = (before - 0.1 * tape.gradient(loss, before)
                    - 0.1 * tape.gradient(penalty, before))
        _fit(model, x, targets, 1)
        self.assertEqual(model.losses, [])
        np.testing.assert_allclose(_kernel(model), expected.numpy(),
                                   rtol=1e-5, atol=1e-6)


class _JointGroupLasso:
    """A coupled penalty: factor * ||(a, b)||_2 over two whole variables."""

    def __init__(self, a, b, factor):
        self.variables = (a, b)
        self.factor = factor

    def _norm(self):
        return tf.sqrt(sum(tf.reduce_sum(tf.square(tf.convert_to_tensor(v)))
                           for v in self.variables))

    def proximal_update(self, step):
        norm = self._norm()
        scale = tf.nn.relu(norm - step * self.factor) / tf.maximum(norm, 1e-30)
        return [tf.convert_to_tensor(v) * scale for v in self.variables]

    def gradients(self):
        norm = self._norm()
        return [self.factor * tf.convert_to_tensor(v) / norm
                for v in self.variables]


class WiringTest(parameterized.TestCase):

    @parameterized.named_parameters(("proximal", "proximal"),
                                    ("decoupled", "decoupled"))
    def test_coupled_penalty(self, mode):
        x, y = _data()
        model = keras.Sequential([
            keras.Input((D,)),
            keras.layers.Dense(2, use_bias=False, name="a"),
            keras.layers.Dense(1, use_bias=False, name="b")])
        a, b = model.layers[0].kernel, model.layers[1].kernel
        joint = _JointGroupLasso(a, b, 50.0)
        _compile(model, optimizers.Regularized(
            keras.optimizers.SGD(0.01), mode=mode, penalties=[joint],
            model=model), True)
        wa, wb = a.numpy().astype(np.float64), b.numpy().astype(np.float64)
        _fit(model, x, y, 1)
        # One step of the numpy reference.
        h = x @ wa
        residual = 2.0 / N * (h @ wb - y)
        ga, gb = x.T @ (residual @ wb.T), h.T @ residual
        norm = np.sqrt(np.sum(wa**2) + np.sum(wb**2))
        if mode == "proximal":
            va, vb = wa - 0.01 * ga, wb - 0.01 * gb
            n2 = np.sqrt(np.sum(va**2) + np.sum(vb**2))
            scale = max(n2 - 0.5, 0.0) / n2
            expected = (va * scale, vb * scale)
        else:
            expected = (wa - 0.01 * ga - 0.5 * wa / norm,
                        wb - 0.01 * gb - 0.5 * wb / norm)
        np.testing.assert_allclose(a.numpy(), expected[0], rtol=1e-5,
                                   atol=1e-6)
        np.testing.assert_allclose(b.numpy(), expected[1], rtol=1e-5,
                                   atol=1e-6)

    def test_penalties_stay_visible(self):
        x, y = _data()
        model = _linear(tfreg.L2(0.5))
        _compile(model, optimizers.Regularized(
            keras.optimizers.SGD(0.01), model=model), True)
        history = model.fit(x, y, epochs=2, verbose=0,
                            callbacks=[tfreg.PenaltyLogger()])
        self.assertEqual(model.losses, [])
        rows = tfreg.summary(model, print_fn=None)
        self.assertEqual([row["path"] for row in rows], ["linear/kernel"])
        kernel = _kernel(model)
        self.assertAlmostEqual(rows[0]["penalty"],
                               0.5 * float(np.sum(kernel**2)), places=5)
        self.assertLen(history.history["penalty/linear/kernel"], 2)
        via = [weight.via for weight in walk.regularized_weights(model)]
        self.assertEqual(via, [walk.OPTIMIZER])

    def test_release_puts_regularizers_back(self):
        model = _linear(tfreg.L2(0.5))
        optimizer = optimizers.Regularized(keras.optimizers.SGD(0.01),
                                           model=model)
        optimizer.build(model.trainable_variables)
        self.assertEqual(model.losses, [])
        self.assertEqual(optimizer.release(), ["linear/kernel"])
        self.assertLen(model.losses, 1)

    def test_selection_by_path_attaches_nothing(self):
        model = keras.Sequential([
            keras.Input((D,)),
            keras.layers.Dense(3, name="encoder"),
            keras.layers.Dense(1, name="head")])
        optimizer = optimizers.Regularized(
            keras.optimizers.SGD(0.1), mode="decoupled",
            regularizer=tfreg.L2(0.1), exclude="head", model=model)
        _compile(model, optimizer, True)
        x, y = _data()
        _fit(model, x, y, 1)
        paths = [path for _, _, _, path in optimizer._state.entries]  # pylint: disable=protected-access
        self.assertLen(paths, 1)
        self.assertIn("encoder", paths[0])
        self.assertTrue(paths[0].endswith("kernel"))
        self.assertIsNone(model.layers[0].kernel_regularizer)
        self.assertEqual(model.losses, [])

    @parameterized.named_parameters(("adam", "adam"), ("sgd", "sgd"))
    def test_save_load_resumes_to_the_same_weights(self, name):
        x, y = _data()

        def make(inner):
            keras.utils.set_random_seed(2)
            model = keras.Sequential([
                keras.Input((D,)),
                keras.layers.Dense(4, name="a",
                                   kernel_regularizer=tfreg.GroupLasso(0.05)),
                keras.layers.Dense(1, name="b",
                                   kernel_regularizer=tfreg.L1(0.01))])
            _compile(model, optimizers.Regularized(
                inner, regularizer=tfreg.L2(0.01), include="bias",
                model=model), True)
            return model

        def inner():
            return (keras.optimizers.Adam(0.02) if name == "adam"
                    else keras.optimizers.SGD(0.05, momentum=0.9))

        straight = make(inner())
        _fit(straight, x, y, 6)
        resumed = make(inner())
        _fit(resumed, x, y, 3)
        path = os.path.join(tempfile.mkdtemp(), "model.keras")
        resumed.save(path)
        loaded = keras.models.load_model(path)
        optimizers.bind(loaded)
        self.assertEqual(loaded.losses, [])
        self.assertEqual(int(loaded.optimizer.iterations), 3)
        self.assertEqual(loaded.optimizer.regularizer.get_config(),
                         {"l2": 0.01})
        _fit(loaded, x, y, 3)
        for mine, expected in zip(loaded.get_weights(), straight.get_weights()):
            np.testing.assert_allclose(mine, expected, rtol=1e-5, atol=1e-7)
        self.assertLen(loaded.optimizer.tfreg_penalties(), 4)

    def test_checkpoint_resumes_to_the_same_weights(self):
        x, y = _data()

        def make():
            model = _linear(tfreg.L1(0.1))
            _compile(model, optimizers.Regularized(
                keras.optimizers.Adam(0.05), model=model), True)
            return model

        straight = make()
        _fit(straight, x, y, 6)
        first = make()
        _fit(first, x, y, 3)
        directory = tempfile.mkdtemp()
        prefix = tf.train.Checkpoint(model=first,
                                     optimizer=first.optimizer).save(
                                         os.path.join(directory, "ckpt"))
        second = make()
        second.optimizer.build(second.trainable_variables)
        tf.train.Checkpoint(model=second, optimizer=second.optimizer).restore(
            prefix).assert_existing_objects_matched()
        self.assertEqual(int(second.optimizer.iterations), 3)
        _fit(second, x, y, 3)
        np.testing.assert_allclose(_kernel(second), _kernel(straight),
                                   rtol=1e-6, atol=1e-7)

    def test_mirrored_strategy_equals_one_device(self):
        x, y = _data()
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            distributed = _linear(tfreg.L1(0.3))
            _compile(distributed, optimizers.Regularized(
                keras.optimizers.SGD(0.05), model=distributed), False)
        _fit(distributed, x, y, 10)
        expected, _ = _ista(x, y, _linear().layers[0].kernel.numpy(),
                            [0.05] * 10, 0.3)
        np.testing.assert_allclose(_kernel(distributed), expected, rtol=2e-5,
                                   atol=1e-6)

    def test_unbound_optimizer_asks_for_the_model(self):
        x, y = _data()
        model = _linear(tfreg.L1(0.3))
        _compile(model, optimizers.Regularized(keras.optimizers.SGD(0.05)),
                 True)
        with self.assertRaisesRegex(ValueError, "tfreg.optimizers.bind"):
            _fit(model, x, y, 1)
        optimizers.bind(model)
        self.assertEqual(model.losses, [])
        _fit(model, x, y, 1)
        self.assertEqual(model.losses, [])

    def test_keras3_built_before_the_step_needs_no_model(self):
        if _keras.LEGACY:
            self.skipTest("tf_keras keeps regularizers in the layers.")
        model = _linear(tfreg.L1(0.3))
        optimizer = optimizers.Regularized(keras.optimizers.SGD(0.05))
        _compile(model, optimizer, True)
        optimizer.build(model.trainable_variables)
        self.assertEqual(model.losses, [])
        self.assertLen(optimizer.tfreg_penalties(), 1)

    def test_frozen_weights_stay_in_the_loss(self):
        if not _keras.LEGACY:
            self.skipTest("Keras 3 puts no frozen weight's penalty in the loss.")
        model = keras.Sequential([
            keras.Input((D,)),
            keras.layers.Dense(2, name="frozen",
                               kernel_regularizer=tfreg.L2(0.1)),
            keras.layers.Dense(1, name="head",
                               kernel_regularizer=tfreg.L2(0.1))])
        model.layers[0].trainable = False
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            optimizers.Regularized(keras.optimizers.SGD(0.1), model=model)
        self.assertTrue(any("frozen/kernel" in str(w.message) for w in caught))
        self.assertLen(model.losses, 1)

    def test_pretrained_backbone_regularized_through_the_optimizer(self):
        if _keras.LEGACY:
            self.skipTest("keras_hub is Keras 3 only.")
        import keras_hub  # pylint: disable=g-import-not-at-top
        backbone = keras_hub.models.BertBackbone(
            vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=8,
            intermediate_dim=16, max_sequence_length=8, dropout=0.0)
        inputs = backbone.input
        outputs = keras.layers.Dense(2, name="head")(
            backbone(inputs)["pooled_output"])
        model = keras.Model(inputs, outputs)
        optimizer = optimizers.Regularized(
            keras.optimizers.Adam(1e-3), mode="decoupled",
            regularizer=tfreg.L2(1e-2), exclude="head", model=model)
        model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(
            from_logits=True))
        rng = np.random.RandomState(0)
        batch = {"token_ids": rng.randint(0, 50, (4, 8)),
                 "segment_ids": np.zeros((4, 8), np.int32),
                 "padding_mask": np.ones((4, 8), bool)}
        labels = rng.randint(0, 2, (4,))
        model.fit(batch, labels, epochs=1, verbose=0)
        selected = sorted(path for _, _, _, path in optimizer._state.entries)  # pylint: disable=protected-access
        self.assertNotEmpty(selected)
        self.assertFalse(any("head" in path for path in selected))
        self.assertEqual(model.losses, [])
        path = os.path.join(tempfile.mkdtemp(), "bert.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
        self.assertIsInstance(loaded.optimizer, optimizers.Regularized)
        self.assertEqual(
            sorted(p for _, _, _, p in loaded.optimizer._state.entries),  # pylint: disable=protected-access
            selected)
        loaded.fit(batch, labels, epochs=1, verbose=0)
        model.fit(batch, labels, epochs=1, verbose=0)
        for mine, expected in zip(loaded.get_weights(), model.get_weights()):
            np.testing.assert_allclose(mine, expected, rtol=1e-5, atol=1e-6)

    @parameterized.named_parameters(("proximal", "proximal", "SGD"),
                                    ("proximal_adam", "proximal", "Adam"),
                                    ("decoupled", "decoupled", "SGD"))
    def test_xla_audit_of_the_update(self, mode, inner):
        regularizers = [tfreg.L1(0.1), tfreg.L1L2(0.1, 0.1), tfreg.L1L2(0.1, 0.1),
                        tfreg.GroupLasso(0.1), tfreg.SparseGroupLasso(),
                        tfreg.NuclearNorm(0.1), tfreg.priors.StudentT(),
                        tfreg.priors.SpikeAndSlab(), tfreg.priors.Horseshoe(),
                        tfreg.Orthogonal(0.1)]
        model = keras.Sequential([keras.Input((4,))] + [
            keras.layers.Dense(4, name=f"d{index}", kernel_regularizer=reg)
            for index, reg in enumerate(regularizers)])
        optimizer = optimizers.Regularized(
            getattr(keras.optimizers, inner)(0.1), mode=mode, model=model)
        optimizer.build(model.trainable_variables)

        def update(step):
            optimizer._regularize(step, ("gradient", "autodiff"))  # pylint: disable=protected-access
            optimizer._regularize(step, ("prox",))  # pylint: disable=protected-access
            return step

        hlo = tf.function(update, jit_compile=True, autograph=False
                          ).experimental_get_compiler_ir(tf.constant(0.1))(
                              stage="hlo")
        self.assertEqual(xla_audit.check_hlo(hlo), [])
        self.assertLen(optimizer.tfreg_penalties(), len(regularizers))

    def test_bad_arguments(self):
        sgd = keras.optimizers.SGD(0.1)
        with self.assertRaisesRegex(ValueError, "argument `mode`.*mode=sideways"):
            optimizers.Regularized(sgd, mode="sideways")
        with self.assertRaisesRegex(ValueError, "argument `metric`.*metric=adam"):
            optimizers.Regularized(sgd, metric="adam")
        with self.assertRaisesRegex(TypeError, "argument `optimizer`.*'adam'"):
            optimizers.Regularized("adam")
        with self.assertRaisesRegex(TypeError, "argument `optimizer`"):
            optimizers.Regularized(optimizers.Regularized(sgd))
        with self.assertRaisesRegex(TypeError, "argument `include`.*3"):
            optimizers.Regularized(sgd, include=3)
        with self.assertRaisesRegex(ValueError, "argument `exclude`"):
            optimizers.Regularized(sgd, exclude="(")
        with self.assertRaisesRegex(TypeError, r"argument `penalties\[0\]`"):
            optimizers.Regularized(sgd, penalties=[object()])
        with self.assertRaisesRegex(TypeError, "argument `model`"):
            optimizers.Regularized(sgd, model="model")
        model = _linear()
        model.compile(sgd, "mse")
        with self.assertRaisesRegex(ValueError, "argument `model`"):
            optimizers.bind(model)

    def test_config_round_trip(self):
        optimizer = optimizers.Regularized(
            keras.optimizers.Adam(0.01), mode="decoupled", metric="scalar",
            regularizer=tfreg.L1L2(0.1, 0.2), include="dense", exclude="bias")
        config = optimizer.get_config()
        clone = optimizers.Regularized.from_config(config)
        self.assertEqual(clone.get_config(), config)
        self.assertEqual(
            keras.optimizers.deserialize(
                keras.optimizers.serialize(optimizer)).get_config(), config)


if __name__ == "__main__":
    absltest.main()
