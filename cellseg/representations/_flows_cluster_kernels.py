"""Numba kernels of the grouping of flow end points into objects (private; see
``flows.py``): the Cellpose histogram clustering (seeds grown through the
histogram of end points) and the Omnipose affinity grouping (linked neighbour
pixels, region merging, absorption of fragments).
"""
from __future__ import annotations

import math

import numpy as np

from cellseg._numba import find_root, jit

# ----------------------------------------------------------------------------- Cellpose clustering


@jit
def histogram_seeds(cells, shape, seed_min, pool):
    """Histogram of final cells and its seeds.

    ``cells`` int64 flat indices of the final (integer) positions. A seed is a
    bin whose count exceeds ``seed_min`` and equals the maximum of the
    ``(2*pool+1)^ndim`` window around it (clipped to the image). Returns the
    histogram (int32, flat) and the seeds' flat indices sorted by count
    ascending, ties by flat index ascending.
    """
    nd = len(shape)
    size = 1
    for s in shape:
        size *= s
    hist = np.zeros(size, np.int32)
    for i in range(cells.size):
        hist[cells[i]] += 1
    strides = np.ones(nd, np.int64)
    for a in range(nd - 2, -1, -1):
        strides[a] = strides[a + 1] * shape[a + 1]
    cand = np.empty(size, np.int64)
    nc = 0
    for q in range(size):
        if hist[q] > seed_min:
            cand[nc] = q
            nc += 1
    seeds = np.empty(nc, np.int64)
    ns = 0
    coord = np.empty(nd, np.int64)
    lo = np.empty(nd, np.int64)
    hi = np.empty(nd, np.int64)
    cur = np.empty(nd, np.int64)
    for j in range(nc):
        q = cand[j]
        r = q
        for a in range(nd):
            coord[a] = r // strides[a]
            r -= coord[a] * strides[a]
            lo[a] = max(coord[a] - pool, 0)
            hi[a] = min(coord[a] + pool, shape[a] - 1)
        hq = hist[q]
        ok = True
        for a in range(nd):
            cur[a] = lo[a]
        while ok:
            qq = 0
            for a in range(nd):
                qq += cur[a] * strides[a]
            if hist[qq] > hq:
                ok = False
                break
            # advance the odometer
            a = nd - 1
            while a >= 0:
                cur[a] += 1
                if cur[a] <= hi[a]:
                    break
                cur[a] = lo[a]
                a -= 1
            if a < 0:
                break
        if ok:
            seeds[ns] = q
            ns += 1
    seeds = seeds[:ns]
    counts = np.empty(ns, np.int64)
    for j in range(ns):
        counts[j] = hist[seeds[j]]
    idx = np.argsort(counts, kind="mergesort")
    return hist, seeds[idx]


@jit
def grow_seeds(hist, shape, seeds, grow_min, radius):
    """Grow every seed by ``radius`` steps of 3^ndim dilation restricted to bins
    with count > ``grow_min``; later seeds (more counts) overwrite earlier ones.

    Returns the seed map (int32, flat): ``rank + 1`` of the owning seed, 0 none.
    """
    nd = len(shape)
    size = hist.size
    strides = np.ones(nd, np.int64)
    for a in range(nd - 2, -1, -1):
        strides[a] = strides[a + 1] * shape[a + 1]
    L = 2 * radius + 1
    wsize = 1
    for a in range(nd):
        wsize *= L
    wstr = np.ones(nd, np.int64)
    for a in range(nd - 2, -1, -1):
        wstr[a] = wstr[a + 1] * L
    M = np.zeros(size, np.int32)
    ok = np.zeros(wsize, np.bool_)
    cur = np.zeros(wsize, np.bool_)
    nxt = np.zeros(wsize, np.bool_)
    gpos = np.empty(wsize, np.int64)
    coord = np.empty(nd, np.int64)
    wc = np.empty(nd, np.int64)
    for r in range(seeds.size):
        q = seeds[r]
        rr = q
        for a in range(nd):
            coord[a] = rr // strides[a]
            rr -= coord[a] * strides[a]
        # window bins: allowed when inside the image and count > grow_min
        for w in range(wsize):
            rem = w
            inside = True
            g = 0
            for a in range(nd):
                wc[a] = rem // wstr[a]
                rem -= wc[a] * wstr[a]
                c = coord[a] + wc[a] - radius
                if c < 0 or c >= shape[a]:
                    inside = False
                g += c * strides[a]
            gpos[w] = g if inside else -1
            ok[w] = inside and hist[g] > grow_min
            cur[w] = False
        cur[wsize // 2] = True
        for _ in range(radius):
            for w in range(wsize):
                nxt[w] = False
                if not ok[w]:
                    continue
                rem = w
                for a in range(nd):
                    wc[a] = rem // wstr[a]
                    rem -= wc[a] * wstr[a]
                # any neighbour (3^nd, clipped to the window) in cur?
                found = False
                nn = 1
                for a in range(nd):
                    nn *= 3
                for k in range(nn):
                    kr = k
                    wq = 0
                    valid = True
                    for a in range(nd - 1, -1, -1):
                        d = (kr % 3) - 1
                        kr //= 3
                        c = wc[a] + d
                        if c < 0 or c >= L:
                            valid = False
                            break
                        wq += c * wstr[a]
                    if valid and cur[wq]:
                        found = True
                        break
                nxt[w] = found
            for w in range(wsize):
                cur[w] = nxt[w]
        for w in range(wsize):
            if cur[w]:
                M[gpos[w]] = r + 1
    return M


@jit
def lookup(M, cells, out):
    for i in range(cells.size):
        out[i] = M[cells[i]]


# ----------------------------------------------------------------------------- Omnipose grouping


_find = find_root  # union-find root with path compression (cellseg._numba)


@jit
def link_points(index, shape, final, link2, flow, tau, full, depth, min_depth, merge_frac, absorb_ratio, out):
    """Omnipose grouping: connected components of linked foreground pixels,
    region merging, then absorption of fragments.

    ``index``: int64 flat image, point index of each foreground pixel (raster
    order) or -1; ``final``: float64 ``(ndim, P)`` end points; ``flow``:
    float64 ``(ndim, P)`` unit flows at the pixels; ``depth``: float64 ``(P,)``
    distance-to-boundary of the pixels. Neighbours are the face neighbours
    (``full`` False: 4- / 6-connectivity) or all (``full`` True).

    A neighbour pair (i, j) is *compatible* when its end points lie within
    ``sqrt(link2)`` and its flows do not pull it apart,
    ``(f_j - f_i) . e_ij <= tau`` (``e_ij`` the unit vector from i to j).

    1. Link compatible pairs with ``max(depth_i, depth_j) >= min_depth``
       (two pixels both on the outer ring of their objects -- where two cells
       touch -- are never linked directly); components by union-find.
    2. Region merging: for every pair of adjacent components (a, b), ``n_ab``
       neighbour pairs join them and ``g_ab`` of those are compatible (depth
       ignored). The smaller component of each adjacent pair (fewer pixels;
       equal: the larger root index) picks its best neighbour -- highest
       ``g/n``, then highest ``g``, then lowest root index -- and merges into it
       when ``g/n >= merge_frac`` (thin necks and one-pixel tips cut off in
       step 1 go back to their cell; a contact between two cells has few
       compatible pairs). Repeated until no merge; ``merge_frac > 1``
       disables the step.
    3. Absorption of fragments: the *peak* of a component is its highest
       ``depth`` (its inscribed radius on the distance head). A component ``s``
       whose peak is below ``absorb_ratio`` times the peak of an adjacent
       component ``o`` is a fragment of it (a lobe or sliver cut off behind a
       neck, not a cell); it picks, among such ``o``, the one joined to it by
       the most neighbour pairs (then the lowest root index) and merges into
       it. All picks of a round are applied together; rounds repeat until none
       absorbs (a sliver touching only a neck piece reaches the cell once the
       neck piece has joined it). ``absorb_ratio <= 0`` disables the step.

    Writes component ids ``1..k`` (numbered by first point in raster order) to
    ``out`` and returns ``k``.
    """
    nd = len(shape)
    P = final.shape[1]
    parent = np.arange(P)
    strides = np.ones(nd, np.int64)
    for a in range(nd - 2, -1, -1):
        strides[a] = strides[a + 1] * shape[a + 1]
    nn = 1
    for a in range(nd):
        nn *= 3
    half = nn // 2  # offsets after the centre in raster order are "forward"
    # the forward neighbour offsets in use
    use = np.zeros(nn, np.bool_)
    for k in range(half + 1, nn):
        kr = k
        nz = 0
        for a in range(nd):
            if (kr % 3) != 1:
                nz += 1
            kr //= 3
        use[k] = full or nz == 1
    coord = np.empty(nd, np.int64)
    # pairs (i, j) of neighbours, and whether they are compatible; pass 1 links
    cap = P * (half if full else nd)
    pi = np.empty(cap, np.int64)
    pj = np.empty(cap, np.int64)
    pg = np.empty(cap, np.bool_)
    npairs = 0
    for q in range(index.size):
        i = index[q]
        if i < 0:
            continue
        r = q
        for a in range(nd):
            coord[a] = r // strides[a]
            r -= coord[a] * strides[a]
        for k in range(half + 1, nn):
            if not use[k]:
                continue
            kr = k
            qq = 0
            valid = True
            for a in range(nd - 1, -1, -1):
                d = (kr % 3) - 1
                kr //= 3
                c = coord[a] + d
                if c < 0 or c >= shape[a]:
                    valid = False
                    break
                qq += c * strides[a]
            if not valid:
                continue
            j = index[qq]
            if j < 0:
                continue
            d2 = 0.0
            for a in range(nd):
                dd = final[a, i] - final[a, j]
                d2 += dd * dd
            # rate at which the flows move the pair apart along its axis
            rel = 0.0
            nrm = 0.0
            kr = k
            for a in range(nd - 1, -1, -1):
                dd = (kr % 3) - 1
                kr //= 3
                rel += (flow[a, j] - flow[a, i]) * dd
                nrm += dd * dd
            rel /= math.sqrt(nrm)
            good = d2 <= link2 and rel <= tau
            pi[npairs] = i
            pj[npairs] = j
            pg[npairs] = good
            npairs += 1
            if good and max(depth[i], depth[j]) >= min_depth:
                ri = _find(parent, i)
                rj = _find(parent, j)
                if ri != rj:
                    if ri < rj:
                        parent[rj] = ri
                    else:
                        parent[ri] = rj
    if merge_frac <= 1.0:
        while _merge_regions(parent, pi[:npairs], pj[:npairs], pg[:npairs], merge_frac):
            pass
    if absorb_ratio > 0.0:
        while _absorb_fragments(parent, pi[:npairs], pj[:npairs], pg[:npairs], depth, absorb_ratio):
            pass
    k = 0
    lab = np.zeros(P, np.int32)
    for i in range(P):
        r = _find(parent, i)
        if r == i:
            k += 1
            lab[i] = k
        out[i] = lab[r]
    return k


@jit
def _merge_regions(parent, pi, pj, pg, merge_frac):
    """One round of step 2 of :func:`link_points` on the union-find ``parent``
    (in place); returns the number of merges."""
    P = parent.size
    root = np.empty(P, np.int64)
    size = np.zeros(P, np.int64)
    for i in range(P):
        root[i] = _find(parent, i)
        size[root[i]] += 1
    # adjacent component pairs (a < b), counted after sorting
    keys = _pair_keys(root, pi, pj, pg)
    m = keys.size
    # best neighbour of each (smaller) component: fraction g/n, then g, then lowest root
    best = np.full(P, -1, np.int64)
    best_g = np.zeros(P, np.int64)
    best_n = np.ones(P, np.int64)
    t = 0
    while t < m:
        key = keys[t] // 2
        cnt = 0
        g = 0
        while t < m and keys[t] // 2 == key:
            cnt += 1
            g += keys[t] % 2
            t += 1
        a = key // P
        b = key - a * P
        # the smaller of the two picks (equal sizes: the larger root index)
        if size[a] < size[b] or (size[a] == size[b] and a > b):
            s, o = a, b
        else:
            s, o = b, a
        # compare g / cnt with best_g / best_n exactly (integers)
        lhs = g * best_n[s]
        rhs = best_g[s] * cnt
        if best[s] < 0 or lhs > rhs or (lhs == rhs and (g > best_g[s] or (g == best_g[s] and o < best[s]))):
            best[s] = o
            best_g[s] = g
            best_n[s] = cnt
    for s in range(P):
        if best[s] >= 0 and not best_g[s] >= merge_frac * best_n[s]:
            best[s] = -1
    return _join_picks(parent, best)


@jit
def _absorb_fragments(parent, pi, pj, pg, depth, ratio):
    """One round of step 3 of :func:`link_points` on the union-find ``parent``
    (in place); returns the number of fragments absorbed."""
    P = parent.size
    root = np.empty(P, np.int64)
    peak = np.full(P, -np.inf)
    for i in range(P):
        r = _find(parent, i)
        root[i] = r
        if depth[i] > peak[r]:
            peak[r] = depth[i]
    keys = _pair_keys(root, pi, pj, pg)
    m = keys.size
    best = np.full(P, -1, np.int64)
    best_n = np.zeros(P, np.int64)
    t = 0
    while t < m:
        key = keys[t] // 2
        cnt = 0
        while t < m and keys[t] // 2 == key:
            cnt += 1
            t += 1
        a = key // P
        b = key - a * P
        for side in range(2):
            s, o = (a, b) if side == 0 else (b, a)
            if peak[s] < ratio * peak[o]:
                if best[s] < 0 or cnt > best_n[s] or (cnt == best_n[s] and o < best[s]):
                    best[s] = o
                    best_n[s] = cnt
    return _join_picks(parent, best)


@jit
def _pair_keys(root, pi, pj, pg):
    """Sorted keys ``(a * P + b) * 2 + compatible`` (a < b roots) of the
    neighbour pairs (pi, pj) that join two different components."""
    P = root.size
    n = pi.size
    keys = np.empty(n, np.int64)
    m = 0
    for t in range(n):
        a = root[pi[t]]
        b = root[pj[t]]
        if a == b:
            continue
        if a > b:
            a, b = b, a
        keys[m] = (a * P + b) * 2 + (1 if pg[t] else 0)
        m += 1
    return np.sort(keys[:m])


@jit
def _join_picks(parent, best):
    """Union every component ``s`` with ``best[s]`` (>= 0; -1: none) in the
    union-find ``parent`` (the lower root becomes the root); returns the number
    of unions made."""
    joined = 0
    for s in range(parent.size):
        if best[s] >= 0:
            ra = _find(parent, s)
            rb = _find(parent, best[s])
            if ra != rb:
                joined += 1
                if ra < rb:
                    parent[rb] = ra
                else:
                    parent[ra] = rb
    return joined
