"""Summing loss terms in their accumulation dtype."""

import tensorflow as tf


def total(losses):
    """The sum of every element of `losses` (tensors or numbers).

    Accumulated in float64 if any loss is float64, else in float32: half
    precision (mixed-precision losses) is summed in float32. An empty list
    sums to a float32 zero.
    """
    losses = [tf.convert_to_tensor(loss) for loss in losses]
    dtype = (tf.float64 if any(loss.dtype == tf.float64 for loss in losses)
             else tf.float32)
    if not losses:
        return tf.zeros((), dtype)
    # Scalars are added as they are: the graph is then `tf.add_n(losses)`,
    # which grappler rewrites (and rounds) as it rewrites Keras' own sum.
    losses = [tf.cast(loss, dtype) for loss in losses]
    return tf.add_n([loss if loss.shape.rank == 0 else tf.reduce_sum(loss)
                     for loss in losses])
