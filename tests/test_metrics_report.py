"""cellseg.metrics.report: evaluate() agrees with the underlying metric functions,
serialises to JSON and formats a readable table."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from cellseg.labels import LabelError
from cellseg.metrics import (
    EvaluationReport,
    average_precision,
    det_score,
    det_sequence,
    evaluate,
    matching,
    matching_dataset,
    seg_score,
    seg_sequence,
)
from tests.reference.ref_metrics import random_label_pair


def _pairs(n=10, seed=4):
    rng = np.random.default_rng(seed)
    out = [(f"img_{k:02d}.tif", *random_label_pair(rng, dtype=np.uint16, ndim=2)) for k in range(n)]
    z = np.zeros((8, 8), np.int32)
    out.append(("empty_gt.tif", z, np.pad(np.ones((2, 2), np.int32), 3)))  # no GT: SEG/DET NaN
    return out


def test_evaluate_matches_metric_functions():
    pairs = _pairs()
    rep = evaluate(iter(pairs))  # a one-shot iterator is fine
    assert isinstance(rep, EvaluationReport) and len(rep) == len(pairs)
    for (name, gt, pred), im in zip(pairs, rep.images):
        assert im.name == name
        m50, m75, m90 = matching(gt, pred, [0.5, 0.75, 0.9])
        assert (im["ap50"], im["ap75"], im["ap90"]) == (m50.accuracy, m75.accuracy, m90.accuracy)
        assert im["map"] == pytest.approx(average_precision(gt, pred).mean_ap, abs=1e-12)
        assert (im["tp50"], im["fp50"], im["fn50"]) == (m50.tp, m50.fp, m50.fn)
        assert (im["precision50"], im["recall50"], im["f1_50"]) == (m50.precision, m50.recall, m50.f1)
        assert im["pq50"] == m50.panoptic_quality and im["miou50"] == m50.mean_matched_score
        s, d = seg_score(gt, pred), det_score(gt, pred)
        assert (im["seg"] == s.seg) or (math.isnan(im["seg"]) and math.isnan(s.seg))
        assert (im["det"] == d.det) or (math.isnan(im["det"]) and math.isnan(d.det))
    gts, preds = [p[1] for p in pairs], [p[2] for p in pairs]
    summ = rep.summary
    pooled = matching_dataset(gts, preds)
    assert summ["ap50"] == pooled[0].accuracy and summ["ap75"] == pooled[5].accuracy
    assert summ["ap90"] == pooled[8].accuracy
    assert summ["map"] == pytest.approx(np.mean([p.accuracy for p in pooled]), abs=1e-12)
    assert (summ["tp50"], summ["fp50"], summ["fn50"]) == (pooled[0].tp, pooled[0].fp, pooled[0].fn)
    assert summ["pq50"] == pytest.approx(pooled[0].panoptic_quality, abs=1e-12)
    assert summ["seg"] == pytest.approx(seg_sequence(gts, preds).seg, abs=1e-12)
    assert summ["det"] == pytest.approx(det_sequence(gts, preds).det, abs=1e-12)
    assert summ["n_images"] == len(pairs) and summ["n_true"] == pooled[0].n_true
    assert len(rep.tables) == len(pairs)


def test_json_and_table(tmp_path):
    rep = evaluate(_pairs(4))
    path = rep.to_json(tmp_path / "report.json")
    data = json.loads(path.read_text())
    assert [im["name"] for im in data["images"]][-1] == "empty_gt.tif"
    assert data["images"][-1]["seg"] is None and data["images"][-1]["det"] is None
    assert data["summary"]["ap50"] == rep.summary["ap50"]
    assert set(data["images"][0]["ap"]) == {f"{t:.2f}" for t in rep.thresholds}
    table = rep.format_table()
    lines = table.splitlines()
    assert len(lines) == len(rep) + 4
    assert lines[0].split()[:4] == ["image", "n_gt", "n_pred", "AP50"]
    assert lines[-1].startswith("pooled (5)")
    # NaN SEG/DET are shown as '-'
    assert lines[-3].startswith("empty_gt.tif") and lines[-3].split()[-2:] == ["-", "-"]
    assert str(rep) == table


def test_evaluate_validation():
    good = np.zeros((4, 4), np.int32)
    with pytest.raises(ValueError, match="no image pairs"):
        evaluate([])
    with pytest.raises(ValueError, match="item 1 is not a"):
        evaluate([("a", good, good), (good, good)])
    with pytest.raises(LabelError, match=r"y_pred \(b\.tif\).*float"):
        evaluate([("a.tif", good, good), ("b.tif", good, good.astype(float))])


def test_import_is_light():
    import subprocess
    import sys

    code = ("import sys, cellseg.metrics as m; from cellseg.metrics import matching, evaluate, seg_score; "
            "assert callable(matching) and not isinstance(matching, type(sys)); "
            "print([k for k in ('numba', 'torch', 'scipy.optimize', 'cellseg.metrics._matching_kernels') "
            "if k in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
