"""Choosing a prior: Laplace, Horseshoe and SpikeAndSlab on sparse regression.

A prior's penalty is -sum(log p(w)) / num_examples; with num_examples set to
the training-set size, the mean loss plus the penalty is the MAP objective.

    python examples/choose_prior.py [--epochs N]
"""

import argparse

import numpy as np
import tensorflow as tf

import tfreg


def sparse_problem(rows=400, features=40, nonzero=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features)).astype("float32")
    w = np.zeros(features, "float32")
    w[:nonzero] = rng.choice([-2.0, 2.0], size=nonzero)
    y = x @ w + 0.1 * rng.normal(size=rows).astype("float32")
    return x, y[:, None]


def fit(regularizer, x, y, epochs):
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([
        tf.keras.Input((x.shape[1],)),
        tf.keras.layers.Dense(1, kernel_regularizer=regularizer)])
    model.compile(optimizer=tf.keras.optimizers.Adam(0.05), loss="mse",
                  jit_compile=True)
    model.fit(x, y, batch_size=100, epochs=epochs, verbose=0)
    return model.layers[0].kernel.numpy().ravel()


def main(epochs):
    x, y = sparse_problem()
    n = len(x)
    candidates = {
        "L2": tfreg.L2(1e-3),
        "Laplace": tfreg.priors.Laplace(scale=0.1, num_examples=n),
        "Horseshoe": tfreg.priors.Horseshoe(scale=0.1, num_examples=n),
        "SpikeAndSlab": tfreg.priors.SpikeAndSlab(
            spike_scale=0.01, slab_scale=2.0, num_examples=n),
    }
    for name, regularizer in candidates.items():
        w = fit(regularizer, x, y, epochs)
        print(f"{name:>12}: |w| of the 5 true features "
              f"{np.abs(w[:5]).mean():.3f}, of the 35 others "
              f"{np.abs(w[5:]).mean():.4f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=20)
    main(parser.parse_args().epochs)
