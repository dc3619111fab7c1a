"""Numba kernels for :mod:`cellseg.representations.offsets`.

* :func:`medoids` — for every object of a sequential label image, the pixel
  minimising the sum of Euclidean distances (physical spacing) to all pixels of
  the object; ties go to the lowest raster index. Exact, without the O(m^2)
  all-pairs cost: candidates are visited by increasing distance from an
  approximate geometric median ``g`` (Weiszfeld), each costing one O(m) sum,
  and the search stops once a certified lower bound of the sum over all
  points at least ``rho`` away from ``g`` exceeds the best sum found:

      f(g + rho v) >= f(g) - rho |G| + n0 rho + rho^2 (tr M - lambda_max M)

  with ``G`` the gradient of ``f`` at ``g`` (sum of unit vectors from the
  pixels to ``g``), ``n0`` the pixels at ``g``, ``M = sum_j u_j u_j^T /
  (2 (a_j + rho))`` (``a_j`` = distance of pixel ``j`` to ``g``); convexity of
  ``f`` extends the bound from the sphere to everything beyond it. Objects of
  at most 48 pixels use the plain all-pairs search.
* :func:`cluster` — greedy seed clustering of spatial embeddings (Neven et al.
  2019): repeatedly the unclustered pixel with the highest seed score becomes a
  seed; its embedding and margins define a Gaussian; the masked pixels whose
  embedding scores above 0.5 form the proposal. Proposals are found through a
  uniform bucket grid over the embeddings, so one seed costs time in
  proportion to the pixels near its centre, not to the whole mask.
"""
from __future__ import annotations

import math

import numpy as np

from cellseg._numba import jit, pjit, prange

LN2 = math.log(2.0)
SMALL = 48  # objects up to this size: all-pairs medoid


@jit
def _sum_dist(P, i):
    """Sum of distances from point ``P[i]`` to all rows of ``P`` (row order)."""
    m = P.shape[0]
    s = 0.0
    for j in range(m):
        d0 = P[i, 0] - P[j, 0]
        d1 = P[i, 1] - P[j, 1]
        d2 = P[i, 2] - P[j, 2]
        s += math.sqrt(d0 * d0 + d1 * d1 + d2 * d2)
    return s


@jit
def _medoid_points(P):
    """Index (row of P, rows in raster order) of the medoid of the points P (m, 3)."""
    m = P.shape[0]
    if m <= SMALL:
        best = np.inf
        bi = 0
        for i in range(m):
            s = _sum_dist(P, i)
            if s < best:
                best = s
                bi = i
        return bi
    # approximate geometric median (Weiszfeld from the centroid)
    g0 = 0.0
    g1 = 0.0
    g2 = 0.0
    for j in range(m):
        g0 += P[j, 0]
        g1 += P[j, 1]
        g2 += P[j, 2]
    g0 /= m
    g1 /= m
    g2 /= m
    for it in range(64):
        w = 0.0
        n0 = 0.0
        n1 = 0.0
        n2 = 0.0
        for j in range(m):
            d0 = P[j, 0] - g0
            d1 = P[j, 1] - g1
            d2 = P[j, 2] - g2
            d = math.sqrt(d0 * d0 + d1 * d1 + d2 * d2)
            if d > 1e-9:
                w += 1.0 / d
                n0 += P[j, 0] / d
                n1 += P[j, 1] / d
                n2 += P[j, 2] / d
        if w == 0.0:
            break
        h0 = n0 / w
        h1 = n1 / w
        h2 = n2 / w
        step = abs(h0 - g0) + abs(h1 - g1) + abs(h2 - g2)
        g0 = h0
        g1 = h1
        g2 = h2
        if step < 1e-7:
            break
    # distances to g, f(g), gradient at g
    a = np.empty(m, np.float64)
    U = np.zeros((m, 3), np.float64)
    fg = 0.0
    G0 = 0.0
    G1 = 0.0
    G2 = 0.0
    nzero = 0
    for j in range(m):
        d0 = g0 - P[j, 0]
        d1 = g1 - P[j, 1]
        d2 = g2 - P[j, 2]
        d = math.sqrt(d0 * d0 + d1 * d1 + d2 * d2)
        a[j] = d
        fg += d
        if d > 0.0:
            U[j, 0] = d0 / d
            U[j, 1] = d1 / d
            U[j, 2] = d2 / d
            G0 += U[j, 0]
            G1 += U[j, 1]
            G2 += U[j, 2]
        else:
            nzero += 1
    gnorm = math.sqrt(G0 * G0 + G1 * G1 + G2 * G2)
    order = np.argsort(a, kind="mergesort")
    best = np.inf
    bi = -1
    checked = -1.0
    Mx = np.empty((3, 3), np.float64)
    for k in range(m):
        i = order[k]
        rho = a[i]
        if bi >= 0 and rho > checked:
            # lower bound of f beyond radius rho
            for r in range(3):
                for c in range(3):
                    Mx[r, c] = 0.0
            for j in range(m):
                if a[j] > 0.0:
                    wj = 1.0 / (2.0 * (a[j] + rho))
                    for r in range(3):
                        for c in range(3):
                            Mx[r, c] += wj * U[j, r] * U[j, c]
            ev = np.linalg.eigvalsh(Mx)
            lam = Mx[0, 0] + Mx[1, 1] + Mx[2, 2] - ev[2]
            if lam < 0.0:
                lam = 0.0
            bound = fg - rho * gnorm + nzero * rho + rho * rho * lam
            # safety margin for rounding in the sums
            if bound > best + 1e-9 * (1.0 + abs(best)):
                break
            checked = rho + 0.25
        s = _sum_dist(P, i)
        if s < best or (s == best and i < bi):
            best = s
            bi = i
    return bi


@jit
def _group_by_label(lab_flat, n):
    """Counting sort of pixel indices by label: (starts (n + 2,), perm)."""
    counts = np.zeros(n + 2, np.int64)
    for i in range(lab_flat.size):
        counts[lab_flat[i] + 1] += 1
    for k in range(1, n + 2):
        counts[k] += counts[k - 1]
    starts = counts.copy()
    perm = np.empty(lab_flat.size, np.int64)
    fill = counts[:-1].copy()
    for i in range(lab_flat.size):
        l = lab_flat[i]
        perm[fill[l]] = i
        fill[l] += 1
    return starts, perm


@pjit
def medoids(lab, n, spacing):
    """Medoid of every object.

    lab : int32 (Z, Y, X) C-contiguous with ids 0..n (0 = background).
    n : number of objects. spacing : float64 (3,) physical step along Z, Y, X.
    Returns int64 (n,): flat index of each object's medoid (-1 for an id with
    no pixel).
    """
    nz, ny, nx = lab.shape
    flat = lab.ravel()
    starts, perm = _group_by_label(flat, n)
    out = np.full(n, -1, np.int64)
    sxy = ny * nx
    for k in prange(1, n + 1):
        lo = starts[k]
        hi = starts[k + 1]
        m = hi - lo
        if m == 0:
            continue
        P = np.empty((m, 3), np.float64)
        for t in range(m):
            p = perm[lo + t]
            z = p // sxy
            rem = p - z * sxy
            y = rem // nx
            x = rem - y * nx
            P[t, 0] = z * spacing[0]
            P[t, 1] = y * spacing[1]
            P[t, 2] = x * spacing[2]
        out[k - 1] = perm[lo + _medoid_points(P)]
    return out


@jit
def cluster(emb, sigma, seed, order, gain, seed_thresh, min_size, min_unclustered_sum, new_fraction, cell,
            max_cells):
    """Greedy clustering of masked pixels.

    emb : float64 (M, D) embeddings (normalized units). sigma : float64 (M, D);
    a seed's margins are ``exp(gain * sigma)``. seed : float64 (M,).
    order : int64 (M,) pixel indices by decreasing seed (ties: lower index first).
    cell : bucket size of the search grid, in embedding units (> 0); doubled
    until the grid over the embeddings' bounding box has at most ``max_cells``
    buckets.
    A pixel j joins the proposal of seed c iff
    ``sum_d (emb[j, d] - emb[c, d])**2 * margin_d < ln 2`` (Gaussian score > 0.5).
    Returns (ids int32 (M,), seeds int64 (K,)): cluster id per pixel (0 = none)
    and the seed pixel of clusters 1..K.
    """
    M, D = emb.shape
    ids = np.zeros(M, np.int32)
    seeds = np.empty(M, np.int64)
    if M == 0:
        return ids, seeds[:0]
    # ---- bucket grid
    lo = np.empty(D, np.float64)
    hi = np.empty(D, np.float64)
    ncell = np.empty(D, np.int64)
    for d in range(D):
        lo[d] = emb[0, d]
        hi[d] = emb[0, d]
    for j in range(M):
        for d in range(D):
            v = emb[j, d]
            if v < lo[d]:
                lo[d] = v
            if v > hi[d]:
                hi[d] = v
    while True:
        total = 1
        for d in range(D):
            ncell[d] = int((hi[d] - lo[d]) / cell) + 1
            total *= ncell[d]
        if total <= max_cells:
            break
        cell *= 2.0
    key = np.empty(M, np.int64)
    for j in range(M):
        kk = 0
        for d in range(D):
            c = int((emb[j, d] - lo[d]) / cell)
            if c >= ncell[d]:
                c = ncell[d] - 1
            kk = kk * ncell[d] + c
        key[j] = kk
    start = np.zeros(total + 1, np.int64)
    for j in range(M):
        start[key[j] + 1] += 1
    for t in range(total):
        start[t + 1] += start[t]
    items = np.empty(M, np.int64)
    fill = start[:-1].copy()
    for j in range(M):
        items[fill[key[j]]] = j
        fill[key[j]] += 1
    # ---- greedy loop
    unclustered = np.ones(M, np.uint8)
    n_unc = M
    prop = np.empty(M, np.int64)
    margin = np.empty(D, np.float64)
    c = np.empty(D, np.float64)
    clo = np.zeros(3, np.int64)
    chi = np.zeros(3, np.int64)
    K = 0
    ptr = 0
    while n_unc > min_unclustered_sum:
        while ptr < M and unclustered[order[ptr]] == 0:
            ptr += 1
        if ptr >= M:
            break
        s = order[ptr]
        if seed[s] < seed_thresh:
            break
        for d in range(D):
            margin[d] = math.exp(gain * sigma[s, d])
            c[d] = emb[s, d]
        for d in range(D):
            r = math.sqrt(LN2 / margin[d])
            a = int(math.floor((c[d] - r - lo[d]) / cell))
            b = int(math.floor((c[d] + r - lo[d]) / cell))
            if a < 0:
                a = 0
            if b > ncell[d] - 1:
                b = ncell[d] - 1
            clo[d] = a
            chi[d] = b
        n_prop = 0
        n_new = 0
        # iterate the cells of the box (D = 2 or 3)
        za = clo[0] if D == 3 else 0
        zb = chi[0] if D == 3 else 0
        o = 1 if D == 3 else 0
        for cz in range(za, zb + 1):
            for cy in range(clo[o], chi[o] + 1):
                base = (cz * ncell[o] + cy) * ncell[o + 1] if D == 3 else cy * ncell[o + 1]
                t0 = start[base + clo[o + 1]]
                t1 = start[base + chi[o + 1] + 1]
                for t in range(t0, t1):
                    j = items[t]
                    q = 0.0
                    for d in range(D):
                        e = emb[j, d] - c[d]
                        q += e * e * margin[d]
                    if q < LN2:
                        prop[n_prop] = j
                        n_prop += 1
                        if unclustered[j]:
                            n_new += 1
        accept = n_new >= min_size and n_new > new_fraction * n_prop
        if accept:
            K += 1
            seeds[K - 1] = s
        for t in range(n_prop):
            j = prop[t]
            if unclustered[j]:
                if accept:
                    ids[j] = K
                unclustered[j] = 0
        n_unc -= n_new
    return ids, seeds[:K]
