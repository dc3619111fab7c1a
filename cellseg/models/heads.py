"""Output heads: one 1×1 convolution per :class:`~cellseg.representations.HeadSpec`.

The heads return *raw* (pre-activation) tensors, which is what the losses want
(logits for BCE, etc.); :func:`activate` applies each head's activation for
inference.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cellseg.representations.base import HeadSpec

__all__ = ["Heads", "activate", "ACTIVATION_FUNCTIONS", "DENOISE_HEAD", "denoise_head"]

#: the name of the DenoiSeg denoising head (the key of its output in ``CellsegModel.predict``);
#: a model config with ``"denoise": true`` grows it beside the representation's heads
DENOISE_HEAD = "denoised"


def denoise_head(in_channels: int) -> HeadSpec:
    """The denoising head: one channel per input channel, identity activation (normalized
    intensities, see :mod:`cellseg.train.denoiseg`)."""
    return HeadSpec(DENOISE_HEAD, int(in_channels), "identity")

ACTIVATION_FUNCTIONS = {
    "identity": lambda t: t,
    "sigmoid": torch.sigmoid,
    "softplus": F.softplus,
    "tanh": torch.tanh,
    "relu": F.relu,
}


class Heads(nn.Module):
    """``features (B, F, *sp) -> {head name: raw (B, channels, *sp)}``."""

    def __init__(self, ndim: int, in_channels: int, specs: Sequence[HeadSpec]):
        super().__init__()
        specs = tuple(specs)
        if not specs:
            raise ValueError("a network needs at least one head")
        names = [h.name for h in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate head names {names}")
        for h in specs:
            if not isinstance(h, HeadSpec):
                raise TypeError(f"heads must be HeadSpec instances, got {type(h).__name__}")
            if not h.name.isidentifier():
                raise ValueError(f"head name {h.name!r} must be a Python identifier")
        conv = nn.Conv2d if ndim == 2 else nn.Conv3d
        self.specs = specs
        convs = {h.name: conv(in_channels, h.channels, 1) for h in specs}
        with torch.no_grad():
            for h in specs:
                if h.bias_init is not None:
                    bias = convs[h.name].bias
                    assert bias is not None  # the convolutions are made with a bias
                    convs[h.name].weight.zero_()
                    bias.fill_(float(h.bias_init))
        self.convs = nn.ModuleDict(convs)

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        return {h.name: self.convs[h.name](features) for h in self.specs}


def activate(raw: Mapping[str, torch.Tensor], specs: Sequence[HeadSpec]) -> dict[str, torch.Tensor]:
    """Apply each head's activation to its raw tensor."""
    out = {}
    for h in specs:
        if h.name not in raw:
            raise KeyError(f"missing raw output for head {h.name!r}; got {sorted(raw)}")
        out[h.name] = ACTIVATION_FUNCTIONS[h.activation](raw[h.name])
    return out
