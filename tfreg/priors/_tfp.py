"""`Prior`: the prior of an allowlisted `tfp.distributions` class."""

import math
import numbers

import tensorflow as tf

from tfreg import serialization
from tfreg import validation
from tfreg.priors import _base
from tfreg.priors import _dtypes
from tfreg.priors import _math

__all__ = ["ALLOWED_DISTRIBUTIONS", "Prior"]

# The `tfp.distributions` classes `Prior` may name: scalar distributions whose
# support is the whole real line and whose parameters are all real numbers.
# A config resolves a class from this set only.
ALLOWED_DISTRIBUTIONS = frozenset({
    "Cauchy",
    "GeneralizedNormal",
    "Gumbel",
    "Horseshoe",
    "JohnsonSU",
    "Laplace",
    "LambertWNormal",
    "Logistic",
    "Moyal",
    "Normal",
    "NormalInverseGaussian",
    "SinhArcsinh",
    "StudentT",
    "TwoPieceNormal",
    "TwoPieceStudentT",
})

# Constructor arguments of every TFP distribution that are not parameters of
# the density; `Prior` drops them from its config.
_NON_PARAMETERS = frozenset({"name", "validate_args", "allow_nan_stats"})


def _distributions():
    """`tfp.distributions`, imported on first use so `import tfreg` stays light."""
    from tensorflow_probability import distributions  # pylint: disable=g-import-not-at-top
    return distributions


def _describe_distribution(distribution):
    """The JSON spec {"class_name", "parameters"} of a TFP distribution."""
    class_name = type(distribution).__name__
    parameters = {}
    for key, value in distribution.parameters.items():
        if key in _NON_PARAMETERS or value is None:
            continue
        parameters[key] = value
    return {"class_name": class_name, "parameters": parameters}


def _invalid_distribution(distribution, expected):
    return ValueError(validation.message("distribution", distribution, expected))


def _validated_spec(distribution, spec):
    """Checks a {"class_name", "parameters"} spec without importing anything."""
    if not isinstance(spec, dict) or set(spec) != {"class_name", "parameters"}:
        raise _invalid_distribution(
            distribution, "a tfp.distributions instance or a dict with exactly "
            "the keys 'class_name' and 'parameters'")
    class_name, parameters = spec["class_name"], spec["parameters"]
    allowed = sorted(ALLOWED_DISTRIBUTIONS)
    if not isinstance(class_name, str) or "." in class_name:
        raise _invalid_distribution(
            distribution, f"a class name (not a path) among {allowed}")
    if class_name not in ALLOWED_DISTRIBUTIONS:
        raise _invalid_distribution(distribution, f"a class among {allowed}")
    if not isinstance(parameters, dict):
        raise _invalid_distribution(
            distribution, "'parameters' to be a dict of finite numbers")
    clean = {}
    for key, value in parameters.items():
        number = None
        if (isinstance(key, str) and key not in _NON_PARAMETERS
                and not isinstance(value, bool)
                and isinstance(value, numbers.Real)):
            try:
                number = float(value)
            except OverflowError:  # An int beyond float range (10**400).
                pass
        if number is None or not math.isfinite(number):
            raise _invalid_distribution(
                distribution, "parameters that are finite numbers (not "
                f"tensors, arrays, bools or None); parameter {key!r} is "
                f"{value!r}")
        clean[key] = number
    return {"class_name": class_name, "parameters": clean}


@serialization.register
class Prior(_base.Prior):
    """The prior of any allowlisted scalar `tfp.distributions` distribution.

    Mathematical details:

        penalty(w) = -sum_i distribution.log_prob(w_i) / num_examples

    The distribution is evaluated with TFP (imported when the first `Prior`
    is built), in float32 for float16/bfloat16/float32 weights and in float64
    for float64 weights. Its config holds the class name and the parameters as
    plain numbers; loading it resolves the class only from
    `ALLOWED_DISTRIBUTIONS`, never imports a module and never calls anything
    but that class's constructor.

    Args:
      distribution: A `tfp.distributions` instance of an allowlisted class
        whose parameters are Python or NumPy numbers, or its spec
        `{"class_name": "Gumbel", "parameters": {"loc": 0.0, "scale": 1.0}}`.
      num_examples, weight: The training-set size and the penalty's
        multiplier, as for every prior (see `tfreg.priors`).

    Raises:
      ValueError: for a class outside the allowlist, a dotted path, a
        parameter that is not a finite number (a tensor, an array, a string,
        a bool, None) or that float64 flushes to 0 (below 2.2e-308), a name
        that is not one of the class's parameters, or parameters the
        distribution rejects; when called, for a parameter that is neither 0
        nor a normal number of the dtype TFP computes in (float32 flushes
        below 1.2e-38 and overflows above 3.4e38: `scale=1e300` needs
        float64 weights).
    """

    def __init__(self, distribution, num_examples=1, weight=1.0):
        tfd = None
        if not isinstance(distribution, dict):
            tfd = _distributions()
            if not isinstance(distribution, tfd.Distribution):
                raise _invalid_distribution(
                    distribution, "a tfp.distributions instance or a dict "
                    "with exactly the keys 'class_name' and 'parameters'")
            spec = _describe_distribution(distribution)
        else:
            spec = distribution
        self.distribution = _validated_spec(distribution, spec)
        self._set_scaling(num_examples, weight)
        self._check_builds(tfd or _distributions())

    def _check_builds(self, tfd):
        """Builds the distribution once, eagerly, with validate_args=True,
        in float64 (the parameters are checked against float32 when called
        with float32 weights)."""
        class_name = self.distribution["class_name"]
        # A constructor argument that is no numeric parameter (SinhArcsinh's
        # `distribution`) would fail deep inside TFP, as an AttributeError.
        accepted = sorted(getattr(tfd, class_name).parameter_properties())
        for key in self.distribution["parameters"]:
            if key not in accepted:
                raise _invalid_distribution(
                    self.distribution, f"parameters that {class_name} "
                    f"accepts, among {accepted}; parameter {key!r} is not one")
        try:
            with tf.init_scope():
                built = self._build(tfd, tf.float64, validate_args=True)
                scalar = (built.batch_shape.rank == 0
                          and built.event_shape.rank == 0)
        except (TypeError, ValueError, tf.errors.InvalidArgumentError) as error:
            raise _invalid_distribution(
                self.distribution, f"parameters that {self.distribution['class_name']} "
                f"accepts ({type(error).__name__}: {error})") from None
        if not scalar:
            raise _invalid_distribution(
                self.distribution, "a scalar distribution")

    def _build(self, tfd, dtype, validate_args=False):
        parameters = {key: tf.constant(value, dtype) for key, value
                      in self.distribution["parameters"].items()}
        cls = getattr(tfd, self.distribution["class_name"])
        return cls(**parameters, validate_args=validate_args)

    def _requirements(self, dtype):
        for key, value in self.distribution["parameters"].items():
            if value != 0 and not _dtypes.is_normal(value, dtype):
                yield ("distribution",
                       f"parameter {key!r} = 0 or {_dtypes.normal_span(dtype)}",
                       f" ({key} = {value!r})")

    def _log_prob(self, x):
        return self._build(_distributions(), x.dtype).log_prob(x)

    def _negative_log_prob_sum(self, x, factor):
        # By blocks on a large tensor: TFP's log_prob is a chain of full-size
        # ops whose outputs autodiff would keep.
        return _math.autodiff_sum(x, lambda x: -self._log_prob(x), factor)


