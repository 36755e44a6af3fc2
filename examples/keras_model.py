"""A tf.keras model with tfreg regularizers: build, train, inspect, save.

    python examples/keras_model.py [--epochs N]
"""

import argparse
import os
import tempfile

import numpy as np
import tensorflow as tf

import tfreg


def main(epochs):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 8)).astype("float32")
    y = (x[:, :2].sum(axis=1) > 0).astype("int32")

    model = tf.keras.Sequential([
        tf.keras.Input((8,)),
        tf.keras.layers.Dense(16, activation="relu",
                              kernel_regularizer=tfreg.L2(1e-3),
                              activity_regularizer=tfreg.L1(1e-5)),
        tf.keras.layers.Dense(2, kernel_regularizer=tfreg.GroupLasso(1e-3),
                              bias_regularizer=tfreg.L2(1e-4)),
    ])
    model.compile(optimizer="adam", metrics=["accuracy"],
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(
                      from_logits=True))
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=0)
    tfreg.summary(model)

    # Regularizers are saved with the model; no custom_objects needed.
    path = os.path.join(tempfile.mkdtemp(), "model.keras")
    model.save(path)
    # safe_mode (the default, said here) refuses files that hold code.
    loaded = tf.keras.models.load_model(path, safe_mode=True)
    print("reloaded kernel regularizer:", loaded.layers[0].kernel_regularizer)
    np.testing.assert_allclose(loaded.predict(x, verbose=0),
                               model.predict(x, verbose=0), rtol=1e-6)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=3)
    main(parser.parse_args().epochs)
