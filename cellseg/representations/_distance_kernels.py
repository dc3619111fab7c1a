"""Numba kernels for :mod:`cellseg.representations.distance`.

All kernels work on 3D C-contiguous arrays ``(Z, Y, X)``; 2D images are passed
as ``(1, Y, X)``. Dtypes are fixed (documented per kernel) and validated by the
Python wrappers in ``distance.py``, never here.

* :func:`label_edt_sq` — exact squared Euclidean distance from every object
  pixel to the nearest pixel carrying a *different* label (background or
  another object), for all objects at once, with per-axis spacing. It is the
  separable lower-envelope algorithm of Felzenszwalb & Huttenlocher (2012) made
  label-aware: along every line, each run of one label is processed on its own
  with the two pixels just outside the run as zero-cost sites. Pixels outside
  the image are not sites (an object cut by the image border continues beyond
  it). O(N) for the whole label image instead of one EDT per object.
* :func:`object_max` — per-object maximum of a float image.
* :func:`watershed_flood` — marker-based priority-flood watershed (Meyer)
  with a binary heap ordered by (value, age), i.e. FIFO among equal values, the
  same ordering rule as :func:`skimage.segmentation.watershed`. A pixel takes
  the label of the neighbour that pushed it, at push time.
"""
from __future__ import annotations

import numpy as np

from cellseg._numba import find_root, jit

INF = np.inf


@jit
def _envelope_line(f, pos, n_sites, scale2, first, count, out, v, z):
    """Lower envelope of parabolas ``scale2*(i - pos[k])**2 + f[k]`` evaluated at
    integer positions ``first .. first+count-1`` into ``out[0:count]``.

    ``pos`` must be increasing; sites with ``f == inf`` are skipped. Writes inf
    when there is no finite site.
    """
    # v: indices into pos/f of the envelope parabolas, z: their boundaries
    k = -1
    for q in range(n_sites):
        fq = f[q]
        if fq == INF:
            continue
        pq = pos[q]
        if k < 0:
            k = 0
            v[0] = q
            z[0] = -INF
            z[1] = INF
            continue
        while True:
            r = v[k]
            pr = pos[r]
            s = ((fq + scale2 * pq * pq) - (f[r] + scale2 * pr * pr)) / (2.0 * scale2 * (pq - pr))
            if s <= z[k]:
                k -= 1
                if k < 0:
                    break
            else:
                break
        if k < 0:
            k = 0
            v[0] = q
            z[0] = -INF
            z[1] = INF
        else:
            k += 1
            v[k] = q
            z[k] = s
            z[k + 1] = INF
    if k < 0:
        for i in range(count):
            out[i] = INF
        return
    j = 0
    for i in range(count):
        x = float(first + i)
        while z[j + 1] < x:
            j += 1
        d = x - pos[v[j]]
        out[i] = scale2 * d * d + f[v[j]]


@jit
def _pass_axis(lab, dist, axis, scale2, init):
    """One separable pass along ``axis`` (0, 1 or 2) of the label-aware EDT.

    ``init=True`` for the first pass (the values of the run are not used yet:
    every run pixel is an infinite site, only the run ends count).
    """
    nz, ny, nx = lab.shape
    if axis == 0:
        n, m1, m2 = nz, ny, nx
    elif axis == 1:
        n, m1, m2 = ny, nz, nx
    else:
        n, m1, m2 = nx, nz, ny
    f = np.empty(n + 2, np.float64)
    pos = np.empty(n + 2, np.float64)
    out = np.empty(n, np.float64)
    line_lab = np.empty(n, np.int32)
    line_val = np.empty(n, np.float64)
    v = np.empty(n + 3, np.int64)
    z = np.empty(n + 3, np.float64)
    for a in range(m1):
        for b in range(m2):
            # gather the line
            for i in range(n):
                if axis == 0:
                    line_lab[i] = lab[i, a, b]
                    line_val[i] = dist[i, a, b]
                elif axis == 1:
                    line_lab[i] = lab[a, i, b]
                    line_val[i] = dist[a, i, b]
                else:
                    line_lab[i] = lab[a, b, i]
                    line_val[i] = dist[a, b, i]
            start = 0
            while start < n:
                L = line_lab[start]
                stop = start + 1
                while stop < n and line_lab[stop] == L:
                    stop += 1
                if L == 0:
                    for i in range(start, stop):
                        out[i - start] = 0.0
                        line_val[i] = 0.0
                else:
                    ns = 0
                    if start > 0:
                        pos[ns] = start - 1.0
                        f[ns] = 0.0
                        ns += 1
                    for i in range(start, stop):
                        pos[ns] = float(i)
                        f[ns] = INF if init else line_val[i]
                        ns += 1
                    if stop < n:
                        pos[ns] = float(stop)
                        f[ns] = 0.0
                        ns += 1
                    _envelope_line(f, pos, ns, scale2, start, stop - start, out, v, z)
                    for i in range(start, stop):
                        line_val[i] = out[i - start]
                start = stop
            for i in range(n):
                if axis == 0:
                    dist[i, a, b] = line_val[i]
                elif axis == 1:
                    dist[a, i, b] = line_val[i]
                else:
                    dist[a, b, i] = line_val[i]


@jit
def label_edt_sq(lab, spacing):
    """Squared distance to the nearest differently labelled pixel.

    lab : int32 (Z, Y, X) C-contiguous; 0 = background (its output is 0).
    spacing : float64 (3,) physical step along Z, Y, X.
    Returns float64 (Z, Y, X); ``inf`` only where no differently labelled pixel
    exists anywhere (the image is a single object).
    """
    dist = np.zeros(lab.shape, np.float64)
    nz = lab.shape[0]
    # X first, then Y, then Z (only when there is more than one slice)
    _pass_axis(lab, dist, 2, spacing[2] * spacing[2], True)
    _pass_axis(lab, dist, 1, spacing[1] * spacing[1], False)
    if nz > 1:
        _pass_axis(lab, dist, 0, spacing[0] * spacing[0], False)
    return dist


@jit
def object_max(lab, values, n):
    """Per-object maximum: lab int32 (any shape, ids 0..n), values float64 same shape.

    Returns float64 (n + 1,), entry 0 unused (0.0); ids never seen get 0.0.
    """
    out = np.zeros(n + 1, np.float64)
    fl = lab.ravel()
    fv = values.ravel()
    for i in range(fl.size):
        l = fl[i]
        if l > 0 and fv[i] > out[l]:
            out[l] = fv[i]
    return out


# ---------------------------------------------------------------- watershed

@jit
def _heap_push(hv, ha, hi, size, value, age, idx):
    """Push (value, age, idx) on the min-heap ordered by (value, age)."""
    k = size
    while k > 0:
        p = (k - 1) >> 1
        pv = hv[p]
        if value < pv or (value == pv and age < ha[p]):
            hv[k] = pv
            ha[k] = ha[p]
            hi[k] = hi[p]
            k = p
        else:
            break
    hv[k] = value
    ha[k] = age
    hi[k] = idx
    return size + 1


@jit
def _heap_pop(hv, ha, hi, size):
    """Remove the root; returns (idx, new size)."""
    top = hi[0]
    size -= 1
    if size > 0:
        value = hv[size]
        age = ha[size]
        idx = hi[size]
        k = 0
        while True:
            c = 2 * k + 1
            if c >= size:
                break
            r = c + 1
            if r < size and (hv[r] < hv[c] or (hv[r] == hv[c] and ha[r] < ha[c])):
                c = r
            cv = hv[c]
            if cv < value or (cv == value and ha[c] < age):
                hv[k] = cv
                ha[k] = ha[c]
                hi[k] = hi[c]
                k = c
            else:
                break
        hv[k] = value
        ha[k] = age
        hi[k] = idx
    return top, size


@jit
def watershed_flood(image, markers, mask, full):
    """Flood ``image`` from ``markers`` inside ``mask``.

    image : float64 (Z, Y, X) — lower values are flooded first.
    markers : int32 (Z, Y, X) — > 0 are seeds; seeds outside the mask are dropped.
    mask : uint8 (Z, Y, X) — nonzero where pixels may be labelled.
    full : bool — False: face neighbours (4 / 6), True: all 8 / 26 neighbours.
    Returns int32 (Z, Y, X); mask pixels not reachable from a marker stay 0.

    The queue discipline is the one of ``skimage.segmentation.watershed``
    (without compactness or watershed lines), so results agree pixel for
    pixel, plateaus included: markers enter with their value as priority (age
    0, raster order), every other pixel with priority ``max(its value, the
    priority of the pixel that pushed it)``; ties are broken by age (first in,
    first out); neighbours are visited faces
    first, then edges, then corners, each group in raster order; a pixel takes
    its label when it is pushed.
    """
    nz, ny, nx = image.shape
    # work on a copy padded by one pixel (Y, X, and Z when 3D) whose border is
    # outside the mask: neighbours need no bounds checks
    pz = 1 if nz > 1 else 0
    NZ, NY, NX = nz + 2 * pz, ny + 2, nx + 2
    N = NZ * NY * NX
    img = np.zeros(N, np.float64)
    out = np.zeros(N, np.int32)
    msk = np.zeros(N, np.uint8)
    for z in range(nz):
        for y in range(ny):
            base = ((z + pz) * NY + y + 1) * NX + 1
            for x in range(nx):
                img[base + x] = image[z, y, x]
                m = mask[z, y, x] != 0
                msk[base + x] = 1 if m else 0
                out[base + x] = markers[z, y, x] if m else 0
    # neighbour offsets: faces, then edges, then corners, each in raster order
    offs = np.empty(26, np.int64)
    nn = 0
    for order in range(1, 4):
        if not full and order > 1:
            break
        for dz in range(-1, 2):
            for dy in range(-1, 2):
                for dx in range(-1, 2):
                    if abs(dz) + abs(dy) + abs(dx) != order:
                        continue
                    if pz == 0 and dz != 0:
                        continue
                    offs[nn] = (dz * NY + dy) * NX + dx
                    nn += 1
    cap = 0  # heap capacity: every pixel enters at most once
    for i in range(N):
        if msk[i] != 0 or out[i] > 0:
            cap += 1
    hv = np.empty(cap + 1, np.float64)
    ha = np.empty(cap + 1, np.int64)
    hi = np.empty(cap + 1, np.int64)
    size = 0
    for i in range(N):
        if out[i] > 0:
            size = _heap_push(hv, ha, hi, size, img[i], 0, i)
    age = 1
    while size > 0:
        v = hv[0]
        i, size = _heap_pop(hv, ha, hi, size)
        li = out[i]
        for k in range(nn):
            j = i + offs[k]
            if msk[j] == 0 or out[j] != 0:
                continue
            out[j] = li
            age += 1
            w = img[j]
            if w < v:
                w = v
            size = _heap_push(hv, ha, hi, size, w, age, j)
    res = np.empty((nz, ny, nx), np.int32)
    for z in range(nz):
        for y in range(ny):
            base = ((z + pz) * NY + y + 1) * NX + 1
            for x in range(nx):
                res[z, y, x] = out[base + x]
    return res


# ---------------------------------------------------------------- h-maxima

_find = find_root  # union-find root with path compression (cellseg._numba)


@jit
def hmaxima(image, order, h, full):
    """h-maxima mask: pixels ``x`` whose value is the maximum of the connected
    component of ``{f > f(x) - h}`` that contains them (Soille's h-maxima, the
    regional maxima of the reconstruction by dilation of ``f - h`` under ``f``;
    what :func:`skimage.morphology.h_maxima` computes).

    image : float64 (Z, Y, X).
    order : int64 flat indices of every pixel whose value is above the image
        minimum, sorted by decreasing value (ties in increasing index) — the
        wrapper sorts with NumPy's stable sort.
    h : float > 0 (the caller returns zeros when ``h`` exceeds the value range).
    full : bool (True: 8 / 26 neighbours, the skimage default; False: faces).
    Returns uint8 (Z, Y, X).

    Union-find over the pixels in decreasing order: a plateau at the top of a
    component collects candidate pixels; when the component meets one with a
    strictly higher maximum while a pixel of value ``s`` is added, its
    candidates are kept iff ``max - s >= h``; components with equal maxima pool
    their candidates. Pixels at the image minimum ``lo`` are never added: the
    grid is connected, so every component left at the end meets the others at
    level ``lo`` and keeps its candidates iff ``max - lo >= h``.
    """
    nz, ny, nx = image.shape
    N = nz * ny * nx
    f = image.ravel()
    out = np.zeros(N, np.uint8)
    if N == 0:
        return out.reshape((nz, ny, nx))
    lo = f.min()
    parent = np.full(N, -1, np.int64)
    cmax = np.empty(N, np.float64)  # per root: component maximum
    head = np.full(N, -1, np.int64)  # per root: first candidate (linked list)
    tail = np.full(N, -1, np.int64)
    nxt = np.full(N, -1, np.int64)
    dzs = np.empty(26, np.int64)
    dys = np.empty(26, np.int64)
    dxs = np.empty(26, np.int64)
    nn = 0
    for dz in range(-1, 2):
        for dy in range(-1, 2):
            for dx in range(-1, 2):
                if dz == 0 and dy == 0 and dx == 0:
                    continue
                if nz == 1 and dz != 0:
                    continue
                if not full and abs(dz) + abs(dy) + abs(dx) != 1:
                    continue
                dzs[nn] = dz
                dys[nn] = dy
                dxs[nn] = dx
                nn += 1
    sxy = ny * nx
    for k in range(order.size):
        p = order[k]
        s = f[p]
        parent[p] = p
        cmax[p] = s
        head[p] = p
        tail[p] = p
        rp = p
        z = p // sxy
        rem = p - z * sxy
        y = rem // nx
        x = rem - y * nx
        for t in range(nn):
            zz = z + dzs[t]
            yy = y + dys[t]
            xx = x + dxs[t]
            if zz < 0 or zz >= nz or yy < 0 or yy >= ny or xx < 0 or xx >= nx:
                continue
            q = (zz * ny + yy) * nx + xx
            if parent[q] < 0:
                continue
            rq = _find(parent, q)
            if rp == rq:
                continue
            mp = cmax[rp]
            mq = cmax[rq]
            if mp == mq:
                # pool candidates under rq
                if head[rp] >= 0:
                    if head[rq] >= 0:
                        nxt[tail[rq]] = head[rp]
                        tail[rq] = tail[rp]
                    else:
                        head[rq] = head[rp]
                        tail[rq] = tail[rp]
                parent[rp] = rq
                rp = rq
                continue
            if mp < mq:
                lo_r, hi_r = rp, rq
            else:
                lo_r, hi_r = rq, rp
            if cmax[lo_r] - s >= h:
                c = head[lo_r]
                while c >= 0:
                    out[c] = 1
                    c = nxt[c]
            head[lo_r] = -1
            tail[lo_r] = -1
            parent[lo_r] = hi_r
            rp = hi_r
    # components never absorbed above the minimum meet at level lo
    for k in range(order.size):
        p = order[k]
        if parent[p] == p and cmax[p] - lo >= h:
            c = head[p]
            while c >= 0:
                out[c] = 1
                c = nxt[c]
    return out.reshape((nz, ny, nx))
