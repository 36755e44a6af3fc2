"""Training with jit_compile=True (XLA), logging each penalty per epoch.

    python examples/jit_training.py [--epochs N] [--log-dir DIR]
"""

import argparse

import numpy as np
import tensorflow as tf

import tfreg


def main(epochs, log_dir):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 16)).astype("float32")
    y = x @ rng.normal(size=(16, 1)).astype("float32")

    model = tf.keras.Sequential([
        tf.keras.Input((16,)),
        tf.keras.layers.Dense(32, activation="relu", name="hidden"),
        tf.keras.layers.Dense(1, name="out"),
    ])
    # Attach after building: every kernel, no biases.
    tfreg.apply(model, tfreg.L1L2(l1=1e-4, l2=1e-3))
    model.compile(optimizer="adam", loss="mse", jit_compile=True)
    history = model.fit(x, y, batch_size=128, epochs=epochs, verbose=0,
                        callbacks=[tfreg.PenaltyLogger(log_dir=log_dir)])
    for epoch, (loss, penalty) in enumerate(zip(
            history.history["loss"], history.history["penalty/total"])):
        print(f"epoch {epoch + 1}: loss {loss:.4f}, penalty {penalty:.4f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--log-dir", default=None,
                        help="write TensorBoard scalars here")
    args = parser.parse_args()
    main(args.epochs, args.log_dir)
