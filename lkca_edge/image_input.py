"""Image inputs inside the graph, shared by every backend.

``ImageInput`` wraps a network so that the artifact takes what a camera frame resized to the
model's size is: (N, H, W, 3) uint8 RGB. Cast, HWC -> CHW, channel order and the preprocessing's
normalization all run inside the graph, so an app feeds the bitmap as it is.

``fold_channel_multipliers`` is for runtimes that apply the normalization themselves with a
single scale (Core ML's ImageType): the per-channel remainder of the std is folded into the
network's first layer, so the graph gains no op.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from lkca_edge.errors import UserError
from lkca_edge.preprocessing import Preprocessing


class ImageInput(nn.Module):
    """``network`` behind an in-graph normalization: (N, H, W, 3) uint8 RGB pixels in,
    the network's output out. ``network(x)`` sees exactly ``Preprocessing.normalize(pixels)``."""

    def __init__(self, network: nn.Module, prep: Preprocessing):
        super().__init__()
        self.network = network
        multiplier, offset = prep.pixel_affine()
        self.register_buffer("multiplier", torch.tensor(multiplier, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("offset", torch.tensor(offset, dtype=torch.float32).view(1, 3, 1, 1))
        self.bgr = prep.channel_order == "BGR"
        object.__setattr__(self, "config", getattr(network, "config", None))  # not a submodule

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.to(torch.float32).permute(0, 3, 1, 2)
        if self.bgr:
            x = torch.cat([x[:, 2:3], x[:, 1:2], x[:, 0:1]], dim=1)
        return self.network(x * self.multiplier + self.offset)


class ChannelScale(nn.Module):
    """``network(x * multipliers[c])``: the per-channel remainder as one op, for networks whose
    first layer cannot take it (not a patch-embedding Linear)."""

    def __init__(self, network: nn.Module, multipliers):
        super().__init__()
        self.network = network
        self.register_buffer("multipliers", torch.tensor(np.asarray(multipliers, np.float32)).view(1, -1, 1, 1))
        object.__setattr__(self, "config", getattr(network, "config", None))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x * self.multipliers)


def scale_channels(network: nn.Module, multipliers) -> nn.Module:
    """``network`` taking inputs whose channel c is divided by ``multipliers[c]``: folded into
    its first layer where it can be (no extra op), else one multiply in front."""
    try:
        return fold_channel_multipliers(network, multipliers)
    except UserError:
        return ChannelScale(copy.deepcopy(network), multipliers)


def fold_channel_multipliers(network: nn.Module, multipliers) -> nn.Module:
    """A copy of ``network`` whose first layer (``patch_embed``, a Linear over (p1 p2 c)-ordered
    patch features) also multiplies input channel c by ``multipliers[c]``. The original is
    unchanged; multipliers of all ones return an unchanged copy."""
    folded = copy.deepcopy(network)
    multipliers = np.asarray(multipliers, np.float64)
    if np.allclose(multipliers, 1.0, rtol=0, atol=0):
        return folded
    embed = getattr(folded, "patch_embed", None)
    config = getattr(folded, "config", None)
    if not isinstance(embed, nn.Linear) or config is None:
        raise UserError("a per-channel std can be folded only into a network whose first layer "
                        "is a patch-embedding Linear")
    channels = config.in_channels
    if len(multipliers) != channels or embed.in_features % channels:
        raise UserError(f"{len(multipliers)} channel multipliers for a {channels}-channel input")
    per_column = torch.tensor(np.tile(multipliers, embed.in_features // channels), dtype=torch.float32)
    with torch.no_grad():
        embed.weight.mul_(per_column)
    return folded
