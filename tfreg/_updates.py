"""The update math of `tfreg.optimizers.Regularized`.

Which update each penalty takes (`plan`), the step sizes of the wrapped
optimizer's own metric (`Metric`: the one place that reads its state) and
the new values of the weights (`new_value`, `coupled_values`).

Mathematical details:

An adaptive optimizer steps w <- w - eta D^-1 m with a diagonal
preconditioner D (Adam: D = sqrt(v_hat) + eps). Its proximal step takes
the prox in the same metric (ProxGen, Yun, Lozano and Yang, NeurIPS 2021;
TensorFlow's ProximalAdagrad and FTRL-Proximal):

    w <- argmin_u  R(u) + ||u - v||_D^2 / (2 eta),   v = step(w)

For an elementwise R that is the scalar prox per weight with its own step
eta_i = eta / D_i (L1: soft threshold by eta_i l1). A group penalty has no
closed form in a diagonal metric; it gets one scalar per group, the mean of
D over the group (the isotropic metric nearest to D there), i.e. the step
eta_g = eta / mean_g(D_i), so whole groups still land on exactly 0 (block
soft threshold by eta_g). NuclearNorm likewise takes one scalar per kernel.
SGD (with or without momentum) has D = 1: plain ISTA.

A weight that both an elementwise R and a coupled group penalty G cover
takes the prox of R + G by composition (`proximal.prox_parts`): R's soft
threshold, G's group shrink of the result, then R's ridge scaling; its
decoupled step is w - eta (grad R(w) + grad G(w)).
"""

import collections
import warnings

import tensorflow as tf

from tfreg import _keras
from tfreg import proximal

__all__ = ["AUTODIFF", "GRADIENT", "METRICS", "Metric", "PROX", "Update",
           "apply_decoupled", "apply_prox", "assign_all", "composes",
           "coupled_values", "new_value", "plan", "read", "spanned",
           "tf_variable"]

keras = _keras.keras
METRICS = ("adaptive", "scalar")
# Updates: after the wrapped step (closed-form prox), or before it (the
# decoupled step, with a closed-form gradient or by autodiff).
PROX, GRADIENT, AUTODIFF = "prox", "gradient", "autodiff"

Update = collections.namedtuple("Update", ["variable", "regularizer", "kind"])


def plan(entries, mode):
    """One `Update` per entry (anything with `variable`, `regularizer`):
    its prox in proximal mode where it has a closed form, else its
    decoupled step."""
    updates = []
    for entry in entries:
        regularizer = entry.regularizer
        if mode == "proximal" and proximal.has_prox(regularizer):
            kind = PROX
        elif proximal.has_gradient(regularizer):
            kind = GRADIENT
        else:
            kind = AUTODIFF
        updates.append(Update(entry.variable, regularizer, kind))
    return updates


def tf_variable(variable):
    """The tf.Variable behind a Keras 3 variable (what tf.distribute updates)."""
    if not _keras.LEGACY and isinstance(variable, keras.Variable):
        return variable.value
    return variable


def read(variable):
    return tf.convert_to_tensor(tf_variable(variable))


# The wrapped optimizer's state. Neither generation has a public API for a
# variable's slots; these are their own update steps' reads.


def _slot(optimizer, name, variable):
    # pylint: disable=protected-access
    if _keras.LEGACY:
        index = optimizer._index_dict[optimizer._var_key(variable)]
    else:
        index = optimizer._get_variable_index(variable)
    return read(getattr(optimizer, name)[index])


def _bias_correction(optimizer, beta, dtype):
    """1 - beta^t after the wrapped step (t = its `iterations`, incremented)."""
    steps = tf.cast(optimizer.iterations, dtype)
    return 1.0 - tf.pow(tf.constant(float(beta), dtype), steps)


# D = (B + shift) / divisor per weight, B a tensor of the variable's shape,
# shift and divisor scalars (None: none). A group's mean of D is then
# (mean(B) + shift) / divisor: one reduction of B, e.g. Adam's sqrt(v),
# which its own update reads as well.
Denominator = collections.namedtuple("Denominator",
                                     ["base", "shift", "divisor"])


def _adagrad(optimizer, variable):
    return Denominator(tf.sqrt(_slot(optimizer, "_accumulators", variable)
                               + optimizer.epsilon), None, None)


def _rmsprop(optimizer, variable):
    second = _slot(optimizer, "_velocities", variable)
    if optimizer.centered:
        second -= tf.square(_slot(optimizer, "_average_gradients", variable))
    return Denominator(tf.sqrt(second + optimizer.epsilon), None, None)


def _adam(optimizer, variable):
    """Adam's w -= lr sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(v) + eps) is
    lr m_hat / D with D = (sqrt(v) + eps) / sqrt(1 - b2^t)."""
    second = _slot(optimizer, "_velocity_hats" if optimizer.amsgrad
                   else "_velocities", variable)
    correction = tf.sqrt(_bias_correction(optimizer, optimizer.beta_2,
                                          second.dtype))
    epsilon = optimizer.epsilon
    if getattr(optimizer, "adaptive_epsilon", False):
        epsilon = epsilon * correction
    return Denominator(tf.sqrt(second), epsilon, correction)


def _nadam(optimizer, variable):
    """D = sqrt(v / (1 - b2^t)) + eps = (sqrt(v) + eps c) / c with
    c = sqrt(1 - b2^t)."""
    second = _slot(optimizer, "_velocities", variable)
    correction = tf.sqrt(_bias_correction(optimizer, optimizer.beta_2,
                                          second.dtype))
    return Denominator(tf.sqrt(second), optimizer.epsilon * correction,
                       correction)


def _adamax(optimizer, variable):
    return Denominator(_slot(optimizer, "_u", variable), optimizer.epsilon,
                       None)


_DENOMINATORS = {"Adagrad": _adagrad, "RMSprop": _rmsprop, "Adam": _adam,
                 "AdamW": _adam, "Nadam": _nadam, "Adamax": _adamax}


def _denominator(optimizer):
    """D's function (optimizer, variable) -> `Denominator`; None for SGD
    (D = 1)."""
    if type(optimizer) is keras.optimizers.SGD:  # pylint: disable=unidiomatic-typecheck
        return None
    for name, function in _DENOMINATORS.items():
        # The exact class: a subclass may step differently.
        if type(optimizer) is getattr(keras.optimizers, name):  # pylint: disable=unidiomatic-typecheck
            return function
    raise LookupError(type(optimizer).__name__)


def _value(denominator, base):
    """(base + shift) / divisor, in base's dtype."""
    if denominator.shift is not None:
        base = base + tf.cast(denominator.shift, base.dtype)
    if denominator.divisor is not None:
        base = base / tf.cast(denominator.divisor, base.dtype)
    return base


class Metric:
    """The step sizes of a proximal update in the wrapped optimizer's metric.

    `choice` "adaptive": eta / D per weight for the optimizers above, eta
    for SGD and, with one warning naming it, for an optimizer whose metric
    is not known here; "scalar": eta everywhere.
    """

    def __init__(self, optimizer, choice):
        self._optimizer = optimizer
        self._denominator = None
        if choice == "adaptive":
            try:
                self._denominator = _denominator(optimizer)
            except LookupError:
                warnings.warn(
                    f"tfreg.optimizers.Regularized takes the proximal step "
                    f"of {type(optimizer).__name__} with the scalar learning "
                    "rate: its per-weight metric is not known (known: SGD, "
                    f"{', '.join(_DENOMINATORS)}). Pass metric='scalar' to "
                    "choose it explicitly.", stacklevel=3)

    @property
    def adaptive(self):
        return self._denominator is not None

    def steps(self, variable, rate, axes=None):
        """eta_i = eta / D_i of `variable` (a tensor of its shape), or
        `rate` itself in the scalar metric.

        With `axes`, one step per group: eta / mean(D) over `axes` (kept,
        of size 1), the harmonic mean of the group's eta_i.
        """
        if self._denominator is None:
            return rate
        denominator = self._denominator(self._optimizer, variable)
        base = denominator.base
        if axes is not None:
            base = tf.reduce_mean(base, axis=axes, keepdims=True)
        return tf.cast(rate, base.dtype) / _value(denominator, base)


def new_value(update, rate, metric):
    """The value of `update.variable` after its update of step `rate`."""
    x = read(update.variable)
    regularizer = update.regularizer
    if update.kind == PROX:
        return proximal.prox(regularizer, x, _prox_steps(update, x, rate,
                                                         metric))
    if update.kind == GRADIENT:
        gradient = proximal.gradient(regularizer, x)
    else:
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = regularizer(x)
        gradient = tf.cast(tape.gradient(value, x), x.dtype)
    return x - tf.cast(rate, x.dtype) * gradient


def _prox_steps(update, x, rate, metric):
    """The steps of `update`'s prox on `x`: per weight, or for a group
    penalty per group (see the module docstring)."""
    return metric.steps(update.variable, rate, proximal.group_axes(
        update.regularizer, x.shape.rank))


def _harmonic_mean(variables, rate, metric):
    """eta / mean(D) over all entries of `variables`, from each variable's
    own eta / mean(D) (`Metric.steps` over all its axes)."""
    count, total = 0, 0.0
    for variable in variables:
        shape = tf_variable(variable).shape
        step = metric.steps(variable, rate, list(range(shape.rank)))
        count += shape.num_elements()
        total += shape.num_elements() / tf.reshape(
            tf.cast(step, tf.float32), [])
    return count / total


def coupled_values(penalty, rate, metric):
    """The values of a coupled penalty's variables after its prox:
    `penalty.proximal_update(step)`, where `step` is one tensor of step
    sizes per variable if the penalty takes them (`per_weight_steps =
    True`), else one scalar (eta / the mean of D over all its variables).
    """
    variables = list(penalty.variables)
    step = rate
    if getattr(penalty, "per_weight_steps", False) and metric.adaptive:
        step = [tf.cast(metric.steps(variable, rate), tf.float32)
                for variable in variables]
    elif metric.adaptive:
        step = _harmonic_mean(variables, rate, metric)
    return variables, _one_per_variable(
        penalty, list(penalty.proximal_update(step)))


def _coupled_gradients(penalty):
    """The coupled penalty's variables and its gradients, one per variable."""
    return list(penalty.variables), _one_per_variable(
        penalty, list(penalty.gradients()))


def _one_per_variable(penalty, values):
    if len(values) != len(penalty.variables):
        raise ValueError(
            f"Expected {len(penalty.variables)} values from the coupled "
            f"penalty {penalty!r}, one per variable. Received: {len(values)}")
    return values


def spanned(penalties):
    """The ids of the tf.Variables that the coupled `penalties` span."""
    return {id(tf_variable(variable)) for penalty in penalties
            for variable in penalty.variables}


def composes(update, spanned_ids):
    """False when `update` is a prox with no exact composition with the
    coupled penalty spanning its variable (in `spanned_ids`)."""
    return (update.kind != PROX
            or id(tf_variable(update.variable)) not in spanned_ids
            or proximal.composes_with_groups(update.regularizer))


def apply_prox(updates, penalties, rate, metric):
    """Assigns the prox of every update (all PROX) and of the coupled
    `penalties`, one after the other, their composition on a weight that
    both cover (see the module docstring)."""
    spanned_ids = spanned(penalties)
    variables, values, scaled = [], [], []
    for update in updates:
        x = read(update.variable)
        variables.append(update.variable)
        if id(tf_variable(update.variable)) in spanned_ids:
            shrunk, scale = proximal.prox_parts(
                update.regularizer, x, metric.steps(update.variable, rate))
            values.append(shrunk)
            if not isinstance(scale, float):
                scaled.append((update.variable, scale))
        else:
            values.append(proximal.prox(update.regularizer, x, _prox_steps(
                update, x, rate, metric)))
    if variables:
        assign_all(variables, values)
    for penalty in penalties:
        assign_all(*coupled_values(penalty, rate, metric))
    if scaled:
        assign_all([variable for variable, _ in scaled],
                   [read(variable) * tf.cast(scale, variable.dtype)
                    for variable, scale in scaled])


def apply_decoupled(updates, penalties, rate, metric):
    """Assigns w - eta grad R(w) of every update (no PROX) plus the coupled
    `penalties`' -eta grad G(w), all from the weights before the step."""
    variables, values, index = [], [], {}
    for update in updates:
        index[id(tf_variable(update.variable))] = len(values)
        variables.append(update.variable)
        values.append(new_value(update, rate, metric))
    for penalty in penalties:
        for variable, gradient in zip(*_coupled_gradients(penalty)):
            key = id(tf_variable(variable))
            if key not in index:
                index[key] = len(values)
                variables.append(variable)
                values.append(read(variable))
            values[index[key]] -= tf.cast(rate, gradient.dtype) * gradient
    if variables:
        assign_all(variables, values)


def assign_all(variables, values):
    """Assigns each value, through the strategy in a replica context."""
    variables = [tf_variable(variable) for variable in variables]

    def assign(variable, value):
        return variable.assign(tf.cast(value, variable.dtype))

    if (not tf.distribute.has_strategy()
            or tf.distribute.in_cross_replica_context()):
        for variable, value in zip(variables, values):
            assign(variable, value)
        return

    def update(distribution, variables, values):
        for variable, value in zip(variables, values):
            distribution.extended.update(variable, assign, args=(value,),
                                         group=False)

    tf.__internal__.distribute.interim.maybe_merge_call(
        update, tf.distribute.get_strategy(), variables, values)
