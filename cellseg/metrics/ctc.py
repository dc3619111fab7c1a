"""Cell Tracking Challenge segmentation (SEG) and detection (DET) measures.

Matching rule (both measures, as in the official CTC software): a reference
object R is matched by a computed object S iff ``|R ∩ S| > 0.5 · |R|``
(**strictly** greater). Each R is therefore matched by at most one S, while one
S may match several R (a merge).

SEG (Maška et al. 2014; Ulman et al. 2017)
    Jaccard index ``|R ∩ S| / |R ∪ S|`` of every reference object with its
    matching computed object, 0 when it has none; SEG is the mean over **all
    reference objects**. Computed objects without a reference (false
    positives) do not lower SEG — with non-exhaustive gold truth (e.g.
    Fluo-N2DL-HeLa) unannotated cells are not penalised. Over a sequence the
    Jaccards of all reference objects of all frames are pooled (one mean), as
    the official tool does. A frame without reference objects has SEG = NaN
    and contributes nothing to the pooled value (the official tool refuses a
    data set with no reference object at all; we return NaN).

DET (Matula et al. 2015, AOGM-D; Ulman et al. 2017)
    ``AOGM-D = 5 · NS + 10 · FN + 1 · FP`` where FN counts reference objects
    matched by nothing, FP computed objects matching no reference, and NS the
    splitting operations: a computed object matching ``k > 1`` references needs
    ``k - 1`` splits (as in the official Java/C++ implementation and in
    ``py-ctcmetrics`` 1.3.3, checked by ``tests/test_metrics_ctc_peer.py``;
    ``traccuracy`` counts 1 per such object).
    ``AOGM-D0 = 10 · (number of reference objects)`` (building the reference
    from scratch) and ``DET = 1 - min(AOGM-D, AOGM-D0) / AOGM-D0``. Over a
    sequence the AOGM-D and AOGM-D0 of all frames are summed first.

    Simplification: the CTC computes DET against the *tracking* markers
    (``TRA/man_track*.tif``, often smaller than the cells) on every frame of a
    sequence; here the reference is whatever label image is passed, normally
    the segmentation truth, and there are no edges (detection only). Given the
    TRA markers as reference, DET equals the challenge's (py-ctcmetrics').
    With no reference object at all SEG and DET are NaN here, while
    py-ctcmetrics gives SEG 0 and fails on DET (division by zero).

All values come from the same sparse overlap table as
:mod:`cellseg.metrics.matching`, computed once per frame.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from cellseg.metrics.matching import OverlapTable, iter_label_pairs, named_overlap_table

__all__ = [
    "SEGResult",
    "SEGSequenceResult",
    "DETResult",
    "DETSequenceResult",
    "DET_WEIGHTS",
    "seg_score",
    "seg_sequence",
    "seg_from_table",
    "pool_seg",
    "det_score",
    "det_sequence",
    "det_from_table",
]

#: official CTC weights of the AOGM-D vertex operations
DET_WEIGHTS = {"ns": 5.0, "fn": 10.0, "fp": 1.0}


def _ctc_hits(table: OverlapTable) -> np.ndarray:
    """Indices of the overlap pairs where the computed object covers > half of the reference."""
    area_r = table.true_area[table.pair_true]
    return np.flatnonzero(2 * table.inter > area_r)  # exact integer test of |R∩S| > 0.5|R|


# --------------------------------------------------------------------------- SEG


@dataclass(frozen=True, eq=False)
class SEGResult:
    """SEG of one frame.

    seg : mean Jaccard over the reference objects (NaN when there are none)
    n_ref : number of reference objects
    ref_ids : int64 ids of the reference objects (sorted)
    jaccards : float64 Jaccard of each reference object (0 when unmatched)
    matched_ids : int64 id of the computed object matching each reference (0 = none)
    """

    seg: float
    n_ref: int
    ref_ids: np.ndarray
    jaccards: np.ndarray
    matched_ids: np.ndarray
    name: str | None = None

    @property
    def n_matched(self) -> int:
        return int(np.count_nonzero(self.matched_ids))

    def as_dict(self) -> dict[int, float]:
        """{reference id: Jaccard}."""
        return {int(i): float(j) for i, j in zip(self.ref_ids, self.jaccards)}

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "seg": _num(self.seg), "n_ref": self.n_ref, "n_matched": self.n_matched,
                "jaccards": {str(k): v for k, v in self.as_dict().items()}}


def _num(x: float):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def seg_from_table(table: OverlapTable) -> SEGResult:
    """SEG of one frame from its :class:`~cellseg.metrics.matching.OverlapTable`
    (ground truth = reference)."""
    hit = _ctc_hits(table)
    r, s, inter = table.pair_true[hit], table.pair_pred[hit], table.inter[hit]
    jac = np.zeros(table.n_true, np.float64)
    jac[r] = inter / (table.true_area[r] + table.pred_area[s] - inter)
    matched = np.zeros(table.n_true, np.int64)
    matched[r] = table.pred_ids[s]
    seg = math.fsum(jac.tolist()) / table.n_true if table.n_true else math.nan
    return SEGResult(seg, table.n_true, table.true_ids.copy(), jac, matched, table.name)


def seg_score(gt, pred, *, name: str | None = None) -> SEGResult:
    """Official CTC SEG of one frame.

    ``gt`` is the reference label image, ``pred`` the computed one (same shape,
    any integer dtype, 2D or 3D). A reference object R counts as matched by S
    iff ``|R ∩ S| > 0.5 |R|``; SEG is the mean Jaccard over all reference
    objects (0 for unmatched ones), NaN when ``gt`` has no object.
    """
    return seg_from_table(_table(gt, pred, name))


@dataclass(frozen=True, eq=False)
class SEGSequenceResult:
    """SEG pooled over the reference objects of all frames (NaN when there are none)."""

    seg: float
    n_ref: int
    frames: tuple[SEGResult, ...] = field(repr=False)

    @property
    def n_frames(self) -> int:
        return len(self.frames)

    @property
    def per_frame(self) -> list[float]:
        return [f.seg for f in self.frames]

    def to_dict(self) -> dict[str, Any]:
        return {"seg": _num(self.seg), "n_ref": self.n_ref, "n_frames": self.n_frames,
                "frames": [f.to_dict() for f in self.frames]}


def pool_seg(frames: Sequence[SEGResult]) -> SEGSequenceResult:
    """SEG pooled over the reference objects of several frames' :class:`SEGResult`: the
    (exactly summed) Jaccards of all their reference objects over their number; NaN when
    there are none."""
    n_ref = sum(f.n_ref for f in frames)
    total = math.fsum(j for f in frames for j in f.jaccards.tolist())
    return SEGSequenceResult(total / n_ref if n_ref else math.nan, n_ref, tuple(frames))


def seg_sequence(gts: Iterable, preds: Iterable, *, names: Sequence[str] | None = None) -> SEGSequenceResult:
    """CTC SEG of a sequence: the mean Jaccard over the reference objects of all
    frames (frames taken pairwise, one at a time). Frames without reference
    objects add nothing; the result is NaN if no frame has any."""
    frames = iter_label_pairs(gts, preds, names, ("gts", "preds"))
    return pool_seg([seg_from_table(_table(g, p, n)) for g, p, n in frames])


# --------------------------------------------------------------------------- DET


@dataclass(frozen=True, eq=False)
class _DETCounts:
    """The fields and ``to_dict`` shared by :class:`DETResult` and :class:`DETSequenceResult`."""

    det: float
    aogm_d: float
    aogm_d0: float
    n_ref: int
    n_pred: int
    tp: int
    fn: int
    fp: int
    ns: int

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["det"] = _num(self.det)
        return d


@dataclass(frozen=True)
class DETResult(_DETCounts):
    """DET of one frame (detection-only AOGM-D with the CTC weights).

    n_ref / n_pred : reference and computed objects
    tp : reference objects matched (|R∩S| > 0.5|R|)
    fn : reference objects matched by nothing
    fp : computed objects matching no reference
    ns : splitting operations (sum of k - 1 over computed objects matching k > 1 references)
    aogm_d = 5 ns + 10 fn + fp ; aogm_d0 = 10 n_ref
    det = 1 - min(aogm_d, aogm_d0) / aogm_d0 (NaN when n_ref == 0)
    """

    name: str | None = None


def _det_value(aogm: float, aogm0: float) -> float:
    return 1.0 - min(aogm, aogm0) / aogm0 if aogm0 > 0 else math.nan


def _aogm(ns: int, fn: int, fp: int) -> float:
    return DET_WEIGHTS["ns"] * ns + DET_WEIGHTS["fn"] * fn + DET_WEIGHTS["fp"] * fp


def det_from_table(table: OverlapTable) -> DETResult:
    """DET of one frame from its :class:`~cellseg.metrics.matching.OverlapTable`."""
    hit = _ctc_hits(table)
    covers = np.bincount(table.pair_pred[hit], minlength=table.n_pred)
    tp = int(hit.size)
    fn = table.n_true - tp
    fp = int(np.count_nonzero(covers == 0))
    ns = int(np.sum(np.maximum(covers - 1, 0)))
    aogm, aogm0 = _aogm(ns, fn, fp), DET_WEIGHTS["fn"] * table.n_true
    return DETResult(_det_value(aogm, aogm0), aogm, aogm0, table.n_true, table.n_pred, tp, fn, fp, ns, table.name)


def det_score(gt, pred, *, name: str | None = None) -> DETResult:
    """CTC DET of one frame for segmentation-only evaluation (see the module
    notes: the given ``gt`` objects play the role of the reference markers)."""
    return det_from_table(_table(gt, pred, name))


@dataclass(frozen=True, eq=False)
class DETSequenceResult(_DETCounts):
    """DET of a sequence: AOGM-D and AOGM-D0 summed over frames, then normalised."""

    frames: tuple[DETResult, ...] = field(repr=False)

    @property
    def n_frames(self) -> int:
        return len(self.frames)

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()  # "frames" is the last field: it stays the last key
        d["frames"] = [f.to_dict() for f in self.frames]
        return d


def pool_det(frames: Sequence[DETResult]) -> DETSequenceResult:
    """DET of a sequence from the DET of its frames (their error counts summed)."""
    s = {k: sum(getattr(f, k) for f in frames) for k in ("n_ref", "n_pred", "tp", "fn", "fp", "ns")}
    aogm = _aogm(s["ns"], s["fn"], s["fp"])
    aogm0 = DET_WEIGHTS["fn"] * s["n_ref"]
    return DETSequenceResult(_det_value(aogm, aogm0), aogm, aogm0, frames=tuple(frames), **s)


def det_sequence(gts: Iterable, preds: Iterable, *, names: Sequence[str] | None = None) -> DETSequenceResult:
    """CTC DET over a sequence of frames (AOGM-D summed over frames; NaN when
    there is no reference object at all)."""
    frames = iter_label_pairs(gts, preds, names, ("gts", "preds"))
    return pool_det([det_from_table(_table(g, p, n)) for g, p, n in frames])


def _table(gt, pred, name) -> OverlapTable:
    if isinstance(gt, OverlapTable):
        raise TypeError("pass label images; use seg_from_table / det_from_table for an OverlapTable")
    return named_overlap_table(gt, pred, name, ("gt", "pred"))
