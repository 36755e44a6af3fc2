"""The calls of a functional or Sequential model, read from its Keras graph.

Every read of Keras graph internals that tfreg's pruning needs is here (no
public API lists a model's calls with their input and output tensors):

- `model._functional` (Keras 3): the functional graph a built Sequential
  model keeps; tf_keras' built Sequential model is that graph itself.
- `model._nodes_by_depth`: the calls (nodes) of a functional graph by depth.
- a node's layer and tensors: `node.operation`, `node.input_tensors`,
  `node.output_tensors` (Keras 3); `node.layer`, `node.keras_inputs`,
  `node.outputs` (tf_keras).
- a symbolic tensor's `_keras_history` (layer, node index, tensor index),
  which names it the same way in both generations.
"""

import collections

import tensorflow as tf

from tfreg import _keras
from tfreg import validation

__all__ = ["Call", "Graph", "graph"]

keras = _keras.keras

Call = collections.namedtuple("Call", ["layer", "inputs", "outputs"])
Call.__doc__ = """One call of a layer: its input and output symbolic tensors."""

Graph = collections.namedtuple("Graph", ["calls", "inputs", "outputs"])
Graph.__doc__ = """A model's calls in an order where producers come first."""


def tensor_key(tensor):
    """A hashable name of a symbolic tensor, the same in every node."""
    layer, node_index, tensor_index = tensor._keras_history[:3]  # pylint: disable=protected-access
    return id(layer), node_index, tensor_index


def _functional(model):
    if not isinstance(model, keras.Model):
        raise TypeError(validation.message(
            "model", model, "a Keras functional or Sequential model"))
    if not _keras.LEGACY and isinstance(model, keras.Sequential):
        found = getattr(model, "_functional", None)
    elif getattr(model, "_is_graph_network", not _keras.LEGACY):
        found = model
    else:
        found = None
    if found is None or not hasattr(found, "_nodes_by_depth"):
        raise ValueError(validation.message(
            "model", model,
            "a functional model, or a Sequential model built with an Input "
            "(a subclassed or unbuilt model has no graph to trace)"))
    return found


def _node_call(node):
    if _keras.LEGACY:
        return Call(node.layer, list(node.keras_inputs),
                    tf.nest.flatten(node.outputs))
    return Call(node.operation, list(node.input_tensors),
                list(node.output_tensors))


def graph(model):
    """The `Graph` of a functional model or a built Sequential model."""
    functional = _functional(model)
    by_depth = functional._nodes_by_depth  # pylint: disable=protected-access
    calls = [_node_call(node)
             for depth in sorted(by_depth, reverse=True)
             for node in by_depth[depth]]
    return Graph(calls, list(functional.inputs),
                 tf.nest.flatten(functional.outputs))
