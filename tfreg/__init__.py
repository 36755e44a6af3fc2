"""tfreg: regularizers for tf.keras, from Keras parity to structured penalties.

Every regularizer subclasses `tf.keras.regularizers.Regularizer` (Keras 3, or
tf_keras when TF_USE_LEGACY_KERAS=1) and is registered for serialization as
`tfreg>ClassName`.
"""

from tfreg import _validation as validation
from tfreg.base import Regularizer
from tfreg.regularizers import L1
from tfreg.regularizers import L1L2
from tfreg.regularizers import L2
from tfreg.regularizers import Orthogonal
from tfreg.serialization import deserialize
from tfreg.serialization import get
from tfreg.serialization import register
from tfreg.serialization import serialize

__version__ = "0.1.0"

__all__ = [
    "L1",
    "L1L2",
    "L2",
    "Orthogonal",
    "Regularizer",
    "deserialize",
    "get",
    "register",
    "serialize",
    "validation",
]
