"""`channel_groups`: the prunable units of a model, coupled through its graph.

A unit is an output of a Dense layer, a filter of a convolution, an
Embedding dimension or an attention head. Removing it removes more than
its kernel column: its bias entry, the entries of the BatchNormalization
and depthwise convolutions its channel passes through,
the matching input rows of every layer that consumes the channel, and every
unit whose channel is added, subtracted or multiplied to it (residual
connections). A `ChannelGroup` holds all of these; the groups partition the
prunable units.

Each layer type's rule (`tfreg.pruning.rules`, open to your own layers
through `register_layer`) says how channels go through it: which slices
of its variables join a channel's group, which units it makes, or that it
ends the coupling. The units whose channels reach a layer that ends the
coupling, or a model output, are not prunable; such layers are listed in
`ChannelGroups.unsupported` with the reason.
"""

import collections
import contextlib
import gc
import math

import numpy as np

from tfreg import _keras
from tfreg import walk
from tfreg.pruning import graph as graph_lib
from tfreg.pruning import rules

__all__ = ["CONSUMER", "ChannelGroup", "ChannelGroups", "KERNEL", "OTHER",
           "Slice", "Unsupported", "channel_groups", "slice_size"]

keras = _keras.keras

KERNEL, CONSUMER, OTHER = rules.KERNEL, rules.CONSUMER, rules.OTHER

Slice = collections.namedtuple(
    "Slice", ["layer", "variable", "axis", "indices", "role"])
Slice.__doc__ = """Entries `indices` along `axis` of `variable` (of `layer`)."""

Unsupported = collections.namedtuple(
    "Unsupported", ["layer", "class_name", "reason"])
Unsupported.__doc__ = """A layer that ends the coupling, and why."""


class ChannelGroup:
    """A set of units removed together and every slice that goes with them.

    Attributes:
      units: Tuple of (layer name, unit index) of the Dense units and
        convolution filters in the group.
      slices: Tuple of `Slice`s (layer, variable, axis, indices, role): the
        entries of each variable that belong to the group. Roles: "kernel"
        (the slices that make the channel depend on the input: producer
        kernel columns, depthwise kernel entries), "consumer" (input rows of
        the layers that read it), "other" (bias, normalization entries and
        moving statistics).
    """

    def __init__(self, units, slices):
        self.units = tuple(units)
        self.slices = tuple(slices)

    def trainable_slices(self):
        """The slices of trainable variables (those a penalty spans)."""
        return tuple(piece for piece in self.slices
                     if piece.variable.trainable)

    @property
    def size(self):
        """Number of trainable entries in the group."""
        return sum(slice_size(piece) for piece in self.trainable_slices())

    def max_abs(self, role=None):
        """Largest |entry| over the trainable slices (of one `role` if
        given)."""
        values = [np.abs(_slice_value(piece)).max(initial=0.0)
                  for piece in self.trainable_slices()
                  if role is None or piece.role == role]
        return float(max(values, default=0.0))

    def __repr__(self):
        units = ", ".join(f"{name}[{index}]" for name, index in self.units)
        return f"ChannelGroup({units}; {len(self.slices)} slices)"


def slice_size(piece):
    """Number of entries in a `Slice`."""
    shape = list(piece.variable.shape)
    return len(piece.indices) * math.prod(shape) // shape[piece.axis]


def _slice_value(piece):
    value = np.asarray(piece.variable.numpy() if hasattr(
        piece.variable, "numpy") else piece.variable)
    return np.take(value, piece.indices, axis=piece.axis)


class ChannelGroups:
    """The coupled groups of a model (a sequence of `ChannelGroup`).

    Attributes:
      model: The model traced.
      unsupported: List of `Unsupported` (layer name, class name, reason):
        the layers that end the coupling.
      gates: {(id(layer), unit index): (gamma, index)}: units whose channel
        only a BatchNormalization reads; a zero gamma entry makes it a
        constant (its beta).
      channels: {tensor key: [group index or None per channel]} of the
        traced tensors.
      unit_count: The number of units the model has (in a group or not):
        `sum(len(group.units) for group in groups) / groups.unit_count` is
        the prunable share.
    """

    def __init__(self, model, groups, unsupported, gates=None):
        self.model = model
        self._groups = list(groups)
        self.unsupported = list(unsupported)
        self.gates = dict(gates or {})
        self.channels = {}
        self.unit_count = sum(len(group.units) for group in self._groups)

    def __len__(self):
        return len(self._groups)

    def __iter__(self):
        return iter(self._groups)

    def __getitem__(self, index):
        return self._groups[index]

    def __repr__(self):
        return (f"ChannelGroups({len(self)} groups, "
                f"{len(self.unsupported)} unsupported layers)")


class _Tracer:
    """Union-find over units, with the slices and blocks found per unit."""

    def __init__(self, model_graph):
        self.units = []           # (layer, index) per node.
        self.node_of_unit = {}    # (id(layer), index) -> node.
        self.parent = []
        self.blocked = []
        # (id(variable), axis) -> _Entries of its indices.
        self.entries = {}
        self.attached = 0         # Entries given an owner so far.
        self.unsupported = {}     # id(layer) -> Unsupported.
        # (id(producer layer), unit index) -> (gamma, index) of the only
        # BatchNormalization reading that unit's channel.
        self.gates = {}
        self.producer = {}        # tensor key -> call.
        self.readers = collections.Counter()  # tensor key -> calls.
        self.calls = collections.Counter()    # id(layer) -> calls.
        for call in model_graph.calls:
            self.calls[id(call.layer)] += 1
            for tensor in call.outputs:
                self.producer[walk.tensor_key(tensor)] = call
            for tensor in call.inputs:
                self.readers[walk.tensor_key(tensor)] += 1
        for tensor in model_graph.outputs:
            self.readers[walk.tensor_key(tensor)] += 1

    def unit(self, layer, index):
        key = (id(layer), index)
        if key not in self.node_of_unit:
            self.node_of_unit[key] = len(self.units)
            self.units.append((layer, index))
            self.parent.append(len(self.parent))
            self.blocked.append(False)
        return self.node_of_unit[key]

    def find(self, node):
        while self.parent[node] != node:
            self.parent[node] = self.parent[self.parent[node]]
            node = self.parent[node]
        return node

    def union(self, first, second):
        first, second = self.find(first), self.find(second)
        if first != second:
            self.parent[second] = first
            self.blocked[first] = self.blocked[first] or self.blocked[second]
        return first

    def block(self, channel_map):
        for node in channel_map or ():
            if node is not None:
                self.blocked[self.find(node)] = True

    def _entries(self, layer, variable, axis, role):
        rank = len(variable.shape)
        key = (id(variable), axis % rank)
        found = self.entries.get(key)
        if found is None:
            found = self.entries[key] = _Entries(layer, variable, axis % rank,
                                                 role)
        return found

    def attach(self, node, layer, variable, axis, index, role):
        """Puts entry `index` along `axis` of `variable` in `node`'s group.

        A None node (a channel that cannot be removed) makes the entry
        unremovable: a shared layer whose other call reads a removable
        channel through it ends that channel's coupling.
        """
        if variable is not None:
            self._put(self._entries(layer, variable, axis, role), index,
                      node, layer)

    def attach_all(self, nodes, layer, variable, axis, role):
        """`attach(nodes[i], layer, variable, axis, i, role)` for each i."""
        if variable is None:
            return
        entries = self._entries(layer, variable, axis, role)
        for index, node in enumerate(nodes):
            self._put(entries, index, node, layer)

    def _put(self, entries, index, node, layer):
        owner = entries.owner
        if node is None:
            if entries.unread[index] is None:
                entries.unread[index] = layer
            if owner[index] >= 0:
                self._conflict(owner[index], layer)
            return
        if entries.unread[index] is not None:
            self._conflict(node, layer)
        if owner[index] >= 0:
            self.union(owner[index], node)
        else:
            owner[index] = node
            entries.order[index] = self.attached
            self.attached += 1

    def end(self, call, inputs, reason):
        """Ends the coupling of `call`'s input channels, listing its layer
        with `reason` if one of them was prunable; returns its output
        maps (None)."""
        if any(node is not None for channel_map in inputs
               for node in channel_map or ()):
            self.unsupported_layer(call.layer, reason)
        for channel_map in inputs:
            self.block(channel_map)
        return [None] * len(call.outputs)

    def gate(self, node, call, gamma, index):
        """Notes that channel `index` of `call`'s input (a unit's channel)
        is scaled by `gamma[index]`: when the unit's producer is called
        once and this is the only reader, a zero gamma makes the channel
        a constant."""
        key = walk.tensor_key(call.inputs[0])
        producer = self.producer.get(key)
        if node is None or producer is None or self.readers[key] != 1 or (
                self.calls[id(producer.layer)] != 1):
            return
        self.gates[(id(producer.layer), index)] = (gamma, index)

    def _conflict(self, node, layer):
        self.blocked[self.find(node)] = True
        self.unsupported_layer(layer, "a shared layer whose calls read "
                                      "channels that cannot be removed "
                                      "together")

    def unsupported_layer(self, layer, reason):
        self.unsupported.setdefault(id(layer), Unsupported(
            layer.name, type(layer).__name__, reason))

    def groups(self):
        roots = np.array([self.find(node) for node in range(len(self.units))],
                         dtype=np.int64)
        blocked = np.array(self.blocked, dtype=bool)
        # Per root: [(first attach, Slice)]; a group's slices come in the
        # order their first entry was attached.
        pieces = collections.defaultdict(list)
        for entries in self.entries.values():
            owner = np.array(entries.owner, dtype=np.int64)
            indices = np.flatnonzero(owner >= 0)
            owner_roots = roots[owner[indices]]
            free = ~blocked[owner_roots]
            indices, owner_roots = indices[free], owner_roots[free]
            if not len(indices):
                continue
            by_root = np.argsort(owner_roots, kind="stable")
            indices, owner_roots = indices[by_root], owner_roots[by_root]
            order = np.array(entries.order, dtype=np.int64)[indices]
            starts = np.flatnonzero(np.diff(owner_roots, prepend=-1))
            firsts = np.minimum.reduceat(order, starts).tolist()
            ends = starts[1:].tolist() + [len(indices)]
            indices = indices.tolist()
            for root, first, start, end in zip(
                    owner_roots[starts].tolist(), firsts, starts.tolist(),
                    ends):
                pieces[root].append((first, Slice(
                    entries.layer, entries.variable, entries.axis,
                    tuple(indices[start:end]), entries.role)))
        members = collections.defaultdict(list)
        for node, root in enumerate(roots.tolist()):
            members[root].append(node)  # In increasing order.
        found = []
        self.group_of = {}        # root -> index in the groups found.
        for root in sorted(members, key=lambda root: members[root][0]):
            if blocked[root]:
                continue
            self.group_of[root] = len(found)
            units = [(self.units[node][0].name, self.units[node][1])
                     for node in members[root]]
            found.append(ChannelGroup(units, [
                piece for _, piece in sorted(pieces[root],
                                             key=lambda item: item[0])]))
        return found


class _Entries:
    """The entries along one axis of one variable: the node owning each
    (-1: none), when it was attached, and the layer that found it
    unremovable (None: none)."""

    def __init__(self, layer, variable, axis, role):
        self.layer, self.variable, self.axis, self.role = (
            layer, variable, axis, role)
        size = variable.shape[axis]
        self.owner = [-1] * size
        self.order = [0] * size
        self.unread = [None] * size


@contextlib.contextmanager
def _without_gc():
    """Runs the block with Python's cyclic garbage collector off.

    Tracing makes about one object per channel of each variable; each
    collection those allocations trigger walks every object of TensorFlow
    and Keras, which costs more than the trace itself. The objects made
    hold no cycles, so reference counting frees them.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def channel_groups(model):
    """The prunable units of `model`, coupled through its graph.

    Args:
      model: A functional Keras model or a Sequential model built with an
        Input, channels_last.

    Returns:
      A `ChannelGroups`: a sequence of `ChannelGroup` (units, slices), one
      per set of units that must be removed together, in layer order, and
      `.unsupported`, the layers that end the coupling. Units whose channel
      reaches a model output or an unsupported layer are in no group.

    >>> import tfreg
    >>> from tfreg._keras import keras
    >>> model = keras.Sequential([
    ...     keras.Input((3,)), keras.layers.Dense(4, name="hidden"),
    ...     keras.layers.Dense(2, name="out")])
    >>> groups = tfreg.channel_groups(model)
    >>> len(groups), groups[0].units, groups[0].size  # 3 kernel + 1 bias + 2
    (4, (('hidden', 0),), 6)
    """
    with _without_gc():
        return _channel_groups(model)


def _channel_groups(model):
    model_graph = graph_lib.graph(model)
    tracer = _Tracer(model_graph)
    maps = {}
    for call in model_graph.calls:
        inputs = [maps.get(walk.tensor_key(tensor)) for tensor in call.inputs]
        first_unit = len(tracer.units)
        try:
            outputs = rules.rule_for(call.layer).trace(tracer, call, inputs)
        except (AttributeError, KeyError, IndexError, TypeError,
                ValueError) as error:
            # A layer unlike its rule expects (a subclass, an unusual
            # config) ends the coupling rather than the trace; the units
            # it made before failing are not prunable either.
            tracer.block(range(first_unit, len(tracer.units)))
            outputs = tracer.end(call, inputs, f"its rule failed: {error!r}")
        for tensor, channel_map in zip(call.outputs, outputs):
            maps[walk.tensor_key(tensor)] = channel_map
    for tensor in model_graph.outputs:
        tracer.block(maps.get(walk.tensor_key(tensor)))
    found = ChannelGroups(model, tracer.groups(),
                          list(tracer.unsupported.values()), tracer.gates)
    found.unit_count = len(tracer.units)
    # Per tensor, the index of the group of each channel (None: kept).
    found.channels = {
        key: [None if node is None else tracer.group_of.get(
            tracer.find(node)) for node in channel_map]
        for key, channel_map in maps.items() if channel_map is not None}
    return found
