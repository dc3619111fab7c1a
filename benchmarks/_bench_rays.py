"""StarDist rays: ours vs the ``stardist`` package, side by side.

Rows per case (32 rays, grid 1):

* ``star_dist``  ray targets: ``cellseg...stardist.star_dist`` vs
  ``stardist.geometry.star_dist``; equal = max |difference| (must be <= 1e-3).
* ``edt_prob``   object probability: ours vs ``stardist.utils.edt_prob``.
* ``decode``     from the oracle outputs (perfect prob + dist), prob_thresh 0.5,
  nms_thresh 0.4, border 2: ours = ``StarDist.decode`` (candidates, sort, NMS,
  rasterisation); peer = ``stardist.nms.non_maximum_suppression`` +
  ``stardist.geometry.polygons_to_label``. AP of both against the ground truth.
  Equality is checked on identical sorted candidates (untimed): kept set of our
  NMS vs ``stardist.nms.non_maximum_suppression_inds``, and our rasterisation
  of the kept polygons vs ``polygons_to_label``.

Timings alternate ours / peer ``repeat`` times; medians are reported.
"""
from __future__ import annotations

import numpy as np

from benchmarks._cases import alternate as _alternate
from benchmarks._cases import ap

N_RAYS = 32
PROB_THRESH = 0.5
NMS_THRESH = 0.4
BORDER = 2


def _peer():
    try:
        from benchmarks._peers import stardist_modules

        nms, geometry, _ = stardist_modules()
        from stardist.utils import edt_prob

        return nms, geometry, edt_prob
    except Exception as e:  # pragma: no cover - depends on the environment
        print(f"note: stardist not importable ({e}); peer columns empty")
        return None


def _same_partition(a: np.ndarray, b: np.ndarray) -> tuple[bool, int]:
    """Whether two label images are equal up to a renaming of ids; pixels that differ."""
    a = a.ravel().astype(np.int64)
    b = b.ravel().astype(np.int64)
    if not np.array_equal(a == 0, b == 0):
        return False, int(np.count_nonzero((a == 0) != (b == 0)))
    pairs = np.unique(np.stack([a, b]), axis=1)
    ok = pairs.shape[1] == np.unique(a).size == np.unique(b).size
    if ok:
        return True, 0
    # pixels whose (a, b) pair is not the majority partner of a
    key = a * (int(b.max()) + 1) + b
    uk, cnt = np.unique(key, return_counts=True)
    best = {}
    for k_, c_ in zip(uk, cnt):
        ia = int(k_ // (int(b.max()) + 1))
        if c_ > best.get(ia, (0, 0))[0]:
            best[ia] = (c_, k_)
    good = sum(c for c, _ in best.values())
    return False, int(a.size - good)


def warmup():
    from cellseg.representations.stardist import StarDist, star_dist

    lab = np.zeros((40, 40), np.int32)
    lab[5:15, 5:15] = 1
    lab[20:35, 18:30] = 7
    rep = StarDist(N_RAYS)
    rep.decode(rep.oracle_outputs(lab))
    star_dist(lab, N_RAYS)


def run(cases, repeat: int = 3) -> list[dict]:
    from cellseg.representations import stardist as S

    peer = _peer()
    warmup()
    rows = []
    rep = S.StarDist(N_RAYS)
    params = rep.params(prob_thresh=PROB_THRESH, nms_thresh=NMS_THRESH, border=BORDER)
    for case in cases:
        lab = case.labels
        lab_u16 = lab.astype(np.uint16)
        # ---- ray targets
        t_o, t_p, d_o, d_p = _alternate(
            lambda: S.star_dist(lab, N_RAYS),
            (lambda: peer[1].star_dist(lab_u16, N_RAYS)) if peer else None, repeat)
        eq = "-"
        if peer:
            diff = float(np.abs(d_o.transpose(1, 2, 0) - d_p).max()) if d_o.size else 0.0
            eq = f"max|d|={diff:.1e}" + (" OK" if diff <= 1e-3 else " FAIL")
        rows.append(dict(case=case.name, operation="star_dist", ours_s=t_o, peer_s=t_p, equal=eq))
        # ---- probability targets
        t_o, t_p, p_o, p_p = _alternate(
            lambda: S.edt_prob(lab), (lambda: peer[2](lab)) if peer else None, repeat)
        eq = "-"
        if peer:
            diff = float(np.abs(p_o - p_p).max())
            eq = f"max|d|={diff:.1e}" + (" OK" if diff <= 1e-5 else " FAIL")
        rows.append(dict(case=case.name, operation="edt_prob", ours_s=t_o, peer_s=t_p, equal=eq))
        # ---- decode from oracle outputs
        outputs = rep.oracle_outputs(lab)
        prob2d = outputs["prob"][0]
        dist_hwr = np.ascontiguousarray(outputs["dist"].transpose(1, 2, 0))

        def ours():
            return rep.decode(outputs, params, shape=lab.shape).labels

        def theirs():
            pts, probi, disti = peer[0].non_maximum_suppression(
                dist_hwr, prob2d, grid=(1, 1), b=BORDER, nms_thresh=NMS_THRESH, prob_thresh=PROB_THRESH)
            return peer[1].polygons_to_label(disti, pts, prob=probi, shape=lab.shape)

        t_o, t_p, l_o, l_p = _alternate(ours, theirs if peer else None, repeat)
        a_o = ap(lab, l_o)
        a_p = ap(lab, l_p) if peer else [None, None]
        eq, note = "-", ""
        if peer:
            pts, sc, d = S.candidates(prob2d, outputs["dist"], PROB_THRESH, BORDER)
            coords = S.dist_to_coord(d, pts)
            keep, _ = S._nms_coords(coords, pts, NMS_THRESH, "min")
            inds = peer[0].non_maximum_suppression_inds(d, pts.astype(np.int32), scores=sc,
                                                        thresh=NMS_THRESH, verbose=0)
            n_diff = int(np.count_nonzero(inds != keep))
            L_o = S.polygons_to_label(coords[keep], lab.shape, prob=sc[keep])
            L_p = peer[1].polygons_to_label(d[keep], pts[keep], prob=sc[keep], shape=lab.shape)
            px = int(np.count_nonzero(L_o != L_p))
            eq = (f"kept {'same' if n_diff == 0 else f'{n_diff} differ'} ({int(keep.sum())}), "
                  f"px {'same' if px == 0 else f'{px} differ'}")
            same, npx = _same_partition(l_o, l_p)
            same_text = "same labels" if same else f"differ on {npx} px (tie order)"
            note = f"{sc.size} candidates; full pipelines {same_text}"
        rows.append(dict(case=case.name, operation="decode", ours_s=t_o, peer_s=t_p,
                         ap50_ours=a_o[0], ap75_ours=a_o[1], ap50_peer=a_p[0], ap75_peer=a_p[1],
                         equal=eq, note=note))
    return rows


# ----------------------------------------------------------------------------- round trip on real data


def roundtrip(max_per_set: int | None = None, n_rays: int = N_RAYS, border: int = BORDER,
              verbose: bool = True) -> dict:
    """AP@0.5 / AP@0.75 of decode(oracle(labels)) against labels on the real data sets.

    Sets: DSB2018 fluorescence masks, DIC-C2DH-HeLa silver truth (01 and 02),
    Fluo-N2DL-HeLa gold truth. Returns {set: dict(n, ap50 mean/min, ap75 mean)}.
    Decode knobs: prob 0.5, nms 0.4 and ``border`` (StarDist's b, default 2:
    small objects cut by the image border can be lost; 0 keeps them).
    """
    from benchmarks._cases import data_dir, roundtrip_label_sets, roundtrip_scores
    from cellseg.representations.stardist import StarDist

    rep = StarDist(n_rays)
    params = rep.params(prob_thresh=PROB_THRESH, nms_thresh=NMS_THRESH, border=border)
    sets = roundtrip_label_sets(data_dir(), dsb="fluorescence")
    res = {}
    for name, files in sets.items():
        files, a50, a75 = roundtrip_scores(
            files, lambda lab: rep.decode(rep.oracle_outputs(lab), params, shape=lab.shape).labels, max_per_set)
        res[name] = dict(n=len(files), ap50_mean=float(np.mean(a50)), ap50_min=float(np.min(a50)),
                         ap75_mean=float(np.mean(a75)))
        if verbose:
            print(f"{name:14s} n={len(files):4d}  AP@0.5 mean {np.mean(a50):.4f} (min {np.min(a50):.4f})  "
                  f"AP@0.75 mean {np.mean(a75):.4f}", flush=True)
    return res


if __name__ == "__main__":
    import argparse
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    ap_ = argparse.ArgumentParser(description="StarDist oracle round trip on the real data")
    ap_.add_argument("--max", type=int, default=None, help="at most this many images per set")
    ap_.add_argument("--n-rays", type=int, default=N_RAYS)
    ap_.add_argument("--border", type=int, default=BORDER)
    a = ap_.parse_args()
    roundtrip(a.max, a.n_rays, a.border)
