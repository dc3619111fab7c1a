"""Block-wise segmentation of images too large for memory.

The image (any array-like that supports slicing: a NumPy array, a ``tifffile``
memory map, a zarr array) is cut into blocks; each block is segmented with a
margin of context and keeps only the objects it owns (see
:func:`cellseg.tiling.owned_objects`: anchor in the block's core). Owned objects
are written, with ids offset so they stay unique, into an output that lives on
disk (a zarr array, or a memory-mapped TIFF), so memory stays bounded by the
block size, not the image size.

Normalization uses one intensity range for the whole image (percentiles of a
strided subsample, or exact percentiles when the image fits in memory), so that
blocks see the same normalized values as a whole-image run.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .tiling import Block, block_grid, owned_objects

__all__ = ["percentile_range", "segment_blockwise", "BlockProgress", "open_output"]


@dataclass
class BlockProgress:
    done: int
    total: int
    n_objects: int


def percentile_range(image, pmin: float, pmax: float, max_samples: int = 2**24) -> tuple[float, float]:
    """(p_lo, p_hi) over ``image``; exact when it has ≤ ``max_samples`` pixels,
    else over a regular strided subsample (read block-row by block-row)."""
    shape = image.shape
    n = int(np.prod(shape))
    if n <= max_samples:
        x = np.asarray(image[...], np.float32)
    else:
        step = int(np.ceil((n / max_samples) ** (1.0 / len(shape))))
        x = np.asarray(image[tuple(slice(None, None, step) for _ in shape)], np.float32)
    lo, hi = np.percentile(x, [pmin, pmax])
    if hi <= lo:
        hi = float(x.max())
        if hi <= lo:
            raise ValueError("the image is constant: nothing to normalize or segment")
    return float(lo), float(hi)


def open_output(path: str | Path, shape: Sequence[int], chunks: Sequence[int]):
    """Create the on-disk label output: ``.zarr`` → zarr array, ``.tif`` → memory-mapped TIFF.

    Written under a temporary name; :func:`segment_blockwise` renames it when complete.
    """
    path = Path(path)
    if path.suffix == ".zarr":
        import zarr

        return zarr.open_array(str(path), mode="w", shape=tuple(shape), chunks=tuple(chunks), dtype="int32",
                               fill_value=0)
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        return tifffile.memmap(str(path), shape=tuple(shape), dtype=np.int32, photometric="minisblack")
    raise ValueError(f"{path}: block-wise output must end in .zarr, .tif or .tiff")


def iter_blocks(
    segmenter,
    image,
    out,
    block: int | Sequence[int] = 2048,
    margin: int | Sequence[int] = 64,
    norm_range: tuple[float, float] | None = None,
    blocks: list[Block] | None = None,
) -> Iterator[BlockProgress]:
    """Segment ``image`` block by block into the array ``out`` (same shape, int32).

    Generator: yields :class:`BlockProgress` after each block and returns the
    list of ids that were cut by a block edge (objects larger than the margin).
    """
    shape = tuple(image.shape)
    if norm_range is None:
        norm_range = percentile_range(image, *segmenter.normalize)
    blocks = blocks if blocks is not None else block_grid(shape, block, margin)
    next_id = 1
    cut_ids: list[int] = []
    for i, b in enumerate(blocks):
        window = np.asarray(image[b.read])
        if np.all(window == window.flat[0]):
            yield BlockProgress(i + 1, len(blocks), next_id - 1)
            continue
        res = segmenter.segment(window, axes="YX" if window.ndim == 2 else "ZYX", norm_range=norm_range)
        lab = res.labels
        ids, cut = owned_objects(lab, b, shape)
        if ids.size:
            lut = np.zeros(int(lab.max()) + 1, np.int32)
            lut[ids] = np.arange(next_id, next_id + ids.size, dtype=np.int32)
            cut_ids += lut[ids[cut]].tolist()
            mine = lut[lab]
            region = np.asarray(out[b.read])
            write = mine > 0
            region[write] = mine[write]
            out[b.read] = region
            next_id += ids.size
        yield BlockProgress(i + 1, len(blocks), next_id - 1)
    return cut_ids


def segment_blockwise(
    segmenter,
    image,
    out_path: str | Path,
    block: int | Sequence[int] = 2048,
    margin: int | Sequence[int] = 64,
    progress: Callable[[BlockProgress], Any] | None = None,
) -> tuple[Path, list[int]]:
    """Segment a large 2D image into ``out_path`` (.zarr or .tif); returns (path, cut ids).

    The output is written under a temporary name beside ``out_path`` and renamed
    when every block is done, so an interrupted run never leaves a file that looks
    complete.
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.stem}.partial{out_path.suffix}")
    chunks = (block,) * image.ndim if np.isscalar(block) else tuple(block)
    out = open_output(tmp, image.shape, chunks)
    gen = iter_blocks(segmenter, image, out, block=block, margin=margin)
    while True:
        try:
            ev = next(gen)
        except StopIteration as stop:
            cut = stop.value
            break
        if progress:
            progress(ev)
    if hasattr(out, "flush"):
        out.flush()
    del out
    if out_path.exists():
        if out_path.is_dir():
            import shutil

            shutil.rmtree(out_path)
        else:
            out_path.unlink()
    os.replace(tmp, out_path)
    return out_path, cut
