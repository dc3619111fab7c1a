"""One evaluation report over a data set: per image and pooled figures.

``evaluate(pairs)`` takes an iterable of ``(name, gt, pred)`` and processes
the pairs one by one: of each pair only its sparse overlap table is kept (a few
arrays of the size of the number of objects), so a generator reading files
lazily never holds more than one image pair in memory.

Figures (IoU criterion throughout):

* ``ap50``, ``ap75``, ``ap90``: AP at IoU τ = TP / (TP + FP + FN) after optimal
  one-to-one matching at IoU >= τ (DSB 2018 / StarDist / Cellpose convention,
  identical to ``stardist.matching``);
* ``map``: mean of AP over τ = 0.5, 0.55, ..., 0.95;
* ``precision50``, ``recall50``, ``f1_50``, ``pq50`` (panoptic quality) and
  ``miou50`` (mean IoU of the TPs) at τ = 0.5; ``tp50``/``fp50``/``fn50``;
* ``seg``: CTC SEG (mean Jaccard over reference objects, match iff
  |R∩S| > 0.5|R|); ``det``: CTC DET (detection AOGM-D) — see
  :mod:`cellseg.metrics.ctc`.

Pooled figures: TP/FP/FN (and TP IoU sums) are summed over images before the
ratios are taken (``matching_dataset(by_image=False)``); SEG is the mean over
all reference objects of all images; DET normalises the summed AOGM-D by the
summed AOGM-D0. Per-image SEG/DET are NaN for images without GT objects
(written as ``null`` in JSON and ``-`` in the table).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from cellseg.metrics.ctc import (
    DETResult,
    DETSequenceResult,
    SEGResult,
    SEGSequenceResult,
    det_from_table,
    pool_det,
    pool_seg,
    seg_from_table,
)
from cellseg.metrics.matching import (
    DEFAULT_THRESHOLDS,
    DatasetMatching,
    Matching,
    OverlapTable,
    matching_from_counts,
    overlap_table,
    pool_counts,
    table_counts,
)

__all__ = ["evaluate", "EvaluationReport", "ImageEvaluation", "COLUMNS"]

#: figure keys in table order, with their column titles
COLUMNS = (
    ("n_true", "n_gt"),
    ("n_pred", "n_pred"),
    ("ap50", "AP50"),
    ("ap75", "AP75"),
    ("ap90", "AP90"),
    ("map", "mAP"),
    ("precision50", "P50"),
    ("recall50", "R50"),
    ("f1_50", "F1_50"),
    ("pq50", "PQ50"),
    ("miou50", "mIoU50"),
    ("seg", "SEG"),
    ("det", "DET"),
)
_THRESHOLDS = DEFAULT_THRESHOLDS
_I50, _I75, _I90 = (_THRESHOLDS.index(t) for t in (0.5, 0.75, 0.9))


def _figures(ms: list, seg: float, det: float) -> dict[str, Any]:
    m50 = ms[_I50]
    return {
        "n_true": int(m50.n_true),
        "n_pred": int(m50.n_pred),
        "ap50": float(m50.accuracy),
        "ap75": float(ms[_I75].accuracy),
        "ap90": float(ms[_I90].accuracy),
        "map": float(math.fsum(m.accuracy for m in ms) / len(ms)),
        "precision50": float(m50.precision),
        "recall50": float(m50.recall),
        "f1_50": float(m50.f1),
        "pq50": float(m50.panoptic_quality),
        "miou50": float(m50.mean_matched_score),
        "tp50": int(m50.tp),
        "fp50": int(m50.fp),
        "fn50": int(m50.fn),
        "seg": float(seg),
        "det": float(det),
        "ap": {f"{t:.2f}": float(m.accuracy) for t, m in zip(_THRESHOLDS, ms)},
    }


def _jsonable(x):
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


@dataclass(frozen=True)
class ImageEvaluation:
    """Figures of one image pair (see the module notes for their definitions)."""

    name: str
    figures: dict[str, Any]
    matchings: tuple[Matching, ...] = field(repr=False)
    seg: SEGResult = field(repr=False)
    det: DETResult = field(repr=False)

    def __getitem__(self, key: str):
        return self.figures[key]

    def to_dict(self) -> dict[str, Any]:
        return _jsonable({"name": self.name, **self.figures})


@dataclass(frozen=True)
class EvaluationReport:
    """Per-image and pooled evaluation of a data set (built by :func:`evaluate`).

    images : one :class:`ImageEvaluation` per pair, in input order
    pooled : :class:`~cellseg.metrics.matching.DatasetMatching` per threshold
    seg_pooled / det_pooled : CTC SEG and DET pooled over the data set
    tables : the overlap table of every pair (to recompute other figures)
    thresholds : the IoU thresholds (0.5:0.05:0.95)
    """

    images: tuple[ImageEvaluation, ...]
    pooled: tuple[DatasetMatching, ...] = field(repr=False)
    seg_pooled: SEGSequenceResult = field(repr=False)
    det_pooled: DETSequenceResult = field(repr=False)
    tables: tuple[OverlapTable, ...] = field(repr=False)
    thresholds: tuple[float, ...] = _THRESHOLDS

    def __len__(self) -> int:
        return len(self.images)

    @property
    def summary(self) -> dict[str, Any]:
        """Pooled figures: the keys of :data:`COLUMNS` plus tp50/fp50/fn50,
        the AP of every threshold (``ap``) and ``n_images``."""
        d = _figures(list(self.pooled), self.seg_pooled.seg, self.det_pooled.det)
        d["n_images"] = len(self.images)
        return d

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN written as None)."""
        return _jsonable({
            "thresholds": list(self.thresholds),
            "criterion": "iou",
            "definitions": {
                "ap": "TP/(TP+FP+FN) after optimal one-to-one matching at IoU >= threshold "
                      "(DSB 2018 / StarDist / Cellpose convention)",
                "map": "mean AP over IoU 0.5:0.05:0.95",
                "seg": "CTC SEG: mean Jaccard over reference objects, matched iff |R&S| > 0.5|R|",
                "det": "CTC DET: 1 - min(AOGM-D, AOGM-D0)/AOGM-D0, weights NS 5, FN 10, FP 1",
                "pooled": "TP/FP/FN summed over images; SEG over all reference objects; DET over summed AOGM-D",
            },
            "summary": self.summary,
            "images": [im.to_dict() for im in self.images],
        })

    def to_json(self, path: str | Path, indent: int = 2) -> Path:
        """Write :meth:`to_dict` as JSON to ``path`` (parent folders must exist)."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=indent, allow_nan=False) + "\n")
        return path

    def format_table(self, digits: int = 3, max_name: int = 40) -> str:
        """Plain-text table: one row per image and a final ``pooled`` row."""
        def cell(v):
            if isinstance(v, (int, np.integer)):
                return str(int(v))
            if v is None or (isinstance(v, float) and math.isnan(v)):
                return "-"
            return f"{v:.{digits}f}"

        def short(n: str) -> str:
            return n if len(n) <= max_name else "…" + n[-(max_name - 1):]

        head = ["image"] + [title for _, title in COLUMNS]
        rows = [[short(im.name)] + [cell(im.figures[k]) for k, _ in COLUMNS] for im in self.images]
        summ = self.summary
        pooled = [f"pooled ({len(self.images)})"] + [cell(summ[k]) for k, _ in COLUMNS]
        widths = [max(len(r[i]) for r in [head, pooled, *rows]) for i in range(len(head))]

        def line(r):
            return "  ".join([r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])])

        rule = "-" * len(line(head))
        return "\n".join([line(head), rule, *map(line, rows), rule, line(pooled)])

    def __str__(self) -> str:
        return self.format_table()


def evaluate(pairs: Iterable) -> EvaluationReport:
    """Evaluate an iterable of ``(name, gt, pred)`` label-image pairs.

    Each pair is validated (integer labels, same shape; errors name the
    image), reduced to its overlap table and dropped, so ``pairs`` may be a
    generator that loads files lazily. Returns an :class:`EvaluationReport`
    with per-image rows and pooled figures (AP at 0.5/0.75/0.9, mAP over
    0.5:0.95, precision/recall/F1/PQ/mean IoU at 0.5, CTC SEG and DET).
    """
    images, tables = [], []
    per_thr: list[list] = [[] for _ in _THRESHOLDS]
    segs, dets = [], []
    for k, item in enumerate(pairs):
        try:
            name, gt, pred = item
        except (TypeError, ValueError):
            raise ValueError(f"evaluate: item {k} is not a (name, gt, pred) triple") from None
        name = str(name)
        table = overlap_table(gt, pred, name=name)
        del gt, pred, item
        counts = table_counts(table, _THRESHOLDS, "iou")
        ms = tuple(matching_from_counts(c, t, "iou") for c, t in zip(counts, _THRESHOLDS))
        for acc, c in zip(per_thr, counts):
            acc.append(c)
        seg, det = seg_from_table(table), det_from_table(table)
        segs.append(seg)
        dets.append(det)
        tables.append(table)
        images.append(ImageEvaluation(name, _figures(list(ms), seg.seg, det.det), ms, seg, det))
    if not images:
        raise ValueError("evaluate: no image pairs given")
    pooled = tuple(pool_counts(acc, t, "iou", False) for acc, t in zip(per_thr, _THRESHOLDS))
    return EvaluationReport(tuple(images), pooled, pool_seg(segs), pool_det(dets), tuple(tables))
