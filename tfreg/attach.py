"""`apply`, `remove` and `attach_l2sp`: regularizers on a built model's weights.

Keras reads `kernel_regularizer` once, when a layer builds its weights, so
setting `layer.kernel_regularizer = ...` on a built layer does nothing. These
functions attach a regularizer to the weights themselves, the way the active
Keras generation computes `model.losses` (`walk.set_regularizer`), and set
the layer's constructor argument too, so that saving writes it.

Weights are named by their path in the model (`walk.Tree`): the
names of the layers from the model down to the layer that owns the weight,
then the weight's name ("dense/kernel" for a layer of the model itself,
"inner/dense/kernel" inside a nested model "inner",
"bidirectional/forward_lstm/lstm_cell/kernel"). A sibling layer or weight
that repeats an earlier one's name gets "#1", "#2", ... appended, so every
weight has its own path.

Saving: a regularizer comes back with a loaded model only if the model's
config carries it to that weight (the layer's own argument, or an argument
of a parent that rebuilds the layer from its config, such as
MultiHeadAttention's `kernel_regularizer`; see `tfreg._coverage`). A
parent's argument covers several weights and is set when all of them have
the same regularizer. `apply` returns, per weight, whether its regularizer
is saved; `remove` warns when a removal cannot be saved.

A model that was already trained or evaluated has its compiled train and test
functions dropped, so the next `fit` or `evaluate` traces again and includes
the new penalties.
"""

import collections
import warnings

from tfreg import _coverage
from tfreg import _keras
from tfreg import serialization
from tfreg import structured
from tfreg import validation
from tfreg import walk

__all__ = ["apply", "attach_l2sp", "remove"]


def _select(model, include=None, exclude=None, default_include=None):
    """(layer, variable, path) of the trainable weights `include` selects.

    `include`/`exclude` are as in `apply` (`walk.selection`);
    `default_include` (a predicate (layer, variable) -> bool; default:
    kernels) applies when `include` is None.
    """
    selected = walk.selection(include, exclude,
                              default=default_include or walk.is_kernel)
    return [(layer, variable, path) for layer, variable, path
            in walk.Tree(model).weights(trainable_only=True)
            if selected(layer, variable, path)]


def _check_built(model):
    walk.check_model(model)
    if not getattr(model, "built", False) or not model.weights:
        raise ValueError(validation.message(
            "model", model, "a built model (call it on data or build it "
            "first)", shown=repr(model.name), note=", which has no weights"))


def _check_distinct(model, selected):
    """Refuses to merge weights whose paths coincide."""
    # Labels make paths unique, except against a layer whose own name looks
    # like a label ("dense#1") or like the model's.
    duplicates = sorted(path for path, count in collections.Counter(
        path for _, _, path in selected).items() if count > 1)
    if duplicates:
        raise ValueError(validation.message(
            "model", model, "a distinct path for every selected weight "
            "(rename one of the layers)", shown=repr(model.name),
            note=f", with several weights at {duplicates!r}"))


def _set(layer, variable, regularizer, arguments):
    """Sets the penalty and the layer's own constructor argument, if any
    (found through `arguments`, a `_coverage.Arguments`)."""
    walk.set_regularizer(layer, variable, regularizer)
    argument = arguments.own(layer, variable)
    if argument is not None:
        setattr(layer, argument, regularizer)


def apply(model, regularizer, include=None, exclude=None):
    """Attaches `regularizer` to the matching weights of a built model.

    Weights are selected among the model's trainable weights (nested layers
    included). `include` and `exclude` are each None, a regular expression
    searched in the weight's path, or a predicate `(layer, variable) -> bool`.
    The path is "layer_name/weight_name" for a layer of the model itself
    (e.g. "dense_1/kernel") and lists every layer on the way for nested ones
    ("encoder/dense_1/kernel" in a nested model "encoder",
    "bidirectional/forward_lstm/lstm_cell/kernel"); a layer that repeats an
    earlier sibling's name gets "#1", "#2", ... appended, so each weight has
    its own path. A shared layer or weight is selected once. By default
    every kernel (also recurrent, depthwise and pointwise kernels, and
    embeddings) is selected; biases and normalization parameters are not. A
    weight that already has a regularizer gets `regularizer` instead.

    Args:
      model: A built Keras model (or layer).
      regularizer: A regularizer or anything `tfreg.get` accepts ("l2", a
        config dict).
      include: Which weights to regularize (default: kernels).
      exclude: Which of those to leave alone (default: none).

    Returns:
      A dict mapping the path of each regularized weight to True when the
      regularizer is written into saved models and comes back on loading,
      else False (it is regularized in memory only). True needs a
      constructor argument in the model's config that reaches the weight:
      the layer's own (`kernel_regularizer` for "kernel"), or, for a layer
      its parent rebuilds from the parent's config, the parent's (as
      MultiHeadAttention's `kernel_regularizer`), which covers several
      weights and is set only when all of them get this regularizer.

    >>> import tfreg
    >>> from tensorflow import keras
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
        raise ValueError(validation.message(
            "regularizer", None,
            "a regularizer (tfreg.remove takes regularizers off)"))
    if not isinstance(regularizer, _keras.Regularizer):
        raise TypeError(validation.message(
            "regularizer", regularizer,
            "a Keras regularizer (for example a tfreg.Regularizer)"))
    _check_built(model)
    return _attach_each(model, _select(model, include, exclude),
                        lambda layer, variable: regularizer)


def _attach_each(model, selected, make_regularizer):
    """Attaches `make_regularizer(layer, variable)` to each selected weight
    (layer, variable, path); returns the dict `apply` returns."""
    _check_distinct(model, selected)
    arguments = _coverage.Arguments()
    for layer, variable, _ in selected:
        _set(layer, variable, make_regularizer(layer, variable), arguments)
    pairs = [(layer, variable) for layer, variable, _ in selected]
    attached = {}
    for (layer, variable, path), holder in zip(
            selected, _coverage.holders(walk.Tree(model), pairs, arguments)):
        attached[path] = holder is not None and (
            holder.sync() is walk.regularizer_of(layer, variable))
    walk.drop_compiled_functions(model)
    return attached


def remove(model, include=None, exclude=None):
    """Takes the regularizers off the matching weights of a built model.

    Undoes `apply`, and also removes regularizers given to layer constructors.
    `include` and `exclude` select weights as in `apply`, except that the
    default `include` is every regularized weight. Activity regularizers,
    and penalties that an optimizer applies (`tfreg.optimizers`), are left
    alone.

    A weight whose saved regularizer is an argument of its parent covering
    other weights too (MultiHeadAttention's `kernel_regularizer`) loses it in
    the saved model only when all of those weights are removed; otherwise
    a warning lists the weights that get it back on loading.

    Returns:
      The sorted paths (as in `apply`) of the weights whose regularizer was
      removed.
    """
    _check_built(model)
    targets = [(layer, variable, path) for layer, variable, path in _select(
        model, include, exclude, lambda layer, variable: True)
               if walk.regularizer_of(layer, variable) is not None]
    _check_distinct(model, targets)
    arguments = _coverage.Arguments()
    for layer, variable, _ in targets:
        _set(layer, variable, None, arguments)
    pairs = [(layer, variable) for layer, variable, _ in targets]
    restored = [path for (_, _, path), holder in zip(
        targets, _coverage.holders(walk.Tree(model), pairs, arguments))
                if holder is not None and holder.sync() is not None]
    if restored:
        warnings.warn(
            f"Removed the regularizers of {restored} in memory only: the "
            "saved model still regularizes them through an argument of their "
            "parent layer that also covers weights that keep theirs, so they "
            "get it back on loading. Remove it from all of those weights to "
            "save the removal.", stacklevel=2)
    walk.drop_compiled_functions(model)
    return sorted(path for _, _, path in targets)


def attach_l2sp(model, factor=0.01, include=None, exclude=None):
    """Attaches L2-SP to the kernels of a built model, toward current values.

    Each selected weight (by default every kernel, as `tfreg.apply` selects
    them, nested models included) gets its own
    `L2SP(factor, reference=<its current value>)`, attached as `tfreg.apply`
    attaches regularizers: it counts in `model.losses` at once, is saved with
    the model, and a model already trained or evaluated traces its steps
    again.

    Args:
      model: A built Keras model (the active generation).
      factor: Non-negative finite float (or `tfreg.Strength`), the strength.
      include: Which weights, as in `tfreg.apply` (default: kernels).
      exclude: Which of those to leave alone, as in `tfreg.apply`.

    Returns:
      The dict `tfreg.apply` returns: weight path -> saved with the model.

    Raises:
      ValueError: when the model is not built or a selected weight already
        has a regularizer (regularizers are not stacked).

    >>> import tfreg
    >>> from tensorflow import keras
    >>> model = keras.Sequential([keras.Input((3,)),
    ...                           keras.layers.Dense(2, name="dense")])
    >>> tfreg.attach_l2sp(model, 0.1)
    {'dense/kernel': True}
    >>> float(model.losses[0])
    0.0
    """
    factor = validation.non_negative("factor", factor)
    _check_built(model)
    selected = _select(model, include, exclude)
    for layer, variable, path in selected:
        regularizer = walk.regularizer_of(layer, variable)
        if regularizer is not None:
            raise ValueError(validation.message(
                "model", model, "selected weights without a regularizer",
                shown=repr(model.name),
                note=f", whose weight {path!r} already has a regularizer "
                     f"({regularizer!r}): attach_l2sp does not stack "
                     "regularizers"))
    return _attach_each(
        model, selected, lambda layer, variable: structured.L2SP(
            factor, reference=variable.numpy()))
