"""Cellpose / Omnipose flows: ours vs ``cellpose.dynamics`` (CPU), side by side.

Rows per case:

* ``targets``       Cellpose flow targets: ``Flows("cellpose").encode`` vs
  ``cellpose.dynamics.labels_to_flows([labels])`` (CPU torch). ``equal``: share
  of object pixels whose unit flows agree (cosine > 0.99), overall and away
  from pixels touching another object (Cellpose's gradient reads the heat of a
  touching neighbour, ours does not).
* ``decode``        from the same dP (our 5x oracle flows) and cell probability
  (logits +-10 for cellpose, prob 1/0 for us): ``Flows("cellpose").decode``
  (niter 200, flow_threshold 0.4, min_size 15) vs
  ``cellpose.dynamics.compute_masks(dP, cellprob, niter=200, min_size=15)``.
  AP of both against the ground truth.
* ``targets-omni`` / ``decode-omni``  Omnipose mode, ours only (no peer
  installed): time and AP of the round trip.

Timings alternate ours / peer ``repeat`` times; medians are reported.
"""
from __future__ import annotations

import numpy as np

from benchmarks._cases import alternate as _alternate
from benchmarks._cases import ap


def _peer():
    try:
        from benchmarks._peers import cellpose_dynamics

        return cellpose_dynamics()
    except Exception as e:  # pragma: no cover - depends on the environment
        print(f"note: cellpose.dynamics not importable ({e}); peer columns empty")
        return None


def _touching(lab):
    from scipy import ndimage as ndi

    big = np.iinfo(np.int32).max
    mx = ndi.maximum_filter(lab, size=3, mode="constant", cval=0)
    mn = ndi.minimum_filter(np.where(lab == 0, big, lab), size=3, mode="constant", cval=big)
    return (lab > 0) & (((mx != lab) & (mx > 0)) | ((mn != lab) & (mn < big)))


def warmup():
    from cellseg.representations.flows import Flows

    lab = np.zeros((48, 48), np.int32)
    lab[5:20, 5:20] = 1
    lab[22:40, 18:34] = 7
    for mode in ("cellpose", "omnipose"):
        rep = Flows(mode)
        rep.decode(rep.oracle_outputs(lab))


def run(cases, repeat: int = 3) -> list[dict]:
    from cellseg.representations.flows import Flows

    dyn = _peer()
    warmup()
    rows = []
    cp = Flows("cellpose")
    op = Flows("omnipose")
    for case in cases:
        lab = np.ascontiguousarray(case.labels, np.int32)
        fg = lab > 0
        # ---- Cellpose targets
        t_o, t_p, enc, flows_p = _alternate(
            lambda: cp.encode(lab),
            (lambda: dyn.labels_to_flows([lab.copy()])[0]) if dyn else None, repeat)
        eq = "-"
        if dyn is not None:
            ids_equal = np.array_equal(flows_p[0] > 0, fg)
            cos = (enc["flow"] / 5.0 * flows_p[2:]).sum(0)
            clean = fg & ~_touching(lab)
            eq = (f"cos>0.99: {np.mean(cos[fg] > 0.99):.4f} all, {np.mean(cos[clean] > 0.99):.4f} non-touching"
                  + ("" if ids_equal else " (fg differs!)"))
        rows.append(dict(case=case.name, operation="targets", ours_s=t_o, peer_s=t_p, equal=eq))
        # ---- Cellpose decode from the same dP / cellprob
        out = cp.oracle_outputs(lab)
        cellprob = np.where(out["prob"][0] > 0.5, 10.0, -10.0).astype(np.float32)
        t_o, t_p, dec, m_p = _alternate(
            lambda: cp.decode(out),
            (lambda: dyn.compute_masks(out["flow"], cellprob, niter=200, min_size=15)) if dyn else None, repeat)
        a_o = ap(lab, dec.labels)
        row = dict(case=case.name, operation="decode", ours_s=t_o, peer_s=t_p, ap50_ours=a_o[0], ap75_ours=a_o[1])
        if dyn is not None:
            a_p = ap(lab, m_p.astype(np.int32))
            row.update(ap50_peer=a_p[0], ap75_peer=a_p[1],
                       equal=f"n ours {dec.n_objects}, peer {int(m_p.max())}, gt {case.n_objects}")
        rows.append(row)
        # ---- Omnipose mode (ours only)
        t_o, _, out_o, _ = _alternate(lambda: op.encode(lab), None, repeat)
        rows.append(dict(case=case.name, operation="targets-omni", ours_s=t_o))
        t_o, _, dec_o, _ = _alternate(lambda: op.decode(out_o), None, repeat)
        a_o = ap(lab, dec_o.labels)
        rows.append(dict(case=case.name, operation="decode-omni", ours_s=t_o, ap50_ours=a_o[0], ap75_ours=a_o[1],
                         equal=f"n ours {dec_o.n_objects}, gt {case.n_objects}"))
    return rows


if __name__ == "__main__" and len(__import__("sys").argv) == 1:  # tiny local check: python -m benchmarks._bench_flows
    from benchmarks._cases import Case
    from cellseg.datasets.synthetic import synthetic_cells

    lab = synthetic_cells((256, 256), n_cells=50, seed=0)[1]
    for r in run([Case("synth-256", lab)], repeat=1):
        print(r)


# ----------------------------------------------------------------------------- round trip on real data


def roundtrip(mode: str = "omnipose", max_per_set: int | None = None, verbose: bool = True,
              params: dict | None = None) -> dict:
    """AP@0.5 / AP@0.75 of ``decode(encode(labels))`` against the labels on the real data.

    Sets: DIC-C2DH-HeLa silver truth (01 and 02; large, lobed, touching cells)
    and Fluo-N2DL-HeLa gold truth. Default decoder knobs (``params`` overrides
    them). Returns {set: dict(n, ap50 mean/min, ap75 mean, worst frames)}.
    """
    from benchmarks._cases import data_dir, roundtrip_label_sets, roundtrip_scores
    from cellseg.representations.flows import Flows

    rep = Flows(mode)
    p = rep.params(**(params or {}))
    sets = roundtrip_label_sets(data_dir(), dsb=None)
    res = {}
    for name, files in sets.items():
        files, a50, a75 = roundtrip_scores(files, lambda lab: rep.decode(rep.oracle_outputs(lab), p).labels,
                                           max_per_set)
        order = np.argsort(a50)[:5]
        worst = [(f"{files[i].parent.parent.name}/{files[i].name}", round(a50[i], 4)) for i in order]
        res[name] = dict(n=len(files), ap50_mean=float(np.mean(a50)), ap50_min=float(np.min(a50)),
                         ap75_mean=float(np.mean(a75)), worst=worst)
        if verbose:
            print(f"{mode:9s} {name:13s} n={len(files):4d}  AP@0.5 mean {np.mean(a50):.4f} (min {np.min(a50):.4f})  "
                  f"AP@0.75 mean {np.mean(a75):.4f}  worst {worst}", flush=True)
    return res


if __name__ == "__main__" and len(__import__("sys").argv) > 1:  # python -m benchmarks._bench_flows roundtrip ...
    import argparse

    ap_ = argparse.ArgumentParser(description="Flows oracle round trip on the real data")
    ap_.add_argument("what", choices=["roundtrip"])
    ap_.add_argument("--mode", default="omnipose", choices=["cellpose", "omnipose"])
    ap_.add_argument("--max", type=int, default=None, help="at most this many images per set")
    a = ap_.parse_args()
    roundtrip(a.mode, a.max)
