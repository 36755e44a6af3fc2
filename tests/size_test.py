"""`tfreg size` on a tiny model: frontier rows, baselines, verdict, files."""

import contextlib
import io
import os
import shutil
import tempfile
from unittest import mock
import warnings

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

import _tfreg_cli
from tfreg import _keras
from tfreg.cli import size
from tfreg.cli import size_models
from tfreg.cli import size_report

keras = _keras.keras
TINY_STRENGTHS = {"group_lasso": (3e-2,), "sparse_group_lasso": (3e-2,),
                  "slimming": (1e-1,)}
TINY_EPOCHS = (1, 3, 2)


def _blobs(directory, rows=150, features=4):
    """Three well-separated classes in an .npz file."""
    rng = np.random.default_rng(0)
    y = np.arange(rows) % 3
    x = rng.normal(size=(rows, features)) + 3.0 * np.eye(3, features)[y]
    path = os.path.join(directory, "blobs.npz")
    np.savez(path, x=x.astype(np.float32), y=y)
    return path


def _trained_model(directory, data_path, inputs=4):
    """A functional Dense-BN-ReLU-Dense classifier trained on the blobs'
    training split and saved compiled (Adam)."""
    keras.utils.set_random_seed(0)
    features = keras.Input((inputs,))
    hidden = keras.layers.Dense(12, name="hidden")(features)
    hidden = keras.layers.BatchNormalization(name="bn")(hidden)
    hidden = keras.layers.ReLU()(hidden)
    model = keras.Model(features, keras.layers.Dense(3, name="logits")(
        hidden))
    model.compile(keras.optimizers.Adam(1e-2),
                  keras.losses.SparseCategoricalCrossentropy(
                      from_logits=True))
    if inputs == 4:
        dataset = size._data(data_path, None, 0, image=False)
        model.fit(dataset.x_train, dataset.y_train, epochs=5, verbose=0)
    path = os.path.join(directory, f"trained{inputs}.keras")
    model.save(path)
    return path


def _main(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = _tfreg_cli.main(argv)
    return code, out.getvalue(), err.getvalue()


class SizeJobTest(absltest.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.directory = tempfile.mkdtemp()
        cls.data = _blobs(cls.directory)
        cls.model = _trained_model(cls.directory, cls.data)
        cls.out = os.path.join(cls.directory, "out")
        with mock.patch.dict(size.EPOCHS, {"quick": TINY_EPOCHS}), \
                mock.patch.dict(size.STRENGTHS, {"quick": TINY_STRENGTHS}), \
                mock.patch.dict(size.LATENCY_REPEATS, {"quick": 3}), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cls.summary = size.run(model=cls.model, data=cls.data,
                                   preset="quick", seeds=2, max_drop=5.0,
                                   out=cls.out, stdout=io.StringIO(),
                                   stderr=io.StringIO())
        (cls.entry,) = cls.summary["models"]

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.directory, ignore_errors=True)
        super().tearDownClass()

    def test_starts_from_the_saved_weights(self):
        dataset = size._data(self.data, None, 0, image=False)
        saved = keras.models.load_model(self.model)
        self.assertEqual(
            self.entry["first_evaluation"]["val"],
            size_models.accuracy(saved, dataset.x_val, dataset.y_val))
        self.assertEqual(
            self.entry["first_evaluation"]["test"],
            size_models.accuracy(saved, dataset.x_test, dataset.y_test))
        self.assertGreater(self.entry["first_evaluation"]["val"], 0.8)

    def test_fine_tune_rate_scales_the_saved_optimizer(self):
        dataset = size._data(self.data, None, 0, image=False)
        start = size_models.loaded(self.model, dataset, [0])
        optimizer = start.optimizer(size.FINE_TUNE_RATE["default"])
        self.assertIsInstance(optimizer, keras.optimizers.Adam)
        self.assertAlmostEqual(
            float(np.asarray(optimizer.learning_rate)),
            1e-2 * size.FINE_TUNE_RATE["default"], places=7)

    def test_rows_and_baselines(self):
        methods = [row["method"] for row in self.entry["rows"]]
        self.assertEqual(methods, [
            "unpruned", "group_lasso", "sparse_group_lasso", "slimming",
            "scratch", "uniform", "magnitude"])
        for row in self.entry["rows"]:
            self.assertLen(row["runs"], 1 if row["method"] == "unpruned"
                           else 2)
            for key in ("params", "flops", "latency_ms_batch_1",
                        "latency_ms_batch_64"):
                self.assertGreater(row[key], 0, (row["method"], key))
        unpruned = self.entry["rows"][0]["params"]
        self.assertLess(min(row["params"] for row in self.entry["rows"][1:]),
                        unpruned)
        self.assertEqual(sorted(self.entry["verdict"]["baselines"]),
                         ["magnitude", "scratch", "uniform"])

    def test_verdict_is_chosen_on_validation_and_scored_on_test(self):
        rows = self.entry["rows"]
        limit = rows[0]["val"] - 5.0 / 100
        within = [row for row in rows[1:4]
                  if row["val"] - row["val_sd"] >= limit]
        verdict = self.entry["verdict"]
        self.assertTrue(verdict["within"])
        chosen = min(within, key=lambda row: row["params"])
        self.assertEqual(verdict["params"], chosen["params"])
        self.assertEqual(verdict["test"], chosen["test"])
        self.assertEqual(verdict["unpruned_test"], rows[0]["test"])
        self.assertIn("on validation", self.entry["verdict_line"])

    def test_files_written_and_reloaded(self):
        saved = self.entry["saved"]
        self.assertTrue(os.path.isfile(saved["keras_file"]))
        self.assertTrue(os.path.isfile(os.path.join(saved["saved_model"],
                                                    "saved_model.pb")))
        self.assertEqual(saved["reloaded_match"],
                         {"keras": True, "saved_model": True})
        for name in ("report.md", "results.json", "accuracy-vs-params.png"):
            self.assertTrue(os.path.isfile(os.path.join(self.out, name)),
                            name)


class ChooseTest(absltest.TestCase):

    @staticmethod
    def _row(method, params, val, val_sd):
        return {"method": method, "strength": 1.0, "params": params,
                "val": val, "val_sd": val_sd, "test": val, "test_sd": val_sd}

    def test_within_beyond_the_seed_spread(self):
        rows = [self._row("unpruned", 100, 0.970, 0.003),
                self._row("group_lasso", 30, 0.9660, 0.001),
                # Within 0.5 points on the mean, not beyond its spread.
                self._row("slimming", 20, 0.9660, 0.0045),
                self._row("scratch", 10, 0.99, 0.0)]
        verdict = size_report.choose(rows, 0.5)
        self.assertTrue(verdict["within"])
        self.assertEqual(verdict["params"], 30)
        self.assertIsNone(
            size_report.smallest_within(rows, 0.5, methods=("slimming",)))
        self.assertEqual(
            size_report.smallest_within(rows, 1.0, methods=("slimming",)),
            rows[2])

    def test_none_within_takes_the_best_validation_accuracy(self):
        rows = [self._row("unpruned", 100, 0.97, 0.0),
                self._row("group_lasso", 30, 0.90, 0.0),
                self._row("slimming", 20, 0.93, 0.0)]
        verdict = size_report.choose(rows, 1.0)
        self.assertFalse(verdict["within"])
        self.assertEqual(verdict["params"], 20)


class BuiltInStartTest(absltest.TestCase):

    def test_one_start_model_per_seed(self):
        # The unpruned row is then a mean over the seeds its pruned rows
        # use, not one start model's figure.
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory, ignore_errors=True)
        with mock.patch.object(size_models, "MLP_UNITS", (6,)):
            ((start, dataset),) = size._starts(
                None, _blobs(directory), None, [3, 4], base_epochs=1)
        self.assertEqual(sorted(start.models), [3, 4])
        first, second = (start.models[seed].get_weights()[0]
                         for seed in (3, 4))
        self.assertFalse(np.allclose(first, second))
        self.assertLen(start.distinct(), 2)
        self.assertIs(start.model, start.models[3])
        self.assertEqual(start.model.input_shape[1:], dataset.x_train.shape[1:])


class ResidualCnnTest(absltest.TestCase):

    def test_slimming_reaches_every_layer(self):
        # Zero scales make their channels constants, which shrink folds:
        # every layer, the stem's channels too (with block_b's beside them
        # in the residual Add), narrows by the channels zeroed.
        model = size_models.residual_cnn((8, 8, 1), 10, seed=0)
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                gamma = layer.gamma.numpy()
                gamma[:3] = 0
                layer.gamma.assign(gamma)
        small = size._shrink(model)
        widths = {layer.name: getattr(layer, "filters", None) or layer.units
                  for layer in small.layers if hasattr(layer, "kernel")}
        self.assertEqual(widths, {"stem": 29, "block_a": 29, "block_b": 29,
                                  "wide": 61, "hidden": 61, "logits": 10})
        x = np.random.default_rng(0).normal(size=(4, 8, 8, 1)).astype(
            np.float32)
        np.testing.assert_allclose(small(x), model(x), atol=1e-5)


class MagnitudeBaselineTest(absltest.TestCase):

    def test_a_layer_of_small_weights_keeps_its_share(self):
        # Two hidden layers of 8 units; the second's groups (its kernel's
        # columns, the logits kernel's rows) are 100x smaller overall, as
        # after a wide fan-in. Halving the parameters by magnitude must
        # narrow both layers, not empty the second.
        keras.utils.set_random_seed(0)
        features = keras.Input((6,))
        hidden = keras.layers.Dense(8, activation="relu", name="a")(features)
        hidden = keras.layers.Dense(8, activation="relu", name="b")(hidden)
        model = keras.Model(features, keras.layers.Dense(3, name="logits")(
            hidden))
        for name in ("b", "logits"):
            layer = model.get_layer(name)
            layer.kernel.assign(layer.kernel.numpy() * 0.01)
        small = size._down_to(
            size._magnitude_order(list(size.tfreg.channel_groups(model))),
            model, model.count_params() // 2)
        widths = {layer.name: layer.units for layer in small.layers
                  if layer.name in ("a", "b")}
        self.assertLessEqual(small.count_params(), model.count_params() // 2)
        self.assertGreater(widths["b"], 1)
        self.assertLess(widths["a"], 8)


class SizeErrorTest(parameterized.TestCase):
    """Bad input: one line on stderr, exit code 2."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.directory = tempfile.mkdtemp()
        cls.data = _blobs(cls.directory)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.directory, ignore_errors=True)
        super().tearDownClass()

    def _assert_usage_error(self, argv, fragment):
        code, out, err = _main(["size", "--out",
                                os.path.join(self.directory, "out"), *argv])
        self.assertEqual((code, out), (2, ""), err)
        lines = err.strip().splitlines()
        self.assertLen(lines, 1, err)
        self.assertIn(fragment, lines[0])

    def test_not_a_functional_model(self):
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        path = os.path.join(self.directory, "sequential.keras")
        model.save(path)
        self._assert_usage_error(["--model", path, "--data", self.data],
                                 "is not a functional model")

    def test_data_that_does_not_fit_the_model(self):
        path = _trained_model(self.directory, self.data, inputs=5)
        self._assert_usage_error(
            ["--model", path, "--data", self.data],
            "takes inputs of shape (5,); the data blobs has features of "
            "shape (4,)")

    def test_non_numeric_max_drop(self):
        self._assert_usage_error(["--max-drop", "one"],
                                 "argument --max-drop: invalid number: 'one'")

    def test_negative_max_drop(self):
        self._assert_usage_error(["--max-drop", "-1"],
                                 "--max-drop must be a number of points in "
                                 "[0, 100); got -1.0")

    def test_output_directory_that_is_a_file(self):
        path = os.path.join(self.directory, "taken")
        with open(path, "w", encoding="utf-8") as f:
            f.write("x")
        self._assert_usage_error(["--out", path],
                                 f"--out {path} is an existing file")


if __name__ == "__main__":
    absltest.main()
