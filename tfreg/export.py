"""`export_saved_model`: a SavedModel that can still compute the regularization.

`tf.saved_model.save` and Keras 3's `model.export` keep the forward pass and
drop the regularizers: a system that serves or fine-tunes the SavedModel
without Python Keras cannot compute the training objective. The SavedModel
written here carries, next to `serving_default`, the model's regularization
penalty as plain TensorFlow graphs that load with `tf.saved_model.load` where
neither tfreg nor Keras is importable.
"""

import re

import tensorflow as tf

from tfreg import _keras

SERVING_SIGNATURE = "serving_default"
WEIGHT_SIGNATURE = "regularization_loss"
INPUTS_SIGNATURE = "regularization_loss_on_inputs"

_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


def _input_specs(model, input_signature):
    """The structure the model takes and the flat, named TensorSpecs."""
    if input_signature is None:
        try:
            inputs = model.inputs
        except (AttributeError, ValueError):
            inputs = None
        if not inputs:
            raise ValueError(
                "Cannot infer the inputs of the model: it has no `inputs` "
                "(a subclassed model, or a Sequential model without an "
                "Input). Pass `input_signature`, e.g. "
                "`input_signature=tf.TensorSpec((None, 3), tf.float32)`. "
                f"Received: model={model!r}")
        # Keras 3's Sequential has no `input` structure; it has one input.
        structure = inputs[0] if len(inputs) == 1 else model.input
        structure = tf.nest.map_structure(
            lambda t: tf.TensorSpec(t.shape, t.dtype, name=t.name), structure)
    else:
        structure = input_signature
        if isinstance(structure, (list, tuple)) and len(structure) == 1:
            structure = structure[0]
    flat = tf.nest.flatten(structure)
    for spec in flat:
        if not isinstance(spec, tf.TensorSpec):
            raise TypeError(
                "Expected `input_signature` to be a tf.TensorSpec or a "
                "nested structure of tf.TensorSpec. "
                f"Received: input_signature={input_signature!r}")
    return structure, _named(flat)


def _named(specs):
    """Gives every spec a unique name that is valid as a signature key."""
    names = []
    for index, spec in enumerate(specs):
        name = _NAME_UNSAFE.sub("_", spec.name or "")
        if not name or not name[0].isalpha():
            name = f"inputs_{index}" if len(specs) > 1 else "inputs"
        while name in names:
            name = f"{name}_{index}"
        names.append(name)
    return [tf.TensorSpec(spec.shape, spec.dtype, name=name)
            for spec, name in zip(specs, names)]


def _total(losses):
    """Sums like `tf.add_n(model.losses)`, in float64 if any loss is."""
    if not losses:
        return tf.zeros((), tf.float32)
    losses = [tf.convert_to_tensor(loss) for loss in losses]
    dtype = (tf.float64 if any(loss.dtype == tf.float64 for loss in losses)
             else tf.float32)
    return tf.add_n([tf.cast(loss, dtype) for loss in losses])


def _flat_layers(model):
    return list(model._flatten_layers())  # pylint: disable=protected-access


# How each Keras generation keeps its losses. Keras 3 stores a weight's
# regularizer on the variable and collects call losses in a StatelessScope;
# tf_keras keeps weight penalties as zero-argument callables per layer and
# call losses in per-layer lists that its own SavedModel saver also snapshots
# and restores around tracing.


def _weight_losses(model):
    """The input-independent losses, in the order `model.losses` has them."""
    if not _keras.LEGACY:
        return [variable.regularizer(variable)
                for variable in model.trainable_weights
                if variable.regularizer is not None]
    losses = []
    for layer in _flat_layers(model):
        for callable_loss in layer._callable_losses:  # pylint: disable=protected-access
            loss = callable_loss()
            if loss is not None:
                losses.append(loss)
    return losses


def _call(model, inputs):
    """`model(inputs, training=False)` and the losses the call adds."""
    if not _keras.LEGACY:
        # Collected in the scope instead of the layers, so that no graph
        # tensor outlives the trace.
        with _keras.keras.StatelessScope(collect_losses=True) as scope:
            outputs = model(inputs, training=False)
        return outputs, list(scope.losses)
    outputs = model(inputs, training=False)
    return outputs, [loss for layer in _flat_layers(model)
                     for loss in layer._eager_losses]  # pylint: disable=protected-access


def _ordered_total(model, call_losses, weight_losses):
    """The losses in the order `model.losses` lists them after the call."""
    if not _keras.LEGACY:
        return call_losses + weight_losses
    return model.losses


class _LegacyLossesRestored:
    """Puts tf_keras' per-layer call losses back after tracing.

    Tracing a call inside `tf.function` replaces them with graph tensors that
    must not outlive the trace; Keras 3 needs nothing (StatelessScope).
    """

    def __init__(self, model):
        self._layers = _flat_layers(model) if _keras.LEGACY else []

    def __enter__(self):
        # pylint: disable=protected-access
        self._saved = [(layer._eager_losses, list(layer._losses))
                       for layer in self._layers]

    def __exit__(self, *exc_info):
        # pylint: disable=protected-access
        for layer, (eager_losses, losses) in zip(self._layers, self._saved):
            layer._eager_losses = eager_losses
            layer._losses[:] = losses


def _other_variables(functions, model_variables):
    """Variables the traced `functions` read that are not the model's."""
    own = {id(variable) for variable in model_variables}
    # A Keras 3 variable wraps the tf.Variable that the graphs capture.
    own |= {id(getattr(variable, "_value", None)) for variable in model_variables}
    found = {}
    for function in functions:
        for variable in function.graph.variables:
            if id(variable) not in own:
                found.setdefault(id(variable), variable)
    return list(found.values())


def _outputs_dict(outputs):
    """Named outputs, as Keras 3's `model.export` names them."""
    if isinstance(outputs, dict):
        return dict(outputs)
    flat = tf.nest.flatten(outputs)
    return {f"output_{index}": output for index, output in enumerate(flat)}


def export_saved_model(model, path, input_signature=None, options=None):
    """Writes `model` as a SavedModel that also computes its regularization.

    The SavedModel holds the model's variables and three signatures, all
    plain TensorFlow graphs (no Keras or tfreg code is needed to run them):

    - `serving_default`: the model's inputs -> its outputs in inference mode,
      named `output_0`, `output_1`, ... (or by the model's output dict keys),
      as Keras 3's `model.export` names them.
    - `regularization_loss`: no inputs -> `{"regularization_loss": scalar}`,
      the sum of the weight penalties (kernel, bias and any other weight
      regularizer) on the current variables: `sum(model.losses)` for a model
      that has not been called. Under tf_keras this includes zero-argument
      callables given to `add_loss`, which `model.losses` counts too.
    - `regularization_loss_on_inputs`: the model's inputs ->
      `{"regularization_loss", "weight_regularization_loss",
      "activity_regularization_loss"}`, the total being `sum(model.losses)`
      after `model(inputs, training=False)`: weight penalties plus activity
      penalties (divided by the batch size, as Keras does) and any loss the
      layers add in `call`.

    Losses are summed in float32, or float64 when any of them is float64.
    The same functions are attributes of the loaded object (`serve`,
    `regularization_loss`, `regularization_loss_on_inputs`), and its
    `model_variables` are the model's variables.

    Args:
      model: A built Keras model of the active generation.
      path: Directory to write the SavedModel to.
      input_signature: A `tf.TensorSpec` or nested structure of them, the
        model's single positional argument. Needed when the model has no
        `inputs` (subclassed models); defaults to the model's `inputs`.
      options: Optional `tf.saved_model.SaveOptions`.

    Raises:
      TypeError: if `model` is not a Keras model or `input_signature` holds
        something other than `tf.TensorSpec`.
      ValueError: if the inputs cannot be inferred.
    """
    if not isinstance(model, _keras.keras.Model):
        raise TypeError(
            f"Expected a {_keras.keras.__name__} Model. Received: "
            f"model={model!r}")
    structure, flat_specs = _input_specs(model, input_signature)

    def pack(flat_inputs):
        return tf.nest.pack_sequence_as(structure, list(flat_inputs))

    def serve(*flat_inputs):
        outputs, _ = _call(model, pack(flat_inputs))
        return _outputs_dict(outputs)

    def weight_loss():
        return {"regularization_loss": _total(_weight_losses(model))}

    def loss_on_inputs(*flat_inputs):
        _, activity = _call(model, pack(flat_inputs))
        weights = _weight_losses(model)
        total = _ordered_total(model, activity, weights)
        return {"regularization_loss": _total(total),
                "weight_regularization_loss": _total(weights),
                "activity_regularization_loss": _total(activity)}

    module = tf.Module()
    module.model_variables = list(model.variables)
    module.serve = tf.function(serve, input_signature=flat_specs,
                               autograph=False)
    module.regularization_loss = tf.function(
        weight_loss, input_signature=[], autograph=False)
    module.regularization_loss_on_inputs = tf.function(
        loss_on_inputs, input_signature=flat_specs, autograph=False)
    with _LegacyLossesRestored(model):
        signatures = {
            SERVING_SIGNATURE: module.serve.get_concrete_function(),
            WEIGHT_SIGNATURE:
                module.regularization_loss.get_concrete_function(),
            INPUTS_SIGNATURE:
                module.regularization_loss_on_inputs.get_concrete_function(),
        }
        # Variables the penalties read besides the model's own, such as a
        # `tfreg.Strength`, must be tracked to be saved.
        module.regularizer_variables = _other_variables(
            signatures.values(), model.variables)
        tf.saved_model.save(module, path, signatures=signatures,
                            options=options)
