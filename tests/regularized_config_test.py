"""tfreg.optimizers.Regularized's saved config: patterns searched in linear
time, user regularizers registered with Keras load again, and a bad field
raises tfreg's own message."""

import os
import re
import tempfile
import time

import tensorflow as tf
from absl.testing import absltest
from absl.testing import parameterized

import tfreg
from tfreg import _keras
from tfreg import _linear_regex
from tfreg import optimizers

keras = _keras.keras
# "(a+)+$" against this name backtracks 2^26 ways in Python's `re`.
_CRAFTED_NAME = "a" * 26 + "_b"


class _UserPenalty(keras.regularizers.Regularizer):
    """A user's regularizer: strength * sum(w^4)."""

    def __init__(self, strength=0.1):
        self.strength = strength

    def __call__(self, x):
        return self.strength * tf.reduce_sum(tf.pow(x, 4.0))

    def get_config(self):
        return {"strength": self.strength}


RegisteredPenalty = keras.saving.register_keras_serializable(
    package="tfreg_test")(type("RegisteredPenalty", (_UserPenalty,), {}))
ScopedPenalty = type("ScopedPenalty", (_UserPenalty,), {})


def _saved(model):
    path = os.path.join(tempfile.mkdtemp(), "model.keras")
    model.save(path)
    return path


class PatternTest(parameterized.TestCase):

    def test_crafted_file_loads_in_under_a_second(self):
        model = keras.Sequential([keras.Input((3,)),
                                  keras.layers.Dense(2, name=_CRAFTED_NAME)])
        model.compile(optimizers.Regularized(
            keras.optimizers.SGD(0.1), regularizer=tfreg.L1(0.01),
            include="(a+)+$", model=model), "mse")
        model.optimizer.build(model.trainable_variables)
        path = _saved(model)
        start = time.perf_counter()
        loaded = keras.models.load_model(path)
        loaded.optimizer.build(loaded.trainable_variables)
        self.assertLess(time.perf_counter() - start, 1.0)
        self.assertEqual(loaded.optimizer.include, "(a+)+$")

    @parameterized.named_parameters(
        ("backreference", r"(a)\1"), ("lookahead", "(?=a)kernel"),
        ("flags", "(?i)KERNEL"), ("possessive", "a*+"),
        ("too_long", "a" * (_linear_regex.MAX_LENGTH + 1)))
    def test_refused_patterns_name_the_argument(self, pattern):
        sgd = keras.optimizers.SGD(0.1)
        with self.assertRaisesRegex(ValueError, "argument `include`"):
            optimizers.Regularized(sgd, include=pattern)
        config = optimizers.Regularized(sgd).get_config()
        config["exclude"] = pattern
        with self.assertRaisesRegex(ValueError, "^Invalid value for argument `exclude`"):
            optimizers.Regularized.from_config(config)

    def test_linear_search_agrees_with_re(self):
        patterns = ["kernel$", "^dense(_\\d+)?/", "(a|b)*c", "\\bbias\\b",
                    "[^/]+/kernel", "x{2,3}?y", "(a+)+$", "^$", "\\Aa\\Z"]
        texts = ["dense/kernel", "dense_12/bias", "abac", "aab", "xxxy",
                 "a/bias/c", "", "a", "xy", "dense_/kernel"]
        for pattern in patterns:
            compiled = _linear_regex.compile(pattern)
            for text in texts:
                self.assertEqual(compiled.search(text),
                                 bool(re.search(pattern, text)),
                                 (pattern, text))


class UserRegularizerTest(absltest.TestCase):

    def _model(self, regularizer):
        model = keras.Sequential([keras.Input((3,)),
                                  keras.layers.Dense(2, name="d")])
        model.compile(optimizers.Regularized(
            keras.optimizers.SGD(0.1), regularizer=regularizer,
            model=model), "mse")
        model.optimizer.build(model.trainable_variables)
        return model

    def test_keras_registered_class_round_trips(self):
        optimizer = optimizers.Regularized(
            keras.optimizers.SGD(0.1), regularizer=RegisteredPenalty(0.25))
        clone = optimizers.Regularized.from_config(optimizer.get_config())
        self.assertIsInstance(clone.regularizer, RegisteredPenalty)
        self.assertEqual(clone.regularizer.strength, 0.25)
        loaded = keras.models.load_model(
            _saved(self._model(RegisteredPenalty(0.5))))
        self.assertIsInstance(loaded.optimizer.regularizer, RegisteredPenalty)
        self.assertEqual(loaded.optimizer.regularizer.strength, 0.5)

    def test_unregistered_class_refused_with_the_reason(self):
        with self.assertRaisesRegex(
                TypeError, "argument `regularizer`.*register_keras_serializable"
                ".*Unknown regularizer"):
            optimizers.Regularized(keras.optimizers.SGD(0.1),
                                   regularizer=ScopedPenalty(0.5))
        with self.assertRaisesRegex(TypeError, "argument `regularizer`"):
            optimizers.Regularized(keras.optimizers.SGD(0.1),
                                   regularizer=lambda w: 0.0)

    def test_custom_objects_class_round_trips(self):
        scope = {"ScopedPenalty": ScopedPenalty}
        with keras.saving.custom_object_scope(scope):
            path = _saved(self._model(ScopedPenalty(0.5)))
        loaded = keras.models.load_model(path, custom_objects=scope)
        self.assertIsInstance(loaded.optimizer.regularizer, ScopedPenalty)
        config = loaded.optimizer.get_config()
        clone = optimizers.Regularized.from_config(config,
                                                   custom_objects=scope)
        self.assertEqual(clone.regularizer.strength, 0.5)


class MessageTest(parameterized.TestCase):

    @parameterized.named_parameters(
        ("include", {"include": 5}, "argument `include`"),
        ("mode", {"mode": "sideways"}, "argument `mode`"),
        ("regularizer", {"regularizer": {"class_name": "Nope", "config": {}}},
         "Unknown regularizer: 'Nope'"),
        ("unknown_key", {"momentum": 0.9}, r"Unknown key\(s\) \['momentum'\]"))
    def test_bad_field_leads_the_message(self, change, expected):
        optimizer = optimizers.Regularized(keras.optimizers.SGD(0.1))
        serialized = keras.optimizers.serialize(optimizer)
        serialized["config"].update(change)
        with self.assertRaises(ValueError) as raised:
            keras.optimizers.deserialize(serialized)
        message = str(raised.exception)
        self.assertRegex(message, expected)
        self.assertNotIn("could not be deserialized", message)
        self.assertTrue(message.startswith(("Invalid", "Unknown")), message)


if __name__ == "__main__":
    absltest.main()
