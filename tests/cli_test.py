"""The `tfreg` command line: clean errors for bad input, and small real runs."""

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from tfreg.cli import data
from tfreg.cli import main as cli
from tfreg.cli import sweep

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
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


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
        ("bad_epochs", ["--epochs", "0"], "--epochs must be an int >= 1"),
        ("epochs_not_int", ["--epochs", "two"], "invalid int value"),
        ("unknown_option", ["--colour", "red"], "unrecognized arguments"))
    def test_bad_options(self, argv, fragment):
        self._assert_usage_error(argv, fragment)

    def test_subprocess_exit_code_and_single_error_line(self):
        env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
        process = subprocess.run(
            [sys.executable, "-m", "tfreg", "compare", "--data",
             os.path.join(self.directory, "missing.npz")],
            capture_output=True, text=True, env=env, timeout=120,
            cwd=self.directory)
        self.assertEqual(process.returncode, 2, process.stderr)
        self.assertEqual(process.stdout, "")
        self.assertNotIn("Traceback", process.stderr)
        errors = [line for line in process.stderr.splitlines()
                  if line.startswith("tfreg")]
        self.assertEqual(errors, [
            "tfreg compare: error: no such file: "
            + os.path.join(self.directory, "missing.npz")])


class TaskTest(absltest.TestCase):

    def test_infer_task(self):
        self.assertEqual(data.infer_task(np.array([0., 1., 2.] * 5),
                                            "auto"), "classification")
        self.assertEqual(data.infer_task(np.linspace(0, 1, 15), "auto"),
                         "regression")
        self.assertEqual(data.infer_task(np.arange(200.0), "auto"),
                         "regression")
        self.assertEqual(data.infer_task(np.array(["a", "b"] * 5), "auto"),
                         "classification")
        self.assertEqual(data.infer_task(np.array([0., 1.] * 5),
                                            "regression"), "regression")

    def test_builtin_datasets_follow_the_task(self):
        for task, names in (("auto", ["digits", "diabetes"]),
                            ("classification", ["digits"]),
                            ("regression", ["diabetes"])):
            datasets = data.load_datasets(None, None, task, seed=0)
            self.assertEqual([d.name for d in datasets], names)
            for dataset in datasets:
                self.assertEqual(dataset.task,
                                 data.BUILTIN_DATASETS[dataset.name])

    def test_every_default_regularizer_runs(self):
        runs, notes = sweep.candidates(sweep.FAMILIES, 100)
        self.assertEqual(notes, [])
        self.assertEqual({run.family for run in runs},
                         {family.name for family in sweep.FAMILIES})
        for run in runs:
            if run.family in ("laplace", "horseshoe", "spike_and_slab"):
                self.assertEqual(run.make().num_examples, 100)


class RunTest(absltest.TestCase):
    """Small real runs: files written, XLA used, model exported and checked."""

    def _run(self, argv, out):
        code, stdout, stderr = _main(["compare", "--out", out, "--epochs", "2",
                                      *argv])
        self.assertEqual(code, 0, stderr)
        with open(os.path.join(out, "results.json")) as f:
            return json.load(f), stdout, stderr

    def test_csv_regression_run_and_determinism(self):
        directory = _tempdir(self)
        csv_path = _regression_csv(directory, rows=60)
        argv = ["--data", csv_path, "--target", "price", "--regularizers",
                "none,l2", "--seed", "3"]
        first, stdout, stderr = self._run(argv, os.path.join(directory, "a"))
        self.assertEqual([(r["regularizer"], r["setting"])
                          for r in first["results"]],
                         [("none", "-"), ("l2", "l2=0.0001"),
                          ("l2", "l2=0.001"), ("l2", "l2=0.01")])
        self.assertEqual(first["datasets"][0]["task"], "regression")
        for result in first["results"]:
            self.assertTrue(result["jit_compile"])
            self.assertLen(result["curves"]["val_loss"], 2)
            self.assertTrue(np.isfinite(result["val_loss"]))
            self.assertGreater(result["ms_per_step"], 0)
        self.assertEqual(first["results"][0]["penalty"], 0.0)
        self.assertGreater(first["results"][3]["penalty"],
                           first["results"][1]["penalty"])
        (export,) = first["exports"].values()
        self.assertTrue(export["predictions_match"])
        self.assertTrue(os.path.isdir(export["path"]))
        out = os.path.join(directory, "a")
        for name in ("report.md", "results.json", "curves-houses.png",
                     "weights-houses.png"):
            self.assertTrue(os.path.isfile(os.path.join(out, name)), name)
        with open(os.path.join(out, "report.md")) as f:
            report = f.read()
        self.assertIn("| houses | l2", report)
        self.assertIn("predictions match", report)
        # The printed table has a header, a rule and one line per run.
        table = [line for line in stdout.splitlines()
                 if line.startswith(("dataset", "houses"))]
        self.assertLen(table, 5)
        self.assertIn("ETA", stderr)

        second, _, _ = self._run(argv, os.path.join(directory, "b"))
        for a, b in zip(first["results"], second["results"]):
            self.assertEqual(a["curves"], b["curves"])
            self.assertEqual(a["near_zero"], b["near_zero"])

    def test_npz_classification_with_auto_task(self):
        directory = _tempdir(self)
        rng = np.random.default_rng(0)
        x = rng.normal(size=(80, 4)).astype(np.float32)
        y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
        path = os.path.join(directory, "blobs.npz")
        np.savez(path, x=x, y=y)
        summary, stdout, _ = self._run(
            ["--data", path, "--regularizers", "l1"],
            os.path.join(directory, "out"))
        self.assertEqual(summary["datasets"][0]["task"], "classification")
        self.assertEqual(summary["datasets"][0]["classes"], 2)
        self.assertEqual({r["metric"] for r in summary["results"]},
                         {"accuracy"})
        self.assertIn("best blobs: l1", stdout)


if __name__ == "__main__":
    absltest.main()
