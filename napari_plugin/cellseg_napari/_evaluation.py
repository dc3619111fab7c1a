"""The Evaluate widget's table rows and error-map categories and colours."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from cellseg.metrics import errors as _errors

__all__ = ["ERROR_CATEGORIES", "ERROR_COLORS", "error_categories", "error_categories_frame", "evaluation_rows"]


#: Categories of the error map (values of the evaluation Labels layer); see
#: :mod:`cellseg.metrics.errors`.
ERROR_CATEGORIES = _errors.ERROR_CATEGORIES
ERROR_COLORS = {
    0: (0, 0, 0, 0),
    1: (0.2, 0.85, 0.2, 1.0),   # green
    2: (1.0, 0.15, 0.15, 1.0),  # red
    3: (0.2, 0.5, 1.0, 1.0),    # blue
    4: (1.0, 0.2, 1.0, 1.0),    # magenta
    5: (1.0, 0.65, 0.0, 1.0),   # orange
}


error_categories = _errors.error_categories
error_categories_frame = _errors.error_categories_frame


def evaluation_rows(y_true: np.ndarray, y_pred: np.ndarray,
                    thresholds: Sequence[float] = (0.5, 0.6, 0.7, 0.8, 0.9),
                    axes: str | None = None) -> list[tuple[str, float]]:
    """Rows ``(metric, value)`` for the evaluation table, from :mod:`cellseg.metrics`:
    AP at each IoU threshold (TP / (TP + FP + FN) after optimal one-to-one matching,
    the DSB 2018 / StarDist convention), then precision, recall, F1, panoptic quality
    and the TP/FP/FN counts at IoU 0.5, and CTC SEG. With T in ``axes`` the frames
    are matched one by one and the counts pooled (SEG over all reference objects)."""
    from cellseg import metrics

    pairs, _ = _errors.paired_frames(y_true, y_pred, axes)
    thr = sorted({float(t) for t in thresholds} | {0.5})
    ms = dict(zip(thr, metrics.matching_dataset([p[0] for p in pairs], [p[1] for p in pairs], thresh=thr)))
    rows: list[tuple[str, float]] = [(f"AP@{float(t):.2f}", float(ms[float(t)].accuracy)) for t in thresholds]
    m5 = ms[0.5]
    rows += [("precision@0.50", float(m5.precision)), ("recall@0.50", float(m5.recall)),
             ("F1@0.50", float(m5.f1)), ("PQ@0.50", float(m5.panoptic_quality)),
             ("TP@0.50", float(m5.tp)), ("FP@0.50", float(m5.fp)), ("FN@0.50", float(m5.fn))]
    seg = metrics.seg_sequence([p[0] for p in pairs], [p[1] for p in pairs])
    rows.append(("SEG", float(seg.seg)))
    if len(pairs) > 1:
        rows.append(("frames", float(len(pairs))))
    return rows
