"""`export_saved_model`: a SavedModel that can still compute the regularization.

`tf.saved_model.save` and Keras 3's `model.export` keep the forward pass and
drop the regularizers: a system that serves or fine-tunes the SavedModel
without Python Keras cannot compute the training objective. The SavedModel
written here carries, next to `serving_default`, the model's regularization
penalty as plain TensorFlow graphs that load with `tf.saved_model.load` where
neither tfreg nor Keras is importable.
"""

import os
import re

import tensorflow as tf

from tfreg import _keras
from tfreg import _losses
from tfreg import validation
from tfreg import walk

__all__ = ["INPUTS_SIGNATURE", "SERVING_SIGNATURE", "WEIGHT_SIGNATURE",
           "export_saved_model"]

SERVING_SIGNATURE = "serving_default"
WEIGHT_SIGNATURE = "regularization_loss"
INPUTS_SIGNATURE = "regularization_loss_on_inputs"

_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


def _check_path(path):
    """`path` as a str: a directory to write, existing or not, not a file."""
    expected = "a directory path (a non-empty str or os.PathLike)"
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(validation.message("path", path, expected))
    text = os.fspath(path)
    if not isinstance(text, str) or not text:
        raise ValueError(validation.message("path", path, expected))
    # The nearest existing path among `path` and its parents must be a
    # directory; TensorFlow would say FailedPreconditionError.
    existing = text
    while not tf.io.gfile.exists(existing):
        parent = os.path.dirname(existing.rstrip("/"))
        if not parent or parent == existing:
            return text
        existing = parent
    if not tf.io.gfile.isdir(existing):
        note = (", which is an existing file" if existing == text else
                f", which lies under the existing file {existing!r}")
        raise ValueError(validation.message(
            "path", path, expected, note=note))
    return text


def _input_specs(model, input_signature):
    """The structure the model takes and the flat, named TensorSpecs."""
    if input_signature is None:
        try:
            inputs = model.inputs
        except (AttributeError, ValueError):
            inputs = None
        if not inputs:
            raise ValueError(validation.message(
                "input_signature", None,
                "a tf.TensorSpec (or a nested structure of them) for a model "
                "without `inputs` (a subclassed model, or a Sequential model "
                "without an Input), e.g. tf.TensorSpec((None, 3), "
                "tf.float32)", note=f" for model={model.name!r}"))
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
            raise TypeError(validation.message(
                "input_signature", input_signature,
                "a tf.TensorSpec or a nested structure of tf.TensorSpec"))
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


def _optimizer_losses(model):
    """The penalties that the model's optimizer applies in its update."""
    return [weight.regularizer(weight.variable)
            for weight in walk.regularized_weights(model)
            if weight.via == walk.OPTIMIZER]


def _losses_in_order(model, call, weight):
    """The losses of a call (`walk.call_losses`) and the weight penalties
    (`walk.weight_losses`) in the order of `model.losses` right after the
    call, so that their float32 sum is `sum(model.losses)` to the bit."""
    if not _keras.LEGACY:
        return call + weight
    return model.losses


def _other_variables(functions, model_variables):
    """Variables the traced `functions` read that are not the model's."""
    own = {id(variable)
           for variable in walk.backing_variables(model_variables)}
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
      callables given to `add_loss`, which `model.losses` counts too. The
      penalties that the model's optimizer applies in its update (those its
      `tfreg_penalties()` lists, as `tfreg.optimizers.Regularized` does)
      are added to it.
    - `regularization_loss_on_inputs`: the model's inputs ->
      `{"regularization_loss", "weight_regularization_loss",
      "activity_regularization_loss"}`, the total being `sum(model.losses)`
      (plus the optimizer's penalties) after `model(inputs,
      training=False)`: weight penalties plus activity
      penalties (divided by the batch size, as Keras does) and any loss the
      layers add in `call`.

    Losses are summed in float32, or float64 when any of them is float64.
    As with `tf.saved_model.save`, an existing directory at `path` is
    written into: the SavedModel's files (`saved_model.pb`, `variables/`,
    ...) are replaced and any other file there is left alone.
    The same functions are attributes of the loaded object (`serve`,
    `regularization_loss`, `regularization_loss_on_inputs`), and its
    `model_variables` are the model's variables.

    Args:
      model: A built Keras model of the active generation.
      path: Directory to write the SavedModel to (str or os.PathLike); it
        may exist, but must not be a file.
      input_signature: A `tf.TensorSpec` or nested structure of them, the
        model's single positional argument. Needed when the model has no
        `inputs` (subclassed models); defaults to the model's `inputs`.
      options: Optional `tf.saved_model.SaveOptions`.

    Raises:
      TypeError: if `model` is not a Keras model, `path` not a str or
        os.PathLike, or `input_signature` holds something other than
        `tf.TensorSpec`.
      ValueError: if the inputs cannot be inferred, or `path` is an
        existing file (or lies under one).
    """
    if not isinstance(model, _keras.keras.Model):
        raise TypeError(validation.message(
            "model", model, f"a {_keras.keras.__name__} Model"))
    path = _check_path(path)
    structure, flat_specs = _input_specs(model, input_signature)

    def pack(flat_inputs):
        return tf.nest.pack_sequence_as(structure, list(flat_inputs))

    def serve(*flat_inputs):
        outputs, _ = walk.call_losses(model, pack(flat_inputs))
        return _outputs_dict(outputs)

    def weight_loss():
        return {"regularization_loss": _losses.total(
            walk.weight_losses(model) + _optimizer_losses(model))}

    def loss_on_inputs(*flat_inputs):
        _, activity = walk.call_losses(model, pack(flat_inputs))
        in_model = walk.weight_losses(model)
        optimizer = _optimizer_losses(model)
        weights = in_model + optimizer
        total = _losses_in_order(model, activity, in_model) + optimizer
        return {"regularization_loss": _losses.total(total),
                "weight_regularization_loss": _losses.total(weights),
                "activity_regularization_loss": _losses.total(activity)}

    module = tf.Module()
    module.model_variables = list(model.variables)
    module.serve = tf.function(serve, input_signature=flat_specs,
                               autograph=False)
    module.regularization_loss = tf.function(
        weight_loss, input_signature=[], autograph=False)
    module.regularization_loss_on_inputs = tf.function(
        loss_on_inputs, input_signature=flat_specs, autograph=False)
    with walk.keeping_call_losses(model):
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
