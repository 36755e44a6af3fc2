"""The base class of every tfreg regularizer."""

import inspect

import tensorflow as tf

from tfreg import _keras
from tfreg import strength


def accumulation_dtype(dtype):
    """float64 stays float64; every narrower float is accumulated in float32."""
    return tf.float64 if dtype == tf.float64 else tf.float32


class Regularizer(_keras.Regularizer, tf.__internal__.tracking.Trackable):
    """Base class for tfreg regularizers; subclass it to write your own.

    A subclass validates its arguments once, in `__init__`, stores each one
    under the attribute of the same name, and implements `penalty(x)` as pure
    tensor code. The base class then gives it what every tfreg regularizer has:

    - it is a `tf.keras.regularizers.Regularizer`, usable as
      `kernel_regularizer`, `bias_regularizer` or `activity_regularizer`;
    - `penalty` receives the tensor in float32 (float64 stays float64), so
      float16 and bfloat16 weights or activations never overflow or lose the
      sum, and the penalty is returned in that accumulation dtype;
    - `get_config` returns every constructor argument, read from the attribute
      of the same name (a `tfreg.Strength` as its JSON dict), and
      `from_config` rejects unknown keys with a `ValueError` before the
      constructor validates the values;
    - its `tfreg.Strength` arguments are tracked: the layer holding the
      regularizer saves them in checkpoints and SavedModels, and functions
      traced from the penalty (tf_keras' SavedModel saver traces them) can
      be saved.
    - inside a `tf.function` its `penalty` is converted by AutoGraph like any
      code there (Python control flow on tensors works); tfreg's own
      penalties, plain tensor code, skip that conversion to trace faster.

    Decorate the subclass with `@tfreg.register` so that saved models find
    it without `custom_objects` and `tfreg.get` knows its names. For example
    (unregistered here, so that the example leaves no trace):

    >>> import tensorflow as tf
    >>> import tfreg
    >>> class Cubic(tfreg.Regularizer):
    ...     '''factor * sum(|x|^3).'''
    ...     def __init__(self, factor=0.01):
    ...         self.factor = tfreg.validation.non_negative("factor", factor)
    ...     def penalty(self, x):
    ...         return self.factor * tf.reduce_sum(tf.abs(x) ** 3)
    >>> float(Cubic(0.5)(tf.constant([1.0, -2.0])))
    4.5
    >>> Cubic.from_config(Cubic(0.5).get_config()).factor
    0.5
    """

    def __call__(self, x):
        # tfreg's own penalties are plain tensor code, so AutoGraph (which a
        # tf.function applies to every call inside it: tf_keras' fit, custom
        # loops) has nothing to convert in them but costs tracing time per
        # regularized weight. A subclass's own `penalty` is still converted.
        if type(self).penalty.__module__.startswith("tfreg."):
            return self._unconverted_call(x)
        return self._call(x)

    def _call(self, x):
        x = tf.convert_to_tensor(x)
        if not x.dtype.is_floating:
            raise TypeError(
                f"{type(self).__name__} expects a floating-point tensor. "
                f"Received: x.dtype={x.dtype.name}")
        dtype = accumulation_dtype(x.dtype)
        with strength.compute_dtype(dtype):
            return self.penalty(tf.cast(x, dtype))

    _unconverted_call = tf.autograph.experimental.do_not_convert(_call)

    def penalty(self, x):
        """The penalty of `x` (float32 or float64) as a scalar of x's dtype."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement `penalty(x)`.")

    @classmethod
    def config_keys(cls):
        """The constructor arguments, which are exactly the config's keys."""
        parameters = inspect.signature(cls.__init__).parameters
        return tuple(name for name in parameters if name != "self")

    def get_config(self):
        return {key: strength.to_json(getattr(self, key))
                for key in self.config_keys()}

    @classmethod
    def from_config(cls, config):
        if not isinstance(config, dict):
            raise TypeError(
                f"Expected a dict config for {cls.__name__}. "
                f"Received: config={config!r}")
        unknown = sorted(set(config) - set(cls.config_keys()), key=str)
        if unknown:
            raise ValueError(
                f"Unknown key(s) {unknown} in the config of {cls.__name__}. "
                f"Expected a subset of {list(cls.config_keys())}.")
        return cls(**config)

    def strength_arguments(self):
        """The constructor arguments that are `tfreg.Strength`s, by name."""
        values = {key: getattr(self, key, None) for key in self.config_keys()}
        return {key: value for key, value in values.items()
                if isinstance(value, strength.Strength)}

    def _trackable_children(self, save_type="checkpoint", **kwargs):
        return self.strength_arguments()

    def _lookup_dependency(self, name, cached_dependencies=None):
        return self.strength_arguments().get(name)

    def __repr__(self):
        arguments = ", ".join(
            f"{key}={value!r}" for key, value in self.get_config().items())
        return f"{type(self).__name__}({arguments})"
