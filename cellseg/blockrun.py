"""Block-wise segmentation of one huge file, as ``cellseg segment --block-size`` runs it.

The image is read block by block, never whole: an uncompressed TIFF through short-lived
memory maps (:class:`cellseg.blockwise.MappedRows`), a compressed or tiled TIFF through
tifffile's zarr view of its strips or tiles, an OME-Zarr level through zarr. Each block
is segmented with a margin of context by :func:`cellseg.blockwise.segment_block` and
keeps the objects it owns (their anchor in its core: one owner per object); block ``i``
numbers its objects after those of blocks ``0..i-1``, so the labels equal those of
:func:`cellseg.blockwise.segment_blockwise` with the same block size and margin.

Output
    Labels are written block by block into a file that lives on disk: an uncompressed
    uint32 OME-TIFF (``OUT/STEM_labels.tif``) written through short-lived row maps, or,
    for an OME-Zarr input, the image's ``labels/<name>`` group with one level per image
    level (the lower levels sampled from level 0 band by band, as
    :func:`cellseg.omezarr.write_labels` samples them). The per-object CSV is computed
    block by block from the finished labels (each object from the window of the block
    that owns it, so its row equals the whole-image table's) and the overlay is a
    downsampled view (at most :data:`OVERLAY_MAX_SIDE` pixels a side).

Resume
    Everything in progress lives in a hidden work folder beside the final output
    (``OUT/.STEM_labels.tif.blockwise/`` or ``IMAGE/labels/.NAME.blockwise/``): the
    partial labels, the decoder's score of each object (``scores.f32``) and
    ``state.json``, rewritten atomically after each block is written (blocks done, the
    objects of each, the intensity range, the object size and margin used, and the
    fingerprint of the run settings, :func:`cellseg.batch.run_settings`). A run killed at
    any point and started again with the same command redoes only the blocks that were
    not recorded as done; other settings, another block size or a changed input start
    over (said in a message). The labels get their final name only when complete.

Dask
    With a Dask client the blocks run on the cluster's workers (each builds the
    segmenter from the picklable :class:`cellseg.batch.SegmenterSpec` and opens the
    input itself); they return the owned objects (:class:`cellseg.blockwise.BlockResult`)
    and this process writes them in block order, so ids and ownership are those of a
    single-process run. At most two blocks per worker are in flight.
"""
from __future__ import annotations

import copy
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from .blockwise import BlockResult, MappedRows, Plane, fixed_scale, percentile_range, segment_block, write_block
from .tiling import block_grid

if TYPE_CHECKING:
    from .segmenter import Segmenter

__all__ = ["BLOCKWISE_ABOVE_PX", "DEFAULT_BLOCK", "BLOCK_TILE", "OVERLAY_MAX_SIDE", "BlockwiseError", "BlockPlan",
           "BlockEvent", "PlaneSource", "probe", "default_margin", "network_context", "block_segmenter", "block_tile",
           "check_block_size", "segment_file_blockwise", "work_dir"]

#: a frame with more pixels than this goes block-wise by default (64 million: 8192 x 8192 is over it)
BLOCKWISE_ABOVE_PX = 64_000_000
#: block size (px, the owned core of each block) when a file goes block-wise without --block-size
DEFAULT_BLOCK = 2048
#: the largest core of a network tile inside a block when no --tile (or --tile 0) is given (memory stays bounded by
#: the tile; see :func:`block_tile`)
BLOCK_TILE = 1024
#: the overlay of a block-wise run is downsampled to at most this many pixels a side
OVERLAY_MAX_SIDE = 2048
#: a compressed TIFF whose strips or tiles are larger than this cannot be read block by block
MAX_CHUNK_BYTES = 256 * 2**20
STATE_FORMAT = "cellseg-blockwise-state"


class BlockwiseError(ValueError):
    """A file or a setting that a block-wise run cannot use (the message names the file)."""

    #: the pixels of one frame of the file, when known (for the caller's message)
    frame_px: int | None = None


@dataclass(frozen=True)
class BlockPlan:
    """How to run one file block-wise: ``block`` px per block, ``margin`` px of context
    (None: :func:`default_margin`); ``auto``: chosen by size, not asked for; ``error``: why
    the file cannot run block-wise (reported as the file's failure)."""

    block: int = DEFAULT_BLOCK
    margin: int | None = None
    auto: bool = False
    error: str | None = None
    settings: dict | None = field(default=None, compare=False)


@dataclass
class BlockEvent:
    """Progress of a block-wise run: ``stage`` is ``"start"`` (``message``: what is done,
    resumed or started over), ``"block"`` (``done``/``total`` blocks written, ``n_objects``
    so far) or ``"finish"`` (``message``: the stage, e.g. the CSV)."""

    input: str
    stage: str
    done: int = 0
    total: int = 0
    n_objects: int = 0
    message: str = ""
    #: seconds since this run started, and blocks it segmented itself (not reused)
    seconds: float = 0.0
    new: int = 0


# ----------------------------------------------------------------------------- input


@dataclass(frozen=True)
class PlaneSource:
    """The 2D plane of a file that a block-wise run segments, as a picklable description
    (a Dask worker opens it itself): ``kind`` ``"tiff"`` (memory-mapped), ``"tiff-chunked"``
    (compressed or tiled, read through tifffile's zarr store) or ``"zarr"`` (an OME-Zarr
    level); ``fixed`` the index of every other axis."""

    path: str
    kind: str
    full_shape: tuple
    fixed: tuple  # ((axis, index), ...)
    dtype: str
    axes: str
    level: int = 0
    offset: int = 0
    array_path: str = ""
    zarr_format: int = 0
    pixel_size: tuple = ()  # (("Y", µm), ("X", µm)) or ()
    note: str = ""  # which channel was chosen, when the choice was not the user's (a nuclear stain)

    @property
    def shape(self) -> tuple[int, int]:
        fixed = dict(self.fixed)
        return tuple(n for a, n in enumerate(self.full_shape) if a not in fixed)

    def open(self):
        """The plane as a lazily read 2D array (shape, dtype, slicing)."""
        arr: Any
        if self.kind == "tiff":
            arr = MappedRows(self.path, self.dtype, self.full_shape, self.offset, mode="r")
        elif self.kind == "tiff-chunked":
            import tifffile
            import zarr

            arr = zarr.open_array(tifffile.imread(self.path, aszarr=True), mode="r")
        else:
            import zarr

            arr = zarr.open_array(self.array_path, mode="r", zarr_format=3 if self.zarr_format == 3 else 2)
        return Plane(arr, dict(self.fixed)) if self.fixed else arr

    def signature(self) -> list:
        """Size and modification time of the file (or of the zarr level's metadata): a changed
        input is not resumed."""
        p = Path(self.path) if self.kind != "zarr" else Path(self.array_path)
        if p.is_dir():
            p = next((p / m for m in ("zarr.json", ".zarray") if (p / m).is_file()), p)
        st = p.stat()
        return [int(st.st_size), int(st.st_mtime_ns)]


_AXIS_WORDS = {"T": "time points", "Z": "Z slices", "C": "channels"}


def probe(path, level: int = 0, axes: str | None = None, channel=None, nuclear: bool = False) -> PlaneSource:
    """Read the metadata of ``path`` (a TIFF or an OME-Zarr image; no pixels) and describe the
    2D plane a block-wise run would segment. Raises :class:`BlockwiseError` (or the reader's
    error) naming the file when it has no such plane: a Z or T stack, several channels and
    no ``channel``, a PNG, a TIFF stored as a few huge compressed strips."""
    from . import io, omezarr
    from .segmenter import nuclear_channel, nuclear_channel_note

    path = Path(path)
    names = None
    src: dict[str, Any]
    if omezarr.is_zarr(path):
        img = omezarr.open_image(path)
        level = img.check_level(level)
        shape = tuple(img.levels[level].shape)
        letters = img.letters
        if axes is not None:
            squeezed = "".join(a for a, n in zip(letters, shape) if n > 1 or a in "YX")
            if axes.upper().replace("S", "C") != squeezed:
                raise io.AxesError(f"{path}: axes={axes!r} contradict the OME-Zarr metadata, whose axes are "
                                   f"{squeezed!r}; an OME-Zarr says its own axes")
        ps = img.pixel_size(level)
        names = img.channel_names
        arr = img.array(level)
        src = dict(path=str(path), kind="zarr", full_shape=shape, dtype=str(arr.dtype), axes=letters,
                   level=level, array_path=str(path / img.levels[level].path), zarr_format=img.zarr_format)
    elif path.suffix.lower() in io.TIFF_SUFFIXES:
        import tifffile

        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        try:
            with io._tifffile_messages(), tifffile.TiffFile(path) as tif:  # tifffile's log: no stderr line
                if not tif.series:
                    raise BlockwiseError(f"{path}: TIFF file contains no image")
                series = tif.series[0]
                shape = tuple(int(n) for n in series.shape)
                raw = series.axes
                page: Any = series.pages[0] if series.pages else tif.pages[0]
                sizes, names = io._tiff_sizes(tif, page)
                offset = series.dataoffset
                dtype = np.dtype(series.dtype)
                chunk = int(np.prod(getattr(page, "chunks", None) or page.shape)) * dtype.itemsize
        except BlockwiseError:
            raise
        except Exception as exc:
            raise io.ImageReadError(f"{path}: cannot read as TIFF ({type(exc).__name__}: {exc})") from None
        if dtype.kind not in "uif":
            raise BlockwiseError(f"{path}: pixel type {dtype} cannot be segmented block-wise")
        # unnamed axes of length 1 (a (1, 1, Y, X) array written without axes) say nothing: fixed planes,
        # and axes= names the others, as io.read_image reads them
        ones = [i for i, (a, n) in enumerate(zip(raw, shape)) if a == "Q" and n == 1]
        if axes is not None:
            given = io.check_axes(axes, len(shape) - len(ones), where=str(path)).replace("S", "C")
            it = iter(given)
            letters = "".join("Q" if i in ones else next(it) for i in range(len(shape)))
        else:
            letters = raw.replace("S", "C")
            named = "".join(a for i, a in enumerate(letters) if i not in ones)
            if len(set(named)) != len(named) or set(named) - set("TZCYX"):
                raise io.AxesError(f"{path}: cannot tell the axes of this image of shape {shape} (tifffile reports "
                                   f"{raw!r}); pass --axes")
        ps = {a: v for a, v in sizes.items() if a in "YX" and raw.find(a) >= 0 and letters[raw.find(a)] == a}
        ps = ps if "Y" in ps and "X" in ps else None
        if offset is None and chunk > MAX_CHUNK_BYTES:
            raise BlockwiseError(
                f"{path}: compressed in strips or tiles of {chunk / 2**20:.0f} MiB, too large to read block by "
                f"block; save it uncompressed or tiled (e.g. tifffile.imwrite(..., tile=(512, 512))) or segment it "
                f"whole (--no-blockwise)")
        src = dict(path=str(path), kind="tiff" if offset is not None else "tiff-chunked", full_shape=shape,
                   dtype=str(dtype), axes=letters, offset=int(offset or 0))
    else:
        raise BlockwiseError(f"{path}: block-wise runs read TIFF files (memory-mapped, or by strips or tiles) "
                             f"and OME-Zarr images; a {path.suffix or 'file without extension'} file is loaded "
                             "whole (drop --block-size)")
    if "Y" not in letters or "X" not in letters or letters.index("Y") > letters.index("X"):
        raise BlockwiseError(f"{path}: block-wise runs need Y and X axes in this order, the image has {letters!r}")
    frame_px = shape[letters.index("Y")] * shape[letters.index("X")]

    def fail(msg: str):
        exc = BlockwiseError(msg)
        exc.frame_px = frame_px  # for the caller's message: how large a frame is
        return exc

    fixed = []
    note = ""
    for ax, (a, n) in enumerate(zip(letters, shape)):
        if a in "YX":
            continue
        if n == 1:
            fixed.append((ax, 0))
        elif a == "C" and channel is not None:
            fixed.append((ax, _channel_index(path, channel, n, names)))
        elif a == "C" and nuclear and names and (i := nuclear_channel(names, n)) is not None:
            fixed.append((ax, i))
            note = nuclear_channel_note(i, names, "--channel")
        elif a == "C":
            raise fail(
                f"{path}: has {n} channels and a block-wise run segments one: choose it with --channel (an index"
                + (f" or one of {list(names)})" if names else ")"))
        else:
            what = _AXIS_WORDS.get(a, f"planes along {a}")
            raise fail(
                f"{path}: block-wise runs segment one 2D image (Y, X); this one has {n} {what} (axes {letters!r}, "
                f"shape {shape}), which block-wise runs do not support yet: segment it whole (--no-blockwise) or "
                f"split it into 2D images")
    return PlaneSource(fixed=tuple(fixed), pixel_size=tuple(sorted(ps.items())) if ps else (), note=note, **src)


def _channel_index(path, channel, n: int, names) -> int:
    if isinstance(channel, str) and not channel.lstrip("-").isdigit():
        hits = [i for i, c in enumerate(names or []) if str(c) == channel] or \
               [i for i, c in enumerate(names or []) if str(c).casefold() == channel.casefold()]
        if len(hits) != 1:
            raise BlockwiseError(f"{path}: no channel named {channel!r}; channels are {list(names or [])}")
        return hits[0]
    i = int(channel)
    if not -n <= i < n:
        raise BlockwiseError(f"{path}: channel {i} out of range: the image has {n} channels")
    return i % n


# ----------------------------------------------------------------------------- segmenter, margin


def block_segmenter(segmenter: Segmenter, pixel_size: float | None = None) -> Segmenter:
    """A copy of ``segmenter`` for blocks, with the file's pixel size when it was given none."""
    seg = copy.copy(segmenter)
    if seg.pixel_size is None and pixel_size:
        seg.pixel_size = float(pixel_size)
    if seg.spatial_ndim != 2:
        raise BlockwiseError("block-wise runs segment 2D images; this model segments 3D volumes")
    return seg


def _factor(segmenter: Segmenter) -> tuple[float, float | None]:
    """(resampling factor, object diameter in image px or None) of a segmenter with a fixed scale."""
    mode, diam = segmenter.scale_mode()
    d0 = segmenter.object_size.get("diameter")
    if mode == "off" or not diam or not d0:
        return 1.0, (float(d0) if d0 else None)
    return segmenter._clip_factor(float(d0) / float(diam)), float(diam)


def block_tile(read: int, segmenter: Segmenter) -> int:
    """The network tile for blocks read ``read`` px a side (block + 2 margins) when none was given:
    the fewest tiles per side whose cores are at most :data:`BLOCK_TILE` px, equal in size (blocks
    of 2048 px with margins of 96 px are read 2240 px a side: 3 x 3 tiles of 752 px cores, not 3 x 3
    of 1024 px tiles mostly outside the window). In the network's pixels (after resampling), each
    tile with the network's context margin; a window smaller than a tile is one tile."""
    f, _ = _factor(segmenter)
    div = max(1, int(segmenter.model.div_by))
    given = segmenter.margin
    # a margin given per axis: the largest, since the tiles here are square
    ctx = segmenter.default_margin() if given is None else max(given) if isinstance(given, Sequence) else given
    m = int(math.ceil(int(ctx) / div) * div)
    n = int(math.ceil(read * f))
    k = max(1, math.ceil(n / BLOCK_TILE))
    return int(math.ceil(math.ceil(n / k) / div) * div) + 2 * m


def network_context(segmenter: Segmenter) -> int:
    """Pixels of context (in the image) the network needs on each side: half its receptive
    field, times the resampling of a fixed object size."""
    f, _ = _factor(segmenter)
    return int(math.ceil(segmenter.default_margin() / f))


def default_margin(segmenter: Segmenter) -> int:
    """The margin of context read around each block: the network's context
    (:func:`network_context`) plus two object diameters (64 px when the model records no
    object size), rounded up to a multiple of 16 px."""
    _, diam = _factor(segmenter)
    allow = 2 * diam if diam else 64
    return int(math.ceil((network_context(segmenter) + allow) / 16) * 16)


def check_block_size(block: int, margin: int, context: int, where: str = "") -> None:
    """Raise :class:`BlockwiseError` when ``margin`` is below the network's ``context`` or
    ``block`` below twice the margin (most of the time would go into margins)."""
    pre = f"{where}: " if where else ""
    if margin < context:
        raise BlockwiseError(f"{pre}a block margin of {margin} px is too small: the network needs {context} px of "
                             f"context on each side of a block (--block-margin {context} or more)")
    if block < 2 * margin:
        raise BlockwiseError(f"{pre}a block size of {block} px is too small for a margin of {margin} px (each block "
                             f"is read with the margin on every side): use --block-size {2 * margin} or more "
                             f"(blocks of {DEFAULT_BLOCK} px or more are efficient)")


# ----------------------------------------------------------------------------- work folder, state


def work_dir(labels_path) -> Path:
    """The hidden folder beside ``labels_path`` that holds a block-wise run in progress."""
    p = Path(labels_path)
    return p.parent / f".{p.name}.blockwise"


class _Work:
    """The work folder of one run: lock, state, partial labels, scores."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.state_path = folder / "state.json"
        self.scores_path = folder / "scores.f32"
        self._lock: Any = None

    def lock(self, path) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        fh = open(self.folder / "lock", "a+")
        try:
            import fcntl

            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise BlockwiseError(f"{path}: another cellseg run is segmenting it now (its work folder "
                                 f"{self.folder} is locked)") from None
        except (ImportError, OSError):  # no POSIX locks here (Windows, some network file systems): go on
            pass
        self._lock = fh

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def load(self) -> dict | None:
        try:
            data = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and data.get("format") == STATE_FORMAT else None

    def save(self, state: dict) -> None:
        from ._files import atomic_write

        text = json.dumps(state)
        atomic_write(self.state_path, lambda tmp: tmp.write_text(text))

    def clear(self) -> None:
        """Remove everything but the lock."""
        for e in list(os.scandir(self.folder)):
            if e.name == "lock":
                continue
            if e.is_dir(follow_symlinks=False):
                shutil.rmtree(e.path)
            else:
                os.unlink(e.path)

    def remove(self) -> None:
        self.unlock()
        shutil.rmtree(self.folder, ignore_errors=True)


def _remove_zarr_partials(folder: Path) -> None:
    """Chunk files a killed zarr write left half-written (zarr writes ``NAME.<uuid>.partial`` and renames)."""
    import re

    pat = re.compile(r"\.[0-9a-f]{32}\.partial$")
    for root, _, files in os.walk(folder):
        for f in files:
            if pat.search(f):
                try:
                    os.unlink(os.path.join(root, f))
                except OSError:
                    pass


def _settings_fingerprint(settings: dict | None, segmenter) -> tuple[str, dict]:
    from .batch import model_fingerprint, settings_id
    from .models.config import jsonable as _jsonable

    if settings is None:  # called from Python without a run record: the segmenter's own settings
        import dataclasses

        settings = _jsonable({
            "model_sha256": model_fingerprint(segmenter.model), "decode": dataclasses.asdict(segmenter.params),
            "normalize": list(segmenter.normalize), "transform": segmenter.transform,
            "augment": segmenter.augment, "diameter": segmenter.diameter, "pixel_size": segmenter.pixel_size})
    return settings_id(settings), settings


# ----------------------------------------------------------------------------- outputs


def _create_output(kind: str, folder: Path, shape, source: PlaneSource, zimage=None, level: int = 0):
    """The partial labels in ``folder``: (path, 2D writable plane, all zarr levels or None)."""
    if kind == "tiff":
        import tifffile

        path = folder / "labels.tif"
        meta: dict[str, Any] = {"axes": "YX"}
        for a, v in source.pixel_size:
            meta[f"PhysicalSize{a}"] = v
            meta[f"PhysicalSize{a}Unit"] = "µm"
        mm = tifffile.memmap(str(path), shape=tuple(shape), dtype=np.uint32, photometric="minisblack", ome=True,
                             metadata=meta)
        offset = int(mm.offset)
        mm.flush()
        del mm
        return path, MappedRows(path, np.uint32, shape, offset, mode="r+"), None
    from . import omezarr

    path = folder / "labels.zarr"
    arrays = omezarr.create_label_group(zimage, path, level=level, dtype=np.uint32)
    fixed = {a: 0 for a, letter in enumerate(zimage.letters) if letter not in "YX"}
    return path, Plane(arrays[0], fixed), arrays


def _open_output(kind: str, path: Path, shape, zarr_format: int = 0):
    if kind == "tiff":
        import tifffile

        with tifffile.TiffFile(path) as tif:
            offset = tif.series[0].dataoffset
        if offset is None:
            raise BlockwiseError(f"{path}: the partial labels of an unfinished run are not an uncompressed TIFF")
        return MappedRows(path, np.uint32, shape, offset, mode="r+"), None
    import zarr

    g = zarr.open_group(str(path), mode="r+", zarr_format=3 if zarr_format == 3 else 2)
    n = len([k for k in g.array_keys()])
    arrays: list[Any] = [g[str(i)] for i in range(n)]
    fixed = {a: 0 for a in range(arrays[0].ndim - 2)}
    return Plane(arrays[0], fixed), arrays


def _csv_rows(labels, image, blocks, counts, offsets, shape, scores: np.ndarray, cut: set, spacing):
    """The CSV rows of every object, block by block: the objects a block wrote are measured in its
    read window of the finished labels (where all their pixels are), so each row equals the one a
    whole-image table gives."""
    from .measure import frame_rows

    h, w = shape
    for b, n, off in zip(blocks, counts, offsets):
        if not n:
            continue
        lab = np.asarray(labels[b.read]).astype(np.int64)
        local = np.where((lab > off) & (lab <= off + n), lab - off, 0).astype(np.int32)
        del lab
        if not local.any():
            continue
        img = np.asarray(image[b.read])
        y0, x0 = b.read[0].start, b.read[1].start
        for r in frame_rows(local, img, 0, {}, set(), spacing):
            i = r["id"] + off
            r["id"] = i
            r["centroid_y"] += y0
            r["centroid_x"] += x0
            r["bbox_y0"] += y0
            r["bbox_y1"] += y0
            r["bbox_x0"] += x0
            r["bbox_x1"] += x0
            r["score"] = float(scores[i - 1]) if i - 1 < scores.size else float("nan")
            r["touches_border"] = r["bbox_y0"] == 0 or r["bbox_x0"] == 0 or r["bbox_y1"] == h or r["bbox_x1"] == w
            r["cut_by_block"] = i in cut
            if spacing is not None:
                r["centroid_y_um"] = r["centroid_y"] * spacing[0]
                r["centroid_x_um"] = r["centroid_x"] * spacing[1]
            yield r


def _write_csv_stream(path, rows, columns) -> None:
    import csv

    from ._files import atomic_write
    from .measure import csv_cell

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            wr = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
            wr.writeheader()
            for r in rows:
                wr.writerow({k: csv_cell(k, r.get(k)) for k in columns})

    atomic_write(Path(path), write)


def _strided(arr, step: int, band: int = 256) -> np.ndarray:
    """``arr[::step, ::step]`` read in bands of rows (bounded memory)."""
    h = arr.shape[0]
    rows = range(0, h, step * band)
    return np.concatenate([np.asarray(arr[y:min(h, y + step * band):step, ::step]) for y in rows])


# ----------------------------------------------------------------------------- the run


def _block_on_worker(spec, fix: dict, source: PlaneSource, block, shape, norm_range, index: int) -> BlockResult:
    """A Dask task: segment one block (the worker builds the segmenter and opens the input once)."""
    from .batch import WORKER_CACHE, worker_segmenter

    def build():
        seg = copy.copy(spec.build())
        for k, v in fix.items():
            setattr(seg, k, v)
        return seg

    seg = worker_segmenter(("blocks", spec, tuple(sorted(fix.items()))), build)
    img_key = ("source", source)
    img = WORKER_CACHE.get(img_key)
    if img is None:
        img = WORKER_CACHE[img_key] = source.open()
    return segment_block(seg, img, block, shape, norm_range, index=index)


def segment_file_blockwise(
    segmenter,
    path,
    out_dir,
    plan: BlockPlan,
    outs: dict,
    fmt: str,
    axes: str | None = None,
    channel=None,
    overwrite: bool = False,
    level: int = 0,
    labels_name: str = "cellseg",
    progress: Callable | None = None,
    client=None,
    spec=None,
):
    """Segment ``path`` block-wise into the outputs ``outs`` (see :func:`cellseg.batch.output_paths`);
    returns a :class:`cellseg.batch.FileResult`. Raises for errors the caller reports (a bad
    file, a failed write); resumes an interrupted run of the same settings."""
    from . import omezarr
    from .batch import FileResult
    from .measure import table_columns

    path = Path(path)
    say = (lambda ev: progress(ev)) if progress is not None else (lambda ev: None)
    if plan.error:
        raise BlockwiseError(plan.error)
    from .segmenter import segments_nuclei

    source = probe(path, level=level, axes=axes, channel=channel, nuclear=segments_nuclei(segmenter))
    zimage = None
    if fmt == "zarr":
        if source.kind != "zarr":
            raise BlockwiseError(f"{path}: block-wise runs write the labels of a TIFF input as a TIFF; drop "
                                 "--output-format zarr (or convert the image to OME-Zarr first)")
        zimage = omezarr.open_image(path)
    ps = dict(source.pixel_size)
    seg = block_segmenter(segmenter, pixel_size=ps.get("X"))
    shape = source.shape
    sid, settings = _settings_fingerprint(plan.settings, seg)
    identity = {"input": str(path.resolve()), "signature": source.signature(), "shape": list(shape),
                "plane": [list(f) for f in source.fixed], "level": int(level), "format": fmt,
                "output": str(Path(outs["labels"]).resolve()), "block": int(plan.block),
                "margin_asked": plan.margin}
    work = _Work(work_dir(outs["labels"]))
    work.lock(path)
    try:
        return _run(seg, path, source, shape, plan, outs, fmt, zimage, level, labels_name, work, sid, settings,
                    identity, overwrite, say, client, spec, ps, table_columns, FileResult)
    except BaseException:
        if not work.state_path.exists():  # nothing done that a rerun could use: leave no work folder behind
            work.remove()
        raise
    finally:
        work.unlock()


def _run(seg, path, source, shape, plan, outs, fmt, zimage, level, labels_name, work, sid, settings, identity,
         overwrite, say, client, spec, ps, table_columns, FileResult):
    from . import omezarr
    from ._files import remove_stale_temporaries
    from .batch import settings_differences

    remove_stale_temporaries(work.folder)
    image = source.open()
    state = None if overwrite else work.load()
    start_msg = ""
    if state is not None:
        why = None
        if state.get("settings_id") != sid:
            diffs = settings_differences(state.get("settings") or {}, settings)
            why = "it was made with other settings (" + "; ".join(diffs[:3] or ["model or parameters"]) + ")"
        elif state.get("identity") != identity:
            old = state.get("identity") or {}
            what = [k for k in identity if old.get(k) != identity[k]]
            why = {"signature": "the input changed since", "block": "the block size differs",
                   "margin_asked": "the block margin differs"}.get(what[0], f"its {what[0]} differs") if what else "?"
        if why is not None:
            start_msg = (f"{path}: starting over: the unfinished block-wise run in {work.folder} cannot be reused, "
                         f"{why}")
            state = None
    kind = "tiff" if fmt == "tiff" else "zarr"
    if state is None:
        work.clear()
        norm_range = percentile_range(image, *seg.normalize)
        if not all(math.isfinite(v) for v in norm_range):
            raise BlockwiseError(f"{path}: the image contains NaN or infinite values, which block-wise runs do not "
                                 "support yet: segment it whole (--no-blockwise), which reads them as missing data")
        fixed = fixed_scale(seg, image, norm_range)
        margin = plan.margin if plan.margin is not None else default_margin(fixed)
        check_block_size(plan.block, margin, network_context(fixed), where=str(path))
        fixed = copy.copy(fixed)
        if fixed.tile is None or not np.any(np.asarray(fixed.tile)):  # none given, or --tile 0
            fixed.tile = block_tile(plan.block + 2 * margin, fixed)
        out_path, out, arrays = _create_output(kind, work.folder, shape, source, zimage, level)
        with open(work.scores_path, "wb"):
            pass
        state = {"format": STATE_FORMAT, "settings_id": sid, "settings": settings, "identity": identity,
                 "norm_range": list(norm_range), "diameter": fixed.diameter, "pixel_size": fixed.pixel_size,
                 "tile": fixed.tile, "margin": int(margin), "n_blocks": None, "counts": [], "cut": [],
                 "output": out_path.name}
        n_reused = 0
    else:
        norm_range = tuple(state["norm_range"])
        fixed = copy.copy(seg)
        fixed.diameter, fixed.pixel_size = state["diameter"], state["pixel_size"]
        fixed.tile = state["tile"] if not isinstance(state["tile"], list) else tuple(state["tile"])
        margin = int(state["margin"])
        out_path = work.folder / state["output"]
        if not out_path.exists():
            raise BlockwiseError(f"{path}: the unfinished block-wise run in {work.folder} lost its labels "
                                 f"({out_path.name}); remove that folder (or use --overwrite) to start over")
        if kind == "zarr":
            _remove_zarr_partials(out_path)
        out, arrays = _open_output(kind, out_path, shape, zimage.zarr_format if zimage else 0)
        n_reused = len(state["counts"])
    blocks = block_grid(shape, plan.block, margin)
    state["n_blocks"] = len(blocks)
    counts: list[int] = list(state["counts"])
    cut: list[int] = list(state["cut"])
    done = len(counts)
    next_id = 1 + sum(counts)
    if not start_msg:
        start_msg = (f"{path}: resuming the block-wise run: {done} of {len(blocks)} blocks were done "
                     f"({next_id - 1} objects), the other {len(blocks) - done} are segmented now" if done
                     else f"{path}: block-wise, {len(blocks)} blocks of {plan.block} px with a margin of {margin} px "
                          f"(network tiles of {fixed.tile} px)")
    say(BlockEvent(str(path), "start", done, len(blocks), next_id - 1, start_msg))
    if done == 0:
        work.save(state)
    fix = {"diameter": fixed.diameter, "pixel_size": fixed.pixel_size, "tile": fixed.tile}
    first = True
    t0 = time.monotonic()
    with open(work.scores_path, "r+b") as sf:
        for r in _results(fixed, image, blocks, shape, norm_range, done, client, spec, fix, source):
            b = blocks[r.index]
            if first and done:  # this block may have been half-written when the earlier run stopped
                region = np.asarray(out[b.read])
                if (region > next_id - 1).any():
                    region[region > next_id - 1] = 0
                    out[b.read] = region
            first = False
            write_block(out, r, next_id - 1)
            sf.seek(4 * (next_id - 1))
            sf.write(np.asarray(r.scores, "<f4").tobytes())
            sf.flush()
            cut += [next_id - 1 + c for c in r.cut]
            next_id += r.n
            counts.append(r.n)
            state["counts"], state["cut"] = counts, cut
            work.save(state)
            say(BlockEvent(str(path), "block", len(counts), len(blocks), next_id - 1,
                           seconds=time.monotonic() - t0, new=len(counts) - done))
    # -- finish: lower zarr levels, CSV, overlay, then the labels under their final name
    n_objects = next_id - 1
    if arrays is not None and len(arrays) > 1:
        say(BlockEvent(str(path), "finish", len(counts), len(blocks), n_objects,
                       f"{path}: sampling the {len(arrays) - 1} lower resolution levels of the labels"))
        letters = zimage.letters
        omezarr.fill_label_levels(arrays, letters)
    pix = dict(ps)
    if fixed.pixel_size:
        pix.update(Y=fixed.pixel_size, X=fixed.pixel_size)
    if "csv" in outs:
        say(BlockEvent(str(path), "finish", len(counts), len(blocks), n_objects,
                       f"{path}: measuring the objects block by block for the CSV"))
        from .measure import frame_spacing

        scores = np.fromfile(work.scores_path, "<f4") if n_objects else np.zeros(0, np.float32)
        offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(int).tolist() if counts else []
        columns = table_columns("YX", pix)
        rows = _csv_rows(out, image, blocks, counts, offsets, shape, scores, set(cut), frame_spacing("YX", pix))
        _write_csv_stream(outs["csv"], rows, columns)
    step = max(1, math.ceil(max(shape) / OVERLAY_MAX_SIDE))
    if "overlay" in outs:
        from .visualize import overlay as make_overlay
        from .visualize import save_png

        save_png(outs["overlay"], make_overlay(_strided(image, step), _strided(out, step)))
    del out
    if kind == "tiff":
        os.replace(out_path, outs["labels"])
    else:
        arrays = None
        omezarr.add_label_group(zimage, out_path, labels_name)
    work.remove()
    warnings = [source.note] if source.note else []
    if cut:
        warnings.append(f"{len(cut)} object{'s' if len(cut) != 1 else ''} reached the edge of a block's margin "
                        f"({margin} px) and may be cut there (column cut_by_block of the CSV); a larger "
                        "--block-margin keeps such objects whole")
    info = {"blocks": len(blocks), "reused": n_reused, "block": int(plan.block), "margin": int(margin),
            "tile": fixed.tile,
            "overlay_step": step if "overlay" in outs else None, "cut": len(cut), "auto": plan.auto}
    return FileResult(str(path), "done", {k: str(v) for k, v in outs.items()}, n_objects=n_objects,
                      frame_objects=n_objects, warnings=warnings, blockwise=info)


def _results(seg, image, blocks, shape, norm_range, start: int, client, spec, fix, source):
    """Block results from ``start`` on, in block order: computed here, or on a Dask cluster
    (at most two blocks per worker in flight)."""
    if client is None:
        for i in range(start, len(blocks)):
            yield segment_block(seg, image, blocks[i], shape, norm_range, index=i)
        return
    try:
        n_workers = max(1, len(client.nthreads()))
    except Exception:
        n_workers = 1
    window = 2 * n_workers
    pending: dict[int, Any] = {}
    nxt = start
    try:
        for i in range(start, len(blocks)):
            while nxt < len(blocks) and nxt - i < window:
                pending[nxt] = client.submit(_block_on_worker, spec, fix, source, blocks[nxt], shape,
                                             tuple(norm_range), nxt, pure=False)
                nxt += 1
            yield pending.pop(i).result()
    finally:
        if pending:
            client.cancel(list(pending.values()))
