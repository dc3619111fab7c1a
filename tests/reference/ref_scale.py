"""Slow, obvious twins of cellseg.scale."""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def ref_resize_labels(labels: np.ndarray, shape) -> np.ndarray:
    """Every object's indicator interpolated linearly over the *whole* output grid
    (pixel-centre convention, the image extended by its edge pixels), the largest value
    >= 0.5 wins (ties: lower id);
    objects left without a pixel get the output pixel under their centroid if it is
    background."""
    lab = np.asarray(labels)
    shape = tuple(shape)
    coords = np.meshgrid(*[(np.arange(d) + 0.5) * (n / d) - 0.5 for n, d in zip(lab.shape, shape)], indexing="ij")
    out = np.zeros(shape, lab.dtype)
    best = np.zeros(shape, np.float32)
    missing = []
    for oid in np.unique(lab[lab > 0]):
        ind = (lab == oid).astype(np.float32)
        val = ndi.map_coordinates(ind, coords, order=1, mode="nearest", prefilter=False)
        win = (val >= 0.5) & (val > best)
        if not win.any():
            missing.append(oid)
            continue
        best[win] = val[win]
        out[win] = oid
    for oid in missing:
        c = [float(np.mean(ix)) for ix in np.nonzero(lab == oid)]
        p = tuple(min(d - 1, max(0, int(round((ci + 0.5) * d / n - 0.5)))) for ci, d, n in zip(c, shape, lab.shape))
        if out[p] == 0:
            out[p] = oid
    return out

