"""`apply` and `remove`: regularizers on the weights of an already-built model.

Keras reads `kernel_regularizer` once, when a layer builds its weights, so
setting `layer.kernel_regularizer = ...` on a built layer does nothing. These
functions attach a regularizer to the weights themselves, in the way each
Keras generation computes `model.losses`:

- Keras 3 computes weight penalties from `variable.regularizer` every time
  `layer.losses` is read, so `apply` sets that attribute.
- tf_keras keeps one zero-argument callable per regularized weight in the
  layer's callable losses, so `apply` adds one through `layer.add_loss`: an
  object holding the regularizer and that one variable (no closure that could
  late-bind the loop's last layer), and removes the callable that was there
  before for the same variable.

In both, the layer's constructor argument of the same name (for example
`kernel_regularizer` for a weight named "kernel", `recurrent_regularizer` for
"recurrent_kernel") is set too when the layer's config has it, so the
regularizer is written into saved models and comes back on loading (`.keras`;
tf_keras' `.h5` and SavedModel directories as well). A weight without such a
constructor argument is regularized in memory but not saved; `apply` returns
which weights are which.

A model that was already trained or evaluated has its compiled train and test
functions dropped, so the next `fit` or `evaluate` traces again and includes
the new penalties.
"""

import functools
import inspect
import re

from tfreg import _keras
from tfreg import serialization

_KERNEL_NAMES = ("embeddings",)


def flatten_layers(model):
    """`model` and every layer nested in it, each once."""
    # Both Keras generations have this (private) walk over nested layers.
    return list(model._flatten_layers(include_self=True, recursive=True))


def _own_trainable_weights(layer):
    """The trainable weights `layer` created itself, not its sublayers'."""
    if _keras.LEGACY:
        return list(getattr(layer, "_trainable_weights", ()))
    return list(getattr(layer, "_trainable_variables", ()))


def weight_name(variable):
    """The short name of a weight: 'kernel', 'bias', 'recurrent_kernel'."""
    return variable.name.split("/")[-1].split(":")[0]


def weight_path(layer, variable):
    """'layer_name/weight_name', the string `include`/`exclude` regexes see."""
    return f"{layer.name}/{weight_name(variable)}"


def is_kernel(layer, variable):
    """The default selection: kernels and embeddings of non-normalization layers.

    Biases, normalization parameters (gamma, beta, moving statistics) and
    non-trainable weights are not kernels.
    """
    if "Normalization" in type(layer).__name__:
        return False
    name = weight_name(variable)
    return name.endswith("kernel") or name in _KERNEL_NAMES


def _matcher(selector, argument):
    if selector is None:
        return None
    if isinstance(selector, str):
        try:
            pattern = re.compile(selector)
        except re.error as error:
            raise ValueError(
                f"Invalid value for argument `{argument}`. Expected a regular "
                f"expression or a predicate (layer, variable) -> bool. "
                f"Received: {argument}={selector!r} ({error})") from None
        return lambda layer, variable: bool(
            pattern.search(weight_path(layer, variable)))
    if callable(selector):
        return lambda layer, variable: bool(selector(layer, variable))
    raise TypeError(
        f"Invalid value for argument `{argument}`. Expected None, a regular "
        f"expression (str) or a predicate (layer, variable) -> bool. "
        f"Received: {argument}={selector!r}")


def select(model, include=None, exclude=None, default_include=None):
    """(layer, variable) pairs of the trainable weights `include` selects.

    `include`/`exclude` are as in `apply`; `default_include` (default:
    kernels) applies when `include` is None.
    """
    include = (_matcher(include, "include") or default_include or is_kernel)
    exclude = _matcher(exclude, "exclude")
    selected = []
    seen = set()
    for layer in flatten_layers(model):
        for variable in _own_trainable_weights(layer):
            if id(variable) in seen:
                continue
            seen.add(id(variable))
            if include(layer, variable) and not (
                    exclude and exclude(layer, variable)):
                selected.append((layer, variable))
    return selected


def _config_argument(layer, variable):
    """The constructor argument that saves `variable`'s regularizer, or None."""
    name = weight_name(variable)
    candidates = [f"{name}_regularizer"]
    if name.endswith("_kernel"):
        candidates.append(f"{name[:-len('_kernel')]}_regularizer")
    if name == "kernel":
        # DepthwiseConv's only kernel is saved as `depthwise_regularizer`.
        candidates.append("depthwise_regularizer")
    try:
        config = layer.get_config()
    except (NotImplementedError, TypeError, ValueError):
        return None
    for candidate in candidates:
        if candidate in config and hasattr(layer, candidate):
            return candidate
    return None


class _BoundPenalty:
    """tf_keras callable loss: `regularizer(variable)` for one fixed variable."""

    def __init__(self, regularizer, variable):
        self.regularizer = regularizer
        self.variable = variable

    def __call__(self):
        return self.regularizer(self.variable)


def _legacy_entries(layer):
    """(callable loss, variable, regularizer) for each weight penalty."""
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
            variables = inspect.getclosurevars(loss.func).nonlocals
            entries.append((entry, loss.args[0],
                            variables.get("regularizer")))
    return entries


def regularized_weights(model):
    """(layer, variable, regularizer) for every regularized trainable weight."""
    found = []
    for layer in flatten_layers(model):
        if _keras.LEGACY:
            for _, variable, regularizer in _legacy_entries(layer):
                found.append((layer, variable, regularizer))
        else:
            for variable in _own_trainable_weights(layer):
                if variable.regularizer is not None:
                    found.append((layer, variable, variable.regularizer))
    return found


def _detach(layer, variable):
    if _keras.LEGACY:
        stale = [entry for entry, bound, _ in _legacy_entries(layer)
                 if bound is variable]
        layer._callable_losses[:] = [
            entry for entry in layer._callable_losses
            if not any(entry is old for old in stale)]
    else:
        variable.regularizer = None


def _drop_compiled_functions(model):
    for name in ("train_function", "test_function"):
        if getattr(model, name, None) is not None:
            setattr(model, name, None)


def check_built(model):
    if not getattr(model, "built", False) or not model.weights:
        raise ValueError(
            "Expected a built model (call it on data or build it first). "
            f"Received: model={getattr(model, 'name', model)!r} with no weights.")


def apply(model, regularizer, include=None, exclude=None):
    """Attaches `regularizer` to the matching weights of a built model.

    Weights are selected among the model's trainable weights (nested layers
    included). `include` and `exclude` are each None, a regular expression
    searched in "layer_name/weight_name" (e.g. "dense_1/kernel"), or a
    predicate `(layer, variable) -> bool`. By default every kernel (also
    recurrent, depthwise and pointwise kernels, and embeddings) is selected;
    biases and normalization parameters are not. A weight that already has a
    regularizer gets `regularizer` instead.

    Args:
      model: A built Keras model (or layer).
      regularizer: A regularizer or anything `tfreg.get` accepts ("l2", a
        config dict).
      include: Which weights to regularize (default: kernels).
      exclude: Which of those to leave alone (default: none).

    Returns:
      A dict mapping "layer_name/weight_name" of each regularized weight to
      True when the regularizer is written into saved models (the layer's
      config has the matching `<name>_regularizer` argument), else False.

    >>> import tfreg
    >>> from tfreg._keras import keras
    >>> model = keras.Sequential([keras.Input((3,)),
    ...                           keras.layers.Dense(2, name="hidden"),
    ...                           keras.layers.Dense(1, name="out")])
    >>> tfreg.apply(model, tfreg.L2(0.1), exclude="out")
    {'hidden/kernel': True}
    >>> len(model.losses)
    1
    >>> tfreg.remove(model)
    ['hidden/kernel']
    >>> len(model.losses)
    0
    """
    regularizer = serialization.get(regularizer)
    if regularizer is None:
        raise ValueError(
            "Expected a regularizer. Received: regularizer=None "
            "(use tfreg.remove to take regularizers off).")
    if not isinstance(regularizer, _keras.Regularizer):
        raise TypeError(
            "Expected a Keras regularizer (for example a tfreg.Regularizer). "
            f"Received: regularizer={regularizer!r}")
    check_built(model)
    return attach_each(model, select(model, include, exclude),
                       lambda layer, variable: regularizer)


def attach_each(model, selected, make_regularizer):
    """Attaches `make_regularizer(layer, variable)` to each selected weight.

    Returns the dict `apply` returns.
    """
    attached = {}
    for layer, variable in selected:
        regularizer = make_regularizer(layer, variable)
        _detach(layer, variable)
        if _keras.LEGACY:
            layer.add_loss(_BoundPenalty(regularizer, variable))
        else:
            variable.regularizer = regularizer
        argument = _config_argument(layer, variable)
        if argument is not None:
            setattr(layer, argument, regularizer)
        attached[weight_path(layer, variable)] = argument is not None
    _drop_compiled_functions(model)
    return attached


def remove(model, include=None, exclude=None):
    """Takes the regularizers off the matching weights of a built model.

    Undoes `apply`, and also removes regularizers given to layer constructors.
    `include` and `exclude` select weights as in `apply`, except that the
    default `include` is every regularized weight. Activity regularizers are
    left alone.

    Returns:
      The sorted "layer_name/weight_name" of each weight whose regularizer was
      removed.
    """
    check_built(model)
    regularized = {id(variable) for _, variable, _ in regularized_weights(model)}
    removed = []
    for layer, variable in select(model, include, exclude,
                                  lambda layer, variable: True):
        if id(variable) not in regularized:
            continue
        _detach(layer, variable)
        argument = _config_argument(layer, variable)
        if argument is not None:
            setattr(layer, argument, None)
        removed.append(weight_path(layer, variable))
    _drop_compiled_functions(model)
    return sorted(removed)
