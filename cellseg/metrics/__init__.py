"""Evaluation metrics: instance matching (AP at IoU τ, precision, recall, F1, PQ)
in the StarDist / DSB 2018 convention and the Cell Tracking Challenge SEG and DET
measures, a per-image / pooled evaluation report, and the error taxonomy (correct,
false positive, false negative, merge, split) of :mod:`cellseg.metrics.errors`.

``matching`` is both a submodule and a function; the function is bound here
eagerly (the module is light: numpy only, numba and scipy.optimize are imported
on first use), so ``from cellseg.metrics import matching`` always gives the
function. The other names are resolved lazily (PEP 562); the numba kernels
compile on first use.
"""
from __future__ import annotations

from cellseg._lazy import lazy_exports

from .matching import matching  # noqa: F401  (shadows the submodule attribute on purpose)

_EXPORTS = {
    "matching": "matching",
    "matching_dataset": "matching",
    "average_precision": "matching",
    "overlap_table": "matching",
    "OverlapTable": "matching",
    "Matching": "matching",
    "DatasetMatching": "matching",
    "AveragePrecision": "matching",
    "DEFAULT_THRESHOLDS": "matching",
    "seg_score": "ctc",
    "seg_sequence": "ctc",
    "pool_seg": "ctc",
    "det_score": "ctc",
    "det_sequence": "ctc",
    "SEGResult": "ctc",
    "SEGSequenceResult": "ctc",
    "DETResult": "ctc",
    "evaluate": "report",
    "error_categories": "errors",
    "ERROR_CATEGORIES": "errors",
    "EvaluationReport": "report",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
