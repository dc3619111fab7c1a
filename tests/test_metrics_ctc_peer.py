"""cellseg.metrics SEG and DET against py-ctcmetrics (1.3.3), the Cell Tracking Challenge's
Python evaluation, on real CTC annotations.

The reference is the annotation (DIC-C2DH-HeLa 01 silver truth, Fluo-N2DL-HeLa 01 gold truth);
the result is a seeded, perturbed copy of it (objects dropped, eroded, dilated, cut in two,
neighbours merged, false objects added, the whole frame shifted) so that every term of both
measures is exercised: partial Jaccards, unmatched references (FN), unmatched results (FP) and
merges (NS). Both sides are written as a CTC sequence (``GT/SEG``, ``GT/TRA`` + ``man_track.txt``,
``RES/mask*.tif`` + ``res_track.txt``) and py-ctcmetrics' ``evaluate_sequence`` scores it;
the per-frame matches and Jaccards of its ``match`` are compared one by one with ours.

Where the definitions agree the values are equal (to 1e-12; the counts exactly):

* matching: R is matched by S iff |R ∩ S| > 0.5 |R| (strict), in both;
* SEG: the Jaccards of all reference objects of all frames pooled in one mean, unmatched ones 0;
* DET: AOGM-D = 5 NS + 10 FN + 1 FP with NS = sum of (k - 1) over result objects that match
  k > 1 references, AOGM-D0 = 10 x references, summed over frames, DET = 1 - min(AOGM-D,
  AOGM-D0) / AOGM-D0.

Where they differ:

* DET's reference. The CTC (and py-ctcmetrics) detects against the *tracking* markers,
  ``TRA/man_track*.tif``, on every frame; cellseg's ``det_sequence`` against whatever reference
  labels it is given (normally the segmentation truth, which for most CTC sets covers only some
  frames). Here the TRA markers are the segmentation truth itself, so the two coincide; pass the
  TRA markers to ``det_sequence`` to get the challenge's DET.
* No reference object at all: cellseg's SEG and DET are NaN; py-ctcmetrics' SEG is 0 and its
  DET divides by zero (``test_no_reference_object``).
* py-ctcmetrics' ``match`` assumes that both images contain background (label 0): a reference
  object covering every pixel is dropped. cellseg has no such assumption; the frames here all
  have background.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

from cellseg.metrics import det_sequence, seg_sequence

ctc = pytest.importorskip("ctc_metrics")
from ctc_metrics.metrics import det as ctc_det  # noqa: E402
from ctc_metrics.metrics import seg as ctc_seg  # noqa: E402
from ctc_metrics.utils.representations import match as ctc_match  # noqa: E402

pytestmark = [pytest.mark.peer, pytest.mark.data]


def _perturb(ref: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A plausible segmentation result made from the reference: every kind of CTC error."""
    out = np.roll(ref, (rng.integers(-2, 3), rng.integers(-2, 3)), axis=(0, 1)).astype(np.int64)
    ids = np.unique(out[out > 0])
    rng.shuffle(ids)
    k = max(1, len(ids) // 10)
    boxes = ndi.find_objects(out)

    def crop(i, pad=4):  # the object's box grown by pad (views into out)
        b = boxes[i - 1]
        return tuple(slice(max(0, s.start - pad), s.stop + pad) for s in b)

    for i in ids[:k]:                             # dropped: FN
        w = out[crop(i, 0)]
        w[w == i] = 0
    for i in ids[k:4 * k]:                        # eroded 1-6 px: from nearly the same to unmatched
        w = out[crop(i)]
        m = w == i
        w[m & ~ndi.binary_erosion(m, iterations=int(rng.integers(1, 7)))] = 0
    for i in ids[4 * k:5 * k]:                    # dilated into the background only
        w = out[crop(i)]
        w[ndi.binary_dilation(w == i, iterations=int(rng.integers(1, 4))) & (w == 0)] = i
    nxt = int(ref.max()) + 1
    for i in ids[5 * k:6 * k]:                    # cut in two: the larger piece may still match
        w = out[crop(i, 0)]
        m = w == i
        rows = np.nonzero(m)[0]
        if rows.size < 2:
            continue
        cut_row = np.quantile(rows, rng.uniform(0.3, 0.7))
        w[m & (np.arange(w.shape[0])[:, None] > cut_row)] = nxt
        nxt += 1
    merged = 0                                    # touching neighbours merged: NS
    for i in ids[6 * k:]:
        w = out[crop(i)]
        m = w == i
        if not m.any():
            continue
        nb = np.unique(w[ndi.binary_dilation(m, iterations=2) & ~m])
        nb = nb[(nb > 0) & (nb != i)]
        if nb.size:
            out[out == nb[0]] = i
            merged += 1
        if merged == max(1, k // 2):
            break
    yy, xx = np.ogrid[: out.shape[0], : out.shape[1]]
    for _ in range(k):                            # false objects in the background: FP
        cy, cx = rng.integers(10, out.shape[0] - 10), rng.integers(10, out.shape[1] - 10)
        disc = ((yy - cy) ** 2 + (xx - cx) ** 2 <= int(rng.integers(3, 9)) ** 2) & (out == 0)
        out[disc] = nxt
        nxt += 1
    return out


def _ctc_sequence(tmp_path, refs, results):
    """Write refs / results as a CTC sequence, every object a one-frame track with an id unique
    in the sequence (py-ctcmetrics validates the result's track file against the masks)."""
    gt_seg, gt_tra, res = tmp_path / "GT" / "SEG", tmp_path / "GT" / "TRA", tmp_path / "RES"
    for d in (gt_seg, gt_tra, res):
        d.mkdir(parents=True)
    ref_off = res_off = 0
    ref_tracks, res_tracks, out_refs, out_res = [], [], [], []
    for t, (r, s) in enumerate(zip(refs, results)):
        r2, s2 = r.astype(np.int64), s.astype(np.int64)
        r2[r2 > 0] += ref_off
        s2[s2 > 0] += res_off
        ref_ids, res_ids = np.unique(r2[r2 > 0]), np.unique(s2[s2 > 0])
        ref_tracks += [f"{i} {t} {t} 0" for i in ref_ids]
        res_tracks += [f"{i} {t} {t} 0" for i in res_ids]
        ref_off, res_off = int(r2.max()), int(s2.max())
        assert max(ref_off, res_off) < 2 ** 15     # py-ctcmetrics adds the ids in the files' dtype
        r2, s2 = r2.astype(np.uint16), s2.astype(np.uint16)
        tifffile.imwrite(gt_seg / f"man_seg{t:03d}.tif", r2)
        tifffile.imwrite(gt_tra / f"man_track{t:03d}.tif", r2)
        tifffile.imwrite(res / f"mask{t:03d}.tif", s2)
        out_refs.append(r2)
        out_res.append(s2)
    (gt_tra / "man_track.txt").write_text("\n".join(ref_tracks) + "\n")
    (res / "res_track.txt").write_text("\n".join(res_tracks) + "\n")
    return tmp_path / "GT", res, out_refs, out_res


def _frames(folder, indices):
    files = sorted(folder.glob("man_seg*.tif"))
    if not files:
        pytest.skip(f"no man_seg*.tif in {folder}")
    return [tifffile.imread(files[i]) for i in indices if i < len(files)]


def _compare(tmp_path, refs, seed):
    rng = np.random.default_rng(seed)
    results = [_perturb(r, rng) for r in refs]
    gt_dir, res_dir, refs, results = _ctc_sequence(tmp_path, refs, results)

    seg = seg_sequence(refs, results)
    det = det_sequence(refs, results)
    # the perturbation must make a non-trivial case: every term of AOGM-D present
    assert det.fn > 0 and det.fp > 0 and det.ns > 0, det
    assert 0.3 < seg.seg < 0.95 and 0.3 < det.det < 0.99, (seg.seg, det.det)

    # frame by frame: the same matched pairs and the same Jaccards
    for t, (ours, r, s) in enumerate(zip(seg.frames, refs, results)):
        labels_ref, labels_comp, mapped_ref, mapped_comp, ious = ctc_match(
            str(gt_dir / "SEG" / f"man_seg{t:03d}.tif"), str(res_dir / f"mask{t:03d}.tif"))
        assert labels_ref == ours.ref_ids.tolist()
        assert labels_comp == np.unique(s[s > 0]).tolist()
        got = {int(i): int(j) for i, j in zip(ours.ref_ids, ours.matched_ids) if j}
        assert dict(zip(mapped_ref, mapped_comp)) == got
        jac = ours.as_dict()
        assert [jac[i] for i in mapped_ref] == pytest.approx(ious, abs=1e-12, rel=0)
        assert all(jac[i] == 0 for i in set(labels_ref) - set(mapped_ref))
        assert det.frames[t].tp == len(mapped_ref)

    theirs = ctc.evaluate_sequence(str(res_dir), str(gt_dir), metrics=["DET", "SEG"], threads=1)
    assert theirs["SEG"] == pytest.approx(seg.seg, abs=1e-12, rel=0)
    assert theirs["DET"] == pytest.approx(det.det, abs=1e-12, rel=0)

    # and the AOGM-D terms themselves, from py-ctcmetrics' graph-correction counter
    from ctc_metrics.utils.representations import count_acyclic_graph_correction_operations
    m = [ctc_match(str(gt_dir / "TRA" / f"man_track{t:03d}.tif"), str(res_dir / f"mask{t:03d}.tif"))
         for t in range(len(refs))]
    ops = count_acyclic_graph_correction_operations(None, None, *[[x[i] for x in m] for i in range(4)])
    assert (int(ops["NS"]), int(ops["FN"]), int(ops["FP"]), int(ops["TP"])) == (det.ns, det.fn, det.fp, det.tp)
    assert int(ops["num_vertices"]) == det.n_ref
    return seg, det


def test_dic_hela_silver_truth(dic_hela, tmp_path):
    refs = _frames(dic_hela / "01_ST" / "SEG", [0, 41, 83])
    seg, det = _compare(tmp_path, refs, seed=16)
    assert seg.n_ref == sum(len(np.unique(r)) - 1 for r in refs)


def test_fluo_n2dl_hela_gold_truth(fluo_hela, tmp_path):
    refs = _frames(fluo_hela / "01_GT" / "SEG", [0, 3])
    _compare(tmp_path, refs, seed=5)


def test_no_reference_object():
    """The one case where the definitions part: no reference object in the whole sequence."""
    z = np.zeros((8, 8), np.uint16)
    s = z.copy()
    s[2:4, 2:4] = 1
    assert math.isnan(seg_sequence([z], [s]).seg)
    assert math.isnan(det_sequence([z], [s]).det)
    assert ctc_seg([[]], [np.zeros(0)]) == 0.0
    with pytest.raises(ZeroDivisionError):
        ctc_det(NS=0, FN=0, FP=1, num_vertices=0)
