"""Offsets (spatial embeddings): ours vs obvious NumPy implementations.

No packaged peer is installed (EmbedSeg is torch-based and not a dependency);
the "peer" columns are the reference twins of ``tests/reference/ref_offsets.py``:

* ``medoid``  all object medoids: ours (bounded search, parallel over objects)
  vs all-pairs ``scipy.spatial.distance.cdist`` per object (skipped, peer
  empty, when an object has more than 6000 pixels); equal = same pixels, or
  other pixels whose distance sums tie the minimum (float64 rounding).
* ``decode``  greedy clustering of the oracle outputs (default params): ours
  (numba, bucket grid) vs the plain loop scoring every mask pixel per seed
  (skipped above 600 objects); AP of ours.
* ``decode-noisy``  the oracle with 1 px rms noise on the offsets and the seed
  recomputed as the Gaussian score of the noisy embedding (ours only).

``roundtrip()`` (``python -m benchmarks._bench_offsets``) gives AP@0.5/0.75 of
decode(oracle) and of decode(noisy oracle) on the whole real data sets.
"""
from __future__ import annotations

import numpy as np

from benchmarks._bench_distance import _alternate, roundtrip_sets
from benchmarks._cases import ap

MAX_BRUTE_PIXELS = 6000
MAX_LOOP_OBJECTS = 600


def warmup():
    from cellseg.representations.offsets import Offsets

    lab = np.zeros((40, 40), np.int32)
    lab[5:15, 5:15] = 1
    lab[15:35, 18:30] = 7
    rep = Offsets()
    rep.decode(rep.oracle_outputs(lab))


def noisy_oracle(rep, lab, rng, px=1.0):
    o = rep.oracle_outputs(lab)
    off = o["offset"] + (px / rep.scale) * rng.standard_normal(o["offset"].shape).astype(np.float32)
    off[:, lab == 0] = 0
    u = rep.grid(lab.shape)
    centre = u + o["offset"]
    margin = np.exp(10 * o["sigma"].astype(np.float64))
    seed = np.exp(-(margin * (u + off - centre) ** 2).sum(0))
    seed[lab == 0] = 0
    return {"offset": off, "sigma": o["sigma"], "seed": seed[None].astype(np.float32)}


def run(cases, repeat: int = 3) -> list[dict]:
    from cellseg.representations.offsets import Offsets, medoids
    from tests.reference.ref_offsets import cluster_ref, medoid_ref

    warmup()
    rep = Offsets()
    p = rep.params()
    rows = []
    for case in cases:
        lab = case.labels
        sizes = np.bincount(lab.ravel())[1:]
        brute = sizes.max(initial=0) <= MAX_BRUTE_PIXELS
        t_o, t_p, m_o, m_p = _alternate(lambda: medoids(lab), (lambda: medoid_ref(lab)) if brute else None, repeat)
        if brute:
            diff = np.flatnonzero((m_o[1] != m_p[1]).any(1))
            ties = 0
            for k in diff:  # a different pixel is fine only if its sum ties the minimum
                pts, sums = m_p[3][k]
                j = np.flatnonzero((pts == m_o[1][k]).all(1))
                ties += int(j.size == 1 and sums[j[0]] <= sums.min() * (1 + 1e-12))
            eq = "same pixels" if diff.size == 0 else (
                f"{diff.size} other pixel(s), all tied sums" if ties == diff.size
                else f"FAIL: {diff.size - ties} not minimal")
        else:
            eq, t_p = f"peer skipped (object of {int(sizes.max())} px)", None
        rows.append(dict(case=case.name, operation="medoid", ours_s=t_o, peer_s=t_p, equal=eq))
        out = rep.oracle_outputs(lab)
        n_obj = int((sizes > 0).sum())
        loop = n_obj <= MAX_LOOP_OBJECTS
        t_o, t_p, l_o, l_p = _alternate(lambda: rep.decode(out, p).labels,
                                        (lambda: cluster_ref(rep, out, p)[0]) if loop else None, repeat)
        a_o = ap(lab, l_o)
        a_p = ap(lab, l_p) if loop else [None, None]
        eq = ("labels =" if np.array_equal(l_o, l_p) else "differ") if loop else f"peer skipped ({n_obj} objects)"
        rows.append(dict(case=case.name, operation="decode", ours_s=t_o, peer_s=t_p, ap50_ours=a_o[0],
                         ap75_ours=a_o[1], ap50_peer=a_p[0], ap75_peer=a_p[1], equal=eq,
                         note="peer: plain NumPy loop over seeds"))
        noisy = noisy_oracle(rep, lab, np.random.default_rng(0))
        t_o, _, l_o, _ = _alternate(lambda: rep.decode(noisy, p).labels, None, repeat)
        a_o = ap(lab, l_o)
        rows.append(dict(case=case.name, operation="decode-noisy", ours_s=t_o, peer_s=None,
                         ap50_ours=a_o[0], ap75_ours=a_o[1], equal="-", note="offsets + 1 px rms noise"))
    return rows


def roundtrip(max_per_set: int | None = None, verbose: bool = True) -> dict:
    """AP of decode(oracle) and decode(noisy oracle, 1 px) on the real sets."""
    from cellseg.representations.offsets import Offsets

    rep = Offsets()
    if verbose:
        print("oracle:")
    res = {"oracle": roundtrip_sets(rep, lambda r, lab: r.decode(r.oracle_outputs(lab)).labels,
                                    max_per_set, verbose)}
    rng = np.random.default_rng(0)
    if verbose:
        print("oracle + 1 px noise on the offsets:")
    res["noisy"] = roundtrip_sets(rep, lambda r, lab: r.decode(noisy_oracle(r, lab, rng)).labels,
                                  max_per_set, verbose)
    return res


if __name__ == "__main__":
    import argparse
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    a_ = argparse.ArgumentParser(description="Offsets oracle round trip on the real data")
    a_.add_argument("--max", type=int, default=None, help="at most this many images per set")
    roundtrip(a_.parse_args().max)
