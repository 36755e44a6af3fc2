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

Every prior takes `num_examples`, the training-set size (an int in
[1, 2**53], default 1), and `weight` (default 1), a multiplier of the penalty
(a non-negative finite float or a `tfreg.Strength`). It is 1 for MAP
training; a `tfreg.Strength` there anneals the prior (KL warm-up) during
training without recompiling.

The constants a penalty applies to the weights (1 / (2 scale^2), 1 / scale,
...) must be normal numbers of the dtype it is computed in: parameters for
which float64 cannot hold one raise a ValueError at construction, and those
float32 cannot hold raise one when the prior is called on weights computed in
float32 (docs/priors.md, "Extreme parameters").
"""

from tfreg.priors._closed_form import Cauchy
from tfreg.priors._closed_form import Horseshoe
from tfreg.priors._closed_form import Laplace
from tfreg.priors._closed_form import MeanFieldKL
from tfreg.priors._closed_form import Normal
from tfreg.priors._closed_form import SpikeAndSlab
from tfreg.priors._closed_form import StudentT
from tfreg.priors._tfp import ALLOWED_DISTRIBUTIONS
from tfreg.priors._tfp import Prior

__all__ = [
    "ALLOWED_DISTRIBUTIONS",
    "Cauchy",
    "Horseshoe",
    "Laplace",
    "MeanFieldKL",
    "Normal",
    "Prior",
    "SpikeAndSlab",
    "StudentT",
]
