"""The calls of a functional or Sequential model, read from its Keras graph.

No public API lists a model's calls with their input and output tensors;
`tfreg.walk` does the reads of Keras internals (`functional_graph`,
`nodes_by_depth`, `node_call`, `tensor_key`), this module orders the calls.
"""

import collections

import tensorflow as tf

from tfreg import _keras
from tfreg import validation
from tfreg import walk

__all__ = ["Call", "Graph", "graph"]

keras = _keras.keras

Call = collections.namedtuple("Call",
                              ["layer", "inputs", "outputs", "constants"])
Call.__doc__ = """One call of a layer or Keras 3 operation: its input and
output symbolic tensors, and its other operands (`x * 0.5`: 0.5)."""

Graph = collections.namedtuple("Graph",
                               ["calls", "inputs", "outputs", "input"])
Graph.__doc__ = """A model's calls in an order where producers come first;
`input` is the structure of its inputs (a tensor, list or dict)."""

def _functional(model):
    if not isinstance(model, keras.Model):
        raise TypeError(validation.message(
            "model", model, "a Keras functional or Sequential model"))
    found = walk.functional_graph(model)
    if found is None:
        raise ValueError(validation.message(
            "model", model,
            "a functional model, or a Sequential model built with an Input "
            "(a subclassed or unbuilt model has no graph to trace)"))
    return found


def _constants(node):
    """The operands of an operation node (Keras 3 operations, tf_keras'
    TFOpLambda) that are not symbolic tensors, nor names."""
    arguments = getattr(node, "arguments", None)
    if arguments is not None:
        values = (arguments.args, arguments.kwargs)
    else:
        values = (getattr(node, "call_args", ()),
                  getattr(node, "call_kwargs", {}))
    return tuple(value for value in tf.nest.flatten(values)
                 if not hasattr(value, "_keras_history")
                 and not isinstance(value, (str, type(None))))


def graph(model):
    """The `Graph` of a functional model or a built Sequential model."""
    functional = _functional(model)
    by_depth = walk.nodes_by_depth(functional)
    calls = [Call(*walk.node_call(node), _constants(node))
             for depth in sorted(by_depth, reverse=True)
             for node in by_depth[depth]]
    return Graph(calls, tf.nest.flatten(functional.input),
                 tf.nest.flatten(functional.outputs), functional.input)
