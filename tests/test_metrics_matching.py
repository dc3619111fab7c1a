"""cellseg.metrics.matching: fast overlap kernel and sparse matching vs. the slow
reference twins (tests/reference/ref_metrics.py), built threshold cases, validation."""
from __future__ import annotations

import numpy as np
import pytest

from cellseg.labels import LabelError
from cellseg.metrics import average_precision, matching, matching_dataset
from cellseg.metrics.matching import DEFAULT_THRESHOLDS, overlap_table
from tests.reference.ref_metrics import (
    INT_DTYPES,
    random_label_pair,
    ref_matching,
    ref_matching_enumerate,
    ref_objects,
    ref_overlaps,
)

THRS = (0.1, 0.3, 0.5, 0.7, 0.9)
FIELDS = ("precision", "recall", "accuracy", "f1", "mean_true_score", "mean_matched_score", "panoptic_quality")


def _random_pairs(n, seed):
    rng = np.random.default_rng(seed)
    for k in range(n):
        yield random_label_pair(rng, dtype=INT_DTYPES[k % len(INT_DTYPES)])


def _check_table(yt, yp):
    tab = overlap_table(yt, yp)
    at, ap = ref_objects(yt), ref_objects(yp)
    assert tab.true_ids.tolist() == sorted(at)
    assert tab.pred_ids.tolist() == sorted(ap)
    assert tab.true_area.tolist() == [at[i] for i in sorted(at)]
    assert tab.pred_area.tolist() == [ap[i] for i in sorted(ap)]
    got = {(int(tab.true_ids[i]), int(tab.pred_ids[j])): int(n)
           for i, j, n in zip(tab.pair_true, tab.pair_pred, tab.inter)}
    assert got == ref_overlaps(yt, yp)
    keys = list(zip(tab.pair_true.tolist(), tab.pair_pred.tolist()))
    assert keys == sorted(keys)  # sorted by (true, pred)
    dense = tab.to_dense()
    assert dense.sum() == yt.size


# --------------------------------------------------------------------------- overlap kernel


def test_overlap_table_random_pairs_match_reference():
    for yt, yp in _random_pairs(240, seed=0):
        _check_table(yt, yp)


@pytest.mark.parametrize("dtype", INT_DTYPES)
def test_overlap_every_dtype_and_border(dtype):
    yt = np.zeros((7, 9), dtype)
    yp = np.zeros((7, 9), dtype)
    yt[0, :] = 5          # touches the top border
    yt[:, -1] = 100       # right border, overlapping the corner
    yt[3:5, 2:4] = 7
    yp[0, :4] = 9
    yp[:, -2:] = 3
    yp[4, 3] = 120
    _check_table(yt, yp)


def test_overlap_huge_ids_are_compacted():
    yt = np.zeros((6, 6), np.int64)
    yp = np.zeros((6, 6), np.uint64)
    yt[:3] = 2**40
    yt[4:, :2] = 3
    yp[1:4] = np.uint64(2**63 + 5)  # only representable as uint64 ... beyond int64
    with pytest.raises(LabelError, match="y_pred.*int64"):
        overlap_table(yt, yp)
    yp[1:4] = np.uint64(2**35)
    yp[5, 5] = 1
    _check_table(yt, yp)
    big32 = np.zeros((5, 5), np.int32)
    big32[1:3, 1:3] = 2**31 - 1  # larger than the direct-id limit: compacted path
    _check_table(big32, big32)
    assert overlap_table(big32, big32).true_ids.tolist() == [2**31 - 1]


def test_overlap_many_pairs_grows_hash_table():
    # noise labels: ~2500 distinct pairs from 50 + 50 ids, more than the first
    # table sized from the ids holds, so the kernel must retry with a larger one
    rng = np.random.default_rng(0)
    yt = rng.integers(0, 51, (100, 100)).astype(np.int32)
    yp = rng.integers(0, 51, (100, 100)).astype(np.int32)
    _check_table(yt, yp)
    assert overlap_table(yt, yp).n_pairs > 4 * (50 + 50 + 64)


def test_overlap_more_pairs_than_the_initial_table_cap():
    # ~760k distinct pairs: more than the 2**19 the first (capped) table holds;
    # compared with a sort-based contingency table (np.unique on pair keys)
    rng = np.random.default_rng(1)
    yt = rng.integers(0, 1001, (1200, 1200)).astype(np.int32)
    yp = rng.integers(0, 1001, (1200, 1200)).astype(np.int32)
    tab = overlap_table(yt, yp)
    both = (yt > 0) & (yp > 0)
    keys, counts = np.unique(yt[both].astype(np.int64) * 1001 + yp[both], return_counts=True)
    assert tab.n_pairs == keys.size > 1 << 19
    got = tab.true_ids[tab.pair_true] * 1001 + tab.pred_ids[tab.pair_pred]
    assert np.array_equal(got, keys) and np.array_equal(tab.inter, counts)


def test_direct_and_compacted_id_paths_agree():
    # ids up to max(2**22, n pixels) are counted directly, larger ones compacted first
    yt = np.zeros((5, 6), np.int64)
    yt[:2] = 2**22
    yt[3:, :3] = 5
    for big in (2**22, 2**22 + 1, 2**31 - 1, 2**33):
        yp = np.where(yt > 0, big, 0)
        yp[4, 5] = 17
        _check_table(yt, yp)
        tab = overlap_table(yp, yt)
        assert tab.true_ids.tolist() == [17, big] and tab.true_area.tolist() == [1, 18]


def test_overlap_empty_and_3d():
    z = np.zeros((4, 5), np.uint16)
    tab = overlap_table(z, z)
    assert tab.n_true == tab.n_pred == tab.n_pairs == 0
    e = np.zeros((0, 5), np.int32)
    assert overlap_table(e, e).n_true == 0
    rng = np.random.default_rng(3)
    for _ in range(10):
        yt, yp = random_label_pair(rng, ndim=3)
        _check_table(yt, yp)


# --------------------------------------------------------------------------- matching vs reference


@pytest.mark.parametrize("criterion", ["iou", "iot", "iop"])
def test_matching_random_pairs_match_dense_reference(criterion):
    n_amb = 0
    for yt, yp in _random_pairs(220, seed=11):
        res = matching(yt, yp, thresh=THRS, criterion=criterion, report_matches=True)
        for r, thr in zip(res, THRS):
            ref = ref_matching(yt, yp, thr, criterion)
            assert (r.tp, r.fp, r.fn, r.n_true, r.n_pred) == (ref["tp"], ref["fp"], ref["fn"],
                                                              ref["n_true"], ref["n_pred"])
            for f in ("precision", "recall", "accuracy", "f1"):
                assert getattr(r, f) == pytest.approx(ref[f], abs=1e-12)
            if sorted(r.matched_pairs) != ref["pairs"]:
                # two optimal matchings may tie exactly; then the sums agree
                n_amb += 1
            assert sum(r.matched_scores) == pytest.approx(ref["score_sum"], abs=1e-9)
            for f in ("mean_true_score", "mean_matched_score", "panoptic_quality"):
                assert getattr(r, f) == pytest.approx(ref[f], abs=1e-9)
    assert n_amb < 0.05 * 220 * len(THRS)  # ties are rare (mostly IoP = 1 twice)


def test_matching_tiny_cases_match_enumeration():
    rng = np.random.default_rng(5)
    done = 0
    while done < 150:
        yt, yp = random_label_pair(rng)
        if not (len(ref_objects(yt)) <= 5 and len(ref_objects(yp)) <= 5):
            continue
        done += 1
        for crit in ("iou", "iot", "iop"):
            for thr, r in zip(THRS, matching(yt, yp, THRS, crit)):
                ref = ref_matching_enumerate(yt, yp, thr, crit)
                assert r.tp == ref["tp"]
                assert any(abs(r.mean_true_score * r.n_true - s) < 1e-7 for s in ref["score_sums"]), (
                    crit, thr, ref["score_sums"], r)


# --------------------------------------------------------------------------- built threshold cases


def _square(shape, sl, v=1, dtype=np.int32, out=None):
    out = np.zeros(shape, dtype) if out is None else out
    out[sl] = v
    return out


def test_iou_exactly_at_threshold_and_epsilon():
    # true 20 px, pred 11 px inside it: IoU = 11/20 = 0.55 exactly
    yt = _square((6, 6), np.s_[0:4, 0:5], 3)
    yp = np.zeros_like(yt)
    yp.flat[np.flatnonzero(yt)[:11]] = 8
    r = matching(yt, yp, thresh=[0.55, 0.54999, 0.55001])
    assert [m.tp for m in r] == [1, 1, 0]
    # IoU = 1/2 exactly: matched at 0.5 (non-strict >=)
    yt = _square((4, 4), np.s_[0:2, 0:2])
    yp = _square((4, 4), np.s_[0:2, 0:1], 2)
    assert matching(yt, yp, 0.5).tp == 1
    # comparisons are in float32, like StarDist: 0.5 + 1e-12 rounds to 0.5 ...
    assert matching(yt, yp, 0.5 + 1e-12).tp == 1
    # ... while the next float32 above 0.5 is a real step
    nxt = float(np.nextafter(np.float32(0.5), np.float32(1)))
    assert matching(yt, yp, nxt).tp == 0
    assert matching(yt, yp, 1.0).tp == 0
    assert matching(yt, yt, 1.0).tp == 1


def test_split_and_merged_cells():
    gt = _square((4, 8), np.s_[0:4, 0:4], 1)
    gt[0:4, 4:8] = 2
    merged = np.where(gt > 0, 7, 0).astype(np.int32)
    r = matching(gt, merged, 0.5, report_matches=True)
    assert (r.tp, r.fp, r.fn) == (1, 0, 1)  # IoU 0.5 with each half: one wins
    assert r.mean_matched_score == 0.5
    assert matching(gt, merged, 0.51).tp == 0
    # iop: the merged object is fully inside neither -> IoP 0.5; iot: each GT fully covered
    assert matching(gt, merged, 0.9, criterion="iot").tp == 1
    assert matching(gt, merged, 0.6, criterion="iop").tp == 0
    # the split view: swap roles
    r = matching(merged, gt, 0.5)
    assert (r.tp, r.fp, r.fn) == (1, 1, 0)
    assert matching(merged, gt, 0.9, criterion="iop").tp == 1


def test_optimal_not_greedy():
    # greedy by best score would take (A, X) and leave B unmatched; optimal takes 2 pairs
    a = np.zeros((1, 20), np.int32)
    b = np.zeros((1, 20), np.int32)
    a[0, 0:10] = 1   # A
    a[0, 10:14] = 2  # B
    b[0, 0:6] = 5    # X: inside A
    b[0, 6:14] = 6   # Y: 4 px of A, 4 px of B
    # iop: X-A 1.0, Y-A 0.5, Y-B 0.5 ; at 0.5 both A and B can be matched only via X-A, Y-B
    r = matching(a, b, 0.5, criterion="iop", report_matches=True)
    assert r.tp == 2
    assert sorted(r.matched_pairs) == [(1, 5), (2, 6)]


def test_empty_images_follow_stardist_convention():
    z = np.zeros((5, 5), np.int32)
    one = _square((5, 5), np.s_[1:3, 1:3], 4)
    r = matching(z, z, 0.5)
    assert (r.tp, r.fp, r.fn, r.n_true, r.n_pred) == (0, 0, 0, 0, 0)
    assert (r.precision, r.recall, r.accuracy, r.f1, r.panoptic_quality) == (0, 0, 0, 0, 0)
    r = matching(z, one, 0.5)
    assert (r.tp, r.fp, r.fn) == (0, 1, 0) and r.accuracy == 0
    r = matching(one, z, 0.5)
    assert (r.tp, r.fp, r.fn) == (0, 0, 1) and r.mean_true_score == 0
    r = matching(one, one, 0.5)
    assert r.accuracy == 1 and r.panoptic_quality == 1 and r.mean_matched_score == 1


def test_non_sequential_ids_reported_as_given():
    yt = _square((6, 6), np.s_[0:3, 0:3], 1000, np.uint16)
    yt[4:, 4:] = 7
    yp = _square((6, 6), np.s_[0:3, 0:2], 65535, np.uint16)
    yp[4:, 4:] = 3
    r = matching(yt, yp, 0.5, report_matches=True)
    assert r.matched_pairs == ((7, 3), (1000, 65535))
    assert r.matched_scores == (1.0, 6 / 9)


# --------------------------------------------------------------------------- dataset pooling


def test_matching_dataset_pools_counts_and_by_image_averages():
    rng = np.random.default_rng(21)
    pairs = [random_label_pair(rng, dtype=np.int32) for _ in range(12)]
    ys_t, ys_p = [p[0] for p in pairs], [p[1] for p in pairs]
    pooled = matching_dataset(ys_t, ys_p)
    by_img = matching_dataset(ys_t, ys_p, by_image=True)
    assert [d.thresh for d in pooled] == list(DEFAULT_THRESHOLDS)
    for d, b, thr in zip(pooled, by_img, DEFAULT_THRESHOLDS):
        singles = [matching(t, p, thr) for t, p in zip(ys_t, ys_p)]
        tp = sum(s.tp for s in singles)
        fp = sum(s.fp for s in singles)
        fn = sum(s.fn for s in singles)
        assert (d.tp, d.fp, d.fn, d.n_images) == (tp, fp, fn, 12)
        assert d.accuracy == pytest.approx(tp / (tp + fp + fn) if tp else 0.0, abs=1e-12)
        ssum = sum(s.mean_true_score * s.n_true for s in singles)
        assert d.mean_true_score == pytest.approx(ssum / d.n_true, abs=1e-12)
        assert (b.tp, b.fp, b.fn) == (tp, fp, fn)
        for f in FIELDS:
            assert getattr(b, f) == pytest.approx(np.mean([getattr(s, f) for s in singles]), abs=1e-12)
    single = matching_dataset(ys_t, ys_p, thresh=0.5)
    assert single.tp == pooled[0].tp
    # generators work, one pair at a time
    gen = matching_dataset((t for t in ys_t), (p for p in ys_p), thresh=0.5)
    assert gen == single


def test_average_precision():
    rng = np.random.default_rng(8)
    yt, yp = random_label_pair(rng, dtype=np.int32)
    res = matching(yt, yp, DEFAULT_THRESHOLDS)
    ap = average_precision(yt, yp)
    assert ap.thresholds == DEFAULT_THRESHOLDS and ap.n_images == 1
    assert ap.ap == tuple(r.accuracy for r in res)
    assert ap.mean_ap == pytest.approx(np.mean([r.accuracy for r in res]), abs=1e-12)
    assert ap.at(0.75) == res[5].accuracy
    with pytest.raises(KeyError, match="0.6 not evaluated"):
        average_precision(yt, yp, thresholds=(0.5,)).at(0.6)
    # unpacks as (AP per threshold, mean AP)
    per_thr, mean_ap = average_precision(yt, yp)
    assert per_thr == ap.ap and mean_ap == ap.mean_ap
    # several images: TP/FP/FN pooled first (not the mean of per-image APs)
    rng = np.random.default_rng(9)
    pairs = [random_label_pair(rng, dtype=np.uint16) for _ in range(6)]
    ys_t, ys_p = [p[0] for p in pairs], [p[1] for p in pairs]
    per_thr, mean_ap = average_precision(ys_t, ys_p, thresholds=(0.5, 0.9))
    pooled = matching_dataset(ys_t, ys_p, (0.5, 0.9))
    assert per_thr == (pooled[0].accuracy, pooled[1].accuracy)
    assert mean_ap == pytest.approx((pooled[0].accuracy + pooled[1].accuracy) / 2, abs=1e-12)
    # thresh= is the same keyword as in matching(); both at once is an error
    assert tuple(average_precision(ys_t, ys_p, thresh=(0.5, 0.9))) == (per_thr, mean_ap)
    assert average_precision(ys_t, tuple(ys_p), thresh=0.5).n_images == 6
    with pytest.raises(ValueError, match="either thresholds or thresh"):
        average_precision(yt, yp, thresholds=(0.5,), thresh=0.5)
    with pytest.raises(ValueError, match="both be arrays or both be sequences"):
        average_precision([yt], yp)
    with pytest.raises(ValueError, match="thresh"):
        average_precision(yt, yp, thresholds=(0.5, 0))


# --------------------------------------------------------------------------- validation


def test_validation_errors_name_the_argument():
    good = np.zeros((4, 4), np.int32)
    with pytest.raises(LabelError, match=r"y_true \(a\.tif\).*integer.*float"):
        matching(good.astype(float), good, name="a.tif")
    with pytest.raises(LabelError, match=r"y_pred.*non-negative.*-3"):
        matching(good, good - 3)
    with pytest.raises(LabelError, match=r"y_pred.*non-negative"):
        matching(good, (good - 1).astype(np.int64))
    with pytest.raises(LabelError, match=r"y_pred \(b\).*shape \(4, 5\).*\(4, 4\)"):
        matching(good, np.zeros((4, 5), np.int32), name="b")
    with pytest.raises(LabelError, match="y_true.*2D.*3D"):
        matching(np.zeros(5, np.int32), np.zeros(5, np.int32))
    with pytest.raises(ValueError, match="criterion"):
        matching(good, good, criterion="dice")
    for bad in (0, -0.1, 1.5, float("nan"), "0.5", [], [0.5, 2]):
        with pytest.raises(ValueError, match="thresh"):
            matching(good, good, thresh=bad)
    with pytest.raises(ValueError, match="different lengths"):
        matching_dataset([good, good], [good])
    with pytest.raises(ValueError, match="no image pairs"):
        matching_dataset([], [], thresh=0.5)
    with pytest.raises(LabelError, match=r"y_true \(#1\)"):
        matching_dataset([good, good.astype(np.float32)], [good, good])
    # bool masks are one object each
    m = good.astype(bool)
    m[1:3, 1:3] = True
    assert matching(m, m).tp == 1
