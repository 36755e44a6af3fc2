"""Every registered regularizer trains under XLA, in float32 and bfloat16.

One shared model per dtype policy carries every registered class (kernel
regularizers on Dense branches, activity regularizers on sigmoid branches,
MeanFieldKL on a variational branch); it is trained with
`compile(jit_compile=True)` + `fit` and with a `tf.function(jit_compile=True)`
custom step, and the train function must be traced and compiled once for
all epochs.
"""

import atexit
import os
import shutil
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import tfreg
from tfreg import _keras
from tools import xla_audit

keras = _keras.keras

INPUTS = 5
UNITS = 3
BATCH = 4
STEPS = 4
EPOCHS = 3

# XLA reads its flags at the first compile of the process; from then on each
# compile of a train step dumps its module here, so counting the modules
# counts the compiles. (A penalty that makes XLA treat the step's data or
# weights as compile-time constants makes it compile the step anew on every
# call.) Only step functions are dumped: under pytest every suite shares the
# process.
XLA_DUMP = tempfile.mkdtemp(prefix="xla_dump_")
atexit.register(shutil.rmtree, XLA_DUMP, ignore_errors=True)
os.environ["XLA_FLAGS"] = " ".join(
    (os.environ.get("XLA_FLAGS", ""), f"--xla_dump_to={XLA_DUMP}",
     "--xla_dump_hlo_module_re=.*step.*")).strip()


def xla_compiles():
    """How many modules XLA has compiled in this process."""
    return len({name.split(".")[0] for name in os.listdir(XLA_DUMP)})


class CountingL2(tfreg.Regularizer):
    """L2 that counts how often its Python code runs (= traces in a graph)."""

    calls = 0

    def __init__(self, l2=0.01):
        self.l2 = l2

    def penalty(self, x):
        type(self).calls += 1
        return self.l2 * tf.reduce_sum(tf.square(x))


class PosteriorDense(keras.layers.Layer):
    """A variational Dense: one `(2, in, out)` weight of means and rhos."""

    def __init__(self, units, regularizer, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.regularizer = regularizer

    def build(self, input_shape):
        self.posterior = self.add_weight(
            name="posterior", shape=(2, input_shape[-1], self.units),
            initializer=keras.initializers.RandomNormal(stddev=0.3, seed=3),
            regularizer=self.regularizer)
        self.built = True

    def call(self, inputs):
        posterior = tf.convert_to_tensor(self.posterior)
        # A fixed draw of the noise keeps the test deterministic.
        kernel = posterior[0] + tf.nn.softplus(posterior[1]) * 0.5
        return tf.matmul(inputs, tf.cast(kernel, inputs.dtype))


def branches():
    """(name, layer) for every registered class and kind, built for XLA."""
    layers = []
    for cls in xla_audit.registered_classes():
        for kind in xla_audit.kinds_of(cls):
            name = f"{cls.__name__}_{kind}"
            if cls.__name__ == "MeanFieldKL":
                regularizer = xla_audit.build_regularizer(
                    cls, (2, INPUTS, UNITS))
                layers.append((name, PosteriorDense(UNITS, regularizer,
                                                    name=name)))
                continue
            regularizer = xla_audit.build_regularizer(cls, (INPUTS, UNITS))
            if isinstance(regularizer, str):
                raise AssertionError(f"{cls.__name__}: {regularizer}")
            if kind == "weight":
                layer = keras.layers.Dense(UNITS, kernel_regularizer=regularizer,
                                           name=name)
            else:
                layer = keras.layers.Dense(UNITS, activation="sigmoid",
                                           activity_regularizer=regularizer,
                                           name=name)
            layers.append((name, layer))
    layers.append(("counting", keras.layers.Dense(
        UNITS, kernel_regularizer=CountingL2(), name="counting")))
    return layers


def build_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((INPUTS,))
    named = branches()
    merged = keras.layers.Concatenate()([layer(inputs) for _, layer in named])
    outputs = keras.layers.Dense(1, dtype="float32", name="head")(merged)
    return keras.Model(inputs, outputs), [name for name, _ in named]


def data():
    rng = np.random.default_rng(0)
    return (rng.normal(size=(BATCH * STEPS, INPUTS)).astype(np.float32),
            rng.normal(size=(BATCH * STEPS, 1)).astype(np.float32))


def snapshot(model, names):
    return {name: [np.array(w, np.float32)
                   for w in model.get_layer(name).get_weights()]
            for name in names}


class XlaTrainingTest(parameterized.TestCase):

    def tearDown(self):
        keras.mixed_precision.set_global_policy("float32")
        super().tearDown()

    def assert_trained(self, model, names, before, inputs):
        after = snapshot(model, names)
        for name in names:
            with self.subTest(layer=name):
                for old, new in zip(before[name], after[name]):
                    self.assertTrue(np.all(np.isfinite(new)))
                self.assertFalse(all(np.array_equal(old, new) for old, new in
                                     zip(before[name], after[name])),
                                 f"{name} did not change")
        model(inputs)  # eager: the activity losses of this call, as values
        self.assertLen(model.losses, len(names))
        for loss in model.losses:
            self.assertTrue(np.isfinite(float(loss)))

    @parameterized.named_parameters(("float32", "float32"),
                                    ("mixed_bfloat16", "mixed_bfloat16"))
    def test_fit_and_custom_step_with_jit_compile(self, policy):
        keras.mixed_precision.set_global_policy(policy)
        model, names = build_model()
        x, y = data()
        compute_dtype = "bfloat16" if policy == "mixed_bfloat16" else "float32"
        self.assertEqual(model.get_layer(names[0]).compute_dtype,
                         compute_dtype)
        model(x[:BATCH])
        self.assertLen(model.losses, len(names))

        # fit, compiled by XLA; several epochs trace the train function once.
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse",
                      jit_compile=True)
        before = snapshot(model, names)
        CountingL2.calls = 0
        history = model.fit(x, y, batch_size=BATCH, epochs=EPOCHS,
                            shuffle=False, verbose=0)
        traces = CountingL2.calls
        self.assertGreaterEqual(traces, 1)
        compiles = xla_compiles()
        self.assertGreaterEqual(compiles, 1, "XLA_FLAGS were read too early")
        model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False,
                  verbose=0)
        self.assertEqual(CountingL2.calls, traces,
                         "the penalty's Python code ran again: a retrace")
        self.assertEqual(xla_compiles(), compiles,
                         "XLA compiled the train step again")
        # One trace of the train step for all EPOCHS * STEPS steps. tf_keras
        # traces its inner jit-compiled step function twice within the one
        # trace of train_function (measured: stack traces of both runs come
        # from tf_keras' run_step), Keras 3 once.
        self.assertEqual(traces, 2 if _keras.LEGACY else 1)
        if hasattr(model.train_function, "experimental_get_tracing_count"):
            # tf_keras exposes the tf.function; Keras 3 wraps it in closures.
            self.assertEqual(
                model.train_function.experimental_get_tracing_count(), 1)
        self.assertTrue(np.all(np.isfinite(history.history["loss"])))
        self.assertLess(history.history["loss"][-1], history.history["loss"][0])
        self.assert_trained(model, names, before, x[:BATCH])

        # A custom step compiled by XLA, with the replica-aware helper.
        optimizer = keras.optimizers.SGD(0.01)
        optimizer.build(model.trainable_variables)

        @tf.function(jit_compile=True)
        def step(inputs, targets):
            with tf.GradientTape() as tape:
                predictions = tf.cast(model(inputs, training=True), tf.float32)
                loss = (tf.reduce_mean(tf.square(targets - predictions))
                        + tfreg.regularization_loss(model))
            variables = model.trainable_variables
            optimizer.apply_gradients(
                zip(tape.gradient(loss, variables), variables))
            return loss

        before = snapshot(model, names)
        compiles = xla_compiles()
        losses = [float(step(x[i:i + BATCH], y[i:i + BATCH]))
                  for _ in range(EPOCHS) for i in range(0, len(x), BATCH)]
        self.assertTrue(np.all(np.isfinite(losses)))
        self.assertEqual(step.experimental_get_tracing_count(), 1)
        self.assertEqual(xla_compiles(), compiles + 1,
                         "XLA compiled the custom step more than once")
        self.assert_trained(model, names, before, x[:BATCH])


if __name__ == "__main__":
    absltest.main()
