"""Regularization applied by the optimizer: proximal steps and decoupled decay.

`Regularized` wraps any Keras optimizer of the active generation and applies
weight penalties in the update instead of through the loss:

- mode="proximal": after the wrapped optimizer's step,
  w <- prox_{eta R}(w) (`tfreg.proximal`), eta the learning rate of that
  step, taken in the optimizer's own per-weight metric (`tfreg._updates`:
  Adam's thresholds are per weight). Soft thresholding lands weights (L1,
  priors.Laplace) and whole groups (GroupLasso, SparseGroupLasso) on
  exactly 0; NuclearNorm thresholds singular values. A penalty without a
  closed-form prox is applied as in decoupled mode.
- mode="decoupled": w <- w - eta grad R(w) from the weights before the
  wrapped step, as Keras' AdamW applies its decay (not preconditioned):
  `L2(wd / 2)` with Adam is AdamW(weight_decay=wd). Closed-form gradients
  (no penalty value, no log for the priors) where `tfreg.proximal` has
  one, else autodiff of the penalty.

Which penalties: the weight regularizers on the model (kernel_regularizer=
..., `tfreg.apply`), which leave the loss (no double counting), plus an
optional `regularizer` selected by path (nothing attached to the layers:
for pretrained models whose configs should stay as they are), plus
coupled `penalties` spanning several variables. Activity regularizers stay
in the loss. The handled penalties stay visible: `tfreg_penalties()` lists
them and `tfreg.summary`, `PenaltyLogger` and `History` show their values.

This module binds the penalties to the optimizer (which weight carries
which, taken from the model or selected by path); `tfreg._updates` holds
the update math.

Finding the model's regularizers: Keras 3 keeps a weight's regularizer on
the variable, so the optimizer takes them when it is built (`fit` builds it
before tracing the step; loading a compiled model too). tf_keras keeps them
in the layers, out of the optimizer's reach: pass `model=` (the same code
works in both generations) or call `tfreg.optimizers.bind(model)`, also
after loading a model saved with this optimizer.
"""

import collections
import copy
import warnings
import weakref

import tensorflow as tf

from tfreg import _checks
from tfreg import _keras
from tfreg import _updates
from tfreg import serialization
from tfreg import validation
from tfreg import walk

__all__ = ["METRICS", "MODES", "Regularized", "bind"]

keras = _keras.keras
MODES = ("proximal", "decoupled")
METRICS = _updates.METRICS
# The "layer" of a Keras 3 weight whose regularizer was taken off the variable
# itself (`walk.set_regularizer` needs no layer there).
_ON_VARIABLE = "variable"
_CONFIG_KEYS = frozenset({"name", "optimizer", "mode", "metric",
                          "regularizer", "include", "exclude"})

# A penalty the optimizer applies: `layer` the one that held it (None when
# given to the optimizer), `path` the weight's path.
_Entry = collections.namedtuple(
    "_Entry", ["layer", "variable", "regularizer", "path"])


class _State:
    """What the optimizer regularizes; a plain object, so that checkpoints
    do not track the model's layers through the optimizer."""

    def __init__(self):
        self.model = None
        self.var_list = None
        # True while the step itself builds the optimizer (Keras 3).
        self.applying = False
        # One `_Entry` per weight.
        self.entries = []
        # One `_Entry` per coupled penalty and place it was found: layer
        # None for those given as `penalties`, else where the model held it
        # (as the regularizer of `variable`, its anchor).
        self.coupled = []
        # One `_updates.Update` per entry.
        self.updates = []


def _variable_path(variable):
    """The variable's own path: Keras 3's `path`, tf_keras' name sans ':0'."""
    path = getattr(variable, "path", None) if not _keras.LEGACY else None
    return path or variable.name.split(":")[0]


def _is_coupled(penalty):
    """Follows the coupled-penalty protocol (see docs/optimizers.md)."""
    variables = getattr(penalty, "variables", None)
    return bool(isinstance(variables, (tuple, list)) and variables
                and callable(getattr(penalty, "proximal_update", None))
                and callable(getattr(penalty, "gradients", None)))


def _check_penalty_object(index, penalty):
    if not _is_coupled(penalty):
        raise TypeError(validation.message(
            f"penalties[{index}]", penalty,
            "an object with a non-empty tuple `variables` and methods "
            "`proximal_update(step)` and `gradients()`"))
    return penalty


def _unbound_message(reason):
    return (
        f"The optimizer was not given the model ({reason}): pass "
        "`model=` to tfreg.optimizers.Regularized, or call "
        "`tfreg.optimizers.bind(model)` after compiling (and, under "
        "tf_keras, after loading a model saved with this optimizer), "
        "before training. Received: model=None")


def _delegated(name):
    """A property that reads and sets the wrapped optimizer's `name`."""
    return property(lambda self: getattr(self.optimizer, name),
                    lambda self, value: setattr(self.optimizer, name, value))


# Keras 3's optimizer base, or tf_keras' (the one its LossScaleOptimizer wraps).
_Base = keras.optimizers.Optimizer


@keras.saving.register_keras_serializable(package="tfreg")
class Regularized(_Base):
    """Wraps a Keras optimizer and applies weight penalties in its update.

    Mathematical details (eta: the wrapped optimizer's learning rate of the
    step, schedules included; a `tfreg.Strength` is read on every step):

        proximal:   w <- prox^D_{eta R}(step(w)),
                    prox^D_{eta R}(v) = argmin_w R(w) + ||w - v||_D^2 / (2 eta)
        decoupled:  w <- step(w) - eta grad R(w)

    with step() the wrapped optimizer's update from the loss's gradient,
    which no longer includes R, and D its own diagonal preconditioner
    (metric="adaptive"; Adam: D = sqrt(v_hat) + eps; SGD: D = 1): an
    elementwise R is thresholded per weight by eta / D_i, a group by eta
    over the group's mean D (`tfreg._updates`). Closed forms:
    `tfreg.proximal`. Under
    mixed_float16 Keras wraps this optimizer in a LossScaleOptimizer, which
    hands it unscaled gradients and skips the whole update (penalties
    included) on a non-finite one.

    Args:
      optimizer: The Keras optimizer (of the active generation) that takes
        the loss's gradient step; clipping and schedules stay on it.
      mode: "proximal" or "decoupled".
      metric: The proximal step's metric: "adaptive" (the wrapped
        optimizer's own per-weight step sizes for Adagrad, RMSprop, Adam,
        AdamW, Nadam and Adamax; SGD's scalar step; any other optimizer the
        scalar step, with a warning) or "scalar" (eta for every weight).
      regularizer: Optional regularizer applied through the optimizer to
        the trainable weights that `include`/`exclude` select and that have
        no regularizer of their own on the model. Nothing is attached to
        the layers; it is saved in this optimizer's config. On a weight a
        coupled penalty also covers, both apply (`tfreg._updates`); in
        proximal mode a closed-form prox other than l1 |w| + l2 w^2 there
        raises ValueError when the optimizer is built.
      include: None (kernels and embeddings: a last path component ending
        in "kernel", or "embeddings") or a regular expression searched in
        the variable's path (Keras 3 `variable.path`, tf_keras the
        variable's name without ":0"). Saved in the config, so searched in
        linear time: at most 256 characters, no backreferences,
        lookarounds, atomic groups, possessive quantifiers or flags.
      exclude: None or such a regular expression; matching weights are
        skipped.
      penalties: Optional list of coupled penalties spanning several
        variables (see docs/optimizers.md); not part of the config.
      model: Optional model whose weight regularizers move into the
        optimizer (`bind`); needed under tf_keras.
      name: Optional name.
    """

    def __init__(self, optimizer, mode="proximal", regularizer=None,
                 include=None, exclude=None, penalties=None, model=None,
                 name=None, metric="adaptive"):
        if isinstance(optimizer, Regularized) or not isinstance(
                optimizer, _Base):
            raise TypeError(validation.message(
                "optimizer", optimizer, "an optimizer of the active Keras "
                f"generation ({_Base.__module__}.{_Base.__name__}), not "
                "itself Regularized"))
        mode = validation.choice("mode", mode, MODES)
        metric = validation.choice("metric", metric, METRICS)
        regularizer = serialization.get(regularizer)
        if regularizer is not None:
            # Saved in the config: what is accepted here must load again.
            serialization.check_reloadable("regularizer", regularizer)
        walk.selection(include, exclude, predicates=False, linear=True)
        if penalties is not None and not isinstance(penalties, (list, tuple)):
            raise TypeError(validation.message(
                "penalties", penalties, "None or a list of coupled penalties"))
        penalties = [_check_penalty_object(index, penalty)
                     for index, penalty in enumerate(penalties or ())]
        if _keras.LEGACY:
            super().__init__(name=name or "Regularized")
        else:
            super().__init__(learning_rate=0.0, name=name)
        self.optimizer = optimizer
        self.mode = mode
        self.metric = metric
        self._metric = _updates.Metric(optimizer, metric)
        self.regularizer = regularizer
        self.include = include
        self.exclude = exclude
        self._state = _State()
        self._state.coupled = [_Entry(None, penalty.variables[0], penalty,
                                      None) for penalty in penalties]
        if model is not None:
            self.bind(model)

    # The wrapped optimizer's step counter and learning rate are this one's.
    iterations = _delegated("iterations")
    learning_rate = _delegated("learning_rate")

    @property
    def variables(self):
        if _keras.LEGACY:
            return self.optimizer.variables
        return self._variables + self.optimizer.variables

    @property
    def penalties(self):
        """The coupled penalties applied here (a tuple): those given as
        `penalties`, then those taken from the model."""
        found = {}
        for entry in self._state.coupled:
            found.setdefault(id(entry.regularizer), entry.regularizer)
        return tuple(found.values())

    def _step_size(self):
        """The learning rate of the step about to run, as float32."""
        inner = self.optimizer
        schedule = walk.learning_rate_schedule(inner)
        if _keras.LEGACY and schedule is not None:
            # tf_keras updates `learning_rate` only inside apply_gradients.
            return tf.cast(schedule(inner.iterations), tf.float32)
        return tf.cast(inner.learning_rate, tf.float32)

    def bind(self, model):
        """Moves `model`'s weight regularizers into this optimizer, now.

        Each regularized trainable weight's penalty leaves `model.losses`
        and is applied in the update; a regularizer that follows the
        coupled-penalty protocol (`tfreg.apply_groups(..., via="loss")`)
        is applied as one coupled penalty over all its variables, as if
        given in `penalties`. The layers' configs are left alone,
        so saved models keep them. Weights the optimizer does not update
        (non-trainable ones under tf_keras) keep theirs in the loss, with a
        warning. A model already trained traces its steps again. Returns
        this optimizer.
        """
        if not isinstance(model, keras.Model):
            raise TypeError(validation.message(
                "model", model, "a Keras model of the active generation"))
        self._state.model = weakref.ref(model)
        state = self._state
        trainable = {id(variable) for variable in model.trainable_variables}
        taken = {id(entry.variable) for entry in state.entries}
        left = []
        for weight in walk.regularized_weights(model):
            coupled = _is_coupled(weight.regularizer)
            if weight.via != walk.LOSS or (
                    not coupled and id(weight.variable) in taken):
                continue
            if id(weight.variable) not in trainable:
                left.append(weight.path)
                continue
            walk.set_regularizer(weight.layer, weight.variable, None)
            entry = _Entry(weight.layer, weight.variable, weight.regularizer,
                           weight.path)
            if coupled:
                state.coupled.append(entry)
            else:
                state.entries.append(entry)
                taken.add(id(weight.variable))
        if left:
            warnings.warn(
                f"The regularizers of {sorted(left)} stay in the loss: the "
                "optimizer does not update those weights (not trainable).",
                stacklevel=2)
        walk.drop_compiled_functions(model)
        if state.var_list is not None:
            self._select()
        return self

    def tfreg_penalties(self):
        """(variable, regularizer) of every weight penalty applied here.

        A coupled penalty is listed once, with its anchor variable (where
        the model held it, else its first variable); called with it, it
        gives the whole coupled penalty.
        """
        pairs = [(entry.variable, entry.regularizer)
                 for entry in self._state.entries]
        seen = set()
        for entry in self._state.coupled:
            if id(entry.regularizer) not in seen:
                seen.add(id(entry.regularizer))
                pairs.append((entry.variable, entry.regularizer))
        return pairs

    def release(self):
        """Puts the model's regularizers back in the loss; returns their
        paths. Use it before compiling the model with another optimizer."""
        released = []
        state = self._state
        for entry in state.entries + state.coupled:
            if entry.layer is not None:
                walk.set_regularizer(entry.layer, entry.variable,
                                     entry.regularizer)
                released.append(entry.path)
        state.entries = [entry for entry in state.entries
                         if entry.layer is None]
        state.coupled = [entry for entry in state.coupled
                         if entry.layer is None]
        state.updates = _updates.plan(state.entries, self.mode)
        model = self._model()
        if model is not None:
            walk.drop_compiled_functions(model)
        return released

    def _model(self):
        return self._state.model() if self._state.model else None

    def build(self, var_list):
        if self._state.var_list is not None:
            return
        var_list = list(var_list)
        self.optimizer.build(var_list)
        if _keras.LEGACY:
            self._build_index_dict(var_list)
            self._built = True
        else:
            super().build(var_list)
        self._state.var_list = var_list
        if self._state.model is None and not _keras.LEGACY:
            self._take_from_variables()
        self._select()

    def _take_from_variables(self):
        """Keras 3, unbound: takes the regularizers off the variables.

        Right when built before the step is traced (loading a compiled
        model, `fit` under a distribution strategy, an explicit `build`);
        built by the step itself, the loss already holds them.
        """
        state = self._state
        taken = {id(entry.variable) for entry in state.entries}
        found = []
        for variable in state.var_list:
            # A plain tf.Variable (custom loops) has no `regularizer`.
            regularizer = getattr(variable, "regularizer", None)
            if regularizer is not None and id(variable) not in taken:
                found.append(_Entry(_ON_VARIABLE, variable, regularizer,
                                    _variable_path(variable)))
        if found and state.applying:
            raise ValueError(_unbound_message(
                "the step's loss already holds the regularizers of "
                f"{[entry.path for entry in found]}"))
        for entry in found:
            entry.variable.regularizer = None
            if _is_coupled(entry.regularizer):
                state.coupled.append(entry)
            else:
                state.entries.append(entry)

    def _select(self):
        """Adds `regularizer`'s weights and plans the update."""
        state = self._state
        taken = {id(entry.variable) for entry in state.entries}
        if self.regularizer is not None:
            selected = walk.selection(self.include, self.exclude,
                                      predicates=False, linear=True)
            for variable in state.var_list:
                path = _variable_path(variable)
                if (selected(None, variable, path)
                        and id(variable) not in taken):
                    state.entries.append(_Entry(None, variable,
                                                self.regularizer, path))
                    taken.add(id(variable))
        state.updates = _updates.plan(state.entries, self.mode)
        self._check_composable()

    def _check_composable(self):
        """Refuses a closed-form prox that does not compose exactly with
        the coupled penalty on its weight (only l1 |w| + l2 w^2 does)."""
        spanned_ids = _updates.spanned(self.penalties)
        for entry, update in zip(self._state.entries, self._state.updates):
            if not _updates.composes(update, spanned_ids):
                raise ValueError(validation.message(
                    "regularizer", update.regularizer,
                    "an L1, L2, L1L2, priors.Laplace or priors.Normal "
                    "(loc=0) on a weight that a coupled penalty also covers "
                    "in mode='proximal': the prox of their sum has no exact "
                    "composition otherwise. Use mode='decoupled' or leave "
                    "the weight out (`exclude`)",
                    note=f" on the weight {entry.path!r}"))

    def _check_bound(self):
        if _keras.LEGACY and self._state.model is None:
            raise ValueError(_unbound_message(
                "under tf_keras the layers hold the regularizers, out of an "
                "optimizer's reach"))

    def _regularize(self, rate, kinds):
        """Applies the planned updates of `kinds` and, where the mode puts
        them among those, the coupled penalties; `rate` is eta."""
        updates = [update for update in self._state.updates
                   if update.kind in kinds]
        proximal_mode = self.mode == "proximal"
        prox = _updates.PROX in kinds
        penalties = self.penalties if prox == proximal_mode else ()
        apply = _updates.apply_prox if prox else _updates.apply_decoupled
        apply(updates, penalties, rate, self._metric)

    def _step(self, apply_wrapped):
        """The whole update: decoupled penalties, the wrapped optimizer's
        step (`apply_wrapped()`), then the proximal ones."""
        rate = self._step_size()
        self._regularize(rate, (_updates.GRADIENT, _updates.AUTODIFF))
        result = apply_wrapped()
        self._regularize(rate, (_updates.PROX,))
        return result

    if _keras.LEGACY:
        def apply_gradients(self, grads_and_vars, name=None,
                            skip_gradients_aggregation=False, **kwargs):
            grads_and_vars = list(grads_and_vars)
            with tf.init_scope():
                self.build([variable for _, variable in grads_and_vars])
            self._check_bound()
            return self._step(lambda: self.optimizer.apply_gradients(
                grads_and_vars, name=name,
                skip_gradients_aggregation=skip_gradients_aggregation,
                **kwargs))
    else:
        def apply(self, grads, trainable_variables=None):
            if self._state.var_list is None:
                if trainable_variables is None:
                    raise ValueError(
                        "Expected `trainable_variables` on the first call of "
                        "`apply` (to build the optimizer). Received: "
                        "trainable_variables=None")
                self._state.applying = True
                try:
                    self.build(trainable_variables)
                finally:
                    self._state.applying = False
            self._step(lambda: self.optimizer.apply(grads, trainable_variables))

    def finalize_variable_values(self, var_list):
        self.optimizer.finalize_variable_values(var_list)

    def get_config(self):
        return {
            "name": self.name,
            "optimizer": keras.optimizers.serialize(self.optimizer),
            "mode": self.mode,
            "metric": self.metric,
            "regularizer": (None if self.regularizer is None else
                            serialization.serialize(self.regularizer)),
            "include": self.include,
            "exclude": self.exclude,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        """Rebuilds the optimizer; a bad field raises ValueError with the
        reason (Keras would bury a TypeError in its generic message)."""
        if not isinstance(config, dict):
            raise ValueError(validation.message(
                "config", config, "a dict made by Regularized.get_config"))
        _checks.known_keys(config, sorted(_CONFIG_KEYS),
                           "a tfreg.optimizers.Regularized config")
        # Keras' deserialize edits the config it reads.
        config = copy.deepcopy(config)
        try:
            inner = config.pop("optimizer", None)
            if isinstance(inner, dict):
                if _keras.LEGACY:
                    inner = keras.optimizers.deserialize(
                        inner, custom_objects=custom_objects,
                        use_legacy_optimizer=False)
                else:
                    inner = keras.optimizers.deserialize(
                        inner, custom_objects=custom_objects)
            if not custom_objects:
                return cls(inner, **config)
            # The constructor checks that the regularizer loads again. (A
            # scope replaces the one around it: without custom_objects,
            # that of Keras' loading stays.)
            with keras.saving.custom_object_scope(custom_objects):
                return cls(inner, **config)
        except TypeError as error:
            raise ValueError(
                f"Invalid tfreg.optimizers.Regularized config: {error}"
            ) from None


def _find(model):
    """The `Regularized` optimizer of `model` (inside a loss-scale one)."""
    optimizer = walk.model_optimizer(model)
    if not isinstance(optimizer, Regularized):
        raise ValueError(validation.message(
            "model", getattr(model, "name", model),
            "a model compiled with a tfreg.optimizers.Regularized optimizer",
            note=f" (its optimizer is {getattr(model, 'optimizer', None)!r})"))
    return optimizer


def bind(model):
    """Binds `model`'s `Regularized` optimizer to it (`Regularized.bind`).

    Needed under tf_keras when the optimizer was created without `model=`,
    e.g. by loading a saved model; harmless under Keras 3. Returns the
    optimizer.
    """
    return _find(model).bind(model)
