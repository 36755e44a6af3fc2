"""The `tfreg` command line: options, bad input, quiet runs, reports."""

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from unittest import mock
import warnings
import zipfile

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

import _tfreg_cli
import tfreg
from tfreg import _keras
from tfreg.cli import compare
from tfreg.cli import data
from tfreg.cli import model_file
from tfreg.cli import report
from tfreg.cli import sweep
from tfreg.cli import training

keras = _keras.keras
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tempdir(test):
    """A fresh directory removed after `test` (works under pytest too)."""
    directory = tempfile.mkdtemp()
    test.addCleanup(shutil.rmtree, directory, ignore_errors=True)
    return directory


def _main(argv):
    """(exit code, stdout, stderr) of the CLI run in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = _tfreg_cli.main(argv)
    return code, out.getvalue(), err.getvalue()


def _subprocess(argv, cwd, timeout=300):
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return subprocess.run([sys.executable, "-m", "_tfreg_cli", *argv],
                          capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=cwd)


def _write(directory, name, text):
    path = os.path.join(directory, name)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def _regression_csv(directory, rows=40):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(rows, 3))
    y = x @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.normal(size=rows)
    lines = ["a,b,c,price"] + [
        ",".join(f"{value:.6f}" for value in (*features, target))
        for features, target in zip(x, y)]
    return _write(directory, "houses.csv", "\n".join(lines) + "\n")


def _classification_npz(directory, rows=60, features=4):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, features)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    path = os.path.join(directory, "blobs.npz")
    np.savez(path, x=x, y=y)
    return path


def _functional_model(directory, inputs=4, outputs=2, softmax=True,
                      name="small.keras"):
    """A saved functional model with its own L1 on the hidden kernel."""
    features = keras.Input((inputs,))
    hidden = keras.layers.Dense(8, activation="relu",
                                kernel_regularizer=tfreg.L1(0.5))(features)
    logits = keras.layers.Dense(
        outputs, activation="softmax" if softmax else None)(hidden)
    model = keras.Model(features, logits, name="small")
    path = os.path.join(directory, name)
    model.save(path)
    return path


class ErrorTest(parameterized.TestCase):
    """Bad input: one line on stderr, exit code 2, no traceback."""

    def setUp(self):
        super().setUp()
        self.directory = _tempdir(self)
        self.csv = _regression_csv(self.directory)

    def _assert_usage_error(self, argv, fragment):
        code, out, err = _main(["compare", "--out",
                                os.path.join(self.directory, "out"), *argv])
        self.assertEqual(code, 2, err)
        self.assertEqual(out, "")
        self.assertNotIn("Traceback", err)
        lines = err.strip().splitlines()
        self.assertLen(lines, 1, err)
        self.assertIn(fragment, lines[0])
        self.assertTrue(lines[0].startswith("tfreg"), lines[0])

    def test_missing_file(self):
        self._assert_usage_error(
            ["--data", os.path.join(self.directory, "nope.csv"),
             "--target", "y"], "no such file")

    def test_missing_target_column(self):
        self._assert_usage_error(["--data", self.csv, "--target", "cost"],
                                 "has no column 'cost'")

    def test_csv_needs_a_target(self):
        self._assert_usage_error(["--data", self.csv],
                                 "--target COLUMN is required")

    def test_non_numeric_feature(self):
        path = _write(self.directory, "text.csv",
                      "a,y\n" + "1,1\n" * 12 + "red,0\n")
        self._assert_usage_error(["--data", path, "--target", "y"],
                                 "column 'a' is not numeric: 'red' in row 14")

    @parameterized.named_parameters(("nan", "nan"), ("empty", ""),
                                    ("inf", "inf"))
    def test_missing_or_nan_value(self, value):
        path = _write(self.directory, "holes.csv",
                      "a,y\n" + "1,1\n" * 12 + f"{value},0\n")
        self._assert_usage_error(["--data", path, "--target", "y"],
                                 "column 'a' has a")

    def test_ragged_csv(self):
        path = _write(self.directory, "ragged.csv",
                      "a,b,y\n" + "1,2,1\n" * 12 + "1,2\n")
        self._assert_usage_error(["--data", path, "--target", "y"],
                                 "row 14 has 2 fields")

    def test_empty_csv(self):
        path = _write(self.directory, "empty.csv", "")
        self._assert_usage_error(["--data", path, "--target", "y"],
                                 "is empty")

    def test_too_few_rows(self):
        path = _write(self.directory, "tiny.csv", "a,y\n1,1\n2,0\n")
        self._assert_usage_error(["--data", path, "--target", "y"],
                                 "at least 10 are needed")

    def test_npz_without_y(self):
        path = os.path.join(self.directory, "data.npz")
        np.savez(path, x=np.ones((20, 2)))
        self._assert_usage_error(["--data", path], "has no array 'y'")

    def test_npz_with_nan(self):
        path = os.path.join(self.directory, "data.npz")
        x = np.ones((20, 2))
        x[3, 1] = np.nan
        np.savez(path, x=x, y=np.arange(20.0))
        self._assert_usage_error(["--data", path], "x has NaN")

    def test_npz_object_array(self):
        path = os.path.join(self.directory, "data.npz")
        np.savez(path, x=np.array([{"a": 1}] * 20, dtype=object),
                 y=np.arange(20.0))
        self._assert_usage_error(["--data", path], "cannot read")

    def test_not_an_npz(self):
        path = _write(self.directory, "fake.npz", "not a zip file")
        self._assert_usage_error(["--data", path], "cannot read")

    def test_unsupported_extension(self):
        path = _write(self.directory, "data.parquet", "x")
        self._assert_usage_error(["--data", path], "unsupported file type")

    def test_unknown_regularizer(self):
        self._assert_usage_error(
            ["--data", self.csv, "--target", "price", "--regularizers",
             "l2,bogus"], "unknown regularizer 'bogus'")

    def test_regression_on_text_labels(self):
        path = _write(self.directory, "labels.csv",
                      "a,kind\n" + "1,cat\n2,dog\n" * 6)
        self._assert_usage_error(
            ["--data", path, "--target", "kind", "--task", "regression"],
            "needs a numeric target")

    @parameterized.named_parameters(
        ("bad_task", ["--task", "clustering"], "invalid choice"),
        ("bad_epochs", ["--epochs", "0"], "--epochs: must be an int >= 1"),
        ("epochs_not_int", ["--epochs", "two"], "invalid int value: 'two'"),
        ("bad_seeds", ["--seeds", "0"], "--seeds: must be an int >= 1"),
        ("negative_seed", ["--seed", "-1"], "--seed: must be an int >= 0"),
        ("bad_train_rows", ["--train-rows", "x"], "invalid int value"),
        ("one_train_row", ["--train-rows", "1"],
         "--train-rows must be an int >= 2"),
        ("quick_and_thorough", ["--quick", "--thorough"],
         "not allowed with argument"),
        ("unknown_option", ["--colour", "red"], "unrecognized arguments"))
    def test_bad_options(self, argv, fragment):
        self._assert_usage_error(argv, fragment)

    def test_missing_model_file(self):
        self._assert_usage_error(
            ["--data", self.csv, "--target", "price", "--model",
             os.path.join(self.directory, "none.keras")],
            "no such file: --model")

    @parameterized.named_parameters(
        ("text_as_keras", "broken.keras",
         "is not a Keras model file: a .keras file is a zip archive"),
        ("text_as_h5", "broken.h5",
         "is not a Keras model file: an .h5 file is an HDF5 file"),
        ("text", "notes.txt",
         "is not a Keras model file: expected a .keras or .h5 file, got the "
         "extension '.txt'"))
    def test_model_file_that_is_not_a_model(self, name, fragment):
        path = _write(self.directory, name, "not a model")
        self._assert_usage_error(
            ["--data", self.csv, "--target", "price", "--model", path],
            f"--model {path} {fragment}")

    def test_model_that_is_a_directory(self):
        self._assert_usage_error(
            ["--data", self.csv, "--target", "price", "--model",
             self.directory],
            f"--model {self.directory} is a directory, not a Keras model "
            "file (.keras or .h5)")

    def test_model_that_is_a_saved_model_directory(self):
        path = os.path.join(self.directory, "exported")
        features = keras.Input((3,))
        tfreg.export_saved_model(
            keras.Model(features, keras.layers.Dense(1)(features)), path)
        self._assert_usage_error(
            ["--data", self.csv, "--target", "price", "--model", path],
            f"--model {path} is a SavedModel directory; tfreg loads only "
            ".keras and .h5 files")

    @parameterized.named_parameters(("nan", "nan"), ("inf", "-inf"),
                                    ("empty", ""))
    def test_nan_in_the_target(self, value):
        path = _write(self.directory, "target.csv",
                      "a,y\n" + "1,1\n2,0\n" * 6 + f"3,{value}\n")
        self._assert_usage_error(["--data", path, "--target", "y"],
                                 "column 'y' has a")

    def test_model_with_other_input_shape(self):
        path = _functional_model(self.directory, inputs=5, outputs=1,
                                 softmax=False)
        self._assert_usage_error(
            ["--data", self.csv, "--target", "price", "--model", path],
            "takes inputs of shape (5,); the data houses has features of "
            "shape (3,)")

    def test_model_with_other_output_count(self):
        npz = _classification_npz(self.directory)
        path = _functional_model(self.directory, outputs=3)
        self._assert_usage_error(["--data", npz, "--model", path],
                                 "has 3 outputs; the data blobs has 2 classes")

    def test_sequential_model(self):
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        path = os.path.join(self.directory, "seq.keras")
        model.save(path)
        self._assert_usage_error(
            ["--data", self.csv, "--target", "price", "--model", path],
            "is not a functional model")

    def test_subprocess_exit_code_and_single_error_line(self):
        process = _subprocess(
            ["compare", "--data",
             os.path.join(self.directory, "missing.npz")], self.directory)
        self.assertEqual(process.returncode, 2, process.stderr)
        self.assertEqual(process.stdout, "")
        # Quiet by default: TensorFlow's start-up lines are not shown.
        self.assertEqual(process.stderr.splitlines(), [
            "tfreg compare: error: no such file: "
            + os.path.join(self.directory, "missing.npz")])


def _edit_model_config(path, edit):
    """Passes the model config of a .keras or .h5 file through `edit`."""
    if path.endswith(".h5"):
        import h5py  # pylint: disable=g-import-not-at-top
        with h5py.File(path, "r+") as file:
            config = json.loads(file.attrs["model_config"])
            edit(config)
            file.attrs["model_config"] = json.dumps(config)
        return
    with zipfile.ZipFile(path) as archive:
        items = {item.filename: archive.read(item) for item in
                 archive.infolist()}
    config = json.loads(items["config.json"])
    edit(config)
    items["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, value in items.items():
            archive.writestr(name, value)


def _layers(config):
    return config["config"]["layers"]


class ModelFileTest(parameterized.TestCase):
    """A model file never runs code: what holds code is refused before
    Keras reads it, with one line and exit code 2."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.directory = tempfile.mkdtemp()
        cls.npz = _classification_npz(cls.directory)
        cls.marker = os.path.join(cls.directory, "marker")
        # Python code that creates the marker file when the layer is called
        # (Keras calls it while rebuilding the model).
        function = eval(  # pylint: disable=eval-used
            f"lambda x: (__import__('pathlib').Path({cls.marker!r})"
            ".write_text('ran'), x)[1]")
        features = keras.Input((4,))
        hidden = keras.layers.Lambda(function)(features)
        cls.lambda_model = keras.Model(
            features, keras.layers.Dense(2)(hidden))
        os.remove(cls.marker)  # Created by the functional build above.
        features = keras.Input((4,))
        hidden = keras.layers.Dense(3, name="hidden",
                                    kernel_regularizer=tfreg.L2(0.1))(features)
        cls.plain_model = keras.Model(
            features, keras.layers.Dense(2, name="output")(hidden))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.directory, ignore_errors=True)
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        self.addCleanup(lambda: os.path.exists(self.marker) and os.remove(
            self.marker))

    def _save(self, model, name):
        path = os.path.join(_tempdir(self), name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # .h5 is legacy.
            model.save(path)
        return path

    def _assert_refused(self, path, holds):
        code, out, err = _main(["compare", "--data", self.npz, "--model",
                                path, "--out",
                                os.path.join(_tempdir(self), "out")])
        self.assertFalse(os.path.exists(self.marker), "the file's code ran")
        self.assertEqual((code, out), (2, ""), err)
        self.assertEqual(err.splitlines(), [
            f"tfreg compare: error: --model {path} is refused: it holds "
            f"{holds}; tfreg loads only models made of Keras and tfreg "
            "classes, never code from a file"])

    @parameterized.named_parameters(("h5", "lambda.h5"),
                                    ("keras", "lambda.keras"))
    def test_a_lambda_layer_never_runs(self, name):
        self._assert_refused(
            self._save(self.lambda_model, name),
            "a Lambda layer (its function is stored as Python code)")

    @parameterized.named_parameters(
        ("bytecode", lambda layer: layer["config"].update(
            function_type="lambda"),
         "a serialized Python function ('function_type')"),
        ("python_lambda", lambda layer: layer["config"].update(
            activation={"class_name": "__lambda__", "config": {}}),
         "a serialized Python lambda"),
        ("foreign_module", lambda layer: layer["config"].update(
            kernel_initializer={"module": "os", "class_name": "system",
                                "config": {}}),
         "class 'system' from module 'os'"),
        ("foreign_function", lambda layer: layer["config"].update(
            activation={"module": "keras.src.saving.saving_api",
                        "class_name": "function", "config": "save_model",
                        "registered_name": "save_model"}),
         "the function 'save_model' from 'keras.src.saving.saving_api'"),
        ("custom_class", lambda layer: layer.update(
            class_name="Evil", registered_name="evil>Evil"),
         "the custom class 'evil>Evil'"),
        ("unknown_class", lambda layer: layer.update(
            class_name="DistributionLambda", module=None),
         "the class 'DistributionLambda', which neither Keras nor tfreg "
         "provides"),
        ("saved_model_layer", lambda layer: layer.update(
            class_name="TFSMLayer"),
         "a TFSMLayer (it loads and runs a SavedModel's graphs)"),
        ("tf_io_op", lambda layer: layer.update(
            class_name="TFOpLambda", config={"name": "w",
                                             "function": "io.write_file"}),
         "a TF op layer calling tf.io.write_file, which is not array, math "
         "or neural-network arithmetic"),
        ("tf_py_function", lambda layer: layer.update(
            class_name="TFOpLambda",
            config={"name": "p", "function": "compat.v1.py_func"}),
         "a TF op layer calling tf.compat.v1.py_func, which is not array, "
         "math or neural-network arithmetic"))
    def test_code_in_a_config_is_refused(self, edit, holds):
        for name in ("model.keras", "model.h5"):
            with self.subTest(name=name):
                path = self._save(self.plain_model, name)
                _edit_model_config(path, lambda config: edit(
                    next(layer for layer in _layers(config)
                         if layer["config"]["name"] == "hidden")))
                self._assert_refused(path, holds)

    def test_keras_and_tfreg_classes_load(self):
        features = keras.Input((4,))
        hidden = keras.layers.Dense(
            6, activation="relu", kernel_regularizer=tfreg.GroupLasso(0.1),
            bias_regularizer=tfreg.priors.Laplace(1.0, num_examples=10))(
                features)
        hidden = keras.layers.BatchNormalization()(hidden)
        if _keras.LEGACY:  # TF ops become TFOpLambda layers.
            import tensorflow as tf  # pylint: disable=g-import-not-at-top
            hidden = tf.transpose(tf.math.add(tf.transpose(hidden), 1.0))
            names = ("model.keras", "model.h5")
        else:  # Keras 3's .h5 loader cannot rebuild operations.
            hidden = keras.ops.transpose(keras.ops.transpose(hidden))
            names = ("model.keras",)
        model = keras.Model(features, keras.layers.Dense(2)(hidden[:, :5]))
        model.compile(tfreg.optimizers.Regularized(
            keras.optimizers.Adam(), mode="proximal", model=model), "mse")
        x = np.ones((2, 4), np.float32)
        for name in names:
            with self.subTest(name=name):
                loaded = model_file.load(self._save(model, name))
                np.testing.assert_allclose(loaded(x), model(x), rtol=1e-6)
        path = self._save(self.plain_model, "plain.h5")
        np.testing.assert_allclose(model_file.load(path)(x),
                                   self.plain_model(x), rtol=1e-6)


class LauncherTest(parameterized.TestCase):
    """The launcher: help without TensorFlow, presets, flags."""

    def test_help_imports_neither_tensorflow_nor_tfreg(self):
        code = (
            "import sys, _tfreg_cli\n"
            "for argv in ([], ['--help'], ['compare', '--help']):\n"
            "    try:\n"
            "        _tfreg_cli.main(argv)\n"
            "    except SystemExit:\n"
            "        pass\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in\n"
            "      ('tensorflow', 'keras', 'tf_keras', 'tfreg')))\n")
        process = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True,
            env=dict(os.environ, PYTHONPATH=ROOT), timeout=120)
        self.assertEqual(process.returncode, 0, process.stderr)
        self.assertEqual(process.stdout.splitlines()[-1], "[]")
        self.assertIn("--thorough", process.stdout)
        self.assertIn("--model FILE ", process.stdout)

    def test_no_command_prints_help_and_exits_2(self):
        code, out, err = _main([])
        self.assertEqual(code, 2)
        self.assertIn("compare", err)

    def test_help_names_the_default_regularizers(self):
        self.assertEqual(_tfreg_cli.REGULARIZERS, sweep.DEFAULT_REGULARIZERS)

    @parameterized.named_parameters(
        ("default", [], {"strengths": "default", "seeds": 3, "epochs": 40}),
        ("quick", ["--quick"], {"strengths": "quick", "seeds": 3,
                                "epochs": 20}),
        ("thorough", ["--thorough"], {"strengths": "all", "seeds": 5,
                                      "epochs": 100}),
        ("overrides", ["--quick", "--seeds", "4", "--epochs", "7"],
         {"strengths": "quick", "seeds": 4, "epochs": 7}))
    def test_presets(self, argv, expected):
        with mock.patch.object(compare, "run") as run:
            code, _, err = _main(["compare", *argv, "--model", "m.keras",
                                  "--train-rows", "50", "--seed", "2"])
        self.assertEqual(code, 0, err)
        kwargs = run.call_args.kwargs
        self.assertEqual({key: kwargs[key] for key in expected}, expected)
        self.assertEqual((kwargs["model"], kwargs["train_rows"],
                          kwargs["seed"]), ("m.keras", 50, 2))

    def test_library_does_not_import_the_application(self):
        package = os.path.dirname(tfreg.__file__)
        pattern = re.compile(r"^\s*(from|import)\s+(tfreg\.cli|_tfreg_cli|"
                             r"tfreg\s+import\s+cli)\b", re.M)
        for directory, _, files in os.walk(package):
            if os.path.relpath(directory, package).split(os.sep)[0] == "cli":
                continue
            for name in files:
                path = os.path.join(directory, name)
                if not name.endswith(".py") or path.endswith("__main__.py"):
                    continue
                with open(path, encoding="utf-8") as f:
                    self.assertIsNone(pattern.search(f.read()), path)


class PartsTest(absltest.TestCase):
    """Data, candidates and statistics without training."""

    def test_infer_task(self):
        self.assertEqual(data.infer_task(np.array([0., 1., 2.] * 5), "auto"),
                         "classification")
        self.assertEqual(data.infer_task(np.linspace(0, 1, 15), "auto"),
                         "regression")
        self.assertEqual(data.infer_task(np.arange(200.0), "auto"),
                         "regression")
        self.assertEqual(data.infer_task(np.array(["a", "b"] * 5), "auto"),
                         "classification")
        self.assertEqual(data.infer_task(np.array([0., 1.] * 5),
                                         "regression"), "regression")

    def test_builtin_datasets_follow_the_task_and_subset(self):
        for task, names in (("auto", ["digits", "diabetes"]),
                            ("classification", ["digits"]),
                            ("regression", ["diabetes"])):
            datasets = data.load_datasets(None, None, task, seed=0)
            self.assertEqual([d.name for d in datasets], names)
            for dataset in datasets:
                kind, rows = data.BUILTIN_DATASETS[dataset.name]
                self.assertEqual(dataset.task, kind)
                if rows:
                    self.assertLen(dataset.x_train, rows)
                    self.assertGreater(dataset.total_train_rows, rows)
        (digits,) = data.load_datasets("digits", None, "auto", 0, 120)
        self.assertLen(digits.x_train, 120)
        self.assertIn("120 train (a subset of", digits.describe())

    def test_test_validation_and_training_rows_are_disjoint(self):
        x = np.arange(50.0)[:, None]
        dataset = data.prepare("rows", x, np.arange(50) % 2,
                               "classification", seed=4)
        splits = [set(np.round(split.ravel(), 5)) for split in
                  (dataset.x_test, dataset.x_val, dataset.x_train)]
        self.assertEqual([len(split) for split in splits], [10, 10, 30])
        self.assertEqual(len(set.union(*splits)), 50)

    def test_npz_keeps_the_feature_shape(self):
        directory = _tempdir(self)
        path = os.path.join(directory, "images.npz")
        np.savez(path, x=np.random.default_rng(0).normal(size=(30, 4, 4)),
                 y=np.arange(30.0))
        (dataset,) = data.load_datasets(path, None, "auto", 0)
        self.assertEqual(dataset.x_train.shape[1:], (4, 4))

    def test_strength_presets(self):
        for strengths in sweep.STRENGTHS:
            runs, notes = sweep.candidates(sweep.FAMILIES, 100, strengths)
            self.assertEqual(notes, [])
            self.assertEqual({run.family for run in runs},
                             set(sweep.DEFAULT_REGULARIZERS))
            for family in sweep.FAMILIES[1:]:
                count = {"quick": 1, "default": len(family.default),
                         "all": len(family.values)}[strengths]
                self.assertLen([r for r in runs if r.family == family.name],
                               count, (strengths, family))
        (l2,) = [f for f in sweep.FAMILIES if f.name == "l2"]
        self.assertLen(l2.default, 2)

    def test_shared_strength_and_proximal_mode(self):
        runs, _ = sweep.candidates(sweep.parse_regularizers(
            "l2,l1_proximal,laplace"), 100, "all")
        l2 = [run for run in runs if run.family == "l2"]
        self.assertIs(l2[0].strength, l2[-1].strength)
        regularizer = l2[-1].make()
        self.assertIs(regularizer.l2, l2[0].strength)
        self.assertEqual({run.mode for run in runs if run.family ==
                          "l1_proximal"}, {"proximal"})
        self.assertEqual({run.strength for run in runs if run.family ==
                          "laplace"}, {None})
        for run in runs:
            if run.family in ("laplace", "horseshoe", "spike_and_slab"):
                self.assertEqual(run.make().num_examples, 100)

    def test_none_always_runs_first(self):
        self.assertEqual(
            [f.name for f in sweep.parse_regularizers("laplace,l2")],
            ["none", "laplace", "l2"])

    def _results(self, losses_by_candidate):
        return [{"dataset": "d", "regularizer": name, "setting": "-",
                 "metric": "accuracy", "config": None, "val_loss": loss,
                 "val_metric": 0.5, "test_loss": loss + 0.1,
                 "test_metric": 0.4, "near_zero": 0.0, "zero": 0.0,
                 "zero_units": 0, "units": 10, "parameters": 50,
                 "parameters_after_shrink": 50, "penalty": 0.0,
                 "ms_per_step": 1.0}
                for name, losses in losses_by_candidate.items()
                for loss in losses]

    def test_aggregate_mean_and_spread(self):
        (row,) = report.aggregate(self._results({"none": [1.0, 2.0, 3.0]}))
        self.assertEqual((row["val_loss"], row["val_loss_sd"], row["seeds"]),
                         (2.0, 1.0, 3))

    def test_verdict_against_the_seed_spread(self):
        rows = report.aggregate(self._results({
            "none": [1.0, 1.1, 1.2], "l2": [0.5, 0.6, 0.7],
            "l1": [0.95, 1.0, 1.05]}))
        verdict = report.verdicts(rows)["d"]
        self.assertEqual(verdict["best"], "l2")
        self.assertAlmostEqual(verdict["gain"], 0.5)
        self.assertAlmostEqual(verdict["spread"], 0.2)
        self.assertTrue(verdict["exceeds_spread"])
        self.assertEqual(verdict["beyond_spread"], ["l2"])
        (line,) = report.verdict_lines({"d": verdict})
        self.assertIn("best l2", line)
        self.assertIn("which exceeds the seed spread", line)

        rows = report.aggregate(self._results({
            "none": [1.0, 1.5, 2.0], "l2": [0.9, 1.4, 1.9]}))
        verdict = report.verdicts(rows)["d"]
        self.assertEqual(verdict["best"], "l2")
        self.assertFalse(verdict["exceeds_spread"])
        self.assertIn("does NOT exceed", report.verdict_lines(
            {"d": verdict})[0])

        rows = report.aggregate(self._results({"none": [1.0],
                                               "l2": [1.5]}))
        self.assertIn("no regularizer beats none",
                      report.verdict_lines(report.verdicts(rows))[0])

    def test_prior_penalty_without_its_normalizing_constant(self):
        model = keras.Sequential([keras.Input((3,)),
                                  keras.layers.Dense(2, name="d")])
        tfreg.apply(model, tfreg.priors.Laplace(scale=2.0, num_examples=10))
        kernel = model.get_layer("d").kernel.numpy()
        at_zero = training._penalty_at_zero(model)
        # -log p(0) = log(2 scale) per kernel weight, over num_examples.
        self.assertAlmostEqual(at_zero, 6 * np.log(4.0) / 10, places=5)
        # The weights are restored.
        np.testing.assert_array_equal(model.get_layer("d").kernel.numpy(),
                                      kernel)
        self.assertAlmostEqual(
            training._penalty(model) - at_zero,
            np.sum(np.abs(kernel)) / 2.0 / 10, places=5)


class RunTest(absltest.TestCase):
    """Small real runs: files written, XLA used, model exported and checked."""

    def _run(self, argv, out):
        code, stdout, stderr = _main(["compare", "--out", out, "--epochs", "2",
                                      "--seeds", "2", *argv])
        self.assertEqual(code, 0, stderr)
        with open(os.path.join(out, "results.json")) as f:
            return json.load(f), stdout, stderr

    def test_csv_regression_run_and_determinism(self):
        directory = _tempdir(self)
        csv_path = _regression_csv(directory, rows=60)
        argv = ["--data", csv_path, "--target", "price", "--regularizers",
                "none,l2", "--thorough", "--seed", "3"]
        first, stdout, stderr = self._run(argv, os.path.join(directory, "a"))
        self.assertEqual([(r["regularizer"], r["setting"], r["seed"])
                          for r in first["results"]][:4],
                         [("none", "-", 3), ("none", "-", 4),
                          ("l2", "l2=0.0001", 3), ("l2", "l2=0.0001", 4)])
        self.assertLen(first["results"], 10)
        self.assertLen(first["candidates"], 5)
        self.assertEqual(first["datasets"][0]["task"], "regression")
        for result in first["results"]:
            self.assertTrue(result["jit_compile"])
            self.assertEqual(result["curves"]["epoch"], [1, 2])
            self.assertTrue(np.isfinite(result["val_loss"]))
            self.assertGreater(result["ms_per_step"], 0)
        # Seeds differ; the aggregate is their mean.
        none = [r for r in first["results"] if r["regularizer"] == "none"]
        self.assertNotEqual(none[0]["val_loss"], none[1]["val_loss"])
        self.assertAlmostEqual(first["candidates"][0]["val_loss"],
                               np.mean([r["val_loss"] for r in none]))
        penalties = [c["penalty"] for c in first["candidates"]]
        self.assertEqual(penalties[0], 0.0)
        self.assertEqual(penalties[1:], sorted(penalties[1:]))
        (export,) = first["exports"].values()
        self.assertTrue(export["predictions_match"])
        self.assertTrue(export["regularization_loss_matches"])
        self.assertTrue(os.path.isdir(export["path"]))
        out = os.path.join(directory, "a")
        for name in ("report.md", "results.json", "curves-houses.png",
                     "weights-houses.png", "sparsity-houses.png"):
            self.assertTrue(os.path.isfile(os.path.join(out, name)), name)
        with open(os.path.join(out, "report.md")) as f:
            report_text = f.read()
        self.assertIn("### houses\n\n| regularizer | val loss | mae |",
                      report_text)
        self.assertIn("\n| l2 l2=0.001 | ", report_text)
        self.assertIn("## Verdict", report_text)
        self.assertIn("predictions match", report_text)
        # The printed table: a header, a rule and one line per candidate.
        table = [line for line in stdout.splitlines()
                 if line.startswith(("regularizer", "none", "l2 "))]
        self.assertLen(table, 6)
        self.assertIn(" ± ", table[1])
        self.assertTrue(any(line.startswith("houses: ")
                            for line in stdout.splitlines()), stdout)
        self.assertIn("On the held-out test split (not used to pick)", stdout)
        self.assertEqual(first["datasets"][0]["test_rows"], 12)
        for result in first["results"]:
            self.assertTrue(np.isfinite(result["test_metric"]))
        self.assertIn("ETA", stderr)

        second, _, _ = self._run(argv, os.path.join(directory, "b"))
        for a, b in zip(first["results"], second["results"]):
            self.assertEqual(a["curves"], b["curves"])
            self.assertEqual(a["near_zero"], b["near_zero"])

    def test_no_warnings_of_its_own_making(self):
        directory = _tempdir(self)
        path = _classification_npz(directory)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            compare.run(data=path, regularizers="l2", strengths="quick",
                        seeds=1, epochs=1, out=os.path.join(directory, "o"),
                        stdout=io.StringIO(), stderr=io.StringIO())
        self.assertEqual([str(w.message) for w in caught], [])

    def test_saved_functional_model(self):
        directory = _tempdir(self)
        npz = _classification_npz(directory)
        model_path = _functional_model(directory)
        summary, stdout, _ = self._run(
            ["--data", npz, "--model", model_path, "--regularizers",
             "none,laplace", "--quick"], os.path.join(directory, "out"))
        self.assertEqual(summary["datasets"][0]["task"], "classification")
        self.assertIn("small from", summary["regime"]["model"])
        by_name = {c["regularizer"]: c for c in summary["candidates"]}
        # The saved model's own L1 is taken off: `none` has no penalty.
        self.assertEqual(by_name["none"]["penalty"], 0.0)
        self.assertGreater(by_name["laplace"]["penalty"], 0.0)
        self.assertGreater(
            summary["results"][-1]["penalty_at_zero"], 0.0)
        self.assertIn("best blobs:", stdout)
        self.assertTrue(summary["exports"]["blobs"]["predictions_match"])

    def test_quiet_subprocess_run(self):
        directory = _tempdir(self)
        path = _classification_npz(directory, rows=40)
        process = _subprocess(
            ["compare", "--data", path, "--regularizers", "l1", "--quick",
             "--epochs", "1", "--seeds", "1", "--out",
             os.path.join(directory, "out")], directory)
        self.assertEqual(process.returncode, 0, process.stderr)
        for line in process.stderr.splitlines():
            self.assertRegex(line, r"^(data: |\[\d+/\d+\] )")
        self.assertIn("best blobs:", process.stdout)


if __name__ == "__main__":
    absltest.main()
