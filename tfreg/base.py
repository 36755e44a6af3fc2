"""The base class of every tfreg regularizer."""

import inspect
import weakref

import tensorflow as tf
# No public API tells whether a gradient tape is recording.
from tensorflow.python.eager import record  # pylint: disable=g-direct-tensorflow-import

from tfreg import _checks
from tfreg import _keras
from tfreg import penalties
from tfreg import strength
from tfreg import validation

__all__ = ["Regularizer", "accumulation_dtype"]


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
      penalties, plain tensor code, skip that conversion to trace faster,
      and the elementwise ones (L1, L2, L1L2, the closed-form priors) are
      traced once per graph for all weights of one shape.

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

    # True for a tfreg penalty whose gradient needs no tensor shape (written
    # out, or elementwise ops of static shapes): see `_shared_trace`.
    _traced_once_per_shape = False

    def __call__(self, x):
        # tfreg's own penalties are plain tensor code, so AutoGraph (which a
        # tf.function applies to every call inside it: tf_keras' fit, custom
        # loops) has nothing to convert in them but costs tracing time per
        # regularized weight. A subclass's own `penalty` is still converted.
        if not type(self).penalty.__module__.startswith("tfreg."):
            return self._call(x)
        if self._traced_once_per_shape and not tf.executing_eagerly():
            x = tf.convert_to_tensor(x)
            if x.shape.rank is not None:
                return _shared_trace(self, x)(x)
        return self._unconverted_call(x)

    def _call(self, x):
        x = tf.convert_to_tensor(x)
        if not x.dtype.is_floating:
            raise TypeError(validation.message(
                "x", x, f"a floating-point tensor ({type(self).__name__})",
                shown=f"<a tensor of dtype {x.dtype.name}>"))
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
            raise TypeError(validation.message(
                "config", config, f"a dict config for {cls.__name__} ({{}} "
                "for the defaults)"))
        _checks.known_keys(config, list(cls.config_keys()),
                           f"the config of {cls.__name__}")
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


# Per graph being traced: (class, arguments, shape, dtype, XLA, tape) -> the
# penalty traced once as a function.
_SHARED_TRACES = weakref.WeakKeyDictionary()


def _shared_trace(regularizer, x):
    """The penalty for x's shape and dtype, traced once per graph.

    A model regularizes many weights of the same shape with equal
    regularizers (128 Dense layers: 128 kernels); traced inline, each weight
    costs its penalty's ops again (Student-t: about 30 ops). Called
    as one function, they share one trace of the value and one of its
    gradient. XLA inlines the calls. Only for penalties whose gradient needs
    no tensor shape: XLA's constant analysis does not see through a called
    function's gradient, and a shape there would make it treat the step's
    data as compile-time constants and compile the step anew on every call.
    `tests/xla_training_test.py` asserts one compile for every class.
    """
    under_xla = penalties.under_xla()
    arguments = tuple(getattr(regularizer, key)
                      for key in regularizer.config_keys())
    key = (type(regularizer), arguments, tuple(x.shape.as_list()), x.dtype,
           under_xla, record.could_possibly_record())
    traces = _SHARED_TRACES.setdefault(tf.compat.v1.get_default_graph(), {})
    if key not in traces:
        function = tf.function(regularizer._unconverted_call, autograph=False,
                               jit_compile=under_xla or None)
        traces[key] = function.get_concrete_function(
            tf.TensorSpec(x.shape, x.dtype))
    return traces[key]
