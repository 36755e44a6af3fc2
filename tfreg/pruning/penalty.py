"""The group lasso over coupled channel groups, and `apply_groups`.

A coupled group spans slices of several variables (a filter, its bias and
BatchNormalization entries, its consumers' input rows); its penalty is one
group norm over all of them, and its proximal step one block soft
threshold, which sets the whole group to exactly 0 together.
"""

import numpy as np
import tensorflow as tf

from tfreg import structured
from tfreg import validation
from tfreg import walk
from tfreg.pruning import groups as groups_lib

__all__ = ["CoupledGroupLasso", "apply_groups", "VIA"]

VIA = ("loss", "optimizer")


class CoupledGroupLasso:
    """Group lasso over coupled channel groups spanning several variables.

    Mathematical details:

    With groups g (`ChannelGroup`s), W_g all trainable entries of group g
    (every slice, across variables) and p_g their number:

        penalty = factor * sum_g sqrt(p_g) * ||W_g||_2

    gradient: factor * sqrt(p_g) * w / ||W_g|| summed over the groups that
    hold w (0 for an all-zero group). Proximal step of size eta: each group
    is scaled by max(1 - eta * factor * sqrt(p_g) / ||W_g||, 0), a block
    soft threshold that lands the whole group on exactly 0. A kernel entry
    that is both a unit's column and a consumer's row belongs to two groups
    (the groups overlap there); it is scaled by the product of both
    factors, the two block thresholds applied from one reading of the
    norms (exact where groups do not overlap; an overlapped entry still
    becomes exactly 0 when either group does).

    The object follows the coupled-penalty protocol of
    `tfreg.optimizers.Regularized(penalties=[...])`: `variables`, calling
    it gives the penalty, `gradients()` and `proximal_update(step)` give one
    tensor per variable.

    Args:
      groups: `ChannelGroups` or a list of `ChannelGroup`.
      factor: Non-negative finite float or `tfreg.Strength`.
    """

    # `proximal_update` takes per-weight step sizes.
    per_weight_steps = True

    def __init__(self, groups, factor):
        groups = list(groups)
        if not groups or not all(isinstance(group, groups_lib.ChannelGroup)
                                 for group in groups):
            raise ValueError(validation.message(
                "groups", groups, "a non-empty list of ChannelGroup "
                                  "(from tfreg.channel_groups)"))
        self.factor = validation.non_negative("factor", factor)
        self.groups = groups
        count = len(groups)
        variables, ids = [], {}
        sizes = np.zeros(count)
        for index, group in enumerate(groups):
            for piece in group.trainable_slices():
                key = id(piece.variable)
                if key not in ids:
                    ids[key] = {}
                    variables.append(piece.variable)
                axis_ids = ids[key].setdefault(piece.axis, np.full(
                    piece.variable.shape[piece.axis], count, np.int32))
                axis_ids[list(piece.indices)] = index
                sizes[index] += groups_lib.slice_size(piece)
        self.variables = tuple(variables)
        self._count = count
        self._memberships = [
            [(axis, tf.constant(axis_ids)) for axis, axis_ids
             in sorted(ids[id(variable)].items())]
            for variable in variables]
        self._sqrt_sizes = tf.constant(np.sqrt(sizes), tf.float32)

    def _factor(self, dtype):
        return tf.cast(self.factor * tf.constant(1.0, tf.float32), dtype)

    def _group_sums(self, tensors):
        """Per group, the sum of the entries of its slices of `tensors` (one
        float32 tensor per variable)."""
        sums = tf.zeros([self._count + 1], tf.float32)
        for tensor, memberships in zip(tensors, self._memberships):
            for axis, axis_ids in memberships:
                others = [a for a in range(len(tensor.shape)) if a != axis]
                sums += tf.math.unsorted_segment_sum(
                    tf.reduce_sum(tensor, axis=others), axis_ids,
                    self._count + 1)
        return sums[:self._count]

    def _norms(self, values):
        squares = self._group_sums(
            [tf.square(tf.cast(value, tf.float32)) for value in values])
        # sqrt has an infinite derivative at 0: an all-zero group gets
        # gradient 0 (not NaN) through the inner where.
        positive = squares > 0
        return tf.where(positive, tf.sqrt(tf.where(positive, squares, 1.0)),
                        0.0)

    def _values(self):
        return [tf.convert_to_tensor(variable) for variable in self.variables]

    def __call__(self, *unused_weight):
        """The penalty (a float32 scalar). Ignores any argument, so it can
        serve as the regularizer of one of its variables."""
        norms = self._norms(self._values())
        return self._factor(tf.float32) * tf.reduce_sum(
            self._sqrt_sizes * norms)

    @staticmethod
    def _per_entry(per_group, axis_ids, axis, rank, dtype):
        """A per-group vector spread along `axis` of a rank-`rank` tensor."""
        shape = [1] * rank
        shape[axis] = -1
        return tf.reshape(tf.cast(tf.gather(per_group, axis_ids), dtype),
                          shape)

    def _spread(self, per_group, fill, values, combine):
        extended = tf.concat([per_group, [fill]], axis=0)
        out = []
        for value, memberships in zip(values, self._memberships):
            total = None
            for axis, axis_ids in memberships:
                entry = self._per_entry(extended, axis_ids, axis,
                                        len(value.shape), value.dtype)
                total = entry if total is None else combine(total, entry)
            out.append(total)
        return out

    def gradients(self):
        """d penalty / d variable, one tensor per variable."""
        values = self._values()
        norms = self._norms(values)
        coefficient = tf.math.divide_no_nan(
            self._factor(tf.float32) * self._sqrt_sizes, norms)
        return [value * total for value, total in zip(
            values, self._spread(coefficient, 0.0, values, tf.add))]

    def proximal_update(self, step):
        """The variables' values after the block soft threshold of size
        `step`, one tensor per variable.

        `step`: the learning rate eta, or (`per_weight_steps`) one tensor of
        per-weight steps eta_i per variable, an adaptive optimizer's metric
        D_i = eta / eta_i: each group then steps by eta over its mean D.
        """
        values = self._values()
        norms = self._norms(values)
        if isinstance(step, (list, tuple)):
            inverses = self._group_sums(
                [1.0 / tf.cast(part, tf.float32) for part in step])
            step = tf.math.divide_no_nan(tf.square(self._sqrt_sizes),
                                         inverses)
        threshold = tf.cast(step, tf.float32) * self._factor(
            tf.float32) * self._sqrt_sizes
        scale = tf.maximum(1.0 - tf.math.divide_no_nan(threshold, norms), 0.0)
        return [value * total for value, total in zip(
            values, self._spread(scale, 1.0, values, tf.multiply))]

    def __repr__(self):
        return (f"CoupledGroupLasso({len(self.groups)} groups, "
                f"factor={float(self.factor)!r})")


def apply_groups(model, groups, regularizer, via="loss"):
    """One coupled group lasso over `groups` of `model`.

    Args:
      model: The model the groups were traced in.
      groups: Its `ChannelGroups` (`tfreg.channel_groups(model)`).
      regularizer: A `tfreg.GroupLasso`; its factor is the strength (its
        axis is not used: the groups say which entries go together).
      via: "loss": the penalty counts in `model.losses` (it becomes the
        regularizer of its first variable, computing the whole coupled
        penalty; ValueError if it already has another regularizer), so
        any optimizer minimizes it; a
        `tfreg.optimizers.Regularized` given the model takes it from there
        as a coupled penalty. "optimizer": nothing is
        attached; pass the returned penalty to
        `tfreg.optimizers.Regularized(..., penalties=[penalty])`, whose
        proximal mode sets whole groups to exactly 0.

    Returns:
      The `CoupledGroupLasso`. Not saved with the model: apply it again
      after loading.
    """
    if not isinstance(groups, groups_lib.ChannelGroups) or (
            groups.model is not model):
        raise ValueError(validation.message(
            "groups", groups, "the ChannelGroups of `model` (from "
                              "tfreg.channel_groups(model))"))
    if type(regularizer) is not structured.GroupLasso:  # pylint: disable=unidiomatic-typecheck
        raise TypeError(validation.message(
            "regularizer", regularizer, "a tfreg.GroupLasso"))
    validation.choice("via", via, VIA)
    penalty = CoupledGroupLasso(groups, regularizer.factor)
    if via == "loss":
        anchor = penalty.variables[0]
        owner = next(piece.layer for group in penalty.groups
                     for piece in group.slices if piece.variable is anchor)
        held = walk.regularizer_of(owner, anchor)
        if held is not None and not isinstance(held, CoupledGroupLasso):
            # A weight holds one regularizer: the penalty would replace it.
            name = f"{owner.name}/{walk.weight_name(anchor)}"
            raise ValueError(validation.message(
                "via", via, "'optimizer' when the weight that would carry the "
                "coupled penalty already has a regularizer (pass both to "
                "tfreg.optimizers.Regularized, whose proximal mode applies "
                "both)", note=f" with {held!r} on {name!r}"))
        walk.set_regularizer(owner, anchor, penalty)
    return penalty
