"""Structured pruning: coupled channel groups, their penalty, and `shrink`.

    groups = tfreg.channel_groups(model)
    penalty = tfreg.apply_groups(model, groups, tfreg.GroupLasso(1e-3))
    model.fit(...)                      # whole groups go to (or near) 0
    small = tfreg.shrink(model)         # a smaller model, same function
"""

from tfreg.pruning.cost import model_cost
from tfreg.pruning.cost import shrink_summary
from tfreg.pruning.groups import ChannelGroup
from tfreg.pruning.groups import ChannelGroups
from tfreg.pruning.groups import channel_groups
from tfreg.pruning.penalty import CoupledGroupLasso
from tfreg.pruning.penalty import apply_groups
from tfreg.pruning.surgery import shrink

__all__ = ["ChannelGroup", "ChannelGroups", "CoupledGroupLasso",
           "apply_groups", "channel_groups", "model_cost", "shrink",
           "shrink_summary"]
