"""Training the candidates (XLA), with progress, step timing and export."""

import datetime
import sys
import time

import numpy as np
import tensorflow as tf

import tfreg
from tfreg import _keras
from tfreg import monitor

keras = _keras.keras

HIDDEN_UNITS = (64,)
BATCH_SIZE = 128
LEARNING_RATE = 3e-3
# |w| below this counts as a near-zero weight.
ZERO_THRESHOLD = 1e-2


class _Progress(keras.callbacks.Callback):
    """A text bar per run and the ETA of the whole comparison, on stderr."""

    def __init__(self, tracker, label, epochs):
        super().__init__()
        self.tracker, self.label, self.epochs = tracker, label, epochs

    def on_epoch_end(self, epoch, logs=None):
        self.tracker.epoch_done(self.label, epoch + 1, self.epochs)


class Tracker:
    """Counts finished tower-epochs over all runs to print progress and ETA."""

    def __init__(self, total_towers, epochs, total_runs, stream=None,
                 width=20):
        self.total, self.total_runs, self.width = (
            total_towers * epochs, total_runs, width)
        self.stream = stream or sys.stderr
        self.run, self.towers, self.done = 0, 1, 0
        self.start = time.perf_counter()
        self.interactive = getattr(self.stream, "isatty", lambda: False)()

    def begin_run(self, towers):
        self.run += 1
        self.towers = towers

    def epoch_done(self, label, epoch, epochs):
        self.done += self.towers
        elapsed = time.perf_counter() - self.start
        remaining = elapsed / self.done * (self.total - self.done)
        filled = int(self.width * epoch / epochs)
        line = (f"[{self.run}/{self.total_runs}] {label:<30} "
                f"|{'#' * filled}{'.' * (self.width - filled)}| "
                f"epoch {epoch}/{epochs}  elapsed {_clock(elapsed)}  "
                f"ETA {_clock(remaining)}")
        if self.interactive:
            self.stream.write("\r" + line + ("\n" if epoch == epochs else ""))
        elif epoch == epochs:
            self.stream.write(line + "\n")
        self.stream.flush()


def _clock(seconds):
    return str(datetime.timedelta(seconds=int(round(seconds))))


class _StepTimer(keras.callbacks.Callback):
    """Wall time of training steps, leaving out the first (trace + compile)."""

    def __init__(self):
        super().__init__()
        self.steps, self.seconds, self.first = 0, 0.0, None

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        elapsed = time.perf_counter() - self._start
        if self.first is None:
            self.first = elapsed
            return
        self.steps += 1
        self.seconds += elapsed

    @property
    def ms_per_step(self):
        if self.steps == 0:  # A single step: it includes compilation.
            return 1000.0 * self.first
        return 1000.0 * self.seconds / self.steps


def _tower_prefix(tower):
    return f"t{tower}_"


def _mlp(dataset, seed, towers=1):
    """`towers` identical MLPs (same initial weights) side by side.

    Each tower has its own output, its loss is summed with the others' and
    Adam is elementwise, so every tower trains exactly as it would alone, on
    the same batches; one compiled step trains them all.
    """
    inputs = keras.Input((dataset.x_train.shape[1],), name="features")
    units = dataset.num_classes if dataset.task == "classification" else 1
    layers = [(f"hidden_{i}", width, "relu")
              for i, width in enumerate(HIDDEN_UNITS)]
    layers.append(("output", units, None))
    outputs = []
    for tower in range(towers):
        hidden = inputs
        for index, (name, width, activation) in enumerate(layers):
            hidden = keras.layers.Dense(
                width, activation=activation,
                name=_tower_prefix(tower) + name,
                kernel_initializer=keras.initializers.GlorotUniform(
                    seed=seed * 1000 + index))(hidden)
        outputs.append(hidden)
    return keras.Model(inputs, outputs, name="mlp")


def _loss(dataset):
    if dataset.task == "classification":
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return keras.losses.MeanSquaredError()


def _datasets(dataset, seed, towers):
    """Fixed-shape batches (no ragged last batch: XLA would compile again)."""
    batch = min(BATCH_SIZE, len(dataset.x_train))
    y_train = dataset.y_train
    if dataset.task == "regression":
        y_train = y_train[:, None]
    train = tf.data.Dataset.from_tensor_slices(
        (dataset.x_train, y_train)).shuffle(
            len(dataset.x_train), seed=seed,
            reshuffle_each_iteration=True).batch(batch, drop_remainder=True)
    return train.map(lambda x, y: (x, (y,) * towers))


def _validate(dataset, outputs):
    """(data loss, metric) of one tower's validation outputs."""
    outputs = np.asarray(outputs, np.float64)
    if dataset.task == "classification":
        logits = outputs - outputs.max(axis=1, keepdims=True)
        log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        loss = -np.mean(log_probs[np.arange(len(outputs)), dataset.y_val])
        metric = np.mean(outputs.argmax(axis=1) == dataset.y_val)
    else:
        error = outputs[:, 0] - dataset.y_val
        loss = np.mean(error ** 2)
        metric = np.mean(np.abs(error)) * dataset.target_scale
    return float(loss), float(metric)


class _Validation(keras.callbacks.Callback):
    """Per tower and epoch: validation data loss, metric and penalty.

    Computed eagerly on the whole validation set (small by construction), so
    there is no second compiled function to build; the penalties come from
    `tfreg.monitor.penalties`, the numbers behind `tfreg.summary`.
    """

    def __init__(self, dataset, towers):
        super().__init__()
        self.dataset = dataset
        self.curves = [{"val_loss": [], "val_metric": [], "penalty": []}
                       for _ in range(towers)]

    def on_epoch_end(self, epoch, logs=None):
        outputs = self.model(self.dataset.x_val, training=False)
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        rows = monitor.penalties(self.model)
        for tower, (curves, output) in enumerate(zip(self.curves, outputs)):
            loss, metric = _validate(self.dataset, output)
            curves["val_loss"].append(loss)
            curves["val_metric"].append(metric)
            curves["penalty"].append(sum(
                row["penalty"] for row in rows
                if row["layer"].startswith(_tower_prefix(tower))))


def _tower_kernels(model, tower):
    prefix = _tower_prefix(tower)
    return np.concatenate([
        np.ravel(layer.kernel.numpy()) for layer in model.layers
        if layer.name.startswith(prefix) and hasattr(layer, "kernel")])


def train(dataset, family, runs, epochs, seed, tracker):
    """Trains a family's strengths as towers of one compiled model.

    Returns one (result dict, kernel values) per run and the model.
    """
    keras.utils.set_random_seed(seed)
    towers = len(runs)
    model = _mlp(dataset, seed, towers)
    for tower, candidate in enumerate(runs):
        regularizer = candidate.make()
        if regularizer is not None:
            tfreg.apply(model, regularizer, include="^" + _tower_prefix(tower))
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE),
                  loss=[_loss(dataset)] * towers, jit_compile=True)
    if not getattr(model, "jit_compile", True):
        raise RuntimeError(
            "Keras turned jit_compile off for this model (is op determinism "
            "enabled in this process?); tfreg compare trains with XLA only.")
    timer = _StepTimer()
    validation = _Validation(dataset, towers)
    label = f"{dataset.name} {family}" + (f" x{towers}" if towers > 1 else "")
    tracker.begin_run(towers)
    start = time.perf_counter()
    model.fit(_datasets(dataset, seed, towers), epochs=epochs, verbose=0,
              callbacks=[timer, validation, _Progress(tracker, label, epochs)])
    seconds = time.perf_counter() - start
    results = []
    for tower, candidate in enumerate(runs):
        curves = validation.curves[tower]
        kernels = _tower_kernels(model, tower)
        penalty, val_loss = curves["penalty"][-1], curves["val_loss"][-1]
        results.append(({
            "dataset": dataset.name,
            "regularizer": candidate.family,
            "setting": candidate.setting,
            "config": candidate.config,
            "val_loss": val_loss,
            "val_metric": curves["val_metric"][-1],
            "metric": dataset.metric_name,
            "near_zero": float(np.mean(np.abs(kernels) < ZERO_THRESHOLD)),
            "penalty": penalty,
            # Priors' -log p(w) includes normalizing constants, so a penalty
            # can be negative: the share is of magnitudes.
            "penalty_share": (abs(penalty) / (val_loss + abs(penalty))
                              if val_loss + abs(penalty) else 0.0),
            "ms_per_step": timer.ms_per_step / towers,
            "towers_in_step": towers,
            "jit_compile": bool(getattr(model, "jit_compile", True)),
            "seconds": seconds / towers,
            "curves": curves,
        }, kernels))
    return results, model


def standalone(dataset, model, tower, candidate, seed):
    """Tower `tower` of `model` as a one-output MLP with its regularizer."""
    single = _mlp(dataset, seed, 1)
    for layer in single.layers[1:]:
        name = layer.name[len(_tower_prefix(0)):]
        layer.set_weights(
            model.get_layer(_tower_prefix(tower) + name).get_weights())
    regularizer = candidate.make()
    if regularizer is not None:
        tfreg.apply(single, regularizer)
    return single


# ------------------------------------------------------------- export

def export_and_check(model, dataset, path):
    """Exports `model`, reloads the SavedModel and compares its predictions
    and its `regularization_loss` signature with the live model's.
    """
    tfreg.export_saved_model(model, path)
    how = "tfreg.export_saved_model"
    loaded = tf.saved_model.load(path)
    signature = loaded.signatures["serving_default"]
    (argument,) = signature.structured_input_signature[1]
    outputs = signature(**{argument: tf.constant(dataset.x_val)})
    (served,) = outputs.values()
    expected = model(dataset.x_val, training=False)
    difference = float(np.max(np.abs(np.asarray(served) - np.asarray(expected))))
    check = {"path": path, "how": how, "max_abs_difference": difference,
             "predictions_match": bool(np.allclose(served, expected,
                                                   rtol=1e-5, atol=1e-5))}
    (served_penalty,) = loaded.signatures["regularization_loss"]().values()
    live = sum(row["penalty"] for row in monitor.penalties(model))
    check["regularization_loss"] = float(served_penalty)
    check["regularization_loss_matches"] = bool(np.isclose(
        float(served_penalty), live, rtol=1e-5, atol=1e-6))
    return check
