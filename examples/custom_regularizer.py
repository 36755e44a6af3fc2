"""Writing your own regularizer on tfreg's base class.

The subclass validates its arguments in __init__, implements `penalty(x)` as
pure tensor code, and is registered: it then gets float32 accumulation for
half-precision weights, a complete config, and loading without
custom_objects.

    python examples/custom_regularizer.py [--epochs N]
"""

import argparse
import os
import tempfile

import numpy as np
import tensorflow as tf

import tfreg


@tfreg.register
class MaxNormPenalty(tfreg.Regularizer):
    """factor * sum_j max(0, ||W[:, j]||_2 - limit)^2: soft max-norm."""

    def __init__(self, factor=0.01, limit=1.0):
        self.factor = tfreg.validation.non_negative("factor", factor)
        self.limit = tfreg.validation.positive("limit", limit)

    def penalty(self, x):
        norms = tf.norm(tf.reshape(x, (-1, x.shape[-1])), axis=0)
        return self.factor * tf.reduce_sum(
            tf.square(tf.nn.relu(norms - self.limit)))


def main(epochs):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 4)).astype("float32")
    y = (3.0 * x[:, :1]).astype("float32")
    model = tf.keras.Sequential([
        tf.keras.Input((4,)),
        tf.keras.layers.Dense(1, kernel_regularizer=MaxNormPenalty(1.0, 1.0))])
    model.compile(optimizer=tf.keras.optimizers.Adam(0.1), loss="mse",
                  jit_compile=True)
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=0)
    print("column norm:", float(tf.norm(model.layers[0].kernel)))

    path = os.path.join(tempfile.mkdtemp(), "model.keras")
    model.save(path)
    loaded = tf.keras.models.load_model(path)  # No custom_objects.
    print("reloaded:", loaded.layers[0].kernel_regularizer)
    assert isinstance(loaded.layers[0].kernel_regularizer, MaxNormPenalty)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=5)
    main(parser.parse_args().epochs)
