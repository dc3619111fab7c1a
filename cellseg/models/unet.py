"""U-Net (Ronneberger et al. 2015) and Res-U-Net backbones, 2D and 3D.

Both are "same"-padded: the output feature map has the spatial shape of the
input, which must be divisible by ``2**depth`` (see :attr:`UNet.div_by`).

Layout (``depth`` = number of poolings)::

    level 0   block(in -> w)        ───────────────skip──────────────► block(2w -> w)   -> features (w channels)
    level 1     pool, block(w -> 2w) ─────────skip─────────► block(4w -> 2w), up
    ...
    level d       pool, block(.. -> w * m**d)   (bottleneck)  up

``w`` is the base width and ``m`` the width multiplier (2 in the paper); every
block has ``convs`` 3×3(×3) convolutions, each followed by the normalization and
a ReLU; residual blocks add a 1×1 projection of the block input to the output
of the last convolution (before its ReLU), as in He et al. 2016. Upsampling is a
2×2(×2) transposed convolution with stride 2 ("up-conv" in the paper).
Dropout (``dropout > 0``) is applied after the bottleneck block.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

import torch
from torch import nn

__all__ = ["BackboneConfig", "UNet", "build_backbone", "NORMS", "BACKBONES"]

NORMS = ("none", "batch", "group", "instance")
BACKBONES = ("unet", "resunet")


@dataclass(frozen=True)
class BackboneConfig:
    """Backbone hyper-parameters (saved in the model config as a dict).

    name        ``"unet"`` or ``"resunet"``
    ndim        2 or 3 spatial dimensions
    depth       number of 2× poolings (the input must be divisible by ``2**depth``)
    width       channels of the first level
    width_mult  channel factor per level (level ``l`` has ``width * width_mult**l``)
    convs       convolutions per block
    norm        ``"none"``, ``"batch"``, ``"group"`` or ``"instance"``
    groups      groups for GroupNorm (reduced to a divisor of the channel count)
    dropout     dropout probability after the bottleneck (0 disables)
    conv_after  channels of a shared 3×3 convolution after the U-Net, before the
                1×1 heads (StarDist's ``net_conv_after_unet``); 0 disables
    seed        seed of the weight initialisation (building is deterministic)
    """

    name: str = "unet"
    ndim: int = 2
    depth: int = 3
    width: int = 32
    width_mult: float = 2.0
    convs: int = 2
    norm: str = "batch"
    groups: int = 8
    dropout: float = 0.0
    conv_after: int = 0
    seed: int = 0

    def __post_init__(self):
        if self.name not in BACKBONES:
            raise ValueError(f"unknown backbone {self.name!r}; choose from {BACKBONES}")
        if self.ndim not in (2, 3):
            raise ValueError(f"backbone ndim must be 2 or 3, got {self.ndim}")
        if not (isinstance(self.depth, int) and 0 <= self.depth <= 8):
            raise ValueError(f"backbone depth must be an integer in 0..8, got {self.depth!r}")
        if not (isinstance(self.width, int) and self.width >= 1):
            raise ValueError(f"backbone width must be a positive integer, got {self.width!r}")
        if not self.width_mult >= 1:
            raise ValueError(f"backbone width_mult must be >= 1, got {self.width_mult}")
        if not (isinstance(self.convs, int) and self.convs >= 1):
            raise ValueError(f"backbone convs must be a positive integer, got {self.convs!r}")
        if self.norm not in NORMS:
            raise ValueError(f"unknown normalization {self.norm!r}; choose from {NORMS}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.conv_after < 0:
            raise ValueError(f"conv_after must be >= 0, got {self.conv_after}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "BackboneConfig":
        d = dict(d or {})
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - valid)
        if unknown:
            raise ValueError(f"unknown backbone option(s) {unknown}; valid names are {sorted(valid)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def channels(self, level: int) -> int:
        return max(1, int(round(self.width * self.width_mult**level)))


def _conv(ndim: int):
    return nn.Conv2d if ndim == 2 else nn.Conv3d


def _norm(cfg: BackboneConfig, ch: int) -> nn.Module:
    if cfg.norm == "none":
        return nn.Identity()
    if cfg.norm == "batch":
        return (nn.BatchNorm2d if cfg.ndim == 2 else nn.BatchNorm3d)(ch)
    if cfg.norm == "instance":
        return (nn.InstanceNorm2d if cfg.ndim == 2 else nn.InstanceNorm3d)(ch, affine=True)
    g = max(1, min(cfg.groups, ch))
    while ch % g:
        g -= 1
    return nn.GroupNorm(g, ch)


class Block(nn.Module):
    """``convs`` × (3×3 conv → norm → ReLU); residual variant adds a 1×1 projection."""

    def __init__(self, cfg: BackboneConfig, cin: int, cout: int, residual: bool):
        super().__init__()
        conv = _conv(cfg.ndim)
        bias = cfg.norm == "none"
        layers: list[nn.Module] = []
        c = cin
        for i in range(cfg.convs):
            layers.append(conv(c, cout, 3, padding=1, bias=bias))
            layers.append(_norm(cfg, cout))
            if not (residual and i == cfg.convs - 1):
                layers.append(nn.ReLU(inplace=True))
            c = cout
        self.body = nn.Sequential(*layers)
        self.residual = residual
        if residual:
            self.skip = conv(cin, cout, 1, bias=True) if cin != cout else nn.Identity()
            self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        y = self.body(x)
        if self.residual:
            y = self.act(y + self.skip(x))
        return y


class UNet(nn.Module):
    """U-Net / Res-U-Net feature extractor: ``(B, in_channels, *sp) -> (B, out_channels, *sp)``."""

    def __init__(self, cfg: BackboneConfig, in_channels: int = 1):
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        self.cfg = cfg
        self.in_channels = int(in_channels)
        residual = cfg.name == "resunet"
        nd = cfg.ndim
        pool = nn.MaxPool2d if nd == 2 else nn.MaxPool3d
        up = nn.ConvTranspose2d if nd == 2 else nn.ConvTranspose3d
        self.down = nn.ModuleList()
        c = in_channels
        for level in range(cfg.depth + 1):
            self.down.append(Block(cfg, c, cfg.channels(level), residual))
            c = cfg.channels(level)
        self.pool = pool(2)
        self.drop = (nn.Dropout2d if nd == 2 else nn.Dropout3d)(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        self.ups = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for level in reversed(range(cfg.depth)):
            cl, cn = cfg.channels(level), cfg.channels(level + 1)
            self.ups.append(up(cn, cl, 2, stride=2))
            self.up_blocks.append(Block(cfg, 2 * cl, cl, residual))
        self.out_channels = cfg.channels(0)
        if cfg.conv_after:
            self.after: nn.Module = nn.Sequential(_conv(nd)(self.out_channels, cfg.conv_after, 3, padding=1),
                                                  nn.ReLU(inplace=True))
            self.out_channels = cfg.conv_after
        else:
            self.after = nn.Identity()

    @property
    def div_by(self) -> int:
        return 2**self.cfg.depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != self.cfg.ndim + 2:
            raise ValueError(
                f"expected a (B, C, {'Z, ' if self.cfg.ndim == 3 else ''}Y, X) tensor, got shape {tuple(x.shape)}"
            )
        bad = [s for s in x.shape[2:] if s % self.div_by]
        if bad:
            raise ValueError(f"spatial shape {tuple(x.shape[2:])} must be divisible by {self.div_by} (2**depth)")
        skips = []
        for level, block in enumerate(self.down):
            if level:
                x = self.pool(x)
            x = block(x)
            if level < self.cfg.depth:
                skips.append(x)
        x = self.drop(x)
        for up, block in zip(self.ups, self.up_blocks):
            x = block(torch.cat([skips.pop(), up(x)], dim=1))
        return self.after(x)


def build_backbone(cfg: BackboneConfig | Mapping[str, Any], in_channels: int = 1) -> UNet:
    """The U-Net or Res-U-Net described by ``cfg`` (a :class:`BackboneConfig` or its dict form)."""
    if not isinstance(cfg, BackboneConfig):
        cfg = BackboneConfig.from_dict(cfg)
    return UNet(cfg, in_channels)


def receptive_field_extent(cfg: BackboneConfig) -> int:
    """Largest distance (in pixels, per side) from an output pixel to an input pixel it depends on.

    Exact interval arithmetic over the layer graph, maximised over the
    ``2**depth`` pixel phases (max-pooling makes the field asymmetric by phase).
    """

    def grow(r, n):
        return (r[0] - n, r[1] + n)

    def enc_input(level, r):  # r: range of encoder block output at ``level`` -> range at the input image
        r = grow(r, cfg.convs)
        if level == 0:
            return r
        return enc_input(level - 1, (2 * r[0], 2 * r[1] + 1))

    def dec_input(level, r):  # r: range of decoder block output at ``level`` (level == depth: bottleneck)
        if level == cfg.depth:
            return enc_input(level, r)
        r = grow(r, cfg.convs)  # the decoder block's convs, input = concat(skip, up)
        a = enc_input(level, r)
        b = dec_input(level + 1, (r[0] // 2, r[1] // 2))  # 2x2 stride-2 transposed conv
        return (min(a[0], b[0]), max(a[1], b[1]))

    ext = 0
    for p in range(2**cfg.depth):
        r = (p, p)
        if cfg.conv_after:
            r = grow(r, 1)
        lo, hi = dec_input(0, r)
        ext = max(ext, p - lo, hi - p)
    return ext
