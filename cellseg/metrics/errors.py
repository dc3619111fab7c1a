"""Error taxonomy of a segmentation against ground truth: which objects are correct, false
positives, false negatives, merges and splits, as an image and as counts.

The napari plugin's Evaluate widget shows the image as a layer; from Python::

    >>> import numpy as np
    >>> from cellseg.metrics.errors import error_categories
    >>> gt = np.zeros((8, 8), np.int32); gt[1:4, 1:4] = 1; gt[5:8, 5:8] = 2
    >>> pred = np.zeros_like(gt); pred[1:4, 1:4] = 7
    >>> error_categories(gt, pred)[1]
    {'correct': 1, 'false positive': 0, 'false negative': 1, 'merge': 0, 'split': 0}
"""
from __future__ import annotations

import numpy as np

from .matching import overlap_table

__all__ = ["ERROR_CATEGORIES", "error_categories", "error_categories_frame", "paired_frames"]

#: Categories of the error map (values of the evaluation Labels layer).
ERROR_CATEGORIES = {
    1: "correct",          # predicted object matched one-to-one to a GT object at IoU >= τ
    2: "false positive",   # predicted object matched to nothing (and not a merge / split part)
    3: "false negative",   # GT object matched to nothing (not merged, not split); painted on GT pixels
    4: "merge",            # predicted object holding the majority (> 50 %) of >= 2 GT objects
    5: "split",            # predicted fragments, >= 2 of them, each mostly (> 50 %) inside one GT object
}


def _paint(y: np.ndarray, ids: np.ndarray, cats: np.ndarray) -> np.ndarray:
    """Image of ``cats[i]`` where ``y == ids[i]`` (``ids`` sorted), 0 elsewhere."""
    out = np.zeros(y.shape, np.int32)
    if ids.size == 0:
        return out
    pos = np.clip(np.searchsorted(ids, y), 0, len(ids) - 1)
    hit = (ids[pos] == y) & (y != 0)
    out[hit] = cats[pos[hit]]
    return out


def paired_frames(y_true, y_pred, axes: str | None = None):
    """Pairs of frames along T when ``axes`` has T (time-lapse labels keep ids over
    time, so objects are compared frame by frame), else the one pair."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"ground truth and prediction differ in shape: {y_true.shape} vs {y_pred.shape}")
    if axes and "T" in axes and len(axes) == y_true.ndim:
        t = axes.index("T")
        return [(np.take(y_true, i, t), np.take(y_pred, i, t)) for i in range(y_true.shape[t])], t
    return [(y_true, y_pred)], None


def error_categories(y_true: np.ndarray, y_pred: np.ndarray, iou_thresh: float = 0.5,
                     axes: str | None = None) -> tuple[np.ndarray, dict]:
    """Error map of a prediction against ground truth (frame by frame along T when
    ``axes`` has T); see :func:`error_categories_frame`."""
    pairs, t = paired_frames(y_true, y_pred, axes)
    maps: list[np.ndarray] = []
    total: dict[str, int] = {}
    for gt, pr in pairs:
        m, c = error_categories_frame(gt, pr, iou_thresh)
        maps.append(m)
        for k, v in c.items():
            total[k] = total.get(k, 0) + v
    return (maps[0] if t is None else np.stack(maps, axis=t)), total


def error_categories_frame(y_true: np.ndarray, y_pred: np.ndarray, iou_thresh: float = 0.5) -> tuple[np.ndarray, dict]:
    """Error map of a prediction against ground truth, from the overlap table
    (:func:`cellseg.metrics.overlap_table`).

    With ``O[g, p]`` the number of pixels shared by GT object ``g`` and predicted
    object ``p`` (areas ``|g|``, ``|p|``):

    * **merge**: ``p`` holds more than half of each of at least two GT objects
      (``O[g, p] > |g| / 2`` for ≥ 2 ``g``), matched or not.
    * **split**: a GT object ``g`` contains more than half of each of at least two
      predicted objects (``O[g, p] > |p| / 2`` for ≥ 2 ``p``); those fragments are
      marked split (unless they are merges).
    * **correct**: any other ``p`` matched to a GT object by the optimal one-to-one
      matching at IoU ≥ ``iou_thresh`` (the matching behind AP).
    * **false positive**: any other (unmatched) predicted object.
    * **false negative**: an unmatched GT object that is neither held by a merge
      object nor split; painted on its GT pixels, under the predicted objects.

    Returns ``(map, counts)``: an int32 image with the values of
    :data:`ERROR_CATEGORIES` and the number of objects per category (correct, FP
    and merge count predicted objects; FN and split count GT objects).
    """
    table = overlap_table(y_true, y_pred)
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    tid, ta, pid, pa = table.true_ids, table.true_area, table.pred_ids, table.pred_area
    pt, pp, inter = table.pair_true, table.pair_pred, table.inter
    nt, npd = len(tid), len(pid)
    holds_gt = inter * 2 > ta[pt]        # p holds the majority of g
    in_gt = inter * 2 > pa[pp]           # p lies mostly in g
    p_merge = np.bincount(pp[holds_gt], minlength=npd) >= 2
    t_split = np.bincount(pt[in_gt], minlength=nt) >= 2
    p_split = np.zeros(npd, bool)
    p_split[pp[in_gt & t_split[pt]]] = True
    p_split &= ~p_merge
    t_merged = np.zeros(nt, bool)
    t_merged[pt[holds_gt & p_merge[pp]]] = True
    m = table.matching(float(iou_thresh), report_matches=True)
    t_matched = np.zeros(nt, bool)
    p_matched = np.zeros(npd, bool)
    if m.matched_pairs:
        mp = np.asarray(m.matched_pairs, np.int64)
        t_matched[np.searchsorted(tid, mp[:, 0])] = True
        p_matched[np.searchsorted(pid, mp[:, 1])] = True
    p_correct = p_matched & ~p_merge & ~p_split
    p_fp = ~p_matched & ~p_merge & ~p_split
    t_fn = ~t_matched & ~t_merged & ~t_split
    pcat = np.zeros(npd, np.int32)
    pcat[p_correct] = 1
    pcat[p_fp] = 2
    pcat[p_split] = 5
    pcat[p_merge] = 4
    out = _paint(y_true, tid, np.where(t_fn, 3, 0).astype(np.int32))
    pc = _paint(y_pred, pid, pcat)
    out = np.where(pc > 0, pc, out)
    counts = {
        "correct": int(p_correct.sum()),
        "false positive": int(p_fp.sum()),
        "false negative": int(t_fn.sum()),
        "merge": int(p_merge.sum()),
        "split": int(t_split.sum()),
    }
    return out, counts
