"""What several cases measure alike: weights, penalties, models, examples."""

import os
import sys

import numpy as np
import tensorflow as tf

import tfreg
from tfreg import _keras
from tools.bench.harness import Limit

keras = _keras.keras

def weights(num_params, num_tensors=50, seed=0):
    """~num_tensors float32 variables totalling ~num_params, kernel-like shapes."""
    rng = np.random.default_rng(seed)
    shares = rng.integers(1, 100, size=num_tensors).astype(float)
    sizes = (shares / shares.sum() * num_params).astype(int)
    variables = []
    for index, size in enumerate(sizes):
        if index % 5 == 4:  # a Conv2D kernel (3, 3, in, out)
            out = min(128, max(1, size // 9))
            shape = (3, 3, max(1, size // (9 * out)), out)
        else:
            out = min(256, max(1, size))
            shape = (max(1, size // out), out)
        variables.append(tf.Variable(
            rng.normal(0.0, 0.05, size=shape).astype(np.float32)))
    return variables


def penalty_fn(variables, penalty, gradient, jit):
    """A tf.function over the captured variables (never passed as arguments:
    a variable list as an argument costs call time per variable)."""
    if gradient:
        def run():
            with tf.GradientTape() as tape:
                value = tf.add_n([penalty(v) for v in variables])
            return value, tape.gradient(value, variables)
    else:
        def run():
            return tf.add_n([penalty(v) for v in variables])
    function = tf.function(run, jit_compile=jit)

    def call():
        result = function()
        (result[0] if gradient else result).numpy()
    return call


def penalty_contenders():
    """Name -> (Keras' own, tfreg's), same math."""
    return {
        "L1": (keras.regularizers.L1(0.01), tfreg.L1(0.01)),
        "L2": (keras.regularizers.L2(0.01), tfreg.L2(0.01)),
        "L1L2": (keras.regularizers.L1L2(0.01, 0.01), tfreg.L1L2(0.01, 0.01)),
    }


PRIORS = ("Normal", "Laplace", "StudentT", "Cauchy", "Horseshoe",
          "SpikeAndSlab")


def closed_form_priors():
    """Name -> every closed-form prior of tfreg.priors, default arguments."""
    return {name: getattr(tfreg.priors, name)() for name in PRIORS}


GOAL_NOT_SLOWER = "not slower than Keras' same math (Keras time / tfreg time >= 1)"


LOGS = Limit("Logarithms and exponentials on CPU", (
    "A log prior pays a logarithm per weight (Horseshoe and SpikeAndSlab "
    "also exponentials), which costs more than reading the weight. In graph "
    "mode every op is a pass over the weights (Eigen). Student-t and Cauchy "
    "take one log1p per weight; SpikeAndSlab needs an "
    "exp and a log per weight; Horseshoe takes two exps, four logs, a square root and "
    "four divisions per weight. The decoupled update of "
    "`tfreg.optimizers.Regularized` needs only the gradient, which for "
    "Normal, Laplace, Student-t, Cauchy and SpikeAndSlab takes no log."))


NOISE = Limit("Noise", (
    "Ratios of calls a few milliseconds long, and differences of two step "
    "times, move between runs by more than some gaps to their lines; L1 "
    "under XLA compiles to the same optimized program as Keras' L1, so its "
    "ratio is 1 within that noise. Compare the control and rerun "
    "with more `--rounds`."))


def value_and_gradient(regularizer, x):
    with tf.GradientTape() as tape:
        tape.watch(x)
        value = regularizer(x)
    return value, tape.gradient(value, x)


def mlp(regularizer, settings, batch=128):
    """784-1024-1024-1024-10 (tiny: 784-16-10); (model, input shape)."""
    units = settings.pick(full=(1024, 1024, 1024), tiny=(16,))
    inputs = keras.Input((784,))
    x = inputs
    for width in units:
        x = keras.layers.Dense(width, activation="relu",
                               kernel_regularizer=regularizer)(x)
    outputs = keras.layers.Dense(10, kernel_regularizer=regularizer)(x)
    return keras.Model(inputs, outputs), (batch, 784)


def cnn(regularizer, settings):
    filters_per_block = settings.pick(full=(32, 64, 128), tiny=(4,))
    side = settings.pick(full=32, tiny=8)
    inputs = keras.Input((side, side, 3))
    x = inputs
    for filters in filters_per_block:
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu",
                                kernel_regularizer=regularizer)(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(settings.pick(full=256, tiny=8), activation="relu",
                           kernel_regularizer=regularizer)(x)
    outputs = keras.layers.Dense(10, kernel_regularizer=regularizer)(x)
    return keras.Model(inputs, outputs), (64, side, side, 3)


def deep(regularizer, settings, depth=None, units=32):
    depth = depth or settings.pick(full=128, tiny=3)
    inputs = keras.Input((units,))
    x = inputs
    for _ in range(depth):
        x = keras.layers.Dense(units, activation="relu",
                               kernel_regularizer=regularizer)(x)
    outputs = keras.layers.Dense(10, kernel_regularizer=regularizer)(x)
    return keras.Model(inputs, outputs), (64, units)


MODELS = {"mlp": mlp, "cnn": cnn, "deep128": deep}


def train_step(build, regularizer, jit, seed=0,
                optimizer=lambda model: keras.optimizers.SGD(0.001)):
    """(model, its `train_on_batch` on a fixed batch), called once; the
    model is compiled with `optimizer(model)`."""
    keras.utils.set_random_seed(seed)
    model, input_shape = build(regularizer)
    model.compile(optimizer=optimizer(model),
                  loss=keras.losses.SparseCategoricalCrossentropy(
                      from_logits=True),
                  jit_compile=jit)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=input_shape).astype(np.float32)
    y = rng.integers(0, 10, size=(input_shape[0],)).astype(np.int32)
    model.train_on_batch(x, y)
    return model, lambda: model.train_on_batch(x, y)


def example(name):
    """A script of examples/ as a module (its functions, not its main)."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(
        os.path.dirname(os.path.abspath(__file__)))), "examples"))
    try:
        return __import__(name)
    finally:
        sys.path.pop(0)


def train_digits(regularizer, through, epochs, split, optimizer=None,
                 batch=64, seed=0):
    """examples/sparse_training.py's `train`, each epoch one graph call.

    The same model, initialization, optimizer (default SGD(0.1,
    momentum=0.9)), loss (the model's regularization losses added on the
    loss path) and batches as its `model.fit(batch_size=64)`: the training
    rows in a fresh random order every epoch, the last batch partial. The
    steps of an epoch run in one `tf.function` (graph mode: compiling the
    loop with XLA costs more than it saves at this size), so a run costs
    one trace rather than Keras' per-step overhead.

    Returns:
      (validation accuracy, the hidden kernel as a numpy array).
    """
    x_train, x_val, y_train, y_val = split
    model, optimizer = example("sparse_training").build(
        regularizer, through, optimizer, seed)
    loss_of = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    x, y = tf.constant(x_train), tf.constant(y_train)
    rows = len(x_train)
    variables = model.trainable_variables
    optimizer.build(variables)

    @tf.function
    def epoch(order):
        for start in tf.range(0, rows, batch):
            chosen = order[start:start + batch]
            with tf.GradientTape() as tape:
                loss = loss_of(tf.gather(y, chosen),
                               model(tf.gather(x, chosen), training=True))
                if model.losses:
                    loss += tf.add_n(model.losses)
            optimizer.apply_gradients(
                zip(tape.gradient(loss, variables), variables))

    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        epoch(tf.constant(rng.permutation(rows).astype(np.int32)))
    logits = model(x_val, training=False).numpy()
    return (float(np.mean(np.argmax(logits, -1) == y_val)),
            model.get_layer("hidden").kernel.numpy())
