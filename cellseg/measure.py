"""Per-object measurements for the CLI's CSV and the napari plugin."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
from scipy import ndimage as ndi

__all__ = ["object_table", "write_csv", "COLUMNS"]

COLUMNS = (
    "id", "frame", "area", "centroid_z", "centroid_y", "centroid_x",
    "bbox_z0", "bbox_y0", "bbox_x0", "bbox_z1", "bbox_y1", "bbox_x1",
    "mean_intensity", "score", "touches_border", "cut_by_block",
    "equivalent_diameter", "area_um", "equivalent_diameter_um", "centroid_z_um", "centroid_y_um", "centroid_x_um",
)


def _frame_rows(lab: np.ndarray, img: np.ndarray | None, frame, scores: Mapping[int, float],
                cut: set[int], spacing: tuple[float, ...] | None = None) -> list[dict]:
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
        pad = 3 - nd
        cc = (np.nan,) * pad + tuple(float(v) for v in c)
        b0 = (np.nan,) * pad + tuple(s.start for s in sl)
        b1 = (np.nan,) * pad + tuple(s.stop for s in sl)
        r.update({"centroid_z": cc[0], "centroid_y": cc[1], "centroid_x": cc[2],
                  "bbox_z0": b0[0], "bbox_y0": b0[1], "bbox_x0": b0[2],
                  "bbox_z1": b1[0], "bbox_y1": b1[1], "bbox_x1": b1[2]})
        r["mean_intensity"] = float(mean[k])
        r["score"] = round(float(scores.get(i, np.nan)), 6)
        r["touches_border"] = i in border
        r["cut_by_block"] = i in cut
        a = float(area[k])
        r["equivalent_diameter"] = round(float(np.sqrt(4 * a / np.pi) if nd == 2 else np.cbrt(6 * a / np.pi)), 4)
        if spacing is not None:  # physical units: µm per pixel along each spatial axis of ``lab``
            vol = a * float(np.prod(spacing))
            r["area_um"] = round(vol, 6)
            r["equivalent_diameter_um"] = round(float(np.sqrt(4 * vol / np.pi) if nd == 2 else
                                                      np.cbrt(6 * vol / np.pi)), 6)
            cu = (np.nan,) * pad + tuple(float(v) * sp for v, sp in zip(c, spacing))
            r.update({"centroid_z_um": cu[0], "centroid_y_um": cu[1], "centroid_x_um": cu[2]})
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
    centroid in µm."""
    labels = np.asarray(labels)
    if len(axes) != labels.ndim:
        raise ValueError(f"axes {axes!r} do not match labels of shape {labels.shape}")
    if image is not None and image.shape != labels.shape:
        raise ValueError(f"image shape {image.shape} differs from labels shape {labels.shape}")
    scores = scores or {}
    cut = set(int(c) for c in cut)
    frame_axes = axes.replace("T", "")
    spacing = None
    if pixel_size:
        ps = {k.upper(): v for k, v in pixel_size.items() if v}
        if all(a in ps for a in frame_axes):
            spacing = tuple(float(ps[a]) for a in frame_axes)
    if "T" in axes:
        t = axes.index("T")
        rows = []
        for f in range(labels.shape[t]):
            rows += _frame_rows(np.take(labels, f, axis=t),
                                None if image is None else np.take(image, f, axis=t), f, scores, cut, spacing)
        return rows
    return _frame_rows(labels, image, 0, scores, cut, spacing)


def write_csv(path: str | Path, rows: Sequence[dict]) -> Path:
    """Write rows atomically (temporary file in the same folder, then rename; the file gets
    the mode a plain write would)."""
    from ._files import atomic_write

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(COLUMNS))
            w.writeheader()
            for r in rows:
                w.writerow({k: ("" if isinstance(r.get(k), float) and np.isnan(r.get(k)) else r.get(k))
                            for k in COLUMNS})

    return atomic_write(Path(path), write)
