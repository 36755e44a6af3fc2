"""Loading the user's model file without running code from it.

A `.keras` file (a zip) or an `.h5` file is inspected before Keras sees it:
its model config is read as JSON (`config.json` in the zip, the
`model_config` and `training_config` attributes of the HDF5 file) and every
serialized object in it must name a class Keras or tfreg ships. Refused:
`Lambda` (its function is Python bytecode or source), `TFSMLayer` (it loads
and runs a SavedModel), any serialized function (`__lambda__`, a
`function_type` entry), a `module` outside keras/tf_keras/tfreg, a
`registered_name` of another package, and a tf_keras `TFOpLambda` whose
TensorFlow function is not array, math or neural-network arithmetic (a
`tf.io.write_file` or `tf.py_function` is refused). Only then does Keras
load it, with `safe_mode=True`. SavedModel directories are refused: they run
the TensorFlow graphs stored in them, which no config describes.
"""

import json
import os
import zipfile

import tensorflow as tf

from tfreg import _keras
from tfreg import serialization
from tfreg.cli import UsageError

keras = _keras.keras

_ZIP_MAGIC = b"PK\x03\x04"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_PACKAGES = ("keras", "tf_keras", _keras.PACKAGE)
# Markers of Keras' own serialization format: data, not classes.
_DATA_MARKERS = frozenset({"__keras_tensor__", "__tensor__", "__numpy__",
                           "__tuple__", "__slice__", "__ellipsis__"})
_REFUSED_CLASSES = {
    "Lambda": "a Lambda layer (its function is stored as Python code)",
    "TFSMLayer": "a TFSMLayer (it loads and runs a SavedModel's graphs)",
    "__lambda__": "a serialized Python lambda",
    "__bytes__": "serialized bytes (Keras stores Python code that way)",
}
# Keys that hold a function as marshalled bytecode (tf_keras' Lambda).
_CODE_KEYS = ("function_type", "output_shape_type")
# The TensorFlow modules whose functions a tf_keras TFOpLambda may call:
# tensor arithmetic, no I/O, no Python callbacks, no printing.
_TF_OP_MODULES = frozenset({
    "array_ops", "array_ops_stack", "gen_array_ops", "math_ops",
    "gen_math_ops", "nn_ops", "gen_nn_ops", "nn_impl", "clip_ops",
    "linalg_ops", "gen_linalg_ops", "special_math_ops", "sort_ops",
    "manip_ops", "bitwise_ops", "gen_bitwise_ops"})
_MODEL_CLASSES = frozenset({"Functional", "Sequential", "Model"})


def _keras_class_names():
    """Class names Keras resolves without a module: its public layers,
    initializers, regularizers, constraints, optimizers, losses, metrics,
    dtype policies and (Keras 3) the operations of functional models."""
    names = set(_MODEL_CLASSES)
    namespaces = [keras.layers, keras.initializers, keras.regularizers,
                  keras.constraints, keras.optimizers,
                  keras.optimizers.schedules, keras.losses, keras.metrics,
                  keras.mixed_precision]
    if not _keras.LEGACY:
        namespaces.append(keras.dtype_policies)
        from keras.src import ops  # pylint: disable=g-import-not-at-top
        from keras.src.ops import operation  # pylint: disable=g-import-not-at-top
        for module in (ops.core, ops.math, ops.nn, ops.numpy, ops.linalg,
                       ops.image):
            names.update(name for name, value in vars(module).items()
                         if isinstance(value, type)
                         and issubclass(value, operation.Operation))
    for namespace in namespaces:
        names.update(name for name in dir(namespace)
                     if isinstance(getattr(namespace, name, None), type))
    return names - set(_REFUSED_CLASSES)


def _allowed_package(name):
    return name.split(".", 1)[0] in _PACKAGES


def _tf_op_problem(function):
    """Why a tf_keras TFOpLambda calling `tf.<function>` is refused, or
    None. The name is resolved as an attribute path; nothing is called."""
    if not isinstance(function, str):
        return f"a TF op layer whose function is {function!r}, not a name"
    if function.startswith("__operators__."):
        return None
    target = tf
    for part in function.split("."):
        target = getattr(target, part, None)
    module = getattr(target, "__module__", None) or ""
    if (module.startswith("tensorflow.python.ops.")
            and module.rsplit(".", 1)[1] in _TF_OP_MODULES):
        return None
    return (f"a TF op layer calling tf.{function}, which is not array, math "
            "or neural-network arithmetic")


def _problem(config, class_names):
    """The first thing in `config` (a model config) that could run code,
    described in a few words, or None."""
    pending = [config]
    while pending:
        item = pending.pop()
        if isinstance(item, list):
            pending.extend(item)
            continue
        if not isinstance(item, dict):
            continue
        pending.extend(item.values())
        for key in _CODE_KEYS:
            if key in item:
                return f"a serialized Python function ({key!r})"
        if "class_name" not in item:
            continue
        name, module = item["class_name"], item.get("module")
        registered = item.get("registered_name")
        if name in _REFUSED_CLASSES:
            return _REFUSED_CLASSES[name]
        if module is not None and not (isinstance(module, str)
                                       and _allowed_package(module)):
            return f"class {name!r} from module {module!r}"
        if isinstance(registered, str) and ">" in registered and \
                not registered.startswith(f"{_keras.PACKAGE}>"):
            return f"the custom class {registered!r}"
        if name in ("TFOpLambda", "SlicingOpLambda"):
            problem = _tf_op_problem((item.get("config") or {}).get(
                "function") if isinstance(item.get("config"), dict) else None)
            if problem:
                return problem
            continue
        if name == "function":
            # Keras 3 names a function by module and name; only Keras' own
            # activations, losses and metrics.
            function = item.get("config")
            if module is None or not any(
                    isinstance(function, str) and hasattr(namespace, function)
                    for namespace in (keras.activations, keras.losses,
                                      keras.metrics)):
                return f"the function {function!r} from {module!r}"
            continue
        if name in _DATA_MARKERS or name in class_names:
            continue
        if any(isinstance(value, str) and value.startswith(
                f"{_keras.PACKAGE}>") for value in (registered, name)):
            continue
        if isinstance(name, str) and name in serialization.registered_names():
            continue
        if module is not None:
            continue  # A Keras or tfreg module: Keras resolves it there only.
        return f"the class {name!r}, which neither Keras nor tfreg provides"
    return None


def _read_configs(path):
    """The JSON configs a Keras load of `path` would deserialize, read
    without loading: (format, [config, ...])."""
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "saved_model.pb")):
            raise UsageError(
                f"--model {path} is a SavedModel directory; tfreg loads only "
                ".keras and .h5 files, because a SavedModel runs the "
                "TensorFlow graphs stored in it (save the model with "
                "model.save('model.keras'))")
        raise UsageError(
            f"--model {path} is a directory, not a Keras model file "
            "(.keras or .h5)")
    if not os.path.exists(path):
        raise UsageError(f"no such file: --model {path}")
    extension = os.path.splitext(path)[1].lower()
    if extension not in (".keras", ".h5", ".hdf5"):
        raise UsageError(
            f"--model {path} is not a Keras model file: expected a .keras "
            f"or .h5 file, got the extension {extension or '(none)'!r}")
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as error:
        raise UsageError(f"cannot read --model {path}: {error}") from None
    if extension == ".keras":
        if not head.startswith(_ZIP_MAGIC):
            raise UsageError(
                f"--model {path} is not a Keras model file: a .keras file "
                "is a zip archive, this one is not")
        try:
            with zipfile.ZipFile(path) as archive:
                text = archive.read("config.json")
        except (zipfile.BadZipFile, KeyError, OSError) as error:
            raise UsageError(
                f"--model {path} is not a Keras model file: {error}") from None
        texts = [text]
    else:
        if head != _HDF5_MAGIC:
            raise UsageError(
                f"--model {path} is not a Keras model file: an .h5 file is "
                "an HDF5 file, this one is not")
        import h5py  # pylint: disable=g-import-not-at-top
        try:
            with h5py.File(path, "r") as file:
                texts = [file.attrs.get(key) for key in
                         ("model_config", "training_config")]
        except OSError as error:
            raise UsageError(f"cannot read --model {path}: {error}") from None
        if texts[0] is None:
            raise UsageError(
                f"--model {path} holds no model config (a weights-only "
                "file?); save the whole model with model.save")
        texts = [text for text in texts if text is not None]
    try:
        return extension, [json.loads(text) for text in texts]
    except (ValueError, TypeError) as error:
        raise UsageError(
            f"--model {path} has a config that is not JSON: {error}") from None


def check(path):
    """Raises `UsageError` unless `path` is a .keras or .h5 model file whose
    configs name only Keras and tfreg classes and no code."""
    _, configs = _read_configs(path)
    class_names = _keras_class_names()
    for config in configs:
        problem = _problem(config, class_names)
        if problem:
            raise UsageError(
                f"--model {path} is refused: it holds {problem}; tfreg loads "
                "only models made of Keras and tfreg classes, never code "
                "from a file")


def load(path, compile=False):  # pylint: disable=redefined-builtin
    """The model in `path` after `check`, loaded with Keras' safe mode."""
    check(path)
    try:
        return keras.models.load_model(path, compile=compile, safe_mode=True)
    except Exception as error:  # Keras raises many types for a bad file.
        first = str(error).strip().splitlines()[0] if str(error) else ""
        raise UsageError(
            f"cannot load --model {path}: {type(error).__name__}: "
            f"{first}") from None
