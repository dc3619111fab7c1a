"""Shared label-image helpers. Labels are int32, 0 is background."""
from __future__ import annotations

import numpy as np

__all__ = [
    "as_labels",
    "relabel_sequential",
    "sequential",
    "bounding_boxes",
    "fill_holes",
    "remove_small",
    "check_instance_labels",
    "keep_largest_parts",
    "check_not_binary",
    "mask_stats",
    "LabelError",
]

#: an id split into at least this many separate blobs (each >= _BLOB_MIN_PX px) is not an instance
_MAX_BLOBS_PER_ID = 4
_BLOB_MIN_PX = 4


class LabelError(ValueError):
    """Raised for unusable label images (float, negative, wrong shape...)."""


def as_labels(labels, name: str = "labels", ndim: int | tuple[int, ...] | None = None) -> np.ndarray:
    """Validate a label image and return it as a C-contiguous int32 array.

    Integer images are taken as they are; float images (ImageJ/Fiji export label
    images as float32) are accepted when every value is a whole number and
    refused otherwise, naming a non-integral value (a float image with fractions
    is an intensity image or a probability map, not labels); bool is accepted as
    a single object; negative values and ids beyond int32 raise. ``name`` is used
    in the error message so callers can pass the file name.
    """
    arr = np.asarray(labels)
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if arr.ndim not in allowed:
            raise LabelError(
                f"{name}: expected a label image with {' or '.join(map(str, allowed))} "
                f"dimensions, got shape {arr.shape}"
            )
    if arr.dtype == bool:
        return np.ascontiguousarray(arr, dtype=np.int32)
    if np.issubdtype(arr.dtype, np.floating):
        arr = _integral_float_labels(arr, name)
    elif not np.issubdtype(arr.dtype, np.integer):
        raise LabelError(f"{name}: labels must be an integer image, got dtype {arr.dtype}")
    if arr.size and arr.min() < 0:
        raise LabelError(f"{name}: labels must be non-negative, found {arr.min()}")
    if arr.size and arr.max() > np.iinfo(np.int32).max:
        raise LabelError(f"{name}: label id {arr.max()} does not fit into int32")
    return np.ascontiguousarray(arr, dtype=np.int32)


def _integral_float_labels(arr: np.ndarray, name: str) -> np.ndarray:
    """A float label image whose values are all whole numbers, as int64; else :class:`LabelError`."""
    if arr.size == 0:
        return arr.astype(np.int64)
    finite = np.isfinite(arr)
    if not finite.all():
        bad = arr[~finite].flat[0]
        raise LabelError(f"{name}: labels must be whole numbers, but this {arr.dtype} image holds {bad} "
                         "(a float image, not a label image?)")
    frac = arr != np.floor(arr)
    if frac.any():
        raise LabelError(f"{name}: labels must be whole numbers, but this {arr.dtype} image holds "
                         f"{arr[frac].flat[0]:g} (a float intensity or probability image, not a label image?)")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0:
        raise LabelError(f"{name}: labels must be non-negative, found {lo:g}")
    if hi > np.iinfo(np.int32).max:
        raise LabelError(f"{name}: label id {hi:g} does not fit into int32")
    return arr.astype(np.int64)


def keep_largest_parts(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Labels where each id keeps only its largest face-connected part (the others become
    background), and the number of pixels removed. Some sources annotate a cell's cut-off
    protrusions with the cell's id; one object per id is what the training targets need.

    >>> lab = np.zeros((5, 7), np.int32); lab[1:4, 0:3] = 1; lab[2, 5] = 1; lab[0, 6] = 2
    >>> out, removed = keep_largest_parts(lab); int(out.sum()), removed
    (11, 1)
    """
    from skimage.measure import label as cc_label

    comps = cc_label(labels > 0, connectivity=1)
    if comps.max() == 0:
        return labels, 0
    # (component, id) pairs: split components that hold several ids as well
    key = comps.astype(np.int64) * (int(labels.max()) + 1) + labels
    uniq, inv, counts = np.unique(key.ravel(), return_inverse=True, return_counts=True)
    ids = uniq % (int(labels.max()) + 1)
    keep = np.zeros(uniq.size, bool)
    order = np.lexsort((-counts, ids))
    first = np.ones(order.size, bool)
    first[1:] = ids[order][1:] != ids[order][:-1]
    keep[order[first]] = True
    keep[ids == 0] = True
    out = np.where(keep[inv].reshape(labels.shape), labels, 0).astype(labels.dtype)
    return out, int(np.count_nonzero(labels) - np.count_nonzero(out))


def check_instance_labels(labels: np.ndarray, name: str = "labels") -> int:
    """Refuse a binary or semantic mask posing as instance labels; return the number of separate
    foreground blobs (face-connected, ignoring ids), for :func:`check_not_binary`.

    Raises :class:`LabelError` naming ``name`` when the ids made of ``_MAX_BLOBS_PER_ID`` (4)
    or more separate blobs of at least ``_BLOB_MIN_PX`` (4) pixels each hold at least half of
    the image's blobs: a class mask, not objects. An instance image where a few objects are
    annotated in parts (a cell and its cut-off protrusions under one id) passes. Training data
    and ``cellseg evaluate`` share this check.
    """
    from scipy import ndimage as ndi
    from skimage.measure import label as cc_label

    labels = np.asarray(labels)
    if labels.size == 0 or labels.max() == 0:
        return 0
    comps = cc_label(labels, background=0, connectivity=1)  # regions of equal id
    n = int(comps.max())
    sizes = np.bincount(comps.ravel())
    ids = np.zeros(n + 1, dtype=np.int64)
    ids[comps.ravel()] = labels.ravel()
    big = sizes[1:] >= _BLOB_MIN_PX
    per_id = np.bincount(ids[1:][big])
    worst = int(per_id.argmax()) if per_id.size else 0
    split = per_id[per_id >= _MAX_BLOBS_PER_ID].sum() if per_id.size else 0
    if per_id.size and per_id[worst] >= _MAX_BLOBS_PER_ID and 2 * split >= per_id.sum():
        raise LabelError(
            f"{name}: label {worst} consists of {int(per_id[worst])} separate blobs; this looks like a binary or "
            "semantic mask, not instance labels (one id per object). Convert it with "
            "skimage.measure.label(mask > 0) if touching objects are not merged."
        )
    return int(ndi.label(labels > 0)[1])


def mask_stats(labels: np.ndarray, name: str = "labels") -> tuple[str, int, int]:
    """``(name, values, blobs)`` of a label image for :func:`check_not_binary`, after
    :func:`check_instance_labels` (which raises for a semantic mask): ``values`` is the number
    of distinct non-zero values capped at 2, ``blobs`` the number of separate foreground blobs."""
    labels = np.asarray(labels)
    blobs = check_instance_labels(labels, name)
    fg = labels[labels != 0]
    values = 0 if fg.size == 0 else 1 if fg.min() == fg.max() else 2
    return name, values, blobs


def check_not_binary(stats, what: str = "label images") -> None:
    """Refuse a set of masks that are all binary: ``stats`` holds :func:`mask_stats` per image.

    Raises :class:`LabelError` when no image holds more than one non-zero value (0/1 or 0/255
    masks) but one of them has several separate blobs."""
    stats = list(stats)
    if not stats or max(int(v) for _, v, _ in stats) != 1:
        return
    name, _, blobs = max(stats, key=lambda t: t[2])
    if blobs > 1:
        raise LabelError(f"every one of the {len(stats)} {what} holds a single value besides 0, but e.g. {name} "
                         f"has {blobs} separate blobs of it; these look like binary masks, not instance labels "
                         "(one id per object; convert with skimage.measure.label)")


def relabel_sequential(labels: np.ndarray) -> np.ndarray:
    """Map ids to 1..n in order of first appearance of the sorted ids (0 stays 0).

    >>> import numpy as np
    >>> relabel_sequential(np.array([[0, 7, 7], [42, 0, 3]]))
    array([[0, 2, 2],
           [3, 0, 1]], dtype=int32)
    """
    return sequential(labels)[0]


def sequential(labels: np.ndarray, ndim: int | tuple[int, ...] | None = None) -> tuple[np.ndarray, int]:
    """:func:`relabel_sequential` and the number of objects: a new int32 image with ids
    ``1..n`` in ascending order of the original ids (0 stays 0), and ``n``.

    ``labels`` is checked by :func:`as_labels` (``ndim``: the dimensionalities allowed).
    Ids up to a few times the pixel count go through a lookup table; sparser ones
    through :func:`numpy.unique`.

    >>> import numpy as np
    >>> sequential(np.array([[0, 7, 7], [42, 0, 3]]))
    (array([[0, 2, 2],
           [3, 0, 1]], dtype=int32), 3)
    """
    lab = as_labels(labels, ndim=ndim)
    mx = int(lab.max()) if lab.size else 0
    if mx == 0:
        return np.zeros(lab.shape, np.int32), 0
    if mx <= 4 * lab.size + 1024:
        present = np.zeros(mx + 1, bool)
        present[lab.ravel()] = True
        present[0] = False
        n = int(present.sum())
        lut = np.zeros(mx + 1, np.int32)
        lut[present] = np.arange(1, n + 1, dtype=np.int32)
        return lut[lab], n
    ids, inv = np.unique(lab, return_inverse=True)
    inv = inv.reshape(lab.shape).astype(np.int32)
    if ids[0] != 0:
        inv += 1
    return np.ascontiguousarray(inv), int(ids.size - (1 if ids[0] == 0 else 0))


def bounding_boxes(labels: np.ndarray, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Bounding boxes of ids ``1..n`` (default: up to the largest id): ``lo``, ``hi`` int64
    ``(n, ndim)`` with ``lo <= coordinate < hi`` along every axis, as the slices of
    :func:`scipy.ndimage.find_objects`; an absent id has the empty box ``lo = hi = 0``.

    >>> import numpy as np
    >>> lo, hi = bounding_boxes(np.array([[0, 2, 2], [1, 0, 2]]))
    >>> lo.tolist(), hi.tolist()
    ([[1, 0], [0, 1]], [[2, 1], [2, 3]])
    """
    from ._labels_kernels import label_boxes

    lab = as_labels(labels)
    if n is None:
        n = int(lab.max()) if lab.size else 0
    if lab.ndim == 0 or lab.size == 0 or n <= 0:
        return np.zeros((max(int(n), 0), lab.ndim), np.int64), np.zeros((max(int(n), 0), lab.ndim), np.int64)
    return label_boxes(lab.reshape(-1), np.array(lab.shape, np.int64), int(n))


def fill_holes(labels: np.ndarray) -> np.ndarray:
    """Fill holes inside every object (per object, so touching objects are kept apart).

    For each object in id order: within its bounding box, background pixels
    that cannot reach the box's faces through pixels of other ids or background
    (face connectivity) take the object's id -- ``scipy.ndimage.binary_fill_holes``
    of the object's mask, written to background pixels only (one numba pass).
    """
    lab = as_labels(labels).copy()
    if lab.ndim == 0 or lab.size == 0 or lab.max() == 0:
        return lab
    fill_holes_inplace(lab)
    return lab


def fill_holes_inplace(lab: np.ndarray) -> None:
    """:func:`fill_holes` on a C-contiguous int32 label image, in place (no checks)."""
    from ._labels_kernels import fill_holes_2d, label_boxes
    from ._labels_kernels import fill_holes_inplace as fill_holes_nd

    nd = lab.ndim
    n = int(lab.max()) if lab.size else 0
    if n <= 0:
        return
    lo, hi = label_boxes(lab.reshape(-1), np.array(lab.shape, np.int64), n)
    if nd == 2:
        fill_holes_2d(lab, lo, hi)
    else:
        fill_holes_nd(lab.reshape(-1), np.array(lab.shape, np.int64), lo, hi)


def remove_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Set objects with fewer than ``min_size`` pixels to background.

    >>> import numpy as np
    >>> remove_small(np.array([[1, 1, 1, 0, 2]]), min_size=2)
    array([[1, 1, 1, 0, 0]], dtype=int32)
    """
    lab = as_labels(labels).copy()
    if min_size <= 0 or lab.max() == 0:
        return lab
    counts = np.bincount(lab.ravel())
    small = counts < min_size
    small[0] = False
    lab[small[lab]] = 0
    return lab


def link_by_iou(stack: np.ndarray, threshold: float = 0.3) -> tuple[np.ndarray, dict[int, int]]:
    """Give objects in consecutive slices/frames of ``stack`` (axis 0) the same id
    when they overlap with IoU ≥ ``threshold`` (greedy, best IoU first, one-to-one).

    Ids must be unique across the stack on input. Returns the relabelled stack
    and the mapping {old id: new id} for ids that changed.
    """
    out = as_labels(stack).copy()
    mapping: dict[int, int] = {}
    for z in range(1, out.shape[0]):
        prev, cur = out[z - 1], out[z]
        m = (prev > 0) & (cur > 0)
        if not m.any():
            continue
        pairs, inter = np.unique(np.stack([prev[m], cur[m]]), axis=1, return_counts=True)
        a_ids, a_cnt = np.unique(prev[prev > 0], return_counts=True)
        b_ids, b_cnt = np.unique(cur[cur > 0], return_counts=True)
        a_area = dict(zip(a_ids.tolist(), a_cnt.tolist()))
        b_area = dict(zip(b_ids.tolist(), b_cnt.tolist()))
        cand = []
        for (a, b), n in zip(pairs.T.tolist(), inter.tolist()):
            iou = n / (a_area[a] + b_area[b] - n)
            if iou >= threshold:
                cand.append((-iou, a, b))
        cand.sort()
        used_a, used_b = set(), set()
        lut = {}
        for _, a, b in cand:
            if a in used_a or b in used_b:
                continue
            used_a.add(a)
            used_b.add(b)
            lut[b] = a
        if lut:
            src = np.array(list(lut.keys()), np.int64)
            dst = np.array(list(lut.values()), np.int32)
            order = np.argsort(src)
            src, dst = src[order], dst[order]
            pos = np.searchsorted(src, cur)
            pos = np.clip(pos, 0, len(src) - 1)
            hit = src[pos] == cur
            cur[hit] = dst[pos[hit]]
            for s, d in zip(src.tolist(), dst.tolist()):
                mapping[int(s)] = int(d)
    # ids may now be chained (a→b→c): the mapping already points to the final id since
    # each slice is rewritten before the next is matched; resolve chains for reporting
    for k in list(mapping):
        v = mapping[k]
        while v in mapping and mapping[v] != v:
            v = mapping[v]
        mapping[k] = v
    return out, mapping
