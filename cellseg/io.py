"""Image and label I/O: TIFF (plain, ImageJ hyperstack, OME-TIFF) and PNG/JPEG.

Axes
    Every image comes with an axes string made of the letters ``T Z C Y X`` in
    the array's order (``YX``, ``ZYX``, ``TYX``, ``CYX``, ``YXC``, ``TZCYX``...).
    Interleaved colour samples (TIFF ``S``, RGB PNGs) are called ``C``.
    Axes come from the file: OME metadata, ImageJ hyperstack metadata or
    tifffile's own "shaped" metadata. A plain multi-page TIFF does not say
    whether its pages are Z slices, time points or channels; reading one
    raises :class:`AxesError` asking for ``axes=`` (for example ``axes="ZYX"``).
    Axes of size 1 are squeezed away, so ``axes`` always has ``data.ndim``
    letters; that includes the unnamed axes of length 1 of a TIFF written
    without axes (tifffile's ``Q``: a ``(1, 1, Y, X)`` array is read as ``YX``).

Missing pixels
    Float images may hold NaN or infinite pixels (the border of a registered
    or stitched image). :func:`read_image` returns them as stored;
    :func:`fill_nonfinite` replaces them by the lowest finite value of their
    frame and says where they were (``cellseg segment`` does so and writes
    label 0 there).

Pixel sizes
    ``pixel_size`` maps axis letters (``Z``, ``Y``, ``X``) to micrometres, or is
    None when the file does not say. Taken from OME ``PhysicalSize*`` (units
    converted), from ImageJ (``unit``/``spacing`` plus the resolution tags) or
    from resolution tags in pixels per centimetre. Resolution in dots per inch
    is ignored: it is a print setting that many writers fill with 72 dpi.

Frame interval
    ``frame_interval`` is the time between the frames of a ``T`` axis in
    seconds, or None: from ImageJ ``finterval`` (in its ``tunit``, default
    seconds) or OME ``TimeIncrement``. Written back by :func:`write_labels` and
    :func:`write_image` (ImageJ ``finterval`` in ``sec``, OME ``TimeIncrement`` in
    ``s``), so outputs of a time-lapse keep it.

Writing
    :func:`write_labels` and :func:`write_image` write ImageJ-compatible
    hyperstacks (OME-TIFF when ImageJ cannot hold the data type, or when
    channel names are given), compressed, atomically: the data goes to a hidden
    temporary file in the target folder which then replaces the target with
    ``os.replace`` (``cellseg._files.atomic_write``: the file gets the mode a
    plain write would, ``0o666 & ~umask``); a failed write leaves no partial
    file behind.

Errors
    :class:`ImageReadError` (unreadable, truncated or unsupported files),
    :class:`AxesError` (missing, malformed or contradictory axes) and
    ``cellseg.labels.LabelError`` (float or negative labels...) are all
    ``ValueError`` subclasses whose message starts with the file name.
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from cellseg._files import atomic_write
from cellseg.labels import LabelError, as_labels

__all__ = [
    "ImageData",
    "AxesError",
    "ImageReadError",
    "read_image",
    "read_labels",
    "write_labels",
    "write_image",
    "fill_nonfinite",
    "clear_missing",
    "transpose_axes",
    "check_axes",
    "AXES",
    "TIFF_SUFFIXES",
    "PIL_SUFFIXES",
    "INPUT_SUFFIXES",
    "expand_inputs",
]

AXES = "TZCYX"  # the vocabulary and the canonical order
TIFF_SUFFIXES = (".tif", ".tiff")
PIL_SUFFIXES = (".png", ".jpg", ".jpeg")
#: the image files a folder given as input contributes (besides its OME-Zarr images)
INPUT_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
_COMPRESSIONS = ("zlib", "lzw", "zstd", "none", None)

# seconds per time unit (OME units and the spellings ImageJ/Fiji write)
_UNITS_S = {
    "s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0, "ms": 1e-3, "msec": 1e-3, "µs": 1e-6, "μs": 1e-6,
    "us": 1e-6, "ns": 1e-9, "min": 60.0, "minute": 60.0, "minutes": 60.0, "h": 3600.0, "hr": 3600.0,
    "hour": 3600.0, "hours": 3600.0, "d": 86400.0, "day": 86400.0, "days": 86400.0,
}

# micrometres per unit (OME units and the spellings ImageJ/Fiji write)
_UNITS_UM = {
    "µm": 1.0, "μm": 1.0, "um": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0,
    "micrometre": 1.0, "\\u00b5m": 1.0, "nm": 1e-3, "nanometer": 1e-3, "mm": 1e3, "cm": 1e4,
    "m": 1e6, "å": 1e-4, "angstrom": 1e-4, "pm": 1e-6,
}


class AxesError(ValueError):
    """Axes missing, malformed, or contradicting the file."""


class ImageReadError(ValueError):
    """A file that cannot be read as an image (not an image, truncated, unsupported)."""


@dataclass
class ImageData:
    """An image with its axes and (optional) physical metadata."""

    data: np.ndarray
    axes: str
    pixel_size: dict[str, float] | None = None
    channel_names: list[str] | None = None
    path: Path | None = None
    #: seconds between the frames of the T axis (None: unknown or no T axis)
    frame_interval: float | None = None
    #: the axes the file itself declares (before an ``axes=`` override); None when it does not say
    file_axes: str | None = None

    def __post_init__(self):
        self.axes = check_axes(self.axes, np.ndim(self.data), where=str(self.path or "image"))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def ndim(self) -> int:
        return self.data.ndim

    def size(self, axis: str) -> int:
        """Length of ``axis`` (1 if the image has no such axis)."""
        return self.data.shape[self.axes.index(axis)] if axis in self.axes else 1


# --------------------------------------------------------------------------- axes


def check_axes(axes, ndim: int, where: str = "image", allowed: str = AXES) -> str:
    """Validate an axes string and return it upper-cased (``S`` read as ``C``).

    Raises :class:`AxesError` naming ``where`` when the length differs from
    ``ndim``, a letter is unknown or repeated, or Y/X are missing.
    """
    if not isinstance(axes, str):
        raise AxesError(f"{where}: axes must be a string such as 'YX' or 'ZYX', got {axes!r}")
    ax = axes.upper().replace("S", "C")
    bad = sorted(set(ax) - set(allowed))
    if bad:
        raise AxesError(f"{where}: unknown axis letter(s) {bad} in {axes!r}; use letters from {allowed!r}")
    if len(set(ax)) != len(ax):
        raise AxesError(f"{where}: repeated axis letter in {axes!r}")
    if len(ax) != ndim:
        raise AxesError(f"{where}: axes {axes!r} have {len(ax)} letters but the image has {ndim} dimensions")
    if "Y" not in ax or "X" not in ax:
        raise AxesError(f"{where}: axes {axes!r} must contain Y and X")
    return ax


def _is_canonical(axes: str) -> bool:
    pos = [AXES.index(a) for a in axes]
    return pos == sorted(pos)


def transpose_axes(data, axes_from: str, axes_to: str) -> np.ndarray:
    """Reorder ``data`` from ``axes_from`` to ``axes_to``.

    Letters of ``axes_to`` missing from ``axes_from`` become new axes of size
    1; letters of ``axes_from`` missing from ``axes_to`` are dropped, which is
    only allowed when that axis has size 1.
    """
    data = np.asarray(data)
    src = axes_from.upper().replace("S", "C")
    dst = axes_to.upper().replace("S", "C")
    for name, ax in (("axes_from", src), ("axes_to", dst)):
        if len(set(ax)) != len(ax) or set(ax) - set(AXES):
            raise AxesError(f"{name}={ax!r}: axes must be unique letters from {AXES!r}")
    if len(src) != data.ndim:
        raise AxesError(f"axes_from={axes_from!r} has {len(src)} letters but data has {data.ndim} dimensions")
    for i, a in enumerate(src):
        if a not in dst and data.shape[i] != 1:
            raise AxesError(f"cannot drop axis {a!r} of size {data.shape[i]} when going from {src!r} to {dst!r}")
    keep = [i for i, a in enumerate(src) if a in dst]
    out = data.reshape([data.shape[i] for i in keep]) if len(keep) != data.ndim else data
    kept_axes = "".join(src[i] for i in keep)
    out = out.transpose([kept_axes.index(a) for a in dst if a in kept_axes])
    ordered = "".join(a for a in dst if a in kept_axes)
    shape, it = [], iter(out.shape)
    for a in dst:
        shape.append(next(it) if a in ordered else 1)
    return out.reshape(shape)


# --------------------------------------------------------------------------- reading


#: tifffile's log messages that signal a damaged file
_DAMAGE_HINTS = ("invalid page offset", "invalid offset", "corrupted", "failed to reshape", "truncated", "invalid tag",
                 "incomplete")


class _TifffileLog(logging.Filter):
    """Keeps tifffile's log records from anywhere else (no stderr line through logging's last resort
    or the application's handlers) while this thread reads a file with :func:`_tifffile_messages`,
    which collects them instead."""

    def __init__(self):
        super().__init__()
        self.local = threading.local()

    def filter(self, record):
        stack = getattr(self.local, "stack", None)
        if not stack:
            return True
        msg = record.getMessage()
        if msg.startswith("<tifffile.") and "> " in msg:  # "<tifffile.TiffPages @123> invalid offset ..."
            msg = msg.split("> ", 1)[1]
        if record.levelno >= logging.WARNING:
            stack[-1].append(msg)
        return False


_TIFFFILE_LOG = _TifffileLog()
logging.getLogger("tifffile").addFilter(_TIFFFILE_LOG)


@contextlib.contextmanager
def _tifffile_messages() -> Iterator[list[str]]:
    """``with _tifffile_messages() as messages:`` tifffile logs nothing while the block runs in
    this thread; ``messages`` receives the warnings and errors it would have logged."""
    stack = getattr(_TIFFFILE_LOG.local, "stack", None)
    if stack is None:
        stack = _TIFFFILE_LOG.local.stack = []
    messages: list[str] = []
    stack.append(messages)
    try:
        yield messages
    finally:
        stack.pop()


def _damage(messages: Sequence[str]) -> str | None:
    """The first of tifffile's messages that says the file is damaged."""
    return next((m for m in messages if any(h in m.lower() for h in _DAMAGE_HINTS)), None)


def _to_um(value, unit) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    if not np.isfinite(v) or v <= 0:
        return None
    scale = _UNITS_UM.get(str(unit if unit is not None else "µm").strip().lower())
    return None if scale is None else v * scale


def _to_seconds(value, unit) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    scale = _UNITS_S.get(str(unit if unit is not None else "s").strip().lower())
    return v * scale if scale is not None and np.isfinite(v) and v > 0 else None


def _ome_meta(xml: str) -> tuple[dict[str, float], list[str | None] | None]:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return {}, None
    pixels = root.find(".//{*}Image/{*}Pixels")
    if pixels is None:
        return {}, None
    sizes: dict[str, float] = {}
    for a in "XYZ":
        v = _to_um(pixels.get(f"PhysicalSize{a}"), pixels.get(f"PhysicalSize{a}Unit", "µm"))
        if v is not None:
            sizes[a] = v
    t = _to_seconds(pixels.get("TimeIncrement"), pixels.get("TimeIncrementUnit", "s"))
    if t is not None:
        sizes["T"] = t
    chans = pixels.findall("{*}Channel")
    names = [c.get("Name") for c in chans]
    if not chans or any(n is None for n in names) or any(int(c.get("SamplesPerPixel", 1)) != 1 for c in chans):
        return sizes, None
    return sizes, names


def _resolution_um(page, unit_um: float | None) -> dict[str, float]:
    """Pixel size from X/YResolution (pixels per unit)."""
    out = {}
    for a, tag in (("X", "XResolution"), ("Y", "YResolution")):
        t = page.tags.get(tag)
        if t is None:
            continue
        try:
            num, den = t.value
            ppu = num / den
        except (TypeError, ValueError, ZeroDivisionError):
            continue
        if ppu > 0 and unit_um is not None:
            out[a] = unit_um / ppu
    return out


def _tiff_sizes(tif, page) -> tuple[dict[str, float], list | None]:
    """Pixel sizes (µm; ``T``: seconds) and channel names from a TIFF's OME, ImageJ or
    resolution metadata."""
    sizes: dict[str, float] = {}
    names = None
    if tif.is_ome and tif.ome_metadata:
        sizes, names = _ome_meta(tif.ome_metadata)
    elif tif.is_imagej:
        meta = tif.imagej_metadata or {}
        unit = meta.get("unit")
        unit_um = _UNITS_UM.get(str(unit).strip().lower()) if unit is not None else None
        sizes = _resolution_um(page, unit_um)
        if unit_um is not None and meta.get("spacing"):
            z = _to_um(meta["spacing"], unit)
            if z is not None:
                sizes["Z"] = z
        t = _to_seconds(meta.get("finterval"), meta.get("tunit") or "sec")
        if t is not None:
            sizes["T"] = t
    else:
        ru = page.tags.get("ResolutionUnit")
        if ru is not None and int(ru.value) == 3:  # centimetre
            sizes = _resolution_um(page, 1e4)
    return sizes, names


def _read_tiff(path: Path):
    import tifffile

    with _tifffile_messages() as messages:
        try:
            with tifffile.TiffFile(path) as tif:
                if not tif.series:
                    damage = _damage(messages)
                    raise ImageReadError(f"{path}: damaged TIFF ({damage})" if damage else
                                         f"{path}: TIFF file contains no image")
                series = tif.series[0]
                raw_axes = series.axes
                data = series.asarray()
                page = series.pages[0] if series.pages else tif.pages[0]
                if data.size == 0:  # before the truncation check: an empty page's offset may point anywhere
                    raise ImageReadError(f"{path}: image is empty (shape {data.shape})")
                fsize = os.path.getsize(path)
                for p in tif.pages:  # every strip/tile must lie inside the file
                    offs = getattr(p, "dataoffsets", ()) or ()
                    cnts = getattr(p, "databytecounts", ()) or ()
                    if any(c and o + c > fsize for o, c in zip(offs, cnts)):
                        raise ImageReadError(
                            f"{path}: TIFF file is truncated (image data runs past the end of the file)")
                sizes, names = _tiff_sizes(tif, page)
        except ImageReadError:
            raise
        except Exception as e:  # tifffile/imagecodecs raise many types for broken files
            raise ImageReadError(f"{path}: cannot read as TIFF ({type(e).__name__}: {e})") from None
    damage = _damage(messages)
    if damage:
        raise ImageReadError(f"{path}: damaged or truncated TIFF ({damage})")
    if data.size == 0:
        raise ImageReadError(f"{path}: image is empty (shape {data.shape})")
    if data.dtype == bool:
        data = data.astype(np.uint8)
    if len(raw_axes) != data.ndim:  # defensive: tifffile squeezes both the same way
        raw_axes = "Q" * (data.ndim - 2) + "YX"
    ones = [i for i, (a, n) in enumerate(zip(raw_axes, data.shape)) if a == "Q" and n == 1]
    if ones:  # unnamed axes of length 1 (a (1, 1, Y, X) array written without axes) say nothing
        data = data.reshape([n for i, n in enumerate(data.shape) if i not in ones])
        raw_axes = "".join(a for i, a in enumerate(raw_axes) if i not in ones)
    return data, raw_axes, sizes, names


def _read_pil(path: Path, for_labels: bool = False):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im_file:
            im_file.load()
            im: Image.Image = im_file
            mode = im.mode
            if mode == "P" and not for_labels:
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
                mode = im.mode
            elif mode == "CMYK":
                im = im.convert("RGB")
                mode = "RGB"
            data = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"{path}: cannot read as {path.suffix.lstrip('.').upper()} image ({e})") from None
    if data.size == 0:
        raise ImageReadError(f"{path}: image is empty (shape {data.shape})")
    if data.dtype == bool:
        data = data.astype(np.uint8)
    if data.ndim == 3:
        if mode in ("LA", "RGBA", "PA"):  # drop alpha
            data = data[..., :-1]
        if data.shape[-1] == 1 or all(np.array_equal(data[..., 0], data[..., i]) for i in range(1, data.shape[-1])):
            data = np.ascontiguousarray(data[..., 0])
        else:
            return data, "YXS"
    return data, "YX"


def _read_raw(path) -> tuple[np.ndarray, str, dict, list | None, Path]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise ImageReadError(f"{path}: is a folder, not an image file")
    suffix = path.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        data, raw, sizes, names = _read_tiff(path)
    elif suffix in PIL_SUFFIXES:
        data, raw = _read_pil(path)
        sizes, names = {}, None
    else:
        raise ImageReadError(
            f"{path}: unsupported file type {suffix!r}; expected one of {TIFF_SUFFIXES + PIL_SUFFIXES}"
        )
    return data, raw, sizes, names, path


def _unknown_axes_message(path, shape: tuple[int, ...], raw: str) -> str:
    """What to say about an image whose axes the file does not name (tifffile's ``Q``): the
    ``axes=`` that would read it, channels last or first where the shape looks like it."""
    ndim = len(shape)
    head = f"{path}: cannot tell the axes of this {ndim}D image of shape {shape}"
    large = ndim >= 3 and min(shape[-3:-1]) >= 16
    if ndim in (3, 4) and raw.endswith("X") and 2 <= shape[-1] <= 4 and large:
        n = shape[-1]
        pick = "choose the channel to segment with channel=INDEX"
        if ndim == 3:
            return (f"{head} (the file does not say; tifffile reports {raw!r}). Its last axis has {n} entries, "
                    f"as colour channels stored last would: pass axes='YXC' and {pick} (on the command line: "
                    f"--axes YXC --channel INDEX)")
        return (f"{head} (the file does not say; tifffile reports {raw!r}). Its last axis has {n} entries, "
                f"as colour channels stored last would: pass axes='ZYXC' (a Z stack) or axes='TYXC' (time) "
                f"and {pick} (on the command line: --axes ZYXC or --axes TYXC, with --channel INDEX)")
    if ndim == 3 and 2 <= shape[0] <= 4 and min(shape[1:]) >= 16:
        n = shape[0]
        return (f"{head} (the file does not say; tifffile reports {raw!r}). Pass axes=..., e.g. axes='ZYX' for a "
                f"Z stack, axes='TYX' for time or axes='CYX' if its {n} planes are channels (then choose one with "
                f"channel=INDEX); on the command line: --axes ZYX, --axes TYX, or --axes CYX with --channel INDEX")
    if ndim <= 3:
        return (f"{head} (the file does not say; tifffile reports {raw!r}). Pass axes=..., e.g. "
                f"axes={'Z' * (ndim - 2) + 'YX'!r} for a Z stack or {'T' * (ndim - 2) + 'YX'!r} for time")
    return f"{head} (tifffile reports {raw!r}); pass axes=..., e.g. axes='TZYX'"


def read_image(path, axes: str | None = None) -> ImageData:
    """Read a TIFF (plain, ImageJ, OME) or PNG/JPEG image with its axes.

    ``axes`` overrides the file's axes (same number of letters as the stored,
    squeezed array; letters from ``TZCYX``, ``S`` accepted as ``C``). The
    override may rename non-spatial axes (say ``TYX`` for a stack ImageJ calls
    ``ZYX``, or ``ZYX`` for a 3-plane file stored as planar RGB) but must keep
    Y and X, and interleaved colour samples (``YXS``), where the file has
    them; otherwise :class:`AxesError`. A file that does not name its axes
    (tifffile's ``Q``) may also be read channels last: a ``(Y, X, 2)`` array
    written without metadata, which tifffile stores as Y pages of X x 2, with
    ``axes="YXC"``. Unnamed axes of length 1 are dropped (a ``(1, 1, Y, X)``
    array written without metadata is read as ``YX``, and ``axes`` has two
    letters); other unnamed axes raise :class:`AxesError` unless ``axes`` is
    given: a message that suggests a channel axis (``YXC``, ``CYX``) where
    the shape looks like one (2 to 4 entries beside a large Y and X) but
    never reads it so. PNG/JPEG: RGB(A) images whose colour channels are
    equal are read as grey ``YX``, real colour as ``YXC`` (alpha dropped).
    Pixel values keep their stored dtype, NaN and infinite values included
    (see :func:`fill_nonfinite`).
    """
    data, raw, sizes, names, path = _read_raw(path)
    mapped = raw.replace("S", "C")
    known = len(set(mapped)) == len(mapped) and not (set(mapped) - set(AXES))
    if axes is None:
        if "S" in raw and "C" in raw:
            raise AxesError(f"{path}: the file has both colour samples and channels ({raw!r}); pass axes=...")
        if not known:
            raise AxesError(_unknown_axes_message(path, data.shape, raw))
        final = mapped
    else:
        final = check_axes(axes, data.ndim, where=str(path))
        # a file that does not name its axes: tifffile's Y and X are its pages' rows and columns, and a
        # (Y, X, C) array written without metadata is stored as Y pages of X x C
        channels_last = not known and final.endswith("C") and raw.endswith("X")
        for letter in ("Y", "X", "S"):
            if channels_last:
                break
            i = raw.find(letter)
            if letter == "S" and i != len(raw) - 1:
                continue  # planar samples (SYX) may just as well be a Z or T stack
            want = "C" if letter == "S" else letter
            if i >= 0 and final[i] != want:
                raise AxesError(
                    f"{path}: axes={axes!r} contradict the file, whose axis {i} is {want} "
                    f"(file axes {mapped!r}, shape {data.shape})"
                )
    pixel_size = {}
    for a, v in sizes.items():
        i = raw.find(a)
        if i >= 0 and final[i] == a:
            pixel_size[a] = v
    interval = pixel_size.pop("T", None)
    if names is not None and ("C" not in final or data.shape[final.index("C")] != len(names)):
        names = None
    return ImageData(data=data, axes=final, pixel_size=pixel_size or None,
                     channel_names=list(names) if names else None, path=path, frame_interval=interval,
                     file_axes=mapped if known else None)


def read_labels(path, ndim: int | tuple[int, ...] | None = None) -> np.ndarray:
    """Read a label image (TIFF or PNG) as a validated C-contiguous int32 array.

    Raises ``LabelError`` (float or negative values, ids beyond int32, wrong
    number of dimensions, interleaved colour images) or
    :class:`ImageReadError` (damaged files), each naming the file. A planar
    3- or 4-plane file (which tifffile reports as ``SYX`` colour planes) is
    returned as a stack of label planes.
    """
    p = Path(path)
    if p.suffix.lower() in PIL_SUFFIXES and p.exists() and not p.is_dir():
        data, raw = _read_pil(p, for_labels=True)
    else:
        data, raw, _, _, p = _read_raw(p)
    if raw.endswith("S"):  # interleaved colour samples; planar SYX files are read as stacks
        raise LabelError(f"{p}: labels must be a single-channel image, got colour samples "
                         f"(axes {raw!r}, shape {data.shape})")
    return as_labels(data, name=str(p), ndim=ndim)


def fill_nonfinite(data, axes: str, where: str = "image") -> tuple[np.ndarray, np.ndarray | None]:
    """Treat the NaN and infinite pixels of a float image as missing data.

    Returns ``(filled, missing)``: a copy of ``data`` with each non-finite
    pixel replaced by the lowest finite value of its frame (per ``T`` frame
    and ``C`` channel; the lowest of the whole image for a frame without any
    finite value) and a boolean mask of ``data.shape`` that is True where the
    pixels were not finite. An image with only finite values (or of an
    integer type) is returned as is, with ``missing`` None. An image without
    a single finite value raises ``ValueError`` naming ``where``.
    ``cellseg segment`` fills its inputs so before normalising, estimating
    the object size or running the network, writes label 0 at the missing
    pixels and warns how many there were.
    """
    arr = np.asarray(data)
    axes = check_axes(axes, arr.ndim, where=where)
    if arr.dtype.kind != "f":
        return arr, None
    finite = np.isfinite(arr)
    if finite.all():
        return arr, None
    if not finite.any():
        raise ValueError(f"{where}: every pixel is NaN or infinite: no data to segment")
    lowest = float(arr[finite].min())
    filled = arr.copy()
    groups = [i for i, a in enumerate(axes) if a in "TC"]
    for idx in np.ndindex(*[arr.shape[i] for i in groups]):
        sel: list[Any] = [slice(None)] * arr.ndim
        for i, k in zip(groups, idx):
            sel[i] = k
        s = tuple(sel)
        ok = finite[s]
        if not ok.all():
            part = filled[s]
            part[~ok] = part[ok].min() if ok.any() else lowest
    return filled, ~finite


def clear_missing(labels: np.ndarray, labels_axes: str, missing: np.ndarray, axes: str) -> str:
    """Label 0 where :func:`fill_nonfinite` found missing pixels: ``missing`` (a mask with the
    image's ``axes``; a pixel with a missing channel counts) is brought to the labels' axes
    (``labels_axes``, without ``C``) and cleared in ``labels`` in place. Returns the warning that
    says how many pixels were missing."""
    lost = missing.any(axis=axes.index("C")) if "C" in axes else missing
    lost = transpose_axes(lost, axes.replace("C", ""), labels_axes)
    labels[np.broadcast_to(lost, labels.shape)] = 0
    return (f"{int(lost.sum())} pixels are NaN or infinite: read as missing data (the lowest value of their "
            "frame), label 0 there")


# --------------------------------------------------------------------------- writing


def _check_pixel_size(pixel_size, axes: str, where) -> dict[str, float]:
    if pixel_size is None:
        return {}
    if not isinstance(pixel_size, Mapping):
        raise ValueError(f"{where}: pixel_size must be a mapping like {{'Y': 0.5, 'X': 0.5}}, got {pixel_size!r}")
    out = {}
    for k, v in pixel_size.items():
        a = str(k).upper()
        if a not in "ZYX" or a not in axes:
            raise ValueError(f"{where}: pixel_size has axis {k!r}, which is not a spatial axis of {axes!r}")
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: pixel_size[{k!r}] must be a number, got {v!r}") from None
        if not (np.isfinite(f) and f > 0):
            raise ValueError(f"{where}: pixel_size[{k!r}] must be positive, got {v!r}")
        out[a] = f
    if ("X" in out) != ("Y" in out):
        raise ValueError(f"{where}: pixel_size needs both 'Y' and 'X' (got {sorted(out)})")
    return out


def _check_interval(frame_interval, axes: str, where) -> float | None:
    if frame_interval is None:
        return None
    if "T" not in axes:
        raise ValueError(f"{where}: frame_interval is given but axes {axes!r} have no T axis")
    try:
        f = float(frame_interval)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: frame_interval must be a number of seconds, got {frame_interval!r}") from None
    if not (np.isfinite(f) and f > 0):
        raise ValueError(f"{where}: frame_interval must be positive, got {frame_interval!r}")
    return f


def _check_target(path, compression) -> Path:
    path = Path(path)
    if path.suffix.lower() not in TIFF_SUFFIXES:
        raise ValueError(f"{path}: can only write TIFF files (.tif or .tiff)")
    if path.is_dir():
        raise ValueError(f"{path}: is a folder")
    if compression not in _COMPRESSIONS:
        raise ValueError(f"{path}: unknown compression {compression!r}; choose from {_COMPRESSIONS}")
    return path


def _tiff_writer(data: np.ndarray, axes: str, sizes: dict, compression, channel_names=None,
                 frame_interval: float | None = None):
    import tifffile

    comp = None if compression in (None, "none") else compression
    imagej_ok = data.dtype in (np.uint8, np.uint16, np.float32) and channel_names is None
    if imagej_ok:
        meta: dict[str, Any] = {"axes": axes}
        kw: dict[str, Any] = {}
        if sizes:
            meta["unit"] = "um"
            kw["resolution"] = (1.0 / sizes["X"], 1.0 / sizes["Y"])
            if "Z" in sizes:
                meta["spacing"] = sizes["Z"]
        if frame_interval is not None:
            meta["finterval"] = frame_interval
            meta["tunit"] = "sec"

        def write(tmp):
            tifffile.imwrite(tmp, data, imagej=True, metadata=meta, compression=comp, **kw)
    else:
        meta = {"axes": axes}
        for a, v in sizes.items():
            meta[f"PhysicalSize{a}"] = v
            meta[f"PhysicalSize{a}Unit"] = "µm"
        if frame_interval is not None:
            meta["TimeIncrement"] = frame_interval
            meta["TimeIncrementUnit"] = "s"
        if channel_names is not None:
            meta["Channel"] = {"Name": list(channel_names)}

        def write(tmp):
            tifffile.imwrite(tmp, data, ome=True, metadata=meta, compression=comp, photometric="minisblack")
    return write


def write_labels(path, labels, axes: str = "YX", pixel_size: Mapping[str, float] | None = None,
                 compression: str | None = "zlib", dtype=None, frame_interval: float | None = None) -> Path:
    """Write an int32 label image as a compressed TIFF, atomically.

    On disk the smallest unsigned type that holds the largest id is used
    (uint8, uint16, else uint32) unless ``dtype`` asks for a wider unsigned
    type (CTC results must be uint16). uint8/uint16 files are ImageJ
    hyperstacks (Fiji opens them with the right axes); uint32 ones, which
    ImageJ cannot hold, are OME-TIFF. ``axes`` use letters ``T Z Y X`` in this
    canonical order (use :func:`transpose_axes` first otherwise).
    ``pixel_size`` maps ``Z/Y/X`` to micrometres, ``frame_interval`` gives the
    seconds between T frames. Returns the path.
    """
    path = _check_target(path, compression)
    arr = as_labels(labels, name=f"{path}: labels to write")
    if arr.size == 0:
        raise LabelError(f"{path}: labels to write are empty (shape {arr.shape})")
    axes = check_axes(axes, arr.ndim, where=str(path), allowed="TZYX")
    if not _is_canonical(axes):
        raise AxesError(f"{path}: axes {axes!r} must be in the order TZYX; use transpose_axes() first")
    sizes = _check_pixel_size(pixel_size, axes, path)
    interval = _check_interval(frame_interval, axes, path)
    top = int(arr.max())
    need = np.uint8 if top <= 255 else np.uint16 if top <= 65535 else np.uint32
    if dtype is not None:
        dt = np.dtype(dtype)
        if dt.kind != "u" or dt.itemsize > 4:
            raise ValueError(f"{path}: dtype must be uint8, uint16 or uint32, got {dt}")
        if top > np.iinfo(dt).max:
            raise LabelError(f"{path}: label id {top} does not fit into {dt}")
        need = dt.type
    out = arr.astype(need)
    atomic_write(path, _tiff_writer(out, axes, sizes, compression, frame_interval=interval))
    return path


def write_image(path, data, axes: str, pixel_size: Mapping[str, float] | None = None,
                channel_names: list[str] | None = None, compression: str | None = "zlib",
                frame_interval: float | None = None) -> Path:
    """Write an image (e.g. float32 head outputs) as a compressed TIFF, atomically.

    float64 is stored as float32 and bool as uint8. uint8/uint16/float32
    without channel names become ImageJ hyperstacks; other types, or images
    with ``channel_names`` (needs a ``C`` axis of that length), become
    OME-TIFF. ``axes`` must follow the canonical order ``TZCYX``;
    ``frame_interval``: seconds between T frames. Returns the path.
    """
    path = _check_target(path, compression)
    arr = np.asarray(data)
    if arr.dtype == np.float64:
        arr = arr.astype(np.float32)
    elif arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if arr.dtype.kind not in "uif":
        raise ValueError(f"{path}: cannot write data of type {arr.dtype} as an image")
    if arr.size == 0:
        raise ValueError(f"{path}: image to write is empty (shape {arr.shape})")
    axes = check_axes(axes, arr.ndim, where=str(path))
    if not _is_canonical(axes):
        raise AxesError(f"{path}: axes {axes!r} must be in the order TZCYX; use transpose_axes() first")
    sizes = _check_pixel_size(pixel_size, axes, path)
    interval = _check_interval(frame_interval, axes, path)
    if channel_names is not None:
        channel_names = [str(c) for c in channel_names]
        if "C" not in axes or arr.shape[axes.index("C")] != len(channel_names):
            raise ValueError(f"{path}: {len(channel_names)} channel names given but axes {axes!r} / shape {arr.shape}")
    atomic_write(path, _tiff_writer(np.ascontiguousarray(arr), axes, sizes, compression, channel_names,
                                    frame_interval=interval))
    return path


#: what :func:`expand_inputs` reports per folder where something was left out: the folder, its
#: subfolders (not OME-Zarr images) and its files of other types
SkippedEntries = tuple[Path, list[Path], list[Path]]


def expand_inputs(inputs: Sequence[str | Path], skipped: list[SkippedEntries] | None = None,
                  samples: bool = False) -> tuple[list[Path], list[str]]:
    """Files for the given files / folders / globs, and the inputs that matched nothing.

    A folder gives its ``.tif``/``.tiff``/``.png``/``.jpg``/``.jpeg`` files (not hidden ones) and the
    OME-Zarr images in it (folders that are zarr groups or named ``*.zarr``), not the
    files of its other subfolders; a zarr folder given or matched is one input; ``skipped``, when given a list, receives
    ``(folder, subfolders, other files)`` for each folder where something was left
    out, so the caller can say so. With ``samples``, ``sample:NAME`` names a bundled
    sample image (:func:`cellseg.datasets.samples.sample_path`). Files found twice are
    listed once, where they are first found.
    """
    import glob

    from .omezarr import is_zarr

    files: list[Path] = []
    missing: list[str] = []
    for item in inputs:
        s = str(item)
        if samples and s.startswith("sample:"):
            from .datasets.samples import sample_path

            s = str(sample_path(s.split(":", 1)[1]))
        p = Path(s)
        if p.is_dir() and not is_zarr(p):
            entries = [q for q in p.iterdir() if not q.name.startswith(".")]
            found = sorted(q for q in entries if (q.is_file() and q.suffix.lower() in INPUT_SUFFIXES) or is_zarr(q))
            if skipped is not None:
                subs = sorted(q for q in entries if q.is_dir() and not is_zarr(q))
                other = sorted(q for q in entries if q.is_file() and q.suffix.lower() not in INPUT_SUFFIXES)
                if subs or other:
                    skipped.append((p, subs, other))
            if not found:
                missing.append(f"{s} (folder without .tif/.tiff/.png/.jpg files or OME-Zarr images)")
            files += found
        elif p.is_file() or is_zarr(p):
            files.append(p)
        elif any(ch in s for ch in "*?["):
            found = sorted(Path(q) for q in glob.glob(s, recursive=True) if Path(q).is_file() or is_zarr(q))
            if not found:
                missing.append(f"{s} (pattern matched no file)")
            files += found
        else:
            missing.append(f"{s} (no such file or folder)")
    seen: set[Path] = set()
    unique: list[Path] = []
    for f in files:
        r = f.resolve()
        if r not in seen:
            seen.add(r)
            unique.append(f)
    return unique, missing
