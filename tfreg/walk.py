"""Walking a model: its layers, weight paths, regularized weights and losses.

The one module of tfreg that reads Keras internals (those no public API
gives). It is private to tfreg (docs/api.md does not list it), so that it can
follow where each Keras generation keeps things:

- Keras 3 keeps a weight's regularizer on the variable (`variable.regularizer`)
  and computes its penalty whenever `layer.losses` is read, for the model's
  trainable weights only.
- tf_keras keeps one zero-argument callable per regularized weight in each
  layer's callable losses: its own `partial(_loss_for_variable, variable)`,
  whose closure holds the regularizer, or tfreg's `_BoundPenalty`. Every one
  counts in `model.losses`, trainable or not.

A weight's path names it in its model: the labels of the layers from the
model (excluded) down to the layer that owns the weight, then the weight's
label ("inner/dense/kernel"; "dense/kernel" for a layer of the model itself;
"model_name/weight_name" for a weight of the model itself). A label is the
name, with "#k" appended when an earlier sibling layer (or an earlier weight
of the same layer) has that name, so every weight has its own path.

Layers and weights that are shared (a layer called twice, a weight tracked by
two layers) are visited once, where they are first met, as `model.losses`
counts them.

It also selects weights (`selection`, `is_kernel`: the one rule that
`tfreg.apply` and the optimizer use), reads a functional model's calls for
the pruning (`functional_graph`, `nodes_by_depth`, `node_call`,
`tensor_key`) and a tf_keras optimizer's learning-rate schedule.

Regularizers may also live in the optimizer (`model.optimizer`, or the
optimizer inside a loss-scale optimizer): an optimizer with a method
`tfreg_penalties()` returning (variable, regularizer) pairs applies those
penalties in its update, and `regularized_weights` lists them with
`via="optimizer"`.
"""

import collections
import contextlib
import functools
import inspect
import re

import tensorflow as tf

from tfreg import _linear_regex
from tfreg import _keras
from tfreg import validation

__all__ = [
    "LOSS",
    "OPTIMIZER",
    "RegularizedWeight",
    "Tree",
    "backing_variables",
    "call_losses",
    "check_model",
    "drop_compiled_functions",
    "functional_graph",
    "is_kernel",
    "keeping_call_losses",
    "layers",
    "learning_rate_schedule",
    "model_optimizer",
    "node_call",
    "nodes_by_depth",
    "optimizer_penalties",
    "own_weights",
    "regularized_weights",
    "regularizer_of",
    "regularizers",
    "selection",
    "set_regularizer",
    "tensor_key",
    "weight_losses",
    "weight_name",
]

LOSS = "loss"
OPTIMIZER = "optimizer"
# Weight names that the default selection takes besides "...kernel".
_KERNEL_NAMES = ("embeddings",)

RegularizedWeight = collections.namedtuple(
    "RegularizedWeight", ["layer", "variable", "regularizer", "path", "via"])
RegularizedWeight.__doc__ = """A regularized weight of a model.

`layer` is the layer that holds the penalty (pass it to `set_regularizer`):
the weight's owner, except under tf_keras where a penalty in another layer's
callable losses is held there. `path` is the weight's path. `via` is `LOSS`
("loss": the penalty is in `model.losses`) or `OPTIMIZER` ("optimizer": the
model's optimizer applies it in its update).
"""


def check_model(model):
    """Raises a TypeError naming `model` unless it is a Keras model or layer
    of the active generation: what every function taking a model walks."""
    if not isinstance(model, _keras.keras.layers.Layer):
        raise TypeError(validation.message(
            "model", model, f"a {_keras.keras.__name__} model or layer"))


def layers(model):
    """`model` and every layer nested in it (models, wrappers), each once."""
    return list(model._flatten_layers(include_self=True, recursive=True))  # pylint: disable=protected-access


def _children(layer):
    """The layers directly under `layer`, each once."""
    return list(layer._flatten_layers(include_self=False, recursive=False))  # pylint: disable=protected-access


def own_weights(layer, trainable=True):
    """The (non-)trainable weights `layer` tracks itself, not its sublayers'.

    Whether the layer is frozen does not matter (`layer.trainable_weights`
    is empty for a frozen layer).
    """
    # pylint: disable=protected-access
    if _keras.LEGACY:
        found = layer._trainable_weights if trainable else (
            layer._non_trainable_weights)
    else:
        found = layer._trainable_variables if trainable else (
            layer._non_trainable_variables)
    return list(found)


def weight_name(variable):
    """The short name of a weight: 'kernel', 'bias', 'recurrent_kernel'."""
    return variable.name.split("/")[-1].split(":")[0]


def _label(name, seen):
    count = seen.get(name, 0)
    seen[name] = count + 1
    return f"{name}#{count}" if count else name


class Tree:
    """The layers under `root`, each once, with its chain of layers and label.

    `layers` lists them in walk order (root first), `chains[id(layer)]` is
    (root, ..., layer) along the path where the layer is first met.
    """

    def __init__(self, root):
        self.root = root
        self.layers = []
        self.chains = {}
        self.labels = {id(root): root.name}
        self._visit(root, (root,))

    def _visit(self, layer, chain):
        self.chains[id(layer)] = chain
        self.layers.append(layer)
        seen = {}
        for child in _children(layer):
            if id(child) not in self.chains:
                self.labels[id(child)] = _label(child.name, seen)
                self._visit(child, chain + (child,))

    def relative(self, ancestor, layer):
        """The labels from `ancestor` (excluded) down to `layer` (included)."""
        chain = self.chains[id(layer)]
        start = [id(link) for link in chain].index(id(ancestor))
        return tuple(self.labels[id(link)] for link in chain[start + 1:])

    def weights(self, trainable_only=False):
        """(layer, variable, path) of each weight, each once, trainable first
        within a layer."""
        found = []
        seen = set()
        for layer in self.layers:
            links = self.relative(self.root, layer) or (self.root.name,)
            names = {}
            own = own_weights(layer)
            if not trainable_only:
                own += own_weights(layer, trainable=False)
            for variable in own:
                label = _label(weight_name(variable), names)
                if id(variable) not in seen:
                    seen.add(id(variable))
                    found.append((layer, variable,
                                  "/".join(links + (label,))))
        return found


class _BoundPenalty:
    """tf_keras callable loss: `regularizer(variable)` for one fixed variable.

    An object rather than a closure, so that it cannot late-bind a loop's
    last variable and its regularizer can be read back.
    """

    def __init__(self, regularizer, variable):
        self.regularizer = regularizer
        self.variable = variable

    def __call__(self):
        return self.regularizer(self.variable)


def _penalty_entries(layer):
    """tf_keras: (callable loss, variable, regularizer) per weight penalty."""
    entries = []
    for entry in getattr(layer, "_callable_losses", ()):
        loss = entry
        # add_loss wraps every callable as partial(_tag_callable, loss).
        if isinstance(loss, functools.partial) and loss.args:
            loss = loss.args[0]
        if isinstance(loss, _BoundPenalty):
            entries.append((entry, loss.variable, loss.regularizer))
        elif isinstance(loss, functools.partial) and loss.args:
            # tf_keras' own: partial(_loss_for_variable, variable), where
            # _loss_for_variable closes over the regularizer.
            closure = inspect.getclosurevars(loss.func).nonlocals
            entries.append((entry, loss.args[0], closure.get("regularizer")))
    return entries


def regularizer_of(layer, variable):
    """The regularizer whose penalty on `variable` counts in `model.losses`
    (through `layer`, the layer that owns it), or None."""
    if not _keras.LEGACY:
        return variable.regularizer
    return next((regularizer for _, bound, regularizer
                 in _penalty_entries(layer) if bound is variable), None)


def set_regularizer(layer, variable, regularizer):
    """Makes `regularizer(variable)` count in `model.losses`; None removes it.

    `layer` is the layer that owns `variable`. The layer's constructor
    arguments (its config) are left alone.
    """
    if not _keras.LEGACY:
        variable.regularizer = regularizer
        return
    stale = [entry for entry, bound, _ in _penalty_entries(layer)
             if bound is variable]
    if stale:
        layer._callable_losses[:] = [  # pylint: disable=protected-access
            entry for entry in layer._callable_losses  # pylint: disable=protected-access
            if not any(entry is old for old in stale)]
    if regularizer is not None:
        layer.add_loss(_BoundPenalty(regularizer, variable))


def _loss_side(model, tree):
    """(layer, variable, regularizer) whose penalty is in `model.losses`."""
    if _keras.LEGACY:
        return [(layer, variable, regularizer) for layer in tree.layers
                for _, variable, regularizer in _penalty_entries(layer)
                if regularizer is not None]
    # Keras 3 counts the trainable weights of unfrozen layers only.
    counted = {id(variable) for variable in model.trainable_weights}
    return [(layer, variable, variable.regularizer)
            for layer, variable, _ in tree.weights(trainable_only=True)
            if variable.regularizer is not None and id(variable) in counted]


def model_optimizer(model):
    """The optimizer that updates `model` (inside a loss-scale one), or None."""
    optimizer = getattr(model, "optimizer", None)
    # A loss-scale optimizer (both generations) wraps the one that updates.
    while hasattr(optimizer, "inner_optimizer"):
        optimizer = optimizer.inner_optimizer
    return optimizer


def drop_compiled_functions(model):
    """Makes the next fit or evaluate of `model` trace its step anew."""
    for attribute in ("train_function", "test_function"):
        if getattr(model, attribute, None) is not None:
            setattr(model, attribute, None)


def optimizer_penalties(model):
    """(variable, regularizer) pairs that `model`'s optimizer applies.

    From the optimizer's `tfreg_penalties()` (see the module doc); [] when
    it has none.
    """
    optimizer = model_optimizer(model)
    if not callable(getattr(optimizer, "tfreg_penalties", None)):
        return []
    return list(optimizer.tfreg_penalties())


def regularized_weights(model):
    """Every regularized weight of `model` as a `RegularizedWeight`.

    Penalties in `model.losses` ("loss") in walk order, then those of the
    optimizer ("optimizer") whose variable is a weight of `model`. A
    variable is listed once per way and regularizer, also where it or its
    layer is shared.
    """
    tree = Tree(model)
    owners = {id(variable): (layer, path)
              for layer, variable, path in tree.weights()}
    # A loss-side penalty is listed with the layer that holds it (what
    # `set_regularizer` needs), an optimizer-side one with the weight's owner.
    candidates = [(layer, variable, regularizer, LOSS)
                  for layer, variable, regularizer in _loss_side(model, tree)]
    candidates += [(None, variable, regularizer, OPTIMIZER)
                   for variable, regularizer in optimizer_penalties(model)]
    found = []
    seen = set()
    for layer, variable, regularizer, via in candidates:
        # A variable may carry several penalties (an optimizer's coupled
        # penalty anchored on a weight it also regularizes elementwise).
        key = (id(variable), id(regularizer), via)
        if id(variable) in owners and key not in seen:
            seen.add(key)
            owner, path = owners[id(variable)]
            found.append(RegularizedWeight(layer or owner, variable,
                                           regularizer, path, via))
    return found


def regularizers(model):
    """Every distinct regularizer object of `model`, in walk order.

    Those of `regularized_weights` and those a layer holds as an argument
    (`activity_regularizer`, constructor arguments such as
    `kernel_regularizer`).
    """
    weights = regularized_weights(model)
    by_layer = collections.defaultdict(list)
    for weight in weights:
        if weight.via == LOSS:
            by_layer[id(weight.layer)].append(weight.regularizer)
    found = {}
    for layer in layers(model):
        # tf_keras keeps some as `_name_regularizer` behind a property.
        held = [value for key, value in vars(layer).items()
                if key.endswith("_regularizer") and callable(value)]
        for regularizer in held + by_layer[id(layer)]:
            found.setdefault(id(regularizer), regularizer)
    for weight in weights:
        found.setdefault(id(weight.regularizer), weight.regularizer)
    return list(found.values())


# The losses a call adds. Keras 3 collects them in a StatelessScope; tf_keras
# keeps them in per-layer lists that a trace fills with graph tensors.


def weight_losses(model):
    """The input-independent losses of `model.losses`, in its order.

    Keras 3: the penalty of each regularized trainable weight. tf_keras:
    every callable loss (zero-argument callables given to `add_loss` too).
    """
    if not _keras.LEGACY:
        return [variable.regularizer(variable)
                for variable in model.trainable_weights
                if variable.regularizer is not None]
    losses = []
    for layer in layers(model):
        for callable_loss in layer._callable_losses:  # pylint: disable=protected-access
            loss = callable_loss()
            if loss is not None:
                losses.append(loss)
    return losses


def call_losses(model, inputs):
    """`model(inputs, training=False)` and the losses that call adds."""
    if not _keras.LEGACY:
        # Collected in the scope, not the layers: no graph tensor outlives
        # a trace.
        with _keras.keras.StatelessScope(collect_losses=True) as scope:
            outputs = model(inputs, training=False)
        return outputs, list(scope.losses)
    outputs = model(inputs, training=False)
    return outputs, [loss for layer in layers(model)
                     for loss in layer._eager_losses]  # pylint: disable=protected-access


@contextlib.contextmanager
def keeping_call_losses(model):
    """Puts tf_keras' per-layer call losses back after tracing a call.

    A call traced in `tf.function` replaces them with graph tensors that
    must not outlive the trace; Keras 3 needs nothing (see `call_losses`).
    """
    # pylint: disable=protected-access
    kept = [(layer, layer._eager_losses, list(layer._losses))
            for layer in (layers(model) if _keras.LEGACY else ())]
    try:
        yield
    finally:
        for layer, eager_losses, losses in kept:
            layer._eager_losses = eager_losses
            layer._losses[:] = losses


def backing_variables(variables):
    """`variables` and the `tf.Variable`s behind them (what graphs capture):
    a Keras 3 variable wraps one."""
    found = list(variables)
    if not _keras.LEGACY:
        found += [variable._value for variable in variables]  # pylint: disable=protected-access
    return found


# Selecting weights: the default (kernels) and regular expressions or
# predicates, shared by `tfreg.apply` (paths in the model) and the
# optimizer (each variable's own path).


def is_kernel(layer, variable):
    """The default selection: kernels and embeddings, not of normalization
    layers.

    A weight whose short name ends in "kernel" (also recurrent, depthwise
    and pointwise kernels) or is "embeddings". Biases and normalization
    parameters are not kernels; `layer` None (a bare variable) is not
    checked for being a normalization layer.
    """
    if layer is not None and "Normalization" in type(layer).__name__:
        return False
    name = weight_name(variable)
    return name.endswith("kernel") or name in _KERNEL_NAMES


def _matcher(argument, selector, predicates, linear=False):
    """`selector` as a function (layer, variable, path) -> bool, or None;
    `linear`: a pattern is searched in linear time (`_linear_regex`)."""
    expected = ("None, a regular expression (str) or a predicate (layer, "
                "variable) -> bool" if predicates else
                "None or a regular expression (str) searched in the "
                "variable's path")
    if selector is None:
        return None
    if isinstance(selector, str):
        try:
            pattern = re.compile(selector)
        except re.error as error:
            raise ValueError(validation.message(
                argument, selector, "a valid regular expression",
                note=f" ({error})")) from None
        if linear:
            try:
                pattern = _linear_regex.compile(selector)
            except _linear_regex.Refused as error:
                raise ValueError(validation.message(
                    argument, selector, _linear_regex.ACCEPTED,
                    note=f" (refused: {error})")) from None
        return lambda layer, variable, path: bool(pattern.search(path))
    if predicates and callable(selector):
        return lambda layer, variable, path: bool(selector(layer, variable))
    raise TypeError(validation.message(argument, selector, expected))


def selection(include=None, exclude=None, predicates=True,
              default=is_kernel, linear=False):
    """A function (layer, variable, path) -> bool: is the weight selected?

    `include`: None (`default`, a predicate (layer, variable) -> bool:
    `is_kernel`) or a regular expression searched in the weight's path, or
    (with `predicates`) a function (layer, variable) -> bool; `exclude`
    likewise (None: nothing excluded). `linear`: patterns (read from a
    file) are searched in time linear in the path (`_linear_regex`, a
    subset of `re`). Bad arguments raise here, naming them.
    """
    included = _matcher("include", include, predicates, linear) or (
        lambda layer, variable, path: default(layer, variable))
    excluded = _matcher("exclude", exclude, predicates, linear)
    return lambda layer, variable, path: included(layer, variable, path) and (
        not (excluded and excluded(layer, variable, path)))


# Graph reads for the pruning: no public API lists a model's calls with their
# input and output tensors.


def functional_graph(model):
    """The functional graph of `model`, or None (subclassed, unbuilt).

    Keras 3 keeps a built Sequential model's graph in `model._functional`;
    tf_keras' built Sequential model is that graph itself.
    """
    # pylint: disable=protected-access
    if not _keras.LEGACY and isinstance(model, _keras.keras.Sequential):
        found = getattr(model, "_functional", None)
    elif getattr(model, "_is_graph_network", not _keras.LEGACY):
        found = model
    else:
        found = None
    return found if hasattr(found, "_nodes_by_depth") else None


def nodes_by_depth(functional):
    """{depth: [node]} of a `functional_graph` (inputs deepest)."""
    return functional._nodes_by_depth  # pylint: disable=protected-access


def node_call(node):
    """(layer, input tensors, output tensors) of one node (one call)."""
    if _keras.LEGACY:
        return (node.layer, list(node.keras_inputs),
                tf.nest.flatten(node.outputs))
    return node.operation, list(node.input_tensors), list(node.output_tensors)


def tensor_key(tensor):
    """A hashable name of a symbolic tensor, the same in every node: from
    its `_keras_history` (layer, node index, tensor index)."""
    layer, node_index, tensor_index = tensor._keras_history[:3]  # pylint: disable=protected-access
    return id(layer), node_index, tensor_index


def learning_rate_schedule(optimizer):
    """The `LearningRateSchedule` of a tf_keras optimizer, or None.

    tf_keras updates `optimizer.learning_rate` from its schedule only inside
    `apply_gradients`; the schedule itself is kept in `_learning_rate`.
    """
    schedule = getattr(optimizer, "_learning_rate", None)
    schedules = _keras.keras.optimizers.schedules
    return schedule if isinstance(
        schedule, schedules.LearningRateSchedule) else None
