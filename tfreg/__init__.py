"""tfreg: regularizers for tf.keras, from Keras parity to structured penalties.

Every regularizer subclasses `tf.keras.regularizers.Regularizer` (Keras 3, or
tf_keras when TF_USE_LEGACY_KERAS=1) and is registered for serialization as
`tfreg>ClassName`.
"""

from tfreg import validation
from tfreg._version import __version__
from tfreg import priors
from tfreg import optimizers
from tfreg import proximal
from tfreg.attach import apply
from tfreg.attach import attach_l2sp
from tfreg.attach import remove
from tfreg.base import Regularizer
from tfreg.export import export_saved_model
from tfreg.distribute import regularization_loss
from tfreg.monitor import PenaltyLogger
from tfreg.monitor import summary
from tfreg.pruning import ChannelGroup
from tfreg.pruning import ChannelGroups
from tfreg.pruning import CoupledGroupLasso
from tfreg.pruning import apply_groups
from tfreg.pruning import channel_groups
from tfreg.pruning import model_cost
from tfreg.pruning import shrink
from tfreg.pruning import shrink_summary
from tfreg.regularizers import L1
from tfreg.regularizers import L1L2
from tfreg.regularizers import L2
from tfreg.regularizers import Orthogonal
from tfreg.schedule import StrengthScheduler
from tfreg.schedule import strengths
from tfreg.serialization import deserialize
from tfreg.serialization import get
from tfreg.serialization import register
from tfreg.serialization import serialize
from tfreg.strength import Strength
from tfreg.structured import DeCov
from tfreg.structured import GroupLasso
from tfreg.structured import KLSparsity
from tfreg.structured import L2SP
from tfreg.structured import NuclearNorm
from tfreg.structured import SRIP
from tfreg.structured import SoftOrthogonal
from tfreg.structured import SparseGroupLasso
from tfreg.structured import SpectralNorm

__all__ = [
    "ChannelGroup",
    "ChannelGroups",
    "CoupledGroupLasso",
    "DeCov",
    "GroupLasso",
    "KLSparsity",
    "L1",
    "L1L2",
    "L2",
    "L2SP",
    "NuclearNorm",
    "Orthogonal",
    "PenaltyLogger",
    "Regularizer",
    "SRIP",
    "SoftOrthogonal",
    "SparseGroupLasso",
    "SpectralNorm",
    "Strength",
    "StrengthScheduler",
    "apply",
    "apply_groups",
    "attach_l2sp",
    "channel_groups",
    "deserialize",
    "export_saved_model",
    "get",
    "model_cost",
    "optimizers",
    "priors",
    "proximal",
    "register",
    "regularization_loss",
    "remove",
    "serialize",
    "shrink",
    "shrink_summary",
    "strengths",
    "summary",
    "validation",
]
