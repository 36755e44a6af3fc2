"""keras_hub layers as `shrink` rebuilds them: a `TransformerEncoder` whose
attention heads keep their width when some of them are removed.

This module imports keras_hub (Keras 3 only); `rules` imports it when a
rule or a saved model needs it.
"""

import math

import keras_hub

from tfreg import _keras
from tfreg import validation

__all__ = ["PrunedTransformerEncoder"]

keras = _keras.keras


@keras.saving.register_keras_serializable(package=_keras.PACKAGE)
class PrunedTransformerEncoder(keras_hub.layers.TransformerEncoder):
    """keras_hub's `TransformerEncoder` with `key_dim` units per head.

    keras_hub's encoder gives each of its `num_heads` heads
    hidden_dim // num_heads query, key and value units. After `shrink`
    removed heads, the heads left keep their width: with h heads of width
    d the attention's projections are (hidden_dim, h, d) and its output
    projection (h, d, hidden_dim), and h * d may be less than hidden_dim.

    Args:
      key_dim: Query, key and value units per head (an int >= 1).
      **kwargs: The arguments of `keras_hub.layers.TransformerEncoder`.
    """

    def __init__(self, key_dim, **kwargs):
        super().__init__(**kwargs)
        self.key_dim = validation.integer("key_dim", key_dim, 1, math.inf)

    def __setattr__(self, name, value):
        # keras_hub's `build` makes the attention with
        # hidden_dim // num_heads units per head and builds it after this
        # assignment: the attention built is one with `key_dim`.
        if name == "_self_attention_layer" and not value.built:
            value = type(value).from_config(dict(
                value.get_config(), key_dim=self.key_dim,
                value_dim=self.key_dim))
        super().__setattr__(name, value)

    def get_config(self):
        return dict(super().get_config(), key_dim=self.key_dim)
