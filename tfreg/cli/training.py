"""Training the candidates: a compiled model per candidate, one run per seed.

Each candidate (a regularizer at one strength) trains on a model compiled
with `jit_compile=True`, shared by the strengths of a family whose strength
is a `tfreg.Strength`; every run starts that model from its seed's initial
weights and the optimizer's initial state, so runs reuse the compiled step
and the seeds differ only in initialization and batch order.
"""

import dataclasses
import datetime
import sys
import time

import numpy as np
import tensorflow as tf

import tfreg
from tfreg import _keras
from tfreg.cli import UsageError
from tfreg.cli import model_file

keras = _keras.keras

HIDDEN_UNITS = (256, 256)
BATCH_SIZE = 32
LEARNING_RATE = 3e-3
# |w| below this counts as a near-zero weight.
ZERO_THRESHOLD = 1e-2
# Validation points per run for the curves (the last epoch always).
CURVE_POINTS = 10


class Tracker:
    """A text bar per run and the ETA of the whole comparison, on stderr.

    Progress is counted in training steps; the ETA assumes the remaining
    steps cost what the finished ones did (compiles included).
    """

    def __init__(self, total_steps, total_runs, stream=None, width=20):
        self.total, self.total_runs, self.width = total_steps, total_runs, width
        self.stream = stream or sys.stderr
        self.run, self.done = 0, 0
        self.start = time.perf_counter()
        self.interactive = getattr(self.stream, "isatty", lambda: False)()

    def begin_run(self, label, epochs, steps_per_epoch, epochs_per_block):
        self.run += 1
        self.label, self.epochs, self.epoch = label, epochs, 0
        self.steps_per_epoch = steps_per_epoch
        self.epochs_per_block = epochs_per_block

    def block_done(self):
        self.epoch += self.epochs_per_block
        epoch = self.epoch
        self.done += self.steps_per_epoch * self.epochs_per_block
        elapsed = time.perf_counter() - self.start
        remaining = elapsed / self.done * max(0, self.total - self.done)
        filled = int(self.width * epoch / self.epochs)
        line = (f"[{self.run}/{self.total_runs}] {self.label:<34} "
                f"|{'#' * filled}{'.' * (self.width - filled)}| "
                f"epoch {epoch}/{self.epochs}  elapsed {_clock(elapsed)}  "
                f"ETA {_clock(remaining)}")
        if self.interactive:
            self.stream.write("\r" + line + ("\n" if epoch == self.epochs
                                             else ""))
        elif epoch == self.epochs:
            self.stream.write(line + "\n")
        self.stream.flush()


def _clock(seconds):
    return str(datetime.timedelta(seconds=int(round(seconds))))


class _Progress(keras.callbacks.Callback):

    def __init__(self, tracker):
        super().__init__()
        self.tracker = tracker

    def on_epoch_end(self, epoch, logs=None):
        self.tracker.block_done()


class _StepTimer(keras.callbacks.Callback):
    """Wall time of one run's training steps, leaving out its first step
    (which traces and compiles in a candidate's first run)."""

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


@dataclasses.dataclass
class Architecture:
    """Makes a fresh model per seed: `build(seed)` -> uncompiled model whose
    output is logits (`from_logits`) or class probabilities."""
    description: str
    build: object
    from_logits: bool = True


def mlp(dataset):
    """The default model: an MLP with `HIDDEN_UNITS` ReLU layers."""
    units = dataset.num_classes if dataset.task == "classification" else 1

    def build(seed):
        keras.utils.set_random_seed(seed)
        inputs = keras.Input(dataset.x_train.shape[1:], name="features")
        hidden = inputs
        if len(dataset.x_train.shape) > 2:
            hidden = keras.layers.Flatten()(hidden)
        for index, width in enumerate(HIDDEN_UNITS):
            hidden = keras.layers.Dense(width, activation="relu",
                                        name=f"hidden_{index}")(hidden)
        outputs = keras.layers.Dense(units, name="output")(hidden)
        return keras.Model(inputs, outputs, name="mlp")

    widths = " x ".join(str(width) for width in HIDDEN_UNITS)
    return Architecture(f"MLP {widths} (ReLU)", build)


def _shape(shape):
    return tuple(None if d is None else int(d) for d in shape)


def check_fits(loaded, path, dataset):
    """Raises `UsageError` unless `loaded` is a functional model with one
    input that takes `dataset`'s features and one output that fits its
    target; returns whether the output is logits (no final softmax)."""
    if not isinstance(loaded, keras.Model) or isinstance(
            loaded, keras.Sequential) or not hasattr(loaded, "inputs"):
        raise UsageError(
            f"--model {path} is not a functional model (a keras.Model built "
            "from keras.Input); got " + type(loaded).__name__)
    if len(loaded.inputs) != 1 or len(loaded.outputs) != 1:
        raise UsageError(
            f"--model {path} has {len(loaded.inputs)} inputs and "
            f"{len(loaded.outputs)} outputs; one of each is needed")
    expected = _shape(loaded.inputs[0].shape)[1:]
    given = dataset.x_train.shape[1:]
    if len(expected) != len(given) or any(
            e is not None and e != g for e, g in zip(expected, given)):
        raise UsageError(
            f"--model {path} takes inputs of shape {expected}; the data "
            f"{dataset.name} has features of shape {tuple(given)}")
    units = _shape(loaded.outputs[0].shape)[-1]
    wanted = dataset.num_classes if dataset.task == "classification" else 1
    if units != wanted:
        what = (f"{wanted} classes" if dataset.task == "classification"
                else "a regression target (1 output)")
        raise UsageError(
            f"--model {path} has {units} outputs; the data {dataset.name} "
            f"has {what}")
    activation = getattr(loaded.layers[-1], "activation", None)
    from_logits = getattr(activation, "__name__", "") != "softmax"
    if dataset.task == "regression" and not from_logits:
        raise UsageError(
            f"--model {path} ends with a softmax; a regression target needs "
            "a linear output")
    return from_logits


def saved_model(path, dataset):
    """The architecture of the functional model saved in `path` (.keras or
    .h5, checked by `model_file.load` before Keras reads it).

    Each seed trains a fresh copy (`clone_model`: the saved layers and
    configs, new initial weights) with the saved model's own regularizers
    taken off, so that `none` is unregularized.
    """
    loaded = model_file.load(path)
    from_logits = check_fits(loaded, path, dataset)

    def build(seed):
        keras.utils.set_random_seed(seed)
        model = keras.models.clone_model(loaded)
        tfreg.remove(model)
        return model

    return Architecture(f"{loaded.name} from {path} "
                        f"({loaded.count_params():,} parameters)", build,
                        from_logits)


def _loss(dataset, from_logits):
    if dataset.task == "classification":
        return keras.losses.SparseCategoricalCrossentropy(
            from_logits=from_logits)
    return keras.losses.MeanSquaredError()


def _batches(dataset, seed):
    """Fixed-shape batches (no ragged last batch: XLA would compile again),
    shuffled here, in the pipeline, with the run's seed."""
    batch = min(BATCH_SIZE, len(dataset.x_train))
    y_train = dataset.y_train
    if dataset.task == "regression":
        y_train = y_train[:, None]
    return tf.data.Dataset.from_tensor_slices(
        (dataset.x_train, y_train)).shuffle(
            len(dataset.x_train), seed=seed,
            reshuffle_each_iteration=True).batch(batch, drop_remainder=True)


def steps_per_epoch(dataset):
    return len(dataset.x_train) // min(BATCH_SIZE, len(dataset.x_train))


def validate(dataset, outputs, from_logits=True, split="val"):
    """(data loss, metric) of the outputs (logits or probabilities) on the
    validation (`split="val"`) or test rows (`"test"`)."""
    targets = dataset.y_test if split == "test" else dataset.y_val
    outputs = np.asarray(outputs, np.float64)
    if dataset.task == "classification":
        if from_logits:
            logits = outputs - outputs.max(axis=1, keepdims=True)
            log_probs = logits - np.log(
                np.exp(logits).sum(axis=1, keepdims=True))
        else:
            log_probs = np.log(np.clip(outputs, 1e-12, 1.0))
        loss = -np.mean(log_probs[np.arange(len(outputs)), targets])
        metric = np.mean(outputs.argmax(axis=1) == targets)
    else:
        error = outputs.reshape(len(outputs), -1)[:, 0] - targets
        loss = np.mean(error ** 2)
        metric = np.mean(np.abs(error)) * dataset.target_scale
    return float(loss), float(metric)


def block(epochs):
    """Epochs per Keras epoch: the largest divisor of `epochs` up to
    epochs / CURVE_POINTS. Keras' per-epoch work (a new iterator, the
    callbacks, the validation curve) then runs about CURVE_POINTS times."""
    size = max(1, epochs // CURVE_POINTS)
    while epochs % size:
        size -= 1
    return size


class _Curves(keras.callbacks.Callback):
    """Validation loss and metric after every block of epochs, on the whole
    validation set in one eager call (no second compiled function)."""

    def __init__(self, dataset, epochs_per_block, from_logits):
        super().__init__()
        self.dataset, self.from_logits = dataset, from_logits
        self.epochs_per_block = epochs_per_block
        self.curves = {"epoch": [], "val_loss": [], "val_metric": []}

    def on_epoch_end(self, epoch, logs=None):
        loss, metric = validate(
            self.dataset, self.model(self.dataset.x_val, training=False),
            self.from_logits)
        self.curves["epoch"].append((epoch + 1) * self.epochs_per_block)
        self.curves["val_loss"].append(loss)
        self.curves["val_metric"].append(metric)


def _penalty(model):
    return sum(row["penalty"] for row in tfreg.summary(model, print_fn=None))


def _penalty_at_zero(model):
    """The weight penalty with every weight 0 (for priors, the normalizing
    constant), so that penalties are reported above that baseline."""
    values = [variable.numpy() for variable in model.trainable_weights]
    for variable in model.trainable_weights:
        variable.assign(tf.zeros_like(variable))
    try:
        return _penalty(model)
    finally:
        for variable, value in zip(model.trainable_weights, values):
            variable.assign(value)


def _kernel_values(model):
    return [variable.numpy() for variable in model.trainable_weights
            if len(variable.shape) >= 2]


def kernels(model):
    """Every weight of rank >= 2 (kernels, embeddings), flattened."""
    return np.concatenate([np.ravel(value) for value in _kernel_values(model)])


def zero_units(model):
    """(zero, total) units: a unit (output channel, the last axis of a
    kernel) is zero when every weight into it is exactly 0."""
    zero = total = 0
    for value in _kernel_values(model):
        columns = value.reshape(-1, value.shape[-1])
        total += columns.shape[1]
        zero += int(np.sum(np.all(columns == 0, axis=0)))
    return zero, total


def shrunk_parameters(model, kernel_values):
    """The parameter count of `tfreg.shrink(model)`: the model without its
    exactly-zero channel groups (same function)."""
    if not np.any(kernel_values == 0):
        # A removable group has an all-zero kernel slice: nothing to shrink.
        return model.count_params()
    return tfreg.shrink(model).count_params()


@dataclasses.dataclass
class Compiled:
    """A compiled model and its optimizer's initial state."""
    model: object
    optimizer_start: list


def compile_candidate(dataset, candidate, architecture, seed):
    """The model of `candidate`, regularized and compiled with XLA.

    A candidate of a shared family regularizes with the family's Strength,
    so that its `Compiled` serves every strength of the family.
    """
    model = architecture.build(seed)
    regularizer = candidate.make()
    if regularizer is not None:
        tfreg.apply(model, regularizer)
    optimizer = keras.optimizers.Adam(LEARNING_RATE)
    if candidate.mode == "proximal":
        # The penalty leaves the loss; each step ends with its proximal map,
        # which sets weights (L1) or whole units (GroupLasso) to exactly 0.
        optimizer = tfreg.optimizers.Regularized(optimizer, mode="proximal",
                                                 model=model)
    model.compile(optimizer=optimizer,
                  loss=_loss(dataset, architecture.from_logits),
                  jit_compile=True)
    if not getattr(model, "jit_compile", True):
        raise RuntimeError(
            "Keras turned jit_compile off for this model (is op determinism "
            "enabled in this process?); tfreg compare trains with XLA only.")
    model.optimizer.build(model.trainable_variables)
    return Compiled(model, [v.numpy() for v in model.optimizer.variables])


def train_candidate(dataset, candidate, architecture, seeds, epochs, tracker,
                    compiled):
    """Trains `candidate` once per seed on `compiled`'s model.

    Every run starts from the seed's initial weights and the optimizer's
    initial state, so runs reuse the compiled step. Returns one result dict
    per seed; the model keeps the last seed's weights.
    """
    model = compiled.model
    if candidate.strength is not None:
        candidate.strength.assign(candidate.value)
    penalty_at_zero = _penalty_at_zero(model)
    results = []
    for seed in seeds:
        model.set_weights(architecture.build(seed).get_weights())
        for variable, value in zip(model.optimizer.variables,
                                   compiled.optimizer_start):
            variable.assign(value)
        timer = _StepTimer()
        size = block(epochs)
        curves = _Curves(dataset, size, architecture.from_logits)
        tracker.begin_run(f"{dataset.name} {candidate.label} seed {seed}",
                          epochs, steps_per_epoch(dataset), size)
        start = time.perf_counter()
        # The batches are shuffled in the pipeline (again in every repeat);
        # `shuffle=False` says so (Keras ignores, and warns about,
        # shuffle=True for a tf.data input).
        model.fit(_batches(dataset, seed).repeat(size), epochs=epochs // size,
                  verbose=0, shuffle=False,
                  callbacks=[timer, curves, _Progress(tracker)])
        seconds = time.perf_counter() - start
        values = kernels(model)
        units = zero_units(model)
        test_loss, test_metric = validate(
            dataset, model(dataset.x_test, training=False),
            architecture.from_logits, split="test")
        results.append({
            "dataset": dataset.name,
            "regularizer": candidate.family,
            "setting": candidate.setting,
            "config": candidate.config,
            "seed": seed,
            "val_loss": curves.curves["val_loss"][-1],
            "val_metric": curves.curves["val_metric"][-1],
            "test_loss": test_loss,
            "test_metric": test_metric,
            "metric": dataset.metric_name,
            "near_zero": float(np.mean(np.abs(values) < ZERO_THRESHOLD)),
            "zero": float(np.mean(values == 0)),
            "zero_units": units[0],
            "units": units[1],
            "parameters": model.count_params(),
            "parameters_after_shrink": shrunk_parameters(model, values),
            "penalty": _penalty(model) - penalty_at_zero,
            "penalty_at_zero": penalty_at_zero,
            "ms_per_step": timer.ms_per_step,
            "first_step_seconds": timer.first,
            "seconds": seconds,
            "jit_compile": bool(getattr(model, "jit_compile", True)),
            "curves": curves.curves,
        })
    return results


def export_and_check(model, dataset, path):
    """Exports `model` with `tfreg.export_saved_model`, reloads it and
    compares its predictions and `regularization_loss` signature with the
    live model's."""
    tfreg.export_saved_model(model, path)
    loaded = tf.saved_model.load(path)
    signature = loaded.signatures["serving_default"]
    (argument,) = signature.structured_input_signature[1]
    outputs = signature(**{argument: tf.constant(dataset.x_val)})
    (served,) = outputs.values()
    expected = model(dataset.x_val, training=False)
    difference = float(np.max(np.abs(np.asarray(served) -
                                     np.asarray(expected))))
    (served_penalty,) = loaded.signatures["regularization_loss"]().values()
    live = _penalty(model)
    return {
        "path": path, "how": "tfreg.export_saved_model",
        "max_abs_difference": difference,
        "predictions_match": bool(np.allclose(served, expected, rtol=1e-5,
                                              atol=1e-5)),
        "regularization_loss": float(served_penalty),
        "regularization_loss_matches": bool(np.isclose(
            float(served_penalty), live, rtol=1e-5, atol=1e-6)),
    }
