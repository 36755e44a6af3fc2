"""Shared steps of the pruning tests: random weights, zeroed groups, and a
shrink whose outputs are compared with the original's."""

import numpy as np

import tfreg


def randomize(model, seed=0):
    """Random weights of unit scale per layer (positive variances), so no
    unit is zero by chance and activations stay moderate."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        values = []
        for variable in layer.weights:
            shape = tuple(variable.shape)
            value = rng.normal(size=shape)
            name = variable.name.split("/")[-1].split(":")[0]
            if "variance" in name:
                value = np.abs(value) + 0.5
            elif len(shape) >= 2:
                # Fan-in scaling keeps deep models' outputs finite.
                value /= np.sqrt(np.prod(shape[:-1]))
            values.append(value.astype(variable.dtype if isinstance(
                variable.dtype, str) else variable.dtype.name))
        layer.set_weights(values)


def zero_groups(groups, fraction=0.5, seed=0):
    """Sets every trainable slice of a random `fraction` of the groups to
    zero; returns the groups zeroed."""
    rng = np.random.default_rng(seed)
    chosen = [group for group in groups if rng.random() < fraction]
    pieces = {}
    for group in chosen:
        for piece in group.trainable_slices():
            pieces.setdefault(id(piece.variable), [piece.variable, []])[
                1].append(piece)
    for variable, variable_pieces in pieces.values():
        value = variable.numpy()
        for piece in variable_pieces:
            index = [slice(None)] * value.ndim
            index[piece.axis] = list(piece.indices)
            value[tuple(index)] = 0
        variable.assign(value)
    return chosen


def inputs_for(model, batch=2, seed=1):
    """A random batch for `model`'s inputs (a list when it has several)."""
    rng = np.random.default_rng(seed)
    found = []
    for tensor in model.inputs:
        shape = (batch,) + tuple(d or 4 for d in tensor.shape[1:])
        dtype = getattr(tensor.dtype, "name", tensor.dtype)
        if "int" in str(dtype):
            found.append(rng.integers(0, 5, size=shape).astype(dtype))
        else:
            found.append(rng.normal(size=shape).astype("float32"))
    return found if len(found) > 1 else found[0]


def prunable_share(groups):
    """The share of the model's units that are in some group."""
    return sum(len(group.units) for group in groups) / max(
        1, groups.unit_count)


def assert_shrinks(test, model, fraction=0.5, seed=0, atol=1e-4):
    """Zeroes a `fraction` of `model`'s groups, shrinks it and checks
    equal outputs and fewer parameters; returns (groups, shrunk model)."""
    groups = tfreg.channel_groups(model)
    zeroed = zero_groups(groups, fraction, seed)
    small = tfreg.shrink(model, groups=groups)
    x = inputs_for(model)
    expected = np.asarray(model(x, training=False))
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(np.asarray(small(x, training=False)),
                               expected, atol=atol * scale, rtol=0)
    if zeroed:
        test.assertLess(small.count_params(), model.count_params())
    return groups, small
