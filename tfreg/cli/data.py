"""Reading the user's data: CSV, NPZ or a bundled dataset, split and standardized."""

import csv
import dataclasses
import math
import os
import zipfile

import numpy as np

from tfreg.cli import UsageError

VALIDATION_FRACTION = 0.2
# Rows held out for the test split: candidates are picked on validation and
# the pick is scored on these.
TEST_FRACTION = 0.2
# An integer target with at most this many distinct values is a class label.
MAX_AUTO_CLASSES = 50
MIN_ROWS = 10
# name -> (task, training rows used by default). digits trains on a subset of
# its 1,437 training rows, so that an unregularized wide network overfits.
BUILTIN_DATASETS = {"digits": ("classification", 300),
                    "diabetes": ("regression", None)}
TASKS = ("auto", "classification", "regression")


@dataclasses.dataclass
class Dataset:
    """Standardized features, a train/validation/test split and the task.

    `x_*` keep the file's feature shape (rows, ...); `total_train_rows` is
    the size of the training split before `--train-rows` took a subset.
    """
    name: str
    task: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    num_classes: int = 0
    target_scale: float = 1.0
    source: str = ""
    total_train_rows: int = 0
    x_test: np.ndarray = None
    y_test: np.ndarray = None

    @property
    def metric_name(self):
        return "accuracy" if self.task == "classification" else "mae"

    def describe(self):
        kind = (f"classification, {self.num_classes} classes"
                if self.task == "classification" else "regression")
        rows = f"{len(self.x_train)} train"
        if self.total_train_rows > len(self.x_train):
            rows += f" (a subset of {self.total_train_rows})"
        shape = self.x_train.shape[1:]
        features = (f"{shape[0]} features" if len(shape) == 1
                    else f"features of shape {tuple(shape)}")
        return (f"{self.name} ({kind}; {rows} / {len(self.x_val)} validation "
                f"/ {len(self.x_test)} test rows, {features})")


def _number(text, default):
    """float(text), or `default` when `text` is not a number."""
    try:
        return float(text)
    except ValueError:
        return default


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
        # Text labels are classes; a missing, NaN or infinite value is not.
        if any(value == "" or not math.isfinite(_number(value, 0.0))
               for value in raw_y):
            raise
        y = np.array(raw_y)
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
    x = x.astype(np.float64)
    if x.ndim == 1:
        x = x[:, None]
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


def prepare(name, x, y, task, seed, source="", train_rows=None):
    """Splits, standardizes and labels (x, y) as a `Dataset`.

    The split (test, validation, train) depends on `seed` only; `train_rows` keeps the first rows of
    the (shuffled) training split.
    """
    if len(x) < MIN_ROWS:
        raise UsageError(
            f"{name} has {len(x)} rows; at least {MIN_ROWS} are needed")
    if x.ndim < 2 or 0 in x.shape[1:]:
        raise UsageError(f"{name} has no feature columns")
    task = infer_task(y, task)
    order = np.random.default_rng(seed).permutation(len(x))
    num_val = max(1, int(round(len(x) * VALIDATION_FRACTION)))
    num_test = max(1, int(round(len(x) * TEST_FRACTION)))
    test = order[:num_test]
    val = order[num_test:num_test + num_val]
    train = order[num_test + num_val:]
    total_train_rows = len(train)
    if train_rows is not None:
        train = train[:train_rows]
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
                   num_classes, target_scale, source, total_train_rows,
                   x[test], y[test])


def load_datasets(data, target, task, seed, train_rows=None):
    """The datasets to compare on, from the command-line options.

    `train_rows` None means each built-in dataset's default subset and every
    row of a file.
    """
    if task not in TASKS:
        raise UsageError(f"unknown --task {task!r}; expected one of {TASKS}")
    if train_rows is not None and (isinstance(train_rows, bool) or
                                   not isinstance(train_rows, int) or
                                   train_rows < 2):
        raise UsageError(
            f"--train-rows must be an int >= 2; got {train_rows!r}")
    if data is None or data in BUILTIN_DATASETS:
        if target:
            raise UsageError("--target is only for --data FILE.csv")
        names = [data] if data else [
            name for name, (kind, _) in BUILTIN_DATASETS.items()
            if task in ("auto", kind)]
        datasets = []
        for name in names:
            x, y = load_builtin(name)
            rows = train_rows or BUILTIN_DATASETS[name][1]
            datasets.append(prepare(name, x, y, task, seed,
                                    source=f"scikit-learn load_{name}()",
                                    train_rows=rows))
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
    return [prepare(name, x, y, task, seed, source=data,
                    train_rows=train_rows)]
