"""Instance matching metrics: overlap tables, IoU/IoT/IoP, one-to-one matching,
TP/FP/FN, precision, recall, F1, "accuracy" (= AP at a threshold) and panoptic quality.

Conventions
-----------
* **AP at τ** ("accuracy" here, as in StarDist) is ``TP / (TP + FP + FN)`` after
  an optimal one-to-one matching of ground-truth and predicted objects at
  ``score >= τ``. This is the Data Science Bowl 2018 / StarDist / Cellpose
  convention, *not* the area under a precision-recall curve (COCO AP).
* Results are designed to be identical to ``stardist.matching`` (0.9.2):

  - a pair matches iff ``float32(score) >= float32(thresh)``: the comparison is
    **non-strict** and happens in single precision, because StarDist computes the
    score matrix in float32 and NumPy compares a float32 array with a Python
    float in float32. With exact rational scores this only differs from
    ``score >= thresh`` for pairs within about one float32 ulp (~6e-8) of the
    threshold; we mirror it so TP/FP/FN always equal StarDist's;
  - the matching maximises first the number of pairs with score >= τ and then,
    among those matchings, the sum of the scores of *all* paired objects
    (StarDist's cost ``-[s >= τ] - s / (2 n)`` for ``linear_sum_assignment``).
    TP, FP and FN only depend on the first criterion and are therefore unique;
    we solve the same problem on the sparse overlap graph (see
    :func:`_match_at`), so the matched pairs are StarDist's too except when two
    optimal matchings tie exactly, where either may be reported;
  - ratios are 0 when TP is 0 (so an empty prediction against an empty ground
    truth gives precision = recall = accuracy = F1 = 0, like StarDist);
  - ``mean_matched_score`` is the mean score of the TPs, ``mean_true_score`` the
    sum of TP scores divided by the number of ground-truth objects and
    ``panoptic_quality`` the sum divided by ``TP + FP/2 + FN/2`` (Kirillov et
    al. 2019, Eq. 1).

  Scores are reported in float64 from the exact integer pixel counts (StarDist
  reports float32 sums), so score averages agree with StarDist to ~1e-7, counts
  and count ratios exactly.
* Thresholds must lie in ``(0, 1]``: at 0 StarDist pairs objects that do not
  overlap at all, which is not a match in any useful sense.

Everything starts from one :class:`OverlapTable` per image pair (a sparse
joint histogram of (true id, pred id) computed by a numba kernel in one pass
over the pixels); any number of thresholds and criteria reuse it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from cellseg.labels import LabelError

__all__ = [
    "DEFAULT_THRESHOLDS",
    "CRITERIA",
    "OverlapTable",
    "Matching",
    "DatasetMatching",
    "AveragePrecision",
    "overlap_table",
    "matching",
    "matching_dataset",
    "average_precision",
    "check_label_pair",
]

#: IoU thresholds 0.5, 0.55, ..., 0.95 (the DSB 2018 / COCO range).
DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
#: matching criteria: intersection over union / over true (GT) area / over predicted area.
CRITERIA = ("iou", "iot", "iop")

_INT32_MAX = int(np.iinfo(np.int32).max)
_INT64_MAX = int(np.iinfo(np.int64).max)
# ids up to max(this, number of pixels) index direct id -> counter arrays in the
# kernel (12 bytes per id, so at most ~3x the int32 image); larger ids are
# compacted first with np.unique (slower, but never allocates by id value)
_DIRECT_ID_LIMIT = 1 << 22


# --------------------------------------------------------------------------- validation


def _where(arg: str, name: str | None) -> str:
    return f"{arg} ({name})" if name else arg


def _check_labels(y: Any, arg: str, name: str | None = None) -> np.ndarray:
    """An integer (or bool) 2D/3D array; raises LabelError naming ``arg``/``name``."""
    where = _where(arg, name)
    if y is None:
        raise LabelError(f"{where}: expected a label image, got None")
    arr = np.asarray(y)
    if arr.dtype == bool:
        return arr
    if not np.issubdtype(arr.dtype, np.integer):
        raise LabelError(
            f"{where}: labels must be an integer image, got dtype {arr.dtype} "
            "(float images are not label images; cast explicitly if you are sure)"
        )
    if arr.ndim not in (2, 3):
        raise LabelError(f"{where}: expected a 2D (Y, X) or 3D (Z, Y, X) label image, got shape {arr.shape}")
    return arr


def check_label_pair(y_true: Any, y_pred: Any, name: str | None = None, *,
                     arg_names: tuple[str, str] = ("y_true", "y_pred")) -> tuple[np.ndarray, np.ndarray]:
    """Validate a (ground truth, prediction) pair of label images.

    Both must be integer (or bool) arrays with 2 or 3 dimensions and the same
    shape. Negative ids are rejected later, when the pixels are scanned.
    ``name`` (e.g. a file name) and ``arg_names`` appear in error messages.
    """
    a_t, a_p = arg_names
    t = _check_labels(y_true, a_t, name)
    p = _check_labels(y_pred, a_p, name)
    if t.shape != p.shape:
        raise LabelError(
            f"{_where(a_p, name)}: shape {p.shape} differs from {a_t} shape {t.shape}"
        )
    return t, p


def _flat_int32(arr: np.ndarray, where: str) -> tuple[np.ndarray, int, np.ndarray | None]:
    """1-D contiguous int32 copy/view of ``arr`` for the kernel.

    Returns ``(flat, max_id, id_map)``; ``id_map`` is None when the kernel sees
    the original ids, else ``id_map[k]`` is the original id of compact id ``k``.
    """
    from cellseg.metrics._matching_kernels import minmax_int32

    dt = arr.dtype
    if dt == np.int32:
        flat = np.ascontiguousarray(arr).reshape(-1)
    elif dt.kind == "b" or dt.itemsize <= 2:
        flat = arr.astype(np.int32).reshape(-1)
    else:  # (u)int32/64: check the range before narrowing
        if arr.size == 0:
            flat = np.zeros(0, np.int32)
        else:
            lo, hi = arr.min(), arr.max()
            if lo < 0:
                raise LabelError(f"{where}: labels must be non-negative, found {int(lo)}")
            if int(hi) > _INT64_MAX:
                raise LabelError(f"{where}: label id {int(hi)} is larger than the int64 maximum")
            if int(hi) <= _INT32_MAX:
                flat = arr.astype(np.int32).reshape(-1)
            else:
                return _compact(arr.reshape(-1), where)
    lo, hi = minmax_int32(flat)
    if lo < 0:
        raise LabelError(f"{where}: labels must be non-negative, found {int(lo)}")
    if hi > max(_DIRECT_ID_LIMIT, flat.size):
        return _compact(flat, where)
    return flat, int(hi), None


def _compact(flat: np.ndarray, where: str) -> tuple[np.ndarray, int, np.ndarray]:
    ids, inv = np.unique(flat, return_inverse=True)
    inv = inv.reshape(-1).astype(np.int32)
    if ids.size and ids[0] == 0:
        id_map = ids.astype(np.int64)
    else:
        inv += 1
        id_map = np.concatenate([[0], ids]).astype(np.int64)
    return inv, int(id_map.size - 1), id_map


def _check_criterion(criterion: Any) -> str:
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    return criterion


def _check_thresholds(thresh: Any) -> tuple[tuple[float, ...], bool]:
    """Return (thresholds, single) with every threshold a float in (0, 1]."""
    single = np.isscalar(thresh) or (isinstance(thresh, np.ndarray) and thresh.ndim == 0)
    values = [thresh] if single else list(thresh)
    if not values:
        raise ValueError("thresh: expected a number or a non-empty sequence of numbers")
    out = []
    for v in values:
        if isinstance(v, (bool, np.bool_, str, bytes)):
            raise ValueError(f"thresh: expected numbers in (0, 1], got {v!r}")
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"thresh: expected numbers in (0, 1], got {v!r}") from None
        if not (0.0 < f <= 1.0):
            raise ValueError(f"thresh: every threshold must be in (0, 1], got {v!r}")
        out.append(f)
    return tuple(out), bool(single)


# --------------------------------------------------------------------------- overlap table


@dataclass(frozen=True, eq=False)
class OverlapTable:
    """Sparse overlap of a ground-truth and a predicted label image.

    true_ids, pred_ids : int64, sorted ids of the objects present (0 excluded)
    true_area, pred_area : int64 pixel counts of those objects
    pair_true, pair_pred : int32 indices into ``true_ids`` / ``pred_ids`` of
        every pair of objects sharing at least one pixel, sorted by (true, pred)
    inter : int64 number of shared pixels of each pair
    n_pixels : number of pixels (voxels) of the images
    name : optional image name used in messages and reports
    """

    true_ids: np.ndarray
    true_area: np.ndarray
    pred_ids: np.ndarray
    pred_area: np.ndarray
    pair_true: np.ndarray
    pair_pred: np.ndarray
    inter: np.ndarray
    n_pixels: int
    name: str | None = None

    @property
    def n_true(self) -> int:
        return int(self.true_ids.shape[0])

    @property
    def n_pred(self) -> int:
        return int(self.pred_ids.shape[0])

    @property
    def n_pairs(self) -> int:
        return int(self.inter.shape[0])

    def scores(self, criterion: str = "iou") -> np.ndarray:
        """float64 score of every overlapping pair: IoU, IoT (inter / true area) or IoP."""
        criterion = _check_criterion(criterion)
        inter = self.inter.astype(np.float64)
        at = self.true_area[self.pair_true]
        ap = self.pred_area[self.pair_pred]
        if criterion == "iou":
            return inter / (at + ap - self.inter)
        if criterion == "iot":
            return inter / at
        return inter / ap

    def to_dense(self) -> np.ndarray:
        """Dense ``(n_true + 1, n_pred + 1)`` int64 overlap matrix in compact index
        order (row/column 0 = background), for inspection on small images."""
        m = np.zeros((self.n_true + 1, self.n_pred + 1), np.int64)
        m[self.pair_true + 1, self.pair_pred + 1] = self.inter
        m[1:, 0] = self.true_area - np.bincount(self.pair_true, self.inter, self.n_true).astype(np.int64)
        m[0, 1:] = self.pred_area - np.bincount(self.pair_pred, self.inter, self.n_pred).astype(np.int64)
        m[0, 0] = self.n_pixels - m[1:, :].sum() - m[0, 1:].sum()
        return m

    def matching(self, thresh=0.5, criterion: str = "iou", report_matches: bool = False):
        """:func:`matching` from this table (a :class:`Matching` or a list of them)."""
        thresholds, single = _check_thresholds(thresh)
        res = _matchings(self, thresholds, _check_criterion(criterion), report_matches)
        return res[0] if single else res


def overlap_table(y_true, y_pred, *, name: str | None = None) -> OverlapTable:
    """Compute the sparse :class:`OverlapTable` of two label images.

    Any integer dtype (or bool) is accepted, ids need not be sequential, 2D or
    3D; the two images must have the same shape. ``name`` goes into error
    messages. One pass over the pixels (numba), memory proportional to the
    largest id (ids are compacted first when they are much larger than the
    image) plus the number of overlapping pairs.
    """
    return named_overlap_table(y_true, y_pred, name, ("y_true", "y_pred"))


def named_overlap_table(y_true, y_pred, name, arg_names) -> OverlapTable:
    """:func:`overlap_table` whose error messages call the two images ``arg_names``."""
    from cellseg.metrics._matching_kernels import overlap_int32

    t, p = check_label_pair(y_true, y_pred, name, arg_names=arg_names)
    ft, mt, map_t = _flat_int32(t, _where(arg_names[0], name))
    fp, mp, map_p = _flat_int32(p, _where(arg_names[1], name))
    ids_t, area_t, ids_p, area_p, pair_t, pair_p, inter = overlap_int32(ft, fp, mt, mp)
    if map_t is not None:
        ids_t = map_t[ids_t]
    if map_p is not None:
        ids_p = map_p[ids_p]
    return OverlapTable(ids_t, area_t, ids_p, area_p, pair_t, pair_p, inter, int(t.size), name)


# --------------------------------------------------------------------------- matching core


def _match_at(pt, pp, s64, s32, n_t: int, n_p: int, t32: np.float32):
    """Optimal one-to-one matching at one threshold on the sparse overlap graph.

    Solves StarDist's problem — maximise the number of pairs with
    ``s32 >= t32``, then the sum of the scores of all paired objects — without
    the dense ``n_true x n_pred`` assignment:

    1. an above-threshold pair whose two objects have no other above-threshold
       pair is in every optimal matching (dropping it loses one match that
       nothing can win back), so it is fixed and its objects removed;
    2. what is left splits into connected components of the graph of
       overlapping (score > 0) pairs — non-overlapping pairs score 0 and add
       nothing — and only components holding an above-threshold pair matter;
       each is solved exactly by ``linear_sum_assignment`` with StarDist's cost
       ``-[s >= τ] - s / (2 n_c)``.

    Returns ``(tp, score_sum, idx)`` with ``idx`` the indices (into the pair
    arrays) of the matched pairs.
    """
    above = np.flatnonzero(s32 >= t32)
    if above.size == 0:
        return 0, 0.0, above
    at, ap = pt[above], pp[above]
    deg_t = np.bincount(at, minlength=n_t)
    deg_p = np.bincount(ap, minlength=n_p)
    fixed = (deg_t[at] == 1) & (deg_p[ap] == 1)
    if fixed.all():
        return int(above.size), float(np.sum(s64[above])), above

    from scipy.optimize import linear_sum_assignment
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    chosen = [above[fixed]]
    free_t = np.ones(n_t, bool)
    free_p = np.ones(n_p, bool)
    free_t[at[fixed]] = False
    free_p[ap[fixed]] = False
    keep = np.flatnonzero(free_t[pt] & free_p[pp])  # pairs among the remaining objects
    et, ep = pt[keep], pp[keep]
    n_nodes = n_t + n_p
    graph = coo_matrix((np.ones(keep.size, np.int8), (et, n_t + ep)), shape=(n_nodes, n_nodes))
    _, comp = connected_components(graph, directed=False)
    amb = above[~fixed]
    wanted = np.unique(comp[pt[amb]])
    pair_comp = comp[et]
    order = np.argsort(pair_comp, kind="stable")
    sorted_comp = pair_comp[order]
    for c in wanted:
        lo, hi = np.searchsorted(sorted_comp, [c, c + 1])
        sel = keep[order[lo:hi]]  # pair indices of this component
        rows, r_inv = np.unique(pt[sel], return_inverse=True)
        cols, c_inv = np.unique(pp[sel], return_inverse=True)
        sc32 = np.zeros((rows.size, cols.size), np.float32)
        sc32[r_inv, c_inv] = s32[sel]
        pidx = np.full((rows.size, cols.size), -1, np.int64)
        pidx[r_inv, c_inv] = sel
        n_c = min(rows.size, cols.size)
        ok = sc32 >= t32
        cost = -ok.astype(np.float64) - sc32.astype(np.float64) / (2 * n_c)
        r, k = linear_sum_assignment(cost)
        good = ok[r, k]
        chosen.append(pidx[r[good], k[good]])
    idx = np.sort(np.concatenate(chosen))
    return int(idx.size), float(np.sum(s64[idx])), idx


def _ratio(x, y) -> float:
    return x / y if y > 0 else 0.0


def _derived(tp: int, fp: int, fn: int, n_true: int, score_sum: float) -> dict[str, float]:
    """StarDist's formulas: ratios are 0 when tp == 0."""
    if tp > 0:
        precision = tp / (tp + fp)
        recall = tp / (tp + fn)
        accuracy = tp / (tp + fp + fn)
        f1 = 2 * tp / (2 * tp + fp + fn)
    else:
        precision = recall = accuracy = f1 = 0.0
    return dict(
        precision=float(precision),
        recall=float(recall),
        accuracy=float(accuracy),
        f1=float(f1),
        mean_true_score=float(_ratio(score_sum, n_true)),
        mean_matched_score=float(_ratio(score_sum, tp)),
        panoptic_quality=float(_ratio(score_sum, tp + fp / 2 + fn / 2)),
    )


@dataclass(frozen=True)
class _MatchingStats:
    """The fields and ``ap`` shared by :class:`Matching` and :class:`DatasetMatching`."""

    criterion: str
    thresh: float
    fp: int
    tp: int
    fn: int
    precision: float
    recall: float
    accuracy: float
    f1: float
    n_true: int
    n_pred: int
    mean_true_score: float
    mean_matched_score: float
    panoptic_quality: float

    @property
    def ap(self) -> float:
        """Alias of ``accuracy``: AP at ``thresh`` = TP / (TP + FP + FN)."""
        return self.accuracy

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class Matching(_MatchingStats):
    """Matching statistics of one image pair at one threshold.

    ``accuracy`` is AP at ``thresh``: TP / (TP + FP + FN) after optimal
    one-to-one matching (DSB 2018 / StarDist / Cellpose convention).
    ``matched_pairs`` / ``matched_scores`` (only with ``report_matches=True``)
    list the true positives as ``(true id, pred id)`` sorted by true id, and
    their scores. Unlike StarDist, sub-threshold assignments are not listed.
    """

    matched_pairs: tuple[tuple[int, int], ...] | None = field(default=None, repr=False)
    matched_scores: tuple[float, ...] | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        if self.matched_pairs is None:
            d.pop("matched_pairs")
            d.pop("matched_scores")
        else:
            assert self.matched_scores is not None  # set together with matched_pairs
            d["matched_pairs"] = [list(p) for p in self.matched_pairs]
            d["matched_scores"] = list(self.matched_scores)
        return d


@dataclass(frozen=True)
class DatasetMatching(_MatchingStats):
    """Matching statistics pooled over several image pairs at one threshold.

    With ``by_image=False`` TP/FP/FN and the TP score sum are pooled over all
    images and the ratios computed from the pooled values. With
    ``by_image=True`` precision, recall, accuracy, F1 and the score averages
    are the means of the per-image values (counts are still summed). Same
    definitions as ``stardist.matching.matching_dataset``.
    """

    by_image: bool
    n_images: int


class _Counts:
    """Per-image, per-threshold raw counts (what pooling needs)."""

    __slots__ = ("tp", "n_true", "n_pred", "score_sum", "idx")

    def __init__(self, tp, n_true, n_pred, score_sum, idx):
        self.tp, self.n_true, self.n_pred, self.score_sum, self.idx = tp, n_true, n_pred, score_sum, idx


def table_counts(table: OverlapTable, thresholds: Sequence[float], criterion: str) -> list[_Counts]:
    """The matching counts of one overlap table at each threshold."""
    s64 = table.scores(criterion)
    s32 = s64.astype(np.float32)
    out = []
    for thr in thresholds:
        tp, ssum, idx = _match_at(table.pair_true, table.pair_pred, s64, s32,
                                  table.n_true, table.n_pred, np.float32(thr))
        out.append(_Counts(tp, table.n_true, table.n_pred, ssum, idx))
    return out


def matching_from_counts(c: _Counts, thr: float, criterion: str, table=None, s64=None) -> Matching:
    """The :class:`Matching` of one image at ``thr`` from its counts (the matched pairs when ``table`` is given)."""
    fp, fn = c.n_pred - c.tp, c.n_true - c.tp
    pairs = scores = None
    if table is not None:
        pairs = tuple(
            (int(table.true_ids[table.pair_true[i]]), int(table.pred_ids[table.pair_pred[i]])) for i in c.idx
        )
        scores = tuple(float(s64[i]) for i in c.idx)
    return Matching(criterion=criterion, thresh=thr, fp=fp, tp=c.tp, fn=fn, n_true=c.n_true, n_pred=c.n_pred,
                    matched_pairs=pairs, matched_scores=scores,
                    **_derived(c.tp, fp, fn, c.n_true, c.score_sum))


def _matchings(table: OverlapTable, thresholds, criterion, report_matches) -> list[Matching]:
    counts = table_counts(table, thresholds, criterion)
    s64 = table.scores(criterion) if report_matches else None
    return [
        matching_from_counts(c, thr, criterion, table if report_matches else None, s64)
        for c, thr in zip(counts, thresholds)
    ]


def matching(y_true, y_pred, thresh=0.5, criterion: str = "iou", report_matches: bool = False, *,
             name: str | None = None):
    """Match the objects of a ground-truth and a predicted label image.

    Parameters
    ----------
    y_true, y_pred : integer (or bool) label images of the same shape, 2D or 3D;
        0 is background, ids need not be sequential, any integer dtype.
    thresh : float in (0, 1] or a sequence of them.
    criterion : ``"iou"`` (intersection over union), ``"iot"`` (intersection
        over the true object's area) or ``"iop"`` (over the predicted object's).
    report_matches : also return the matched ``(true id, pred id)`` pairs and
        their scores.
    name : image name for error messages.

    Returns
    -------
    :class:`Matching` for a scalar ``thresh``, else a list of them (one
    overlap table is computed for all thresholds).

    ``accuracy`` is **AP at τ = TP / (TP + FP + FN)** with a pair counted as TP
    iff its score is ``>= thresh`` (compared in float32, see the module notes)
    under the optimal one-to-one matching — the DSB 2018 / StarDist / Cellpose
    convention. TP/FP/FN equal ``stardist.matching.matching``'s.

    Examples
    --------
    >>> import numpy as np
    >>> gt = np.zeros((8, 8), np.int32); gt[1:4, 1:4] = 1; gt[5:8, 5:8] = 2
    >>> pred = np.zeros_like(gt); pred[1:4, 1:3] = 7   # 6 of object 1's 9 pixels: IoU 2/3
    >>> m = matching(gt, pred, thresh=0.5)
    >>> (m.tp, m.fp, m.fn), round(m.accuracy, 3)
    ((1, 0, 1), 0.5)
    >>> [r.tp for r in matching(gt, pred, thresh=[0.5, 0.7])]   # one overlap table, two thresholds
    [1, 0]
    """
    crit = _check_criterion(criterion)
    thresholds, single = _check_thresholds(thresh)
    table = overlap_table(y_true, y_pred, name=name)
    res = _matchings(table, thresholds, crit, report_matches)
    return res[0] if single else res


def iter_label_pairs(ys_true, ys_pred, names, arg_names=("ys_true", "ys_pred")):
    """Yield (y_true, y_pred, name) one at a time; lengths must agree."""
    it_t, it_p = iter(ys_true), iter(ys_pred)
    it_n = iter(names) if names is not None else None
    k = 0
    while True:
        t = next(it_t, _END)
        p = next(it_p, _END)
        if t is _END or p is _END:
            if t is not p:
                longer = arg_names[0] if p is _END else arg_names[1]
                raise ValueError(f"{arg_names[0]} and {arg_names[1]} have different lengths "
                                 f"({longer} has more than {k} items)")
            return
        n = next(it_n, None) if it_n is not None else None
        yield t, p, (n if n is not None else f"#{k}")
        k += 1


_END = object()


def pool_counts(per_image: list[_Counts], thr: float, criterion: str, by_image: bool) -> DatasetMatching:
    """The :class:`DatasetMatching` at ``thr`` of the counts of several images."""
    n = len(per_image)
    if n == 0:
        raise ValueError("matching_dataset: no image pairs given")
    tp = sum(c.tp for c in per_image)
    n_true = sum(c.n_true for c in per_image)
    n_pred = sum(c.n_pred for c in per_image)
    fp, fn = n_pred - tp, n_true - tp
    if by_image:
        ds = [_derived(c.tp, c.n_pred - c.tp, c.n_true - c.tp, c.n_true, c.score_sum) for c in per_image]
        derived = {k: math.fsum(d[k] for d in ds) / n for k in ds[0]}
    else:
        derived = _derived(tp, fp, fn, n_true, math.fsum(c.score_sum for c in per_image))
    return DatasetMatching(criterion=criterion, thresh=thr, fp=fp, tp=tp, fn=fn, n_true=n_true, n_pred=n_pred,
                           by_image=bool(by_image), n_images=n, **derived)


def matching_dataset(ys_true: Iterable, ys_pred: Iterable, thresh=DEFAULT_THRESHOLDS, criterion: str = "iou",
                     by_image: bool = False, *, names: Sequence[str] | None = None):
    """Matching statistics over a data set of image pairs.

    ``ys_true`` / ``ys_pred`` are iterables of label images (same length), taken
    pairwise one at a time (only the small overlap counts are kept). One
    overlap table per pair serves every threshold. ``thresh`` defaults to
    0.5:0.05:0.95; a scalar gives one :class:`DatasetMatching`, a sequence a
    list. ``by_image``: see :class:`DatasetMatching`. ``names`` label the
    pairs in error messages (default ``#0``, ``#1``...).

    Same definitions as ``stardist.matching.matching_dataset`` (pooled TP/FP/FN
    identical); ``accuracy`` is AP at τ = TP / (TP + FP + FN).
    """
    crit = _check_criterion(criterion)
    thresholds, single = _check_thresholds(thresh)
    per_thr: list[list[_Counts]] = [[] for _ in thresholds]
    for t, p, nm in iter_label_pairs(ys_true, ys_pred, names):
        table = overlap_table(t, p, name=nm)
        for acc, c in zip(per_thr, table_counts(table, thresholds, crit)):
            acc.append(c)
    res = [pool_counts(acc, thr, crit, by_image) for acc, thr in zip(per_thr, thresholds)]
    return res[0] if single else res


@dataclass(frozen=True)
class AveragePrecision:
    """AP (= TP / (TP + FP + FN)) at each threshold and its mean.

    ``mean_ap`` is the mean over ``thresholds`` (by default 0.5:0.05:0.95,
    the DSB 2018 score). For several images TP/FP/FN are pooled first.
    Unpacks as ``(ap per threshold, mean AP)``::

        ap, mean_ap = average_precision(ys_true, ys_pred)

    :meth:`at` looks up the AP of one threshold.
    """

    thresholds: tuple[float, ...]
    ap: tuple[float, ...]
    mean_ap: float
    criterion: str
    n_images: int

    def __iter__(self):
        return iter((self.ap, self.mean_ap))

    def at(self, thr: float) -> float:
        """AP at threshold ``thr`` (one of :attr:`thresholds`, compared to 1e-9)."""
        for t, a in zip(self.thresholds, self.ap):
            if abs(t - thr) < 1e-9:
                return a
        raise KeyError(f"threshold {thr} not evaluated; have {self.thresholds}")

    def to_dict(self) -> dict[str, Any]:
        return {"thresholds": list(self.thresholds), "ap": list(self.ap), "mean_ap": self.mean_ap,
                "criterion": self.criterion, "n_images": self.n_images}


_UNSET = object()


def average_precision(ys_true, ys_pred, thresholds=DEFAULT_THRESHOLDS, criterion: str = "iou", *,
                      thresh=_UNSET, name: str | None = None) -> AveragePrecision:
    """AP at each threshold (TP / (TP + FP + FN) after optimal one-to-one
    matching at score >= τ: the DSB 2018 / StarDist / Cellpose convention, not
    the area under a precision-recall curve) and the mean over the thresholds
    (default 0.5:0.05:0.95).

    ``ys_true`` / ``ys_pred``: one pair of label arrays, or two sequences (lists
    or tuples) of label arrays whose TP/FP/FN are pooled over the images.
    ``thresh`` is accepted as another name for ``thresholds`` (as in
    :func:`matching`); giving both raises. The result unpacks as
    ``(ap per threshold, mean AP)``; see :class:`AveragePrecision`.
    """
    if thresh is not _UNSET:
        if thresholds is not DEFAULT_THRESHOLDS:
            raise ValueError("average_precision: give either thresholds or thresh, not both")
        thresholds = thresh
    crit = _check_criterion(criterion)
    thrs, _ = _check_thresholds(thresholds)
    if isinstance(ys_true, (list, tuple)) or isinstance(ys_pred, (list, tuple)):
        if not (isinstance(ys_true, (list, tuple)) and isinstance(ys_pred, (list, tuple))):
            raise ValueError("ys_true and ys_pred must both be arrays or both be sequences of arrays")
        res = matching_dataset(ys_true, ys_pred, thrs, crit)
        n_images = len(ys_true)
    else:
        res = _matchings(overlap_table(ys_true, ys_pred, name=name), thrs, crit, False)
        n_images = 1
    ap = tuple(float(r.accuracy) for r in res)
    return AveragePrecision(thrs, ap, math.fsum(ap) / len(ap), crit, n_images)
