"""`shrink`: a smaller Keras model without the zero channel groups.

A group is removed when its channel no longer carries information:

- its consumer slices are zero (nothing reads the channel), or
- its kernel slices are zero, or the BatchNormalization gamma entries
  that alone read them (network slimming): the channel does not depend on
  the input. It is then a constant c (a bias or BatchNormalization shift
  through the activation); each consumer that reads it with kernel rows K_c
  gets `sum_c c * sum_positions K_c` added to its bias, which is exact for
  Dense layers and "valid" convolutions when c is the same at every
  position the consumer reads. A group whose constant differs between
  positions (zero padding on the way, a concatenation along another axis)
  or whose nonzero constant reaches a "same"/"causal" convolution (which
  sees zero padding at the borders) is kept, with a warning.

Before returning, the shrunk model's outputs are compared with the
original's on a probe batch.

"Zero" means every entry has |w| <= tolerance. A layer that would lose all
its units keeps one of its groups (whose channel is constant or unread, so
the function is unchanged).
"""

import collections
import warnings

import numpy as np
import tensorflow as tf

from tfreg import _keras
from tfreg import validation
from tfreg import walk
from tfreg.pruning import graph as graph_lib
from tfreg.pruning import groups as groups_lib
from tfreg.pruning import rules

__all__ = ["shrink"]

keras = _keras.keras

# Largest difference of outputs (relative to their scale) that float32
# rounding explains; a wrong surgery changes them by far more.
_CHECK_TOLERANCE = 1e-4


def _tolerance(tolerance):
    number = validation.real("tolerance", tolerance,
                             "a finite float >= 0")
    if number < 0:
        raise ValueError(validation.message(
            "tolerance", tolerance, "a finite float >= 0"))
    return number


class _Values:
    """The numpy value of each variable, read once."""

    def __init__(self):
        self._values = {}
        self._largest = {}

    def __call__(self, variable):
        if id(variable) not in self._values:
            self._values[id(variable)] = np.asarray(variable.numpy())
        return self._values[id(variable)]

    def per_index(self, piece):
        """Largest |entry| of each index of a `Slice`."""
        key = (id(piece.variable), piece.axis)
        if key not in self._largest:
            value = np.abs(self(piece.variable))
            self._largest[key] = np.moveaxis(value, piece.axis, 0).reshape(
                value.shape[piece.axis], -1).max(1, initial=0.0)
        return self._largest[key][list(piece.indices)]


def _unread(group, values, tolerance):
    """Whether every consumer slice of `group` is zero."""
    pieces = [piece for piece in group.trainable_slices()
              if piece.role == groups_lib.CONSUMER]
    return bool(pieces) and all(
        values.per_index(piece).max(initial=0.0) <= tolerance
        for piece in pieces)


def _gated(piece, index, gates, values, tolerance):
    gate = gates.get((id(piece.layer), index))
    return gate is not None and abs(float(values(gate[0])[gate[1]])) <= (
        tolerance)


def _constant(group, values, gates, tolerance):
    """Whether `group`'s channel does not depend on the input: every
    kernel slice is zero, or its channel's only reader a zero gamma."""
    pieces = [piece for piece in group.slices
              if piece.role == groups_lib.KERNEL]
    return bool(pieces) and all(
        largest <= tolerance or _gated(piece, index, gates, values,
                                       tolerance)
        for piece in pieces
        for index, largest in zip(piece.indices, values.per_index(piece)))


def _probe_batch(model_graph, probe):
    """The inputs of the check (a flat list): `probe`, or one random
    example."""
    tensors = model_graph.inputs
    shapes = [tensor.shape for tensor in tensors]
    if probe is not None:
        batch = tf.nest.flatten(probe)
        if len(batch) != len(shapes) or any(
                np.shape(value)[1:] != tuple(
                    d if d is not None else np.shape(value)[i + 1]
                    for i, d in enumerate(shape[1:]))
                for value, shape in zip(batch, shapes)):
            raise ValueError(validation.message(
                "probe", probe, f"a batch of the model's inputs (shapes "
                                f"{[tuple(shape) for shape in shapes]})"))
        return [np.asarray(value) for value in batch]
    rng = np.random.default_rng(0)
    batch = []
    for tensor, shape in zip(tensors, shapes):
        # Free axes get 3 positions; integer inputs (token ids) 0 or 1.
        size = (1,) + tuple(3 if d is None else d for d in shape[1:])
        dtype = np.dtype(getattr(tensor.dtype, "name", tensor.dtype))
        if np.issubdtype(dtype, np.floating):
            batch.append(rng.normal(size=size).astype(dtype))
        elif dtype == np.bool_:
            batch.append(rng.integers(0, 2, size=size).astype(bool))
        else:
            batch.append(rng.integers(0, 2, size=size).astype(dtype))
    return batch


def _run(model, structure, batch):
    """The outputs of `model` on `batch` (the flat list of its inputs, of
    `structure`), as a list of float64 arrays."""
    outputs = model(tf.nest.pack_sequence_as(structure, batch),
                    training=False)
    return [np.asarray(value, "float64")
            for value in tf.nest.flatten(outputs)]


def _consumer_constants(model_graph, group_list, calls_of, batch, zeroed):
    """{id(consumer input): per-channel constant, NaN where not constant}.

    A channel of a constant group does not depend on the input, yet its
    value can still differ between positions (zero padding on the way, a
    concatenation along another axis): its entry is NaN unless it is the
    same at every position and example of `batch`. `zeroed` lists the
    entries (variable, axis, index) within the tolerance, set to 0 while
    the constants are read.
    """
    tensors = {}
    for group in group_list:
        for piece in group.slices:
            if piece.role == groups_lib.CONSUMER:
                for call in calls_of[id(piece.layer)]:
                    tensors[id(call.inputs[0])] = call.inputs[0]
    if not tensors:
        return {}
    probe = keras.Model(model_graph.input, list(tensors.values()))
    saved = {}
    try:
        for variable, axis, index in zeroed:
            if id(variable) not in saved:
                saved[id(variable)] = (variable, variable.numpy())
            value = variable.numpy()
            entries = [slice(None)] * value.ndim
            entries[axis] = index
            value[tuple(entries)] = 0
            variable.assign(value)
        values = _run(probe, model_graph.input, batch)
    finally:
        for variable, value in saved.values():
            variable.assign(value)
    constants = {}
    for key, value in zip(tensors, values):
        value = value.reshape(-1, value.shape[-1])
        constant = value.mean(0)
        # Vectorized activations round the same value differently at
        # different positions: equal within float32 rounding counts.
        spread = np.abs(value - constant).max(0)
        constant[spread > 1e-5 * np.maximum(1.0, np.abs(constant))] = np.nan
        constants[key] = constant
    return constants


def _zeroed(group_list, values, gates, tolerance):
    """The nonzero entries within the tolerance that make the groups'
    channels constant: (variable, axis, index)."""
    found = []
    for group in group_list if tolerance > 0 else ():
        for piece in group.slices:
            if piece.role != groups_lib.KERNEL:
                continue
            for index, largest in zip(piece.indices,
                                      values.per_index(piece)):
                if largest <= tolerance:
                    if largest > 0:
                        found.append((piece.variable, piece.axis, index))
                else:
                    gamma, entry = gates[(id(piece.layer), index)]
                    found.append((gamma, 0, entry))
    return found


def _fold(group, constants, calls_of, values, tolerance):
    """({id(layer): bias change} folding `group`'s constant, None) or
    (None, why it cannot be folded)."""
    deltas = {}
    for piece in group.slices:
        if piece.role != groups_lib.CONSUMER:
            continue
        rows = np.take(values(piece.variable), piece.indices,
                       axis=piece.axis).astype("float64")
        if np.abs(rows).max(initial=0) <= tolerance:
            continue
        rule = rules.rule_for(piece.layer)
        if not (isinstance(rule, rules.Producer) and rule.fold):
            return None, (f"its constant output reaches "
                          f"`{piece.layer.name}`, whose rule cannot fold "
                          f"a constant")
        found = [constants[id(call.inputs[0])][list(piece.indices)]
                 for call in calls_of[id(piece.layer)]]
        if any(np.isnan(value).any() for value in found):
            return None, (f"its constant output differs between the "
                          f"positions `{piece.layer.name}` reads (not "
                          f"foldable)")
        if any(not np.allclose(value, found[0], rtol=1e-5, atol=1e-5)
               for value in found):
            return None, (f"the calls of the shared layer "
                          f"`{piece.layer.name}` see different constants")
        value = found[0]
        if not value.any():
            continue
        if getattr(piece.layer, "padding", "valid") != "valid":
            return None, ("its nonzero constant output reaches a "
                          "convolution with padding (not foldable)")
        shape = [1] * rows.ndim
        shape[piece.axis] = len(value)
        delta = (rows * value.reshape(shape)).reshape(-1, rows.shape[-1])
        deltas[id(piece.layer)] = deltas.get(id(piece.layer), 0) + delta.sum(0)
    return deltas, None


def _removable(model_graph, groups, tolerance, batch, values):
    """(removed [(group, {id(layer): bias change})], [(group, why kept)])."""
    calls_of = collections.defaultdict(list)
    for call in model_graph.calls:
        calls_of[id(call.layer)].append(call)
    group_list = list(groups)
    unread = [_unread(group, values, tolerance) for group in group_list]
    constant = [not gone and _constant(group, values, groups.gates,
                                       tolerance)
                for group, gone in zip(group_list, unread)]
    folding = [group for group, is_constant in zip(group_list, constant)
               if is_constant]
    constants = _consumer_constants(
        model_graph, folding, calls_of, batch,
        _zeroed(folding, values, groups.gates, tolerance))
    removed, kept = [], []
    for group, gone, is_constant in zip(group_list, unread, constant):
        if not (gone or is_constant):
            continue
        fold, reason = ({}, None) if gone else _fold(
            group, constants, calls_of, values, tolerance)
        if fold is None:
            kept.append((group, reason))
        else:
            removed.append((group, fold))
    return _keep_one_per_layer(removed, kept), kept


def _keep_one_per_layer(removed, kept):
    """Puts back one group of each layer that would lose all its units."""
    # Units in no group (their channel reaches an output) count as kept.
    while True:
        gone = collections.Counter()
        units = {}
        for group, _ in removed:
            for piece in group.slices:
                if piece.role == groups_lib.KERNEL:
                    key = (piece.layer.name, id(piece.variable), piece.axis)
                    gone[key] += len(piece.indices)
                    units[key] = piece.variable
        empty = [key for key in gone
                 if gone[key] >= units[key].shape[key[2]]]
        if not empty:
            return removed
        name = empty[0][0]
        index = next(i for i, (group, _) in enumerate(removed)
                     if any(piece.layer.name == name
                            and piece.role == groups_lib.KERNEL
                            for piece in group.slices))
        kept.append((removed.pop(index)[0],
                     f"layer `{name}` would have no units left"))


class _Sizes:
    """What a rule's `config` reads: the sizes after the cut."""

    def __init__(self, cuts, removed_groups, channels, calls_of):
        self._cuts, self._removed = cuts, removed_groups
        self._channels, self._calls_of = channels, calls_of

    def size(self, variable, axis):
        """`variable`'s length along `axis` after the cut."""
        axis %= len(variable.shape)
        return variable.shape[axis] - len(
            self._cuts.get(id(variable), {}).get(axis, ()))

    def channels(self, tensor):
        """The number of channels of a call's tensor after the cut."""
        found = self._channels.get(walk.tensor_key(tensor))
        if found is None:
            return tensor.shape[-1]
        return sum(group not in self._removed for group in found)

    def call(self, layer):
        """The first call of `layer`."""
        return self._calls_of[id(layer)][0]


def _plans(model_graph, groups, removed, deltas):
    """Cuts {id(variable): {axis: indices}} and, per layer changed,
    (config changes, bias change or None)."""
    cuts = collections.defaultdict(lambda: collections.defaultdict(set))
    for group in removed:
        for piece in group.slices:
            cuts[id(piece.variable)][piece.axis].update(piece.indices)
    calls_of = collections.defaultdict(list)
    for call in model_graph.calls:
        calls_of[id(call.layer)].append(call)
    index_of = {id(group): index for index, group in enumerate(groups)}
    sizes = _Sizes(cuts, {index_of[id(group)] for group in removed},
                   groups.channels, calls_of)
    plans = {}
    for call in model_graph.calls:
        layer = call.layer
        if id(layer) in plans or not isinstance(layer, keras.layers.Layer):
            continue
        changed = id(layer) in deltas or any(
            id(variable) in cuts for variable in layer.weights)
        if not changed and not isinstance(layer, keras.layers.Reshape):
            continue
        current = layer.get_config()
        try:
            wanted = rules.rule_for(layer).config(layer, sizes)
        except (AttributeError, KeyError, IndexError, TypeError) as error:
            raise ValueError(
                f"shrink cannot rewrite the config of layer `{layer.name}` "
                f"({type(layer).__name__}): its rule failed with "
                f"{error!r}.") from error
        config = {key: value for key, value in wanted.items()
                  if current.get(key) != value}
        if id(layer) in deltas and not current.get("use_bias", True):
            config["use_bias"] = True
        if changed or config:
            plans[id(layer)] = (config, deltas.get(id(layer)))
    return cuts, plans


def _new_weights(layer, new_layer, cuts, delta, values):
    """The weights of `new_layer`: `layer`'s with the cut entries removed,
    and `delta` added to the bias."""
    weights = []
    for variable in layer.weights:
        value = values(variable)
        for axis, indices in sorted(cuts.get(id(variable), {}).items()):
            value = np.delete(value, sorted(indices), axis=axis)
        weights.append(value)
    if delta is None:
        return weights
    rule = rules.rule_for(layer)  # A Producer: only those fold.
    kernel = getattr(layer, rule.kernel)
    cut = cuts.get(id(kernel), {}).get(len(kernel.shape) - 1)
    delta = np.delete(np.asarray(delta), sorted(cut or ()))
    bias = getattr(layer, rule.bias, None)
    if bias is None:
        # Made with use_bias=True: the bias is new.
        position = [id(v) for v in new_layer.weights].index(
            id(getattr(new_layer, rule.bias)))
        weights.insert(position, delta.astype(weights[0].dtype))
        return weights
    position = [id(v) for v in layer.weights].index(id(bias))
    weights[position] = (weights[position].astype("float64")
                         + delta).astype(weights[position].dtype)
    return weights


def _build(model, model_graph, groups, removed, values):
    """The model without the `removed` (group, fold) pairs."""
    deltas = collections.defaultdict(float)
    for _, fold in removed:
        for key, delta in fold.items():
            deltas[key] = deltas[key] + delta
    cuts, plans = _plans(model_graph, groups, [group for group, _ in removed],
                         dict(deltas))
    by_name = {layer.name: layer for layer in model.layers}

    def clone(layer):
        if id(layer) not in plans:
            return type(layer).from_config(layer.get_config())
        config = layer.get_config()
        config.update(plans[id(layer)][0])
        return rules.rule_for(layer).rebuild(layer, config)

    small = keras.models.clone_model(model, clone_function=clone)
    for new_layer in small.layers:
        if isinstance(new_layer, keras.layers.InputLayer):
            continue
        layer = by_name[new_layer.name]
        if id(layer) in plans:
            new_layer.set_weights(_new_weights(
                layer, new_layer, cuts, plans[id(layer)][1], values))
        else:
            new_layer.set_weights([values(v) for v in layer.weights])
    return small


def _difference(expected, model, structure, batch):
    """Largest |difference| of `model`'s outputs from `expected`, relative
    to the outputs' scale (at least 1)."""
    found = _run(model, structure, batch)
    return max(float(np.abs(a - b).max(initial=0.0)) / max(
        1.0, float(np.abs(a).max(initial=0.0)))
               for a, b in zip(expected, found))


def _culprit(model, model_graph, groups, removed, expected, batch, values):
    """The first removed group whose removal changes the outputs.

    Binary search over prefixes of `removed`, each built and run once.
    """
    low, high = 0, len(removed)  # prefix `low` agrees, `high` differs.
    while high - low > 1:
        middle = (low + high) // 2
        small = _build(model, model_graph, groups, removed[:middle], values)
        if _difference(expected, small, model_graph.input,
                       batch) > _CHECK_TOLERANCE:
            high = middle
        else:
            low = middle
    return removed[high - 1][0]


def shrink(model, tolerance=0.0, groups=None, check=True, probe=None):
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
      check: Whether to compare the shrunk model's outputs with `model`'s
        on the probe batch before returning (a `ValueError` naming the
        group when they differ; with `tolerance` > 0 a warning giving the
        difference).
      probe: A batch of `model`'s inputs (an array, or a list of arrays
        for several inputs) for the check and for telling which constant
        channels are the same at every position. Default: one random
        example (standard normal; integer inputs 0 or 1; free axes of
        length 3).

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
    if not isinstance(check, bool):
        raise TypeError(validation.message("check", check, "True or False"))
    model_graph = graph_lib.graph(model)
    if groups is None:
        groups = groups_lib.channel_groups(model)
    elif not isinstance(groups, groups_lib.ChannelGroups) or (
            groups.model is not model):
        raise ValueError(validation.message(
            "groups", groups, "the ChannelGroups of `model` (from "
                              "tfreg.channel_groups(model)) or None"))
    batch = _probe_batch(model_graph, probe)
    values = _Values()
    with groups_lib._without_gc():  # pylint: disable=protected-access
        removed, kept = _removable(model_graph, groups, tolerance, batch,
                                   values)
        small = _build(model, model_graph, groups, removed, values)
    for group, reason in kept:
        warnings.warn(f"shrink keeps the zero group {group!r}: {reason}.",
                      stacklevel=2)
    if check and removed:
        expected = _run(model, model_graph.input, batch)
        difference = _difference(expected, small, model_graph.input, batch)
        if difference > _CHECK_TOLERANCE and tolerance > 0:
            warnings.warn(f"shrink(tolerance={tolerance}) changes the "
                          f"outputs on the probe batch by {difference:.3g} "
                          f"(relative to their scale).", stacklevel=2)
        elif difference > _CHECK_TOLERANCE:
            group = _culprit(model, model_graph, groups, removed, expected,
                             batch, values)
            raise ValueError(
                f"shrink would change the outputs of `{model.name}` by "
                f"{difference:.3g} (relative to their scale) on the probe "
                f"batch; removing {group!r} changes them: a rule for one "
                f"of its layers does not fit this model (a rule registered "
                f"for your own layer, or a bug in tfreg).")
    return small
