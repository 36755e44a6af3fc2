"""`shrink`: a smaller Keras model without the zero channel groups.

A group is removed when its channel no longer carries information:

- its consumer slices are zero (nothing reads the channel), or
- its kernel slices are zero (the channel does not depend on the input).
  The channel is then a constant c (a bias or BatchNormalization shift
  through the activation); each consumer that reads it with kernel rows K_c
  gets `sum_c c * sum_positions K_c` added to its bias, which is exact for
  Dense layers and "valid" convolutions. A "same"/"causal" convolution sees
  the zero padding instead of c at the borders, so a group whose nonzero
  constant reaches one is kept (with a warning).

"Zero" means every entry has |w| <= tolerance. A layer that would lose all
its units keeps one of its groups (whose channel is constant or unread, so
the function is unchanged).
"""

import collections
import warnings

import numpy as np

from tfreg import _keras
from tfreg import validation
from tfreg import walk
from tfreg.pruning import graph as graph_lib
from tfreg.pruning import groups as groups_lib

__all__ = ["shrink"]

keras = _keras.keras

_CONFIG_WIDTH = {"Dense": "units"}  # Convolutions: "filters".


def _tolerance(tolerance):
    number = validation.real("tolerance", tolerance,
                             "a finite float >= 0")
    if number < 0:
        raise ValueError(validation.message(
            "tolerance", tolerance, "a finite float >= 0"))
    return number


def _zero(group, role, tolerance):
    pieces = [piece for piece in group.slices if piece.role == role]
    return bool(pieces) and group.max_abs(role) <= tolerance


def _consumer_constants(model_graph, group_list):
    """{id(consumer call input): value of its channels} for a zero input.

    The value at the first position of every non-channel axis: where the
    kernels of a group are zero its channel is the same at every position.
    """
    calls = {}
    for group in group_list:
        for piece in group.slices:
            if piece.role == groups_lib.CONSUMER:
                for call in model_graph.calls:
                    if call.layer is piece.layer:
                        calls[id(call.inputs[0])] = call.inputs[0]
    if not calls:
        return {}
    probe = keras.Model(model_graph.inputs, list(calls.values()))
    shapes = [tensor.shape for tensor in model_graph.inputs]
    if any(d is None for shape in shapes for d in shape[1:]):
        raise ValueError(validation.message(
            "model", shapes, "inputs of static shape (to fold the constant "
                             "channels of removed units into biases)",
            shown=f"<a model with input shapes {shapes}>"))
    zeros = [np.zeros((1,) + tuple(shape[1:]), "float32") for shape in shapes]
    values = probe(zeros, training=False)
    values = values if isinstance(values, (list, tuple)) else [values]
    return {key: np.asarray(value).reshape(-1, value.shape[-1])[0]
            for key, value in zip(calls, values)}


def _fold(model_graph, group, constants, tolerance):
    """{id(layer): bias change} folding `group`'s constant, or None."""
    deltas = {}
    for piece in group.slices:
        if piece.role != groups_lib.CONSUMER:
            continue
        kernel = np.asarray(piece.variable.numpy(), "float64")
        rows = np.take(kernel, piece.indices, axis=piece.axis)
        values = {tuple(constants[id(call.inputs[0])][list(piece.indices)])
                  for call in model_graph.calls if call.layer is piece.layer}
        if len(values) > 1:
            return None  # A shared consumer sees different constants.
        value = np.asarray(values.pop())
        if not value.any() or np.abs(rows).max(initial=0) <= tolerance:
            continue
        if getattr(piece.layer, "padding", "valid") != "valid":
            return None
        shape = [1] * rows.ndim
        shape[piece.axis] = len(value)
        delta = (rows * value.reshape(shape)).reshape(-1, rows.shape[-1])
        deltas[id(piece.layer)] = deltas.get(id(piece.layer), 0) + delta.sum(0)
    return deltas


def _removable(model_graph, group_list, tolerance):
    """(removed groups, {id(layer): bias change}, [(group, why kept)])."""
    removed, kept, deltas = [], [], collections.defaultdict(float)
    candidates = [group for group in group_list
                  if _zero(group, groups_lib.CONSUMER, tolerance)
                  or _zero(group, groups_lib.KERNEL, tolerance)]
    constants = _consumer_constants(
        model_graph, [group for group in candidates
                      if not _zero(group, groups_lib.CONSUMER, tolerance)])
    for group in candidates:
        fold = {} if _zero(group, groups_lib.CONSUMER, tolerance) else _fold(
            model_graph, group, constants, tolerance)
        if fold is None:
            kept.append((group, "its nonzero constant output reaches a "
                                "convolution with padding (not foldable)"))
            continue
        removed.append((group, fold))
    removed = _keep_one_per_layer(group_list, removed, kept)
    for _, fold in removed:
        for key, delta in fold.items():
            deltas[key] = deltas[key] + delta
    return [group for group, _ in removed], dict(deltas), kept


def _keep_one_per_layer(group_list, removed, kept):
    """Puts back one group of each layer that would lose all its units."""
    # Units in no group (their channel reaches an output) count as kept.
    units = {piece.layer.name: piece.variable.shape[-1]
             for group in group_list for piece in group.slices
             if piece.role == groups_lib.KERNEL
             and piece.axis == len(piece.variable.shape) - 1}
    while True:
        gone = collections.Counter(name for group, _ in removed
                                   for name, _ in group.units)
        empty = [name for name in gone if gone[name] == units[name]]
        if not empty:
            return removed
        index = next(i for i, (group, _) in enumerate(removed)
                     if any(name == empty[0] for name, _ in group.units))
        kept.append((removed.pop(index)[0],
                     f"layer `{empty[0]}` would have no units left"))


def _plans(model_graph, removed, deltas):
    """Per layer: {id(variable): {axis: indices}}, config change, bias add."""
    cuts = collections.defaultdict(lambda: collections.defaultdict(set))
    layer_of = {}
    for group in removed:
        for piece in group.slices:
            cuts[id(piece.variable)][piece.axis].update(piece.indices)
            layer_of[id(piece.variable)] = piece.layer
    plans = {}
    for call in model_graph.calls:
        layer = call.layer
        if id(layer) in plans:
            continue
        config = {}
        kernel = getattr(layer, "kernel", None)
        if isinstance(layer, groups_lib.PRODUCERS) and kernel is not None:
            axis = len(kernel.shape) - 1
            width = kernel.shape[-1] - len(cuts[id(kernel)].get(axis, ()))
            key = _CONFIG_WIDTH.get(type(layer).__name__, "filters")
            if width != kernel.shape[-1]:
                config[key] = width
            if id(layer) in deltas and not layer.use_bias:
                config["use_bias"] = True
        if config or any(id(v) in cuts for v in layer.weights) or (
                id(layer) in deltas):
            plans[id(layer)] = (config, deltas.get(id(layer)))
    return cuts, plans


def _new_weights(layer, new_layer, cuts, delta):
    """The weights of `new_layer`: `layer`'s with the cut entries removed."""
    values = {}
    for variable in layer.weights:
        value = np.asarray(variable.numpy())
        for axis, indices in sorted(cuts.get(id(variable), {}).items()):
            value = np.delete(value, sorted(indices), axis=axis)
        values[walk.weight_name(variable)] = value
    if delta is not None:
        cut = cuts.get(id(layer.kernel), {}).get(len(layer.kernel.shape) - 1)
        delta = np.delete(np.asarray(delta), sorted(cut or ()))
        bias = values.get("bias", np.zeros_like(delta))
        values["bias"] = (bias.astype("float64") + delta).astype(bias.dtype)
    return [values[walk.weight_name(variable)]
            for variable in new_layer.weights]


def shrink(model, tolerance=0.0, groups=None):
    """A new model without the zero channel groups of `model`.

    Same layer types and names, fewer units and filters, weights copied; on
    any input its outputs equal `model`'s to float32 rounding (when
    `tolerance` is 0). See the module docstring for when a group counts as
    zero and how constant channels are folded into the consumers' biases.

    Args:
      model: A functional model or a Sequential model built with an Input.
      tolerance: Finite float >= 0: entries with |w| <= tolerance count as
        zero. Above 0 the function changes by up to that much per entry.
      groups: The `ChannelGroups` of `model` (from `channel_groups(model)`);
        traced again when None.

    Returns:
      An uncompiled Keras model of the same kind (Sequential or functional).

    >>> import numpy as np, tfreg
    >>> from tfreg._keras import keras
    >>> model = keras.Sequential([
    ...     keras.Input((3,)), keras.layers.Dense(4, name="hidden"),
    ...     keras.layers.Dense(2, name="out")])
    >>> kernel = model.layers[0].kernel
    >>> _ = kernel.assign(kernel.numpy() * [1, 0, 1, 0])  # units 1, 3: constant
    >>> small = tfreg.shrink(model)
    >>> small.layers[0].units, small.count_params(), model.count_params()
    (2, 14, 26)
    >>> x = np.ones((1, 3), "float32")
    >>> bool(np.allclose(small(x), model(x), atol=1e-6))
    True
    """
    tolerance = _tolerance(tolerance)
    model_graph = graph_lib.graph(model)
    if groups is None:
        groups = groups_lib.channel_groups(model)
    elif not isinstance(groups, groups_lib.ChannelGroups) or (
            groups.model is not model):
        raise ValueError(validation.message(
            "groups", groups, "the ChannelGroups of `model` (from "
                              "tfreg.channel_groups(model)) or None"))
    removed, deltas, kept = _removable(model_graph, list(groups), tolerance)
    for group, reason in kept:
        warnings.warn(f"shrink keeps the zero group {group!r}: {reason}.",
                      stacklevel=2)
    cuts, plans = _plans(model_graph, removed, deltas)
    by_name = {layer.name: layer for layer in model.layers}

    def clone(layer):
        config = layer.get_config()
        config.update(plans.get(id(layer), ({}, None))[0])
        return type(layer).from_config(config)

    small = keras.models.clone_model(model, clone_function=clone)
    for new_layer in small.layers:
        if isinstance(new_layer, keras.layers.InputLayer):
            continue
        layer = by_name[new_layer.name]
        if id(layer) in plans:
            new_layer.set_weights(_new_weights(
                layer, new_layer, cuts, plans[id(layer)][1]))
        else:
            new_layer.set_weights(layer.get_weights())
    return small
