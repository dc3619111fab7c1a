"""numba kernels behind :mod:`cellseg.metrics.matching` (private).

Kernel contract (checked by the public callers, not here):

* label arrays are 1-D, C-contiguous ``int32`` with values ``>= 0``
  (0 = background) and of equal length;
* ``max_a`` / ``max_b`` are their maxima (small enough that arrays of
  ``max + 1`` int64 counters fit in memory: the caller compacts ids larger
  than both 2**22 and the number of pixels).

Nothing here compiles at import: ``@jit`` compiles on first call and caches.
"""
from __future__ import annotations

import numpy as np

from cellseg._numba import jit

__all__ = ["minmax_int32", "overlap_int32"]

# Fibonacci hashing constant (2**64 / golden ratio), used as a multiplicative hash
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@jit
def minmax_int32(a):
    """(min, max) of a 1-D int32 array; (0, 0) when it is empty."""
    n = a.shape[0]
    if n == 0:
        return 0, 0
    lo = a[0]
    hi = a[0]
    for k in range(1, n):
        v = a[k]
        if v < lo:
            lo = v
        elif v > hi:
            hi = v
    return lo, hi


@jit
def _slot(key, bits):
    h = np.uint64(key) * _GOLDEN
    return np.int64(h >> np.uint64(64 - bits))


@jit
def _insert(keys, vals, bits, key, count):
    """Add ``count`` to ``key``'s counter; return 1 if the key was new, else 0."""
    mask = keys.shape[0] - 1
    i = _slot(key, bits)
    while True:
        k = keys[i]
        if k == key:
            vals[i] += count
            return 0
        if k == -1:
            keys[i] = key
            vals[i] = count
            return 1
        i = (i + 1) & mask


@jit
def _flush(cnt_a, cnt_b, keys, vals, bits, stride, la, lb, run):
    """Count a run of ``run`` pixels labelled ``(la, lb)``; return 1 if it added a table key, else 0."""
    cnt_a[la] += run
    cnt_b[lb] += run
    if la != 0 and lb != 0:
        return _insert(keys, vals, bits, np.int64(la) * stride + lb, run)
    return 0


@jit
def _compact(cnt, max_v):
    """The ids ``1..max_v`` with a non-zero count: ``(ids, areas, lut)``, where
    ``lut`` maps an id to its index among them (-1 when absent)."""
    n = 0
    for v in range(1, max_v + 1):
        if cnt[v] > 0:
            n += 1
    ids = np.empty(n, np.int64)
    area = np.empty(n, np.int64)
    lut = np.full(max_v + 1, -1, np.int32)
    j = 0
    for v in range(1, max_v + 1):
        if cnt[v] > 0:
            ids[j] = v
            area[j] = cnt[v]
            lut[v] = j
            j += 1
    return ids, area, lut


@jit
def _scan(a, b, max_a, max_b, bits):
    """One pass: per-id pixel counts and a hash table of (a, b) pair counts.

    Returns ``(ok, cnt_a, cnt_b, keys, vals, used)``; ``ok`` is False when the
    table (``2**bits`` slots) would pass half full, and the caller retries
    with a larger one. Keeping the table fixed inside the loop lets numba keep
    the loop tight (growing it in place made the whole scan ~3x slower).
    """
    n = a.shape[0]
    cnt_a = np.zeros(max_a + 1, np.int64)
    cnt_b = np.zeros(max_b + 1, np.int64)
    keys = np.full(1 << bits, -1, np.int64)
    vals = np.zeros(1 << bits, np.int64)
    limit = (1 << bits) // 2
    stride = np.int64(max_b) + 1
    used = 0
    if n == 0:
        return True, cnt_a, cnt_b, keys, vals, used
    # run-length over the scan: counters and the table are only touched when
    # the (a, b) pair changes, i.e. about once per object boundary crossing
    la = a[0]
    lb = b[0]
    run = np.int64(0)
    for k in range(n):
        va = a[k]
        vb = b[k]
        if va == la and vb == lb:
            run += 1
            continue
        used += _flush(cnt_a, cnt_b, keys, vals, bits, stride, la, lb, run)
        if used >= limit:
            return False, cnt_a, cnt_b, keys, vals, used
        la = va
        lb = vb
        run = 1
    used += _flush(cnt_a, cnt_b, keys, vals, bits, stride, la, lb, run)
    if used >= limit:
        return False, cnt_a, cnt_b, keys, vals, used
    return True, cnt_a, cnt_b, keys, vals, used


@jit
def overlap_int32(a, b, max_a, max_b):
    """Sparse joint histogram of two label arrays.

    Parameters
    ----------
    a, b : 1-D C-contiguous int32, same length, values in ``[0, max_a]`` and ``[0, max_b]``.

    Returns
    -------
    ids_a : int64 (n_a,)  sorted non-zero ids present in ``a``
    area_a : int64 (n_a,)  their pixel counts
    ids_b, area_b : the same for ``b``
    pair_a : int32 (m,)  index into ``ids_a`` of each overlapping pair
    pair_b : int32 (m,)  index into ``ids_b``
    inter : int64 (m,)  number of pixels with ``a == ids_a[pair_a]`` and ``b == ids_b[pair_b]``

    Pairs are the (non-zero, non-zero) id pairs that share at least one pixel,
    sorted by (a id, b id).
    """
    n = a.shape[0]
    stride = np.int64(max_b) + 1
    # room for a few pairs per possible object, never more than one per pixel,
    # and at most 2**20 slots (16 MiB) to start with: sparse large ids would
    # otherwise size the table by the id range; more pairs than that take a
    # rescan with a 4x larger table (rare: > 512k overlapping pairs)
    want = min(n, 4 * (max_a + max_b + 64), 1 << 19)
    bits = 10
    while (1 << bits) < 2 * want:
        bits += 1
    while True:
        ok, cnt_a, cnt_b, keys, vals, used = _scan(a, b, max_a, max_b, bits)
        if ok:
            break
        bits += 2

    # compact ids: lut maps an id to its index among the present ids
    ids_a, area_a, lut_a = _compact(cnt_a, max_a)
    ids_b, area_b, lut_b = _compact(cnt_b, max_b)

    # gather and sort the pairs by key (= by a id, then b id)
    pk = np.empty(used, np.int64)
    pv = np.empty(used, np.int64)
    j = 0
    for i in range(keys.shape[0]):
        if keys[i] != -1:
            pk[j] = keys[i]
            pv[j] = vals[i]
            j += 1
    order = np.argsort(pk)
    pair_a = np.empty(used, np.int32)
    pair_b = np.empty(used, np.int32)
    inter = np.empty(used, np.int64)
    for i in range(used):
        key = pk[order[i]]
        pair_a[i] = lut_a[key // stride]
        pair_b[i] = lut_b[key % stride]
        inter[i] = pv[order[i]]
    return ids_a, area_a, ids_b, area_b, pair_a, pair_b, inter
