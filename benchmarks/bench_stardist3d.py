"""StarDist 3D: ours vs the ``stardist`` package's 3D code, side by side on the same inputs.

Usage (from the repository root)::

    .venv/bin/python -m benchmarks.bench_stardist3d [--quick] [--repeat N] [--n-rays 96] [--json FILE]

Cases: synthetic nuclei volumes (:func:`cellseg.datasets.synthetic.synthetic_cells_3d`),
isotropic and with a Z step of 2 and 4 pixels (the rays and the probability target use
that anisotropy; StarDist gets ``Rays_GoldenSpiral(n_rays, anisotropy=(a, 1, 1))``).
Rows per case:

* ``star_dist3d``  ray targets: ``stardist3d.star_dist3d`` vs ``stardist.geometry.star_dist3D``;
  equal = max |difference|.
* ``edt_prob3d``   probability target: ours vs ``stardist.utils.edt_prob(lbl, anisotropy)``.
* ``decode``       NMS + rasterisation from network-like outputs: the oracle outputs with
  noise (distances x lognormal(0, 0.1), probability + N(0, 0.05)), then the foreground
  values replaced by their ranks spread over (0, 1) so that no two scores tie (StarDist
  orders ties its own way); prob_thresh 0.5, nms_thresh 0.4, border 2. Ours =
  ``StarDist3D.decode``; peer = ``stardist.nms.non_maximum_suppression_3d`` +
  ``stardist.geometry.polyhedron_to_label``. Both include the candidate selection. AP at
  IoU 0.5 of both against the ground truth; ``equal``: whether the kept sets (centres)
  are the same, and the voxels where the label images differ.

Timings alternate ours / peer ``repeat`` times after one untimed call of each (numba
compiles then); medians are reported, with the ratio peer / ours (> 1: ours is faster).
The machine's thread count applies to both (numba threads; StarDist's OpenMP).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np

from benchmarks._cases import alternate, ap

PROB_THRESH = 0.5
NMS_THRESH = 0.4
BORDER = 2


def _cases(quick: bool):
    from cellseg.datasets.synthetic import synthetic_cells_3d

    if quick:
        specs = [("iso-32x64x64", (32, 64, 64), 1.0), ("z2-16x64x64", (16, 64, 64), 2.0),
                 ("z4-10x64x64", (10, 64, 64), 4.0)]
    else:
        specs = [("iso-64x128x128", (64, 128, 128), 1.0), ("z2-32x128x128", (32, 128, 128), 2.0),
                 ("z4-16x128x128", (16, 128, 128), 4.0)]
    return [(name, synthetic_cells_3d(shape, radius=(6, 10), anisotropy=a, seed=7)[1], a)
            for name, shape, a in specs]


def _outputs(rep, lab, seed=0):
    rng = np.random.default_rng(seed)
    o = rep.oracle_outputs(lab)
    prob = o["prob"][0] + rng.normal(0, 0.05, lab.shape).astype(np.float32)
    dist = np.maximum(o["dist"] * rng.lognormal(0, 0.1, o["dist"].shape).astype(np.float32), np.float32(1e-3))
    fg = lab > 0
    v = prob[fg].astype(np.float64) + rng.uniform(0, 1e-9, int(fg.sum()))
    rank = np.empty(v.size)
    rank[np.argsort(v, kind="stable")] = np.arange(v.size)
    p = np.zeros(lab.shape, np.float32)
    p[fg] = ((rank + 1) / (v.size + 1)).astype(np.float32)
    return p, dist.astype(np.float32)


def run(quick: bool = False, repeat: int = 3, n_rays: int = 96) -> list[dict]:
    from cellseg.representations import get

    try:
        import stardist
        from stardist.geometry import polyhedron_to_label, star_dist3D
        from stardist.nms import non_maximum_suppression_3d
        from stardist.utils import edt_prob
    except Exception as e:  # pragma: no cover - depends on the environment
        print(f"note: stardist not importable ({e}); peer columns empty")
        stardist = None

    rows = []
    for name, lab, a in _cases(quick):
        rep = get("stardist", ndim=3, n_rays=n_rays, anisotropy=a)
        rays, faces = rep.rays
        peer_rays = stardist.Rays_GoldenSpiral(n_rays, anisotropy=(a, 1, 1)) if stardist else None
        from cellseg.representations import stardist3d as S3

        # targets
        t_ours, t_peer, d_ours, d_peer = alternate(
            lambda: S3.star_dist3d(lab, rays), (lambda: star_dist3D(lab, peer_rays)) if stardist else None, repeat)
        eq = f"max|diff| {np.abs(d_ours.transpose(1, 2, 3, 0) - d_peer).max():.2g}" if stardist else ""
        rows.append(dict(case=name, operation="star_dist3d", ours_s=t_ours, peer_s=t_peer, equal=eq))
        t_ours, t_peer, p_ours, p_peer = alternate(
            lambda: S3.edt_prob3d(lab, a), (lambda: edt_prob(lab, (a, 1, 1))) if stardist else None, repeat)
        eq = f"max|diff| {np.abs(p_ours - p_peer).max():.2g}" if stardist else ""
        rows.append(dict(case=name, operation="edt_prob3d", ours_s=t_ours, peer_s=t_peer, equal=eq))

        # decode
        prob, dist = _outputs(rep, lab)
        params = {"prob_thresh": PROB_THRESH, "nms_thresh": NMS_THRESH, "border": BORDER}

        def ours():
            return rep.decode({"prob": prob[None], "dist": dist}, params)

        def peer():
            pts, pr, di = non_maximum_suppression_3d(dist.transpose(1, 2, 3, 0), prob, peer_rays,
                                                     nms_thresh=NMS_THRESH, prob_thresh=PROB_THRESH, b=BORDER)
            return pts, polyhedron_to_label(di, pts, peer_rays, lab.shape, prob=pr, verbose=False)

        t_ours, t_peer, dec, res = alternate(ours, peer if stardist else None, repeat)
        row = dict(case=name, operation="decode", ours_s=t_ours, peer_s=t_peer,
                   n_candidates=dec.extra["n_candidates"], kept=dec.n_objects, n_true=int(len(np.unique(lab)) - 1),
                   ap50_ours=ap(lab, dec.labels, (0.5,))[0])
        if stardist:
            pts_peer, lab_peer = res
            same = sorted(map(tuple, dec.extra["points"].tolist())) == sorted(map(tuple, pts_peer.tolist()))
            row.update(ap50_peer=ap(lab, lab_peer, (0.5,))[0], kept_peer=len(pts_peer),
                       equal=f"kept set {'same' if same else 'DIFFERENT'}; "
                             f"{int(((dec.labels > 0) != (lab_peer > 0)).sum())} voxels differ")
        rows.append(row)
    return rows


def main(argv=None) -> int:
    ap_ = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap_.add_argument("--quick", action="store_true", help="small volumes (32x64x64 and thinner)")
    ap_.add_argument("--repeat", type=int, default=3)
    ap_.add_argument("--n-rays", type=int, default=96)
    ap_.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = ap_.parse_args(argv)
    rows = run(args.quick, args.repeat, args.n_rays)
    print(f"{'case':<16} {'operation':<12} {'ours s':>8} {'peer s':>8} {'ratio':>7}  {'AP50 ours/peer':>15}  equal")
    for r in rows:
        ratio = f"{r['peer_s'] / r['ours_s']:.1f}x" if r.get("peer_s") else ""
        apc = f"{r['ap50_ours']:.3f}/{r.get('ap50_peer', float('nan')):.3f}" if "ap50_ours" in r else ""
        peer_s = f"{r['peer_s']:.3f}" if r.get("peer_s") is not None else ""
        print(f"{r['case']:<16} {r['operation']:<12} {r['ours_s']:8.3f} {peer_s:>8} {ratio:>7}  {apc:>15}  "
              f"{r.get('equal', '')}")
        if r["operation"] == "decode":
            print(f"{'':<16} {'':<12} candidates {r['n_candidates']}, kept {r['kept']} (peer {r.get('kept_peer')}), "
                  f"true objects {r['n_true']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
