"""Slow, obvious twins of the distance-map kernels (and a brute-force AP).

* :func:`normalized_distance_ref` — one ``scipy.ndimage.distance_transform_edt``
  per object on its bounding box grown by one pixel (clipped to the image, so
  pixels beyond the image border are never boundary), divided by its maximum.
* :func:`watershed_ref` — ``skimage.segmentation.watershed``.
* :func:`decode_ref` — the DistanceMap decoding pipeline written with
  scipy/skimage only (skimage watershed instead of the numba flood).
* :func:`ap_ref` — AP at IoU τ = TP / (TP + FP + FN) after an optimal
  one-to-one matching (linear_sum_assignment over the full IoU table built from
  the pixel contingency table); a stand-in until ``cellseg.metrics`` lands.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def normalized_distance_ref(labels, anisotropy=1.0):
    lab = np.asarray(labels).astype(np.int64)
    out = np.zeros(lab.shape, np.float64)
    sampling = (anisotropy, 1.0, 1.0)[-lab.ndim:] if lab.ndim == 3 else (1.0, 1.0)
    ids = [i for i in np.unique(lab) if i != 0]
    if len(ids) == 1 and (lab == ids[0]).all():
        # degenerate: one object everywhere -> the border is its boundary
        padded = np.pad(lab == ids[0], 1)
        d = ndi.distance_transform_edt(padded, sampling=sampling)
        d = d[tuple(slice(1, -1) for _ in range(lab.ndim))]
        return (d / d.max()).astype(np.float32)
    for i in ids:
        where = np.argwhere(lab == i)
        lo = np.maximum(where.min(0) - 1, 0)
        hi = np.minimum(where.max(0) + 2, lab.shape)
        sl = tuple(slice(a, b) for a, b in zip(lo, hi))
        m = lab[sl] == i
        d = ndi.distance_transform_edt(m, sampling=sampling)
        out[sl][m] = d[m] / d[m].max()
    return out.astype(np.float32)


def watershed_ref(image, markers, mask=None, connectivity=1):
    from skimage.segmentation import watershed

    return watershed(image, markers, mask=mask, connectivity=connectivity).astype(np.int32)


def decode_ref(dist, fgp, anisotropy, p):
    """DistanceMap decoding with scipy/skimage only. dist, fgp: (*spatial) float."""
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    nd = dist.ndim
    fg = fgp.astype(np.float32) > np.float32(p.fg_thresh)
    d = dist.astype(np.float64)
    if p.smooth_sigma > 0:
        sig = [p.smooth_sigma] * nd
        if nd == 3:
            sig[0] = p.smooth_sigma / anisotropy
        d = ndi.gaussian_filter(d, sig, mode="nearest")
    d[~fg] = 0
    if fg.any():
        cand = h_maxima(d, p.h).astype(bool) & fg & (d > float(np.float32(p.marker_thresh)))
    else:
        cand = np.zeros_like(fg)
    markers, _ = ndi.label(cand, structure=np.ones((3,) * nd))
    assert p.min_distance == 0, "reference covers min_distance = 0 only"
    lab = watershed(-d, markers, mask=fg, connectivity=1)
    # remove small, relabel 1..n in increasing old id
    out = np.zeros(lab.shape, np.int32)
    k = 0
    for i in np.unique(lab):
        if i == 0:
            continue
        m = lab == i
        if m.sum() >= p.min_size:
            k += 1
            out[m] = k
    return out


def _ious(y_true, y_pred):
    """IoU of every (true, predicted) pair from the pixel contingency table."""
    t = y_true.ravel().astype(np.int64)
    p = y_pred.ravel().astype(np.int64)
    t_ids = np.unique(t[t != 0])
    p_ids = np.unique(p[p != 0])
    iou = np.zeros((len(t_ids), len(p_ids)))
    if not len(t_ids) or not len(p_ids):
        return iou
    both = (t != 0) & (p != 0)
    pairs, inter = np.unique(np.stack([t[both], p[both]]), axis=1, return_counts=True)
    at = dict(zip(*np.unique(t[t != 0], return_counts=True)))
    ap = dict(zip(*np.unique(p[p != 0], return_counts=True)))
    ti = {v: k for k, v in enumerate(t_ids)}
    pi = {v: k for k, v in enumerate(p_ids)}
    for (i, j), n in zip(pairs.T, inter):
        iou[ti[i], pi[j]] = n / (at[i] + ap[j] - n)
    return iou


def ap_ref(y_true, y_pred, thresh=0.5):
    """AP at IoU ``thresh`` (TP / (TP + FP + FN)); 1.0 when both are empty."""
    from scipy.optimize import linear_sum_assignment

    iou = _ious(np.asarray(y_true), np.asarray(y_pred))
    nt, np_ = iou.shape
    if nt == 0 and np_ == 0:
        return 1.0
    if nt == 0 or np_ == 0:
        return 0.0
    ok = iou >= thresh
    r, c = linear_sum_assignment(-(ok * (1 + iou)))
    tp = int(ok[r, c].sum())
    return tp / (tp + (np_ - tp) + (nt - tp))
