"""Real architectures for the model-facing tests, in the active Keras generation.

Random weights and small inputs, nothing downloaded: `keras.applications`
models (MobileNetV2, EfficientNetB0, ResNet50), a transformer encoder block,
a nested functional model (one inner model called on two inputs, so its
weights are shared) and a subclassed model with a custom layer. Each builder
returns a built model; `inputs(model)` and `targets(model)` give a small batch
it trains on.

`kernels(model)` lists the weights a kernel selection must pick, read from
the weights' own names, and `kernel_count(model)` counts them a second way,
from the layer types; tests check both against `tfreg.apply`.
"""

import numpy as np
import tensorflow as tf

from tfreg import _keras

keras = _keras.keras

__all__ = [
    "CLASSES",
    "Gate",
    "SMALL_IMAGE_SHAPE",
    "SubclassedClassifier",
    "efficientnet_b0",
    "inputs",
    "kernel_count",
    "kernels",
    "layers",
    "mobilenet_v2",
    "nested_functional",
    "resnet50",
    "short_name",
    "subclassed",
    "targets",
    "transformer_encoder",
]

CLASSES = 3
# MobileNetV2's smallest accepted input.
APPLICATION_SHAPE = (32, 32, 3)
SMALL_IMAGE_SHAPE = (8, 8, 3)
SEQUENCE_LENGTH = 8
VOCABULARY = 50
BATCH = 4

# Weight names a kernel selection takes; every other trainable weight of the
# models here is a bias or a normalization parameter.
KERNEL_NAMES = frozenset(
    {"kernel", "depthwise_kernel", "pointwise_kernel", "embeddings"})
NON_KERNEL_NAMES = frozenset({"bias", "gamma", "beta"})
# Kernels per layer, by layer type.
_KERNELS_PER_LAYER = {
    "Conv2D": 1,
    "DepthwiseConv2D": 1,
    "SeparableConv2D": 2,  # depthwise and pointwise
    "Dense": 1,
    "Embedding": 1,
    "MultiHeadAttention": 4,  # query, key, value, output projections
    "Gate": 1,
}


def mobilenet_v2():
    return keras.applications.MobileNetV2(
        input_shape=APPLICATION_SHAPE, alpha=0.35, weights=None,
        classes=CLASSES)


def efficientnet_b0():
    return keras.applications.EfficientNetB0(
        input_shape=APPLICATION_SHAPE, weights=None, classes=CLASSES)


def resnet50():
    return keras.applications.ResNet50(
        input_shape=APPLICATION_SHAPE, weights=None, classes=CLASSES)


def transformer_encoder(width=16, heads=2, hidden=32):
    """Tokens -> embedding -> one post-norm encoder block -> classifier."""
    tokens = keras.Input((SEQUENCE_LENGTH,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(VOCABULARY, width, name="embedding")(tokens)
    attended = keras.layers.MultiHeadAttention(
        num_heads=heads, key_dim=width // heads, name="attention")(x, x)
    x = keras.layers.LayerNormalization(name="attention_norm")(
        keras.layers.Add(name="attention_residual")([x, attended]))
    expanded = keras.layers.Dense(hidden, activation="relu",
                                  name="feed_forward_in")(x)
    contracted = keras.layers.Dense(width, name="feed_forward_out")(expanded)
    x = keras.layers.LayerNormalization(name="output_norm")(
        keras.layers.Add(name="output_residual")([x, contracted]))
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    outputs = keras.layers.Dense(CLASSES, name="classifier")(x)
    return keras.Model(tokens, outputs, name="encoder")


def _features():
    """Conv -> BatchNorm -> separable conv -> depthwise conv -> pooling."""
    image = keras.Input(SMALL_IMAGE_SHAPE, name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(image)
    x = keras.layers.BatchNormalization(name="norm")(x)
    x = keras.layers.SeparableConv2D(6, 3, padding="same",
                                     name="separable")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="depthwise")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(image, x, name="features")


def nested_functional():
    """A Siamese classifier: the functional model "features" called twice."""
    features = _features()
    left = keras.Input(SMALL_IMAGE_SHAPE, name="left")
    right = keras.Input(SMALL_IMAGE_SHAPE, name="right")
    merged = keras.layers.Concatenate(name="merge")(
        [features(left), features(right)])
    outputs = keras.layers.Dense(CLASSES, name="classifier")(merged)
    return keras.Model([left, right], outputs, name="siamese")


@keras.saving.register_keras_serializable(package="tfreg_architectures")
class Gate(keras.layers.Layer):
    """`x * kernel`, one learned gain per channel.

    A custom layer's own weight, made with `add_weight` and no regularizer
    argument: `tfreg.apply` is the only way to regularize it.
    """

    def build(self, input_shape):
        self.kernel = self.add_weight(
            name="kernel", shape=(input_shape[-1],),
            initializer=keras.initializers.RandomUniform(0.5, 1.5, seed=1))
        super().build(input_shape)

    def call(self, x):
        return x * self.kernel


@keras.saving.register_keras_serializable(package="tfreg_architectures")
class SubclassedClassifier(keras.Model):
    """Conv -> BatchNorm -> separable conv -> pooling -> gate -> LayerNorm -> Dense."""

    def __init__(self, classes=CLASSES, **kwargs):
        super().__init__(**kwargs)
        self.classes = classes
        self.conv = keras.layers.Conv2D(4, 3, name="conv")
        self.norm = keras.layers.BatchNormalization(name="norm")
        self.separable = keras.layers.SeparableConv2D(6, 3, name="separable")
        self.pool = keras.layers.GlobalAveragePooling2D(name="pool")
        self.gate = Gate(name="gate")
        self.layer_norm = keras.layers.LayerNormalization(name="layer_norm")
        self.head = keras.layers.Dense(classes, name="head")

    def call(self, x, training=None):
        x = self.norm(self.conv(x), training=training)
        x = self.pool(self.separable(x))
        return self.head(self.layer_norm(self.gate(x)))

    def get_config(self):
        return {"name": self.name, "classes": self.classes}


def subclassed():
    model = SubclassedClassifier(name="subclassed")
    model(np.zeros((1,) + SMALL_IMAGE_SHAPE, np.float32))
    return model


def layers(model):
    """Every layer of `model`, nested models' layers included, each once."""
    found = {}
    stack = list(reversed(model.layers))
    while stack:
        layer = stack.pop()
        if id(layer) in found:
            continue
        found[id(layer)] = layer
        if isinstance(layer, keras.Model):
            stack.extend(reversed(layer.layers))
    return list(found.values())


def short_name(variable):
    """'kernel' for 'block/kernel:0' (tf_keras) and 'kernel' (Keras 3)."""
    return variable.name.split("/")[-1].split(":")[0]


def kernels(model):
    """The trainable weights named like kernels, each once.

    Raises AssertionError if any other trainable weight is not a bias or a
    normalization parameter, since then the selection would be unclear.
    """
    selected = []
    for variable in model.trainable_weights:
        name = short_name(variable)
        if name in KERNEL_NAMES:
            selected.append(variable)
        elif name not in NON_KERNEL_NAMES:
            raise AssertionError(f"Unexpected weight {variable.name!r}.")
    return selected


def kernel_count(model):
    """The number of kernels, from the layer types of `model`."""
    return sum(_KERNELS_PER_LAYER.get(type(layer).__name__, 0)
               for layer in layers(model))


def inputs(model, batch=BATCH, seed=0):
    """A random batch `model` accepts."""
    rng = np.random.default_rng(seed)
    def one(tensor):
        shape = (batch,) + tuple(tensor.shape[1:])
        if tf.as_dtype(tensor.dtype).is_integer:
            return rng.integers(0, VOCABULARY, size=shape).astype(np.int32)
        return rng.uniform(0.0, 1.0, size=shape).astype(np.float32)
    if isinstance(model, SubclassedClassifier):
        return rng.uniform(0.0, 1.0, size=(batch,) + SMALL_IMAGE_SHAPE
                           ).astype(np.float32)
    batches = [one(tensor) for tensor in model.inputs]
    return batches[0] if len(batches) == 1 else batches


def targets(batch=BATCH):
    """Class labels for `batch` examples (sparse)."""
    return np.arange(batch) % CLASSES
