"""From zeros to a smaller model: coupled group lasso, proximal steps, shrink.

A small residual CNN on scikit-learn's digits (8x8 images) is trained
without regularization (Adam), then trained on with a group lasso over its
coupled channel groups (`tfreg.channel_groups`: a filter goes with its
BatchNormalization entries, the filters added to it in the residual block
and its consumers' input rows) through the proximal optimizer, which sets
whole groups to exactly 0. `tfreg.shrink` builds a model without them that
computes the same function (checked), which is then fine-tuned briefly.

For each of three strengths: parameters and FLOPs, validation accuracy of
the shrunk and the fine-tuned model. For the strongest strength within 1
point of the unregularized model: CPU inference latency (shrunk /
original, timed alternately in this run) and SavedModel size. Writes the
sparsity/accuracy trade-off as a PNG.

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
STRENGTHS = (0.01, 0.015, 0.02)
LEARNING_RATE = 2e-3
PROXIMAL_RATE = 0.01


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


def _compile(model, optimizer):
    model.compile(optimizer=optimizer, metrics=["accuracy"],
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(
                      from_logits=True))


def train(data, epochs):
    """The unregularized model, trained with Adam."""
    x_train, _, y_train, _ = data
    tf.keras.utils.set_random_seed(0)
    model = residual_cnn()
    _compile(model, tf.keras.optimizers.Adam(LEARNING_RATE))
    model.fit(x_train, y_train, batch_size=64, epochs=epochs, verbose=0)
    return model


def prune(baseline, strength, data, epochs):
    """`baseline` trained on with the coupled group lasso (proximal SGD),
    shrunk, then fine-tuned without the penalty: (pruned, shrunk, tuned)."""
    x_train, _, y_train, _ = data
    tf.keras.utils.set_random_seed(1)
    model = tf.keras.models.clone_model(baseline)
    model.set_weights(baseline.get_weights())
    groups = tfreg.channel_groups(model)
    penalty = tfreg.apply_groups(model, groups, tfreg.GroupLasso(strength),
                                 via="optimizer")
    _compile(model, optimizers.Regularized(
        tf.keras.optimizers.SGD(PROXIMAL_RATE, momentum=0.9),
        penalties=[penalty], model=model))
    model.fit(x_train, y_train, batch_size=64, epochs=epochs, verbose=0)
    small = tfreg.shrink(model)
    tuned = tf.keras.models.clone_model(small)
    tuned.set_weights(small.get_weights())
    _compile(tuned, tf.keras.optimizers.Adam(LEARNING_RATE / 2))
    tuned.fit(x_train, y_train, batch_size=64, epochs=epochs, verbose=0)
    return model, small, tuned


def accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, verbose=0), -1) == y))


def latency_ratio(small, model, x, repeats=30):
    """Median time of a compiled forward pass over `x`, `small` / `model`.

    The two are timed alternately, so that load on the machine hits both.
    """
    def compiled(network):
        return tf.function(lambda batch: network(batch, training=False))

    passes = [compiled(small), compiled(model)]
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


def measure(epochs, strengths=STRENGTHS):
    """Trains, prunes and shrinks at each strength; returns the outcome.

    The chosen result is the strongest strength whose fine-tuned model is
    within 1 point of the unregularized one (else the first): its latency
    ratio (shrunk / original) and SavedModel sizes are measured.
    """
    data = digits()
    _, x_val, _, y_val = data
    baseline = train(data, epochs)
    outcome = {"accuracy": accuracy(baseline, x_val, y_val),
               "cost": tfreg.model_cost(baseline), "results": []}
    for strength in strengths:
        model, small, tuned = prune(baseline, strength, data,
                                    max(1, epochs // 2))
        logits = model.predict(x_val, verbose=0)
        gap = float(np.max(np.abs(small.predict(x_val, verbose=0) - logits)))
        # The shrunk model computes the same function (float32 rounding).
        assert gap <= 1e-4 * max(1.0, float(np.max(np.abs(logits)))), gap
        outcome["results"].append({
            "strength": strength, "gap": gap, "cost": tfreg.model_cost(small),
            "shrunk_accuracy": accuracy(small, x_val, y_val),
            "tuned_accuracy": accuracy(tuned, x_val, y_val), "model": small})
    within = [result for result in outcome["results"]
              if result["tuned_accuracy"] >= outcome["accuracy"] - 0.01]
    chosen = (within or outcome["results"][:1])[-1]
    directory = tempfile.mkdtemp()
    outcome.update(
        chosen=chosen, within=bool(within), baseline=baseline,
        latency_ratio=latency_ratio(chosen["model"], baseline, x_val),
        saved_before=saved_model_bytes(
            baseline, os.path.join(directory, "original")),
        saved_after=saved_model_bytes(
            chosen["model"], os.path.join(directory, "shrunk")))
    return outcome


def plot_tradeoff(outcome, path):
    """Validation accuracy against the fraction of parameters kept."""
    results = outcome["results"]
    figure, axes = pyplot.subplots(figsize=(5, 3.5))
    kept = [result["cost"]["params"] / outcome["cost"]["params"]
            for result in results]
    axes.plot(kept, [100 * result["shrunk_accuracy"] for result in results],
              "s:", label="shrunk")
    axes.plot(kept, [100 * result["tuned_accuracy"] for result in results],
              "o-", label="shrunk, fine-tuned")
    for value, result in zip(kept, results):
        axes.annotate(f"{result['strength']:g}",
                      (value, 100 * result["tuned_accuracy"]),
                      textcoords="offset points", xytext=(4, 4))
    axes.axhline(100 * outcome["accuracy"], color="gray", linestyle="--",
                 label="unregularized")
    axes.set_xlabel("parameters kept (fraction of the original)")
    axes.set_ylabel("validation accuracy (%)")
    axes.set_title("Residual CNN on digits: strength vs size")
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main(epochs, plot):
    outcome = measure(epochs)
    base = outcome["cost"]
    print(f"unregularized: val accuracy {outcome['accuracy']:.4f}, "
          f"{base['params']:,} params, {base['flops']:,} FLOPs")
    for result in outcome["results"]:
        cost = result["cost"]
        print(f"GroupLasso({result['strength']}): {cost['params']:,} params "
              f"({base['params'] / cost['params']:.2f}x fewer), "
              f"{cost['flops']:,} FLOPs; val accuracy "
              f"{result['shrunk_accuracy']:.4f} shrunk, "
              f"{result['tuned_accuracy']:.4f} fine-tuned; shrunk vs pruned "
              f"max |diff| {result['gap']:.1e}")
    chosen = outcome["chosen"]
    print(f"\nshrunk model: GroupLasso({chosen['strength']}), fine-tuned"
          + ("" if outcome["within"]
             else " (none within 1 point of unregularized)"))
    tfreg.shrink_summary(outcome["baseline"], chosen["model"])
    print(f"CPU latency shrunk / original: {outcome['latency_ratio']:.2f}")
    before, after = outcome["saved_before"], outcome["saved_after"]
    print(f"SavedModel size: {before / 1024:.0f} KiB -> {after / 1024:.0f} "
          f"KiB ({before / after:.2f}x smaller)")
    plot_tradeoff(outcome, plot)
    print(f"trade-off plot: {plot}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--plot", default="shrink_tradeoff.png")
    arguments = parser.parse_args()
    main(arguments.epochs, arguments.plot)
