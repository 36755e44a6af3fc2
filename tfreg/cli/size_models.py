"""The models of `tfreg size`: the built-in ones, the user's, and training.

Every model here is functional, classifies, and trains on fixed-shape
batches.
"""

import dataclasses
import numbers

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

    `models` maps each seed to the model its runs start from: a built-in
    model is trained once per seed, so that the unpruned row is a mean over
    the same seeds as the rows pruned from it; the user's one model serves
    every seed. `optimizer(rate_scale)` makes a fresh optimizer of the kind
    the model was trained with (its own, when saved compiled; else Adam),
    its learning rate times `rate_scale` (a saved schedule is kept as is);
    `from_logits` says whether the outputs are logits or probabilities.
    """
    name: str
    models: dict
    optimizer: object
    from_logits: bool
    source: str

    @property
    def model(self):
        """The first seed's model."""
        return next(iter(self.models.values()))

    def distinct(self):
        """The start models, each once."""
        return list({id(model): model for model in self.models.values()}
                    .values())


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
    """The residual CNN of examples/residual_cnn_shrink.py with
    BatchNormalization after every convolution and the hidden Dense layer,
    so that slimming reaches every channel (in the example, only the stem's
    and `wide`'s have a scale, and a stem channel is tied by the residual
    `Add` to `block_b`'s)."""
    keras.utils.set_random_seed(seed)
    layers = keras.layers

    def normalized(h, name):
        return layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(h)

    inputs = keras.Input(input_shape, name="image")
    h = layers.Conv2D(width, 3, padding="same", name="stem")(inputs)
    h = layers.ReLU()(normalized(h, "stem"))
    r = layers.Conv2D(width, 3, padding="same", name="block_a")(h)
    r = layers.ReLU()(normalized(r, "block_a"))
    r = layers.Conv2D(width, 3, padding="same", name="block_b")(r)
    h = layers.ReLU()(layers.Add()([h, normalized(r, "block_b")]))
    h = layers.MaxPooling2D(2)(h)
    h = layers.Conv2D(2 * width, 3, padding="same", name="wide")(h)
    h = layers.ReLU()(normalized(h, "wide"))
    h = layers.GlobalAveragePooling2D()(h)
    h = layers.Dense(64, name="hidden")(h)
    h = layers.ReLU()(layers.BatchNormalization(name="hidden_bn")(h))
    return keras.Model(inputs, layers.Dense(classes, name="logits")(h),
                       name="residual_cnn")


def adam(rate_scale=1.0):
    return keras.optimizers.Adam(LEARNING_RATE * rate_scale)


def loaded(path, dataset, seeds):
    """The user's trained model from `path`, its weights kept, for every
    seed of `seeds`."""
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

        def optimizer(rate_scale=1.0):
            settings = dict(config)
            rate = settings.get("learning_rate")
            if isinstance(rate, numbers.Real):  # tf_keras: a numpy float
                settings["learning_rate"] = float(rate) * rate_scale
            return kind.from_config(settings)
        what = f"its own {kind.__name__}"
    else:
        optimizer, what = adam, "Adam (saved uncompiled)"
    return Start(model.name, dict.fromkeys(seeds, model), optimizer,
                 from_logits,
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
        include=None, penalties=None, rate_scale=1.0):
    """Trains `model` on the training split, at `rate_scale` times the
    start optimizer's learning rate. With a `regularizer` (on the weights
    `include` selects) or coupled `penalties`, through
    `tfreg.optimizers.Regularized(mode="proximal")`, whose step sets whole
    groups (or single weights) to exactly 0."""
    keras.utils.set_random_seed(seed)
    optimizer = start.optimizer(rate_scale)
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
