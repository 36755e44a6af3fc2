"""The regularization loss of a model, scaled for tf.distribute replicas."""

import tensorflow as tf

from tfreg import _losses
from tfreg import walk

__all__ = ["regularization_loss", "scale_for_replicas"]


def regularization_loss(model):
    """`sum(model.losses)`, scaled so that replicas add up to one device.

    Under a `tf.distribute` strategy every replica computes the loss of its
    part of the global batch, and the gradients of all replicas are summed.
    The data loss is therefore averaged over the *global* batch
    (`tf.nn.compute_average_loss`), and the regularization loss must be
    divided by the number of replicas: weight penalties are identical on every
    replica and would otherwise count once per replica; activity penalties
    (divided by the local batch size, as both Keras generations do) are local
    means whose average over replicas is the global mean. This is what
    `Model.fit` does internally; a custom training loop must do it too:

        with strategy.scope():
            model = ...                       # with tfreg regularizers
        def step(x, y):
            with tf.GradientTape() as tape:
                per_example = loss_fn(y, model(x, training=True))
                loss = (tf.nn.compute_average_loss(
                            per_example, global_batch_size=GLOBAL_BATCH)
                        + tfreg.regularization_loss(model))
            ...
        strategy.run(step, args=(x, y))

    Outside any strategy, or in the cross-replica context (e.g. directly in
    `strategy.scope()`, not inside `strategy.run`), nothing is divided: the
    value is the model's whole regularization loss, as on one device.

    Args:
      model: A Keras model (or layer) called at least once in the current
        step, so that its activity losses are those of this step.

    Returns:
      A scalar tensor: float64 if any loss is float64, float32 otherwise
      (mixed-precision losses are summed in float32).

    Raises:
      TypeError: if `model` is not a Keras model or layer.
    """
    walk.check_model(model)
    return scale_for_replicas(_losses.total(model.losses))


def scale_for_replicas(value):
    """`value / num_replicas_in_sync` inside a replica context, else `value`.

    Use it for any per-step loss term that every replica computes in full
    (not per example), so that summing gradients across replicas gives the
    single-device gradient.
    """
    if not tf.distribute.has_strategy() or tf.distribute.in_cross_replica_context():
        return value
    replicas = tf.distribute.get_replica_context().num_replicas_in_sync
    if replicas == 1:
        return value
    return value / tf.cast(replicas, value.dtype)
