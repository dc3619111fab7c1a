"""TIFF files as napari layers through :mod:`cellseg.io`: reading an image or a labels
layer (with its axes, channel names and pixel size), writing a Labels layer, and the npe2
reader and writer contributions that call them."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ._axes import display_axis_labels

__all__ = ["get_reader", "write_labels", "looks_like_labels", "read_layers", "labels_axes", "write_labels_layer"]

_SUFFIXES = (".tif", ".tiff")


def get_reader(path):
    """npe2 reader: a function for ``.tif``/``.tiff`` paths (or lists of them), else None."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if not paths or not all(isinstance(p, (str, Path)) and Path(p).suffix.lower() in _SUFFIXES for p in paths):
        return None
    return _read_many


def _read_many(path):
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    out = []
    for p in paths:
        out.extend(read_layers(p))
    return out


def write_labels(path: str, data, meta: dict) -> list[str]:
    """npe2 single-layer writer: a Labels layer as a compressed TIFF (``cellseg.io.write_labels``)."""
    return write_labels_layer(path, data, meta)


_LABEL_HINTS = ("label", "mask", "seg", "man_track", "_gt", "gt_", "annotation", "instances")


def looks_like_labels(data: np.ndarray, path: str | os.PathLike | None = None) -> bool:
    """Whether an array read from ``path`` is a label image rather than intensities.

    Integer, non-negative data only. Yes when the file name says so (``mask``,
    ``label``, ``seg``, ``man_track``...); otherwise when the data is piecewise
    constant: background 0 present and ≥ 95 % of the horizontally adjacent pairs of
    non-zero pixels equal (intensity images vary from pixel to pixel).
    """
    a = np.asarray(data)
    if a.dtype.kind not in "iub" or a.size == 0 or a.ndim < 2:
        return False
    if a.dtype.kind == "i" and a.min() < 0:
        return False
    name = Path(path).name.lower() if path is not None else ""
    if any(h in name for h in _LABEL_HINTS):
        return True
    sub = a.reshape(-1, a.shape[-2], a.shape[-1])[: 8]  # a few planes are enough
    if not (sub == 0).any():
        return False
    left, right = sub[..., :-1], sub[..., 1:]
    both = (left != 0) & (right != 0)
    if both.sum() < 16:
        return False
    same = (left == right) & both
    return bool(same.sum() / both.sum() >= 0.95)


def read_layers(path: str | os.PathLike) -> list[tuple]:
    """Read a TIFF with :mod:`cellseg.io` as an image or a labels layer (see
    :func:`looks_like_labels`); axes, channel names and pixel sizes go to the layer's
    metadata and scale; RGB(A) colour images become RGB layers, another channel axis
    becomes the layer's first."""
    from cellseg.io import read_image, read_labels

    p = Path(path)
    img = read_image(p)
    scale = None
    if img.pixel_size:
        scale = tuple(float(img.pixel_size.get(a, 1.0)) for a in img.axes if a != "C")
    meta = {"axes": img.axes, "path": str(p)}
    if img.channel_names:
        meta["channel_names"] = list(img.channel_names)
    if img.pixel_size:
        meta["pixel_size"] = dict(img.pixel_size)
    if "C" not in img.axes and looks_like_labels(img.data, p):
        labels = read_labels(p)
        kw = {"name": p.stem, "metadata": meta, "axis_labels": display_axis_labels(img.axes)}
        if scale:
            kw["scale"] = scale
        return [(labels, kw, "labels")]
    kw: dict[str, Any] = {"name": p.stem, "metadata": meta}
    data = img.data
    if "C" in img.axes:
        c = img.axes.index("C")
        n = data.shape[c]
        if c == data.ndim - 1 and n in (3, 4) and data.dtype == np.uint8:
            kw["rgb"] = True
            kw["axis_labels"] = display_axis_labels(img.axes[:-1])
            if scale:
                kw["scale"] = scale
            return [(data, kw, "image")]
        # keep the channel axis in the layer (a slider; the segment widget offers a channel
        # choice), moved first: napari aligns layers by their last axes, so the labels of a
        # ZCYX image (ZYX) would lie along its C axis. Its scale entry is 1.
        if c != 0:
            data = np.moveaxis(data, c, 0)
            meta["axes"] = "C" + img.axes.replace("C", "")
        kw["axis_labels"] = display_axis_labels(meta["axes"])
        if scale:
            kw["scale"] = (1.0,) + tuple(scale)
        return [(data, kw, "image")]
    kw["axis_labels"] = display_axis_labels(img.axes)
    if scale:
        kw["scale"] = scale
    return [(data, kw, "image")]


def labels_axes(ndim: int, metadata: dict | None = None) -> str:
    """Axes for writing a labels layer: ``metadata['axes']`` when it fits, else by ndim
    (YX, ZYX, TZYX)."""
    a = (metadata or {}).get("axes")
    if isinstance(a, str):
        a = a.replace("C", "")
        if len(a) == ndim and set(a) <= set("TZYX"):
            return a
    return {2: "YX", 3: "ZYX", 4: "TZYX"}.get(ndim) or _raise(ValueError(f"cannot write {ndim}D labels"))


def _raise(exc):
    raise exc


def write_labels_layer(path: str | os.PathLike, data: np.ndarray, meta: dict | None = None) -> list[str]:
    """Write labels with :func:`cellseg.io.write_labels` (atomic, compressed TIFF) in the
    canonical axis order TZYX."""
    from cellseg.io import transpose_axes, write_labels

    meta = meta or {}
    data = np.asarray(data)
    axes = labels_axes(data.ndim, meta.get("metadata"))
    canon = "".join(a for a in "TZYX" if a in axes)
    if canon != axes:
        data = transpose_axes(data, axes, canon)
        axes = canon
    ps = (meta.get("metadata") or {}).get("pixel_size")
    ps = {k: v for k, v in ps.items() if k in axes} if isinstance(ps, dict) else None
    if ps and not ("Y" in ps and "X" in ps):
        ps = None
    out = write_labels(path, data, axes=axes, pixel_size=ps or None)
    return [str(out)]
