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
    """Registers `cls` with Keras serialization as `tfreg>ClassName`.

    tf_keras' h5 and SavedModel loaders resolve a config by its bare
    `class_name` and ignore `registered_name`, so they would rebuild tfreg's
    `L1` as tf_keras' own `L1`. Under tf_keras the class is therefore also
    registered under its bare name; a legacy file holding tf_keras' own `L1`,
    `L2` or `L1L2` then loads as tfreg's class of the same name, which has
    the same config and the same math.
    """
    cls = keras.saving.register_keras_serializable(package=PACKAGE)(cls)
    if LEGACY:
        keras.saving.get_custom_objects()[cls.__name__] = cls
    return cls
