"""tfreg.optimizers.Regularized with an elementwise regularizer on weights
that a coupled group penalty also covers: both apply (the prox of the sum
by composition, the sum of the decoupled steps) or the optimizer refuses."""

import numpy as np
import tensorflow as tf
from absl.testing import absltest
from absl.testing import parameterized

import tfreg
from tests import devices
from tfreg import _keras
from tfreg import optimizers

keras = _keras.keras
devices.split_cpu()

D, UNITS, OUT, N = 5, 4, 2, 32
PROBE_UNITS, PROBE_FACTOR = 8, 0.1
RATE, STEPS = 0.05, 4
L1, L2, FACTOR = 1.5, 0.5, 1.2
B1, B2, EPS = 0.9, 0.999, 1e-7


def _model(units=UNITS):
    keras.utils.set_random_seed(3)
    return keras.Sequential([keras.Input((D,)),
                             keras.layers.Dense(units, name="hidden"),
                             keras.layers.Dense(OUT, name="out")])


def _soft(v, t):
    return np.sign(v) * np.maximum(np.abs(v) - t, 0.0)


def _group_shrink(values, steps):
    """The coupled group lasso's prox of hidden unit u's group (kernel
    column u, bias u, out kernel row u), eta_g = p_g / sum_g(1 / eta_i)."""
    kernel, bias, following = values
    k_steps, b_steps, f_steps = steps
    kernel, bias, following = kernel.copy(), bias.copy(), following.copy()
    for unit in range(UNITS):
        size = D + 1 + OUT
        step = size / (np.sum(1.0 / k_steps[:, unit]) + 1.0 / b_steps[unit]
                       + np.sum(1.0 / f_steps[unit]))
        norm = np.sqrt(np.sum(kernel[:, unit]**2) + bias[unit]**2
                       + np.sum(following[unit]**2))
        scale = max(1.0 - step * FACTOR * np.sqrt(size) / norm, 0.0)
        kernel[:, unit] *= scale
        bias[unit] *= scale
        following[unit] *= scale
    return [kernel, bias, following]


def _reference(initial, gradients, inner, l2):
    """Iterates of `inner`'s step, then per step: soft threshold of the
    kernels by eta_i L1, the group shrink, and / (1 + 2 eta_i l2).
    `initial`, `gradients[t]`: hidden kernel, hidden bias, out kernel, out
    bias (the last: no penalty)."""
    w = [value.astype(np.float64) for value in initial]
    m = [np.zeros_like(value) for value in w]
    v = [np.zeros_like(value) for value in w]
    for t, grads in enumerate(gradients, start=1):
        steps = []
        for i, g in enumerate(grads):
            if inner == "SGD":
                w[i] = w[i] - RATE * g
                steps.append(np.full_like(w[i], RATE))
                continue
            m[i] = B1 * m[i] + (1 - B1) * g
            v[i] = B2 * v[i] + (1 - B2) * g * g
            alpha = RATE * np.sqrt(1 - B2**t) / (1 - B1**t)
            w[i] = w[i] - alpha * m[i] / (np.sqrt(v[i]) + EPS)
            steps.append(RATE / ((np.sqrt(v[i]) + EPS) / np.sqrt(1 - B2**t)))
        for i in (0, 2):  # the kernels
            w[i] = _soft(w[i], steps[i] * L1)
        w[:3] = _group_shrink(w[:3], steps[:3])
        for i in (0, 2):
            w[i] = w[i] / (1.0 + 2.0 * steps[i] * l2)
    return w


def _penalty(model, factor=FACTOR):
    return tfreg.apply_groups(model, tfreg.channel_groups(model),
                              tfreg.GroupLasso(factor), via="optimizer")


def _apply(optimizer, gradients, variables, jit):
    def step(grads):
        if _keras.LEGACY:
            optimizer.apply_gradients(zip(grads, variables))
        else:
            optimizer.apply(grads, variables)
        return 0

    step = tf.function(step, jit_compile=True) if jit else step
    for grads in gradients:
        step([tf.constant(g) for g in grads])


class CompositionTest(parameterized.TestCase):

    @parameterized.product(inner=("SGD", "Adam"), jit=(False, True),
                           l2=(0.0, L2))
    def test_iterates_match_threshold_then_group_shrink(self, inner, jit, l2):
        model = _model()
        penalty = _penalty(model)
        variables = model.trainable_variables
        regularizer = tfreg.L1L2(L1, l2) if l2 else tfreg.L1(L1)
        optimizer = optimizers.Regularized(
            getattr(keras.optimizers, inner)(RATE), regularizer=regularizer,
            penalties=[penalty], model=model)
        rng = np.random.RandomState(0)
        gradients = [[rng.randn(*v.shape).astype(np.float32)
                      for v in variables] for _ in range(STEPS)]
        initial = [v.numpy() for v in variables]
        _apply(optimizer, gradients, variables, jit)
        expected = _reference(initial, gradients, inner, l2)
        for variable, want in zip(variables, expected):
            np.testing.assert_allclose(variable.numpy(), want, rtol=1e-4,
                                       atol=1e-5, err_msg=variable.name)
        # The reference reaches exact zeros of both kinds.
        kernel = expected[0]
        self.assertTrue(np.any((kernel == 0) & np.any(kernel != 0, axis=0)))
        self.assertTrue(np.any(np.all(kernel == 0, axis=0)))

    @parameterized.product(mode=("decoupled", "proximal"))
    def test_decoupled_steps_add_both_gradients(self, mode):
        """Decoupled: w - eta (grad R + grad G) from the same weights; in
        proximal mode a regularizer with no closed-form prox likewise takes
        its decoupled step before the wrapped one, the group prox after."""
        model = _model()
        penalty = _penalty(model)
        variables = model.trainable_variables
        regularizer = (tfreg.L2(L2) if mode == "decoupled"
                       else tfreg.priors.StudentT())
        optimizer = optimizers.Regularized(
            keras.optimizers.SGD(RATE), mode=mode, regularizer=regularizer,
            penalties=[penalty], model=model)
        zeros = [np.zeros(v.shape, np.float32) for v in variables]
        before = [v.numpy().astype(np.float64) for v in variables]
        with tf.GradientTape() as tape:
            value = tf.add_n([regularizer(variables[i]) for i in (0, 2)])
        r_grads = [g.numpy() for g in tape.gradient(
            value, [variables[0], variables[2]])]
        g_grads = [g.numpy() for g in penalty.gradients()]
        _apply(optimizer, [zeros], variables, jit=True)
        expected = [before[0] - RATE * r_grads[0], before[1],
                    before[2] - RATE * r_grads[1], before[3]]
        if mode == "decoupled":
            for i in range(3):
                expected[i] = expected[i] - RATE * g_grads[i]
        else:
            sgd = [np.full(v.shape, RATE) for v in expected[:3]]
            expected[:3] = _group_shrink(expected[:3], sgd)
        for variable, want in zip(variables, expected):
            np.testing.assert_allclose(variable.numpy(), want, rtol=1e-5,
                                       atol=1e-7, err_msg=variable.name)


class ProbeTest(absltest.TestCase):
    """In a model trained with Adam under jit_compile."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        rng = np.random.RandomState(0)
        cls.x = rng.randn(N, D).astype(np.float32)
        cls.y = (cls.x[:, :OUT] + 0.1 * rng.randn(N, OUT)).astype(np.float32)

    def _zeros(self, l1, group):
        model = _model(units=PROBE_UNITS)
        penalties = [_penalty(model, group)] if group else []
        model.compile(optimizers.Regularized(
            keras.optimizers.Adam(0.02),
            regularizer=tfreg.L1(0.05) if l1 else None,
            penalties=penalties, model=model), "mse", jit_compile=True)
        model.fit(self.x, self.y, batch_size=N, epochs=40, shuffle=False,
                  verbose=0)
        return [v.numpy() == 0 for v in model.trainable_variables]

    def test_both_zero_at_least_what_each_does(self):
        l1 = self._zeros(True, 0.0)
        group = self._zeros(False, PROBE_FACTOR)
        both = self._zeros(True, PROBE_FACTOR)
        counts = [sum(int(np.sum(z)) for z in zeros)
                  for zeros in (l1, group, both)]
        self.assertGreater(counts[0], 0)
        self.assertGreater(counts[1], 0)
        self.assertGreaterEqual(counts[2], max(counts[:2]))
        # Both kinds of zero: single kernel entries and whole units.
        kernel = both[0]
        self.assertTrue(np.any(np.all(kernel, axis=0)))
        self.assertTrue(np.any(kernel & ~np.all(kernel, axis=0)))


class RefusalTest(parameterized.TestCase):

    @parameterized.named_parameters(
        ("group_lasso", tfreg.GroupLasso(0.1), "GroupLasso"),
        ("nuclear_norm", tfreg.NuclearNorm(0.1), "NuclearNorm"),
        ("laplace_off_zero", tfreg.priors.Laplace(1.0, loc=0.5), "Laplace"))
    def test_prox_without_exact_composition_raises(self, regularizer, name):
        model = _model()
        optimizer = optimizers.Regularized(
            keras.optimizers.SGD(RATE), regularizer=regularizer,
            penalties=[_penalty(model)], model=model)
        path = model.layers[0].kernel.path if not _keras.LEGACY else (
            model.layers[0].kernel.name.split(":")[0])
        expected = (
            "Invalid value for argument `regularizer`. Expected an L1, L2, "
            "L1L2, priors.Laplace or priors.Normal (loc=0) on a weight that "
            "a coupled penalty also covers in mode='proximal': the prox of "
            "their sum has no exact composition otherwise. Use "
            "mode='decoupled' or leave the weight out (`exclude`). "
            f"Received: regularizer={regularizer!r} on the weight {path!r}")
        with self.assertRaises(ValueError) as raised:
            optimizer.build(model.trainable_variables)
        self.assertEqual(str(raised.exception), expected)
        self.assertIn(name, expected)

    def test_decoupled_and_uncovered_weights_accept_it(self):
        model = _model()
        penalty = _penalty(model)
        optimizers.Regularized(
            keras.optimizers.SGD(RATE), mode="decoupled",
            regularizer=tfreg.GroupLasso(0.1), penalties=[penalty],
            model=model).build(model.trainable_variables)
        model = _model()
        penalty = _penalty(model)
        optimizers.Regularized(
            keras.optimizers.SGD(RATE), regularizer=tfreg.GroupLasso(0.1),
            include="out/bias", penalties=[penalty],
            model=model).build(model.trainable_variables)

    def test_apply_groups_via_loss_keeps_the_anchor_regularizer(self):
        model = keras.Sequential([
            keras.Input((D,)),
            keras.layers.Dense(UNITS, name="hidden",
                               kernel_regularizer=tfreg.L1(0.1)),
            keras.layers.Dense(OUT, name="out")])
        with self.assertRaises(ValueError) as raised:
            tfreg.apply_groups(model, tfreg.channel_groups(model),
                               tfreg.GroupLasso(0.1))
        self.assertEqual(
            str(raised.exception),
            "Invalid value for argument `via`. Expected 'optimizer' when the "
            "weight that would carry the coupled penalty already has a "
            "regularizer (pass both to tfreg.optimizers.Regularized, whose "
            "proximal mode applies both). Received: via='loss' with "
            "L1(l1=0.1) on 'hidden/kernel'")


if __name__ == "__main__":
    absltest.main()
