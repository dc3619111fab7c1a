"""OME-Zarr (OME-NGFF 0.4 and 0.5) images in, NGFF label images out.

Reading
    :func:`open_image` reads the metadata of an OME-Zarr image group (the first
    ``multiscales`` entry) and :meth:`OmeZarrImage.read` one resolution level
    (default 0, the full resolution) as :class:`cellseg.io.ImageData`: axes from
    the NGFF axes (``t``, ``c``, ``z``, ``y``, ``x`` by type and name), axes of
    size 1 squeezed as for TIFF files, pixel sizes in µm from the level's
    ``scale`` (the dataset's transformations combined with the multiscale's) and
    the axes' units, the frame interval from the time axis, channel names from
    ``omero`` metadata. A space axis without a unit gives no pixel size.

Writing
    :func:`write_labels` writes labels into the image's ``labels/<name>`` group
    (NGFF image-label: ``image-label`` metadata pointing back at ``../../``, and
    a ``multiscales`` entry whose levels have the shapes and the coordinate
    transformations of the image's levels from the segmented one down, the
    channel axis of size 1), in the image's own NGFF version and zarr format, and
    adds the name to ``labels/``'s list. :func:`write_image` writes a new
    OME-Zarr 0.5 image (with a 2x pyramid) and its labels, for TIFF/PNG inputs.
    Both write into a hidden temporary group (``.NAME.HOST-PID-XXXXXXXX.part``)
    that is renamed into place when complete, so a reader never sees half-written
    labels; temporaries a killed writer left behind are removed by the next write.

Library
    Metadata is parsed and validated with ``yaozarrs`` (pydantic models of the
    NGFF 0.4 and 0.5 specifications; it depends on pydantic alone), arrays are
    read and written with zarr-python (zarr v2 stores for NGFF 0.4, v3 for 0.5).
    ``ome-zarr`` (ome-zarr-py) cannot be installed beside cellseg's locked
    dependencies (its ``fsspec[s3]`` needs a python-dateutil below 3 and its
    ``ome-zarr-models`` a pydantic below 2.13) and ``ngff-zarr`` brings a
    WebAssembly runtime for its downsampling; napari's reader (napari-ome-zarr)
    reads what is written here.

Errors
    :class:`OmeZarrError` (a :class:`cellseg.io.ImageReadError`, so a ``ValueError``)
    names the path and what is wrong: not a zarr group, no ``multiscales``, a plate
    or bioformats2raw collection instead of an image, invalid metadata, axes cellseg
    cannot use, a missing level.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import numpy.typing as npt

from .io import AxesError, ImageData, ImageReadError

#: a file-system path as the functions here take it
PathLike = str | os.PathLike[str]

__all__ = ["OmeZarrError", "OmeZarrImage", "is_zarr", "open_image", "read_image", "write_labels",
           "write_image", "read_labels", "create_label_group", "fill_label_levels", "add_label_group"]

#: micrometres per unit (the UDUNITS-2 length names NGFF allows, and a few short spellings)
_UM = {
    "angstrom": 1e-4, "attometer": 1e-12, "centimeter": 1e4, "decimeter": 1e5, "exameter": 1e24,
    "femtometer": 1e-9, "foot": 304800.0, "gigameter": 1e15, "hectometer": 1e8, "inch": 25400.0,
    "kilometer": 1e9, "megameter": 1e12, "meter": 1e6, "micrometer": 1.0, "mile": 1609344000.0,
    "millimeter": 1e3, "nanometer": 1e-3, "parsec": 3.0856775814913673e22, "petameter": 1e21,
    "picometer": 1e-6, "terameter": 1e18, "yard": 914400.0, "yoctometer": 1e-18, "yottameter": 1e30,
    "zeptometer": 1e-15, "zettameter": 1e27, "µm": 1.0, "μm": 1.0, "um": 1.0, "micron": 1.0, "nm": 1e-3,
    "mm": 1e3,
}
#: seconds per unit (NGFF time units)
_S = {
    "attosecond": 1e-18, "centisecond": 1e-2, "day": 86400.0, "decisecond": 0.1, "exasecond": 1e18,
    "femtosecond": 1e-15, "gigasecond": 1e9, "hectosecond": 100.0, "hour": 3600.0, "kilosecond": 1e3,
    "megasecond": 1e6, "microsecond": 1e-6, "millisecond": 1e-3, "minute": 60.0, "nanosecond": 1e-9,
    "petasecond": 1e15, "picosecond": 1e-12, "second": 1.0, "terasecond": 1e12, "yoctosecond": 1e-24,
    "yottasecond": 1e24, "zeptosecond": 1e-21, "zettasecond": 1e21, "s": 1.0, "ms": 1e-3, "min": 60.0,
    "h": 3600.0,
}
_ZARR_META = ("zarr.json", ".zgroup", ".zattrs", ".zarray")


class OmeZarrError(ImageReadError):
    """An OME-Zarr that cannot be read or written (the message starts with its path)."""


def _libs(path: PathLike) -> tuple[Any, Any]:
    """yaozarrs and zarr, or an error naming ``path`` and the install command."""
    try:
        import yaozarrs
        import zarr
    except ImportError as exc:
        raise OmeZarrError(f"{path}: OME-Zarr support needs the packages zarr and yaozarrs ({exc}): "
                           "pip install 'cellseg-toolkit[omezarr]'") from None
    return yaozarrs, zarr


def is_zarr(path: PathLike) -> bool:
    """True for a folder that is a zarr node (``zarr.json``, ``.zgroup``, ``.zattrs``) or whose
    name ends with ``.zarr``: such a folder is one input, not a folder of images."""
    p = Path(path)
    if not p.is_dir():
        return False
    return p.name.lower().endswith(".zarr") or any((p / m).is_file() for m in _ZARR_META)


@dataclass
class _Level:
    path: str
    shape: tuple[int, ...]
    transforms: list[dict]  # the dataset's coordinateTransformations, as in the file


@dataclass
class OmeZarrImage:
    """The metadata of one OME-Zarr image (its first multiscale), from :func:`open_image`."""

    path: Path
    version: str  # "0.4" or "0.5"
    zarr_format: int  # 2 or 3
    axes_meta: list[dict]  # the NGFF axes as in the file
    letters: str  # one of T, C, Z, Y, X per NGFF axis
    levels: list[_Level]
    multiscale_transforms: list[dict] | None = None
    channel_names: list[str] | None = None
    name: str | None = None
    extra: dict = field(default_factory=dict)

    def scale(self, level: int) -> list[float]:
        """Per NGFF axis: the size of one element of ``level`` in the axis' unit."""
        out = [1.0] * len(self.letters)
        for tr in (self.levels[level].transforms or []) + (self.multiscale_transforms or []):
            if tr.get("type") == "scale":
                out = [a * float(b) for a, b in zip(out, tr["scale"])]
        return out

    def check_level(self, level: int) -> int:
        n = len(self.levels)
        if not isinstance(level, (int, np.integer)) or isinstance(level, bool) or not 0 <= level < n:
            raise OmeZarrError(f"{self.path}: has {n} resolution level{'s' if n != 1 else ''} "
                               f"(0{f' to {n - 1}' if n > 1 else ''}), asked for level {level!r}")
        return int(level)

    def pixel_size(self, level: int = 0) -> dict[str, float] | None:
        """µm per pixel of the spatial axes at ``level`` (None unless Y and X both have a length unit)."""
        out = {}
        for a, s, ax in zip(self.letters, self.scale(level), self.axes_meta):
            if a in "ZYX":
                f = _UM.get(str(ax.get("unit") or "").strip().lower())
                if f is not None and s > 0:
                    out[a] = s * f
        return out if "Y" in out and "X" in out else None

    def frame_interval(self, level: int = 0) -> float | None:
        for a, s, ax in zip(self.letters, self.scale(level), self.axes_meta):
            if a == "T":
                f = _S.get(str(ax.get("unit") or "").strip().lower())
                return s * f if f is not None and s > 0 else None
        return None

    def array(self, level: int = 0) -> Any:
        """The zarr array of ``level`` (not loaded)."""
        _, zarr = _libs(self.path)

        level = self.check_level(level)
        p = self.path / self.levels[level].path
        try:
            return zarr.open_array(str(p), mode="r", zarr_format=self.zarr_format)
        except Exception as exc:  # a missing or damaged array: name it
            raise OmeZarrError(f"{self.path}: cannot open resolution level {level} "
                               f"('{self.levels[level].path}'): {_reason(exc)}") from None

    def read(self, level: int = 0, axes: str | None = None) -> ImageData:
        """Level ``level`` as an :class:`ImageData` (axes of size 1 squeezed, as for TIFF files).

        ``axes``, when given, must be the axes the metadata gives (after squeezing): an
        OME-Zarr says its axes, so they cannot be overridden.
        """
        level = self.check_level(level)
        arr = self.array(level)
        if tuple(arr.shape) != self.levels[level].shape:
            raise OmeZarrError(f"{self.path}: level {level} has shape {tuple(arr.shape)}, the metadata "
                               f"{self.levels[level].shape}")
        try:
            data = np.asarray(arr[...])
        except Exception as exc:
            raise OmeZarrError(f"{self.path}: cannot read resolution level {level}: {_reason(exc)}") from None
        keep = [i for i, (a, n) in enumerate(zip(self.letters, data.shape)) if n > 1 or a in "YX"]
        data = data.reshape([data.shape[i] for i in keep])
        letters = "".join(self.letters[i] for i in keep)
        if axes is not None and axes.upper().replace("S", "C") != letters:
            raise AxesError(f"{self.path}: axes={axes!r} contradict the OME-Zarr metadata, whose axes are "
                            f"{letters!r} (shape {data.shape}); an OME-Zarr says its own axes")
        ps = self.pixel_size(level)
        if ps is not None:
            ps = {k: v for k, v in ps.items() if k in letters}
        names = self.channel_names
        if names is not None and ("C" not in letters or data.shape[letters.index("C")] != len(names)):
            names = None
        return ImageData(data=data, axes=letters, pixel_size=ps, channel_names=names, path=self.path,
                         frame_interval=self.frame_interval(level) if "T" in letters else None,
                         file_axes=letters)


def _reason(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _validation_message(exc: Any) -> str:
    """The first error of a pydantic ValidationError as ``where: what``."""
    try:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err.get("loc", ()))
        return f"{loc}: {err.get('msg')}" if loc else str(err.get("msg"))
    except Exception:
        return _reason(exc)


def _read_attrs(path: Path) -> tuple[dict, int]:
    """The attributes of the zarr group at ``path`` and its zarr format, without a library traceback."""
    if (path / "zarr.json").is_file():
        try:
            meta = json.loads((path / "zarr.json").read_text())
        except (OSError, ValueError) as exc:
            raise OmeZarrError(f"{path}: cannot read zarr.json ({_reason(exc)})") from None
        if not isinstance(meta, dict) or meta.get("zarr_format") != 3:
            raise OmeZarrError(f"{path}: zarr.json is not zarr v3 metadata")
        if meta.get("node_type") != "group":
            raise OmeZarrError(f"{path}: is a zarr array, not an OME-Zarr image group (give the group above it)")
        attrs = meta.get("attributes") or {}
        return (attrs if isinstance(attrs, dict) else {}), 3
    if (path / ".zarray").is_file():
        raise OmeZarrError(f"{path}: is a zarr array, not an OME-Zarr image group (give the group above it)")
    if (path / ".zgroup").is_file() or (path / ".zattrs").is_file():
        try:
            attrs = json.loads((path / ".zattrs").read_text()) if (path / ".zattrs").is_file() else {}
        except (OSError, ValueError) as exc:
            raise OmeZarrError(f"{path}: cannot read .zattrs ({_reason(exc)})") from None
        return (attrs if isinstance(attrs, dict) else {}), 2
    raise OmeZarrError(f"{path}: not a zarr group (no zarr.json, .zgroup or .zattrs): not an OME-Zarr image")


_TYPES = {"time": "T", "channel": "C"}


def _letters(path: Path, axes: list[dict]) -> str:
    out: list[str] = []
    known = True
    for ax in axes:
        name, kind = str(ax.get("name", "")), ax.get("type")
        if kind in _TYPES:
            out.append(_TYPES[kind])
        elif kind == "space" and name.lower() in ("z", "y", "x"):
            out.append(name.upper())
        else:
            known = False
            break
    text = ", ".join(f"{a.get('name')} ({a.get('type') or 'no type'})" for a in axes)
    if not known or len(set(out)) != len(out):
        raise OmeZarrError(f"{path}: unsupported axes [{text}]: cellseg reads axes of type time, channel and "
                           "space axes named z, y, x, each at most once")
    s = "".join(out)
    if "Y" not in s or "X" not in s:
        raise OmeZarrError(f"{path}: unsupported axes [{text}]: the image needs space axes y and x")
    order = "TCZYX"
    if [order.index(a) for a in s] != sorted(order.index(a) for a in s):
        raise OmeZarrError(f"{path}: unsupported axes order [{text}]: cellseg reads t, c, z, y, x in this order "
                           "(the NGFF order)")
    return s


def open_image(path: PathLike) -> OmeZarrImage:
    """Read and validate the metadata of the OME-Zarr image at ``path`` (NGFF 0.4 or 0.5)."""
    path = Path(path)
    yaozarrs, _ = _libs(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if not path.is_dir():
        raise OmeZarrError(f"{path}: not an OME-Zarr (an OME-Zarr is a folder)")
    attrs, fmt = _read_attrs(path)
    ome = attrs.get("ome") if fmt == 3 else attrs
    if not isinstance(ome, dict):
        ome = {}
    version = str(ome.get("version") or "")
    if fmt == 2:
        ms = ome.get("multiscales")
        version = str(ms[0].get("version", "")) if isinstance(ms, list) and ms and isinstance(ms[0], dict) else ""
    if "bioformats2raw.layout" in ome:
        raise OmeZarrError(f"{path}: is a bioformats2raw collection of images, not one image; give one of its "
                           f"series, e.g. {path / '0'}")
    if "plate" in ome or "well" in ome:
        raise OmeZarrError(f"{path}: is an OME-Zarr {'plate' if 'plate' in ome else 'well'} (HCS), not one image; "
                           "give one field of view, e.g. PLATE.zarr/A/1/0")
    if "multiscales" not in ome:
        what = "zarr.json attributes 'ome'" if fmt == 3 else ".zattrs"
        raise OmeZarrError(f"{path}: not an OME-Zarr image: no 'multiscales' in its metadata ({what})")
    if fmt == 3 and version != "0.5":
        raise OmeZarrError(f"{path}: OME-Zarr version {version or '(none)'!r} in a zarr v3 store; cellseg reads "
                           "NGFF 0.5 (zarr v3) and 0.4 (zarr v2)")
    if fmt == 2 and version != "0.4":
        raise OmeZarrError(f"{path}: OME-Zarr version {version or '(none)'!r}; cellseg reads NGFF 0.4 (zarr v2) "
                           "and 0.5 (zarr v3)")
    model = yaozarrs.v05.Image if fmt == 3 else yaozarrs.v04.Image
    payload = dict(ome)
    payload.pop("image-label", None)  # a label image is read as an image
    try:
        model.model_validate(payload)
    except ValueError as exc:
        raise OmeZarrError(f"{path}: invalid OME-Zarr {version} metadata: {_validation_message(exc)}") from None
    m = ome["multiscales"][0]
    axes = [dict(a) for a in m["axes"]]
    letters = _letters(path, axes)
    levels = []
    for ds in m["datasets"]:
        p = path / ds["path"]
        shape = _array_shape(p, fmt)
        if shape is None:
            raise OmeZarrError(f"{path}: resolution level '{ds['path']}' named in the metadata is not a zarr "
                               "array in the store")
        if len(shape) != len(axes):
            raise OmeZarrError(f"{path}: level '{ds['path']}' has {len(shape)} dimensions, the metadata "
                               f"{len(axes)} axes")
        levels.append(_Level(ds["path"], shape, [dict(t) for t in ds["coordinateTransformations"]]))
    names: list[str] | None = None
    omero = ome.get("omero")
    if isinstance(omero, dict) and isinstance(omero.get("channels"), list):
        labels = [c.get("label") if isinstance(c, dict) else None for c in omero["channels"]]
        if labels and all(isinstance(x, str) and x for x in labels):
            names = [str(x) for x in labels]
    mt = m.get("coordinateTransformations")
    return OmeZarrImage(path=path, version=version, zarr_format=fmt, axes_meta=axes, letters=letters,
                        levels=levels, multiscale_transforms=[dict(t) for t in mt] if mt else None,
                        channel_names=names, name=m.get("name"))


def _array_shape(p: Path, fmt: int) -> tuple[int, ...] | None:
    try:
        if fmt == 3:
            meta = json.loads((p / "zarr.json").read_text())
            if meta.get("node_type") != "array":
                return None
        else:
            meta = json.loads((p / ".zarray").read_text())
        return tuple(int(n) for n in meta["shape"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_image(path: PathLike, level: int = 0, axes: str | None = None) -> ImageData:
    """Resolution level ``level`` of the OME-Zarr image at ``path`` (see :meth:`OmeZarrImage.read`)."""
    return open_image(path).read(level, axes=axes)


def read_labels(path: PathLike, name: str, level: int = 0) -> np.ndarray:
    """The label image ``labels/<name>`` of the OME-Zarr image at ``path`` (level ``level``), as
    stored (all NGFF axes, the channel axis of size 1)."""
    lab = open_image(Path(path) / "labels" / name)
    return np.asarray(lab.array(level)[...])


# ----------------------------------------------------------------------------- writing


def _resize_nearest(labels: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """``labels`` brought to ``shape`` by nearest-neighbour sampling (pixel centres)."""
    out = labels
    for ax, (n_src, n_dst) in enumerate(zip(labels.shape, shape)):
        if n_src != n_dst:
            out = np.take(out, _nearest_index(n_src, n_dst), axis=ax)
    return out


def _label_dtype(labels: np.ndarray) -> type[np.unsignedinteger]:
    top = int(labels.max()) if labels.size else 0
    return np.uint8 if top <= 255 else np.uint16 if top <= 65535 else np.uint32


def _chunks(shape: Sequence[int], letters: str) -> tuple[int, ...]:
    return tuple(min(n, 1024) if a in "YX" else min(n, 32) if a == "Z" else 1 for a, n in zip(letters, shape))


def _create_array(group: Any, name: str, data: np.ndarray, letters: str, axis_names: Sequence[str],
                  fmt: int) -> None:
    kw: dict[str, Any] = {}
    if fmt == 3:
        kw["dimension_names"] = list(axis_names)
    else:
        kw["chunk_key_encoding"] = {"name": "v2", "separator": "/"}  # NGFF 0.4 asks for '/'
    arr = group.create_array(name, shape=data.shape, dtype=data.dtype, chunks=_chunks(data.shape, letters),
                             fill_value=0, **kw)
    arr[...] = data


def _ome_attrs(ome: dict, version: str) -> dict:
    return {"ome": {"version": version, **ome}} if version == "0.5" else ome


def _tmp_name(name: str) -> str:
    from ._files import _HOST

    return f".{name}.{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}.part"


def _remove_stale_groups(folder: Path) -> None:
    """Remove temporary groups (``.NAME.HOST-PID-XXXXXXXX.part``) whose writer on this machine is gone."""
    from ._files import _HOST, _TMP_NAME, _alive

    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for e in entries:
        m = _TMP_NAME.match(e.name)
        if m is None or not e.is_dir(follow_symlinks=False) or m["host"] != _HOST or _alive(int(m["pid"])):
            continue
        shutil.rmtree(e.path, ignore_errors=True)


def _label_attrs(transforms: list[list[dict]], ms_transforms: list[dict] | None, axes_meta: list[dict],
                 version: str) -> dict:
    """The (validated) attributes of a label image group with these levels' transformations."""
    yaozarrs, _ = _libs("labels")
    mod = yaozarrs.v05 if version == "0.5" else yaozarrs.v04
    datasets = [{"path": str(i), "coordinateTransformations": t} for i, t in enumerate(transforms)]
    ms = {"axes": axes_meta, "datasets": datasets, "type": "nearest",
          "metadata": {"description": "label levels sampled from level 0 by nearest neighbour (cellseg)"}}
    if ms_transforms:
        ms["coordinateTransformations"] = ms_transforms
    if version == "0.4":
        ms["version"] = "0.4"
    label: dict[str, Any] = {"source": {"image": "../../"}}
    if version == "0.4":
        label["version"] = "0.4"
    ome = {"multiscales": [ms], "image-label": label}
    mod.LabelImage.model_validate(ome if version == "0.4" else {"version": "0.5", **ome})  # what we write is valid
    return _ome_attrs(ome, version)


def _write_label_group(dest: Path, labels_full: np.ndarray, shapes: list[tuple[int, ...]],
                       transforms: list[list[dict]], ms_transforms: list[dict] | None, axes_meta: list[dict],
                       letters: str, version: str, fmt: int) -> None:
    """Write a complete label image group at ``dest`` (which must not exist)."""
    _, zarr = _libs(dest)

    attrs = _label_attrs(transforms, ms_transforms, axes_meta, version)
    dt = _label_dtype(labels_full)
    g = zarr.open_group(str(dest), mode="w-", zarr_format=fmt)
    g.attrs.update(attrs)
    names = [a["name"] for a in axes_meta]
    for i, shape in enumerate(shapes):
        _create_array(g, str(i), _resize_nearest(labels_full, shape).astype(dt), letters, names, fmt)


def _nearest_index(n_src: int, n_dst: int) -> np.ndarray:
    """The source index of each of ``n_dst`` pixels sampled by nearest neighbour (pixel centres), as
    :func:`_resize_nearest` samples."""
    return np.minimum(((np.arange(n_dst) + 0.5) * (n_src / n_dst)).astype(np.int64), n_src - 1)


def create_label_group(image: "OmeZarrImage", dest: PathLike, level: int = 0,
                       dtype: npt.DTypeLike = np.uint32) -> list[Any]:
    """Create an empty label image group at ``dest`` (which must not exist) for ``image`` segmented
    at ``level``: the attributes :func:`write_labels` writes and one zero-filled ``dtype`` array
    per image level from ``level`` down (the channel axis of size 1). Returns the arrays, level
    ``level`` first; fill the first and call :func:`fill_label_levels` for the others (the way a
    block-wise run writes labels too large for memory)."""
    _, zarr = _libs(image.path)
    level = image.check_level(level)
    shapes, transforms = [], []
    for lv in image.levels[level:]:
        shapes.append(tuple(1 if a == "C" else n for a, n in zip(image.letters, lv.shape)))
        transforms.append([dict(t) for t in lv.transforms])
    attrs = _label_attrs(transforms, image.multiscale_transforms, image.axes_meta, image.version)
    g = zarr.open_group(str(dest), mode="w-", zarr_format=image.zarr_format)
    g.attrs.update(attrs)
    names = [a["name"] for a in image.axes_meta]
    kw = {"dimension_names": names} if image.zarr_format == 3 else {"chunk_key_encoding": {"name": "v2",
                                                                                          "separator": "/"}}
    return [g.create_array(str(i), shape=shape, dtype=dtype, chunks=_chunks(shape, image.letters), fill_value=0,
                           **kw) for i, shape in enumerate(shapes)]


def fill_label_levels(arrays: Sequence, letters: str, band: int = 1024) -> None:
    """Fill ``arrays[1:]`` from ``arrays[0]`` by nearest-neighbour sampling over Y and X (as
    :func:`write_labels` samples its levels), band by band of ``band`` rows: memory stays bounded
    by a band of the source, whatever the image's size. The other axes must have the same size
    in every array."""
    src = arrays[0]
    yi, xi = letters.index("Y"), letters.index("X")
    for dst in arrays[1:]:
        iy = _nearest_index(src.shape[yi], dst.shape[yi])
        ix = _nearest_index(src.shape[xi], dst.shape[xi])
        for y0 in range(0, dst.shape[yi], band):
            y1 = min(dst.shape[yi], y0 + band)
            key: list[Any] = [slice(None)] * len(letters)
            key[yi], key[xi] = iy[y0:y1], ix
            part = src.oindex[tuple(key)]  # only the sampled rows and columns (zarr decodes chunk by chunk)
            key[yi], key[xi] = slice(y0, y1), slice(None)
            dst[tuple(key)] = part


def add_label_group(image: "OmeZarrImage", tmp: PathLike, name: str) -> Path:
    """Move the complete label group ``tmp`` to ``image``'s ``labels/<name>`` (replacing one of
    that name) and list it in ``labels/``; returns the label group's path."""
    name = _check_name(name)
    dest = labels_path(image.path, name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _replace_dir(Path(tmp), dest)
    _add_to_labels_list(dest.parent, name, image.version, image.zarr_format)
    return dest


def _replace_dir(tmp: Path, dest: Path) -> None:
    """Move the complete group ``tmp`` to ``dest``, replacing an existing one."""
    old = None
    if dest.exists():
        old = dest.parent / _tmp_name(dest.name)
        os.replace(dest, old)
    try:
        os.replace(tmp, dest)
    except BaseException:
        if old is not None:
            os.replace(old, dest)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _add_to_labels_list(labels_dir: Path, name: str, version: str, fmt: int) -> None:
    import zarr

    g = zarr.open_group(str(labels_dir), mode="a", zarr_format=2 if fmt == 2 else 3)
    attrs: dict[str, Any] = dict(g.attrs)
    holder: dict[str, Any] = dict(attrs.get("ome") or {}) if version == "0.5" else attrs
    names = list(holder.get("labels") or [])
    if name in names:
        return
    names.append(name)
    if version == "0.5":
        g.attrs.update({"ome": {**holder, "version": "0.5", "labels": names}})
    else:
        g.attrs.update({"labels": names})


def _full_labels(labels: np.ndarray, labels_axes: str, letters: str) -> np.ndarray:
    """``labels`` (axes ``labels_axes``, a canonical subset of TZYX) with every NGFF axis of
    ``letters``, the missing ones (channel, squeezed axes) of size 1."""
    labels_axes = labels_axes.upper()
    missing = set(labels_axes) - set(letters)
    if missing:
        raise ValueError(f"labels have axes {labels_axes!r}, which the image ({letters!r}) does not have")
    shape = [labels.shape[labels_axes.index(a)] if a in labels_axes else 1 for a in letters]
    order = [a for a in letters if a in labels_axes]
    return np.transpose(labels, [labels_axes.index(a) for a in order]).reshape(shape)


def labels_path(path: PathLike, name: str) -> Path:
    """Where :func:`write_labels` puts label image ``name`` of the OME-Zarr image at ``path``."""
    return Path(path) / "labels" / name


def _check_name(name: str) -> str:
    name = str(name)
    if not name or name.startswith(".") or "/" in name or "\\" in name or name in ("labels",):
        raise ValueError(f"label image name {name!r}: give a plain name (no '/', not starting with '.')")
    return name


def write_labels(image: OmeZarrImage | str | Path, labels: npt.ArrayLike, axes: str, name: str = "cellseg",
                 level: int = 0, overwrite: bool = False) -> Path:
    """Write ``labels`` (segmented at resolution ``level``) into ``image``'s ``labels/<name>`` group.

    The label image has the image's axes (the channel axis of size 1) and one level per
    image level from ``level`` down, with those levels' shapes and coordinate
    transformations (the multiscale's own transformations copied too), so viewers
    overlay it on the image; NGFF 0.4 images get 0.4 labels in zarr v2, 0.5 images
    0.5 labels in zarr v3. Written into a hidden temporary group renamed into place;
    an existing label image of that name is replaced only with ``overwrite``.
    Returns the path of the label group.
    """
    img = image if isinstance(image, OmeZarrImage) else open_image(image)
    name = _check_name(name)
    level = img.check_level(level)
    labels = np.asarray(labels)
    full = _full_labels(labels, axes, img.letters)
    want = tuple(1 if a == "C" else n for a, n in zip(img.letters, img.levels[level].shape))
    if full.shape != want:
        raise ValueError(f"{img.path}: labels of shape {labels.shape} ({axes}) do not fit level {level} of the "
                         f"image, shape {img.levels[level].shape} ({img.letters})")
    dest = labels_path(img.path, name)
    if dest.exists() and not overwrite:
        raise FileExistsError(f"{dest}: exists (overwrite=True replaces it)")
    labels_dir = dest.parent
    labels_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_groups(labels_dir)
    shapes, transforms = [], []
    for lv in img.levels[level:]:
        shapes.append(tuple(1 if a == "C" else n for a, n in zip(img.letters, lv.shape)))
        transforms.append([dict(t) for t in lv.transforms])
    tmp = labels_dir / _tmp_name(name)
    try:
        _write_label_group(tmp, full, shapes, transforms, img.multiscale_transforms, img.axes_meta, img.letters,
                           img.version, img.zarr_format)
        _replace_dir(tmp, dest)
        _add_to_labels_list(labels_dir, name, img.version, img.zarr_format)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


_NGFF_AXES = {"T": {"name": "t", "type": "time"}, "C": {"name": "c", "type": "channel"},
              "Z": {"name": "z", "type": "space"}, "Y": {"name": "y", "type": "space"},
              "X": {"name": "x", "type": "space"}}


def _downsample_mean(data: np.ndarray, letters: str) -> np.ndarray:
    """2x2 block mean over Y and X (odd edges repeated), in the input's dtype."""
    out = data.astype(np.float64)
    for a in "YX":
        ax = letters.index(a)
        if out.shape[ax] % 2:
            out = np.concatenate([out, np.take(out, [-1], axis=ax)], axis=ax)
        shape = list(out.shape)
        shape[ax:ax + 1] = [shape[ax] // 2, 2]
        out = out.reshape(shape).mean(axis=ax + 1)
    if np.issubdtype(data.dtype, np.integer):
        out = np.rint(out)
    return out.astype(data.dtype)


def write_image(path: PathLike, image: ImageData | np.ndarray, labels: npt.ArrayLike, labels_axes: str,
                axes: str | None = None, pixel_size: dict | None = None, name: str = "cellseg", min_size: int = 256,
                overwrite: bool = False) -> Path:
    """Write a new OME-Zarr 0.5 image at ``path`` holding ``image`` and ``labels/<name>``.

    ``image`` is an :class:`ImageData` (axes, pixel sizes, frame interval and channel
    names taken from it) or an array with ``axes``. The image gets a pyramid of 2x
    block means over Y and X down to ``min_size`` pixels (the labels the same levels
    by nearest neighbour), scales in micrometres when pixel sizes are known, and
    ``omero`` channel names. The whole store is written under a temporary name
    beside ``path`` and renamed when complete. Returns ``path``.
    """
    from .io import check_axes, transpose_axes

    path = Path(path)
    yaozarrs, zarr = _libs(path)
    if isinstance(image, ImageData):
        data, axes, ps = image.data, image.axes, image.pixel_size
        interval, ch_names = image.frame_interval, image.channel_names
    else:
        data, ps, interval, ch_names = np.asarray(image), pixel_size, None, None
        axes = check_axes(axes, data.ndim)
    letters = "".join(a for a in "TCZYX" if a in axes)
    data = transpose_axes(data, axes, letters)
    if data.dtype == bool:
        data = data.astype(np.uint8)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: exists (overwrite=True replaces it)")
    full = _full_labels(np.asarray(labels), labels_axes, letters)
    want = tuple(1 if a == "C" else n for a, n in zip(letters, data.shape))
    if full.shape != want:
        raise ValueError(f"{path}: labels of shape {np.shape(labels)} ({labels_axes}) do not fit the image, "
                         f"shape {data.shape} ({letters})")
    name = _check_name(name)
    pyramid = [data]
    while max(pyramid[-1].shape[letters.index("Y")], pyramid[-1].shape[letters.index("X")]) > min_size \
            and len(pyramid) < 8:
        pyramid.append(_downsample_mean(pyramid[-1], letters))
    axes_meta = []
    for a in letters:
        ax = dict(_NGFF_AXES[a])
        if a in "ZYX" and ps and a in ps:
            ax["unit"] = "micrometer"
        if a == "T" and interval:
            ax["unit"] = "second"
        axes_meta.append(ax)
    base = [float(ps[a]) if a in "ZYX" and ps and a in ps else float(interval) if a == "T" and interval else 1.0
            for a in letters]
    transforms = []
    for k in range(len(pyramid)):
        f = [2.0 ** k if a in "YX" else 1.0 for a in letters]
        transforms.append([{"type": "scale", "scale": [b * g for b, g in zip(base, f)]}])
    ms = {"axes": axes_meta, "type": "local_mean",
          "datasets": [{"path": str(k), "coordinateTransformations": t} for k, t in enumerate(transforms)]}
    ome: dict[str, Any] = {"multiscales": [ms]}
    if ch_names and "C" in letters and len(ch_names) == data.shape[letters.index("C")]:
        ome["omero"] = {"channels": [{"label": str(c), "active": True, "color": "FFFFFF",
                                      "window": {"start": float(data.min()), "end": float(data.max()),
                                                 "min": float(data.min()), "max": float(data.max())}}
                                     for c in ch_names]}
    yaozarrs.v05.Image.model_validate({"version": "0.5", **ome})
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_groups(path.parent)
    tmp = path.parent / _tmp_name(path.name)
    try:
        g = zarr.open_group(str(tmp), mode="w-", zarr_format=3)
        g.attrs.update(_ome_attrs(ome, "0.5"))
        names = [a["name"] for a in axes_meta]
        for k, lv in enumerate(pyramid):
            _create_array(g, str(k), lv, letters, names, 3)
        lab_dir = tmp / "labels"
        _write_label_group(lab_dir / name, full, [tuple(1 if a == "C" else n for a, n in zip(letters, lv.shape))
                                                  for lv in pyramid],
                           transforms, None, axes_meta, letters, "0.5", 3)
        _add_to_labels_list(lab_dir, name, "0.5", 3)
        _replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path
