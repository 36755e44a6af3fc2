"""The closed-form priors: no TensorFlow Probability, XLA-ready, any float dtype."""

import math

import tensorflow as tf

from tfreg import penalties
from tfreg import serialization
from tfreg import validation
from tfreg.priors import _base
from tfreg.priors import _dtypes
from tfreg.priors import _math

__all__ = ["Cauchy", "Horseshoe", "Laplace", "MeanFieldKL", "Normal",
           "SpikeAndSlab", "StudentT"]


class _LocationScalePrior(_base.Prior):
    """A prior with a `scale` > 0 and a `loc`."""

    def __init__(self, scale=1.0, loc=0.0, num_examples=1, weight=1.0):
        self.scale = validation.positive("scale", scale)
        self.loc = validation.real("loc", loc)
        self._set_scaling(num_examples, weight)

    def _locations(self):
        return (("loc", self.loc),)


def _scaled_sum(penalty, x, inverse_width, strength, constant, factor):
    """factor * (penalty(inverse_width * x) + sum over x of `constant`).

    `penalty(x, s)` is s * sum(p(x)) for a p homogeneous of degree d, and
    strength = inverse_width^d. Where factor is a Python number and
    2 factor strength (L2 doubles it) and factor constant fit x's dtype the
    factor folds into both (the fewest ops). Otherwise (a `Strength` weight,
    or weight / num_examples times a constant overflows) x is scaled by
    inverse_width, which fits wherever strength does, and the factor
    multiplies the sum last: zero weights then give a finite penalty and a
    zero gradient instead of inf * 0, and an overflowing penalty term never
    meets an overflowing normalizer of the other sign (inf - inf).
    """
    limit = float(x.dtype.max)
    if (isinstance(factor, (int, float)) and 2.0 * factor * strength <= limit
            and abs(factor * constant) <= limit):
        return (penalty(x, factor * strength)
                + _math.constant_sum(x, factor, constant))
    return factor * (penalty(inverse_width * x, 1.0)
                     + _math.constant_sum(x, 1.0, constant))


@serialization.register
class Normal(_LocationScalePrior):
    """Normal (Gaussian) prior: an L2 penalty with a meaning.

    Mathematical details:

        penalty(w) = -sum_i log N(w_i; loc, scale) / num_examples
                   = sum_i [(w_i - loc)^2 / (2 scale^2) + log(scale)
                            + log(2 pi) / 2] / num_examples

    With loc=0 and num_examples=1 its gradient is that of `L2(1 / (2 scale^2))`.
    Equals `-sum(tfd.Normal(loc, scale).log_prob(w)) / num_examples`.

    Args:
      scale: Positive finite float, the prior's standard deviation.
      loc: Finite float, the prior's mean.
      num_examples, weight: The training-set size and the penalty's
        multiplier, as for every prior (see `tfreg.priors`).

    >>> import tensorflow as tf, tfreg
    >>> prior = tfreg.priors.Normal(scale=1.0)
    >>> round(float(prior(tf.constant([0.0, 2.0]))), 4)  # 2 + 2 log(2 pi) / 2
    3.8379
    """

    _traced_once_per_shape = True

    def _constants(self):
        return (("scale", "1 / (2 scale^2)",
                 0.5 * _math.inverse_square(self.scale)),)

    def _log_prob(self, x):
        return _math.normal_log_prob(x, self.loc, self.scale)

    def _negative_log_prob_sum(self, x, factor):
        return _scaled_sum(
            penalties.l2, _math.centered(x, self.loc),
            math.sqrt(0.5) / self.scale,
            0.5 * _math.inverse_square(self.scale),
            _math.normal_log_normalizer(self.scale), factor)


@serialization.register
class Laplace(_LocationScalePrior):
    """Laplace prior: an L1 penalty with a meaning.

    Mathematical details:

        penalty(w) = sum_i [|w_i - loc| / scale + log(2 scale)] / num_examples

    With loc=0 and num_examples=1 its gradient is that of `L1(1 / scale)`.
    Equals `-sum(tfd.Laplace(loc, scale).log_prob(w)) / num_examples`.

    Args:
      scale: Positive finite float, the prior's scale b (variance 2 b^2).
      loc: Finite float, the prior's location.
      num_examples, weight: The training-set size and the penalty's
        multiplier, as for every prior (see `tfreg.priors`).
    """

    _traced_once_per_shape = True

    def _constants(self):
        return (("scale", "1 / scale", 1.0 / self.scale),)

    def _log_prob(self, x):
        return _math.laplace_log_prob(x, self.loc, self.scale)

    def _negative_log_prob_sum(self, x, factor):
        return _scaled_sum(
            penalties.l1, _math.centered(x, self.loc), 1.0 / self.scale,
            1.0 / self.scale, _math.laplace_log_normalizer(self.scale),
            factor)


@serialization.register
class StudentT(_LocationScalePrior):
    """Student's t prior: heavy tails, so large weights are barely penalized.

    Mathematical details:

        penalty(w) = sum_i [(df + 1) / 2 * log1p(((w_i - loc) / scale)^2 / df)
                            + log_normalizer] / num_examples
        log_normalizer = lgamma(df / 2) - lgamma((df + 1) / 2)
                         + log(df pi) / 2 + log(scale)

    Equals `-sum(tfd.StudentT(df, loc, scale).log_prob(w)) / num_examples`,
    and unlike TFP it accepts bfloat16 weights. Where ((w - loc) / scale)^2
    overflows (scale=1e-38 and w=0.05 in float32) the log1p term is
    2 log|(w - loc) / scale| and its gradient (df + 1) / (w - loc): finite.

    Args:
      df: Positive finite float, the degrees of freedom.
      scale: Positive finite float.
      loc: Finite float.
      num_examples, weight: The training-set size and the penalty's
        multiplier, as for every prior (see `tfreg.priors`).
    """

    _traced_once_per_shape = True

    def __init__(self, df=3.0, scale=1.0, loc=0.0, num_examples=1,
                 weight=1.0):
        self.df = validation.positive("df", df)
        super().__init__(scale, loc, num_examples, weight)

    def _constants(self):
        k = _math.student_t_inverse_width(self.df, self.scale)
        return (("scale", "1 / (sqrt(df) scale)", k),
                ("scale", "2 / (sqrt(df) scale)", 2.0 * k))

    def _requirements(self, dtype):
        # Where ((w - loc) / scale)^2 / df falls below the smallest normal
        # number it is flushed to 0, dropping (df + 1) / 2 times its log1p:
        # up to df tiny / 2 per weight, which must stay below epsilon / 2.
        tiny, _ = _dtypes.normal_range(dtype)
        largest_df = _dtypes.epsilon(dtype) / tiny
        if not self.df <= largest_df:
            yield ("df", f"df <= {largest_df:.3g} in {dtype.name} (beyond "
                   "it ((w - loc) / scale)^2 / df underflows where its "
                   "log1p times (df + 1) / 2 still counts)", "")
        yield from super()._requirements(dtype)

    def _log_prob(self, x):
        return _math.student_t_log_prob(x, self.df, self.loc, self.scale)

    def _negative_log_prob_sum(self, x, factor):
        df, scale = self.df, self.scale
        return _math.log1p_square_sum(
            x, self.loc, _math.student_t_inverse_width(df, scale),
            factor * (0.5 * (df + 1.0)),
            _math.constant_sum(x, factor,
                               _math.student_t_log_normalizer(df, scale)))


@serialization.register
class Cauchy(_LocationScalePrior):
    """Cauchy prior (Student's t with df=1).

    Mathematical details:

        penalty(w) = sum_i [log1p(((w_i - loc) / scale)^2) + log(pi scale)]
                     / num_examples

    Equals `-sum(tfd.Cauchy(loc, scale).log_prob(w)) / num_examples`, and
    stays finite, with a finite gradient, where ((w - loc) / scale)^2
    overflows (as for `StudentT`).

    Args:
      scale: Positive finite float.
      loc: Finite float.
      num_examples, weight: The training-set size and the penalty's
        multiplier, as for every prior (see `tfreg.priors`).
    """

    _traced_once_per_shape = True

    def _constants(self):
        return (("scale", "1 / scale", 1.0 / self.scale),
                ("scale", "2 / scale", 2.0 / self.scale))

    def _log_prob(self, x):
        return _math.cauchy_log_prob(x, self.loc, self.scale)

    def _negative_log_prob_sum(self, x, factor):
        constant = _math.cauchy_log_normalizer(self.scale)
        return _math.log1p_square_sum(x, self.loc, 1.0 / self.scale, factor,
                                      _math.constant_sum(x, factor, constant))


@serialization.register
class Horseshoe(_base.Prior):
    """Horseshoe prior: an infinite spike at 0 with Cauchy-like tails.

    Mathematical details:

    The horseshoe is the scale mixture w ~ N(0, (scale * lambda)^2) with
    lambda ~ HalfCauchy(0, 1). Its marginal density has no closed form; this
    is TFP's approximation (`tfd.Horseshoe.log_prob`), written out so that it
    runs in closed form in float32 for every input dtype. With
    u = (w / scale)^2 / 2, g = exp(-euler_gamma), b, h_inf constants and
    q = 20/47 u^1.0919284281983377,

        h(u) = 1 / (1 + u^1.5) + h_inf q / (1 + q)
        log p(w) = -softplus(log((1 - g) / g) - u / (1 - g))
                   + log(log1p(g / u - (1 - g) / (h(u) + b u)^2))
                   - log(2 pi^3) / 2 - log(g scale)
        penalty(w) = -sum_i log p(w_i) / num_examples

    Accuracy: against the exact marginal (numerical integration over lambda)
    the approximate density is within 0.07% (relative) for |w / scale| in
    [1e-6, 1e6]; the largest error, 6.3e-4, is near |w / scale| = 2.8, and it
    is below 1e-8 for |w / scale| < 0.01 or > 100 (see docs/priors.md).
    u is floored at the dtype's smallest normal number, so the penalty is
    finite and its gradient 0 at w = 0, where
    the exact density (and TFP's value) is infinite. Weights whose magnitude
    underflows that floor (|w / scale| < 1.5e-19 in float32) are treated as 0.
    Beyond u = 1e17 the penalty is log(u / g) + c from log|w| (within 3e-18
    of the formula above), so it stays finite where u, or w / scale itself,
    overflows float32 (|w / scale| > 2.6e19, e.g. scale=1e-25 and |w| ~ 1;
    TFP: NaN). Calling
    it raises a ValueError when 1 / scale is not a normal number of the
    weights' float type (float32: scale outside [4.2e-39, 6.0e37]).
    For float16 weights TFP's value is inf and its gradient NaN when
    |w| <= 1e-3; here the gradient is finite wherever the exact gradient fits
    in float16 (|w / scale| >= 2e-6) and 0 at w = 0.

    Args:
      scale: Positive finite float, the global shrinkage tau.
      num_examples, weight: The training-set size and the penalty's
        multiplier, as for every prior (see `tfreg.priors`).

    References:
      Carvalho, Polson and Scott (2010). The horseshoe estimator for sparse
      signals. Biometrika 97(2).
    """

    _traced_once_per_shape = True

    def __init__(self, scale=1.0, num_examples=1, weight=1.0):
        self.scale = validation.positive("scale", scale)
        self._set_scaling(num_examples, weight)

    def _constants(self):
        return (("scale", "sqrt(2) / scale", math.sqrt(2.0) / self.scale),
                ("scale", "sqrt(1/2) / scale", math.sqrt(0.5) / self.scale))

    def _log_prob(self, x):
        return _math.horseshoe_log_prob(x, self.scale)

    def _negative_log_prob_sum(self, x, factor):
        return _math.horseshoe_negative_log_prob_sum(x, self.scale, factor)


@serialization.register
class SpikeAndSlab(_base.Prior):
    """Two-Gaussian spike-and-slab prior (scale mixture of Blundell et al.).

    Mathematical details:

        p(w) = slab_probability * N(w; 0, slab_scale)
               + (1 - slab_probability) * N(w; 0, spike_scale)
        penalty(w) = -sum_i log p(w_i) / num_examples

    log p is a logaddexp of the two weighted log densities, so it never
    underflows, even for weights far outside the spike. Equals the
    `log_prob` of `tfd.MixtureSameFamily(tfd.Categorical(probs=[p, 1 - p]),
    tfd.Normal(0, [slab_scale, spike_scale]))`.

    Args:
      spike_scale: Positive finite float, smaller than `slab_scale`.
      slab_scale: Positive finite float.
      slab_probability: Float in (0, 1), the prior weight of the slab.
      num_examples, weight: The training-set size and the penalty's
        multiplier, as for every prior (see `tfreg.priors`).

    References:
      Blundell, Cornebise, Kavukcuoglu and Wierstra (2015). Weight uncertainty
      in neural networks. ICML.
    """

    _traced_once_per_shape = True

    def __init__(self, spike_scale=0.01, slab_scale=1.0, slab_probability=0.5,
                 num_examples=1, weight=1.0):
        self.spike_scale = validation.positive("spike_scale", spike_scale)
        self.slab_scale = validation.positive("slab_scale", slab_scale)
        if not self.spike_scale < self.slab_scale:
            raise ValueError(validation.message(
                "spike_scale", spike_scale,
                f"a float < slab_scale={self.slab_scale!r}"))
        self.slab_probability = validation.open_unit(
            "slab_probability", slab_probability)
        self._set_scaling(num_examples, weight)

    def _constants(self):
        k = _math.spike_and_slab_inverse_width(self.spike_scale,
                                               self.slab_scale)
        slab_precision = _math.inverse_square(self.slab_scale)
        difference = "1 / spike_scale^2 - 1 / slab_scale^2"
        return (("spike_scale", f"sqrt(({difference}) / 2)", k),
                ("spike_scale", f"sqrt(2 ({difference}))", 2.0 * k),
                ("slab_scale", "1 / (2 slab_scale^2)", 0.5 * slab_precision),
                ("slab_scale", "1 / slab_scale^2", slab_precision))

    def _log_prob(self, x):
        return _math.spike_and_slab_log_prob(
            x, self.spike_scale, self.slab_scale, self.slab_probability)

    def _negative_log_prob_sum(self, x, factor):
        return _math.spike_and_slab_negative_log_prob_sum(
            x, self.spike_scale, self.slab_scale, self.slab_probability,
            factor)


@serialization.register
class MeanFieldKL(_base.Prior):
    """KL divergence of a mean-field Normal posterior from a Normal prior.

    For Bayes-by-backprop (variational) layers in Keras 3 or tf_keras: the
    layer keeps its posterior in ONE weight of shape `(2, *kernel_shape)`,
    `posterior[0]` the means and `posterior[1]` the unconstrained scales
    rho, and samples its kernel as `posterior[0] + scale * eps`. This
    regularizer, given as that weight's regularizer, adds the KL term of the
    evidence lower bound, so `loss + penalty` is the negative ELBO per example.

    Mathematical details:

        scale = softplus(rho)  (parameterization="softplus", Blundell et al.)
        scale = exp(rho)       (parameterization="log")
        penalty(posterior) = sum_i KL(N(mean_i, scale_i) || N(prior_loc,
                                       prior_scale)) / num_examples
        KL = ((mean - prior_loc) / prior_scale)^2 / 2
             + expm1(2 d) / 2 - d,   d = log(scale) - log(prior_scale)

    log(softplus(rho)) is evaluated stably, so the KL stays finite for very
    negative rho. The gradient is written out; a zero weight gives 0 and a
    zero gradient even where the KL overflows. Equals TFP's `tfd.kl_divergence(tfd.Normal(mean, scale),
    tfd.Normal(prior_loc, prior_scale))` summed and scaled.

    Args:
      prior_scale: Positive finite float.
      prior_loc: Finite float.
      num_examples, weight: The training-set size and the penalty's
        multiplier, as for every prior (see `tfreg.priors`).
      parameterization: "softplus" or "log", how rho maps to the scale.

    Raises:
      ValueError: when called on a weight whose first dimension is not 2, or
        on float32 weights when 1 / prior_scale is not a normal float32
        number (prior_scale outside [2.9e-39, 8.5e37]) or prior_loc is
        neither 0 nor one.

    >>> import tensorflow as tf, tfreg
    >>> kl = tfreg.priors.MeanFieldKL(parameterization="log")
    >>> float(kl(tf.constant([[0.0], [0.0]])))  # posterior N(0, 1) = prior
    0.0
    """

    def __init__(self, prior_scale=1.0, prior_loc=0.0, num_examples=1,
                 parameterization="softplus", weight=1.0):
        self.prior_scale = validation.positive("prior_scale", prior_scale)
        self.prior_loc = validation.real("prior_loc", prior_loc)
        self._set_scaling(num_examples, weight)
        self.parameterization = validation.choice(
            "parameterization", parameterization, ("softplus", "log"))

    def _constants(self):
        return (("prior_scale", "1 / prior_scale", 1.0 / self.prior_scale),)

    def _locations(self):
        return (("prior_loc", self.prior_loc),)

    def penalty(self, x):
        if x.shape.rank is None or x.shape.rank < 1 or x.shape[0] != 2:
            raise ValueError(
                "MeanFieldKL expects a posterior weight of shape (2, ...): "
                "means in [0], unconstrained scales in [1]. "
                f"Received: posterior.shape={x.shape}")
        self._check_constants(x.dtype)
        return _math.mean_field_kl_sum(
            x, self.prior_loc, self.prior_scale, self.parameterization,
            self._factor(x.dtype))

