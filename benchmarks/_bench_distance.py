"""Distance maps: ours vs the obvious SciPy / scikit-image implementation.

There is no packaged peer for this representation; the "peer" columns are
the scipy/skimage pipeline a user would write (the reference twins in
``tests/reference/ref_distance.py``):

* ``encode``    normalized distance: ours (label-aware separable EDT, one
  pass for all objects) vs one ``scipy.ndimage.distance_transform_edt`` per
  object; equal = max |difference|.
* ``h_maxima``  on the smoothed oracle distance: ours (union-find) vs
  ``skimage.morphology.h_maxima``; equal = differing pixels.
* ``watershed`` from the decoder's markers: ours vs
  ``skimage.segmentation.watershed``; equal = differing pixels.
* ``decode``    the whole decoder on the oracle outputs (default
  :class:`DistanceParams`) vs the same pipeline with skimage's h_maxima and
  watershed; AP of ours against the ground truth.

``roundtrip()`` (``python -m benchmarks._bench_distance``) gives AP@0.5/0.75 of
decode(oracle) on the whole real data sets.
"""
from __future__ import annotations

import numpy as np

from benchmarks._cases import alternate as _alternate
from benchmarks._cases import ap


def warmup():
    from cellseg.representations.distance import DistanceMap

    lab = np.zeros((40, 40), np.int32)
    lab[5:15, 5:15] = 1
    lab[15:35, 18:30] = 7
    rep = DistanceMap()
    rep.decode(rep.oracle_outputs(lab))
    from cellseg.representations.distance import watershed

    watershed(np.zeros((4, 4)), np.ones((4, 4), np.int32), connectivity=2)


def run(cases, repeat: int = 3) -> list[dict]:
    from scipy import ndimage as ndi
    from skimage.morphology import h_maxima as sk_h_maxima
    from skimage.segmentation import watershed as sk_watershed

    from cellseg.representations import distance as D
    from tests.reference.ref_distance import decode_ref, normalized_distance_ref

    warmup()
    rep = D.DistanceMap()
    p = rep.params()
    rows = []
    for case in cases:
        lab = case.labels
        t_o, t_p, d_o, d_p = _alternate(lambda: D.normalized_distance(lab),
                                        lambda: normalized_distance_ref(lab), repeat)
        diff = float(np.abs(d_o - d_p).max()) if d_o.size else 0.0
        rows.append(dict(case=case.name, operation="encode", ours_s=t_o, peer_s=t_p,
                         equal=f"max|d|={diff:.1e}" + (" OK" if diff <= 1e-6 else " FAIL")))
        out = rep.oracle_outputs(lab)
        fg = out["fg"][0] > p.fg_thresh
        dist = ndi.gaussian_filter(out["dist"][0].astype(np.float64), p.smooth_sigma, mode="nearest")
        dist[~fg] = 0
        t_o, t_p, h_o, h_p = _alternate(lambda: D.h_maxima(dist, p.h), lambda: sk_h_maxima(dist, p.h), repeat)
        n = int(np.count_nonzero(h_o != h_p.astype(bool)))
        rows.append(dict(case=case.name, operation="h_maxima", ours_s=t_o, peer_s=t_p,
                         equal="px =" if n == 0 else f"{n} px differ"))
        markers = rep._markers(dist, fg, p)
        t_o, t_p, w_o, w_p = _alternate(lambda: D.watershed(-dist, markers, fg),
                                        lambda: sk_watershed(-dist, markers, mask=fg), repeat)
        n = int(np.count_nonzero(w_o != w_p))
        rows.append(dict(case=case.name, operation="watershed", ours_s=t_o, peer_s=t_p,
                         equal="px =" if n == 0 else f"{n} px differ"))
        t_o, t_p, l_o, l_p = _alternate(lambda: rep.decode(out, p).labels,
                                        lambda: decode_ref(out["dist"][0], out["fg"][0], 1.0, p), repeat)
        a_o, a_p = ap(lab, l_o), ap(lab, l_p)
        n = int(np.count_nonzero(l_o != l_p))
        rows.append(dict(case=case.name, operation="decode", ours_s=t_o, peer_s=t_p,
                         ap50_ours=a_o[0], ap75_ours=a_o[1], ap50_peer=a_p[0], ap75_peer=a_p[1],
                         equal="labels =" if n == 0 else f"{n} px differ",
                         note="peer: scipy/skimage pipeline (h_maxima + watershed)"))
    return rows


def roundtrip(max_per_set: int | None = None, verbose: bool = True) -> dict:
    """AP@0.5 / AP@0.75 of decode(oracle(labels)) with the default params on the real sets.

    Sets: DSB2018 (all masks, and the fluorescence subset), DIC-C2DH-HeLa silver
    truth (01 and 02), Fluo-N2DL-HeLa gold truth. Reports the mean per image and
    the pooled AP (TP, FP, FN summed over the set).
    """
    from cellseg.representations.distance import DistanceMap

    return roundtrip_sets(DistanceMap(), lambda rep, lab: rep.decode(rep.oracle_outputs(lab)).labels,
                          max_per_set, verbose)


def roundtrip_sets(rep, decode, max_per_set=None, verbose=True) -> dict:
    """AP of ``decode(rep, labels)`` against ``labels`` over the real data sets."""
    import tifffile

    from benchmarks._cases import data_dir, roundtrip_label_sets, without_multi_piece

    sets = roundtrip_label_sets(data_dir(), dsb="all")
    # Fluo-N2DL gold truth stores some cells as several disconnected pieces under
    # one id; its second line scores only the ids a decoder can reproduce
    connected_name = "fluo-n2dl-gt (connected ids)"
    if "fluo-n2dl-gt" in sets:
        sets[connected_name] = sets["fluo-n2dl-gt"]
    cache: dict = {}  # (file, connected ids only) -> counts; each file is decoded once
    res = {}
    for name, files in sets.items():
        files = files[:max_per_set] if max_per_set else files
        a50, a75, pooled = [], [], np.zeros((2, 3))
        connected = name == connected_name
        for f in files:
            if (f, connected) not in cache:
                lab = tifffile.imread(str(f)).astype(np.int32)
                pred = decode(rep, lab)
                cache[(f, False)] = (_ap_counts(lab, pred, 0.5), _ap_counts(lab, pred, 0.75))
                if f in sets.get(connected_name, ()):
                    lab, pred, _ = without_multi_piece(lab, pred)
                    cache[(f, True)] = (_ap_counts(lab, pred, 0.5), _ap_counts(lab, pred, 0.75))
            c50, c75 = cache[(f, connected)]
            pooled += np.array([c50, c75])
            a50.append(c50[0] / max(1, sum(c50)) if sum(c50) else 1.0)
            a75.append(c75[0] / max(1, sum(c75)) if sum(c75) else 1.0)
        res[name] = dict(n=len(files), ap50_mean=float(np.mean(a50)), ap50_min=float(np.min(a50)),
                         ap75_mean=float(np.mean(a75)), ap50_pooled=float(pooled[0, 0] / pooled[0].sum()),
                         ap75_pooled=float(pooled[1, 0] / pooled[1].sum()))
        if verbose:
            r = res[name]
            print(f"{name:28s} n={r['n']:4d}  AP@0.5 mean {r['ap50_mean']:.4f} (min {r['ap50_min']:.4f}) "
                  f"pooled {r['ap50_pooled']:.4f}   AP@0.75 mean {r['ap75_mean']:.4f} pooled {r['ap75_pooled']:.4f}",
                  flush=True)
    return res


def _ap_counts(y_true, y_pred, th):
    """(TP, FP, FN) at IoU ``th`` (``cellseg.metrics.matching``)."""
    from cellseg.metrics import matching

    m = matching(y_true, y_pred, thresh=th)
    return m.tp, m.fp, m.fn


if __name__ == "__main__":
    import argparse
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    a_ = argparse.ArgumentParser(description="DistanceMap oracle round trip on the real data")
    a_.add_argument("--max", type=int, default=None, help="at most this many images per set")
    roundtrip(a_.parse_args().max)
