"""Careless and untrusted input outside the penalties: every argument named.

`get` given a class, the model functions given something else, schedules
returning non-numbers, `PenaltyLogger` and `export_saved_model` arguments,
`"config": null` in saved files, configs nested thousands of levels deep;
and which saved formats tfreg checks (docs/saving.md says so).
"""

import importlib
import json
import os
import pathlib
import re
import tempfile
import warnings
import zipfile

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import tfreg
from tfreg import _keras

keras = _keras.keras
SAVING_DOC = pathlib.Path(__file__).parent.parent / "docs" / "saving.md"
# Nesting that made building the error message recurse without bound.
DEEP = 5000


def _model(regularizer):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,))
    outputs = keras.layers.Dense(2, name="dense",
                                 kernel_regularizer=regularizer)(inputs)
    return keras.Model(inputs, outputs)


def _nested(make, depth=DEEP):
    value = {}
    for _ in range(depth):
        value = make(value)
    return value


def _listed(value):
    return [value]


def _assert_documented(phrase):
    """Fails unless docs/saving.md says `phrase` (across line breaks)."""
    text = " ".join(SAVING_DOC.read_text().split())
    if phrase not in text:
        raise AssertionError(f"docs/saving.md does not say: {phrase!r}")


def _find_config(structure, class_names):
    """The first serialized regularizer dict whose class_name is listed."""
    pending = [structure]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            if item.get("class_name") in class_names and "config" in item:
                return item
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    raise AssertionError(f"no {class_names} config in the file")


def _edit_keras_file(source, target, edit):
    """Copies a .keras zip, passing config.json through `edit(dict)`."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for item in old.infolist():
            data = old.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                edit(config)
                data = json.dumps(config).encode()
            new.writestr(item, data)


def _save_h5(model, path, edit):
    """Saves `model` as .h5, passing its config through `edit(dict)`."""
    import h5py  # pylint: disable=g-import-not-at-top
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # .h5 is legacy (a UserWarning).
        model.save(path)
    with h5py.File(path, "r+") as file:
        config = json.loads(file.attrs["model_config"])
        edit(config)
        file.attrs["model_config"] = json.dumps(config)


class _Abstract(tfreg.Regularizer):
    """A subclass that forgot `penalty`."""


class _Cubic(tfreg.Regularizer):

    def __init__(self, factor=0.5):
        self.factor = tfreg.validation.non_negative("factor", factor)

    def penalty(self, x):
        return self.factor * tf.reduce_sum(tf.abs(x) ** 3)


class GetTest(parameterized.TestCase):

    @parameterized.named_parameters(
        ("dict", dict), ("object", object), ("int", int),
        ("strength", tfreg.Strength), ("layer", keras.layers.Dense),
        ("tfreg_base", tfreg.Regularizer),
        ("keras_base", keras.regularizers.Regularizer),
        ("no_penalty", _Abstract))
    def test_refuses_classes_that_are_not_regularizers(self, identifier):
        expected = (
            "Invalid value for argument `identifier`. Expected a regularizer "
            f"class: a subclass of {keras.__name__}.regularizers.Regularizer "
            "that computes a penalty (not an abstract base). Received: "
            f"identifier={identifier!r}")
        with self.assertRaisesRegex(TypeError, f"^{re.escape(expected)}$"):
            tfreg.get(identifier)

    def test_instantiates_regularizer_classes(self):
        self.assertIs(type(tfreg.get(tfreg.L2)), tfreg.L2)
        self.assertIs(type(tfreg.get(_Cubic)), _Cubic)
        self.assertIs(type(tfreg.get(keras.regularizers.L2)),
                      keras.regularizers.L2)
        self.assertIs(type(tfreg.get(tfreg.priors.Laplace)),
                      tfreg.priors.Laplace)


class ModelArgumentTest(parameterized.TestCase):

    @parameterized.named_parameters(
        ("strengths", tfreg.strengths),
        ("regularization_loss", tfreg.regularization_loss),
        ("summary", lambda model: tfreg.summary(model, print_fn=None)),
        ("apply", lambda model: tfreg.apply(model, "l2")),
        ("remove", tfreg.remove))
    def test_names_the_argument(self, function):
        for value in (None, 5, "model", tf.Module(), [keras.layers.Dense(1)]):
            with self.subTest(value=value):
                expected = (
                    "Invalid value for argument `model`. Expected a "
                    f"{keras.__name__} model or layer. Received: "
                    f"model={value!r}")
                with self.assertRaisesRegex(
                        TypeError, f"^{re.escape(expected)}$"):
                    function(value)

    def test_a_layer_is_accepted(self):
        strength = tfreg.Strength(0.5, name="s")
        layer = keras.layers.Dense(2, kernel_initializer="ones",
                                   kernel_regularizer=tfreg.L2(strength))
        layer.build((None, 3))
        self.assertEqual(list(tfreg.strengths(layer)), ["s"])
        self.assertAlmostEqual(float(tfreg.regularization_loss(layer)), 3.0)
        self.assertLen(tfreg.summary(layer, print_fn=None), 1)


class SchedulerTest(parameterized.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.strength = tfreg.Strength(0.125, name="l2")
        cls.model = _model(tfreg.L2(cls.strength))
        cls.model.compile("sgd", "mse")

    def _run(self, schedule, per="epoch", index=3):
        """Runs the scheduler's hooks for `index` as `fit` calls them."""
        scheduler = tfreg.StrengthScheduler({"l2": schedule}, per=per)
        scheduler.set_model(self.model)
        scheduler.on_train_begin()
        if per == "epoch":
            scheduler.on_epoch_begin(index)
        else:
            self.model.optimizer.iterations.assign(index)
            scheduler.on_train_batch_begin(0)

    @parameterized.named_parameters(
        ("string", "0.5", TypeError, "'0.5'"),
        ("bool", True, TypeError, "True"),
        ("numpy_bool", np.bool_(True), TypeError, r"np.True_"),
        ("none", None, TypeError, "None"),
        ("vector", tf.ones(2), TypeError, r"array\(\[1., 1.\]"),
        ("nan", float("nan"), ValueError, "nan"),
        ("inf", float("inf"), ValueError, "inf"),
        ("negative", -0.5, ValueError, "-0.5"),
        ("float32_overflow", 1e39, ValueError, r"1e\+39"),
        ("nan_tensor", tf.constant(float("nan")), ValueError,
         re.escape("np.float32(nan)")))
    def test_rejects_what_assign_rejects_naming_strength_and_step(
            self, value, error, shown):
        for per in ("epoch", "step"):
            with self.subTest(per=per):
                with self.assertRaisesRegex(
                        error, "^Invalid value for argument `schedules`. "
                        "Expected callables returning a finite float >= 0 "
                        "that float32 holds. Received: schedules=[{]'l2': "
                        f"<a callable that returned {shown}.* for {per} 3>[}}]$"):
                    self._run(lambda index: value, per)
                self.assertEqual(self.strength.value, 0.125)

    @parameterized.named_parameters(
        ("float", 0.25), ("int", 2), ("numpy", np.float32(0.25)),
        ("numpy_0d", np.array(0.25)), ("tensor", tf.constant(0.25)),
        ("keras_schedule", keras.optimizers.schedules.ExponentialDecay(
            2.0, decay_steps=1, decay_rate=0.5)))
    def test_accepts_numbers_and_scalar_tensors(self, value):
        for per in ("epoch", "step"):
            with self.subTest(per=per):
                schedule = value if callable(value) else lambda index: value
                self._run(schedule, per)
                self.assertEqual(self.strength.value,
                                 0.25 if callable(value) else float(value))
                self.strength.assign(0.125)

    def test_a_string_is_refused_in_fit(self):
        x = np.ones((4, 3), np.float32)
        with self.assertRaisesRegex(TypeError, "returned '0.5' for epoch 0>"):
            self.model.fit(x, np.ones((4, 2)), epochs=1, verbose=0, callbacks=[
                tfreg.StrengthScheduler({"l2": lambda epoch: "0.5"})])
        self.assertEqual(self.strength.value, 0.125)


class PenaltyLoggerTest(parameterized.TestCase):

    @parameterized.named_parameters(
        ("both", dict(prefix=None, log_dir=5), TypeError, "log_dir", "5"),
        ("log_dir_int", dict(log_dir=5), TypeError, "log_dir", "5"),
        ("log_dir_empty", dict(log_dir=""), ValueError, "log_dir", "''"),
        ("prefix_none", dict(prefix=None), TypeError, "prefix", "None"),
        ("prefix_empty", dict(prefix=""), ValueError, "prefix", "''"),
        ("prefix_list", dict(prefix=["a"]), TypeError, "prefix", r"\['a'\]"))
    def test_arguments_are_checked_at_construction(self, kwargs, error, name,
                                                   shown):
        with self.assertRaisesRegex(
                error, f"^Invalid value for argument `{name}`. Expected .*"
                f"Received: {name}={shown}$"):
            tfreg.PenaltyLogger(**kwargs)

    def test_a_path_object_is_a_log_dir(self):
        model = _model(tfreg.L2(0.1))
        model.compile("sgd", "mse")
        with tempfile.TemporaryDirectory() as directory:
            logger = tfreg.PenaltyLogger(log_dir=pathlib.Path(directory),
                                         prefix="reg")
            history = model.fit(np.ones((4, 3)), np.ones((4, 2)), epochs=1,
                                verbose=0, callbacks=[logger])
            self.assertIn("reg/total", history.history)
            self.assertNotEmpty(os.listdir(directory))


class ExportPathTest(absltest.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.model = _model(tfreg.L2(0.1))

    def test_an_existing_file_is_named(self):
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "exported")
            pathlib.Path(path).write_text("not a directory")
            for target, note in (
                    (path, ", which is an existing file"),
                    (os.path.join(path, "inner"),
                     f", which lies under the existing file {path!r}")):
                with self.subTest(target=target):
                    expected = (
                        "Invalid value for argument `path`. Expected a "
                        "directory path (a non-empty str or os.PathLike). "
                        f"Received: path={target!r}{note}")
                    with self.assertRaisesRegex(
                            ValueError, f"^{re.escape(expected)}$"):
                        tfreg.export_saved_model(self.model, target)
            self.assertEqual(pathlib.Path(path).read_text(), "not a directory")

    def test_path_type(self):
        for path, error in ((5, TypeError), (None, TypeError),
                            ("", ValueError)):
            with self.subTest(path=path):
                with self.assertRaisesRegex(
                        error, "Invalid value for argument `path`"):
                    tfreg.export_saved_model(self.model, path)

    def test_an_existing_directory_is_written_into(self):
        # As tf.saved_model.save does: the SavedModel's files are replaced,
        # other files stay.
        with tempfile.TemporaryDirectory() as directory:
            path = pathlib.Path(directory) / "exported"
            path.mkdir()
            (path / "notes.txt").write_text("kept")
            tfreg.export_saved_model(self.model, path)
            tfreg.export_saved_model(self.model, path)
            self.assertEqual((path / "notes.txt").read_text(), "kept")
            loaded = tf.saved_model.load(str(path))
            self.assertAlmostEqual(
                float(loaded.regularization_loss()["regularization_loss"]),
                float(sum(self.model.losses)), places=6)


class ConfigNullTest(absltest.TestCase):

    def test_deserialize_refuses_a_null_or_missing_config(self):
        for function in (tfreg.deserialize, tfreg.get):
            with self.subTest(function=function.__name__):
                with self.assertRaisesRegex(
                        TypeError, re.escape(
                            "Invalid value for argument `config`. Expected a "
                            "dict config for L2 ({} for the defaults). "
                            "Received: config=None")):
                    function({"class_name": "L2", "config": None,
                              "registered_name": "tfreg>L2"})
                with self.assertRaisesRegex(
                        ValueError, 'Expected a "config" entry in a '
                        "regularizer config"):
                    function({"class_name": "L2"})
                self.assertEqual(
                    function({"class_name": "L2", "config": {}}).l2, 0.01)

    def test_null_in_a_keras_file_is_documented(self):
        # Keras' loaders replace a null config by {} before tfreg sees it
        # (tf_keras' .h5 loader fails on it itself); docs/saving.md says so.
        model = _model(tfreg.L2(0.5))
        defaults = tfreg.L2().get_config()
        with tempfile.TemporaryDirectory() as directory:
            saved = os.path.join(directory, "model.keras")
            model.save(saved)
            edited = os.path.join(directory, "null.keras")
            _edit_keras_file(saved, edited, lambda config: _find_config(
                config, ("L2", "tfreg>L2")).update(config=None))
            loaded = keras.models.load_model(edited)
            self.assertEqual(
                loaded.get_layer("dense").kernel_regularizer.get_config(),
                defaults)
            path = os.path.join(directory, "null.h5")
            _save_h5(model, path, lambda config: _find_config(
                config, ("L2", "tfreg>L2")).update(config=None))
            if _keras.LEGACY:
                with self.assertRaisesRegex(TypeError, "'config': None"):
                    keras.models.load_model(path)
            else:
                loaded = keras.models.load_model(path)
                self.assertEqual(
                    loaded.get_layer("dense").kernel_regularizer.get_config(),
                    defaults)
        _assert_documented(
            'a tfreg config whose `"config"` entry is `null` loads as the '
            "class's defaults from a `.keras` file")


class NestingTest(parameterized.TestCase):

    @parameterized.named_parameters(
        ("strength_dict", lambda: tfreg.deserialize(_nested(
            lambda inner: {"class_name": "L2", "config": {"l2": inner}})),
         ValueError, "argument `l2`"),
        ("strength_list", lambda: tfreg.deserialize(
            {"class_name": "L2", "config": {"l2": _nested(_listed)}}),
         TypeError, "argument `l2`"),
        ("config_list", lambda: tfreg.deserialize(
            {"class_name": "L2", "config": _nested(_listed)}), TypeError,
         "argument `config`"),
        ("deserialize_list", lambda: tfreg.deserialize(_nested(_listed)),
         TypeError, "argument `config`"),
        ("get_list", lambda: tfreg.get(_nested(_listed)), ValueError,
         "Could not interpret regularizer identifier"),
        ("module", lambda: tfreg.deserialize(
            {"class_name": "L2", "module": _nested(_listed)}), TypeError,
         "`module`"),
        ("strength_config", lambda: tfreg.L2(
            {"class_name": "Strength", "config": _nested(
                lambda inner: {"value": inner})}), TypeError,
         "argument `value`"),
        ("huge_int", lambda: tfreg.deserialize(
            {"class_name": "L1", "config": {"l1": [10**100_000]}}),
         TypeError, r"Received: l1=\[<int of 332193 bits>\]"))
    def test_message_is_short_and_names_the_argument(self, build, error,
                                                     named):
        with self.assertRaisesRegex(error, named) as raised:
            build()
        self.assertLess(len(str(raised.exception)), 1000)

    def test_small_values_are_shown_in_full(self):
        with self.assertRaisesRegex(
                ValueError, re.escape(
                    "Received: l2={'class_name': 'L2', 'config': {}}")):
            tfreg.deserialize({"class_name": "L2", "config": {
                "l2": {"class_name": "L2", "config": {}}}})


class SavedFormatsTest(absltest.TestCase):
    """Which formats tfreg checks, as docs/saving.md states them."""

    def test_keras_and_h5_files_check_the_config(self):
        model = _model(tfreg.L2(0.5))
        with tempfile.TemporaryDirectory() as directory:
            saved = os.path.join(directory, "model.keras")
            model.save(saved)
            edited = os.path.join(directory, "negative.keras")
            _edit_keras_file(saved, edited, lambda config: _find_config(
                config, ("L2", "tfreg>L2"))["config"].update(l2=-1.0))
            for safe_mode in (True, False):
                with self.subTest(safe_mode=safe_mode):
                    with self.assertRaisesRegex(TypeError, "l2=-1.0"):
                        keras.models.load_model(edited, safe_mode=safe_mode)
            path = os.path.join(directory, "negative.h5")
            _save_h5(model, path, lambda config: _find_config(
                config, ("L2", "tfreg>L2"))["config"].update(l2=-1.0))
            with self.assertRaisesRegex(TypeError, "l2=-1.0"):
                keras.models.load_model(path)

    def test_a_saved_model_directory_runs_its_own_graphs(self):
        model = _model(tfreg.L2(0.5))
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "saved")
            if not _keras.LEGACY:
                model.export(path)
                with self.assertRaisesRegex(ValueError,
                                            "File format not supported"):
                    keras.models.load_model(path)
            else:
                model.save(path, save_format="tf")
                self._edit_metadata(path)
                loaded = keras.models.load_model(path)
                # The invalid config is skipped without an error; the
                # penalty comes from the graph traced into the directory.
                self.assertNotIsInstance(
                    loaded.get_layer("dense").kernel_regularizer, tfreg.L2)
                self.assertEqual(float(loaded.losses[0]),
                                 float(model.losses[0]))
        _assert_documented(
            "a SavedModel directory runs the graphs stored in it, so it is "
            "not safe for untrusted input")

    def _edit_metadata(self, path):
        """Gives every L2 config in keras_metadata.pb a strength of -1."""
        protos = importlib.import_module(
            f"{keras.__name__}.protobuf.saved_metadata_pb2")
        metadata = protos.SavedMetadata()
        file = os.path.join(path, "keras_metadata.pb")
        metadata.ParseFromString(pathlib.Path(file).read_bytes())
        edited = 0
        for node in metadata.nodes:
            if "tfreg>L2" in node.metadata:
                config = json.loads(node.metadata)
                _find_config(config, ("tfreg>L2",))["config"]["l2"] = -1.0
                node.metadata = json.dumps(config)
                edited += 1
        self.assertGreater(edited, 0)
        pathlib.Path(file).write_bytes(metadata.SerializeToString())


class CommandLineModelFileTest(absltest.TestCase):
    """The `tfreg` command's rule per format, as docs/saving.md states it."""

    def test_code_in_any_format_is_refused_before_loading(self):
        from tfreg.cli import UsageError  # pylint: disable=g-import-not-at-top
        from tfreg.cli import model_file  # pylint: disable=g-import-not-at-top
        inputs = keras.Input((3,))
        model = keras.Model(inputs, keras.layers.Lambda(
            lambda x: x * 2.0)(inputs))
        with tempfile.TemporaryDirectory() as directory:
            for name in ("lambda.keras", "lambda.h5"):
                path = os.path.join(directory, name)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # .h5 is legacy.
                    model.save(path)
                with self.subTest(name=name), self.assertRaisesRegex(
                        UsageError, "is refused: it holds a Lambda layer"):
                    model_file.check(path)
            saved = os.path.join(directory, "saved")
            tfreg.export_saved_model(_model(None), saved)
            with self.assertRaisesRegex(UsageError,
                                        "is a SavedModel directory"):
                model_file.check(saved)
        _assert_documented(
            "`tfreg compare --model FILE` (and every other `tfreg` job that "
            "loads a model) never runs code from the file, in both Keras "
            "generations")
        _assert_documented("**SavedModel directories** are refused")


if __name__ == "__main__":
    absltest.main()
