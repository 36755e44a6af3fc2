"""From zeros to a smaller model: coupled group lasso, proximal steps, shrink.

A small residual CNN on scikit-learn's digits (8x8 images). Its prunable
units are traced through the graph (`tfreg.channel_groups`: a filter goes
with its BatchNormalization entries, the filters added to it in the residual
block and its consumers' input rows); one group lasso spans each coupled
group and the proximal optimizer sets whole groups to exactly 0; `tfreg.shrink`
then builds a model without them that computes the same function.

For each strength: validation accuracy, parameters and FLOPs before and
after; for the strongest strength within 1 point of the unregularized
model: CPU inference latency (shrunk / original, same run) and SavedModel
size. Writes the sparsity/accuracy trade-off as a PNG.

    python examples/residual_cnn_shrink.py [--epochs N] [--plot PATH]
"""

import argparse
import os
import tempfile
import time

import matplotlib
import numpy as np
from sklearn import datasets
from sklearn import model_selection
import tensorflow as tf

import tfreg
from tfreg import optimizers

matplotlib.use("Agg")
from matplotlib import pyplot  # pylint: disable=wrong-import-position

layers = tf.keras.layers
STRENGTHS = (0.01, 0.03, 0.1)
LEARNING_RATE = 2e-3


def digits():
    data = datasets.load_digits()
    x = (data.images / 16.0).astype("float32")[..., None]
    return model_selection.train_test_split(
        x, data.target.astype("int32"), test_size=0.25, random_state=0,
        stratify=data.target)


def residual_cnn(width=32):
    inputs = tf.keras.Input((8, 8, 1))
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
    return tf.keras.Model(inputs, layers.Dense(10, name="logits")(h))


def train(strength, data, epochs):
    """The model trained with the coupled group lasso of `strength` (0: none)."""
    x_train, x_val, y_train, y_val = data
    tf.keras.utils.set_random_seed(0)
    model = residual_cnn()
    optimizer = tf.keras.optimizers.Adam(LEARNING_RATE)
    if strength:
        groups = tfreg.channel_groups(model)
        penalty = tfreg.apply_groups(model, groups, tfreg.GroupLasso(strength),
                                     via="optimizer")
        optimizer = optimizers.Regularized(optimizer, penalties=[penalty],
                                           model=model)
    model.compile(optimizer=optimizer, metrics=["accuracy"],
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(
                      from_logits=True))
    model.fit(x_train, y_train, batch_size=64, epochs=epochs, verbose=0)
    return model


def accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, verbose=0), -1) == y))


def latency_ratio(small, model, x, repeats=30):
    """Median time of a compiled forward pass over `x`, `small` / `model`.

    The two are timed alternately, so that load on the machine hits both.
    """
    passes = [tf.function(lambda batch, m=m: m(batch, training=False))
              for m in (small, model)]
    times = [[], []]
    for forward in passes:
        forward(x)
    for _ in range(repeats):
        for forward, found in zip(passes, times):
            start = time.perf_counter()
            forward(x).numpy()
            found.append(time.perf_counter() - start)
    return float(np.median(times[0]) / np.median(times[1]))


def saved_model_bytes(model, directory):
    tfreg.export_saved_model(model, directory)
    return sum(os.path.getsize(os.path.join(root, name))
               for root, _, names in os.walk(directory) for name in names)


def main(epochs, plot):
    data = digits()
    _, x_val, _, y_val = data
    baseline = train(0.0, data, epochs)
    base_accuracy = accuracy(baseline, x_val, y_val)
    base_cost = tfreg.model_cost(baseline)
    print(f"unregularized: val accuracy {base_accuracy:.4f}, "
          f"{base_cost['params']:,} params, {base_cost['flops']:,} FLOPs")
    results = []
    for strength in STRENGTHS:
        model = train(strength, data, epochs)
        small = tfreg.shrink(model)
        logits = model.predict(x_val, verbose=0)
        gap = float(np.max(np.abs(small.predict(x_val, verbose=0) - logits)))
        # The shrunk model computes the same function (float32 rounding).
        assert gap <= 1e-4 * max(1.0, float(np.max(np.abs(logits)))), gap
        cost = tfreg.model_cost(small)
        results.append((strength, model, small, accuracy(small, x_val, y_val),
                        cost))
        print(f"GroupLasso({strength}): val accuracy "
              f"{results[-1][3]:.4f}, {cost['params']:,} params "
              f"({base_cost['params'] / cost['params']:.2f}x fewer), "
              f"{cost['flops']:,} FLOPs; shrunk vs trained max |diff| "
              f"{gap:.1e}")
    within = [result for result in results
              if result[3] >= base_accuracy - 0.01]
    strength, model, small, _, _ = (within or results[:1])[-1]
    print(f"\nshrunk model: GroupLasso({strength})"
          + ("" if within else " (none within 1 point of unregularized)"))
    tfreg.shrink_summary(model, small)
    ratio = latency_ratio(small, model, x_val)
    print(f"CPU latency shrunk / original ({len(x_val)} images): "
          f"{ratio:.2f}")
    directory = tempfile.mkdtemp()
    before = saved_model_bytes(model, os.path.join(directory, "original"))
    after = saved_model_bytes(small, os.path.join(directory, "shrunk"))
    print(f"SavedModel size: {before / 1024:.0f} KiB -> {after / 1024:.0f} "
          f"KiB ({before / after:.2f}x smaller)")

    figure, axes = pyplot.subplots(figsize=(5, 3.5))
    kept = [result[4]["params"] / base_cost["params"] for result in results]
    axes.plot(kept, [100 * result[3] for result in results], "o-",
              label="group lasso + shrink")
    for value, result in zip(kept, results):
        axes.annotate(f"{result[0]:g}", (value, 100 * result[3]),
                      textcoords="offset points", xytext=(4, 4))
    axes.axhline(100 * base_accuracy, color="gray", linestyle="--",
                 label="unregularized")
    axes.set_xlabel("parameters kept (fraction of the original)")
    axes.set_ylabel("validation accuracy (%)")
    axes.set_title("Residual CNN on digits: strength vs size")
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(plot, dpi=120)
    print(f"trade-off plot: {plot}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--plot", default="shrink_tradeoff.png")
    arguments = parser.parse_args()
    main(arguments.epochs, arguments.plot)
