"""`tfreg compare`: which regularizer, and how strong, for a dataset.

Trains the same small MLP once per (regularizer, strength) with
`jit_compile=True`, and reports validation loss and metric, the fraction of
near-zero weights, the penalty's share of the loss and the step time. Writes a
Markdown report, plots, a JSON of every number and the best model as a
SavedModel (reloaded and checked) to the output directory.
"""

import csv
import dataclasses
import datetime
import importlib
import json
import math
import os
import sys
import time
import zipfile

import numpy as np
import tensorflow as tf

import tfreg
from tfreg import _keras
from tfreg import monitor

keras = _keras.keras

HIDDEN_UNITS = (64,)
BATCH_SIZE = 128
LEARNING_RATE = 3e-3
VALIDATION_FRACTION = 0.2
# |w| below this counts as a near-zero weight.
ZERO_THRESHOLD = 1e-2
# An integer target with at most this many distinct values is a class label.
MAX_AUTO_CLASSES = 50
MIN_ROWS = 10
BUILTIN_DATASETS = {"digits": "classification", "diabetes": "regression"}
TASKS = ("auto", "classification", "regression")
PENALTY_TOTAL = f"penalty/{monitor.TOTAL_KEY}"


class UsageError(Exception):
    """A problem with the user's input: reported as one line, exit code 2."""


@dataclasses.dataclass(frozen=True)
class Family:
    """A regularizer swept over strengths.

    `source` is a class name that `tfreg.get` resolves, or "priors.Name" for a
    class of `tfreg.priors` (built with `num_examples` = training-set size).
    `parameter` is the constructor argument that sets the strength.
    """
    name: str
    source: str = None
    parameter: str = None
    values: tuple = (None,)
    aliases: tuple = ()

    @property
    def is_prior(self):
        return bool(self.source) and self.source.startswith("priors.")


FAMILIES = (
    Family("none"),
    Family("l2", "L2", "l2", (1e-4, 1e-3, 1e-2)),
    Family("l1", "L1", "l1", (1e-5, 1e-4, 1e-3)),
    Family("group_lasso", "GroupLasso", "factor", (1e-4, 1e-3, 1e-2),
           aliases=("grouplasso",)),
    # Priors: smaller scales pull harder toward zero.
    Family("laplace", "priors.Laplace", "scale", (0.03, 0.3, 3.0)),
    Family("horseshoe", "priors.Horseshoe", "scale", (0.01, 0.1, 1.0)),
    Family("spike_and_slab", "priors.SpikeAndSlab", "slab_scale",
           (0.03, 0.3, 3.0), aliases=("spikeandslab", "spike_slab")),
)
DEFAULT_REGULARIZERS = tuple(family.name for family in FAMILIES)


@dataclasses.dataclass
class Dataset:
    """Standardized features, a train/validation split and the task."""
    name: str
    task: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    num_classes: int = 0
    target_scale: float = 1.0
    source: str = ""

    @property
    def metric_name(self):
        return "accuracy" if self.task == "classification" else "mae"

    def describe(self):
        kind = (f"classification, {self.num_classes} classes"
                if self.task == "classification" else "regression")
        return (f"{self.name} ({kind}; {len(self.x_train)} train / "
                f"{len(self.x_val)} validation rows, "
                f"{self.x_train.shape[1]} features)")


@dataclasses.dataclass
class Candidate:
    """One run: a family at one strength."""
    family: str
    setting: str
    make: object  # () -> regularizer or None
    config: object = None


# ---------------------------------------------------------------- data

def _numeric_column(values, column, rows):
    out = np.empty(len(values), np.float64)
    for i, value in enumerate(values):
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            if text == "":
                raise UsageError(
                    f"column {column!r} has a missing value in row "
                    f"{rows[i]}") from None
            raise UsageError(
                f"column {column!r} is not numeric: {value!r} in row "
                f"{rows[i]}") from None
        if not math.isfinite(number):
            raise UsageError(
                f"column {column!r} has a NaN or infinite value in row "
                f"{rows[i]}")
        out[i] = number
    return out


def read_csv(path, target):
    """(x, y) from a CSV file with a header row; `target` names y's column."""
    if not target:
        raise UsageError("--target COLUMN is required with a CSV file")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            table = [row for row in csv.reader(f) if row]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise UsageError(f"cannot read {path}: {error}") from None
    if not table:
        raise UsageError(f"{path} is empty")
    header, body = [name.strip() for name in table[0]], table[1:]
    if target not in header:
        raise UsageError(
            f"{path} has no column {target!r}; its columns are {header}")
    for number, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise UsageError(
                f"{path} row {number} has {len(row)} fields, the header has "
                f"{len(header)}")
    if len(header) < 2:
        raise UsageError(f"{path} has no feature columns besides {target!r}")
    rows = list(range(2, len(body) + 2))
    columns = list(zip(*body)) if body else [() for _ in header]
    features = [
        _numeric_column(values, name, rows)
        for name, values in zip(header, columns) if name != target]
    x = np.stack(features, axis=1) if body else np.zeros((0, len(features)))
    raw_y = [value.strip() for value in columns[header.index(target)]]
    try:
        y = _numeric_column(raw_y, target, rows)
    except UsageError:
        if any(value == "" for value in raw_y):
            raise
        y = np.array(raw_y)  # Class labels given as strings.
    return x, y


def read_npz(path):
    """(x, y) from an .npz file holding arrays named `x` and `y`."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in ("x", "y") if key not in archive.files]
            if missing:
                raise UsageError(
                    f"{path} has no array {missing[0]!r}; expected arrays "
                    f"'x' and 'y', found {sorted(archive.files)}")
            x, y = archive["x"], archive["y"]
    except UsageError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise UsageError(f"cannot read {path}: {error}") from None
    if x.dtype.kind not in "biuf":
        raise UsageError(f"{path}: x is not numeric (dtype {x.dtype})")
    if y.dtype.kind not in "biufU":
        raise UsageError(f"{path}: y is not numeric (dtype {y.dtype})")
    if x.ndim == 0 or y.ndim != 1:
        raise UsageError(
            f"{path}: expected x of shape (rows, ...) and y of shape (rows,); "
            f"got x {x.shape} and y {y.shape}")
    if len(x) != len(y):
        raise UsageError(
            f"{path}: x has {len(x)} rows but y has {len(y)}")
    x = x.reshape(len(x), -1).astype(np.float64)
    if not np.isfinite(x).all():
        raise UsageError(f"{path}: x has NaN or infinite values")
    if y.dtype.kind != "U":
        y = y.astype(np.float64)
        if not np.isfinite(y).all():
            raise UsageError(f"{path}: y has NaN or infinite values")
    return x, y


def load_builtin(name):
    """(x, y) of a dataset bundled with scikit-learn (no network)."""
    try:
        from sklearn import datasets
    except ImportError:
        raise UsageError(
            "the built-in datasets need scikit-learn: "
            "pip install 'tfreg[compare]'") from None
    loader = {"digits": datasets.load_digits,
              "diabetes": datasets.load_diabetes}[name]
    x, y = loader(return_X_y=True)
    return x.astype(np.float64), y


def infer_task(y, task):
    """'classification' or 'regression' for target `y` under `--task`."""
    if y.dtype.kind == "U":
        if task == "regression":
            raise UsageError(
                "--task regression needs a numeric target; it has text labels")
        return "classification"
    if task != "auto":
        if task == "classification" and not np.all(y == np.round(y)):
            raise UsageError(
                "--task classification needs integer class labels; the "
                "target has fractional values")
        return task
    integral = np.all(y == np.round(y))
    return ("classification"
            if integral and len(np.unique(y)) <= MAX_AUTO_CLASSES
            else "regression")


def prepare(name, x, y, task, seed, source=""):
    """Splits, standardizes and labels (x, y) as a `Dataset`."""
    if len(x) < MIN_ROWS:
        raise UsageError(
            f"{name} has {len(x)} rows; at least {MIN_ROWS} are needed")
    if x.shape[1] == 0:
        raise UsageError(f"{name} has no feature columns")
    task = infer_task(y, task)
    order = np.random.default_rng(seed).permutation(len(x))
    num_val = max(1, int(round(len(x) * VALIDATION_FRACTION)))
    val, train = order[:num_val], order[num_val:]
    mean, std = x[train].mean(0), x[train].std(0)
    std[std == 0] = 1.0
    x = ((x - mean) / std).astype(np.float32)
    num_classes, target_scale = 0, 1.0
    if task == "classification":
        classes, y = np.unique(y, return_inverse=True)
        num_classes = len(classes)
        if num_classes < 2:
            raise UsageError(f"{name}: the target has a single class")
        y = y.astype(np.int32)
    else:
        y_mean, y_std = y[train].mean(), y[train].std()
        target_scale = float(y_std) if y_std > 0 else 1.0
        y = ((y - y_mean) / target_scale).astype(np.float32)
    return Dataset(name, task, x[train], y[train], x[val], y[val],
                   num_classes, target_scale, source)


def load_datasets(data, target, task, seed):
    """The datasets to compare on, from the command-line options."""
    if task not in TASKS:
        raise UsageError(f"unknown --task {task!r}; expected one of {TASKS}")
    if data is None or data in BUILTIN_DATASETS:
        if target:
            raise UsageError("--target is only for --data FILE.csv")
        names = [data] if data else [
            name for name, kind in BUILTIN_DATASETS.items()
            if task in ("auto", kind)]
        datasets = []
        for name in names:
            x, y = load_builtin(name)
            datasets.append(prepare(name, x, y, task, seed,
                                    source=f"scikit-learn load_{name}()"))
        return datasets
    if not os.path.isfile(data):
        raise UsageError(f"no such file: {data}")
    extension = os.path.splitext(data)[1].lower()
    if extension == ".csv":
        x, y = read_csv(data, target)
    elif extension == ".npz":
        if target:
            raise UsageError("--target is only for CSV files; an .npz file "
                             "holds arrays 'x' and 'y'")
        x, y = read_npz(data)
    else:
        raise UsageError(
            f"unsupported file type {extension or '(none)'!r} for {data}; "
            "expected .csv or .npz")
    name = os.path.splitext(os.path.basename(data))[0]
    return [prepare(name, x, y, task, seed, source=data)]


# ------------------------------------------------------ regularizers

def _normalized(name):
    return name.strip().lower().replace("-", "_")


def _family_index():
    index = {}
    for family in FAMILIES:
        for name in (family.name, *family.aliases):
            index[_normalized(name)] = family
            index[_normalized(name).replace("_", "")] = family
    return index


def parse_regularizers(text):
    """Comma-separated names -> list of Family or registered tfreg names."""
    if text is None:
        return list(FAMILIES)
    index = _family_index()
    chosen = []
    for raw in text.split(","):
        name = _normalized(raw)
        if not name:
            continue
        family = index.get(name) or index.get(name.replace("_", ""))
        if family is None:
            try:
                tfreg.get(raw.strip())
            except (ValueError, TypeError):
                raise UsageError(
                    f"unknown regularizer {raw.strip()!r}; expected one of "
                    f"{', '.join(DEFAULT_REGULARIZERS)} or a tfreg "
                    "regularizer name") from None
            family = Family(raw.strip(), raw.strip(), None, (None,))
        if family not in chosen:
            chosen.append(family)
    if not chosen:
        raise UsageError("--regularizers is empty")
    return chosen


def _resolve_class(family):
    """The class behind `family.source`, or None when this tfreg lacks it."""
    if family.is_prior:
        try:
            priors = importlib.import_module("tfreg.priors")
        except ModuleNotFoundError as error:
            if error.name != "tfreg.priors":
                raise
            return None
        return getattr(priors, family.source.split(".", 1)[1], None)
    try:
        return type(tfreg.get(family.source))
    except (ValueError, TypeError):
        return None


def _format_value(value):
    return f"{value:g}"


def candidates(families, num_examples, explicit):
    """The runs for `families`, and notes on those this tfreg cannot run."""
    runs, notes = [], []
    for family in families:
        if family.source is None:
            runs.append(Candidate(family.name, "-", lambda: None))
            continue
        cls = _resolve_class(family)
        if cls is None:
            where = ("tfreg.priors" if family.is_prior
                     else "tfreg's registered regularizers")
            message = (f"{family.name}: {family.source} is not in {where} "
                       "yet")
            if explicit:
                raise UsageError(f"cannot run {message}")
            notes.append(f"skipped {message}")
            continue
        for value in family.values:
            kwargs = {}
            if family.parameter is not None:
                kwargs[family.parameter] = value
            if family.is_prior:
                kwargs["num_examples"] = num_examples
            try:
                regularizer = cls(**kwargs)
            except (TypeError, ValueError) as error:
                notes.append(f"skipped {family.name} {kwargs}: {error}")
                continue
            setting = (f"{family.parameter}={_format_value(value)}"
                       if family.parameter else "defaults")
            runs.append(Candidate(
                family.name, setting,
                lambda cls=cls, kwargs=kwargs: cls(**kwargs),
                config=tfreg.serialize(regularizer)))
    return runs, notes


# ------------------------------------------------------------ training

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

class _Serving(tf.Module):
    def __init__(self, model, features):
        super().__init__()
        self.model = model
        self.serve = tf.function(
            lambda x: self.model(x, training=False),
            input_signature=[tf.TensorSpec((None, features), tf.float32,
                                           name="features")])


def export_and_check(model, dataset, path):
    """Exports `model`, reloads the SavedModel and compares its predictions.

    With tfreg's own export, the reloaded `regularization_loss` signature is
    compared with the live model's penalty too.
    """
    exporter = getattr(tfreg, "export_saved_model", None)
    if exporter is not None:
        exporter(model, path)
        how = "tfreg.export_saved_model"
    else:
        serving = _Serving(model, dataset.x_train.shape[1])
        tf.saved_model.save(serving, path,
                            signatures={"serving_default": serving.serve})
        how = "tf.saved_model.save"
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
    if "regularization_loss" in loaded.signatures:
        (served_penalty,) = loaded.signatures["regularization_loss"]().values()
        live = sum(row["penalty"] for row in monitor.penalties(model))
        check["regularization_loss"] = float(served_penalty)
        check["regularization_loss_matches"] = bool(np.isclose(
            float(served_penalty), live, rtol=1e-5, atol=1e-6))
    return check


# ------------------------------------------------------------- report

HEADER = ("dataset", "regularizer", "strength", "val loss", "val metric",
          "near-zero", "penalty", "penalty share", "ms/step")


def table_rows(results, best):
    rows = []
    for result in results:
        mark = " *" if result is best.get(result["dataset"]) else ""
        rows.append((
            result["dataset"], result["regularizer"] + mark,
            result["setting"], f"{result['val_loss']:.4f}",
            f"{result['metric']} {result['val_metric']:.4f}",
            f"{result['near_zero']:.1%}", f"{result['penalty']:.4g}",
            f"{result['penalty_share']:.1%}",
            f"{result['ms_per_step']:.2f}"))
    return rows


def format_text_table(rows):
    widths = [max(len(cell) for cell in column)
              for column in zip(HEADER, *rows)]
    def render(cells):
        return "  ".join(cell.ljust(width)
                         for cell, width in zip(cells, widths)).rstrip()
    return "\n".join([render(HEADER), render(["-" * w for w in widths])]
                     + [render(row) for row in rows])


def format_markdown_table(rows):
    lines = ["| " + " | ".join(HEADER) + " |",
             "|" + "|".join("---" for _ in HEADER) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _best_per_family(results, dataset):
    best = {}
    for result in results:
        if result["dataset"] != dataset:
            continue
        current = best.get(result["regularizer"])
        if current is None or result["val_loss"] < current["val_loss"]:
            best[result["regularizer"]] = result
    return best


def plot(results, kernels, out):
    """Validation curves and weight histograms; returns the PNG file names."""
    try:
        import matplotlib
    except ImportError:
        return []
    matplotlib.use("Agg")
    from matplotlib import pyplot

    files = []
    for dataset in dict.fromkeys(result["dataset"] for result in results):
        best = _best_per_family(results, dataset)
        figure, axes = pyplot.subplots(1, 2, figsize=(11, 4))
        metric = next(iter(best.values()))["metric"]
        for result in best.values():
            label = f"{result['regularizer']} {result['setting']}"
            epochs = range(1, len(result["curves"]["val_loss"]) + 1)
            axes[0].plot(epochs, result["curves"]["val_loss"], label=label)
            axes[1].plot(epochs, result["curves"]["val_metric"],
                         label=label)
        axes[0].set(title=f"{dataset}: validation loss (without penalty)",
                    xlabel="epoch", ylabel="loss")
        axes[1].set(title=f"{dataset}: validation {metric}", xlabel="epoch",
                    ylabel=metric)
        axes[0].legend(fontsize=7)
        figure.tight_layout()
        name = f"curves-{dataset}.png"
        figure.savefig(os.path.join(out, name), dpi=90)
        pyplot.close(figure)
        files.append(name)

        columns = min(4, len(best))
        rows = math.ceil(len(best) / columns)
        figure, axes = pyplot.subplots(rows, columns, squeeze=False,
                                       figsize=(3.2 * columns, 2.6 * rows))
        for axis, result in zip(axes.flat, best.values()):
            values = kernels[(dataset, result["regularizer"],
                              result["setting"])]
            axis.hist(values, bins=60, log=True)
            axis.set_title(f"{result['regularizer']} {result['setting']}",
                           fontsize=8)
        for axis in list(axes.flat)[len(best):]:
            axis.axis("off")
        figure.suptitle(f"{dataset}: kernel weights (best strength each)")
        figure.tight_layout()
        name = f"weights-{dataset}.png"
        figure.savefig(os.path.join(out, name), dpi=90)
        pyplot.close(figure)
        files.append(name)
    return files


def write_report(out, summary, table, plots):
    lines = [
        "# tfreg compare", "",
        f"Command: `{summary['command']}`", "",
        f"{summary['keras']}, TensorFlow {summary['tensorflow']}; seed "
        f"{summary['seed']}; {summary['epochs']} epochs; batch {BATCH_SIZE}; "
        f"Adam {LEARNING_RATE:g}; MLP {list(HIDDEN_UNITS)} (ReLU) with every "
        "kernel regularized through `tfreg.apply`; trained with "
        "`jit_compile=True`. The strengths of one regularizer train side by "
        "side as identical towers (same initial weights, same batches) of one "
        "compiled model; each tower's loss and gradients are its own.", "",
        "Data:", ""]
    lines += [f"- {text}" for text in summary["datasets_described"]]
    lines += [
        "", "## Results", "",
        "- val loss: validation data loss after the last epoch, without the "
        "penalty (cross-entropy; for regression the MSE of the standardized "
        "target).",
        "- val metric: accuracy, or mean absolute error in the target's "
        "units.",
        f"- near-zero: share of kernel weights with |w| < {ZERO_THRESHOLD:g}.",
        "- penalty: the regularization loss after the last epoch. Priors' "
        "-log p(w) / num_examples includes normalizing constants and can be "
        "negative.",
        "- penalty share: |penalty| / (val loss + |penalty|).",
        "- ms/step: mean time of a training step after the first (which "
        "compiles), divided by the number of towers trained in that step.",
        "- `*`: lowest val loss for the dataset.", "",
        table, ""]
    if summary["notes"]:
        lines += ["Notes:", ""] + [f"- {note}" for note in summary["notes"]]
        lines.append("")
    lines += ["## Best models", ""]
    for name, export in summary["exports"].items():
        best = summary["best"][name]
        match = "match" if export["predictions_match"] else "DO NOT match"
        text = (f"- {name}: {best['regularizer']} {best['setting']}, exported "
                f"with `{export['how']}` to "
                f"`{os.path.basename(export['path'])}/`, reloaded with "
                f"`tf.saved_model.load`: predictions {match} (max |difference| "
                f"{export['max_abs_difference']:.2g})")
        if "regularization_loss" in export:
            agree = ("equals" if export["regularization_loss_matches"]
                     else "DIFFERS FROM")
            text += (f"; its `regularization_loss` signature "
                     f"({export['regularization_loss']:.6g}) {agree} the "
                     "live model's penalty")
        lines.append(text + ".")
    if plots:
        lines += ["", "## Plots", "",
                  "Best strength of each regularizer.", ""]
        lines += [f"![{name}]({name})" for name in plots]
    lines += ["", f"All numbers: `results.json`. Wall time: "
              f"{summary['wall_seconds']:.1f} s.", ""]
    with open(os.path.join(out, "report.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines))


# ---------------------------------------------------------------- main

def run(data=None, target=None, task="auto", regularizers=None, epochs=8,
        seed=0, out="compare-report", stdout=None, stderr=None, argv=None):
    """Runs the comparison; returns the summary dict written to results.json.

    Raises `UsageError` for bad input (files, columns, names, options).
    """
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    wall_start = time.perf_counter()
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise UsageError(f"--epochs must be an int >= 1; got {epochs!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UsageError(f"--seed must be an int >= 0; got {seed!r}")
    families = parse_regularizers(regularizers)
    datasets = load_datasets(data, target, task, seed)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create --out {out}: {error}") from None

    # Seeds make runs repeatable: XLA:CPU executables are deterministic.
    # `tf.config.experimental.enable_op_determinism()` is deliberately not
    # called: Keras 3 then silently trains with jit_compile=False.
    keras.utils.set_random_seed(seed)

    plan, notes = [], []
    for dataset in datasets:
        runs, skipped = candidates(families, len(dataset.x_train),
                                   explicit=regularizers is not None)
        by_family = {}
        for candidate in runs:
            by_family.setdefault(candidate.family, []).append(candidate)
        plan += [(dataset, family, group)
                 for family, group in by_family.items()]
        notes += [note for note in skipped if note not in notes]
    for note in notes:
        stderr.write(f"note: {note}\n")
    for dataset in datasets:
        stderr.write(f"data: {dataset.describe()}\n")

    tracker = Tracker(sum(len(group) for _, _, group in plan), epochs,
                      len(plan), stream=stderr)
    results, kernels, best, best_models = [], {}, {}, {}
    for dataset, family, group in plan:
        trained, model = train(dataset, family, group, epochs, seed, tracker)
        for tower, (candidate, (result, values)) in enumerate(
                zip(group, trained)):
            results.append(result)
            kernels[(dataset.name, family, candidate.setting)] = values
            current = best.get(dataset.name)
            if current is None or result["val_loss"] < current["val_loss"]:
                best[dataset.name] = result
                best_models[dataset.name] = standalone(
                    dataset, model, tower, candidate, seed)

    rows = table_rows(results, best)
    stdout.write(format_text_table(rows) + "\n")
    exports = {}
    for dataset in datasets:
        path = os.path.join(os.path.abspath(out), f"model-{dataset.name}")
        exports[dataset.name] = export = export_and_check(
            best_models[dataset.name], dataset, path)
        status = ("predictions match" if export["predictions_match"]
                  else "PREDICTIONS DIFFER")
        if "regularization_loss_matches" in export:
            status += (", regularization_loss matches"
                       if export["regularization_loss_matches"]
                       else ", REGULARIZATION LOSS DIFFERS")
        stdout.write(f"best {dataset.name}: {best[dataset.name]['regularizer']}"
                     f" {best[dataset.name]['setting']} -> {path} "
                     f"(reloaded: {status})\n")
    plots = plot(results, kernels, out)
    if not plots:
        notes.append("no plots: matplotlib is not installed")
    summary = {
        "command": " ".join(["tfreg compare", *(argv or [])]),
        "keras": "tf_keras" if _keras.LEGACY else f"Keras {keras.__version__}",
        "tensorflow": tf.__version__,
        "seed": seed, "epochs": epochs, "batch_size": BATCH_SIZE,
        "hidden_units": list(HIDDEN_UNITS), "learning_rate": LEARNING_RATE,
        "zero_threshold": ZERO_THRESHOLD,
        "datasets": [{"name": d.name, "task": d.task, "source": d.source,
                      "train_rows": len(d.x_train), "val_rows": len(d.x_val),
                      "features": int(d.x_train.shape[1]),
                      "classes": d.num_classes} for d in datasets],
        "datasets_described": [d.describe() for d in datasets],
        "notes": notes,
        "results": results,
        "best": {name: {key: result[key] for key in (
            "regularizer", "setting", "val_loss", "val_metric")}
            for name, result in best.items()},
        "exports": exports,
        "plots": plots,
        "wall_seconds": time.perf_counter() - wall_start,
    }
    write_report(out, summary, format_markdown_table(rows), plots)
    with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
    stdout.write(f"report: {os.path.join(out, 'report.md')} "
                 f"({summary['wall_seconds']:.0f} s)\n")
    failed = [name for name, export in exports.items()
              if not (export["predictions_match"]
                      and export.get("regularization_loss_matches", True))]
    if failed:
        raise RuntimeError(
            f"the reloaded SavedModel of {failed} does not match the model")
    return summary
