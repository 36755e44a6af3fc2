"""`channel_groups`: the prunable units of a model, coupled through its graph.

A unit is an output of a Dense layer or a filter of a convolution. Removing
it removes more than its kernel column: its bias entry, the entries of the
BatchNormalization and depthwise convolutions its channel passes through,
the matching input rows of every layer that consumes the channel, and every
unit whose channel is added, subtracted or multiplied to it (residual
connections). A `ChannelGroup` holds all of these; the groups partition the
prunable units.

How channels travel (channels_last; the channel is the last axis):

- Dense, Conv1D/2D/3D (groups=1): consume their input channels (kernel axis
  -2) and produce new ones (kernel axis -1 and bias). A softmax activation
  mixes its outputs, so its units are not prunable.
- DepthwiseConv1D/2D: output channel c*m + k comes from input channel c
  (depth multiplier m); its kernel and bias entries join the channel's group.
- BatchNormalization over the last axis: passes channels through; its
  entries join the group.
- Add, Subtract, Multiply, Average, Maximum, Minimum: channel j of every
  input joins one group. Concatenate on the last axis places its inputs'
  channels one after another.
- Flatten (or a Reshape to rank 2) after a convolution: flat index r holds
  channel r mod C.
- Pooling, global pooling, upsampling, cropping, Dropout and its kin,
  activations (softmax excepted), ActivityRegularization, Identity and a
  Reshape keeping the last axis pass channels through unchanged.

Any other layer ends the coupling: the units whose channels reach it, and
those whose channels reach a model output, are not prunable. Such layers
are listed in `ChannelGroups.unsupported` with the reason
(LayerNormalization and attention normalise or mix across channels).
"""

import collections
import math

import numpy as np

from tfreg import _keras
from tfreg import walk
from tfreg.pruning import graph as graph_lib

__all__ = ["CONSUMER", "ChannelGroup", "ChannelGroups", "DEPTHWISE", "KERNEL",
           "OTHER", "PRODUCERS", "Slice", "Unsupported", "channel_groups",
           "depthwise_kernel", "slice_size"]

keras = _keras.keras
layers = keras.layers

# Roles of a slice in its group.
KERNEL = "kernel"      # Makes the channel depend on the input.
CONSUMER = "consumer"  # Reads the channel (an input row of a kernel).
OTHER = "other"        # Bias, normalization entries and statistics.

Slice = collections.namedtuple(
    "Slice", ["layer", "variable", "axis", "indices", "role"])
Slice.__doc__ = """Entries `indices` along `axis` of `variable` (of `layer`)."""

Unsupported = collections.namedtuple(
    "Unsupported", ["layer", "class_name", "reason"])
Unsupported.__doc__ = """A layer that ends the coupling, and why."""

PRODUCERS = (layers.Dense, layers.Conv1D, layers.Conv2D, layers.Conv3D)
_TRANSPOSED = tuple(getattr(layers, name) for name in
                    ("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose")
                    if hasattr(layers, name))
DEPTHWISE = tuple(getattr(layers, name) for name in
                   ("DepthwiseConv1D", "DepthwiseConv2D")
                   if hasattr(layers, name))
_MERGES = (layers.Add, layers.Subtract, layers.Multiply, layers.Average,
           layers.Maximum, layers.Minimum)
_PASS_NAMES = (
    "Activation", "ReLU", "ELU", "LeakyReLU", "Dropout", "SpatialDropout1D",
    "SpatialDropout2D", "SpatialDropout3D", "GaussianDropout",
    "GaussianNoise", "AlphaDropout", "ActivityRegularization", "Identity",
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D",
    "AveragePooling2D", "AveragePooling3D", "GlobalMaxPooling1D",
    "GlobalMaxPooling2D", "GlobalMaxPooling3D", "GlobalAveragePooling1D",
    "GlobalAveragePooling2D", "GlobalAveragePooling3D", "UpSampling1D",
    "UpSampling2D", "UpSampling3D", "Cropping1D", "Cropping2D", "Cropping3D")
_PASS = tuple(getattr(layers, name) for name in _PASS_NAMES
              if hasattr(layers, name))
_CHANNEL_MIXING = ("softmax", "log_softmax")
_NOT_PRUNABLE = {
    "LayerNormalization": "normalizes across channels",
    "GroupNormalization": "normalizes across channels",
    "UnitNormalization": "normalizes across channels",
    "MultiHeadAttention": "attention heads are not prunable",
    "Attention": "attention mixes channels",
}


def _activation_name(layer):
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", str(activation))


def _channels_last(layer):
    return getattr(layer, "data_format", "channels_last") in (
        "channels_last", None)


def depthwise_kernel(layer):
    """The kernel of a depthwise convolution."""
    # Keras 3 names it `kernel`, tf_keras `depthwise_kernel`.
    kernel = getattr(layer, "depthwise_kernel", None)
    return layer.kernel if kernel is None else kernel


def _last_dim(tensor):
    return tensor.shape[-1]


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
    """

    def __init__(self, model, groups, unsupported):
        self.model = model
        self._groups = list(groups)
        self.unsupported = list(unsupported)

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

    def __init__(self):
        self.units = []           # (layer, index) per node.
        self.node_of_unit = {}    # (id(layer), index) -> node.
        self.parent = []
        self.blocked = []
        self.owner = {}           # (id(variable), axis, index) -> node.
        self.slices = {}          # (id(variable), axis, index) -> Slice.
        self.unread = {}          # (id(variable), axis, index) -> layer.
        self.unsupported = {}     # id(layer) -> Unsupported.

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

    def attach(self, node, layer, variable, axis, index, role):
        """Puts entry `index` along `axis` of `variable` in `node`'s group.

        A None node (a channel that cannot be removed) makes the entry
        unremovable: a shared layer whose other call reads a removable
        channel through it ends that channel's coupling.
        """
        if variable is None:
            return
        axis = axis % len(variable.shape)
        key = (id(variable), axis, index)
        if node is None:
            self.unread.setdefault(key, layer)
            if key in self.owner:
                self._conflict(self.owner[key], layer)
            return
        if key in self.unread:
            self._conflict(node, layer)
        if key in self.owner:
            self.union(self.owner[key], node)
        else:
            self.owner[key] = node
            self.slices[key] = (layer, variable, axis, index, role)

    def _conflict(self, node, layer):
        self.blocked[self.find(node)] = True
        self.unsupported_layer(layer, "a shared layer whose calls read "
                                      "channels that cannot be removed "
                                      "together")

    def unsupported_layer(self, layer, reason):
        self.unsupported.setdefault(id(layer), Unsupported(
            layer.name, type(layer).__name__, reason))

    def groups(self):
        members = collections.defaultdict(list)
        for node in range(len(self.units)):
            members[self.find(node)].append(node)
        pieces = collections.defaultdict(dict)
        for key, (layer, variable, axis, index, role) in self.slices.items():
            root = self.find(self.owner[key])
            pieces[root].setdefault(
                (id(variable), axis), [layer, variable, axis, [], role])
            pieces[root][(id(variable), axis)][3].append(index)
        found = []
        for root in sorted(members, key=lambda root: min(members[root])):
            if self.blocked[root]:
                continue
            units = [(self.units[node][0].name, self.units[node][1])
                     for node in sorted(members[root])]
            slices = [Slice(layer, variable, axis, tuple(sorted(indices)), role)
                      for layer, variable, axis, indices, role
                      in pieces[root].values()]
            found.append(ChannelGroup(units, slices))
        return found


def _trace_call(tracer, call, maps):
    """Records one call's slices and couplings; returns its output maps.

    A channel map lists, per index of a tensor's last axis, the node of the
    unit whose channel it carries, or None (not prunable).
    """
    layer = call.layer
    inputs = [maps.get(walk.tensor_key(tensor)) for tensor in call.inputs]
    name = type(layer).__name__
    if isinstance(layer, keras.layers.InputLayer):
        return [None]
    if isinstance(layer, PRODUCERS) and not isinstance(layer, _TRANSPOSED) \
            and _channels_last(layer) and getattr(layer, "groups", 1) == 1:
        for index, node in enumerate(inputs[0] or [None] * _last_dim(
                call.inputs[0])):
            tracer.attach(node, layer, layer.kernel, -2, index, CONSUMER)
        if _activation_name(layer) in _CHANNEL_MIXING:
            return [None]
        out = []
        for index in range(layer.kernel.shape[-1]):
            node = tracer.unit(layer, index)
            tracer.attach(node, layer, layer.kernel, -1, index, KERNEL)
            tracer.attach(node, layer, layer.bias, -1, index, OTHER)
            out.append(node)
        return [out]
    if isinstance(layer, DEPTHWISE) and _channels_last(layer):
        if inputs[0] is None:
            return [None]
        kernel = depthwise_kernel(layer)
        multiplier = kernel.shape[-1]
        out = []
        for channel, node in enumerate(inputs[0]):
            tracer.attach(node, layer, kernel, -2, channel, KERNEL)
            for k in range(multiplier):
                tracer.attach(node, layer, layer.bias, -1,
                              channel * multiplier + k, OTHER)
                out.append(node)
        return [out]
    if isinstance(layer, layers.BatchNormalization):
        axis = layer.axis if isinstance(layer.axis, int) else (
            layer.axis[0] if len(layer.axis) == 1 else None)
        rank = len(call.inputs[0].shape)
        if axis is not None and axis % rank == rank - 1:
            for index, node in enumerate(inputs[0] or ()):
                for variable in (layer.gamma, layer.beta, layer.moving_mean,
                                 layer.moving_variance):
                    tracer.attach(node, layer, variable, -1, index, OTHER)
            return [inputs[0]]
        return _end(tracer, layer, inputs, "normalizes over another axis")
    if isinstance(layer, _MERGES) or (
            isinstance(layer, layers.Concatenate) and not _on_last_axis(
                layer.axis, len(call.outputs[0].shape))):
        return [_merge(tracer, inputs, call)]
    if isinstance(layer, layers.Concatenate):
        out = []
        for tensor, channel_map in zip(call.inputs, inputs):
            out += channel_map or [None] * _last_dim(tensor)
        return [out]
    if isinstance(layer, (layers.Flatten, layers.Reshape)):
        return _reshape(tracer, layer, call, inputs)
    if isinstance(layer, _PASS) and _channels_last(layer):
        if _activation_name(layer) in _CHANNEL_MIXING:
            return _end(tracer, layer, inputs, "softmax mixes channels")
        return [inputs[0]]
    return _end(tracer, layer, inputs, _NOT_PRUNABLE.get(
        name, "not a layer channel_groups understands"))


def _on_last_axis(axis, rank):
    return axis % rank == rank - 1


def _end(tracer, layer, inputs, reason):
    for channel_map in inputs:
        tracer.block(channel_map)
    tracer.unsupported_layer(layer, reason)
    return [None]


def _merge(tracer, inputs, call):
    """Elementwise merge: channel j of every input joins one group."""
    widths = {_last_dim(tensor) for tensor in call.inputs}
    if any(channel_map is None for channel_map in inputs) or len(widths) > 1:
        for channel_map in inputs:
            tracer.block(channel_map)
        return None
    out = []
    for nodes in zip(*inputs):
        if any(node is None for node in nodes):
            tracer.block(nodes)
            out.append(None)
            continue
        root = nodes[0]
        for node in nodes[1:]:
            root = tracer.union(root, node)
        out.append(root)
    return out


def _reshape(tracer, layer, call, inputs):
    """Flatten/Reshape: channel kept, or flattened to strided rows."""
    in_shape, out_shape = call.inputs[0].shape, call.outputs[0].shape
    if inputs[0] is None:
        return [None]
    if len(in_shape) == len(out_shape) == 2 or (
            isinstance(layer, layers.Reshape)
            and out_shape[-1] == in_shape[-1] and len(out_shape) > 2):
        return [inputs[0]]
    positions = in_shape[1:-1]
    if len(out_shape) == 2 and all(d is not None for d in positions) and (
            not isinstance(layer, layers.Flatten) or _channels_last(layer)):
        return [inputs[0] * math.prod(positions)]
    return _end(tracer, layer, inputs, "reshape that moves the channel axis")


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
    model_graph = graph_lib.graph(model)
    tracer = _Tracer()
    maps = {}
    for call in model_graph.calls:
        for tensor, channel_map in zip(call.outputs,
                                       _trace_call(tracer, call, maps)):
            maps[walk.tensor_key(tensor)] = channel_map
    for tensor in model_graph.outputs:
        tracer.block(maps.get(walk.tensor_key(tensor)))
    unsupported = [entry for entry in tracer.unsupported.values()]
    return ChannelGroups(model, tracer.groups(), unsupported)
