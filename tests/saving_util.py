"""Helpers of the saving tests: every registered class, and fresh processes.

`registered_classes()` reads tfreg's registry, so classes added later are
covered without editing the tests. `zoo_model()` puts every one of them into a
single Keras model (as a kernel regularizer when it accepts a Dense kernel,
else as an activity regularizer on a sigmoid layer). `run_without_tfreg()`
runs a script in a fresh Python process where tfreg, keras and tf_keras
cannot be imported.
"""

import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import tensorflow as tf

import tfreg
from tfreg import _keras
from tfreg import serialization

keras = _keras.keras

INPUT_DIM = 3
UNITS = 4
KERNEL_SHAPE = (INPUT_DIM, UNITS)
BATCH = 5
SUBPROCESS_TIMEOUT = 120
# Modules a fresh process must work without.
BLOCKED = ("tfreg", "keras", "tf_keras")


registered_classes = serialization.registered_classes


def _l2sp(shape):
    reference = np.linspace(-1.0, 1.0, math.prod(shape)).reshape(shape)
    return tfreg.L2SP(0.05, reference=reference)


# Classes whose defaults cannot be built: how to build them for a Dense kernel.
SPECIAL_CONSTRUCTORS = {"L2SP": _l2sp}


def build(cls):
    """`cls` with its defaults, or (None, reason) when it needs arguments."""
    special = SPECIAL_CONSTRUCTORS.get(cls.__name__)
    if special is not None:
        return special(KERNEL_SHAPE), None
    try:
        return cls(), None
    except (TypeError, ValueError) as error:
        return None, f"{cls.__name__}() needs arguments: {error}"


def _finite_penalty(regularizer, x):
    try:
        return bool(np.isfinite(regularizer(tf.constant(x, tf.float32))))
    except (TypeError, ValueError):
        return False


def role(regularizer):
    """'weight', 'activity' or None: where `regularizer` gives finite values.

    'weight' when it takes a Dense kernel; otherwise 'activity' when it takes
    sigmoid activations of shape (BATCH, units).
    """
    rng = np.random.default_rng(0)
    if _finite_penalty(regularizer, rng.normal(size=KERNEL_SHAPE)):
        return "weight"
    if _finite_penalty(regularizer, rng.uniform(0.05, 0.95, size=(BATCH, UNITS))):
        return "activity"
    return None


def members():
    """(name, role, regularizer) for every registered class, and skips.

    Adds a scheduled strength: an L2 whose `tfreg.Strength` was assigned a
    new value, which saved models must restore exactly.
    """
    found, skipped = [], {}
    for cls in registered_classes():
        regularizer, reason = build(cls)
        if regularizer is None:
            skipped[cls.__name__] = reason
            continue
        where = role(regularizer)
        if where is None:
            skipped[cls.__name__] = (
                f"{cls.__name__}() gives no finite penalty on a Dense kernel "
                f"{KERNEL_SHAPE} or on sigmoid activations {(BATCH, UNITS)}")
            continue
        found.append((cls.__name__, where, regularizer))
    strength = tfreg.Strength(0.01, name="l2_strength")
    strength.assign(0.37)
    found.append(("L2_scheduled", "weight", tfreg.L2(strength)))
    return found, skipped


def zoo_model(seed=0, with_activity=True):
    """A functional model with one Dense branch per member; and the skips.

    Branch layers are named after their member, so a failure names the class.
    """
    keras.utils.set_random_seed(seed)
    found, skipped = members()
    inputs = keras.Input((INPUT_DIM,), name="features")
    branches = []
    for name, where, regularizer in found:
        if where == "weight":
            layer = keras.layers.Dense(
                UNITS, kernel_regularizer=regularizer, name=f"{name}_kernel")
        elif with_activity:
            layer = keras.layers.Dense(
                UNITS, activation="sigmoid", activity_regularizer=regularizer,
                name=f"{name}_activity")
        else:
            continue
        branches.append(layer(inputs))
    merged = keras.layers.Concatenate()(branches)
    outputs = keras.layers.Dense(1, name="head")(merged)
    return keras.Model(inputs, outputs), skipped


def regularizers_of(model):
    """Maps each regularized layer's name to its kernel/activity regularizer."""
    found = {}
    for layer in model.layers:
        if layer.name.endswith("_kernel"):
            found[layer.name] = layer.kernel_regularizer
        elif layer.name.endswith("_activity"):
            found[layer.name] = layer.activity_regularizer
    return found


def inputs(seed=1, batch=BATCH):
    return np.random.default_rng(seed).normal(
        size=(batch, INPUT_DIM)).astype(np.float32)


def penalties(model, x):
    """`model.losses` after `model(x)`, as a float array (in list order)."""
    model(x)
    return np.array([np.asarray(loss) for loss in model.losses])


# A None entry in sys.modules makes `import name` raise ImportError and
# `importlib.util.find_spec(name)` return None (TensorFlow probes for keras).
_PRELUDE = textwrap.dedent(f"""\
    import sys

    for _name in {BLOCKED!r}:
        sys.modules[_name] = None
        try:
            __import__(_name)
        except ImportError:
            pass
        else:
            raise SystemExit("could import " + _name)
    """)

_POSTLUDE = textwrap.dedent(f"""
    _loaded = sorted(name for name, module in sys.modules.items()
                     if module is not None
                     and name.partition(".")[0] in {BLOCKED!r})
    if _loaded:
        raise SystemExit("imported blocked modules: " + str(_loaded))
    """)


def run_without_tfreg(script, directory, *args):
    """Runs `script` in a fresh interpreter where tfreg and Keras are absent.

    `-I` drops PYTHONPATH, the user site and the working directory from
    sys.path; tfreg, keras and tf_keras are made unimportable on top of that. Returns stdout; raises AssertionError with stderr when the
    process fails or runs longer than SUBPROCESS_TIMEOUT seconds.
    """
    code = _PRELUDE + textwrap.dedent(script) + _POSTLUDE
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "PYTHONSTARTUP", "TF_USE_LEGACY_KERAS")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    try:
        result = subprocess.run(
            [sys.executable, "-I", "-c", code, *args], cwd=directory, env=env,
            capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT,
            check=False)
    except subprocess.TimeoutExpired as error:
        raise AssertionError(
            f"The fresh process ran longer than {SUBPROCESS_TIMEOUT} s. "
            f"stderr:\n{error.stderr}") from error
    if result.returncode != 0:
        raise AssertionError(
            f"The fresh process failed with code {result.returncode}.\n"
            f"stdout:\n{result.stdout[-5000:]}\nstderr:\n"
            f"{result.stderr[-10000:]}")
    return result.stdout


# Loads a SavedModel, runs the named signatures on inputs.npz, writes
# outputs.npz with keys "<signature>/<output>".
SERVE_SCRIPT = """
import numpy as np
import tensorflow as tf

path, signature_names = sys.argv[1], sys.argv[2].split(",")
loaded = tf.saved_model.load(path)
feeds = dict(np.load("inputs.npz"))
results = {}
for signature_name in signature_names:
    function = loaded.signatures[signature_name]
    _, expected = function.structured_input_signature
    if len(expected) == 1 and len(feeds) == 1:
        # A model's single input, whatever name the saver gave it.
        feed = {key: tf.constant(value) for key, value in
                zip(expected, feeds.values())}
    else:
        feed = {key: tf.constant(feeds[key]) for key in expected}
    outputs = function(**feed)
    for key, value in outputs.items():
        results[signature_name + "/" + key] = value.numpy()
np.savez("outputs.npz", **results)
"""


def serve_in_fresh_process(path, directory, feeds, signature_names):
    """Runs signatures of the SavedModel at `path` without tfreg or Keras."""
    np.savez(os.path.join(directory, "inputs.npz"), **feeds)
    run_without_tfreg(SERVE_SCRIPT, directory, os.path.abspath(path),
                      ",".join(signature_names))
    with np.load(os.path.join(directory, "outputs.npz")) as outputs:
        return dict(outputs)
