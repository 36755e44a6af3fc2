"""Untrusted configs: random and adversarial input to every registered class.

Every registered class's `from_config` and `tfreg.deserialize` get
hypothesis-generated configs (seeded, bounded). The only allowed outcomes are
a valid regularizer, whose penalty on finite weights is not NaN and whose
config round-trips, or a ValueError/TypeError. Nothing may import a module.
"""

import json
import sys
import time

from absl.testing import absltest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import numpy as np
import tensorflow as tf

import tfreg
from tests import saving_util

EXAMPLES_PER_CLASS = 120
DESERIALIZE_EXAMPLES = 1000
# Generous: a single config must never take this long (a hang or a huge
# allocation would).
SECONDS_PER_EXAMPLE = 10.0

SETTINGS = dict(derandomize=True, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))

_ADVERSARIAL_TEXT = st.sampled_from([
    "", "os", "os.system", "subprocess", "builtins.eval", "__import__",
    "lambda x: x", "__lambda__", "keras.layers.Lambda", "tfreg>L1", "L1",
    "l1_l2", "rows", "columns", "Strength", "float32", "float64", "Prior",
    "Normal", "__class__", "A" * 10_000, "\x00", "exec('import os')"])
_NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(),
    st.sampled_from([0, 1, -1, 0.0, -0.0, 0.5, 1e-300, 1e300, 2**63, -2**63,
                     10**100, True, False]))
_LEAVES = st.one_of(st.none(), _NUMBERS, st.text(max_size=20),
                    _ADVERSARIAL_TEXT)


def _json_like(leaves):
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(st.one_of(st.text(max_size=10), _ADVERSARIAL_TEXT),
                            children, max_size=4)),
        max_leaves=12)


_VALUES = _json_like(_LEAVES)
# Structured values that look like the real thing: strengths, references.
_SHAPED = st.one_of(
    st.fixed_dictionaries({"class_name": st.sampled_from(
        ["Strength", "__lambda__", "L1"]), "config": _VALUES}),
    st.fixed_dictionaries({"class_name": st.just("Strength"),
                           "config": st.fixed_dictionaries(
                               {"value": _NUMBERS, "name": _LEAVES})}),
    st.fixed_dictionaries({
        "dtype": st.sampled_from(["float32", "float64", "object", "int8",
                                  "U10", 1]),
        "shape": st.lists(st.integers(-2, 10**12), max_size=4),
        "data": st.one_of(st.text(max_size=40), st.just("AAAA" * 3))}),
)
_ANY_VALUE = st.one_of(_VALUES, _SHAPED)


def _configs_for(cls):
    keys = list(cls.config_keys())
    known = st.dictionaries(st.sampled_from(keys), _ANY_VALUE) if keys else (
        st.just({}))
    extra = st.dictionaries(st.one_of(_ADVERSARIAL_TEXT, st.text(max_size=8)),
                            _ANY_VALUE, max_size=2)
    return st.one_of(known, st.builds(lambda a, b: {**b, **a}, known, extra),
                     _ANY_VALUE)


def _outer_configs():
    names = st.one_of(st.sampled_from(tfreg.serialization.registered_names()),
                      _ADVERSARIAL_TEXT, _LEAVES)
    entries = {"class_name": st.one_of(names, _VALUES),
               "config": _ANY_VALUE,
               "module": st.one_of(st.none(), _ADVERSARIAL_TEXT, _VALUES),
               "registered_name": st.one_of(st.none(), names, _VALUES)}
    outer = st.fixed_dictionaries(
        {}, optional={**entries, **{"__proto__": _VALUES, "": _VALUES}})
    return st.one_of(outer, names, _VALUES)


class FuzzTest(absltest.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.kernel = tf.constant(
            np.random.default_rng(0).normal(size=saving_util.KERNEL_SHAPE),
            tf.float32)
        cls.activations = tf.constant(
            np.random.default_rng(1).uniform(
                0.05, 0.95, size=(saving_util.BATCH, saving_util.UNITS)),
            tf.float32)
        # Import lazily loaded dependencies (such as TFP) before the fuzzing,
        # so that any later import is the config's doing.
        for regularizer_class in saving_util.registered_classes():
            regularizer, _ = saving_util.build(regularizer_class)
            if regularizer is not None:
                saving_util.role(regularizer)
        tfreg.Strength(0.1).assign(0.2)
        # `priors.Prior` imports TFP, a fixed dependency (never a module a
        # config names), on first construction, even before it validates.
        import tensorflow_probability  # pylint: disable=g-import-not-at-top,unused-import
        try:
            tfreg.priors.Prior.from_config({})
        except (TypeError, ValueError):
            pass

    def _check(self, make):
        modules = set(sys.modules)
        start = time.monotonic()
        try:
            regularizer = make()
        except (TypeError, ValueError):
            regularizer = None
        if regularizer is not None:
            self.assertIsInstance(regularizer, tfreg.Regularizer)
            for x in (self.kernel, self.activations):
                try:
                    value = regularizer(x)
                except (TypeError, ValueError):
                    continue  # e.g. a shape the regularizer does not take.
                self.assertFalse(
                    np.isnan(value.numpy()),
                    f"NaN penalty from {regularizer!r} on finite input")
            config = json.loads(json.dumps(regularizer.get_config()))
            again = type(regularizer).from_config(config)
            self.assertEqual(again.get_config(), regularizer.get_config())
        self.assertLess(time.monotonic() - start, SECONDS_PER_EXAMPLE)
        self.assertEqual(set(sys.modules) - modules, set(),
                         "a config imported modules")

    def test_from_config_of_every_registered_class(self):
        for regularizer_class in saving_util.registered_classes():
            with self.subTest(cls=regularizer_class.__name__):
                self._fuzz_class(regularizer_class)

    def _fuzz_class(self, regularizer_class):

        @settings(max_examples=EXAMPLES_PER_CLASS, **SETTINGS)
        @given(_configs_for(regularizer_class))
        def check(config):
            self._check(lambda: regularizer_class.from_config(config))

        check()

    @settings(max_examples=DESERIALIZE_EXAMPLES, **SETTINGS)
    @given(_outer_configs())
    def test_deserialize(self, config):
        self._check(lambda: tfreg.deserialize(config))

    def test_outer_entries_must_be_strings(self):
        for key in ("module", "registered_name", "class_name"):
            with self.subTest(key=key):
                with self.assertRaisesRegex(TypeError, f"`{key}`"):
                    tfreg.deserialize({"class_name": "L1", key: ["os"]})

    def test_bounded_sizes(self):
        for config in (
                {"class_name": "L1", "config": {"l1": 10**100000}},
                {"class_name": "L1" * 100_000},
                {"class_name": "L1", "config": {f"k{i}": 0 for i in
                                                range(100_000)}}):
            self._check(lambda config=config: tfreg.deserialize(config))


if __name__ == "__main__":
    absltest.main()
