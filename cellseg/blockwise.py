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

Memory-mapped files (a ``tifffile.memmap``/``np.memmap`` input, the ``.tif``
output) are accessed through :class:`MappedRows`, which maps only the rows a
read or write touches and unmaps them at once: a long-lived memory map keeps
every page it ever touched in the process's resident set, which would make the
peak memory grow with the image (1 GiB of labels for 16k x 16k) instead of with
the block.
"""
from __future__ import annotations

import mmap
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generator, Sequence

import numpy as np

from .tiling import Block, block_grid, owned_objects

__all__ = ["percentile_range", "segment_blockwise", "BlockProgress", "open_output", "MappedRows", "Plane",
           "BlockResult", "segment_block", "write_block", "fixed_scale"]


def _full_key(key, ndim: int) -> tuple:
    """An index key as a tuple of one entry per axis: ``...`` expanded, missing axes ``slice(None)``."""
    if key is Ellipsis:
        key = ()
    key = key if isinstance(key, tuple) else (key,)
    if any(k is Ellipsis for k in key):
        i = key.index(Ellipsis)
        key = key[:i] + (slice(None),) * (ndim - len(key) + 1) + key[i + 1:]
    return key + (slice(None),) * (ndim - len(key))


@dataclass
class BlockProgress:
    """Progress of a block-wise run, reported after each block."""

    done: int
    total: int
    n_objects: int


class MappedRows:
    """A C-ordered array stored in a file at ``offset``, read and written band by band.

    Indexing maps only the rows (first axis) that the key touches, copies them out
    (or writes and flushes them) and unmaps them, so the file's pages never pile up
    in the resident set the way they do in a long-lived ``np.memmap``. Keys are
    ``...``, ints and slices (positive steps) per axis.
    """

    def __init__(self, filename, dtype, shape: Sequence[int], offset: int = 0, mode: str = "r"):
        if mode not in ("r", "r+"):
            raise ValueError(f"mode must be 'r' or 'r+', got {mode!r}")
        self.filename = str(filename)
        self.dtype = np.dtype(dtype)
        self.shape = tuple(int(n) for n in shape)
        self.offset = int(offset)
        self.mode = mode

    @classmethod
    def from_memmap(cls, array, mode: str = "r") -> "MappedRows | None":
        """A :class:`MappedRows` over the file of ``array`` when it is a whole, C-ordered
        ``np.memmap`` (not a view of one); else None."""
        if (isinstance(array, np.memmap) and isinstance(array.base, mmap.mmap) and array.filename
                and array.flags.c_contiguous and array.ndim >= 1):
            return cls(array.filename, array.dtype, array.shape, array.offset, mode)
        return None

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def _map(self, key):
        key = _full_key(key, self.ndim)
        first, rest = key[0], key[1:]
        n = self.shape[0]
        local: slice | int
        if isinstance(first, slice):
            start, stop, step = first.indices(n)
            if step <= 0:
                lo, hi, local = 0, n, first
            else:
                lo, hi = start, max(start, stop)
                local = slice(0, hi - lo, step)
        else:
            i = int(first)
            i = i + n if i < 0 else i
            if not 0 <= i < n:
                raise IndexError(f"index {first} out of range for axis 0 of size {n}")
            lo, hi, local = i, i + 1, 0
        row = self.dtype.itemsize * int(np.prod(self.shape[1:]))
        if hi <= lo:  # empty selection: an empty array of the right shape
            return np.zeros((0,) + self.shape[1:], self.dtype), (slice(None),) + rest
        mm = np.memmap(self.filename, dtype=self.dtype, mode="r+" if self.mode == "r+" else "r",
                       offset=self.offset + lo * row,
                       shape=(hi - lo,) + self.shape[1:])
        return mm, (local,) + rest

    def __getitem__(self, key) -> np.ndarray:
        mm, k = self._map(key)
        out = np.array(mm[k])
        del mm
        return out

    def __setitem__(self, key, value) -> None:
        if self.mode != "r+":
            raise ValueError(f"{self.filename} is open read-only")
        mm, k = self._map(key)
        mm[k] = value
        if isinstance(mm, np.memmap):
            mm.flush()
        del mm

    def __array__(self, dtype=None, copy=None):
        a = self[...]
        return a if dtype is None else a.astype(dtype, copy=False)

    def __len__(self) -> int:
        return self.shape[0]


class Plane:
    """A lower-dimensional view of a lazily read array: ``fixed`` maps axes of ``array`` to
    one index each (a channel, the 0 of an axis of size 1), the other axes stay.

    Reads and writes go to ``array`` (a zarr array, a :class:`MappedRows`...) with the
    fixed indices filled in, so a ``(1, 1, H, W)`` OME-Zarr level is read as an ``(H, W)``
    image, block by block; keys are ``...``, ints and slices per remaining axis.
    """

    def __init__(self, array, fixed: dict):
        self.array = array
        self.fixed = {int(k): int(v) for k, v in fixed.items()}
        shape = tuple(int(n) for n in array.shape)
        for ax, i in self.fixed.items():
            if not 0 <= i < shape[ax]:
                raise IndexError(f"index {i} out of range for axis {ax} of size {shape[ax]}")
        self.free = [a for a in range(len(shape)) if a not in self.fixed]
        self.shape = tuple(shape[a] for a in self.free)
        self.dtype = np.dtype(array.dtype)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def _key(self, key):
        key = _full_key(key, self.ndim)
        full: list[Any] = [None] * (len(self.free) + len(self.fixed))
        for ax, i in self.fixed.items():
            full[ax] = i
        for ax, k in zip(self.free, key):
            full[ax] = k
        return tuple(full)

    def __getitem__(self, key) -> np.ndarray:
        return np.asarray(self.array[self._key(key)])

    def __setitem__(self, key, value) -> None:
        self.array[self._key(key)] = value

    def __array__(self, dtype=None, copy=None):
        a = self[...]
        return a if dtype is None else a.astype(dtype, copy=False)


def percentile_range(image, pmin: float, pmax: float, max_samples: int = 2**24,
                     band_bytes: int = 2**26) -> tuple[float, float]:
    """(p_lo, p_hi) over ``image``; exact when it has ≤ ``max_samples`` pixels,
    else over a regular strided subsample (read band by band along the first axis,
    so no more than ``band_bytes`` of the image are read at once)."""
    shape = tuple(image.shape)
    n = int(np.prod(shape))
    if n <= max_samples:
        x = np.asarray(image[...], np.float32)
    else:
        step = int(np.ceil((n / max_samples) ** (1.0 / len(shape))))
        row_bytes = np.dtype(image.dtype).itemsize * int(np.prod(shape[1:]))
        band = max(step, (band_bytes // max(row_bytes, 1)) // step * step)
        rest = tuple(slice(None, None, step) for _ in shape[1:])
        x = np.concatenate([np.asarray(image[(slice(y, min(y + band, shape[0]), step),) + rest], np.float32)
                            for y in range(0, shape[0], band)])
    lo, hi = np.percentile(x, [pmin, pmax])
    if hi <= lo:
        hi = float(x.max())
        if hi <= lo:
            raise ValueError("the image is constant: nothing to normalize or segment")
    return float(lo), float(hi)


def open_output(path: str | Path, shape: Sequence[int], chunks: Sequence[int]):
    """Create the on-disk label output: ``.zarr`` → zarr array, ``.tif`` → a TIFF written in
    place through :class:`MappedRows`.

    Written under a temporary name; :func:`segment_blockwise` renames it when complete.
    """
    path = Path(path)
    if path.suffix == ".zarr":
        import zarr

        return zarr.open_array(str(path), mode="w", shape=tuple(shape), chunks=tuple(chunks), dtype="int32",
                               fill_value=0)
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        mm = tifffile.memmap(str(path), shape=tuple(shape), dtype=np.int32, photometric="minisblack")
        offset = int(mm.offset)
        mm.flush()
        del mm  # written band by band through MappedRows: resident memory stays bounded by the block
        return MappedRows(path, np.int32, shape, offset, mode="r+")
    raise ValueError(f"{path}: block-wise output must end in .zarr, .tif or .tiff")


@dataclass
class BlockResult:
    """The objects one block owns, ready to be written (see :func:`segment_block`).

    ``labels`` is the part of the block's read window that holds its owned objects
    (``bbox``, in image coordinates), numbered ``1..n`` in the order of the decoder's
    ids; ``cut`` the local ids of the objects touching a window edge that is not an
    image border; ``scores`` the decoder's score of each (``NaN`` where it has none).
    Small and picklable: a Dask worker returns it to the process that writes."""

    index: int
    bbox: tuple
    labels: np.ndarray
    n: int
    cut: list
    scores: np.ndarray

    @classmethod
    def empty(cls, index: int) -> "BlockResult":
        return cls(index, (), np.zeros((0,), np.uint8), 0, [], np.zeros(0, np.float32))


def segment_block(segmenter, image, block: Block, shape: Sequence[int], norm_range, index: int = 0) -> BlockResult:
    """Segment the read window of ``block`` and keep the objects it owns (:func:`owned_objects`).

    ``segmenter`` should have a fixed object size (see :func:`fixed_scale`) so that every
    block is resampled alike; ``norm_range`` is the intensity range of the whole image."""
    window = np.asarray(image[block.read])
    if np.all(window == window.flat[0]):
        return BlockResult.empty(index)
    res = segmenter.segment(window, axes="YX" if window.ndim == 2 else "ZYX", norm_range=norm_range)
    lab = res.labels
    ids, cut = owned_objects(lab, block, shape)
    if not ids.size:
        return BlockResult.empty(index)
    n = int(ids.size)
    dt = np.uint16 if n <= np.iinfo(np.uint16).max else np.uint32
    lut = np.zeros(int(lab.max()) + 1, dt)
    lut[ids] = np.arange(1, n + 1, dtype=dt)
    mine = lut[lab]
    fg = mine > 0
    box = tuple(slice(int(hit[0]), int(hit[-1]) + 1) for hit in (
        np.flatnonzero(fg.any(axis=tuple(a for a in range(mine.ndim) if a != ax))) for ax in range(mine.ndim)))
    bbox = tuple(slice(r.start + b.start, r.start + b.stop) for r, b in zip(block.read, box))
    sc = res.scores()
    scores = np.array([sc.get(int(i), np.nan) for i in ids], np.float32)
    return BlockResult(index, bbox, np.ascontiguousarray(mine[box]), n, (np.flatnonzero(cut) + 1).tolist(), scores)


def write_block(out, result: BlockResult, offset: int) -> None:
    """Write the owned objects of ``result`` into ``out`` with ids ``offset + 1 ..
    offset + n``; pixels of other objects outside them are left as they are (a later
    block's objects win where two decodes overlap)."""
    if not result.n:
        return
    region = np.asarray(out[result.bbox])
    write = result.labels > 0
    region[write] = result.labels[write].astype(np.int64) + int(offset)
    out[result.bbox] = region


def iter_blocks(
    segmenter,
    image,
    out,
    block: int | Sequence[int] = 2048,
    margin: int | Sequence[int] = 64,
    norm_range: tuple[float, float] | None = None,
    blocks: list[Block] | None = None,
) -> Generator[BlockProgress, None, list[int]]:
    """Segment ``image`` block by block into the array ``out`` (same shape, int32).

    Generator: yields :class:`BlockProgress` after each block and returns the
    list of ids that were cut by a block edge (objects larger than the margin).
    Block ``i`` numbers its objects after those of blocks ``0..i-1``
    (:func:`segment_block`, :func:`write_block`).
    """
    image = MappedRows.from_memmap(image) or image
    shape = tuple(image.shape)
    if norm_range is None:
        norm_range = percentile_range(image, *segmenter.normalize)
    segmenter = fixed_scale(segmenter, image, norm_range)
    blocks = blocks if blocks is not None else block_grid(shape, block, margin)
    next_id = 1
    cut_ids: list[int] = []
    for i, b in enumerate(blocks):
        r = segment_block(segmenter, image, b, shape, norm_range, index=i)
        write_block(out, r, next_id - 1)
        cut_ids += [next_id - 1 + c for c in r.cut]
        next_id += r.n
        yield BlockProgress(i + 1, len(blocks), next_id - 1)
    return cut_ids


def run_blocks(gen, progress: Callable | None = None):
    """Drive an :func:`iter_blocks` generator to its end, passing each event to
    ``progress``; returns the generator's value (the ids cut by a block edge)."""
    while True:
        try:
            ev = next(gen)
        except StopIteration as stop:
            return stop.value
        if progress:
            progress(ev)


def fixed_scale(segmenter, image, norm_range):
    """A segmenter whose object size is fixed for the whole image: with ``diameter="auto"``
    the size is estimated once, on the most textured window of the image (read at most
    1024 px a side from its centre region), so every block is resampled alike and objects
    cut by block edges match."""
    mode, _ = segmenter.scale_mode()
    if mode != "auto":
        return segmenter
    import copy

    shape = tuple(image.shape)
    win = tuple(slice(max(0, (n - 1024) // 2), max(0, (n - 1024) // 2) + min(n, 1024)) for n in shape)
    sample = np.asarray(image[win], dtype=np.float32)
    lo, hi = (np.float32(v) for v in norm_range)
    # the frame as the network takes it (grey repeated for a model of RGB input), as Segmenter.iter_segment does
    x = segmenter._match_channels((sample - lo) / (hi - lo + np.float32(1e-20)), False)
    d, _ = segmenter.estimate_diameter(x)
    fixed = copy.copy(segmenter)
    fixed.diameter = d if d else "off"
    return fixed


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
    chunks = (int(block),) * image.ndim if isinstance(block, (int, np.integer)) else tuple(block)

    def run(tmp: Path) -> list[int]:
        out = open_output(tmp, image.shape, chunks)
        cut = run_blocks(iter_blocks(segmenter, image, out, block=block, margin=margin), progress)
        if hasattr(out, "flush"):
            out.flush()
        del out
        return cut

    if out_path.suffix != ".zarr":  # one file: the shared atomic writer (mode as a plain write)
        from ._files import atomic_write

        if out_path.suffix.lower() not in (".tif", ".tiff"):
            raise ValueError(f"{out_path}: block-wise output must end in .zarr, .tif or .tiff")
        result: dict = {}
        atomic_write(out_path, lambda tmp: result.setdefault("cut", run(tmp)))
        return out_path, result["cut"]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.stem}.partial{out_path.suffix}")  # a zarr folder
    cut = run(tmp)
    if out_path.exists():
        if out_path.is_dir():
            import shutil

            shutil.rmtree(out_path)
        else:
            out_path.unlink()
    os.replace(tmp, out_path)
    return out_path, cut
