"""The base class of the priors: weight * -sum_i log p(w_i) / num_examples."""

import tensorflow as tf

from tfreg import base
from tfreg import penalties
from tfreg import validation
from tfreg.priors import _dtypes

# Every int up to 2^53 is exact as a float, the penalty's divisor.
_MAX_NUM_EXAMPLES = 2**53


class Prior(base.Regularizer):
    """weight * -sum_i log_prob(w_i) / num_examples; subclasses give _log_prob.

    The base of every prior, closed-form and TFP-backed (not registered:
    it is no regularizer by itself).

    Every constant a penalty multiplies the weights by must be a normal
    number of the dtype it is computed in (`_constants`, `_locations`):
    beyond the largest it is inf, below the smallest TensorFlow flushes it
    to 0, and either gives NaN or a silently wrong penalty. Parameters for
    which float64 cannot hold one are rejected at construction; float32
    (the dtype of float16, bfloat16 and float32 weights) is checked at call
    time, like a dtype mismatch.
    """

    def _set_scaling(self, num_examples, weight):
        """Validates the common arguments; the last step of every __init__."""
        self.num_examples = validation.integer(
            "num_examples", num_examples, minimum=1, maximum=_MAX_NUM_EXAMPLES)
        self.weight = validation.non_negative("weight", weight)
        self._check_constants(tf.float64, constructing=True)

    def _factor(self, dtype):
        """weight / num_examples: a Python float, or a `dtype` scalar tensor."""
        return penalties.operand(self.weight, dtype) / float(self.num_examples)

    def _constants(self):
        """(argument, formula, value) of every constant computed from the
        parameters that the penalty applies to the weights."""
        return ()

    def _locations(self):
        """(argument, value) of the locations the weights are centred on:
        each is 0 or a normal number."""
        return ()

    def _requirements(self, dtype):
        """(argument, requirement, detail): each constant dtype cannot hold."""
        span = _dtypes.normal_span(dtype)
        for argument, formula, value in self._constants():
            if not _dtypes.is_normal(value, dtype):
                yield (argument, f"{formula} {span}",
                       f" ({formula} = {value:.3g})")
        for argument, value in self._locations():
            if value != 0 and not _dtypes.is_normal(value, dtype):
                yield argument, f"{argument} = 0 or {span}", ""

    def _check_constants(self, dtype, constructing=False):
        for argument, requirement, detail in self._requirements(dtype):
            value = getattr(self, argument)
            if constructing:
                raise ValueError(validation.message(
                    argument, value, requirement + detail))
            received = f"{argument}={value!r}"
            advice = "" if dtype == tf.float64 else " Use float64 weights."
            raise ValueError(
                f"{type(self).__name__} cannot be computed in {dtype.name}: "
                f"it needs {requirement}{detail}. Received: {received}."
                f"{advice}")

    def log_prob(self, x):
        """Elementwise log density of the prior at `x`.

        Raises:
          ValueError: when x's dtype cannot hold a constant of the density.
        """
        x = tf.convert_to_tensor(x)
        self._check_constants(x.dtype)
        return self._log_prob(x)

    def _log_prob(self, x):
        raise NotImplementedError

    def negative_log_prob_sum(self, x, factor=1.0):
        """-factor sum(log_prob(x)), in the fastest form of each prior.

        `factor` is a Python float or a scalar tensor of x's dtype.

        Raises:
          ValueError: when x's dtype cannot hold a constant of the penalty.
        """
        x = tf.convert_to_tensor(x)
        self._check_constants(x.dtype)
        return self._negative_log_prob_sum(x, factor)

    def _negative_log_prob_sum(self, x, factor):
        """Closed forms override this with a faster form."""
        return factor * -penalties.total(self._log_prob(x))

    def penalty(self, x):
        return self.negative_log_prob_sum(x, self._factor(x.dtype))


