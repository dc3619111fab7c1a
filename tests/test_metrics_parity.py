"""Parity of cellseg.metrics.matching with stardist.matching (0.9.2).

TP/FP/FN/n_true/n_pred must be identical and the count ratios (precision,
recall, accuracy, F1) equal to 1e-12. StarDist computes scores and their sums
in float32, we in float64 from the exact pixel counts, so the score averages
are compared two ways: to StarDist's own float32 values within 1e-6, and —
exactly, 1e-12 — to the float64 scores of the pairs StarDist matched.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from cellseg.metrics import matching, matching_dataset
from cellseg.metrics.matching import DEFAULT_THRESHOLDS, overlap_table
from tests.reference.ref_metrics import random_label_pair

sd = pytest.importorskip("stardist.matching")
pytestmark = pytest.mark.peer

THRS = (0.1, 0.3, 0.5, 0.55, 0.7, 0.9)
COUNTS = ("tp", "fp", "fn", "n_true", "n_pred")
RATIOS = ("precision", "recall", "accuracy", "f1")
SCORES = ("mean_true_score", "mean_matched_score", "panoptic_quality")


def _compare_pair(yt, yp, thresholds, criterion):
    ours = matching(yt, yp, thresh=thresholds, criterion=criterion, report_matches=True)
    theirs = sd.matching(yt, yp, thresh=thresholds, criterion=criterion, report_matches=True)
    tab = overlap_table(yt, yp)
    s64 = tab.scores(criterion)
    score_of = {(int(tab.true_ids[i]), int(tab.pred_ids[j])): s
                for i, j, s in zip(tab.pair_true, tab.pair_pred, s64)}
    for o, t in zip(ours, theirs):
        assert o.thresh == t.thresh and o.criterion == t.criterion
        for f in COUNTS:
            assert getattr(o, f) == getattr(t, f), (f, o, t)
        for f in RATIOS:
            assert getattr(o, f) == pytest.approx(getattr(t, f), abs=1e-12, rel=0)
        for f in SCORES:
            assert getattr(o, f) == pytest.approx(float(getattr(t, f)), abs=1e-6, rel=0)
        their_pairs = [t.matched_pairs[k] for k in t.matched_tps]
        their_sum = sum(score_of[p] for p in their_pairs)
        assert sum(o.matched_scores) == pytest.approx(their_sum, abs=1e-12 * max(1, len(their_pairs)), rel=0)
        if sorted(o.matched_pairs) != sorted(their_pairs):
            # an exact tie between optimal matchings (sums equal, checked above)
            return 1
    return 0


@pytest.mark.parametrize("criterion,n_pairs", [("iou", 210), ("iot", 70), ("iop", 70)])
def test_parity_random_pairs(criterion, n_pairs):
    rng = np.random.default_rng(2024)
    ties = 0
    for k in range(n_pairs):
        # StarDist compiles its overlap kernel once per dtype (no cache), so only
        # int32 and uint16 here; every dtype is checked against the reference twins
        yt, yp = random_label_pair(rng, dtype=np.uint16 if k % 4 == 0 else np.int32)
        ties += _compare_pair(yt, yp, THRS, criterion)
    assert ties < 0.1 * n_pairs


def test_parity_at_threshold_edges():
    """Built pairs whose IoU sits exactly at (or one float32 step around) the threshold."""
    yt = np.zeros((6, 6), np.int32)
    yt[0:4, 0:5] = 3
    yp = np.zeros_like(yt)
    yp.flat[np.flatnonzero(yt)[:11]] = 8          # IoU = 11/20 = 0.55
    half_t = np.zeros((4, 4), np.int32)
    half_t[0:2, 0:2] = 1
    half_p = np.zeros((4, 4), np.int32)
    half_p[0:2, 0:1] = 2                           # IoU = 1/2
    up = float(np.nextafter(np.float32(0.5), np.float32(1)))
    down = float(np.nextafter(np.float32(0.5), np.float32(0)))
    empty = np.zeros((4, 4), np.int32)
    for a, b in [(yt, yp), (half_t, half_p), (half_p, half_t), (empty, empty), (empty, half_p), (half_t, empty)]:
        for crit in ("iou", "iot", "iop"):
            _compare_pair(a, b, (0.55, 0.5499999, 0.5500001, 0.5, 0.5 + 1e-12, 0.5 - 1e-12, up, down, 1.0), crit)


def test_parity_matching_dataset_pooled_and_by_image():
    rng = np.random.default_rng(7)
    pairs = [random_label_pair(rng, dtype=np.int32) for _ in range(30)]
    ys_t, ys_p = [p[0] for p in pairs], [p[1] for p in pairs]
    for by_image in (False, True):
        ours = matching_dataset(ys_t, ys_p, DEFAULT_THRESHOLDS, by_image=by_image)
        theirs = sd.matching_dataset(ys_t, ys_p, DEFAULT_THRESHOLDS, by_image=by_image, show_progress=False)
        for o, t in zip(ours, theirs):
            assert o.by_image == t.by_image
            for f in COUNTS:
                assert getattr(o, f) == getattr(t, f)
            for f in RATIOS:
                assert getattr(o, f) == pytest.approx(getattr(t, f), abs=1e-12, rel=0)
            for f in SCORES:
                assert getattr(o, f) == pytest.approx(float(getattr(t, f)), abs=1e-6, rel=0)


# --------------------------------------------------------------------------- real data


def _perturbations(y: np.ndarray, seed: int):
    """Eroded, dilated, shifted and merged copies of a real label image."""
    rng = np.random.default_rng(seed)
    eroded = np.where(ndi.grey_erosion(y, size=3) == ndi.grey_dilation(y, size=3), y, 0)
    dilated = np.where(y == 0, ndi.grey_dilation(y, size=5), y)
    shifted = np.roll(y, (3, -2), axis=(0, 1))
    merged = y.copy()
    ids = [int(i) for i in np.unique(y) if i]
    for a, b in rng.choice(ids, (max(1, len(ids) // 5), 2)) if len(ids) > 1 else []:
        merged[merged == b] = a
    return {"eroded": eroded, "dilated": dilated, "shifted": shifted, "merged": merged}


@pytest.mark.data
def test_parity_dic_hela_silver_truth(dic_hela):
    import tifffile

    files = sorted((dic_hela / "01_ST" / "SEG").glob("man_seg*.tif"))[::20]
    assert files
    for k, f in enumerate(files):
        y = tifffile.imread(f)
        for kind, yp in _perturbations(y, k).items():
            _compare_pair(y, yp, DEFAULT_THRESHOLDS, "iou")
        _compare_pair(y, _perturbations(y, k)["merged"], (0.3, 0.5), "iot")


@pytest.mark.data
def test_parity_dsb_masks(dsb2018):
    import tifffile

    files = sorted((dsb2018 / "masks").glob("*.tif"))[:: max(1, len(list((dsb2018 / "masks").glob("*.tif"))) // 8)]
    assert files
    for k, f in enumerate(files):
        y = tifffile.imread(f)
        for yp in _perturbations(y, 100 + k).values():
            _compare_pair(y, yp, DEFAULT_THRESHOLDS, "iou")


def test_benchmark_script_smoke(capsys):
    from benchmarks.bench_metrics import main, perturb

    y = np.zeros((40, 40), np.int32)
    y[5:15, 5:15], y[5:15, 15:25], y[25:35, 10:30] = 1, 2, 3
    p = perturb(y, seed=1, p_miss=0, p_merge=0.5, p_split=0.5, p_fp=1.0)
    assert p.dtype == np.int32 and p.shape == y.shape and p.max() > 0
    assert main(["--n-images", "2", "--size", "96", "--objects", "12", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "results agree" in out and "ratio stardist/cellseg" in out
