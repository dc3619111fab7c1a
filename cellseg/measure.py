"""Per-object measurements for the CLI's CSV and the napari plugin.

The CSV has the columns that apply to the data (:func:`table_columns`): the
``*_z`` columns only for volumes (a Z axis), the µm columns only when the pixel
size is known, so no column is empty by construction. Numbers are written with
the precision they carry: pixel centroids and equivalent diameters to 0.01 px,
scores to 4 decimals, intensities and physical sizes to 6 significant digits.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
from scipy import ndimage as ndi

__all__ = ["object_table", "write_csv", "table_columns", "COLUMNS"]

COLUMNS = (
    "id", "frame", "area", "centroid_z", "centroid_y", "centroid_x",
    "bbox_z0", "bbox_y0", "bbox_x0", "bbox_z1", "bbox_y1", "bbox_x1",
    "mean_intensity", "score", "touches_border", "cut_by_block",
    "equivalent_diameter", "area_um", "equivalent_diameter_um", "centroid_z_um", "centroid_y_um", "centroid_x_um",
)
_Z_COLUMNS = frozenset(c for c in COLUMNS if "_z" in c)
_UM_COLUMNS = frozenset(c for c in COLUMNS if c.endswith("_um"))

#: how each float column is written: decimals (int) or significant digits (str format)
_PRECISION: dict[str, int | str] = {
    "centroid_z": 2, "centroid_y": 2, "centroid_x": 2, "equivalent_diameter": 2, "score": 4,
    "mean_intensity": ".6g", "area_um": ".6g", "equivalent_diameter_um": ".6g",
    "centroid_z_um": ".6g", "centroid_y_um": ".6g", "centroid_x_um": ".6g",
}


def table_columns(axes: str, pixel_size: Mapping[str, float] | None = None) -> tuple[str, ...]:
    """The CSV columns for labels with ``axes``: ``*_z`` columns only with a Z axis, µm
    columns only when ``pixel_size`` gives every spatial axis (as :func:`object_table`)."""
    spatial = axes.upper().replace("T", "")
    drop = set() if "Z" in spatial else set(_Z_COLUMNS)
    if frame_spacing(spatial, pixel_size) is None:
        drop |= _UM_COLUMNS
    return tuple(c for c in COLUMNS if c not in drop)


def frame_spacing(frame_axes: str, pixel_size) -> tuple[float, ...] | None:
    """The pixel size along ``frame_axes`` from a ``{axis: size}`` mapping, or ``None`` when one is missing."""
    if not pixel_size:
        return None
    ps = {k.upper(): v for k, v in pixel_size.items() if v}
    if all(a in ps for a in frame_axes):
        return tuple(float(ps[a]) for a in frame_axes)
    return None


def frame_rows(lab: np.ndarray, img: np.ndarray | None, frame, scores: Mapping[int, float],
               cut: set[int], spacing: tuple[float, ...] | None = None) -> list[dict]:
    """The measurement rows of the objects of one frame (``scores``: by id; ``cut``: the ids cut by a block edge)."""
    ids = np.unique(lab)
    ids = ids[ids != 0]
    if ids.size == 0:
        return []
    index = ids.tolist()
    area = ndi.sum_labels(np.ones(lab.shape, np.float64), lab, index)
    cents = ndi.center_of_mass(np.ones(lab.shape, np.float64), lab, index)
    mean = ndi.mean(img.astype(np.float64), lab, index) if img is not None else [np.nan] * len(index)
    slices = ndi.find_objects(lab)
    border = set()
    for ax in range(lab.ndim):
        border.update(np.unique(np.take(lab, 0, axis=ax)).tolist())
        border.update(np.unique(np.take(lab, -1, axis=ax)).tolist())
    rows = []
    nd = lab.ndim
    for k, i in enumerate(index):
        sl = slices[i - 1]
        c = cents[k]
        r = {"id": i, "frame": frame, "area": int(area[k])}
        names = "zyx"[3 - nd:]  # no z entries in 2D
        r.update({f"centroid_{a}": float(v) for a, v in zip(names, c)})
        r.update({f"bbox_{a}0": sv.start for a, sv in zip(names, sl)})
        r.update({f"bbox_{a}1": sv.stop for a, sv in zip(names, sl)})
        r["mean_intensity"] = float(mean[k])
        r["score"] = float(scores.get(i, np.nan))
        r["touches_border"] = i in border
        r["cut_by_block"] = i in cut
        a = float(area[k])
        r["equivalent_diameter"] = float(np.sqrt(4 * a / np.pi) if nd == 2 else np.cbrt(6 * a / np.pi))
        if spacing is not None:  # physical units: µm per pixel along each spatial axis of ``lab``
            vol = a * float(np.prod(spacing))
            r["area_um"] = vol
            r["equivalent_diameter_um"] = float(np.sqrt(4 * vol / np.pi) if nd == 2 else np.cbrt(6 * vol / np.pi))
            for axis_name, cv, sp in zip("zyx"[3 - nd:], c, spacing):
                r[f"centroid_{axis_name}_um"] = float(cv) * sp
        rows.append(r)
    return rows


def object_table(
    labels: np.ndarray,
    axes: str,
    image: np.ndarray | None = None,
    scores: Mapping[int, float] | None = None,
    cut: Iterable[int] = (),
    pixel_size: Mapping[str, float] | None = None,
) -> list[dict]:
    """One row per object and frame: id, frame (T index, or Z slice for per-slice
    results), area (pixels/voxels), centroid, bbox (start inclusive, stop
    exclusive), mean intensity of ``image`` (same axes as labels, channel
    removed), score, touches_border, cut_by_block, equivalent diameter (px) and,
    when ``pixel_size`` (µm per pixel by axis letter, e.g. from the file) gives every
    spatial axis, the area (µm², or µm³ for volumes), equivalent diameter and
    centroid in µm. Rows of 2D labels have no ``*_z`` keys; the keys of a row are
    :func:`table_columns` of the same arguments. Values at full precision (the CSV
    rounds them)."""
    labels = np.asarray(labels)
    if len(axes) != labels.ndim:
        raise ValueError(f"axes {axes!r} do not match labels of shape {labels.shape}")
    if image is not None and image.shape != labels.shape:
        raise ValueError(f"image shape {image.shape} differs from labels shape {labels.shape}")
    scores = scores or {}
    cut = set(int(c) for c in cut)
    frame_axes = axes.replace("T", "")
    spacing = frame_spacing(frame_axes, pixel_size)
    if "T" in axes:
        t = axes.index("T")
        rows = []
        for f in range(labels.shape[t]):
            rows += frame_rows(np.take(labels, f, axis=t),
                                None if image is None else np.take(image, f, axis=t), f, scores, cut, spacing)
        return rows
    return frame_rows(labels, image, 0, scores, cut, spacing)


def csv_cell(column: str, value):
    """The text of ``value`` in the CSV column ``column`` (floats rounded to that column's precision)."""
    if isinstance(value, (float, np.floating)):
        if not np.isfinite(value):
            return ""
        p = _PRECISION.get(column)
        if isinstance(p, int):
            return repr(round(float(value), p))
        return format(float(value), p or ".6g")
    return value


def write_csv(path: str | Path, rows: Sequence[dict], columns: Sequence[str] | None = None) -> Path:
    """Write rows atomically (temporary file in the same folder, then rename; the file gets
    the mode a plain write would), rounded to their precision (see the module docstring).

    ``columns`` (default: those of :data:`COLUMNS` that some row has, the 2D columns for no
    rows); pass :func:`table_columns` so that an image without objects gets the same header.
    """
    from ._files import atomic_write

    if columns is None:
        present = set().union(*(r.keys() for r in rows)) if rows else set(table_columns("YX"))
        columns = [c for c in COLUMNS if c in present]
    columns = list(columns)

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
            w.writeheader()
            for r in rows:
                w.writerow({k: csv_cell(k, r.get(k)) for k in columns})

    return atomic_write(Path(path), write)
