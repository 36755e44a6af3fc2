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
    # The namespace in which tf_keras' h5 loader looks up regularizer names.
    from tf_keras.src import regularizers as legacy_regularizers
else:
    import keras

Regularizer = keras.regularizers.Regularizer
PACKAGE = "tfreg"


# tf_keras' own regularizers that tfreg implements with the same config and math.
_SAME_AS_LEGACY = ("L1", "L2", "L1L2")


def register(cls):
    """Registers `cls` with Keras serialization as `tfreg>ClassName`.

    tf_keras' h5 loader resolves a regularizer config by its bare
    `class_name` and ignores `registered_name`: among the global custom
    objects first, then the names of tf_keras' regularizers module. Under
    tf_keras the class is therefore also known by its bare name there, and
    only there: a global name would shadow every other kind of object of
    that name (tfreg's `Orthogonal` would replace the Orthogonal
    initializer). `L1`, `L2` and `L1L2` are the exception: tf_keras' module
    has its own classes of those names, so they are registered globally, and
    a legacy file holding tf_keras' own `L1` loads as tfreg's class of the
    same name, which has the same config and the same math.
    """
    cls = keras.saving.register_keras_serializable(package=PACKAGE)(cls)
    if LEGACY:
        if cls.__name__ in _SAME_AS_LEGACY:
            keras.saving.get_custom_objects()[cls.__name__] = cls
        else:
            vars(legacy_regularizers).setdefault(cls.__name__, cls)
    return cls
