"""The one place that decides which Keras generation tfreg plugs into.

TensorFlow routes `tf.keras` to tf_keras (Keras 2) when TF_USE_LEGACY_KERAS is
set to "1", "true" or "True", and to Keras 3 otherwise. tfreg follows the same
rule, so its regularizers always subclass the `Regularizer` that `tf.keras`
hands out. Nothing else in tfreg imports keras directly.
"""

import os

LEGACY = os.environ.get("TF_USE_LEGACY_KERAS") in ("true", "True", "1")

if LEGACY:
    import tf_keras as keras
else:
    import keras

Regularizer = keras.regularizers.Regularizer
PACKAGE = "tfreg"


def register(cls):
    """Registers `cls` with Keras serialization as `tfreg>ClassName`."""
    return keras.saving.register_keras_serializable(package=PACKAGE)(cls)
