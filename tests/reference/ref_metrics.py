"""Slow, obvious reference twins of cellseg.metrics (and random label pairs to test them on).

Deliberately different algorithms from the fast path:

* overlaps: one boolean mask per ground-truth object, counting the predicted
  ids under it (no joint histogram, no hashing);
* matching: the *dense* score matrix with StarDist's assignment cost on the
  whole matrix (no sparse decomposition), a Kuhn augmenting-path maximum
  matching for the TP count, and plain enumeration of all matchings on tiny
  cases;
* SEG / DET: loops over object masks with set operations.
"""
from __future__ import annotations

import itertools

import numpy as np
from scipy.optimize import linear_sum_assignment

INT_DTYPES = (np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.uint64, np.int64)


# --------------------------------------------------------------------------- overlaps


def ref_objects(y) -> dict[int, int]:
    """{id: area} of the non-zero ids of ``y``."""
    y = np.asarray(y)
    return {int(i): int(np.count_nonzero(y == i)) for i in np.unique(y) if i != 0}


def ref_overlaps(y_true, y_pred) -> dict[tuple[int, int], int]:
    """{(true id, pred id): shared pixels} for pairs sharing at least one pixel."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    out = {}
    for t in ref_objects(y_true):
        under = y_pred[y_true == t]
        for p in np.unique(under):
            if p != 0:
                out[(t, int(p))] = int(np.count_nonzero(under == p))
    return out


def ref_score(inter: int, area_t: int, area_p: int, criterion: str) -> float:
    if criterion == "iou":
        return inter / (area_t + area_p - inter)
    if criterion == "iot":
        return inter / area_t
    if criterion == "iop":
        return inter / area_p
    raise ValueError(criterion)


def ref_score_matrix(y_true, y_pred, criterion="iou"):
    """(true ids, pred ids, dense float64 score matrix) with zeros for disjoint pairs."""
    at, ap = ref_objects(y_true), ref_objects(y_pred)
    tids, pids = sorted(at), sorted(ap)
    s = np.zeros((len(tids), len(pids)), np.float64)
    ti = {t: i for i, t in enumerate(tids)}
    pi = {p: j for j, p in enumerate(pids)}
    for (t, p), n in ref_overlaps(y_true, y_pred).items():
        s[ti[t], pi[p]] = ref_score(n, at[t], ap[p], criterion)
    return tids, pids, s


# --------------------------------------------------------------------------- matching


def ref_max_matching_size(adj: list[list[int]], n_right: int) -> int:
    """Kuhn's augmenting-path maximum bipartite matching (cardinality only)."""
    match_r = [-1] * n_right

    def augment(u, seen):
        for v in adj[u]:
            if not seen[v]:
                seen[v] = True
                if match_r[v] == -1 or augment(match_r[v], seen):
                    match_r[v] = u
                    return True
        return False

    return sum(augment(u, [False] * n_right) for u in range(len(adj)))


def _stats(tp, n_true, n_pred, ssum):
    fp, fn = n_pred - tp, n_true - tp
    d = dict(tp=tp, fp=fp, fn=fn, n_true=n_true, n_pred=n_pred, score_sum=ssum)
    d["precision"] = tp / (tp + fp) if tp else 0.0
    d["recall"] = tp / (tp + fn) if tp else 0.0
    d["accuracy"] = tp / (tp + fp + fn) if tp else 0.0
    d["f1"] = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    d["mean_matched_score"] = ssum / tp if tp else 0.0
    d["mean_true_score"] = ssum / n_true if n_true else 0.0
    d["panoptic_quality"] = ssum / (tp + fp / 2 + fn / 2) if (tp + fp + fn) else 0.0
    return d


def ref_matching(y_true, y_pred, thresh=0.5, criterion="iou"):
    """Dense reference of cellseg.metrics.matching (StarDist semantics).

    Pairs qualify iff float32(score) >= float32(thresh); the assignment
    maximises the number of qualifying pairs, then the sum of all paired
    scores (StarDist's cost on the full matrix). Also checks the TP count
    against Kuhn's algorithm.
    """
    tids, pids, s64 = ref_score_matrix(y_true, y_pred, criterion)
    s32 = s64.astype(np.float32)
    t32 = np.float32(thresh)
    n_t, n_p = s64.shape
    pairs = []
    if min(n_t, n_p) == 0:
        tp, ssum = 0, 0.0
    else:
        n = min(n_t, n_p)
        ok = s32 >= t32
        r, c = linear_sum_assignment(-ok.astype(float) - s32.astype(float) / (2 * n))
        good = ok[r, c]
        tp = int(good.sum())
        ssum = float(s64[r[good], c[good]].sum())
        pairs = sorted((tids[i], pids[j]) for i, j in zip(r[good], c[good]))
        adj = [list(np.flatnonzero(ok[i])) for i in range(n_t)]
        assert ref_max_matching_size(adj, n_p) == tp
    d = _stats(tp, n_t, n_p, ssum)
    d["pairs"] = pairs
    return d


def ref_matching_enumerate(y_true, y_pred, thresh=0.5, criterion="iou"):
    """Enumerate every partial one-to-one matching (tiny inputs only) and keep
    the best by (number of qualifying pairs, sum of all paired scores).

    Returns the stats plus the set of qualifying-score sums over *all*
    optimal matchings (ties), so callers can accept any of them.
    """
    tids, pids, s64 = ref_score_matrix(y_true, y_pred, criterion)
    s32 = s64.astype(np.float32)
    t32 = np.float32(thresh)
    n_t, n_p = s64.shape
    assert n_t <= 6 and n_p <= 6, "enumeration is for tiny cases"
    best, best_sums = None, set()
    small, big, transpose = (n_t, n_p, False) if n_t <= n_p else (n_p, n_t, True)
    for perm in itertools.permutations(range(big), small):
        idx = [(i, j) if not transpose else (j, i) for i, j in enumerate(perm)]
        k = sum(1 for i, j in idx if s32[i, j] >= t32)
        total = sum(float(s32[i, j]) for i, j in idx)
        matched = round(sum(s64[i, j] for i, j in idx if s32[i, j] >= t32), 9)
        key = (k, round(total, 6))
        if best is None or key > best:
            best, best_sums = key, {matched}
        elif key == best:
            best_sums.add(matched)
    tp = best[0] if best else 0
    d = _stats(tp, n_t, n_p, min(best_sums) if best_sums else 0.0)
    d["score_sums"] = best_sums or {0.0}
    return d


# --------------------------------------------------------------------------- CTC


def ref_seg(gt, pred):
    """(SEG, {ref id: Jaccard}) by per-object masks: R matched by S iff |R∩S| > 0.5|R|."""
    gt, pred = np.asarray(gt), np.asarray(pred)
    jac = {}
    for r in ref_objects(gt):
        mr = gt == r
        j = 0.0
        for s in np.unique(pred[mr]):
            if s == 0:
                continue
            ms = pred == s
            inter = np.count_nonzero(mr & ms)
            if 2 * inter > np.count_nonzero(mr):
                j = inter / np.count_nonzero(mr | ms)
        jac[r] = j
    seg = float(np.mean(list(jac.values()))) if jac else float("nan")
    return seg, jac


def ref_det(gt, pred):
    """CTC DET by per-object loops (official weights, splitting cost per extra reference)."""
    gt, pred = np.asarray(gt), np.asarray(pred)
    refs, comps = ref_objects(gt), ref_objects(pred)
    covers = {c: 0 for c in comps}  # number of references each computed object matches
    fn = 0
    for r, area in refs.items():
        mr = gt == r
        hit = [int(c) for c in np.unique(pred[mr]) if c and 2 * np.count_nonzero(mr & (pred == c)) > area]
        assert len(hit) <= 1
        if hit:
            covers[hit[0]] += 1
        else:
            fn += 1
    fp = sum(1 for k in covers.values() if k == 0)
    ns = sum(k - 1 for k in covers.values() if k > 1)
    aogm = 5 * ns + 10 * fn + 1 * fp
    aogm0 = 10 * len(refs)
    det = 1 - min(aogm, aogm0) / aogm0 if aogm0 else float("nan")
    return dict(det=det, aogm=aogm, aogm0=aogm0, fn=fn, fp=fp, ns=ns)


# --------------------------------------------------------------------------- random inputs


def _paint_blobs(rng, shape, n, ids, out):
    """Paint ``n`` random ellipses/rectangles with ``ids`` (later ones overwrite)."""
    grids = np.indices(shape)
    for k in range(n):
        c = [rng.uniform(-2, s + 2) for s in shape]  # may sit on / past the border
        r = [rng.uniform(1, max(2.0, s / 3)) for s in shape]
        if rng.random() < 0.5:
            m = sum(((g - ci) / ri) ** 2 for g, ci, ri in zip(grids, c, r)) <= 1
        else:
            m = np.all([np.abs(g - ci) <= ri for g, ci, ri in zip(grids, c, r)], axis=0)
        out[m] = ids[k]
    return out


def random_label_pair(rng: np.random.Generator, dtype=None, ndim: int | None = None):
    """A random (y_true, y_pred) pair of small label images of one integer dtype.

    Objects touch and occlude each other, ids are non-sequential and may be
    large; the prediction is a perturbed copy (shift, merges, splits, misses,
    extra objects, dilation) or, sometimes, unrelated.
    """
    dtype = np.dtype(dtype if dtype is not None else INT_DTYPES[rng.integers(len(INT_DTYPES))])
    ndim = ndim or (3 if rng.random() < 0.15 else 2)
    shape = tuple(int(rng.integers(4, 10)) for _ in range(ndim - 2)) + tuple(
        int(rng.integers(6, 40)) for _ in range(2))
    hi = min(int(np.iinfo(dtype).max), 10**6)
    n = int(rng.integers(0, 12))
    pool = np.arange(1, hi + 1) if hi < 10**5 else rng.integers(1, hi, 4 * n + 4)
    ids_t = rng.choice(pool, size=n, replace=False) if n else np.zeros(0, int)
    yt = _paint_blobs(rng, shape, n, ids_t, np.zeros(shape, np.int64))
    mode = rng.random()
    if mode < 0.15:  # unrelated prediction
        m = int(rng.integers(0, 12))
        ids_p = rng.integers(1, hi + 1, m)
        yp = _paint_blobs(rng, shape, m, ids_p, np.zeros(shape, np.int64))
    else:
        yp = yt.copy()
        if rng.random() < 0.5:  # shift
            ax = int(rng.integers(ndim))
            yp = np.roll(yp, int(rng.integers(-2, 3)), axis=ax)
        present = [int(i) for i in np.unique(yp) if i]
        if len(present) >= 2 and rng.random() < 0.4:  # merge two objects
            a, b = rng.choice(present, 2, replace=False)
            yp[yp == b] = a
        present = [int(i) for i in np.unique(yp) if i]
        if present and rng.random() < 0.4:  # split one object along its middle row
            a = int(rng.choice(present))
            pos = np.argwhere(yp == a)
            mid = np.median(pos[:, -2])
            cut = (yp == a) & (np.indices(shape)[-2] > mid)
            yp[cut] = int(rng.integers(1, hi + 1))
        if present and rng.random() < 0.3:  # drop one object
            yp[yp == int(rng.choice(present))] = 0
        if rng.random() < 0.3:  # grow everything by one pixel along one axis
            ax = int(rng.integers(ndim))
            grown = np.maximum(yp, np.roll(yp, 1, axis=ax))
            yp = np.where(yp == 0, grown, yp)
        if rng.random() < 0.4:  # extra objects
            m = int(rng.integers(1, 4))
            yp = _paint_blobs(rng, shape, m, rng.integers(1, hi + 1, m), yp)
        if rng.random() < 0.5:  # relabel with other (non-sequential) ids
            u = [int(i) for i in np.unique(yp) if i]
            new = rng.choice(np.arange(1, hi + 1) if hi < 10**5 else rng.integers(1, hi, 4 * len(u) + 4),
                             size=len(u), replace=False)
            lut = {0: 0, **dict(zip(u, (int(v) for v in new)))}
            yp = np.vectorize(lut.get, otypes=[np.int64])(yp)
    return yt.astype(dtype), yp.astype(dtype)
