"""cellseg.metrics.ctc: CTC SEG and DET vs. per-object reference loops, built
cases at the strict > 0.5·|R| rule, empty frames, pooling, validation."""
from __future__ import annotations

import math

import numpy as np
import pytest

from cellseg.labels import LabelError
from cellseg.metrics import det_score, det_sequence, seg_score, seg_sequence
from tests.reference.ref_metrics import INT_DTYPES, random_label_pair, ref_det, ref_seg


def _check(gt, pred):
    s = seg_score(gt, pred)
    ref, jac = ref_seg(gt, pred)
    assert s.n_ref == len(jac)
    assert s.as_dict() == pytest.approx(jac, abs=1e-12)
    if jac:
        assert s.seg == pytest.approx(ref, abs=1e-12)
    else:
        assert math.isnan(s.seg)
    d = det_score(gt, pred)
    rd = ref_det(gt, pred)
    assert (d.fn, d.fp, d.ns, d.aogm_d, d.aogm_d0) == (rd["fn"], rd["fp"], rd["ns"], rd["aogm"], rd["aogm0"])
    if rd["aogm0"]:
        assert d.det == pytest.approx(rd["det"], abs=1e-12)
    else:
        assert math.isnan(d.det)
    return s, d


def test_seg_det_random_pairs_match_reference():
    rng = np.random.default_rng(99)
    for k in range(220):
        gt, pred = random_label_pair(rng, dtype=INT_DTYPES[k % len(INT_DTYPES)])
        _check(gt, pred)


def test_strict_half_rule():
    gt = np.zeros((2, 10), np.uint16)
    gt[0, :] = 4                      # |R| = 10
    pred = np.zeros_like(gt)
    pred[0, :5] = 9                   # exactly half: NOT matched
    pred[1, :] = 9                    # |S| = 15
    s, d = _check(gt, pred)
    assert s.seg == 0 and s.matched_ids.tolist() == [0]
    assert (d.fn, d.fp, d.ns, d.aogm_d) == (1, 1, 0, 11) and d.det == 0.0  # min(11, 10) / 10
    pred[0, 5] = 9                    # one pixel more: matched, J = 6 / (10 + 16 - 6)
    s, d = _check(gt, pred)
    assert s.seg == pytest.approx(6 / 20) and s.matched_ids.tolist() == [9]
    assert (d.fn, d.fp, d.ns, d.det) == (0, 0, 0, 1.0)


def test_split_and_merged_cells():
    gt = np.zeros((4, 12), np.int32)
    gt[:, 0:4], gt[:, 4:8], gt[:, 8:12] = 1, 2, 3
    merged = np.where(gt > 0, 5, 0)
    s, d = _check(gt, merged)
    # every reference is covered fully by the merged object: matched, J = 16/48
    assert s.seg == pytest.approx(1 / 3)
    assert (d.tp, d.fn, d.fp, d.ns) == (3, 0, 0, 2)      # two splits needed
    assert d.aogm_d == 10 and d.det == pytest.approx(1 - 10 / 30)
    split = gt.copy()
    split[:2, 0:4] = 7                                    # R=1 cut in two halves: neither > half
    s, d = _check(gt, split)
    assert s.as_dict()[1] == 0 and s.seg == pytest.approx(2 / 3)
    assert (d.fn, d.fp, d.ns) == (1, 2, 0)


def test_empty_frames_and_pooling():
    z = np.zeros((5, 5), np.int32)
    one = z.copy()
    one[1:3, 1:3] = 2
    s, d = _check(z, one)
    assert math.isnan(s.seg) and s.n_ref == 0 and math.isnan(d.det) and d.fp == 1
    s, d = _check(one, z)
    assert s.seg == 0 and d.det == 0 and d.fn == 1
    s, d = _check(z, z)
    assert math.isnan(s.seg) and math.isnan(d.det)
    # pooled over reference objects, empty frames add nothing (but their FPs count for DET)
    a = np.zeros((4, 8), np.int32)
    a[:, :4], a[:, 4:] = 1, 2
    b = a.copy()
    b[:, 4:] = 0
    seq = seg_sequence([a, z, a], [a, one, b])           # frame 3 misses reference 2
    assert seq.n_ref == 4 and seq.n_frames == 3
    assert seq.seg == pytest.approx(3 / 4)
    frames = seq.per_frame
    assert frames[0] == 1 and math.isnan(frames[1]) and frames[2] == pytest.approx(0.5)
    dseq = det_sequence([a, z, a], [a, one, b])
    assert (dseq.n_ref, dseq.fp, dseq.fn, dseq.ns) == (4, 1, 1, 0)
    assert dseq.aogm_d == 11 and dseq.aogm_d0 == 40 and dseq.det == pytest.approx(1 - 11 / 40)
    assert math.isnan(seg_sequence([z], [one]).seg)
    assert math.isnan(det_sequence([z], [one]).det)


def test_seg_sequence_is_not_the_mean_of_frames():
    a = np.zeros((4, 8), np.int32)
    a[:, :4] = 1
    many = np.zeros((4, 8), np.int32)
    many[:, :2], many[:, 2:4], many[:, 4:6], many[:, 6:8] = 1, 2, 3, 4
    pred_many = many.copy()
    pred_many[:, 6:8] = 0
    seq = seg_sequence([a, many], [np.zeros_like(a), pred_many])
    assert seq.seg == pytest.approx(3 / 5)               # (0 + 1 + 1 + 1 + 0) / 5
    assert np.mean(seq.per_frame) == pytest.approx(0.375)


def test_validation_names_gt_and_pred():
    good = np.zeros((4, 4), np.int32)
    with pytest.raises(LabelError, match=r"pred \(t001\.tif\).*integer"):
        seg_score(good, good.astype(np.float32), name="t001.tif")
    with pytest.raises(LabelError, match=r"gt.*non-negative"):
        det_score(good - 1, good)
    with pytest.raises(LabelError, match=r"pred.*shape"):
        seg_score(good, np.zeros((3, 4), np.int32))
    with pytest.raises(ValueError, match="gts and preds have different lengths"):
        seg_sequence([good], [good, good])


@pytest.mark.data
def test_fluo_hela_gold_truth(fluo_hela):
    import tifffile
    from scipy import ndimage as ndi

    files = sorted((fluo_hela / "01_GT" / "SEG").glob("man_seg*.tif"))
    assert files
    gts = [tifffile.imread(f) for f in files[:2]]
    for gt in gts:
        s, d = _check(gt, gt)
        assert s.seg == 1.0 and d.det == 1.0
        eroded = np.where(ndi.grey_erosion(gt, size=5) == gt, gt, 0)
        s, d = _check(gt, eroded)
        assert 0.3 < s.seg < 1.0
    seq = seg_sequence(gts, gts)
    assert seq.seg == 1.0 and seq.n_ref == sum(len(np.unique(g)) - 1 for g in gts)


@pytest.mark.data
def test_dic_hela_silver_truth_perturbed(dic_hela):
    """Real frames against eroded / merged / split copies: fast SEG and DET equal
    the per-object loops, and merges cost exactly one split each."""
    import tifffile
    from scipy import ndimage as ndi

    files = sorted((dic_hela / "01_ST" / "SEG").glob("man_seg*.tif"))[::28]
    assert files
    gts, preds = [], []
    for k, f in enumerate(files):
        gt = tifffile.imread(f)
        ids = [int(i) for i in np.unique(gt) if i]
        eroded = np.where(ndi.grey_erosion(gt, size=7) == ndi.grey_dilation(gt, size=7), gt, 0)
        s, _ = _check(gt, eroded)
        assert 0 < s.seg < 1
        # merge pairs of distinct cells (their union covers all of each): k - 1 = 1 split per merge
        merged = gt.copy()
        for a, b in zip(ids[0:6:2], ids[1:6:2]):
            merged[merged == b] = a
        _, d = _check(gt, merged)
        assert (d.ns, d.fn, d.fp) == (len(ids[1:6:2]), 0, 0)
        # split one cell into two halves along x: neither half covers > 50 %, or one does
        split = gt.copy()
        ys, xs = np.nonzero(gt == ids[0])
        split[ys[xs > np.median(xs)], xs[xs > np.median(xs)]] = 60000
        _check(gt, split)
        gts.append(gt)
        preds.append(eroded)
    seq = seg_sequence(gts, preds)
    all_j = np.array([j for g, p in zip(gts, preds) for j in ref_seg(g, p)[1].values()])
    assert seq.n_ref == all_j.size and seq.seg == pytest.approx(all_j.mean(), abs=1e-12)


def test_pool_seg_pools_the_reference_objects_of_frames():
    from cellseg.metrics import pool_seg

    rng = np.random.default_rng(5)
    pairs = [random_label_pair(rng, ndim=2) for _ in range(4)]
    frames = [seg_score(g, p) for g, p in pairs]
    pooled = pool_seg(frames)
    n_ref = sum(f.n_ref for f in frames)
    assert pooled.n_ref == n_ref > 0 and pooled.frames == tuple(frames)
    assert pooled.seg == pytest.approx(sum(f.seg * f.n_ref for f in frames) / n_ref, abs=1e-12)
    assert pooled.seg == seg_sequence([g for g, _ in pairs], [p for _, p in pairs]).seg
    assert math.isnan(pool_seg([]).seg) and math.isnan(pool_seg([seg_score(np.zeros((3, 3), int),
                                                                             np.ones((3, 3), int))]).seg)
