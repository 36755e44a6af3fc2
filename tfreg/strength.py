"""Strengths that change during training without recompiling.

Keras bakes a Python-float strength into the traced graph: assigning a new
float later has no effect until a retrace. A `Strength` holds the value in a
non-trainable float32 `tf.Variable`, so a compiled (`jit_compile=True`) train
step reads the current value on every step and a schedule can change it with
no retrace. Every tfreg strength argument accepts one.
"""

import contextlib
import re
import threading

import tensorflow as tf

from tfreg import _checks

__all__ = ["Strength", "compute_dtype", "from_json", "to_json"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
_SCOPE = threading.local()


@contextlib.contextmanager
def compute_dtype(dtype):
    """Within it, a Strength mixed with Python numbers becomes `dtype`.

    The base Regularizer computes every penalty in this scope, so that
    `2.0 * strength * float64_tensor` stays float64.
    """
    previous = getattr(_SCOPE, "dtype", None)
    _SCOPE.dtype = dtype
    try:
        yield
    finally:
        _SCOPE.dtype = previous


class Strength(tf.__internal__.tracking.Trackable):
    """A regularization strength that can change during training.

    Pass it wherever a tfreg regularizer takes a strength, and change it with
    `assign` (directly, or through `tfreg.StrengthScheduler`):

    >>> import tensorflow as tf, tfreg
    >>> strength = tfreg.Strength(0.0, name="l2")
    >>> regularizer = tfreg.L2(strength)
    >>> penalty = tf.function(regularizer, jit_compile=True)
    >>> float(penalty(tf.ones(4)))
    0.0
    >>> strength.assign(0.5)
    >>> float(penalty(tf.ones(4)))
    2.0

    In a config the strength is the JSON dict
    `{"class_name": "Strength", "config": {"value": ..., "name": ...}}`,
    holding its current value, so `.keras` files restore it. A Strength is
    also trackable: a regularizer on a layer makes its strengths part of the
    layer's checkpoint and SavedModel (under `kernel_regularizer/l2/variable`
    for the example above).

    Args:
      value: Initial value, a finite float >= 0.
      name: Name used by `StrengthScheduler` and `tfreg.strengths(model)`;
        letters, digits, '_', '.', '-', at most 64 characters.
    """

    def __init__(self, value=0.0, name="strength"):
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValueError(_checks.message(
                "name", name, "an identifier of at most 64 characters "
                "(letters, digits, '_', '.', '-')"))
        self.name = name
        self.variable = tf.Variable(
            _checks.non_negative_float("value", value), trainable=False,
            dtype=tf.float32, name=name)

    @property
    def value(self):
        """The current value as a Python float."""
        return float(self.variable.numpy())

    def assign(self, value):
        """Sets the strength; compiled steps see it on their next run."""
        self.variable.assign(_checks.non_negative_float("value", value))

    def get_config(self):
        return {"value": self.value, "name": self.name}

    def _trackable_children(self, save_type="checkpoint", **kwargs):
        return {"variable": self.variable}

    def _lookup_dependency(self, name, cached_dependencies=None):
        return self.variable if name == "variable" else None

    @classmethod
    def from_config(cls, config):
        if not isinstance(config, dict) or not set(config) <= {"value", "name"}:
            raise ValueError(_checks.message(
                "config", config,
                "a Strength config: a dict with keys among ['name', 'value']"))
        return cls(**config)

    def as_tensor(self, dtype=None):
        """The current value as a tensor of `dtype`.

        The default is the penalty's compute dtype inside a regularizer call,
        else float32.
        """
        dtype = dtype or getattr(_SCOPE, "dtype", None)
        value = self.variable.read_value()
        return value if dtype in (None, tf.float32) else tf.cast(value, dtype)

    def _binary(self, other, operation):
        if not tf.is_tensor(other):
            other = tf.convert_to_tensor(other, self.as_tensor().dtype)
        return operation(self.as_tensor(other.dtype), other)

    def __mul__(self, other):
        return self._binary(other, tf.multiply)

    def __rmul__(self, other):
        return self._binary(other, lambda s, o: tf.multiply(o, s))

    def __truediv__(self, other):
        return self._binary(other, tf.divide)

    def __add__(self, other):
        return self._binary(other, tf.add)

    __radd__ = __add__

    def __float__(self):
        return self.value

    def __repr__(self):
        return f"Strength({self.value!r}, name={self.name!r})"


tf.register_tensor_conversion_function(
    Strength, lambda s, dtype=None, name=None, as_ref=False: s.as_tensor(dtype))


def to_json(value):
    """A config entry: a Strength becomes its JSON dict, anything else stays."""
    if isinstance(value, Strength):
        return {"class_name": "Strength", "config": value.get_config()}
    return value


def from_json(value, name="strength"):
    """Inverse of `to_json`: rebuilds a Strength from its JSON dict.

    `name` is the argument that holds it, for the error of a malformed dict.
    """
    if isinstance(value, dict):
        if set(value) != {"class_name", "config"} or (
                value["class_name"] != "Strength"):
            raise ValueError(_checks.message(
                name, value, 'a strength as a number or as {"class_name": '
                '"Strength", "config": {...}}'))
        return Strength.from_config(value["config"])
    return value
