"""Numba kernels of the flow representations (private; see ``flows.py``).

Every kernel takes C-contiguous arrays of fixed dtypes; the public functions in
``flows.py`` validate and coerce once before calling them:

* label images: ``int32``, ids ``0..n`` *sequential* (0 = background);
* pixel lists: ``int64`` flat (raster) indices, grouped per object by
  :func:`group_pixels` (CSR: object ``k`` owns ``order[offsets[k-1]:offsets[k]]``,
  in raster order);
* flow fields: ``float32`` ``(ndim, *spatial)``; heat / distance fields are
  computed in ``float64``;
* point positions: ``float64``.

Per-object work (targets) runs in parallel over objects (``prange``) on the
object's bounding box padded by one pixel, so the cost grows with the object's
area (times its iteration count), never with the image size. Objects write
disjoint pixels of the output, so the parallel loop is race free.
"""
from __future__ import annotations

import math

import numpy as np

from cellseg._numba import find_root, jit, pjit, prange

INF = np.inf
SQRT2 = math.sqrt(2.0)


# ----------------------------------------------------------------------------- ids, CSR


@jit
def label_sums(lab, values, n):
    """Pixel count and sum of ``values`` (float32, flat) of every id ``1..n`` of
    ``lab`` (int32, flat); returns ``(counts int64, sums float64)``, ``n + 1`` each,
    index 0 (the background) holding the background's pixel count and a sum of 0
    (background pixels are only counted: no dependency chain through one sum)."""
    counts = np.zeros(n + 1, np.int64)
    sums = np.zeros(n + 1, np.float64)
    fg = 0
    for i in range(lab.size):
        v = lab[i]
        if v:
            counts[v] += 1
            sums[v] += values[i]
            fg += 1
    counts[0] = lab.size - fg
    return counts, sums


@jit
def remap_ids(lab, lut):
    """``lab[i] = lut[lab[i]]`` in place for the non-zero pixels (int32, flat)."""
    for i in range(lab.size):
        v = lab[i]
        if v:
            lab[i] = lut[v]


@jit
def group_pixels(lab, n):
    """CSR of the foreground pixels of ``lab`` (int32 flat, ids 0..n) by object.

    Returns ``(order, offsets)``: ``offsets`` has ``n + 1`` entries and object
    ``k`` (1-based) owns ``order[offsets[k-1]:offsets[k]]`` in raster order.
    """
    counts = np.zeros(n + 1, np.int64)
    for i in range(lab.size):
        v = lab[i]
        if v:  # the background is not counted (no store-to-load chain through counts[0])
            counts[v] += 1
    offsets = np.zeros(n + 1, np.int64)
    for k in range(1, n + 1):
        offsets[k] = offsets[k - 1] + counts[k]
    fill = offsets[:n].copy()
    order = np.empty(offsets[n], np.int64)
    for i in range(lab.size):
        v = lab[i]
        if v > 0:
            order[fill[v - 1]] = i
            fill[v - 1] += 1
    return order, offsets


@jit
def _round_half_even(v):
    f = math.floor(v)
    d = v - f
    if d > 0.5:
        return f + 1.0
    if d < 0.5:
        return f
    return f if (f % 2.0) == 0.0 else f + 1.0


# ----------------------------------------------------------------------------- Cellpose heat diffusion


@jit
def _heat_sweep_2d(T, Tn, M, H, W):
    """One diffusion step over an object's box: ``Tn = M * (9-point sum of T) / 9``
    inside the one-pixel frame rows.

    The box's interior rows are swept as one flat run (row stride ``W``): the
    frame columns inside that run are computed too, but ``M`` is 0 there, so
    they stay 0, and the nine neighbours of every object pixel are the same
    as in a row-by-row sweep (same sum in the same order: the same values).
    One long loop instead of one per row: the SIMD body runs without a
    scalar remainder on every (narrow) row, ~1.5x faster on cell-sized boxes.
    The views start at non-negative offsets (no wraparound checks, so SIMD).
    """
    L = (H - 2) * W - 2
    a0 = T[0:]
    a1 = T[1:]
    a2 = T[2:]
    b0 = T[W:]
    b1 = T[W + 1:]
    b2 = T[W + 2:]
    d0 = T[2 * W:]
    d1 = T[2 * W + 1:]
    d2 = T[2 * W + 2:]
    o = Tn[W + 1:]
    mm = M[W + 1:]
    for j in range(L):
        o[j] = mm[j] * ((b1[j] + a1[j] + d1[j] + b0[j] + b2[j]
                         + a0[j] + a2[j] + d0[j] + d2[j]) / 9.0)


@jit
def _heat_2d(pix, Y, X, niter_fixed):
    """Heat of one object (``pix``: its flat pixel indices in raster order) after
    the diffusion; returns ``(T, loc, W)``: the heat on the object's box padded
    by one pixel (flat, row stride ``W``) and each pixel's index in it."""
    m = pix.size
    y0, y1, x0, x1 = Y, -1, X, -1
    sy = 0.0
    sx = 0.0
    for i in range(m):
        y = pix[i] // X
        x = pix[i] - y * X
        y0 = min(y0, y)
        y1 = max(y1, y)
        x0 = min(x0, x)
        x1 = max(x1, x)
        sy += y
        sx += x
    h = y1 - y0 + 1
    w = x1 - x0 + 1
    W = w + 2
    H = h + 2
    # centre: the rounded mean if it is inside, else the pixel nearest to it (first in raster order)
    ym = _round_half_even(sy / m)
    xm = _round_half_even(sx / m)
    c = -1
    best = INF
    for i in range(m):
        y = pix[i] // X
        x = pix[i] - y * X
        d = (y - ym) ** 2 + (x - xm) ** 2
        if d < best:
            best = d
            c = i
    loc = np.empty(m, np.int64)
    for i in range(m):
        y = pix[i] // X
        x = pix[i] - y * X
        loc[i] = (y - y0 + 1) * W + (x - x0 + 1)
    niter = niter_fixed if niter_fixed > 0 else 2 * (h + w + 2)
    T = np.zeros(H * W)
    Tn = np.zeros(H * W)
    # 1.0 on the object, 0.0 elsewhere in its box: the diffusion sweeps the whole box
    # (contiguous, SIMD) and multiplies by the mask, the same values as updating the
    # object's pixels only (T stays 0 off the object and on the one-pixel frame)
    M = np.zeros(H * W)
    for i in range(m):
        M[loc[i]] = 1.0
    qc = loc[c]
    for _ in range(niter):
        T[qc] += 1.0
        _heat_sweep_2d(T, Tn, M, H, W)
        T, Tn = Tn, T
    return T, loc, W


@jit
def _heat_one_2d(pix, Y, X, niter_fixed, out):
    T, loc, W = _heat_2d(pix, Y, X, niter_fixed)
    for i in range(pix.size):
        q = loc[i]
        dy = T[q + W] - T[q - W]
        dx = T[q + 1] - T[q - 1]
        nrm = math.sqrt(dy * dy + dx * dx) + 1e-60
        y = pix[i] // X
        x = pix[i] - y * X
        out[0, y, x] = dy / nrm
        out[1, y, x] = dx / nrm


@pjit
def heat_flows_2d(order, offsets, Y, X, niter_fixed, out):
    """Cellpose flows: per object, heat diffusion from its centre, unit gradient.

    ``out`` float32 (2, Y, X), zero-initialised; ``niter_fixed <= 0`` means
    ``2 * (h + w + 2)`` iterations for an object with a ``h x w`` bounding box.
    """
    n = offsets.size - 1
    for k in prange(n):
        s = offsets[k]
        e = offsets[k + 1]
        if e > s:
            _heat_one_2d(order[s:e], Y, X, niter_fixed, out)


@pjit
def heat_flow_errors_2d(order, offsets, Y, X, dp, scale, out):
    """Cellpose flow error of every object without writing its flows to an image:
    per object, the flows of :func:`heat_flows_2d` (rounded to float32, as
    stored there) and the mean over its pixels, in raster order, of
    ``sum_c (mu_c - dp_c / scale)^2`` -- the same operations as
    :func:`heat_flows_2d` then :func:`flow_errors`, so the same float64 values.

    ``dp`` float32 (2, Y, X) the predicted (scaled) flows; ``out`` float64 (n,),
    NaN for an object without pixels.
    """
    n = offsets.size - 1
    for k in prange(n):
        s = offsets[k]
        e = offsets[k + 1]
        if e == s:
            out[k] = np.nan
            continue
        pix = order[s:e]
        T, loc, W = _heat_2d(pix, Y, X, 0)
        acc = 0.0
        for i in range(pix.size):
            q = loc[i]
            dy = T[q + W] - T[q - W]
            dx = T[q + 1] - T[q - 1]
            nrm = math.sqrt(dy * dy + dx * dx) + 1e-60
            y = pix[i] // X
            x = pix[i] - y * X
            d0 = float(np.float32(dy / nrm)) - float(dp[0, y, x]) / scale
            d1 = float(np.float32(dx / nrm)) - float(dp[1, y, x]) / scale
            acc += 0.0 + d0 * d0 + d1 * d1
        out[k] = acc / pix.size


@jit
def group_points(ids, flat_idx, n):
    """CSR of points by id (the layout of :func:`group_pixels`) without an image:
    ``ids`` int32 (P,) in ``0..n`` (0: no object), ``flat_idx`` int64 (P,) their
    flat pixel indices, ascending. Object ``k`` owns ``order[offsets[k-1]:offsets[k]]``,
    in raster order (a stable counting sort)."""
    counts = np.zeros(n + 1, np.int64)
    for i in range(ids.size):
        v = ids[i]
        if v:
            counts[v] += 1
    offsets = np.zeros(n + 1, np.int64)
    for k in range(1, n + 1):
        offsets[k] = offsets[k - 1] + counts[k]
    fill = offsets[:n].copy()
    order = np.empty(offsets[n], np.int64)
    for i in range(ids.size):
        v = ids[i]
        if v > 0:
            order[fill[v - 1]] = flat_idx[i]
            fill[v - 1] += 1
    return order, offsets


@jit
def _heat_one_3d(pix, Z, Y, X, niter_fixed, out):
    m = pix.size
    YX = Y * X
    z0, z1, y0, y1, x0, x1 = Z, -1, Y, -1, X, -1
    sz = 0.0
    sy = 0.0
    sx = 0.0
    for i in range(m):
        z = pix[i] // YX
        r = pix[i] - z * YX
        y = r // X
        x = r - y * X
        z0 = min(z0, z)
        z1 = max(z1, z)
        y0 = min(y0, y)
        y1 = max(y1, y)
        x0 = min(x0, x)
        x1 = max(x1, x)
        sz += z
        sy += y
        sx += x
    d_ = z1 - z0 + 1
    h = y1 - y0 + 1
    w = x1 - x0 + 1
    W = w + 2
    HW = (h + 2) * W
    D = d_ + 2
    zm = sz / m
    ym = sy / m
    xm = sx / m
    c = -1
    best = INF
    loc = np.empty(m, np.int64)
    for i in range(m):
        z = pix[i] // YX
        r = pix[i] - z * YX
        y = r // X
        x = r - y * X
        dd = (z - zm) ** 2 + (y - ym) ** 2 + (x - xm) ** 2
        if dd < best:
            best = dd
            c = i
        loc[i] = (z - z0 + 1) * HW + (y - y0 + 1) * W + (x - x0 + 1)
    niter = niter_fixed if niter_fixed > 0 else 6 * (d_ + h + w + 3)
    T = np.zeros(D * HW)
    Tn = np.zeros(D * HW)
    qc = loc[c]
    for _ in range(niter):
        T[qc] += 1.0
        for i in range(m):
            q = loc[i]
            Tn[q] = (T[q] + T[q + HW] + T[q - HW] + T[q + W] + T[q - W] + T[q + 1] + T[q - 1]) / 7.0
        T, Tn = Tn, T
    for i in range(m):
        q = loc[i]
        dz = T[q + HW] - T[q - HW]
        dy = T[q + W] - T[q - W]
        dx = T[q + 1] - T[q - 1]
        nrm = math.sqrt(dz * dz + dy * dy + dx * dx) + 1e-60
        z = pix[i] // YX
        r = pix[i] - z * YX
        y = r // X
        x = r - y * X
        out[0, z, y, x] = dz / nrm
        out[1, z, y, x] = dy / nrm
        out[2, z, y, x] = dx / nrm


@pjit
def heat_flows_3d(order, offsets, Z, Y, X, niter_fixed, out):
    """3D Cellpose flows (7-point diffusion, ``6 * (d + h + w + 3)`` iterations by default)."""
    n = offsets.size - 1
    for k in prange(n):
        s = offsets[k]
        e = offsets[k + 1]
        if e > s:
            _heat_one_3d(order[s:e], Z, Y, X, niter_fixed, out)


# ----------------------------------------------------------------------------- Omnipose smooth distance


@jit
def godunov2(a, b, h):
    """Upwind solution ``u`` of ``((u-a)/h)^2 + ((u-b)/h)^2 = 1`` (one-sided when ``|a-b| >= h``)."""
    if a > b:
        a, b = b, a
    if b == INF or b - a >= h:
        return a + h
    return 0.5 * (a + b + math.sqrt(2.0 * h * h - (a - b) * (a - b)))


@jit
def godunov3(a0, a1, a2, h0, h1, h2):
    """Upwind solution of ``sum_i ((u - a_i) / h_i)^2 = 1`` over the causal subset of the a_i."""
    a = np.empty(3)
    w = np.empty(3)
    a[0] = a0
    a[1] = a1
    a[2] = a2
    w[0] = 1.0 / (h0 * h0)
    w[1] = 1.0 / (h1 * h1)
    w[2] = 1.0 / (h2 * h2)
    # sort by a (insertion sort, 3 items)
    for i in range(1, 3):
        j = i
        while j > 0 and a[j - 1] > a[j]:
            a[j - 1], a[j] = a[j], a[j - 1]
            w[j - 1], w[j] = w[j], w[j - 1]
            j -= 1
    if a[0] == INF:
        return INF
    sw = 0.0
    swa = 0.0
    swa2 = 0.0
    u = INF
    for k in range(3):
        if a[k] == INF:
            break
        sw += w[k]
        swa += w[k] * a[k]
        swa2 += w[k] * a[k] * a[k]
        disc = swa * swa - sw * (swa2 - 1.0)
        if disc < 0.0:
            break
        uk = (swa + math.sqrt(disc)) / sw
        u = uk
        if k == 2 or uk <= a[k + 1]:
            break
    return u


@jit
def _update2(T, q, W):
    u1 = godunov2(min(T[q - W], T[q + W]), min(T[q - 1], T[q + 1]), 1.0)
    u2 = godunov2(min(T[q - W - 1], T[q + W + 1]), min(T[q - W + 1], T[q + W - 1]), SQRT2)
    if u1 == INF or u2 == INF:
        return INF
    return math.sqrt(u1 * u2)


@jit
def _eikonal_one_2d(pix, Y, X, tol, max_sweeps, out_flow, out_dist):
    m = pix.size
    y0, y1, x0, x1 = Y, -1, X, -1
    for i in range(m):
        y = pix[i] // X
        x = pix[i] - y * X
        y0 = min(y0, y)
        y1 = max(y1, y)
        x0 = min(x0, x)
        x1 = max(x1, x)
    h = y1 - y0 + 1
    w = x1 - x0 + 1
    W = w + 2
    H = h + 2
    T = np.zeros(H * W)
    inside = np.zeros(H * W, np.bool_)
    absent = np.zeros(H * W, np.bool_)
    for ly in range(H):
        gy = y0 - 1 + ly
        for lx in range(W):
            gx = x0 - 1 + lx
            if gy < 0 or gy >= Y or gx < 0 or gx >= X:
                absent[ly * W + lx] = True
    n_src = 0
    for q in range(H * W):
        if absent[q]:
            T[q] = INF
    for i in range(m):
        y = pix[i] // X
        x = pix[i] - y * X
        q = (y - y0 + 1) * W + (x - x0 + 1)
        inside[q] = True
        T[q] = INF
    # the object fills its whole neighbourhood (it covers the image): the border is the source
    for q in range(H * W):
        if not inside[q] and not absent[q]:
            n_src += 1
    if n_src == 0:
        for q in range(H * W):
            if absent[q]:
                T[q] = 0.0
    for _ in range(max_sweeps):
        change = 0.0
        for sweep in range(4):
            ys = 1 if sweep < 2 else -1
            xs = 1 if (sweep % 2) == 0 else -1
            for iy in range(h):
                ly = 1 + iy if ys > 0 else h - iy
                for ix in range(w):
                    lx = 1 + ix if xs > 0 else w - ix
                    q = ly * W + lx
                    if not inside[q]:
                        continue
                    u = _update2(T, q, W)
                    if u < T[q]:
                        d = T[q] - u if T[q] < INF else INF
                        if d > change:
                            change = d
                        T[q] = u
        if change <= tol:
            break
    # gradient: average of the cardinal and the diagonal central differences;
    # neighbours outside the object but inside the image count 0, outside the image
    # they take the pixel's own value
    for i in range(m):
        y = pix[i] // X
        x = pix[i] - y * X
        q = (y - y0 + 1) * W + (x - x0 + 1)
        t0 = T[q]
        v = np.empty(9)
        k = 0
        for dy in range(-1, 2):
            for dx in range(-1, 2):
                qq = q + dy * W + dx
                if absent[qq]:
                    v[k] = t0
                elif inside[qq]:
                    v[k] = T[qq]
                else:
                    v[k] = 0.0
                k += 1
        # v index: (dy+1)*3 + (dx+1)
        gy1 = 0.5 * (v[7] - v[1])
        gx1 = 0.5 * (v[5] - v[3])
        pp = v[8] - v[0]  # (+1,+1) - (-1,-1)
        pm = v[6] - v[2]  # (+1,-1) - (-1,+1)
        gy2 = 0.25 * (pp + pm)
        gx2 = 0.25 * (pp - pm)
        gy = 0.5 * (gy1 + gy2)
        gx = 0.5 * (gx1 + gx2)
        nrm = math.sqrt(gy * gy + gx * gx) + 1e-60
        out_flow[0, y, x] = gy / nrm
        out_flow[1, y, x] = gx / nrm
        out_dist[y, x] = t0


@pjit
def eikonal_flows_2d(order, offsets, Y, X, tol, max_sweeps, out_flow, out_dist):
    """Omnipose flows: per object, smooth distance (fast sweeping), unit gradient.

    The distance solves a discrete eikonal equation inside the object: the
    geometric mean of the axis-aligned and the diagonal upwind (Godunov)
    updates, 0 on in-image pixels outside the object; pixels outside the image
    are not sources (the object is taken to continue beyond the border).
    ``out_flow`` float32 (2, Y, X) and ``out_dist`` float32 (Y, X) are written
    on object pixels only.
    """
    n = offsets.size - 1
    for k in prange(n):
        s = offsets[k]
        e = offsets[k + 1]
        if e > s:
            _eikonal_one_2d(order[s:e], Y, X, tol, max_sweeps, out_flow, out_dist)


@jit
def _eikonal_one_3d(pix, Z, Y, X, hz, tol, max_sweeps, out_flow, out_dist):
    m = pix.size
    YX = Y * X
    z0, z1, y0, y1, x0, x1 = Z, -1, Y, -1, X, -1
    for i in range(m):
        z = pix[i] // YX
        r = pix[i] - z * YX
        y = r // X
        x = r - y * X
        z0 = min(z0, z)
        z1 = max(z1, z)
        y0 = min(y0, y)
        y1 = max(y1, y)
        x0 = min(x0, x)
        x1 = max(x1, x)
    d_ = z1 - z0 + 1
    h = y1 - y0 + 1
    w = x1 - x0 + 1
    W = w + 2
    HW = (h + 2) * W
    D = d_ + 2
    N = D * HW
    T = np.zeros(N)
    inside = np.zeros(N, np.bool_)
    absent = np.zeros(N, np.bool_)
    for lz in range(D):
        gz = z0 - 1 + lz
        for ly in range(h + 2):
            gy = y0 - 1 + ly
            for lx in range(W):
                gx = x0 - 1 + lx
                if gz < 0 or gz >= Z or gy < 0 or gy >= Y or gx < 0 or gx >= X:
                    absent[lz * HW + ly * W + lx] = True
                    T[lz * HW + ly * W + lx] = INF
    for i in range(m):
        z = pix[i] // YX
        r = pix[i] - z * YX
        y = r // X
        x = r - y * X
        q = (z - z0 + 1) * HW + (y - y0 + 1) * W + (x - x0 + 1)
        inside[q] = True
        T[q] = INF
    n_src = 0
    for q in range(N):
        if not inside[q] and not absent[q]:
            n_src += 1
    if n_src == 0:
        for q in range(N):
            if absent[q]:
                T[q] = 0.0
    for _ in range(max_sweeps):
        change = 0.0
        for sweep in range(8):
            zs = 1 if (sweep & 4) == 0 else -1
            ys = 1 if (sweep & 2) == 0 else -1
            xs = 1 if (sweep & 1) == 0 else -1
            for iz in range(d_):
                lz = 1 + iz if zs > 0 else d_ - iz
                for iy in range(h):
                    ly = 1 + iy if ys > 0 else h - iy
                    for ix in range(w):
                        lx = 1 + ix if xs > 0 else w - ix
                        q = lz * HW + ly * W + lx
                        if not inside[q]:
                            continue
                        u = godunov3(min(T[q - HW], T[q + HW]), min(T[q - W], T[q + W]),
                                     min(T[q - 1], T[q + 1]), hz, 1.0, 1.0)
                        if u < T[q]:
                            dd = T[q] - u if T[q] < INF else INF
                            if dd > change:
                                change = dd
                            T[q] = u
        if change <= tol:
            break
    for i in range(m):
        z = pix[i] // YX
        r = pix[i] - z * YX
        y = r // X
        x = r - y * X
        q = (z - z0 + 1) * HW + (y - y0 + 1) * W + (x - x0 + 1)
        t0 = T[q]
        g = np.zeros(3)
        steps = (HW, W, 1)
        spac = (hz, 1.0, 1.0)
        for a in range(3):
            vp = t0
            vm = t0
            qp = q + steps[a]
            qm = q - steps[a]
            if not absent[qp]:
                vp = T[qp] if inside[qp] else 0.0
            if not absent[qm]:
                vm = T[qm] if inside[qm] else 0.0
            g[a] = (vp - vm) / (2.0 * spac[a])
        nrm = math.sqrt(g[0] * g[0] + g[1] * g[1] + g[2] * g[2]) + 1e-60
        out_flow[0, z, y, x] = g[0] / nrm
        out_flow[1, z, y, x] = g[1] / nrm
        out_flow[2, z, y, x] = g[2] / nrm
        out_dist[z, y, x] = t0


@pjit
def eikonal_flows_3d(order, offsets, Z, Y, X, hz, tol, max_sweeps, out_flow, out_dist):
    """3D Omnipose flows: 6-neighbour Godunov eikonal with Z spacing ``hz``; the
    gradient is in physical units (Z differences divided by ``hz``) and normalised."""
    n = offsets.size - 1
    for k in prange(n):
        s = offsets[k]
        e = offsets[k + 1]
        if e > s:
            _eikonal_one_3d(order[s:e], Z, Y, X, hz, tol, max_sweeps, out_flow, out_dist)


# ----------------------------------------------------------------------------- Euler integration


_LANES = 4  # points advanced together (independent dependency chains overlap in the CPU)
_CHUNK = 1024  # points per parallel task


@pjit
def padded_step_2d(flow, fg, scale, out):
    """``out[y, x, a] = flow[a, y, x] / scale`` (float32) where ``fg``, untouched
    (zero) elsewhere: :func:`follow_2d`'s interleaved step field in one parallel
    pass. ``out`` float32 (Y+1, X+1, 2), zero on entry."""
    Y = fg.shape[0]
    X = fg.shape[1]
    for y in prange(Y):
        for x in range(X):
            if fg[y, x]:
                out[y, x, 0] = flow[0, y, x] / scale
                out[y, x, 1] = flow[1, y, x] / scale


_F1 = np.float32(1.0)
_F0 = np.float32(0.0)
_FH = np.float32(0.5)


@jit
def _pixel_sure(o, bound):
    """``floor(o - bound) == floor(o + bound)`` (float32): every position within
    ``bound`` of ``o`` lies in ``o``'s pixel."""
    return math.floor(o - bound) == math.floor(o + bound)


@jit
def _interp_2d(stepf, W2, y, x):
    """Bilinear float32 interpolation of the interleaved (dy, dx) step field (rows of
    ``W2 = 2 * (X + 1)`` floats, a zero last row / column) at (y, x) inside the image."""
    iy = int(y)
    ix = int(x)
    wy = y - np.float32(iy)
    wx = x - np.float32(ix)
    b = iy * W2 + 2 * ix
    w00 = (_F1 - wy) * (_F1 - wx)
    w01 = (_F1 - wy) * wx
    w10 = wy * (_F1 - wx)
    w11 = wy * wx
    dy = w00 * stepf[b] + w01 * stepf[b + 2] + w10 * stepf[b + W2] + w11 * stepf[b + W2 + 2]
    dx = w00 * stepf[b + 1] + w01 * stepf[b + 3] + w10 * stepf[b + W2 + 1] + w11 * stepf[b + W2 + 3]
    return dy, dx


@pjit
def follow_2d(stepf, Y, X, py, px, niter, tol, out_y, out_x):
    """Euler integration of points along the bilinearly interpolated step field
    (Cellpose ``steps2D_interp``), with early stops.

    ``stepf`` float32, flat ``(Y+1, X+1, 2)``: the per-iteration displacement
    (already masked to the foreground and divided by the flow scale) with
    interleaved components and one extra zero row and column (they only ever
    get weight 0). Points must start inside ``[0, Y-1] x [0, X-1]``; positions
    are clamped to that box after every step; the interpolation at ``(y, x)``
    uses the pixels ``floor(y) + {0, 1}`` x ``floor(x) + {0, 1}``.

    Positions, weights and steps are float32, as in Cellpose (torch float32
    tensors); every operation is a float32 one (no float64 promotion).

    Early stops (``tol`` float32 >= 0). Step ``t`` takes ``p_t`` to
    ``p_{t+1}``; ``r = niter - (t + 1)`` steps are left and the end point
    candidate is ``o = p_{t+1}`` if ``r`` is even, else ``p_t`` (the position
    of the same parity as ``p_niter``).

    * ``p_{t+1} == p_t`` (bit for bit): a fixed point; the end point is ``p_t``.
    * ``p_{t+1} == p_{t-1}``: a 2-cycle; the end point is ``o``. These two
      exact stops give the same result as running all ``niter`` steps (the
      iteration is a fixed map). In float32 most points reach one at their
      sink within ~60 steps.
    * ``tol > 0``: with ``e = max_a |p_{t+1,a} - p_{t-1,a}|`` (the two-step
      displacement; ``p_{-1} = -1``) and ``bound = float32(ceil(r / 2)) * e``
      (``ceil(r / 2)`` two-step moves lead from ``o`` to ``p_niter``: the
      drift left if the two-step displacement does not grow), the point stops
      at ``o`` when ``bound <= tol`` and ``floor(o_a - bound) == floor(o_a +
      bound)`` on every axis: it is settling on (or oscillating, slowly
      damped, around) a sink, its end point moves by about ``bound`` at most
      and its pixel -- what the Cellpose grouping reads -- stays the same.
      ``tol = 0``: the exact stops only (``bound <= 0`` only when ``e == 0``
      or on the last step, which ends the run anyway).

    Points are advanced ``_LANES`` at a time (independent dependency chains
    overlap in the CPU), ``_CHUNK`` points per parallel task.
    """
    W2 = (X + 1) * 2
    ymax = np.float32(Y - 1.0)
    xmax = np.float32(X - 1.0)
    n = py.size
    approx = tol > 0
    nchunks = (n + _CHUNK - 1) // _CHUNK
    for c in prange(nchunks):
        ys = np.empty(_LANES, np.float32)
        xs = np.empty(_LANES, np.float32)
        p1y = np.empty(_LANES, np.float32)
        p1x = np.empty(_LANES, np.float32)
        act = np.empty(_LANES, np.bool_)
        c1 = min(n, (c + 1) * _CHUNK)
        for g0 in range(c * _CHUNK, c1, _LANES):
            m = min(_LANES, c1 - g0)
            for k in range(m):
                ys[k] = np.float32(py[g0 + k])
                xs[k] = np.float32(px[g0 + k])
                p1y[k] = np.float32(-1.0)
                p1x[k] = np.float32(-1.0)
                act[k] = True
            nact = m
            for t in range(niter):
                if nact == 0:
                    break
                left = niter - 1 - t
                odd = (left % 2) == 1
                moves = np.float32((left + 1) // 2)
                for k in range(m):
                    if not act[k]:
                        continue
                    y = ys[k]
                    x = xs[k]
                    dy, dx = _interp_2d(stepf, W2, y, x)
                    yn = min(ymax, max(_F0, y + dy))
                    xn = min(xmax, max(_F0, x + dx))
                    if yn == y and xn == x:  # fixed point
                        act[k] = False
                        nact -= 1
                        continue
                    e = max(abs(yn - p1y[k]), abs(xn - p1x[k]))
                    bound = moves * e
                    if bound <= tol:  # rare: one test on the common path
                        oy = y if odd else yn
                        ox = x if odd else xn
                        if e == _F0 or (approx and _pixel_sure(oy, bound) and _pixel_sure(ox, bound)):
                            ys[k] = oy
                            xs[k] = ox
                            act[k] = False
                            nact -= 1
                            continue
                    p1y[k] = y
                    p1x[k] = x
                    ys[k] = yn
                    xs[k] = xn
            for k in range(m):
                out_y[g0 + k] = ys[k]
                out_x[g0 + k] = xs[k]


@pjit
def follow_2d_suppressed(stepf, Y, X, py, px, niter, out_y, out_x):
    """Omnipose's Euler integration with *suppressed* steps: :func:`follow_2d`'s
    field, interpolation, clamping and float32 arithmetic, but the step is the
    running average of the current and previous interpolated flows divided by
    ``1 + t`` (``niter + 1`` evaluations, the first seeding the average); every
    point runs every step (no early stops)."""
    W2 = (X + 1) * 2
    ymax = np.float32(Y - 1.0)
    xmax = np.float32(X - 1.0)
    n = py.size
    nsteps = niter + 1
    nchunks = (n + _CHUNK - 1) // _CHUNK
    for c in prange(nchunks):
        ys = np.empty(_LANES, np.float32)
        xs = np.empty(_LANES, np.float32)
        d0y = np.empty(_LANES, np.float32)
        d0x = np.empty(_LANES, np.float32)
        c1 = min(n, (c + 1) * _CHUNK)
        for g0 in range(c * _CHUNK, c1, _LANES):
            m = min(_LANES, c1 - g0)
            for k in range(m):
                ys[k] = np.float32(py[g0 + k])
                xs[k] = np.float32(px[g0 + k])
                d0y[k] = _F0
                d0x[k] = _F0
            for t in range(nsteps):
                for k in range(m):
                    y = ys[k]
                    x = xs[k]
                    dy, dx = _interp_2d(stepf, W2, y, x)
                    if t == 0:  # the initial flow seeds the running average
                        d0y[k] = dy
                        d0x[k] = dx
                        continue
                    dy = _FH * (dy + d0y[k])
                    dx = _FH * (dx + d0x[k])
                    d0y[k] = dy
                    d0x[k] = dx
                    dy = dy / np.float32(t)
                    dx = dx / np.float32(t)
                    ys[k] = min(ymax, max(_F0, y + dy))
                    xs[k] = min(xmax, max(_F0, x + dx))
            for k in range(m):
                out_y[g0 + k] = ys[k]
                out_x[g0 + k] = xs[k]


@jit
def _interp_3d(stepf, b, SX, SY, SZ, wz, wy, wx, d):
    """Trilinear interpolation of the 3 step components at base index ``b`` into ``d``."""
    for a in range(3):
        lo = ((_F1 - wy) * ((_F1 - wx) * stepf[b + a] + wx * stepf[b + SX + a])
              + wy * ((_F1 - wx) * stepf[b + SY + a] + wx * stepf[b + SY + SX + a]))
        hi = ((_F1 - wy) * ((_F1 - wx) * stepf[b + SZ + a] + wx * stepf[b + SZ + SX + a])
              + wy * ((_F1 - wx) * stepf[b + SZ + SY + a] + wx * stepf[b + SZ + SY + SX + a]))
        d[a] = (_F1 - wz) * lo + wz * hi


@pjit
def follow_3d(stepf, Z, Y, X, pz, py, px, niter, tol, out_z, out_y, out_x):
    """3D twin of :func:`follow_2d`: ``stepf`` float32 flat ``(Z+1, Y+1, X+1, 3)``,
    trilinear interpolation, float32 arithmetic, the same early stops (every
    axis must pass the pixel test)."""
    SX = 3
    SY = (X + 1) * 3
    SZ = (Y + 1) * SY
    zmax = np.float32(Z - 1.0)
    ymax = np.float32(Y - 1.0)
    xmax = np.float32(X - 1.0)
    n = py.size
    approx = tol > 0
    nchunks = (n + _CHUNK - 1) // _CHUNK
    for c in prange(nchunks):
        pos = np.empty((_LANES, 3), np.float32)
        p1 = np.empty((_LANES, 3), np.float32)
        d = np.empty(3, np.float32)
        act = np.empty(_LANES, np.bool_)
        c1 = min(n, (c + 1) * _CHUNK)
        for g0 in range(c * _CHUNK, c1, _LANES):
            m = min(_LANES, c1 - g0)
            for k in range(m):
                pos[k, 0] = np.float32(pz[g0 + k])
                pos[k, 1] = np.float32(py[g0 + k])
                pos[k, 2] = np.float32(px[g0 + k])
                for a in range(3):
                    p1[k, a] = np.float32(-1.0)
                act[k] = True
            nact = m
            for t in range(niter):
                if nact == 0:
                    break
                left = niter - 1 - t
                odd = (left % 2) == 1
                moves = np.float32((left + 1) // 2)
                for k in range(m):
                    if not act[k]:
                        continue
                    z = pos[k, 0]
                    y = pos[k, 1]
                    x = pos[k, 2]
                    iz = int(z)
                    iy = int(y)
                    ix = int(x)
                    _interp_3d(stepf, iz * SZ + iy * SY + ix * SX, SX, SY, SZ, z - np.float32(iz),
                               y - np.float32(iy), x - np.float32(ix), d)
                    zn = min(zmax, max(_F0, z + d[0]))
                    yn = min(ymax, max(_F0, y + d[1]))
                    xn = min(xmax, max(_F0, x + d[2]))
                    if zn == z and yn == y and xn == x:
                        act[k] = False
                        nact -= 1
                        continue
                    e = max(abs(zn - p1[k, 0]), abs(yn - p1[k, 1]), abs(xn - p1[k, 2]))
                    bound = moves * e
                    if bound <= tol:
                        oz = z if odd else zn
                        oy = y if odd else yn
                        ox = x if odd else xn
                        if e == _F0 or (approx and _pixel_sure(oz, bound) and _pixel_sure(oy, bound)
                                        and _pixel_sure(ox, bound)):
                            pos[k, 0] = oz
                            pos[k, 1] = oy
                            pos[k, 2] = ox
                            act[k] = False
                            nact -= 1
                            continue
                    p1[k, 0] = z
                    p1[k, 1] = y
                    p1[k, 2] = x
                    pos[k, 0] = zn
                    pos[k, 1] = yn
                    pos[k, 2] = xn
            for k in range(m):
                out_z[g0 + k] = pos[k, 0]
                out_y[g0 + k] = pos[k, 1]
                out_x[g0 + k] = pos[k, 2]


@pjit
def follow_3d_suppressed(stepf, Z, Y, X, pz, py, px, niter, out_z, out_y, out_x):
    """3D twin of :func:`follow_2d_suppressed` (trilinear interpolation)."""
    SX = 3
    SY = (X + 1) * 3
    SZ = (Y + 1) * SY
    zmax = np.float32(Z - 1.0)
    ymax = np.float32(Y - 1.0)
    xmax = np.float32(X - 1.0)
    n = py.size
    nsteps = niter + 1
    nchunks = (n + _CHUNK - 1) // _CHUNK
    for c in prange(nchunks):
        pos = np.empty((_LANES, 3), np.float32)
        d0 = np.empty((_LANES, 3), np.float32)
        d = np.empty(3, np.float32)
        c1 = min(n, (c + 1) * _CHUNK)
        for g0 in range(c * _CHUNK, c1, _LANES):
            m = min(_LANES, c1 - g0)
            for k in range(m):
                pos[k, 0] = np.float32(pz[g0 + k])
                pos[k, 1] = np.float32(py[g0 + k])
                pos[k, 2] = np.float32(px[g0 + k])
                for a in range(3):
                    d0[k, a] = _F0
            for t in range(nsteps):
                for k in range(m):
                    z = pos[k, 0]
                    y = pos[k, 1]
                    x = pos[k, 2]
                    iz = int(z)
                    iy = int(y)
                    ix = int(x)
                    _interp_3d(stepf, iz * SZ + iy * SY + ix * SX, SX, SY, SZ, z - np.float32(iz),
                               y - np.float32(iy), x - np.float32(ix), d)
                    if t == 0:
                        for a in range(3):
                            d0[k, a] = d[a]
                        continue
                    for a in range(3):
                        d[a] = _FH * (d[a] + d0[k, a])
                        d0[k, a] = d[a]
                        d[a] = d[a] / np.float32(t)
                    pos[k, 0] = min(zmax, max(_F0, z + d[0]))
                    pos[k, 1] = min(ymax, max(_F0, y + d[1]))
                    pos[k, 2] = min(xmax, max(_F0, x + d[2]))
            for k in range(m):
                out_z[g0 + k] = pos[k, 0]
                out_y[g0 + k] = pos[k, 1]
                out_x[g0 + k] = pos[k, 2]


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


# ----------------------------------------------------------------------------- flow error


@jit
def flow_errors(lab, mu, dp, scale, n):
    """Mean over each object of ``sum_c (mu_c - dp_c / scale)^2`` (float64, length n).

    ``lab`` int32 flat ids 0..n, ``mu`` and ``dp`` float32 (C, P) flat fields.
    """
    C = mu.shape[0]
    s = np.zeros(n + 1)
    cnt = np.zeros(n + 1, np.int64)
    for i in range(lab.size):
        v = lab[i]
        if v == 0:
            continue
        e = 0.0
        for c in range(C):
            d = float(mu[c, i]) - float(dp[c, i]) / scale
            e += d * d
        s[v] += e
        cnt[v] += 1
    out = np.empty(n)
    for k in range(1, n + 1):
        out[k - 1] = s[k] / cnt[k] if cnt[k] > 0 else np.nan
    return out


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
