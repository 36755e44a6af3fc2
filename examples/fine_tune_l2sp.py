"""Fine-tuning with L2-SP: stay close to the pretrained weights.

Pretrains a small model on one task, then fine-tunes it on a related task
with `tfreg.attach_l2sp`, which pulls every kernel toward its pretrained
value instead of toward zero.

    python examples/fine_tune_l2sp.py [--epochs N]
"""

import argparse
import sys

import numpy as np
import tensorflow as tf

import tfreg


def task(shift, rows=256, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 8)).astype("float32")
    y = (np.sin(x[:, :1]) + shift * x[:, 1:2]).astype("float32")
    return x, y


def main(epochs):
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([
        tf.keras.Input((8,)),
        tf.keras.layers.Dense(32, activation="tanh"),
        tf.keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    model.fit(*task(shift=0.0), batch_size=64, epochs=epochs, verbose=0)
    pretrained = [layer.kernel.numpy() for layer in model.layers]

    tfreg.attach_l2sp(model, factor=0.01)
    model.compile(optimizer="adam", loss="mse", jit_compile=True)
    x, y = task(shift=0.5, rows=64, seed=1)  # Little data: L2-SP helps most.
    model.fit(x, y, batch_size=32, epochs=epochs, verbose=0)
    tfreg.summary(model)
    drift = [float(np.abs(layer.kernel.numpy() - start).mean())
             for layer, start in zip(model.layers, pretrained)]
    print("mean |W - W_pretrained| per layer:", drift)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=5)
    main(parser.parse_args().epochs)
    sys.exit(0)
