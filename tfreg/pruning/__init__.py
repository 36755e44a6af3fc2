"""Structured pruning: coupled channel groups, their penalty, and `shrink`.

    groups = tfreg.channel_groups(model)
    penalty = tfreg.apply_groups(model, groups, tfreg.GroupLasso(1e-3))
    model.fit(...)                      # whole groups go to (or near) 0
    small = tfreg.shrink(model)         # a smaller model, same function

Each layer type's rule (how channels pass through it, how `shrink`
rewrites its width, its FLOPs) is registered in `rules`;
`register_layer` adds a rule for a layer of your own.
"""

from tfreg.pruning.cost import model_cost
from tfreg.pruning.cost import shrink_summary
from tfreg.pruning.groups import ChannelGroup
from tfreg.pruning.groups import ChannelGroups
from tfreg.pruning.groups import channel_groups
from tfreg.pruning.penalty import CoupledGroupLasso
from tfreg.pruning.penalty import apply_groups
from tfreg.pruning.rules import EndsCoupling
from tfreg.pruning.rules import LayerRule
from tfreg.pruning.rules import PassThrough
from tfreg.pruning.rules import Producer
from tfreg.pruning.rules import register_layer
from tfreg.pruning.surgery import shrink

__all__ = ["ChannelGroup", "ChannelGroups", "CoupledGroupLasso",
           "EndsCoupling", "LayerRule", "PassThrough", "Producer",
           "apply_groups", "channel_groups", "model_cost", "register_layer",
           "shrink", "shrink_summary"]
