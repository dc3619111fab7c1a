"""The network of a model: backbone + one output head per representation head (a torch module)."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from cellseg.representations.base import HeadSpec

from .config import ModelFormatError, representation_from
from .heads import Heads, activate, denoise_head
from .unet import BackboneConfig, build_backbone

__all__ = ["Network"]


class Network(nn.Module):
    """Backbone + heads. ``forward(x) -> {head: raw}``; ``activate(raw) -> {head: activated}``.

    ``config`` is a model config (or any mapping with ``backbone`` and
    ``in_channels`` plus ``representation``); pass ``heads`` to build the
    heads from explicit :class:`HeadSpec` objects instead of the representation.
    """

    def __init__(self, config: Mapping[str, Any], heads: tuple[HeadSpec, ...] | None = None):
        super().__init__()
        bb = BackboneConfig.from_dict(config["backbone"])
        if heads is None:
            rep = representation_from(config["representation"])
            grid = getattr(rep, "grid", None)  # StarDist's output subsampling (a tuple), if any
            if isinstance(grid, (int, tuple, list)) and any(int(g) != 1 for g in np.atleast_1d(grid)):
                raise ModelFormatError(
                    f"representation {rep!r}: subsampled outputs (grid={grid}) are not supported by the "
                    "cellseg networks; use grid=1"
                )
            if bb.ndim not in getattr(rep, "ndims", (bb.ndim,)) or getattr(rep, "ndim", bb.ndim) != bb.ndim:
                raise ModelFormatError(f"representation {rep.name!r} supports {rep.ndims}D, the backbone is {bb.ndim}D")
            heads = rep.heads()
            if config.get("denoise", False):  # DenoiSeg: one denoised channel per input channel
                heads = (*heads, denoise_head(int(config.get("in_channels", 1))))
        self.backbone_config = bb
        self.head_specs = tuple(heads)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(bb.seed))
            self.backbone = build_backbone(bb, int(config.get("in_channels", 1)))
            self.heads = Heads(bb.ndim, self.backbone.out_channels, self.head_specs)

    @property
    def ndim(self) -> int:
        return self.backbone_config.ndim

    @property
    def in_channels(self) -> int:
        return self.backbone.in_channels

    @property
    def div_by(self) -> int:
        return self.backbone.div_by

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.heads(self.backbone(x))

    def activate(self, raw: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return activate(raw, self.head_specs)
