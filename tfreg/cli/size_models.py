"""The models of `tfreg size`: the built-in ones, the user's, and training.

Every model here is functional, classifies, and trains on fixed-shape
batches.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from tfreg import _keras
from tfreg import optimizers
from tfreg.cli import UsageError
from tfreg.cli import model_file
from tfreg.cli import training

keras = _keras.keras

BATCH_SIZE = 64
LEARNING_RATE = 1e-3
# Every run compiles a new model for a few epochs: XLA's compile time
# (seconds per model) would outweigh its faster steps.
JIT = False
# The MLP of the network-slimming paper's MNIST experiment (Liu et al.
# 2017), on digits' 64 pixels; BatchNormalization gives slimming its scales.
MLP_UNITS = (500, 300)


@dataclasses.dataclass
class Start:
    """A trained model to shrink and how to train its relatives.

    `optimizer()` makes a fresh optimizer of the kind the model was trained
    with (its own, when saved compiled; else Adam); `from_logits` says
    whether the outputs are logits or probabilities.
    """
    name: str
    model: object
    optimizer: object
    from_logits: bool
    source: str


def mlp(input_shape, classes, seed):
    """Dense-BN-ReLU layers of `MLP_UNITS`, then logits."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(input_shape, name="features")
    hidden = inputs
    for index, units in enumerate(MLP_UNITS):
        hidden = keras.layers.Dense(units, name=f"dense_{index}")(hidden)
        hidden = keras.layers.BatchNormalization(name=f"bn_{index}")(hidden)
        hidden = keras.layers.ReLU(name=f"relu_{index}")(hidden)
    outputs = keras.layers.Dense(classes, name="logits")(hidden)
    return keras.Model(inputs, outputs, name="mlp")


def residual_cnn(input_shape, classes, seed, width=32):
    """The residual CNN of examples/residual_cnn_shrink.py."""
    keras.utils.set_random_seed(seed)
    layers = keras.layers
    inputs = keras.Input(input_shape, name="image")
    h = layers.Conv2D(width, 3, padding="same", name="stem")(inputs)
    h = layers.BatchNormalization(momentum=0.9, name="stem_bn")(h)
    h = layers.ReLU()(h)
    r = layers.Conv2D(width, 3, padding="same", activation="relu",
                      name="block_a")(h)
    r = layers.Conv2D(width, 3, padding="same", name="block_b")(r)
    h = layers.ReLU()(layers.Add()([h, r]))
    h = layers.MaxPooling2D(2)(h)
    h = layers.Conv2D(2 * width, 3, padding="same", name="wide")(h)
    h = layers.BatchNormalization(momentum=0.9, name="wide_bn")(h)
    h = layers.ReLU()(h)
    h = layers.GlobalAveragePooling2D()(h)
    h = layers.Dense(64, activation="relu", name="hidden")(h)
    return keras.Model(inputs, layers.Dense(classes, name="logits")(h),
                       name="residual_cnn")


def adam():
    return keras.optimizers.Adam(LEARNING_RATE)


def loaded(path, dataset):
    """The user's trained model from `path`, its weights kept."""
    try:
        model = model_file.load(path, compile=True)
    except UsageError as error:
        if "is refused" in str(error) or "cannot load" not in str(error):
            raise
        model = model_file.load(path, compile=False)
    from_logits = training.check_fits(model, path, dataset)
    inner = getattr(model, "optimizer", None)
    inner = getattr(inner, "optimizer", inner)  # A Regularized's own.
    if isinstance(inner, keras.optimizers.Optimizer):
        config = inner.get_config()
        kind = type(inner)

        def optimizer():
            return kind.from_config(dict(config))
        what = f"its own {kind.__name__}"
    else:
        optimizer, what = adam, "Adam (saved uncompiled)"
    return Start(model.name, model, optimizer, from_logits,
                 f"{path} ({model.count_params():,} parameters; {what})")


def copy(model):
    """A new model with `model`'s architecture and weights."""
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def fresh(model, seed):
    """`model`'s architecture with new initial weights drawn with `seed`."""
    keras.utils.set_random_seed(seed)
    return keras.models.clone_model(model)


def _batches(x, y, seed):
    return tf.data.Dataset.from_tensor_slices((x, y)).shuffle(
        len(x), seed=seed, reshuffle_each_iteration=True).batch(
            min(BATCH_SIZE, len(x)), drop_remainder=True)


def fit(model, start, dataset, epochs, seed, regularizer=None,
        include=None, penalties=None):
    """Trains `model` on the training split. With a `regularizer` (on the
    weights `include` selects) or coupled `penalties`, through
    `tfreg.optimizers.Regularized(mode="proximal")`, whose step sets whole
    groups (or single weights) to exactly 0."""
    keras.utils.set_random_seed(seed)
    optimizer = start.optimizer()
    if regularizer is not None or penalties:
        optimizer = optimizers.Regularized(
            optimizer, mode="proximal", regularizer=regularizer,
            include=include, penalties=penalties, model=model)
    model.compile(optimizer=optimizer, jit_compile=JIT,
                  loss=keras.losses.SparseCategoricalCrossentropy(
                      from_logits=start.from_logits))
    model.fit(_batches(dataset.x_train, dataset.y_train, seed),
              epochs=epochs, verbose=0, shuffle=False)
    return model


def accuracy(model, x, y):
    """Share of rows of `x` whose arg-max output is `y`."""
    outputs = np.asarray(model(x, training=False))
    return float(np.mean(outputs.argmax(axis=-1) == y))
