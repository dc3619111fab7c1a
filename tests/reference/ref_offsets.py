"""Slow, obvious twins of the offsets representation kernels.

* :func:`medoid_ref` — all-pairs distance matrix per object (scipy cdist),
  argmin of the row sums.
* :func:`cluster_ref` — the greedy clustering as a plain loop: every seed
  scores every mask pixel with NumPy (no spatial grid).
* :func:`lovasz_ref_integral` / :func:`lovasz_ref_greedy_max` — the Lovász
  extension of the Jaccard loss at a non-negative error vector, by the
  threshold integral ``int_0^inf Delta({i: m_i >= t}) dt`` and by the maximum
  over all permutations of the chain sums (valid because the Jaccard loss is
  submodular); the set function is evaluated from its definition.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
from scipy.spatial.distance import cdist


def medoid_ref(labels, anisotropy=1.0):
    """Returns (ids, coords (n, ndim), sums (n,), all_sums list of per-pixel sums)."""
    lab = np.asarray(labels)
    spacing = np.array([anisotropy, 1.0, 1.0] if lab.ndim == 3 else [1.0, 1.0])
    ids = [int(i) for i in np.unique(lab) if i != 0]
    coords, sums, all_sums = [], [], []
    for i in ids:
        pts = np.argwhere(lab == i)  # raster order
        s = cdist(pts * spacing, pts * spacing).sum(1)
        k = int(np.argmin(s))
        coords.append(pts[k])
        sums.append(s[k])
        all_sums.append((pts, s))
    return (np.array(ids, np.int64), np.array(coords, np.int64).reshape(-1, lab.ndim),
            np.array(sums), all_sums)


def cluster_ref(rep, outputs, p, gain=10.0):
    """Greedy clustering (see cellseg.representations.offsets) as an obvious loop."""
    # thresholds at float32 precision, like the outputs
    fg_thresh = float(np.float32(p.fg_thresh))
    seed_thresh = float(np.float32(p.seed_thresh))
    seedmap = outputs["seed"][0].astype(np.float64)
    mask = seedmap > fg_thresh
    labels = np.zeros(seedmap.shape, np.int32)
    if mask.sum() == 0 or mask.sum() <= p.min_mask_sum:
        return labels, []
    where = np.nonzero(mask)
    spacing = rep.spacing
    emb = np.stack([w * sp / rep.scale for w, sp in zip(where, spacing)], 1)
    emb = emb + outputs["offset"][(slice(None), *where)].T.astype(np.float64)
    sig = outputs["sigma"][(slice(None), *where)].T.astype(np.float64)
    seed = seedmap[where]
    ids = np.zeros(len(seed), np.int32)
    unclustered = np.ones(len(seed), bool)
    k = 0
    scores = []
    while unclustered.sum() > p.min_unclustered_sum:
        cand = np.where(unclustered, seed, -np.inf)
        s = int(np.argmax(cand))  # first maximum = lowest raster index
        if seed[s] < seed_thresh:
            break
        margin = np.array([math.exp(gain * v) for v in sig[s]])
        q = np.zeros(len(seed))
        for d in range(emb.shape[1]):
            q += (emb[:, d] - emb[s, d]) * (emb[:, d] - emb[s, d]) * margin[d]
        prop = q < math.log(2.0)
        new = prop & unclustered
        if new.sum() >= p.min_size and new.sum() > p.new_fraction * prop.sum():
            k += 1
            ids[new] = k
            scores.append(seed[s])
        unclustered[prop] = False
    labels[where] = ids
    return labels, scores


def jaccard_loss_of_set(S, gt):
    """Delta(S) = 1 - IoU when the pixels in S are mispredicted, from the definition."""
    P = {i for i, g in enumerate(gt) if g}
    pred = (P - S) | {i for i in S if not gt[i]}
    union = P | pred
    if not union:
        return 0.0
    return 1.0 - len(P & pred) / len(union)


def lovasz_ref_integral(m, gt):
    m = [float(v) for v in m]
    levels = sorted({v for v in m if v > 0})
    total, prev = 0.0, 0.0
    for t in levels:
        S = {i for i, v in enumerate(m) if v >= t}
        total += (t - prev) * jaccard_loss_of_set(S, gt)
        prev = t
    return total


def lovasz_ref_greedy_max(m, gt):
    n = len(m)
    best = -np.inf
    for perm in itertools.permutations(range(n)):
        val, S, prev = 0.0, set(), 0.0
        for i in perm:
            S = S | {i}
            cur = jaccard_loss_of_set(S, gt)
            val += m[i] * (cur - prev)
            prev = cur
        best = max(best, val)
    return best
