"""Per-object measurements for the CLI's CSV and the napari plugin."""
from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
from scipy import ndimage as ndi

__all__ = ["object_table", "write_csv", "COLUMNS"]

COLUMNS = (
    "id", "frame", "area", "centroid_z", "centroid_y", "centroid_x",
    "bbox_z0", "bbox_y0", "bbox_x0", "bbox_z1", "bbox_y1", "bbox_x1",
    "mean_intensity", "score", "touches_border", "cut_by_block",
)


def _frame_rows(lab: np.ndarray, img: np.ndarray | None, frame, scores: Mapping[int, float],
                cut: set[int]) -> list[dict]:
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
        rows.append(r)
    return rows


def object_table(
    labels: np.ndarray,
    axes: str,
    image: np.ndarray | None = None,
    scores: Mapping[int, float] | None = None,
    cut: Iterable[int] = (),
) -> list[dict]:
    """One row per object and frame: id, frame (T index, or Z slice for per-slice
    results), area (pixels/voxels), centroid, bbox (start inclusive, stop
    exclusive), mean intensity of ``image`` (same axes as labels, channel
    removed), score, touches_border, cut_by_block."""
    labels = np.asarray(labels)
    if len(axes) != labels.ndim:
        raise ValueError(f"axes {axes!r} do not match labels of shape {labels.shape}")
    if image is not None and image.shape != labels.shape:
        raise ValueError(f"image shape {image.shape} differs from labels shape {labels.shape}")
    scores = scores or {}
    cut = set(int(c) for c in cut)
    if "T" in axes:
        t = axes.index("T")
        rows = []
        for f in range(labels.shape[t]):
            rows += _frame_rows(np.take(labels, f, axis=t),
                                None if image is None else np.take(image, f, axis=t), f, scores, cut)
        return rows
    return _frame_rows(labels, image, 0, scores, cut)


def write_csv(path: str | Path, rows: Sequence[dict]) -> Path:
    """Write rows atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(COLUMNS))
            w.writeheader()
            for r in rows:
                w.writerow({k: ("" if isinstance(r.get(k), float) and np.isnan(r.get(k)) else r.get(k))
                            for k in COLUMNS})
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
