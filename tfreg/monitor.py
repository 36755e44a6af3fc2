"""Seeing the penalties: `summary(model)` and the `PenaltyLogger` callback."""

import os

import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from tfreg import _keras
from tfreg import _table
from tfreg import validation
from tfreg import walk

__all__ = ["PenaltyLogger", "TOTAL_KEY", "format_table", "penalties", "summary"]

TOTAL_KEY = "total"
# TensorBoard's scalar plugin reads float32 scalars tagged with this metadata;
# written with core `tf.summary.write`, so the tensorboard package is optional.
_SCALAR_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(
        plugin_name="scalars")).SerializeToString()


def penalties(model):
    """The current weight penalties of `model`, one dict per regularized weight.

    Each row has "path" (the weight's path in the model, as `tfreg.apply`
    names it: unique even where layers share a name), "layer", "weight",
    "regularizer" (its repr), "penalty" (a float), "share" (of the sum of
    all rows; 0 when that sum is 0) and "via" ("loss" for a penalty in
    `model.losses`, "optimizer" for one the model's optimizer applies: its
    `tfreg_penalties()` lists it, as `tfreg.optimizers.Regularized` does). A
    shared layer or weight has one row. Activity regularizers depend on
    inputs and are not listed. `model` is a Keras model or layer (TypeError
    otherwise).
    """
    walk.check_model(model)
    rows = []
    for weight in walk.regularized_weights(model):
        rows.append({
            "path": weight.path,
            "layer": weight.layer.name,
            "weight": walk.weight_name(weight.variable),
            "regularizer": repr(weight.regularizer),
            "penalty": float(tf.reduce_sum(
                weight.regularizer(weight.variable))),
            "via": weight.via,
        })
    total = sum(row["penalty"] for row in rows)
    for row in rows:
        row["share"] = row["penalty"] / total if total else 0.0
    return rows


def format_table(rows):
    """`penalties` rows as an aligned text table with a total line.

    The layer column is the path of the weight's layer in the model, so
    layers that share a name (the two directions of a Bidirectional) differ.
    """
    header = ("layer", "weight", "regularizer", "penalty", "share")
    lines = [(row["path"].rsplit("/", 1)[0], row["weight"], row["regularizer"],
              f"{row['penalty']:.6g}", f"{row['share']:.1%}") for row in rows]
    total = sum(row["penalty"] for row in rows)
    lines.append(("total", "", "", f"{total:.6g}",
                  "100.0%" if total else "0.0%"))
    return _table.render(header, lines)


def summary(model, print_fn=print):
    """Prints and returns a table of the model's weight penalties.

    One row per regularized weight: layer, weight, regularizer, penalty value
    and share of the total regularization loss (see `penalties`). Pass
    `print_fn=None` to only get the rows.

    >>> import tfreg
    >>> from tensorflow import keras
    >>> model = keras.Sequential([
    ...     keras.Input((2,)),
    ...     keras.layers.Dense(2, kernel_initializer="ones", name="a",
    ...                        kernel_regularizer=tfreg.L2(0.5)),
    ...     keras.layers.Dense(1, kernel_initializer="ones", name="b",
    ...                        kernel_regularizer=tfreg.L1(1.0))])
    >>> rows = tfreg.summary(model)
    layer  weight  regularizer  penalty  share
    -----  ------  -----------  -------  ------
    a      kernel  L2(l2=0.5)   2        50.0%
    b      kernel  L1(l1=1.0)   2        50.0%
    total                       4        100.0%
    >>> rows[0]["penalty"], rows[0]["share"]
    (2.0, 0.5)
    """
    rows = penalties(model)
    if print_fn is not None:
        print_fn(format_table(rows))
    return rows


class PenaltyLogger(_keras.keras.callbacks.Callback):
    """Logs each weight penalty and their total at the end of every epoch.

    The values go into the epoch logs, so `History` (the object `fit`
    returns) holds them under "penalty/<path>" (the weight's path in the
    model, as `tfreg.apply` names it: "penalty/<layer>/<weight>" for a layer
    of the model itself) and "penalty/total",
    and callbacks placed after this one (CSVLogger, EarlyStopping) see them.
    With `log_dir`, they are also written as TensorBoard scalars, one point
    per epoch.

    Args:
      log_dir: None, or the directory (str or os.PathLike) of TensorBoard's
        event files.
      prefix: The first part of every key, a non-empty str.

    >>> import numpy as np, tfreg
    >>> from tensorflow import keras
    >>> model = keras.Sequential([
    ...     keras.Input((2,)),
    ...     keras.layers.Dense(1, name="out", kernel_regularizer=tfreg.L2(0.1))])
    >>> model.compile(optimizer="sgd", loss="mse")
    >>> history = model.fit(np.ones((4, 2)), np.ones((4, 1)), epochs=2,
    ...                     verbose=0, callbacks=[tfreg.PenaltyLogger()])
    >>> sorted(key for key in history.history if key.startswith("penalty"))
    ['penalty/out/kernel', 'penalty/total']
    >>> len(history.history["penalty/total"])
    2
    """

    def __init__(self, log_dir=None, prefix="penalty"):
        super().__init__()
        expected = "None or a directory path (a non-empty str or os.PathLike)"
        if log_dir is not None and not isinstance(log_dir, (str, os.PathLike)):
            raise TypeError(validation.message("log_dir", log_dir, expected))
        if log_dir is not None and not os.fspath(log_dir):
            raise ValueError(validation.message("log_dir", log_dir, expected))
        if not isinstance(prefix, str):
            raise TypeError(validation.message(
                "prefix", prefix, "a non-empty str"))
        if not prefix:
            raise ValueError(validation.message(
                "prefix", prefix, "a non-empty str"))
        self.log_dir = log_dir
        self.prefix = prefix
        self._writer = None

    def on_train_begin(self, logs=None):
        if self.log_dir is not None and self._writer is None:
            self._writer = tf.summary.create_file_writer(str(self.log_dir))

    def on_epoch_end(self, epoch, logs=None):
        rows = penalties(self.model)
        values = {}
        for row in rows:
            # A weight penalized both in the loss and by the optimizer gets
            # the sum of both.
            key = f"{self.prefix}/{row['path']}"
            values[key] = values.get(key, 0.0) + row["penalty"]
        values[f"{self.prefix}/{TOTAL_KEY}"] = sum(
            row["penalty"] for row in rows)
        if logs is not None:
            logs.update(values)
        if self._writer is not None:
            with self._writer.as_default():
                for key, value in values.items():
                    tf.summary.write(key, tf.constant(value, tf.float32),
                                     step=epoch, metadata=_SCALAR_METADATA)
            self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
