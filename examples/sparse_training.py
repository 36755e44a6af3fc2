"""Exact zeros from proximal updates: L1 and GroupLasso on the digits MLP.

The same MLP (64 pixels -> 64 ReLU units -> 10 classes) trained with the
penalty through the loss (Keras' way: gradient steps never land a weight on
zero) and through `tfreg.optimizers.Regularized(mode="proximal")`, which
soft-thresholds after every optimizer step (in the optimizer's own metric:
Adam's thresholds are per weight). Prints, per run, the validation
accuracy, the exactly-zero weights of the hidden kernel and its all-zero
units (columns: the units a smaller model can drop).

    python examples/sparse_training.py --epochs 150
"""

import argparse

import numpy as np
from sklearn import datasets
from sklearn import model_selection

import tfreg
from tfreg import _keras

keras = _keras.keras


def data():
    digits = datasets.load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    return model_selection.train_test_split(
        x, digits.target.astype(np.int32), test_size=0.25, random_state=0)


def build(regularizer, through, optimizer=None, seed=0):
    """The MLP 64-64-10 with `regularizer` on its hidden kernel, and
    `optimizer` (default SGD(0.1, momentum=0.9)), wrapped by
    `tfreg.optimizers.Regularized` when `through` is "proximal"."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(64, activation="relu", name="hidden",
                           kernel_regularizer=regularizer),
        keras.layers.Dense(10, name="out")])
    optimizer = optimizer or keras.optimizers.SGD(0.1, momentum=0.9)
    if through == "proximal":
        # The model's regularizers move into the optimizer's update.
        optimizer = tfreg.optimizers.Regularized(optimizer, mode="proximal",
                                                 model=model)
    return model, optimizer


def train(regularizer, through, epochs, split, optimizer=None):
    """Validation accuracy and the hidden kernel after training with
    `optimizer` (default SGD(0.1, momentum=0.9))."""
    x_train, x_val, y_train, y_val = split
    model, optimizer = build(regularizer, through, optimizer)
    model.compile(optimizer,
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], jit_compile=True)
    model.fit(x_train, y_train, batch_size=64, epochs=epochs, verbose=0)
    _, accuracy = model.evaluate(x_val, y_val, verbose=0)
    return accuracy, model.get_layer("hidden").kernel.numpy()


RUNS = (
    ("none", None, "loss"),
    ("loss L1(1e-4)", tfreg.L1(1e-4), "loss"),
    ("loss L1(1e-3)", tfreg.L1(1e-3), "loss"),
    ("proximal L1(1e-4)", tfreg.L1(1e-4), "proximal"),
    ("proximal L1(1e-3)", tfreg.L1(1e-3), "proximal"),
    ("loss GroupLasso(1e-3)", tfreg.GroupLasso(1e-3), "loss"),
    ("proximal GroupLasso(1e-3)", tfreg.GroupLasso(1e-3), "proximal"),
)


def measure(epochs, runs=RUNS):
    """Per run: name, path ("loss"/"proximal"), validation accuracy, exact
    zeros and all-zero units of the hidden kernel."""
    split = data()
    rows = []
    for name, regularizer, through in runs:
        accuracy, kernel = train(regularizer, through, epochs, split)
        rows.append({"run": name, "through": through, "accuracy": accuracy,
                     "zeros": int(np.sum(kernel == 0)), "weights": kernel.size,
                     "zero_units": int(np.sum(np.all(kernel == 0, axis=0))),
                     "units": kernel.shape[1]})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=150)
    args = parser.parse_args()
    print(f"{'run':<27} {'val acc':>7} {'zero weights':>13} "
          f"{'zero units':>10}")
    for row in measure(args.epochs):
        print(f"{row['run']:<27} {row['accuracy']:>7.3f} "
              f"{row['zeros']:>6} / {row['weights']:<4} "
              f"{row['zero_units']:>5} / {row['units']}")


if __name__ == "__main__":
    main()
