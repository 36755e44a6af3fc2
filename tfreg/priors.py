"""Bayesian prior penalties: -sum(log p(w)) / num_examples as Keras regularizers.

A weight penalty is a prior: with a training set of `num_examples` examples and
a loss that is the mean negative log-likelihood per example,

    loss(w) + penalty(w) = (-log p(D | w) - log p(w)) / num_examples,

so minimizing it is maximum-a-posteriori (MAP) training. L2 is a Normal prior,
L1 a Laplace prior; this module adds heavy-tailed and sparsity-inducing priors.

The named priors (`Normal`, `Laplace`, `StudentT`, `Cauchy`, `Horseshoe`,
`SpikeAndSlab`) and `MeanFieldKL` are closed-form tensor code: they need no
TensorFlow Probability, compile with XLA and accept float16, bfloat16, float32
and float64 weights (computed in float32; float64 stays float64). Their values
equal the `log_prob` of the TFP distribution of the same name. `Prior` wraps
any allowlisted scalar `tfp.distributions` class and imports TFP lazily, when a
`Prior` is first built.

Every prior also takes `weight` (default 1), a multiplier of the penalty. It
is 1 for MAP training; a `tfreg.Strength` there anneals the prior (KL warm-up)
during training without recompiling.

The constants a penalty applies to the weights (1 / (2 scale^2), 1 / scale,
...) must be normal numbers of the dtype it is computed in: parameters for
which float64 cannot hold one raise a ValueError at construction, and those
float32 cannot hold raise one when the prior is called on weights computed in
float32 (docs/priors.md, "Extreme parameters").
"""

import math
import numbers

import numpy as np
import tensorflow as tf

from tfreg import validation
from tfreg import base
from tfreg import penalties
from tfreg import serialization

_HALF_LOG_TWO_PI = 0.5 * math.log(2.0 * math.pi)

# Every int up to 2^53 is exact as a float, the penalty's divisor.
_MAX_NUM_EXAMPLES = 2**53

# Constants of TFP's Horseshoe density approximation (tfd.Horseshoe._log_prob,
# a log-space version of Carvalho, Polson & Scott 2010, Theorem 1 bounds).
_HORSESHOE_G = 0.5614594835668851  # exp(-euler_gamma)
_HORSESHOE_B = 1.0420764938351215  # sqrt(2 (1 - g) / (g (2 - g)))
_HORSESHOE_H_INF = 1.0801359952503342  # (1-g)(g^2-6g+12) / (3g (2-g)^2 b)
_HORSESHOE_Q_POWER = 1.0919284281983377
_HORSESHOE_Z = math.log1p(-_HORSESHOE_G) - math.log(_HORSESHOE_G)
# Beyond u = (w / scale)^2 / 2 = 1e17 the approximation's -log p(w) equals
# log(u / g) + log(2 pi^3) / 2 + log(g scale) to within 0.3 / u < 3e-18, below
# float64's resolution; there it is computed from log|w|, which stays finite
# where u itself overflows (|w / scale| > 2.6e19 in float32).
_HORSESHOE_TAIL_U = 1e17

# Below this, log(softplus(r)) equals r to float64 precision's relative
# accuracy of the approximation softplus(r) ~ exp(r) (error exp(r) / 2).
_LOG_SOFTPLUS_LINEAR_BELOW = -30.0

# exp(t) stays finite (and 1 + exp(t) exact enough) in float32 for t below this.
_EXP_IS_SAFE_BELOW = 30.0

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


# Constants of the penalties, computed from the parameters as Python floats
# with neither overflow exceptions (`**`, `math.lgamma`) nor a division by an
# underflowed 0: a constant out of range comes out as inf or 0, which the
# priors' checks below reject.


def _normal_range(dtype):
    """The smallest and the largest positive normal number of a float dtype."""
    if dtype == tf.bfloat16:  # NumPy has no finfo for it; float32's exponents.
        return float(np.finfo(np.float32).tiny), float(dtype.max)
    info = np.finfo(dtype.as_numpy_dtype)
    return float(info.tiny), float(info.max)


def _epsilon(dtype):
    """The spacing of `dtype`'s numbers at 1."""
    if dtype == tf.bfloat16:
        return 2.0**-7
    return float(np.finfo(dtype.as_numpy_dtype).eps)


def _is_normal(value, dtype):
    """True when |value| is a normal number of `dtype`.

    TensorFlow flushes subnormal numbers to zero on CPU (eager, graph and
    XLA, float32 and float64 alike), so a smaller constant acts as 0: inf
    once it divides, NaN once inf meets a zero weight.
    """
    tiny, largest = _normal_range(dtype)
    return tiny <= abs(value) <= largest


def _normal_span(dtype):
    tiny, largest = _normal_range(dtype)
    return f"within {dtype.name}'s normal range [{tiny:.3g}, {largest:.3g}]"


def _inverse_square(scale):
    """1 / scale^2: inf or 0 out of float64's range (`scale**2` raises)."""
    inverse = 1.0 / scale
    return inverse * inverse


def _student_t_inverse_width(df, scale):
    """k = 1 / (sqrt(df) scale), so that ((x - loc) / scale)^2 / df is
    (k (x - loc))^2."""
    return 1.0 / math.sqrt(df) / scale


# From a = df / 2 = 32 on, Stirling's series gives lgamma(a) - lgamma(a + 1/2)
# to within 2e-17; there each lgamma has grown to 80 and its rounding starts
# to show in the difference (7e-13 at a = 1000, all of it from a = 1e15 on).
_STIRLING_FROM = 32.0


def _stirling_remainder(x):
    """lgamma(x) - ((x - 1/2) log x - x + log(2 pi) / 2) by Stirling's series
    to x^-7: the first term left out, 1 / (1188 x^9), is 2.4e-17 at x = 32."""
    inverse = 1.0 / x
    square = inverse * inverse
    return inverse * (1.0 / 12.0 - square * (1.0 / 360.0 - square * (
        1.0 / 1260.0 - square / 1680.0)))


def _student_t_log_normalizer(df, scale):
    """lgamma(df / 2) - lgamma((df + 1) / 2) + log(df pi) / 2 + log(scale).

    For every positive finite df: the lgamma difference, which cancels to
    about -log(df / 2) / 2 while each lgamma grows like df log(df), is taken
    from Stirling's series where the lgammas would lose it, and the limit
    log(2 pi) / 2 + log(scale) (a Normal's) is reached without overflow.
    """
    a = 0.5 * df
    if a >= _STIRLING_FROM:
        # lgamma(a) - lgamma(a + 1/2) + log(a) / 2 from the series; its
        # 1/2 - a log1p(1 / (2 a)) is ~1 / (8 a), without cancellation.
        log_gamma_ratio = ((0.5 - a * math.log1p(0.5 / a))
                           + _stirling_remainder(a)
                           - _stirling_remainder(a + 0.5))
        return log_gamma_ratio + _HALF_LOG_TWO_PI + math.log(scale)
    # lgamma(a) = lgamma(a + 1) - log(a): a = df / 2 may round to 0.
    log_gamma_a = math.lgamma(a + 1.0) - (math.log(df) - math.log(2.0))
    return (log_gamma_a - math.lgamma(a + 0.5)
            + 0.5 * (math.log(df) + math.log(math.pi)) + math.log(scale))


# Log densities as pure, elementwise tensor functions. `x` is float32 or
# float64; the parameters are Python floats, and every constant they make
# must be a normal number of x's dtype (the prior classes check that).


def normal_log_prob(x, loc, scale):
    """log N(x; loc, scale) = -((x - loc) / scale)^2 / 2 - log(scale) - log(2 pi) / 2."""
    z = (x - loc) * (1.0 / scale)
    return -0.5 * tf.square(z) - (math.log(scale) + _HALF_LOG_TWO_PI)


def laplace_log_prob(x, loc, scale):
    """log Laplace(x; loc, scale) = -|x - loc| / scale - log(2 scale)."""
    return (-tf.abs(x - loc) * (1.0 / scale)
            - (math.log(2.0) + math.log(scale)))


def student_t_log_prob(x, df, loc, scale):
    """log StudentT(x; df, loc, scale), with the lgamma terms as Python floats."""
    z = (x - loc) * _student_t_inverse_width(df, scale)
    return (-0.5 * (df + 1.0) * tf.math.log1p(tf.square(z))
            - _student_t_log_normalizer(df, scale))


def cauchy_log_prob(x, loc, scale):
    """log Cauchy(x; loc, scale) = -log1p(((x - loc) / scale)^2) - log(pi scale)."""
    z = (x - loc) * (1.0 / scale)
    return -tf.math.log1p(tf.square(z)) - (math.log(math.pi) + math.log(scale))


def _horseshoe_log_normalizer(scale):
    return 0.5 * math.log(2.0 * math.pi**3) + math.log(_HORSESHOE_G * scale)


def _check_horseshoe_scale(scale, dtype):
    """Its constants sqrt(2) / scale and sqrt(1/2) / scale must be normal."""
    if not (_is_normal(math.sqrt(2.0) / scale, dtype)
            and _is_normal(math.sqrt(0.5) / scale, dtype)):
        tiny, largest = _normal_range(dtype)
        other = "" if dtype == tf.float64 else " or float64 weights"
        raise ValueError(
            f"Horseshoe needs 1 / scale to be a normal {dtype.name} number. "
            f"Received: scale={scale!r} (use scale in "
            f"[{math.sqrt(2.0) / largest:.2g}, {math.sqrt(0.5) / tiny:.2g}]"
            f"{other}).")


def horseshoe_log_prob(x, scale):
    """TFP's approximation of the Horseshoe(scale) log density, in closed form.

    The exact density is infinite at 0. With u = (x / scale)^2 / 2 floored at
    the smallest normal number of x's dtype, the value equals
    `tfd.Horseshoe(scale).log_prob(x)` wherever TFP's is finite, and stays
    finite (with zero gradient) at and very near 0 where TFP's is +inf. For
    u > 1e17 it is -log(u / g) - c, finite where u overflows (TFP: NaN).

    Raises:
      ValueError: when 1 / scale is not a normal number of x's dtype.
    """
    _check_horseshoe_scale(scale, x.dtype)
    # Split at the far tail so that neither branch, not even the one
    # `tf.where` discards (whose gradient would still be NaN), sees an
    # overflowing u or log(0).
    tail = tf.abs(x) > math.sqrt(2.0 * _HORSESHOE_TAIL_U) * scale
    core_x = tf.where(tail, tf.zeros_like(x), x)
    tail_x = tf.where(tail, x, tf.ones_like(x))
    tiny = float(np.finfo(x.dtype.as_numpy_dtype).tiny)
    u = tf.maximum(tf.square(core_x * (1.0 / scale)) * 0.5, tiny)
    g, b = _HORSESHOE_G, _HORSESHOE_B
    q = (20.0 / 47.0) * tf.pow(u, _HORSESHOE_Q_POWER)
    h = 1.0 / (1.0 + tf.pow(u, 1.5)) + _HORSESHOE_H_INF * q / (1.0 + q)
    core = (-tf.math.softplus(_HORSESHOE_Z - u / (1.0 - g))
            + tf.math.log(tf.math.log1p(g / u - (1.0 - g) / tf.square(h + b * u))))
    log_u = 2.0 * (tf.math.log(tf.abs(tail_x)) - math.log(scale)) - math.log(2.0)
    far = math.log(g) - log_u
    return tf.where(tail, far, core) - _horseshoe_log_normalizer(scale)


def spike_and_slab_log_prob(x, spike_scale, slab_scale, slab_probability):
    """log of p N(x; 0, slab_scale) + (1 - p) N(x; 0, spike_scale).

    Computed as logaddexp(a, b) = a + softplus(b - a) of the two weighted log
    densities, which neither underflows nor overflows and has the exact
    gradient everywhere.
    """
    slab = math.log(slab_probability) + normal_log_prob(x, 0.0, slab_scale)
    spike = math.log1p(-slab_probability) + normal_log_prob(x, 0.0, spike_scale)
    return slab + tf.math.softplus(spike - slab)


def _log_softplus(r):
    """log(softplus(r)), exact gradient, finite for every finite r."""
    linear = r < _LOG_SOFTPLUS_LINEAR_BELOW
    safe = tf.where(linear, tf.zeros_like(r), r)
    return tf.where(linear, r, tf.math.log(tf.math.softplus(safe)))


def _log1p(s):
    """log1p(s) of s >= 0, elementwise: `penalties.log1p_by_log` under XLA,
    where it is about twice as fast; graph mode keeps the one op."""
    if penalties.under_xla():
        return penalties.log1p_by_log(s)
    return tf.math.log1p(s)


def _sum_with_derivative(x, terms, factor, offset):
    """factor * sum + offset, its gradient upstream * factor * derivative.

    `terms(x)` gives the sum over x and a function of no arguments that
    gives its elementwise derivative from the same intermediates, so the
    backward pass is one multiply instead of autodiff's chain of full-size
    ops through every intermediate again. `factor` and `offset` (Python
    floats or scalar tensors) are applied inside the custom gradient:
    outside it each scalar op would trace its own gradient's ops for every
    regularized weight (Student-t: 13 of 41 graph ops per weight).
    """
    def forward(x):
        total, derivative = terms(x)
        return (factor * total + offset,
                lambda upstream: (upstream * factor) * derivative())
    return penalties.differentiated_as(
        x, lambda x: factor * terms(x)[0] + offset, forward)


def _num_elements(x):
    count = x.shape.num_elements()
    if count is None:
        return tf.cast(tf.size(x), x.dtype)
    return float(count)


def _constant_sum(x, factor, constant):
    """factor * constant summed over x's elements (a log normalizer)."""
    return _num_elements(x) * (factor * constant)


def _centered(x, loc):
    return x - loc if loc else x


def log1p_square_sum(x, loc, inverse_width, factor=1.0, offset=0.0):
    """factor * sum(log1p(z^2)) + offset, z = (x - loc) * inverse_width.

    The gradient is factor 2 k z / (1 + z^2) (k = inverse_width). The
    Student-t (k = 1 / (sqrt(df) scale)) and Cauchy (k = 1 / scale) negative
    log densities. Scaling before squaring needs k, not k^2, in x's dtype
    (scale=1e-20 in float32: 1 / scale^2 overflows), for the same ops.
    """
    twice = 2.0 * inverse_width

    def terms(x):
        z = _centered(x, loc) * inverse_width
        square = tf.square(z)
        return (penalties.log1p_sum(square),
                lambda: (twice * z) / (1.0 + square))
    return _sum_with_derivative(x, terms, factor, offset)


def horseshoe_negative_log_prob_sum(x, scale, factor=1.0):
    """-factor sum(horseshoe_log_prob(x, scale)), its derivative written out.

    With u = (x / scale)^2 / 2 (floored at the dtype's smallest normal
    number, where the derivative is 0), B = (1 - g) / (h + b u)^2 and
    L = log1p(g / u - B):

        d(-log p)/dx = -(x / scale^2) [sigmoid(z - u / (1 - g)) / (1 - g)
                       + (2 B u (h' + b) / (h + b u) - g / u)
                         / (L (u + g - B u))]
        h'(u) = -1.5 sqrt(u) / (1 + u^1.5)^2 + h_inf p q / (u (1 + q)^2)

    (p = 1.0919284281983377), in a form that stays finite at the floor.
    For u > 1e17 the term is log(u / g) with derivative 2 / x.

    Raises:
      ValueError: when 1 / scale is not a normal number of x's dtype.
    """
    _check_horseshoe_scale(scale, x.dtype)
    g, b, h_inf = _HORSESHOE_G, _HORSESHOE_B, _HORSESHOE_H_INF
    tiny = float(np.finfo(x.dtype.as_numpy_dtype).tiny)
    log_tail_u = math.log(_HORSESHOE_TAIL_U)

    # Eigen's pow, softplus and sigmoid are slow on CPU; u^p = exp(p log u),
    # and since the logit below is at most z < 0, exp(logit) cannot overflow
    # and gives softplus = log1p(e) and sigmoid = e / (1 + e) from one exp.
    # u is clipped to [tiny, 1e17]; log u = 2 log|w| is not, so the far tail
    # stays finite where u itself overflows.
    def terms(x):
        w = x * (math.sqrt(0.5) / scale)
        raw_u = tf.square(w)
        u = tf.clip_by_value(raw_u, tiny, _HORSESHOE_TAIL_U)
        log_u = 2.0 * tf.math.log(tf.maximum(tf.abs(w), math.sqrt(tiny)))
        q = (20.0 / 47.0) * tf.exp(
            _HORSESHOE_Q_POWER * tf.minimum(log_u, log_tail_u))
        root_u = tf.sqrt(u)
        one_plus_u_1_5 = 1.0 + u * root_u
        one_plus_q = 1.0 + q
        hb = 1.0 / one_plus_u_1_5 + h_inf * q / one_plus_q + b * u
        big_b = (1.0 - g) / tf.square(hb)
        log_term = _log1p(g / u - big_b)
        e = tf.exp(_HORSESHOE_Z - u / (1.0 - g))

        def derivative():
            h_prime = (-1.5 * root_u / tf.square(one_plus_u_1_5)
                       + (h_inf * _HORSESHOE_Q_POWER) * q
                       / (u * tf.square(one_plus_q)))
            d_log_p = (e / ((1.0 - g) * (1.0 + e))
                       + (2.0 * big_b * u * (h_prime + b) / hb - g / u)
                       / (log_term * (u + g - big_b * u)))
            core = tf.where(raw_u >= tiny,
                            (-math.sqrt(2.0) / scale) * w * d_log_p,
                            tf.zeros_like(x))
            return tf.where(raw_u > _HORSESHOE_TAIL_U, 2.0 / x, core)

        # log(log_term) = log(log_term u) - log u, and log_term u -> g as
        # u -> inf: with u clipped and log u not, this is the far tail too.
        values = _log1p(e) - tf.math.log(log_term * u) + log_u
        return tf.reduce_sum(values), derivative
    return _sum_with_derivative(
        x, terms, factor,
        _constant_sum(x, factor, _horseshoe_log_normalizer(scale)))


def _spike_and_slab_inverse_width(spike_scale, slab_scale):
    """k = sqrt(D / 2), D = 1 / spike_scale^2 - 1 / slab_scale^2, without
    forming either square."""
    ratio = spike_scale / slab_scale
    return math.sqrt(0.5 * (1.0 - ratio) * (1.0 + ratio)) / spike_scale


def spike_and_slab_negative_log_prob_sum(x, spike_scale, slab_scale,
                                         slab_probability, factor=1.0):
    """-factor sum(spike_and_slab_log_prob(x, ...)), derivative written out.

    With D = 1 / spike_scale^2 - 1 / slab_scale^2 and
    t(x) = log((1 - p) slab_scale / (p spike_scale)) - D x^2 / 2 (the log
    odds of the spike against the slab at x):

        -log p(x) = x^2 / (2 slab_scale^2) - softplus(t(x)) + c
        d(-log p)/dx = x (1 / slab_scale^2 + D sigmoid(t(x)))
    """
    slab_precision = _inverse_square(slab_scale)
    log_odds = (math.log1p(-slab_probability) - math.log(slab_probability)
                + math.log(slab_scale) - math.log(spike_scale))
    constant = (-math.log(slab_probability) + math.log(slab_scale)
                + _HALF_LOG_TWO_PI)

    # D x^2 / 2 = (k x)^2 with k = sqrt(D / 2), which fits float32 even when
    # D does not (a spike_scale below 1e-19).
    k = _spike_and_slab_inverse_width(spike_scale, slab_scale)
    d = 2.0 * k * k

    def terms(x):
        kx = x * k
        t = log_odds - tf.square(kx)
        if log_odds > _EXP_IS_SAFE_BELOW:
            softplus = tf.math.softplus(t)

            def sigmoid():
                return tf.sigmoid(t)
        else:
            # t <= log_odds, so exp(t) is finite: one exp gives softplus and
            # sigmoid (Eigen's own are slow on CPU). Not log1p_sum: XLA would
            # compute the exp anew in each of its two reductions (measured
            # 1.2x slower).
            e = tf.exp(t)
            softplus = _log1p(e)

            def sigmoid():
                return e / (1.0 + e)

        def derivative():
            if d < np.finfo(x.dtype.as_numpy_dtype).max:
                return x * (slab_precision + d * sigmoid())
            # D x = 2 k (k x); where that overflows, sigmoid(t) is 0.
            return slab_precision * x + tf.math.multiply_no_nan(
                (2.0 * k) * kx, sigmoid())

        slab = (0.5 * slab_precision) * tf.square(x)
        return tf.reduce_sum(slab - softplus), derivative
    return _sum_with_derivative(x, terms, factor,
                                _constant_sum(x, factor, constant))


def normal_kl(loc, log_scale, prior_loc, prior_scale):
    """Elementwise KL(N(loc, exp(log_scale)) || N(prior_loc, prior_scale)).

    Written as TFP's `kl_divergence` of two Normals:
    ((loc - prior_loc) / prior_scale)^2 / 2 + expm1(2 d) / 2 - d,
    with d = log_scale - log(prior_scale).
    """
    d = log_scale - math.log(prior_scale)
    return (0.5 * tf.square((loc - prior_loc) * (1.0 / prior_scale))
            + 0.5 * tf.math.expm1(2.0 * d) - d)


class _Prior(base.Regularizer):
    """weight * -sum_i log_prob(w_i) / num_examples; subclasses give _log_prob.

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
        span = _normal_span(dtype)
        for argument, formula, value in self._constants():
            if not _is_normal(value, dtype):
                yield (argument, f"{formula} {span}",
                       f" ({formula} = {value:.3g})")
        for argument, value in self._locations():
            if value != 0 and not _is_normal(value, dtype):
                yield argument, f"{argument} = 0 or {span}", ""

    def _check_constants(self, dtype, constructing=False):
        for argument, requirement, detail in self._requirements(dtype):
            received = f"{argument}={getattr(self, argument)!r}"
            if constructing:
                raise ValueError(
                    f"Invalid value for argument `{argument}`. Expected "
                    f"{requirement}{detail}. Received: {received}")
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
        return factor * -tf.reduce_sum(self._log_prob(x))

    def penalty(self, x):
        return self.negative_log_prob_sum(x, self._factor(x.dtype))


class _LocationScalePrior(_Prior):
    """A prior with a `scale` > 0 and a `loc`."""

    def __init__(self, scale=1.0, loc=0.0, num_examples=1, weight=1.0):
        self.scale = validation.positive("scale", scale)
        self.loc = validation.real("loc", loc)
        self._set_scaling(num_examples, weight)

    def _locations(self):
        return (("loc", self.loc),)


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
      num_examples: int in [1, 2**53], the training-set size (see the module docstring).
      weight: Non-negative finite float or `tfreg.Strength`, a multiplier
        of the penalty (1 is the prior; anneal it for KL warm-up).

    >>> import tensorflow as tf, tfreg
    >>> prior = tfreg.priors.Normal(scale=1.0)
    >>> round(float(prior(tf.constant([0.0, 2.0]))), 4)  # 2 + 2 log(2 pi) / 2
    3.8379
    """

    _traced_once_per_shape = True

    def _constants(self):
        return (("scale", "1 / (2 scale^2)",
                 0.5 * _inverse_square(self.scale)),)

    def _log_prob(self, x):
        return normal_log_prob(x, self.loc, self.scale)

    def _negative_log_prob_sum(self, x, factor):
        constant = math.log(self.scale) + _HALF_LOG_TWO_PI
        return (penalties.l2(_centered(x, self.loc),
                             factor * (0.5 * _inverse_square(self.scale)))
                + _constant_sum(x, factor, constant))


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
      num_examples: int in [1, 2**53], the training-set size.
      weight: Non-negative finite float or `tfreg.Strength`, a multiplier
        of the penalty (1 is the prior; anneal it for KL warm-up).
    """

    _traced_once_per_shape = True

    def _constants(self):
        return (("scale", "1 / scale", 1.0 / self.scale),)

    def _log_prob(self, x):
        return laplace_log_prob(x, self.loc, self.scale)

    def _negative_log_prob_sum(self, x, factor):
        constant = math.log(2.0) + math.log(self.scale)
        return (penalties.l1(_centered(x, self.loc),
                             factor * (1.0 / self.scale))
                + _constant_sum(x, factor, constant))


@serialization.register
class StudentT(_Prior):
    """Student's t prior: heavy tails, so large weights are barely penalized.

    Mathematical details:

        penalty(w) = sum_i [(df + 1) / 2 * log1p(((w_i - loc) / scale)^2 / df)
                            + log_normalizer] / num_examples
        log_normalizer = lgamma(df / 2) - lgamma((df + 1) / 2)
                         + log(df pi) / 2 + log(scale)

    Equals `-sum(tfd.StudentT(df, loc, scale).log_prob(w)) / num_examples`,
    and unlike TFP it accepts bfloat16 weights.

    Args:
      df: Positive finite float, the degrees of freedom.
      scale: Positive finite float.
      loc: Finite float.
      num_examples: int in [1, 2**53], the training-set size.
      weight: Non-negative finite float or `tfreg.Strength`, a multiplier
        of the penalty (1 is the prior; anneal it for KL warm-up).
    """

    _traced_once_per_shape = True

    def __init__(self, df=3.0, scale=1.0, loc=0.0, num_examples=1,
                 weight=1.0):
        self.df = validation.positive("df", df)
        self.scale = validation.positive("scale", scale)
        self.loc = validation.real("loc", loc)
        self._set_scaling(num_examples, weight)

    def _constants(self):
        k = _student_t_inverse_width(self.df, self.scale)
        return (("scale", "1 / (sqrt(df) scale)", k),
                ("scale", "2 / (sqrt(df) scale)", 2.0 * k))

    def _locations(self):
        return (("loc", self.loc),)

    def _requirements(self, dtype):
        # Where ((w - loc) / scale)^2 / df falls below the smallest normal
        # number it is flushed to 0, dropping (df + 1) / 2 times its log1p:
        # up to df tiny / 2 per weight, which must stay below epsilon / 2.
        tiny, _ = _normal_range(dtype)
        largest_df = _epsilon(dtype) / tiny
        if not self.df <= largest_df:
            yield ("df", f"df <= {largest_df:.3g} in {dtype.name} (beyond "
                   "it ((w - loc) / scale)^2 / df underflows where its "
                   "log1p times (df + 1) / 2 still counts)", "")
        yield from super()._requirements(dtype)

    def _log_prob(self, x):
        return student_t_log_prob(x, self.df, self.loc, self.scale)

    def _negative_log_prob_sum(self, x, factor):
        df, scale = self.df, self.scale
        return log1p_square_sum(
            x, self.loc, _student_t_inverse_width(df, scale),
            factor * (0.5 * (df + 1.0)),
            _constant_sum(x, factor, _student_t_log_normalizer(df, scale)))


@serialization.register
class Cauchy(_LocationScalePrior):
    """Cauchy prior (Student's t with df=1).

    Mathematical details:

        penalty(w) = sum_i [log1p(((w_i - loc) / scale)^2) + log(pi scale)]
                     / num_examples

    Equals `-sum(tfd.Cauchy(loc, scale).log_prob(w)) / num_examples`.

    Args:
      scale: Positive finite float.
      loc: Finite float.
      num_examples: int in [1, 2**53], the training-set size.
      weight: Non-negative finite float or `tfreg.Strength`, a multiplier
        of the penalty (1 is the prior; anneal it for KL warm-up).
    """

    _traced_once_per_shape = True

    def _constants(self):
        return (("scale", "1 / scale", 1.0 / self.scale),
                ("scale", "2 / scale", 2.0 / self.scale))

    def _log_prob(self, x):
        return cauchy_log_prob(x, self.loc, self.scale)

    def _negative_log_prob_sum(self, x, factor):
        constant = math.log(math.pi) + math.log(self.scale)
        return log1p_square_sum(x, self.loc, 1.0 / self.scale, factor,
                                _constant_sum(x, factor, constant))


@serialization.register
class Horseshoe(_Prior):
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
    of the formula above), so it stays finite where u overflows float32
    (|w / scale| > 2.6e19, e.g. scale=1e-25 and |w| ~ 1; TFP: NaN). Calling
    it raises a ValueError when 1 / scale is not a normal number of the
    weights' float type (float32: scale outside [4.2e-39, 6.0e37]).
    For float16 weights TFP's value is inf and its gradient NaN when
    |w| <= 1e-3; here the gradient is finite wherever the exact gradient fits
    in float16 (|w / scale| >= 2e-6) and 0 at w = 0.

    Args:
      scale: Positive finite float, the global shrinkage tau.
      num_examples: int in [1, 2**53], the training-set size.
      weight: Non-negative finite float or `tfreg.Strength`, a multiplier
        of the penalty (1 is the prior; anneal it for KL warm-up).

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
        return horseshoe_log_prob(x, self.scale)

    def _negative_log_prob_sum(self, x, factor):
        return horseshoe_negative_log_prob_sum(x, self.scale, factor)


@serialization.register
class SpikeAndSlab(_Prior):
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
      num_examples: int in [1, 2**53], the training-set size.
      weight: Non-negative finite float or `tfreg.Strength`, a multiplier
        of the penalty (1 is the prior; anneal it for KL warm-up).

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
            raise ValueError(
                "Invalid value for argument `spike_scale`. Expected a float < "
                f"slab_scale={self.slab_scale!r}. "
                f"Received: spike_scale={spike_scale!r}")
        self.slab_probability = validation.open_unit(
            "slab_probability", slab_probability)
        self._set_scaling(num_examples, weight)

    def _constants(self):
        k = _spike_and_slab_inverse_width(self.spike_scale, self.slab_scale)
        slab_precision = _inverse_square(self.slab_scale)
        difference = "1 / spike_scale^2 - 1 / slab_scale^2"
        return (("spike_scale", f"sqrt(({difference}) / 2)", k),
                ("spike_scale", f"sqrt(2 ({difference}))", 2.0 * k),
                ("slab_scale", "1 / (2 slab_scale^2)", 0.5 * slab_precision),
                ("slab_scale", "1 / slab_scale^2", slab_precision))

    def _log_prob(self, x):
        return spike_and_slab_log_prob(x, self.spike_scale, self.slab_scale,
                                       self.slab_probability)

    def _negative_log_prob_sum(self, x, factor):
        return spike_and_slab_negative_log_prob_sum(
            x, self.spike_scale, self.slab_scale, self.slab_probability,
            factor)


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
    return ValueError(
        f"Invalid value for argument `distribution`. Expected {expected}. "
        f"Received: distribution={distribution!r}")


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
class Prior(_Prior):
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
      num_examples: int in [1, 2**53], the training-set size.
      weight: Non-negative finite float or `tfreg.Strength`, a multiplier
        of the penalty (1 is the prior; anneal it for KL warm-up).

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
            if value != 0 and not _is_normal(value, dtype):
                yield ("distribution",
                       f"parameter {key!r} = 0 or {_normal_span(dtype)}",
                       f" ({key} = {value!r})")

    def _log_prob(self, x):
        return self._build(_distributions(), x.dtype).log_prob(x)


@serialization.register
class MeanFieldKL(_Prior):
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
    negative rho. Equals TFP's `tfd.kl_divergence(tfd.Normal(mean, scale),
    tfd.Normal(prior_loc, prior_scale))` summed and scaled.

    Args:
      prior_scale: Positive finite float.
      prior_loc: Finite float.
      num_examples: int in [1, 2**53], the training-set size.
      weight: Non-negative finite float or `tfreg.Strength`, a multiplier
        of the penalty (1 is the prior; anneal it for KL warm-up).
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
        mean, rho = x[0], x[1]
        log_scale = rho if self.parameterization == "log" else _log_softplus(rho)
        kl = normal_kl(mean, log_scale, self.prior_loc, self.prior_scale)
        return self._factor(x.dtype) * tf.reduce_sum(kl)
