"""Tiles with overlap, stitching of head outputs, and block-wise label assembly.

Two levels:

* **Network tiles** (:func:`predict_tiled`): the image is cut into tiles whose
  *cores* partition it; each tile is fed to the network with a context margin on
  every side (sized from the network's receptive field) and only the core of the
  output is kept ("crop" stitching, as StarDist does). Tile origins and margins
  are multiples of the network's ``div_by`` so pooling grids line up with the
  whole-image run; where the margin covers the receptive field the stitched
  outputs equal the untiled outputs up to floating-point rounding of the
  convolution backend. ``blend="linear"`` instead blends overlapping outputs
  with linear ramps (Cellpose style): smoother across seams when the margin is
  smaller than the receptive field, but no longer equal to the untiled run.
  :func:`budget_tile` chooses the tiles for a pixel budget per network call
  (what :class:`cellseg.segmenter.Segmenter` does when no tile is given).

* **Label blocks** (:func:`block_grid`, :func:`owned_objects`): for images too
  large to decode at once, the image is split into blocks; each block is decoded
  with a margin and keeps only the objects it *owns* — those whose anchor (their
  first pixel in C order) lies in the block's core and that do not touch the
  outer edge of the decoded window (unless that edge is the image border). Every
  object is thus owned by exactly one block.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Generator, Mapping, Sequence, cast

import numpy as np

__all__ = [
    "Tile",
    "check_tile",
    "tile_grid",
    "budget_tile",
    "predict_tiled",
    "Block",
    "block_grid",
    "owned_objects",
]


@dataclass(frozen=True)
class Tile:
    """One tile: ``read`` is the input window, ``core`` the part of the output it
    owns (both in image coordinates), ``crop`` the core inside the window."""

    read: tuple[slice, ...]
    core: tuple[slice, ...]
    crop: tuple[slice, ...]


def _per_axis(value: int | Sequence[int], n: int) -> tuple[int, ...]:
    """``value`` repeated ``n`` times if it is a scalar (:func:`numpy.isscalar`), else its entries."""
    if np.isscalar(value):
        return (cast(int, value),) * n
    return tuple(cast(Sequence[int], value))


def check_tile(
    tile: int | Sequence[int] | None,
    margin: int | Sequence[int],
    div_by: int = 1,
) -> int | tuple[int, ...] | None:
    """Validate a tile size against the context ``margin`` (px per side) of a network.

    ``None`` or ``0`` means no tiling (the whole image at once) and gives ``None``;
    in a per-axis tuple, ``0`` leaves that axis uncut. A tile must be larger than
    twice the margin (as :func:`tile_grid` rounds it to the ``div_by`` grid): its
    core, the part of the output it keeps, must be at least ``div_by`` pixels wide.
    A smaller tile would give thousands of tiles of a few pixels each, so it is
    refused with a ``ValueError`` that names the smallest tile allowed. Returns
    the tile as given (an int or a tuple of ints).
    """
    if tile is None:
        return None
    scalar = np.isscalar(tile)
    tiles = _per_axis(tile, 1)
    if not tiles:
        raise ValueError("tile must be a size in pixels or one size per axis, got an empty sequence")
    try:
        ints = tuple(int(t) for t in tiles)
    except (TypeError, ValueError):
        raise ValueError(f"tile sizes must be whole numbers of pixels, got {tile!r}") from None
    if any(i != t for i, t in zip(ints, tiles)) or any(i < 0 for i in ints):
        raise ValueError(f"tile sizes must be whole numbers of pixels >= 0 (0: no tiling), got {tile!r}")
    if all(i == 0 for i in ints):
        return None
    margins = _per_axis(margin, len(ints))
    if len(margins) != len(ints):
        margins = (max(margins),) * len(ints)
    div_by = max(1, int(div_by))
    for t, m in zip(ints, margins):
        m = int(math.ceil(int(m) / div_by) * div_by)
        least = 2 * m + div_by
        if 0 < t < least:
            raise ValueError(
                f"tile size {t} px is too small: the network needs {m} px of context on each side of a tile, so "
                f"tiles must be at least {least} px (use 0 for no tiling; tiles of a few times the minimum are "
                f"efficient)")
    return ints[0] if scalar else ints


def _axis_tiles(n: int, tile: int, margin: int, div_by: int) -> list[tuple[int, int, int, int]]:
    """(read_start, read_stop, core_start, core_stop) along one axis."""
    if tile == 0 or tile >= n:
        return [(0, n, 0, n)]
    core = tile - 2 * margin
    core = max(div_by, (core // div_by) * div_by)
    out = []
    start = 0
    while start < n:
        stop = min(n, start + core)
        rs = max(0, start - margin)
        re = min(n, stop + margin)
        out.append((rs, re, start, stop))
        start = stop
    return out


def tile_grid(
    shape: Sequence[int],
    tile: int | Sequence[int],
    margin: int | Sequence[int],
    div_by: int = 1,
) -> list[Tile]:
    """Cut ``shape`` into tiles whose cores partition it.

    ``tile`` is the target size of the *read* window (core + 2·margin) per axis
    (``0``: that axis is not cut); ``margin`` the context on each side. Both are
    rounded so that every window starts at a multiple of ``div_by``. A tile at or
    below twice the margin raises ``ValueError`` (see :func:`check_tile`).
    """
    nd = len(shape)
    tiles_in = _per_axis(tile, nd)
    margins_in = _per_axis(margin, nd)
    if len(tiles_in) != nd or len(margins_in) != nd:
        raise ValueError(f"tile {tiles_in} and margin {margins_in} must have {nd} entries for shape {shape}")
    checked = check_tile(tiles_in, margins_in, div_by)
    tiles_nd = (0,) * nd if checked is None else _per_axis(checked, nd)
    margins = tuple(int(math.ceil(m / div_by) * div_by) for m in margins_in)
    per_axis = [_axis_tiles(int(n), t, m, div_by) for n, t, m in zip(shape, tiles_nd, margins)]
    tiles = []
    for combo in np.ndindex(*[len(p) for p in per_axis]):
        read, core, crop = [], [], []
        for ax, i in enumerate(combo):
            rs, re, cs, ce = per_axis[ax][i]
            read.append(slice(rs, re))
            core.append(slice(cs, ce))
            crop.append(slice(cs - rs, ce - rs))
        tiles.append(Tile(tuple(read), tuple(core), tuple(crop)))
    return tiles


def budget_tile(
    shape: Sequence[int],
    max_pixels: int,
    margin: int | Sequence[int],
    div_by: int = 1,
) -> tuple[int, ...] | None:
    """The tile (per axis, as :func:`tile_grid` takes it) that keeps every network call of a
    frame of spatial ``shape`` within ``max_pixels`` pixels (voxels in 3D), context included.

    ``None`` when the whole frame fits (one call). Otherwise each axis is cut into equal cores
    (a multiple of ``div_by``, the last one possibly shorter), the longest read window first,
    until a window (core plus ``margin``, rounded up to ``div_by``, on each side) holds at most
    ``max_pixels``; an axis that needs no cut gets ``0`` (not cut). The windows are then about
    square (cubic), and as large as the budget allows, so the context read twice stays small.
    When even the smallest tiles (cores of ``div_by``) exceed the budget those are returned.
    """
    nd = len(shape)
    n = [int(v) for v in shape]
    if math.prod(n) <= int(max_pixels):
        return None
    margins_in = _per_axis(margin, nd)
    if len(margins_in) != nd:
        margins_in = (max(margins_in),) * nd
    div = max(1, int(div_by))
    m = [int(math.ceil(int(v) / div) * div) for v in margins_in]
    k = [1] * nd  # cores per axis

    def core(i: int) -> int:
        return int(math.ceil(math.ceil(n[i] / k[i]) / div) * div)

    def read(i: int) -> int:  # the largest window along axis i (tile_grid leaves an axis uncut when it fits)
        return n[i] if k[i] == 1 or core(i) + 2 * m[i] >= n[i] else core(i) + 2 * m[i]

    while math.prod(read(i) for i in range(nd)) > max_pixels:
        # the axes whose window can still shrink: cores above div_by
        open_axes = [i for i in range(nd) if core(i) > div and min(n[i], div + 2 * m[i]) < read(i)]
        if not open_axes:
            break
        i = max(open_axes, key=read)
        before = read(i)
        while read(i) == before and core(i) > div:
            k[i] += 1
    tile = tuple(0 if read(i) == n[i] else core(i) + 2 * m[i] for i in range(nd))
    return None if all(t == 0 for t in tile) else tile


def _ramp(n: int, lo_overlap: int, hi_overlap: int) -> np.ndarray:
    w = np.ones(n, np.float32)
    if lo_overlap > 0:
        w[:lo_overlap] = np.linspace(1.0 / (lo_overlap + 1), 1.0, lo_overlap, endpoint=False, dtype=np.float32)
    if hi_overlap > 0:
        w[n - hi_overlap :] = np.minimum(
            w[n - hi_overlap :],
            np.linspace(1.0, 1.0 / (hi_overlap + 1), hi_overlap, dtype=np.float32),
        )
    return w


def predict_tiled(
    predict: Callable[[np.ndarray], Mapping[str, np.ndarray]],
    image: np.ndarray,
    spatial_ndim: int,
    tile: int | Sequence[int] | None,
    margin: int | Sequence[int],
    div_by: int = 1,
    blend: str = "crop",
) -> Generator[tuple[int, int], None, dict[str, np.ndarray]]:
    """Run ``predict`` tile by tile over ``image`` and stitch the head outputs.

    ``image`` is ``(*spatial)`` or ``(C, *spatial)``; ``predict`` maps such an
    array to ``{head: (C_head, *spatial)}``. This is a generator: it yields
    ``(done, total)`` after each tile and *returns* the stitched dict (use
    ``yield from`` or :func:`run_tiled`). ``tile`` None or 0 runs the whole image
    at once; a tile at or below twice the margin raises ``ValueError`` naming the
    smallest tile allowed (:func:`check_tile`).
    """
    if blend not in ("crop", "linear"):
        raise ValueError(f"blend must be 'crop' or 'linear', got {blend!r}")
    tile = check_tile(tile, margin, div_by)
    spatial = image.shape[-spatial_ndim:]
    lead = image.shape[:-spatial_ndim]
    if tile is None:
        out = predict(image)
        yield (1, 1)
        return {k: np.asarray(v, np.float32) for k, v in out.items()}
    tiles = tile_grid(spatial, tile, margin, div_by)
    if len(tiles) == 1:
        out = predict(image)
        yield (1, 1)
        return {k: np.asarray(v, np.float32) for k, v in out.items()}
    result: dict[str, np.ndarray] = {}
    weight: np.ndarray | None = None
    pre = (slice(None),) * len(lead)
    for i, t in enumerate(tiles):
        out = predict(np.ascontiguousarray(image[pre + t.read]))
        if blend == "crop":
            for k, v in out.items():
                if k not in result:
                    result[k] = np.zeros((v.shape[0],) + tuple(spatial), np.float32)
                result[k][(slice(None),) + t.core] = v[(slice(None),) + t.crop]
        else:
            shape = tuple(s.stop - s.start for s in t.read)
            w = np.ones(shape, np.float32)
            for ax, s in enumerate(t.read):
                lo = t.core[ax].start - s.start
                hi = s.stop - t.core[ax].stop
                r = _ramp(shape[ax], lo, hi) if (lo or hi) else np.ones(shape[ax], np.float32)
                w *= r.reshape([-1 if a == ax else 1 for a in range(len(shape))])
            if weight is None:
                weight = np.zeros(tuple(spatial), np.float32)
            weight[t.read] += w
            for k, v in out.items():
                if k not in result:
                    result[k] = np.zeros((v.shape[0],) + tuple(spatial), np.float32)
                result[k][(slice(None),) + t.read] += v * w
        yield (i + 1, len(tiles))
    if blend == "linear":
        assert weight is not None  # set by the first tile
        for k in result:
            result[k] /= np.maximum(weight, 1e-12)
    return result


def run_tiled(*args, **kwargs) -> dict[str, np.ndarray]:
    """Drive :func:`predict_tiled` to completion and return the stitched outputs."""
    gen = predict_tiled(*args, **kwargs)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


@dataclass(frozen=True)
class Block:
    """A label block: ``core`` is owned, ``read`` = core + margin (clipped)."""

    index: tuple[int, ...]
    read: tuple[slice, ...]
    core: tuple[slice, ...]


def block_grid(shape: Sequence[int], block: int | Sequence[int], margin: int | Sequence[int]) -> list[Block]:
    """Split ``shape`` into blocks of (at most) ``block`` with ``margin`` context."""
    nd = len(shape)
    blocks = _per_axis(block, nd)
    margins = _per_axis(margin, nd)
    edges = [list(range(0, int(n), int(b))) for n, b in zip(shape, blocks)]
    out = []
    for idx in np.ndindex(*[len(e) for e in edges]):
        read, core = [], []
        for ax, i in enumerate(idx):
            cs = edges[ax][i]
            ce = min(int(shape[ax]), cs + int(blocks[ax]))
            core.append(slice(cs, ce))
            read.append(slice(max(0, cs - margins[ax]), min(int(shape[ax]), ce + margins[ax])))
        out.append(Block(tuple(idx), tuple(read), tuple(core)))
    return out


def owned_objects(labels: np.ndarray, block: Block, image_shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Objects of ``labels`` (the decoded ``block.read`` window) owned by ``block``.

    An object is owned when its anchor — its first pixel in C order — lies in the
    block's core. Anchors partition the image, so every object is owned by exactly
    one block. Returns ``(ids, cut)``: the owned ids and, for each, whether it
    touches an edge of the window that is not an image border (then it may be
    truncated: the margin was smaller than the object; reported as "cut by a
    block edge").
    """
    lab = np.asarray(labels)
    if lab.size == 0 or lab.max() == 0:
        return np.zeros(0, np.int32), np.zeros(0, bool)
    n = int(lab.max())
    ids, first = np.unique(lab.ravel(), return_index=True)
    keep = ids != 0
    ids, first = ids[keep], first[keep]
    coords = np.unravel_index(first, lab.shape)
    owned = np.ones(ids.shape, bool)
    for ax in range(lab.ndim):
        c = coords[ax] + block.read[ax].start
        owned &= (c >= block.core[ax].start) & (c < block.core[ax].stop)
    touching = np.zeros(n + 1, bool)
    for ax in range(lab.ndim):
        if block.read[ax].start > 0:
            touching[np.take(lab, 0, axis=ax).ravel()] = True
        if block.read[ax].stop < image_shape[ax]:
            touching[np.take(lab, -1, axis=ax).ravel()] = True
    touching[0] = False
    ids = ids[owned].astype(np.int32)
    return ids, touching[ids]
