"""Numba kernels of the flow targets (private; see ``flows.py``): Cellpose heat
diffusion flows, Omnipose smooth-distance flows, and the error of predicted flows
against the flows recomputed for masks (the decoder's flow-error QC).

Every kernel takes C-contiguous arrays of fixed dtypes; the public functions in
``flows.py`` validate and coerce once before calling them:

* pixel lists: ``int64`` flat (raster) indices, grouped per object by
  :func:`cellseg._labels_kernels.group_pixels` (CSR: object ``k`` owns
  ``order[offsets[k-1]:offsets[k]]``, in raster order);
* flow fields: ``float32`` ``(ndim, *spatial)``; heat / distance fields are
  computed in ``float64``.

Per-object work runs in parallel over objects (``prange``) on the object's
bounding box padded by one pixel, so the cost grows with the object's area
(times its iteration count), never with the image size. Objects write
disjoint pixels of the output, so the parallel loop is race free.
"""
from __future__ import annotations

import math

import numpy as np

from cellseg._numba import jit, pjit, prange

INF = np.inf
SQRT2 = math.sqrt(2.0)


# ----------------------------------------------------------------------------- Cellpose heat diffusion


@jit
def _round_half_even(v):
    f = math.floor(v)
    d = v - f
    if d > 0.5:
        return f + 1.0
    if d < 0.5:
        return f
    return f if (f % 2.0) == 0.0 else f + 1.0


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
