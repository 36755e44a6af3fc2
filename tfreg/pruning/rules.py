"""The layer rules: how channels pass through each layer type, how `shrink`
rewrites its width, and its FLOPs, in one registry.

A channel map lists, per index of a tensor's last axis, the node of the
unit whose channel it carries, or None (a channel that cannot be removed).
A rule's `trace` reads its call's input maps, records the slices of its
variables that belong to each channel's group, and returns the maps of its
outputs; `config` gives the config entries `shrink` rewrites; `flops`
counts one example's multiply-adds.

Register a rule for a layer of your own with `register_layer`:

    tfreg.pruning.register_layer(
        MyScale, tfreg.pruning.PassThrough(per_channel=["scale"],
                                           width="units"))
"""

import math

import numpy as np

from tfreg import _keras
from tfreg import validation

__all__ = ["CONSUMER", "EndsCoupling", "KERNEL", "LayerRule", "OTHER",
           "PassThrough", "Producer", "register_layer", "registered",
           "rule_for", "unregister_layer"]

keras = _keras.keras
layers = keras.layers

# Roles of a slice in its group.
KERNEL = "kernel"      # Makes the channel depend on the input.
CONSUMER = "consumer"  # Reads the channel (an input row of a kernel).
OTHER = "other"        # Bias, normalization entries and statistics.

_CHANNEL_MIXING = ("softmax", "log_softmax")


def _activation_name(layer):
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", str(activation))


def _channels_last(layer):
    return getattr(layer, "data_format", "channels_last") in (
        "channels_last", None)


def _width(tensor):
    return tensor.shape[-1]


def _positions(tensor):
    """Number of positions (entries per channel) of one example."""
    return math.prod(d for d in tensor.shape[1:-1] if d is not None)


def _map(channel_map, tensor):
    """`channel_map`, or Nones (a channel that cannot be removed)."""
    return channel_map if channel_map is not None else [None] * _width(tensor)


class LayerRule:
    """How channels go through one layer type (subclass to add your own).

    `trace(tracer, call, inputs)`: `call` has `layer`, `inputs` and
    `outputs` (symbolic tensors); `inputs` are their channel maps (lists of
    nodes per channel, or None). Record slices with
    `tracer.attach(node, layer, variable, axis, index, role)`, new units
    with `tracer.unit(layer, index)`, and return one map per output;
    `tracer.end(call, inputs, reason)` ends the coupling.

    `config(layer, sizes)`: the config entries to rewrite after the cut;
    `sizes.size(variable, axis)` is a variable's new length along `axis`,
    `sizes.channels(tensor)` a call tensor's new channel count.

    `flops(call)`: 2 x multiply-adds of one example (default 0).

    `rebuild(layer, config)`: the new layer from its rewritten config
    (default `type(layer).from_config(config)`).

    A constant input channel is folded into the bias only by a `Producer`
    with `fold=True` (kernels that sum input rows: Dense, "valid"
    convolutions); other rules keep such a channel.
    """

    description = "ends the coupling"

    def trace(self, tracer, call, inputs):
        return tracer.end(call, inputs, "not a layer channel_groups "
                                        "understands")

    def config(self, layer, sizes):
        del layer, sizes
        return {}

    def flops(self, call):
        del call
        return 0

    def rebuild(self, layer, config):
        return type(layer).from_config(config)


class EndsCoupling(LayerRule):
    """A layer whose channels cannot be removed, and why."""

    def __init__(self, reason):
        self.reason = reason
        self.description = f"ends the coupling: {reason}"

    def trace(self, tracer, call, inputs):
        return tracer.end(call, inputs, self.reason)


class PassThrough(LayerRule):
    """Channel j of the input is channel j of the output.

    Args:
      per_channel: Names of the layer's variables with one entry per
        channel on their last axis (a scale, a shift): they join the
        channel's group.
      width: The config key holding the number of channels, rewritten by
        `shrink` (None: the layer takes it from its input).
    """

    description = "channels pass through"

    def __init__(self, per_channel=(), width=None):
        self.per_channel = tuple(per_channel)
        self.width = width
        if self.per_channel:
            self.description = ("channels pass through; per-channel "
                                + ", ".join(self.per_channel))

    def trace(self, tracer, call, inputs):
        layer = call.layer
        if not _channels_last(layer):
            return tracer.end(call, inputs, "channels_first")
        if _activation_name(layer) in _CHANNEL_MIXING:
            return tracer.end(call, inputs, "softmax mixes channels")
        channel_map = inputs[0] if inputs else None
        for name in self.per_channel:
            variable = getattr(layer, name, None)
            if variable is None or variable.shape[-1] != _width(
                    call.inputs[0]):
                return tracer.end(call, inputs, f"`{name}` has no entry "
                                                f"per channel")
            tracer.attach_all(_map(channel_map, call.inputs[0]), layer,
                              variable, -1, OTHER)
        return [channel_map] * len(call.outputs)

    def config(self, layer, sizes):
        if self.width is None or not self.per_channel:
            return {}
        variable = getattr(layer, self.per_channel[0])
        return {self.width: sizes.size(variable, len(variable.shape) - 1)}


class Producer(LayerRule):
    """Reads its input channels (kernel axis `in_axis`) and makes new ones
    (kernel axis `out_axis`, the bias): Dense, convolutions.

    Args:
      kernel, bias: Names of the variables (bias None: none).
      width: The config key of the number of outputs ("units",
        "filters").
      in_axis, out_axis: The kernel's input and output axes (in_axis None:
        the input is not a channel, as an Embedding's token ids).
      fold: Whether a constant input channel folds into the bias.
    """

    def __init__(self, kernel="kernel", bias="bias", width="filters",
                 in_axis=-2, out_axis=-1, fold=True):
        self.kernel, self.bias, self.width = kernel, bias, width
        self.in_axis, self.out_axis, self.fold = in_axis, out_axis, fold
        self.description = (f"makes new channels: {kernel} axis {out_axis}"
                            + (f", {bias}" if bias else "")
                            + (f"; reads kernel axis {in_axis}"
                               if in_axis is not None else ""))

    def trace(self, tracer, call, inputs):
        layer = call.layer
        if not _channels_last(layer):
            return tracer.end(call, inputs, "channels_first")
        kernel = getattr(layer, self.kernel)
        groups = getattr(layer, "groups", 1) or 1
        if self.in_axis is not None:
            if groups > 1:
                return _grouped(tracer, call, inputs, kernel, groups, self)
            tracer.attach_all(_map(inputs[0], call.inputs[0]), layer, kernel,
                              self.in_axis, CONSUMER)
        if _activation_name(layer) in _CHANNEL_MIXING:
            return [None]
        bias = getattr(layer, self.bias, None) if self.bias else None
        out = [tracer.unit(layer, index)
               for index in range(kernel.shape[self.out_axis])]
        tracer.attach_all(out, layer, kernel, self.out_axis, KERNEL)
        tracer.attach_all(out, layer, bias, -1, OTHER)
        return [out]

    def config(self, layer, sizes):
        kernel = getattr(layer, self.kernel)
        width = sizes.size(kernel, self.out_axis % len(kernel.shape))
        groups = getattr(layer, "groups", 1) or 1
        config = {self.width: width}
        if groups > 1:
            config["groups"] = width * groups // kernel.shape[self.out_axis]
        return config

    def flops(self, call):
        kernel = getattr(call.layer, self.kernel)
        if self.in_axis is None:
            return 0
        return 2 * _positions(call.outputs[0]) * math.prod(kernel.shape)


def _grouped(tracer, call, inputs, kernel, groups, rule):
    """A grouped convolution: each group of channels (its inputs and its
    filters) goes whole; the kernel's input rows are shared by the
    groups."""
    layer = call.layer
    inner = _width(call.inputs[0]) // groups
    outer = kernel.shape[-1] // groups
    channel_map = _map(inputs[0], call.inputs[0])
    bias = getattr(layer, rule.bias, None) if rule.bias else None
    out = []
    for group in range(groups):
        node = tracer.unit(layer, group * outer)
        for index in range(group * outer, (group + 1) * outer):
            tracer.union(node, tracer.unit(layer, index))
            tracer.attach(node, layer, kernel, -1, index, KERNEL)
            tracer.attach(node, layer, bias, -1, index, OTHER)
            out.append(node)
        for source in channel_map[group * inner:(group + 1) * inner]:
            if source is None:
                tracer.block([node])
            else:
                tracer.union(node, source)
    return [out]


class _Transposed(Producer):
    """Conv*Transpose: kernel (..., filters, input channels)."""

    def __init__(self):
        super().__init__(in_axis=-1, out_axis=-2, fold=False)

    def trace(self, tracer, call, inputs):
        if (getattr(call.layer, "groups", 1) or 1) > 1:
            return tracer.end(call, inputs, "grouped transposed convolution")
        return super().trace(tracer, call, inputs)


class _Depthwise(LayerRule):
    """Output channel c*m + k comes from input channel c (multiplier m)."""

    description = ("output channels c*m .. c*m+m-1 carry input channel c's "
                   "group (kernel entries of c, bias)")

    def trace(self, tracer, call, inputs):
        layer = call.layer
        if not _channels_last(layer):
            return tracer.end(call, inputs, "channels_first")
        if inputs[0] is None:
            return [None]
        kernel = _depthwise_kernel(layer)
        multiplier = kernel.shape[-1]
        tracer.attach_all(inputs[0], layer, kernel, -2, OTHER)
        out = [node for node in inputs[0] for _ in range(multiplier)]
        tracer.attach_all(out, layer, getattr(layer, "bias", None), -1, OTHER)
        return [out]

    def flops(self, call):
        kernel = _depthwise_kernel(call.layer)
        return 2 * _positions(call.outputs[0]) * math.prod(kernel.shape)


class _Separable(LayerRule):
    """Depthwise then pointwise: input channel c is read by its depthwise
    entries and the pointwise rows c*m .. c*m+m-1; the pointwise filters
    are new channels."""

    description = ("reads depthwise entries of c and pointwise rows "
                   "c*m .. c*m+m-1; makes new channels: pointwise axis -1, "
                   "bias")

    def trace(self, tracer, call, inputs):
        layer = call.layer
        if not _channels_last(layer):
            return tracer.end(call, inputs, "channels_first")
        depthwise, pointwise = layer.depthwise_kernel, layer.pointwise_kernel
        multiplier = depthwise.shape[-1]
        channel_map = _map(inputs[0], call.inputs[0])
        tracer.attach_all(channel_map, layer, depthwise, -2, CONSUMER)
        tracer.attach_all([node for node in channel_map
                           for _ in range(multiplier)],
                          layer, pointwise, -2, CONSUMER)
        if _activation_name(layer) in _CHANNEL_MIXING:
            return [None]
        out = [tracer.unit(layer, index)
               for index in range(pointwise.shape[-1])]
        tracer.attach_all(out, layer, pointwise, -1, KERNEL)
        tracer.attach_all(out, layer, getattr(layer, "bias", None), -1, OTHER)
        return [out]

    def config(self, layer, sizes):
        return {"filters": sizes.size(layer.pointwise_kernel, 3 if len(
            layer.pointwise_kernel.shape) == 4 else 2)}

    def flops(self, call):
        layer = call.layer
        return 2 * (_positions(call.outputs[0]) * (
            math.prod(layer.depthwise_kernel.shape)
            + math.prod(layer.pointwise_kernel.shape)))


class _BatchNormalization(LayerRule):
    """Normalizes each channel on its own: its entries join the group."""

    description = ("channels pass through; gamma, beta, moving mean and "
                   "variance entries (last axis)")

    def trace(self, tracer, call, inputs):
        layer = call.layer
        axis = layer.axis if isinstance(layer.axis, int) else (
            layer.axis[0] if len(layer.axis) == 1 else None)
        rank = len(call.inputs[0].shape)
        if axis is None or axis % rank != rank - 1:
            return tracer.end(call, inputs, "normalizes over another axis")
        channel_map = _map(inputs[0], call.inputs[0])
        for variable in (layer.gamma, layer.beta, layer.moving_mean,
                         layer.moving_variance):
            tracer.attach_all(channel_map, layer, variable, -1, OTHER)
        if layer.gamma is not None:
            for index, node in enumerate(channel_map):
                tracer.gate(node, call, layer.gamma, index)
        return [inputs[0]]


class _Merge(LayerRule):
    """Elementwise merge: channel j of every input joins one group."""

    description = "channel j of every input joins one group"

    def trace(self, tracer, call, inputs):
        widths = {_width(tensor) for tensor in call.inputs}
        if len(call.inputs) == 1:
            return [inputs[0]]
        if len(widths) > 1:
            if None in widths or len(widths - {1}) > 1:
                return tracer.end(call, inputs, "inputs of different widths")
            # One value broadcast over every channel: its own channel
            # cannot go, the others pass through.
            for tensor, channel_map in zip(call.inputs, inputs):
                if _width(tensor) == 1:
                    tracer.block(channel_map)
            inputs = [channel_map for tensor, channel_map
                      in zip(call.inputs, inputs) if _width(tensor) != 1]
            if len(inputs) == 1:
                return [inputs[0]]
        if any(channel_map is None for channel_map in inputs):
            for channel_map in inputs:
                tracer.block(channel_map)
            return [None]
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
        return [out]


class _Concatenate(LayerRule):
    """On the last axis: channels keep their group at their offset; on
    another axis: like a merge."""

    description = ("on the last axis: channels keep their group at their "
                   "offset; on another axis: channel j of every input "
                   "joins one group")

    def trace(self, tracer, call, inputs):
        rank = len(call.outputs[0].shape)
        axis = getattr(call.layer, "axis", -1)
        if axis % rank != rank - 1:
            return _Merge().trace(tracer, call, inputs)
        out = []
        for tensor, channel_map in zip(call.inputs, inputs):
            out += _map(channel_map, tensor)
        return [out]


class _Reshape(LayerRule):
    """Keeping the last axis (target rewritten), or flattening to rank 2
    (flat index r holds channel r mod C)."""

    description = ("keeping the last axis: channels pass through; to "
                   "rank 2: flat rows r with r mod C = c (a Reshape's "
                   "target is rewritten)")

    def trace(self, tracer, call, inputs):
        layer = call.layer
        in_shape, out_shape = call.inputs[0].shape, call.outputs[0].shape
        if inputs[0] is None:
            return [None]
        if out_shape[-1] == in_shape[-1] and (
                len(out_shape) > 2 or len(in_shape) == 2):
            return [inputs[0]]
        positions = in_shape[1:-1]
        if len(out_shape) == 2 and all(d is not None for d in positions) and (
                _channels_last(layer)):
            return [inputs[0] * math.prod(positions)]
        return tracer.end(call, inputs, "reshape that moves the channel axis")

    def config(self, layer, sizes):
        target = getattr(layer, "target_shape", None)
        if target is None:
            return {}
        call = sizes.call(layer)
        in_shape, out_shape = call.inputs[0].shape, call.outputs[0].shape
        channels = sizes.channels(call.inputs[0])
        if channels == in_shape[-1] or target[-1] == -1:
            return {}
        if out_shape[-1] == in_shape[-1]:
            return {"target_shape": tuple(target[:-1]) + (channels,)}
        # Flattened: every position keeps `channels` entries.
        return {"target_shape": (math.prod(in_shape[1:-1]) * channels,)}


class _Rescaling(PassThrough):
    """x * scale + offset with numbers: channels pass through."""

    def trace(self, tracer, call, inputs):
        layer = call.layer
        if any(getattr(layer, name, 0) is not None and np.ndim(
                getattr(layer, name, 0)) > 0 for name in ("scale", "offset")):
            return tracer.end(call, inputs, "a scale or offset per channel")
        return super().trace(tracer, call, inputs)


class _MultiHeadAttention(LayerRule):
    """Heads as units: a head's query, key and value kernel slices and
    biases, read by its rows of the output projection; the projection's
    outputs are new channels."""

    description = ("heads are units (query/key/value kernel slices and "
                   "biases of a head, its rows of the output projection; "
                   "`num_heads` rewritten); reads the query, key and value "
                   "kernels' input rows; makes new channels: the output "
                   "projection")

    def trace(self, tracer, call, inputs):
        layer = call.layer
        if getattr(layer, "_use_gate", False):
            return tracer.end(call, inputs, "gated attention")
        query, key, value = (layer._query_dense, layer._key_dense,  # pylint: disable=protected-access
                             layer._value_dense)  # pylint: disable=protected-access
        output = layer._output_dense  # pylint: disable=protected-access
        if len(call.inputs) == 2:
            readers = ((inputs[0], call.inputs[0], (query,)),
                       (inputs[1], call.inputs[1], (key, value)))
        else:
            # A separate key or a mask: the inputs stay whole.
            for channel_map in inputs:
                tracer.block(channel_map)
            readers = ((None, call.inputs[0], (query,)),
                       (None, call.inputs[1], (key, value)))
        for channel_map, tensor, denses in readers:
            for index, node in enumerate(_map(channel_map, tensor)):
                for dense in denses:
                    tracer.attach(node, layer, dense.kernel, 0, index,
                                  CONSUMER)
        _heads(tracer, layer, layer)
        out = []
        for index in range(output.kernel.shape[-1]):
            node = tracer.unit(layer, index)
            tracer.attach(node, layer, output.kernel, -1, index, KERNEL)
            tracer.attach(node, layer, getattr(output, "bias", None), -1,
                          index, OTHER)
            out.append(node)
        return [out]

    def config(self, layer, sizes):
        output = layer._output_dense.kernel  # pylint: disable=protected-access
        config = {"num_heads": sizes.size(
            layer._value_dense.kernel, 1)}  # pylint: disable=protected-access
        width = sizes.size(output, len(output.shape) - 1)
        if width != output.shape[-1]:
            config["output_shape"] = width
        call = sizes.call(layer)
        # tf_keras rebuilds from the input shapes kept in its config.
        for name, tensor in (("query_shape", call.inputs[0]),
                             ("value_shape", call.inputs[1]),
                             ("key_shape", call.inputs[1])):
            if layer.get_config().get(name) is not None:
                config[name] = tuple(tensor.shape[:-1]) + (
                    sizes.channels(tensor),)
        return config

    def flops(self, call):
        return _attention_flops(call.layer, call.inputs[0], call.inputs[1])


def _attention_flops(attention, query, value):
    """2 x multiply-adds of a MultiHeadAttention: the projections, the
    scores, their weighted sum of values, the output projection."""
    heads, key_dim = attention._query_dense.kernel.shape[1:]  # pylint: disable=protected-access
    value_dim = attention._value_dense.kernel.shape[-1]  # pylint: disable=protected-access
    width = attention._output_dense.kernel.shape[-1]  # pylint: disable=protected-access
    targets, sources = _positions(query), _positions(value)
    return 2 * heads * (
        targets * query.shape[-1] * key_dim + sources * value.shape[-1] * (
            key_dim + value_dim) + targets * sources * (
                key_dim + value_dim) + targets * value_dim * width)


def _heads(tracer, layer, attention):
    """Makes a unit of each head of `attention` (a MultiHeadAttention, or
    one inside `layer`)."""
    query, key, value = (attention._query_dense, attention._key_dense,  # pylint: disable=protected-access
                         attention._value_dense)  # pylint: disable=protected-access
    output = attention._output_dense  # pylint: disable=protected-access
    for head in range(value.kernel.shape[1]):
        node = tracer.unit(layer, f"head{head}")
        tracer.attach(node, layer, value.kernel, 1, head, KERNEL)
        for dense in (query, key):
            tracer.attach(node, layer, dense.kernel, 1, head, OTHER)
        for dense in (query, key, value):
            tracer.attach(node, layer, getattr(dense, "bias", None), 0, head,
                          OTHER)
        tracer.attach(node, layer, output.kernel, 0, head, CONSUMER)


class _TransformerEncoder(LayerRule):
    """keras_hub's TransformerEncoder: its attention heads and feed-forward
    units are units; its residual stream, normalized across channels, ends
    the coupling.

    keras_hub gives each head hidden_dim // num_heads units: with heads
    removed the encoder is rebuilt as a `hub.PrunedTransformerEncoder`,
    whose heads keep their width (`key_dim`). The heads of a subclass
    (another build) stay.
    """

    description = ("attention heads and feed-forward units are units "
                   "(`num_heads`, `intermediate_dim` rewritten; with heads "
                   "removed it is rebuilt as "
                   "`tfreg>PrunedTransformerEncoder`, whose heads keep "
                   "their width); the residual stream ends the coupling")

    def trace(self, tracer, call, inputs):
        layer = call.layer
        intermediate = layer._feedforward_intermediate_dense  # pylint: disable=protected-access
        output = layer._feedforward_output_dense  # pylint: disable=protected-access
        if getattr(layer, "_cross_attention_layer", None) is not None:
            return tracer.end(call, inputs, "cross-attention")
        tracer.end(call, inputs, "its residual stream is normalized across "
                                 "channels")
        if _rebuilds_heads(layer):
            _heads(tracer, layer, layer._self_attention_layer)  # pylint: disable=protected-access
        for index in range(intermediate.kernel.shape[-1]):
            node = tracer.unit(layer, index)
            tracer.attach(node, layer, intermediate.kernel, -1, index, KERNEL)
            tracer.attach(node, layer, getattr(intermediate, "bias", None),
                          -1, index, OTHER)
            tracer.attach(node, layer, output.kernel, 0, index, CONSUMER)
        return [None] * len(call.outputs)

    def config(self, layer, sizes):
        attention = layer._self_attention_layer  # pylint: disable=protected-access
        heads = sizes.size(attention._value_dense.kernel, 1)  # pylint: disable=protected-access
        config = {"intermediate_dim": sizes.size(
            layer._feedforward_intermediate_dense.kernel, 1),  # pylint: disable=protected-access
                  "num_heads": heads}
        if heads != layer.num_heads:
            config["key_dim"] = attention._query_dense.kernel.shape[-1]  # pylint: disable=protected-access
        return config

    def flops(self, call):
        layer, stream = call.layer, call.inputs[0]
        feed_forward = (layer._feedforward_intermediate_dense.kernel,  # pylint: disable=protected-access
                        layer._feedforward_output_dense.kernel)  # pylint: disable=protected-access
        return _attention_flops(layer._self_attention_layer, stream, stream) + (  # pylint: disable=protected-access
            2 * _positions(stream) * sum(
                math.prod(kernel.shape) for kernel in feed_forward))

    def rebuild(self, layer, config):
        if "key_dim" not in config:
            return super().rebuild(layer, config)
        from tfreg.pruning import hub  # pylint: disable=import-outside-toplevel
        return hub.PrunedTransformerEncoder.from_config(config)


class _PrunedTransformerEncoderOnLoad:
    """Stands for `hub.PrunedTransformerEncoder` in Keras' registry, so
    that a saved shrunk model loads without importing keras_hub at
    `import tfreg`; importing `hub` registers the class itself."""

    @staticmethod
    def from_config(config):
        from tfreg.pruning import hub  # pylint: disable=import-outside-toplevel
        return hub.PrunedTransformerEncoder.from_config(config)


def _rebuilds_heads(layer):
    """Whether `layer` is keras_hub's TransformerEncoder or tfreg's pruned
    one, whose heads `_TransformerEncoder.rebuild` can rebuild."""
    if not type(layer).__module__.startswith(("keras_hub.", "tfreg.")):
        return False  # Not made by keras_hub: hub's import could fail.
    from tfreg.pruning import hub  # pylint: disable=import-outside-toplevel
    return type(layer) in (hub.keras_hub.layers.TransformerEncoder,
                           hub.PrunedTransformerEncoder)


class _Embedding(Producer):
    """Token ids in, one new channel per output dimension."""

    def __init__(self):
        super().__init__(kernel="embeddings", bias=None, width="output_dim",
                         in_axis=None, fold=False)
        self.description = "makes new channels: embeddings axis -1"


def _depthwise_kernel(layer):
    """The kernel of a depthwise convolution."""
    # Keras 3 names it `kernel`, tf_keras `depthwise_kernel`.
    kernel = getattr(layer, "depthwise_kernel", None)
    return layer.kernel if kernel is None else kernel


_PASS_NAMES = (
    "Activation", "ReLU", "ELU", "LeakyReLU", "Dropout",
    "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
    "GaussianDropout", "GaussianNoise", "AlphaDropout",
    "ActivityRegularization", "Identity", "Masking",
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D",
    "AveragePooling2D", "AveragePooling3D", "GlobalMaxPooling1D",
    "GlobalMaxPooling2D", "GlobalMaxPooling3D", "GlobalAveragePooling1D",
    "GlobalAveragePooling2D", "GlobalAveragePooling3D", "UpSampling1D",
    "UpSampling2D", "UpSampling3D", "Cropping1D", "Cropping2D", "Cropping3D",
    "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D")
_NORMALIZING = "normalizes across channels"
_ENDS = {
    "LayerNormalization": _NORMALIZING,
    "GroupNormalization": _NORMALIZING,
    "UnitNormalization": _NORMALIZING,
    "Softmax": "softmax mixes channels",
    "Attention": "attention mixes channels",
    "AdditiveAttention": "attention mixes channels",
}
_PRODUCERS = {"Dense": Producer(width="units"), "Conv1D": Producer(),
              "Conv2D": Producer(), "Conv3D": Producer()}

# Keras 3 operations in a functional graph (`x + y`, `keras.ops.*`), by
# class name: they are not layers.
_ELEMENTWISE_OPS = (
    "Relu", "Relu6", "Sigmoid", "HardSigmoid", "Tanh", "Silu", "HardSilu",
    "Gelu", "Elu", "Selu", "LeakyRelu", "Softplus", "Softsign", "Exp", "Log",
    "Abs", "Absolute", "Square", "Sqrt", "Negative", "Cast", "Clip", "Log1p",
    "Expm1")
_BINARY_OPS = ("Add", "Subtract", "Multiply", "Maximum", "Minimum",
               "Divide", "TrueDivide")


class _ElementwiseOp(LayerRule):
    """A Keras 3 operation on one tensor (and Python numbers): channels
    pass through."""

    description = "channels pass through"

    def trace(self, tracer, call, inputs):
        if len(call.inputs) != 1 or not _scalars_only(call):
            return _Merge().trace(tracer, call, inputs)
        return [inputs[0]]


class _BinaryOp(_Merge):
    """`x + y`, `x * s`: like the Add/Multiply layer; with a number, like
    an activation."""

    description = ("like the merge layers; with a number: channels pass "
                   "through")

    def trace(self, tracer, call, inputs):
        if len(call.inputs) == 1:
            if not _scalars_only(call):
                return tracer.end(call, inputs, "a constant tensor operand")
            return [inputs[0]]
        return super().trace(tracer, call, inputs)


def _scalars_only(call):
    """Whether every operand besides the symbolic tensors is a number."""
    for value in getattr(call, "constants", ()) or ():
        if not isinstance(value, (int, float)) and getattr(
                value, "shape", ()) not in ((), (1,)):
            return False
    return True


class _TFOpLambda(LayerRule):
    """tf_keras' wrapper of a TensorFlow function in a functional graph
    (`x + y`, `tf.nn.relu(x)`): the rule of the function's Keras 3 twin."""

    description = "the rule of the TensorFlow function's Keras 3 operation"
    _SYMBOLS = {
        "__operators__.add": "Add", "math.add": "Add",
        "math.subtract": "Subtract", "math.multiply": "Multiply",
        "math.truediv": "TrueDivide", "math.divide": "TrueDivide",
        "math.maximum": "Maximum", "math.minimum": "Minimum",
        "nn.relu": "Relu", "nn.relu6": "Relu6", "math.sigmoid": "Sigmoid",
        "nn.sigmoid": "Sigmoid", "math.tanh": "Tanh", "nn.silu": "Silu",
        "nn.swish": "Silu", "nn.gelu": "Gelu", "nn.elu": "Elu",
        "nn.selu": "Selu", "nn.leaky_relu": "LeakyRelu",
        "math.softplus": "Softplus", "math.exp": "Exp", "math.abs": "Abs",
        "math.square": "Square", "math.sqrt": "Sqrt", "cast": "Cast",
        "math.negative": "Negative"}

    def trace(self, tracer, call, inputs):
        name = self._SYMBOLS.get(getattr(call.layer, "symbol", None))
        if name is None:
            return tracer.end(call, inputs, f"the TensorFlow function "
                                            f"`{call.layer.symbol}`")
        return _OP_RULES[name].trace(tracer, call, inputs)


_LAYER_RULES = {}   # class -> rule
_ORIGIN = {"LayerScale": "keras.applications",
           "CustomScaleLayer": "keras.applications",
           "TFOpLambda": "tf_keras", "TransformerEncoder": "keras_hub"}
_NAMED_RULES = {}   # class name -> rule, for classes Keras does not export
_OP_RULES = {}      # Keras 3 operation class name -> rule


def register_layer(layer_class, rule):
    """Registers `rule` (a `LayerRule`) for `layer_class` and its
    subclasses (the most specific registered class wins).

    >>> import tfreg
    >>> from tfreg._keras import keras
    >>> class Scale(keras.layers.Layer):
    ...     def build(self, shape):
    ...         self.scale = self.add_weight(shape=(shape[-1],))
    ...     def call(self, x):
    ...         return x * self.scale
    >>> tfreg.pruning.register_layer(
    ...     Scale, tfreg.pruning.PassThrough(per_channel=["scale"]))
    """
    if not isinstance(layer_class, type):
        raise TypeError(validation.message(
            "layer_class", layer_class, "a layer class"))
    if not isinstance(rule, LayerRule):
        raise TypeError(validation.message(
            "rule", rule, "a tfreg.pruning.LayerRule (PassThrough, "
                          "Producer, EndsCoupling or a subclass)"))
    _LAYER_RULES[layer_class] = rule


def unregister_layer(layer_class):
    """Removes the rule registered for `layer_class`."""
    _LAYER_RULES.pop(layer_class, None)


def rule_for(operation):
    """The `LayerRule` of a layer or Keras 3 operation."""
    if isinstance(operation, layers.InputLayer):
        return _INPUT
    if not isinstance(operation, layers.Layer):
        return _OP_RULES.get(type(operation).__name__, _UNKNOWN_OP)
    for cls in type(operation).__mro__:
        if cls in _LAYER_RULES:
            return _LAYER_RULES[cls]
        if cls.__name__ in _NAMED_RULES and cls.__module__.startswith(
                ("keras", "tf_keras")):
            return _NAMED_RULES[cls.__name__]
    if isinstance(operation, keras.Model):
        return _NESTED
    return _UNKNOWN


def registered():
    """[(name, description)] of the registered rules, sorted by name."""
    found = {cls.__name__: rule.description
             for cls, rule in _LAYER_RULES.items()}
    found.update((name, f"{rule.description} ({_ORIGIN[name]})")
                 for name, rule in _NAMED_RULES.items())
    found.update((f"keras.ops {name}", rule.description)
                 for name, rule in _OP_RULES.items())
    return sorted(found.items(), key=lambda item: item[0].lower())


class _Input(LayerRule):
    def trace(self, tracer, call, inputs):
        return [None] * len(call.outputs)


_INPUT = _Input()
_UNKNOWN = LayerRule()
_UNKNOWN_OP = EndsCoupling("an operation channel_groups does not trace")
_NESTED = EndsCoupling("a nested model")


def _register_defaults():
    def each(names):
        return [getattr(layers, name) for name in names
                if hasattr(layers, name)]

    for name, rule in _PRODUCERS.items():
        register_layer(getattr(layers, name), rule)
    for cls in each(("Conv1DTranspose", "Conv2DTranspose",
                     "Conv3DTranspose")):
        register_layer(cls, _Transposed())
    for cls in each(("DepthwiseConv1D", "DepthwiseConv2D")):
        register_layer(cls, _Depthwise())
    for cls in each(("SeparableConv1D", "SeparableConv2D")):
        register_layer(cls, _Separable())
    register_layer(layers.BatchNormalization, _BatchNormalization())
    for cls in each(("Add", "Subtract", "Multiply", "Average", "Maximum",
                     "Minimum")):
        register_layer(cls, _Merge())
    register_layer(layers.Concatenate, _Concatenate())
    for cls in each(("Flatten", "Reshape")):
        register_layer(cls, _Reshape())
    register_layer(layers.Embedding, _Embedding())
    register_layer(layers.Rescaling, _Rescaling())
    register_layer(layers.MultiHeadAttention, _MultiHeadAttention())
    for cls in each(_PASS_NAMES):
        register_layer(cls, PassThrough())
    for name, reason in _ENDS.items():
        if hasattr(layers, name):
            register_layer(getattr(layers, name), EndsCoupling(reason))
    # ConvNeXt's per-channel scale; InceptionResNetV2's x + scale * y.
    _NAMED_RULES["LayerScale"] = PassThrough(per_channel=["gamma"],
                                             width="projection_dim")
    _NAMED_RULES["CustomScaleLayer"] = _Merge()
    _NAMED_RULES["TFOpLambda"] = _TFOpLambda()
    _NAMED_RULES["TransformerEncoder"] = _TransformerEncoder()
    if not _keras.LEGACY:
        keras.saving.get_custom_objects().setdefault(
            f"{_keras.PACKAGE}>PrunedTransformerEncoder",
            _PrunedTransformerEncoderOnLoad)
    for name in _ELEMENTWISE_OPS:
        _OP_RULES[name] = _ElementwiseOp()
    for name in _BINARY_OPS:
        _OP_RULES[name] = _BinaryOp()


_register_defaults()
