"""Numba kernels of the StarDist representation (private; see ``stardist.py``).

Every kernel takes C-contiguous arrays of the fixed dtypes written in its
docstring and never validates; the public wrappers in ``stardist.py`` do.

Conventions (same as StarDist):

* ray ``k`` has angle ``phi_k = 2*pi*k/n_rays``; it steps ``sin(phi)`` along
  rows (y) and ``cos(phi)`` along columns (x);
* a polygon is ``n_rays`` vertices ``(y_k, x_k) = centre + d_k (sin phi_k, cos phi_k)``;
  with rows as y and columns as x the vertex order is counter-clockwise in the
  (x, y) frame used by the geometry below (positive shoelace area).

Geometry of star polygons (exact, for simple non-convex polygons). A polygon
built from non-negative distances along equiangular rays is the union of its
``n_rays`` fan triangles ``(centre, v_k, v_k+1)``: convex, disjoint interiors
(each lies in its own angular sector of width < pi). Intersection areas:

* fast path, polar sweep (``_polar_area``): when both polygons see one common
  point strictly inside their kernels (every edge turns counter-clockwise
  around it; tried with either centre), both are radial functions around it and
  the intersection is ``r <= min(rho_a, rho_b)``; merging the two vertex
  direction lists cuts the circle into wedges in which each boundary is a
  single edge, and each wedge contributes one or two triangles. O(n + m).
* general path (``fan_intersection_area``): area(a & b) = sum over the fan
  triangles U of b of area(a & U), a & U being polygon a clipped by U's three
  half-planes (Sutherland-Hodgman is exact in area for a convex window, also
  for a non-convex subject). O(n * m).
"""
from __future__ import annotations

import math

import numpy as np

from cellseg._numba import jit, numba, pjit, prange

_INF = 1e30


# ============================================================================ targets


@jit
def _ray_tables(n_rays, H, W):
    """Positions along each ray, float32 (n_rays, T): y_t = y_(t-1) + sin(phi)
    accumulated in float32 as StarDist's C++ does; they do not depend on the
    start pixel, so the march has no loop-carried float dependency. Slot 0
    holds the end-point correction factor (position 0 is never tested). A ray
    leaves the image after at most (H + W) / max(|sin|, |cos|) <= 1.5 (H + W)
    steps."""
    st = np.float32(2.0 * math.pi / n_rays)
    T = 3 * (H + W) // 2 + 4
    ys = np.empty((n_rays, T), np.float32)
    xs = np.empty((n_rays, T), np.float32)
    for k in range(n_rays):
        phi = np.float32(k) * st
        dr = np.float32(math.sin(phi))
        dc = np.float32(math.cos(phi))
        corr = np.float32(0.5) / max(abs(dr), abs(dc)) - np.float32(1.0)
        ys[k, 0] = corr
        xs[k, 0] = corr
        y = np.float32(0.0)
        x = np.float32(0.0)
        for t in range(1, T):
            y += dr
            x += dc
            ys[k, t] = y
            xs[k, t] = x
    return ys, xs


@jit
def foreground_rows_kernel(lab, gy, gx, Hg, Wg):
    """Foreground output pixels grouped by output row (CSR).

    Returns ``(start, cols)``: int64 ``start`` (Hg + 1,) and int32 ``cols``, the
    columns ``j`` of output row ``i`` with ``lab[i*gy, j*gx] != 0`` being
    ``cols[start[i]:start[i+1]]`` in increasing order. One read of the grid
    pixels; the rays kernel then never looks at background again.
    """
    start = np.zeros(Hg + 1, np.int64)
    n = 0
    for i in range(Hg):
        row = i * gy
        for j in range(Wg):
            if lab[row, j * gx] != 0:
                n += 1
        start[i + 1] = n
    cols = np.empty(n, np.int32)
    n = 0
    for i in range(Hg):
        row = i * gy
        for j in range(Wg):
            if lab[row, j * gx] != 0:
                cols[n] = j
                n += 1
    return start, cols


#: marks a (ray, step) whose rounded position may depend on the start pixel
_NEAR_HALF = np.int64(-(2 ** 62))


@jit
def _ray_offsets(ys, xs, Wp, H, W):
    """Flat offsets in the padded image (row stride ``Wp``) of the rounded ray
    positions: ``off[k, t] = rint(ys[k, t]) * Wp + rint(xs[k, t])``.

    The kernel needs ``rint(float32(i + ys[k, t]))`` for an integer start row
    ``i``; the float32 sum is off the exact one by at most half an ulp at the
    largest magnitude ``M = max(H, W) + T``, so it equals ``i + rint(ys[k, t])``
    whenever the fractional part of ``ys[k, t]`` is farther than that from 1/2
    (margin: 4 half-ulps). Entries that are not are ``_NEAR_HALF`` and the
    kernel rounds the float32 sum there itself (ties to even depend on ``i``).
    """
    n, T = ys.shape
    M = max(H, W) + T + 2
    e = 0
    while (1 << e) < M:
        e += 1
    thr = 2.0 ** (e - 22)  # 4 x half an ulp of float32 at magnitude 2**e
    off = np.empty((n, T), np.int64)
    for k in range(n):
        off[k, 0] = 0
        for t in range(1, T):
            y = np.float64(ys[k, t])
            x = np.float64(xs[k, t])
            if abs(y - math.floor(y) - 0.5) <= thr or abs(x - math.floor(x) - 0.5) <= thr:
                off[k, t] = _NEAR_HALF
            else:
                off[k, t] = np.int64(np.rint(y)) * Wp + np.int64(np.rint(x))
    return off


@pjit
def star_dist_kernel(labp, n_rays, gy, gx, start, cols, out):
    """Ray distances (StarDist's ``star_dist``), float32 arithmetic as in its C++.

    labp : int32 (H + 2, W + 2) labels padded by one pixel of 0 (so a ray that
    leaves the image meets 0, a different id, no bounds checks); start, cols :
    the foreground of the output grid from :func:`foreground_rows_kernel`;
    out : float32 (n_rays, Hg, Wg), ``Hg = (H-1)//gy + 1``, **zero on entry**
    (only foreground pixels are written). Pixel ``(i, j)`` of the output is
    image pixel ``(i*gy, j*gx)``. From a foreground pixel each ray steps by
    ``(sin phi, cos phi)`` and stops at the first rounded position that is out
    of the image or carries another id; the last step is shortened so the end
    point lies half a pixel past the last inside pixel (StarDist's sub-pixel
    correction). A step moves the rounded position by at most one pixel per
    axis, so the march ends on the padding at the latest.
    """
    H = labp.shape[0] - 2
    W = labp.shape[1] - 2
    Hg = out.shape[1]
    ys, xs = _ray_tables(n_rays, H, W)
    off = _ray_offsets(ys, xs, W + 2, H, W)
    flat = labp.ravel()
    for i in prange(Hg):
        if start[i + 1] > start[i]:
            _star_dist_row(flat, W + 2, i, gy, gx, ys, xs, off, cols[start[i]:start[i + 1]], out)


@jit
def _star_dist_row(flat, Wp, i, gy, gx, ys, xs, off, rcols, out):
    """The foreground pixels ``rcols`` of output row ``i`` of
    :func:`star_dist_kernel`, ray-major so that the writes ``out[k, i, :]`` go
    forward in one plane at a time. flat: the padded labels raveled (row
    stride ``Wp``); ys/xs: float32 (n_rays, T) tabulated positions along each
    ray, slot 0 = correction; off: :func:`_ray_offsets` of them."""
    fi = np.float32(i * gy)
    prow = (i * gy + 1) * Wp + 1
    for k in range(ys.shape[0]):
        ck = ys[k, 0]
        dr = ys[k, 1]
        dc = xs[k, 1]
        yk = ys[k]
        xk = xs[k]
        ok = off[k]
        for q in range(rcols.shape[0]):
            j = rcols[q]
            p = prow + j * gx
            v = flat[p]
            t = 1
            while True:
                o = ok[t]
                if o != _NEAR_HALF:
                    r = p + o
                else:  # round the float32 sum as StarDist does
                    ii = int(np.rint(fi + yk[t]))
                    jj = int(np.rint(np.float32(j * gx) + xk[t]))
                    r = (ii + 1) * Wp + jj + 1
                if flat[r] != v:
                    y = yk[t] + ck * dr
                    x = xk[t] + ck * dc
                    out[k, i, j] = math.sqrt(y * y + x * x)
                    break
                t += 1


@jit
def _edt_rows(g, h, w, vbuf, zbuf, dout):
    """In place 2nd pass of the exact squared EDT (Felzenszwalb-Huttenlocher).

    g : float64 (h, w) column pass results (squared distances, _INF where no
    feature in the column). dout receives, row by row, min_q g[r,q] + (x-q)^2.
    """
    for r in range(h):
        k = -1
        for q in range(w):
            fq = g[r, q]
            if fq >= _INF:
                continue
            if k < 0:
                k = 0
                vbuf[0] = q
                zbuf[0] = -_INF
                zbuf[1] = _INF
                continue
            s = ((fq + q * q) - (g[r, vbuf[k]] + vbuf[k] * vbuf[k])) / (2.0 * q - 2.0 * vbuf[k])
            while s <= zbuf[k]:
                k -= 1
                s = ((fq + q * q) - (g[r, vbuf[k]] + vbuf[k] * vbuf[k])) / (2.0 * q - 2.0 * vbuf[k])
            k += 1
            vbuf[k] = q
            zbuf[k] = s
            zbuf[k + 1] = _INF
        if k < 0:
            for x in range(w):
                dout[r, x] = _INF
            continue
        k = 0
        for x in range(w):
            while zbuf[k + 1] < x:
                k += 1
            d = x - vbuf[k]
            dout[r, x] = d * d + g[r, vbuf[k]]


@pjit
def edt_prob_kernel(lab, bb, ids, out):
    """Per-object Euclidean distance transform normalised by its maximum.

    lab int32 (H, W); bb int64 (n_ids, 4) per id: min row, min col, max row, max col
    (inclusive; :func:`cellseg.labels.bounding_boxes`); ids int64 (m,) the present ids;
    out float32 (H, W), zero-initialised.

    For object ``v`` the distance of each of its pixels to the nearest pixel
    with another id (background included) inside the object's bounding box
    grown by one pixel on every side that is not the image border (pixels
    beyond the image border are not background: StarDist's ``edt_prob``).
    Values are divided by (max + 1e-10) of the object.
    """
    H, W = lab.shape
    for t in prange(ids.shape[0]):
        v = ids[t]
        r0 = bb[v, 0] - 1 if bb[v, 0] > 0 else bb[v, 0]
        c0 = bb[v, 1] - 1 if bb[v, 1] > 0 else bb[v, 1]
        r1 = bb[v, 2] + 1 if bb[v, 2] < H - 1 else bb[v, 2]
        c1 = bb[v, 3] + 1 if bb[v, 3] < W - 1 else bb[v, 3]
        h = r1 - r0 + 1
        w = c1 - c0 + 1
        g = np.empty((h, w), np.float64)
        # column pass: squared distance to the nearest feature in the column
        for c in range(w):
            last = -1
            for r in range(h):
                if lab[r0 + r, c0 + c] != v:
                    last = r
                    g[r, c] = 0.0
                elif last >= 0:
                    g[r, c] = float((r - last) * (r - last))
                else:
                    g[r, c] = _INF
            last = -1
            for r in range(h - 1, -1, -1):
                if lab[r0 + r, c0 + c] != v:
                    last = r
                elif last >= 0:
                    d = float((last - r) * (last - r))
                    if d < g[r, c]:
                        g[r, c] = d
        vbuf = np.empty(w + 1, np.int64)
        zbuf = np.empty(w + 2, np.float64)
        dd = np.empty((h, w), np.float64)
        _edt_rows(g, h, w, vbuf, zbuf, dd)
        mx = 0.0
        for r in range(h):
            for c in range(w):
                if lab[r0 + r, c0 + c] == v:
                    e = math.sqrt(dd[r, c])
                    dd[r, c] = e
                    if e > mx:
                        mx = e
        den = mx + 1e-10
        for r in range(h):
            for c in range(w):
                if lab[r0 + r, c0 + c] == v:
                    out[r0 + r, c0 + c] = dd[r, c] / den


# ============================================================================ polygons


@jit
def dist_to_coord_kernel(dist, points, sin_a, cos_a, out):
    """Polygon vertices exactly as StarDist's ``dist_to_coord`` computes them.

    dist float32 (n, R); points int64 (n, 2); sin_a/cos_a float64 (R,) from
    ``np.sin/np.cos(ray_angles)``; out float32 (n, 2, R):
    ``float32(float32(d * sin) + p_y)`` and the same with cos / p_x.
    """
    n, R = dist.shape
    for i in range(n):
        py = np.float64(points[i, 0])
        px = np.float64(points[i, 1])
        for k in range(R):
            d = np.float64(dist[i, k])
            oy = np.float32(d * sin_a[k])
            ox = np.float32(d * cos_a[k])
            out[i, 0, k] = np.float32(np.float64(oy) + py)
            out[i, 1, k] = np.float32(np.float64(ox) + px)


@jit
def _clip_halfplane(src, n, ax, ay, bx, by, dst):
    """Sutherland-Hodgman step: keep the part of polygon src[:n] left of a->b."""
    if n == 0:
        return 0
    ex = bx - ax
    ey = by - ay
    m = 0
    px = src[n - 1, 0]
    py = src[n - 1, 1]
    dp = ex * (py - ay) - ey * (px - ax)
    for i in range(n):
        qx = src[i, 0]
        qy = src[i, 1]
        dq = ex * (qy - ay) - ey * (qx - ax)
        if dq >= 0.0:
            if dp < 0.0:
                t = dp / (dp - dq)
                dst[m, 0] = px + t * (qx - px)
                dst[m, 1] = py + t * (qy - py)
                m += 1
            dst[m, 0] = qx
            dst[m, 1] = qy
            m += 1
        elif dp > 0.0:
            t = dp / (dp - dq)
            dst[m, 0] = px + t * (qx - px)
            dst[m, 1] = py + t * (qy - py)
            m += 1
        px = qx
        py = qy
        dp = dq
    return m


@jit
def _shoelace(buf, n):
    a = 0.0
    for i in range(n):
        j = i + 1 if i + 1 < n else 0
        a += buf[i, 0] * buf[j, 1] - buf[j, 0] * buf[i, 1]
    return 0.5 * a


@jit
def _fan(vx, vy, cx, cy, ox, oy, tris, tbb):
    """Fan triangles of a star polygon, shifted by (-ox, -oy), and their bboxes.

    tris float64 (R, 3, 2); tbb float64 (R, 4) xmin, ymin, xmax, ymax.
    Returns the number of non-degenerate triangles written (degenerate ones,
    zero area, are dropped).
    """
    R = vx.shape[0]
    m = 0
    ccx = cx - ox
    ccy = cy - oy
    for k in range(R):
        k1 = k + 1 if k + 1 < R else 0
        ax = vx[k] - ox
        ay = vy[k] - oy
        bx = vx[k1] - ox
        by = vy[k1] - oy
        cr = (ax - ccx) * (by - ccy) - (ay - ccy) * (bx - ccx)
        if cr <= 0.0:
            continue
        tris[m, 0, 0] = ccx
        tris[m, 0, 1] = ccy
        tris[m, 1, 0] = ax
        tris[m, 1, 1] = ay
        tris[m, 2, 0] = bx
        tris[m, 2, 1] = by
        tbb[m, 0] = min(ccx, ax, bx)
        tbb[m, 1] = min(ccy, ay, by)
        tbb[m, 2] = max(ccx, ax, bx)
        tbb[m, 3] = max(ccy, ay, by)
        m += 1
    return m


@jit
def _ray_t(ux, uy, px, py, qx, qy):
    """t such that t*u lies on the line p->q (u from the origin)."""
    ex = qx - px
    ey = qy - py
    return (px * ey - py * ex) / (ux * ey - uy * ex)


@jit
def _piece(ux, uy, tpu, tqu, wx, wy, tpw, tqw, p0x, p0y, p1x, p1y, q0x, q0y, q1x, q1y):
    """Area of {r <= min(rho_P, rho_Q)} in the wedge from direction u to w.

    Within the wedge the boundary of P is the line p0->p1 and that of Q the
    line q0->q1 (the origin sees both from inside); ``t*u`` / ``t*w`` are their
    points on the wedge's bounding rays. The region is one triangle (origin,
    nearer point on u, nearer point on w) or, when the lines cross inside the
    wedge, two triangles meeting at the crossing.
    """
    cw = ux * wy - uy * wx
    if cw == 0.0:
        return 0.0
    if tpu <= tqu and tpw <= tqw:
        return 0.5 * tpu * tpw * cw
    if tqu <= tpu and tqw <= tpw:
        return 0.5 * tqu * tqw * cw
    # the lines cross inside the wedge: X = p0 + s (p1 - p0)
    ex = p1x - p0x
    ey = p1y - p0y
    fx = q1x - q0x
    fy = q1y - q0y
    den = ex * fy - ey * fx
    sp = ((q0x - p0x) * fy - (q0y - p0y) * fx) / den
    xx = p0x + sp * ex
    xy = p0y + sp * ey
    tu = tpu if tpu < tqu else tqu
    tw = tpw if tpw < tqw else tqw
    return 0.5 * tu * (ux * xy - uy * xx) + 0.5 * tw * (xx * wy - xy * wx)


@jit
def _polar_area(ax, ay, bx, by, sec, suf, t_lo, t_hi):
    """Intersection area of two polygons star-shaped around the origin, or -1.

    ax, ay (n,) and bx, by (m,) vertices relative to the common point; both
    must see the origin strictly inside their kernel, i.e. every consecutive
    vertex pair turns counter-clockwise around it (cross > 0); otherwise -1
    is returned and the caller falls back to fan clipping. In polar
    coordinates around the origin the intersection is r <= min(rho_A, rho_B);
    the vertex directions of both, merged in angular order (O(n + m)), cut
    the circle into wedges where each boundary is a single edge.
    sec: int64 scratch (>= m,); suf: float64 scratch (>= n + 1,).

    Early exits (for NMS, which only needs "area > threshold area?"): the
    sweep goes through A's sectors in order, so the area accumulated so far is
    a lower bound and, with the origin at A's centre, adding A's own area in
    the sectors still to come (its remaining fan triangles) an upper bound.
    The partial area is returned as soon as it exceeds ``t_hi``, and the upper
    bound as soon as it falls below ``t_lo`` (pass -inf / inf for the exact
    area).
    """
    n = ax.shape[0]
    m = bx.shape[0]
    suf[n] = 0.0
    for k in range(n - 1, -1, -1):
        k1 = k + 1 if k + 1 < n else 0
        cr = ax[k] * ay[k1] - ay[k] * ax[k1]
        if cr <= 0.0:
            return -1.0
        suf[k] = suf[k + 1] + 0.5 * cr
    for l in range(m):
        l1 = l + 1 if l + 1 < m else 0
        if bx[l] * by[l1] - by[l] * bx[l1] <= 0.0:
            return -1.0
    # sector of every B vertex: k with cross(a_k, b) >= 0 and cross(b, a_k+1) > 0
    k = 0
    for l in range(m):
        steps = 0
        while True:
            k1 = k + 1 if k + 1 < n else 0
            if (ax[k] * by[l] - ay[k] * bx[l] >= 0.0) and (bx[l] * ay[k1] - by[l] * ax[k1] > 0.0):
                break
            k = k1
            steps += 1
            if steps > n:
                return -1.0
        sec[l] = k
    # first B vertex in angular order from direction a_0: where the sector index drops
    lstar = -1
    for l in range(m):
        lp = l - 1 if l > 0 else m - 1
        if sec[l] < sec[lp]:
            if lstar >= 0:
                return -1.0
            lstar = l
        elif sec[l] == sec[lp] and m > 1:
            # same sector: b_l must follow b_lp (counter-clockwise)
            if bx[lp] * by[l] - by[lp] * bx[l] < 0.0:
                return -1.0
    if lstar < 0:
        return -1.0
    # sweep the breakpoints (vertex directions of both) counter-clockwise from
    # a_0; at a vertex of one polygon its own ray parameter is 1, only the other
    # polygon's edge needs a ray/line intersection (one division per breakpoint)
    area = 0.0
    l = lstar
    cnt = 0
    lp = l - 1 if l > 0 else m - 1
    ux = ax[0]
    uy = ay[0]
    tau = 1.0
    tbu = _ray_t(ux, uy, bx[lp], by[lp], bx[l], by[l])
    for k in range(n):
        if area > t_hi:
            return area
        if area + suf[k] < t_lo:
            return area + suf[k]
        k1 = k + 1 if k + 1 < n else 0
        while cnt < m and sec[l] == k:
            lp = l - 1 if l > 0 else m - 1
            wx = bx[l]
            wy = by[l]
            taw = _ray_t(wx, wy, ax[k], ay[k], ax[k1], ay[k1])
            area += _piece(ux, uy, tau, tbu, wx, wy, taw, 1.0,
                           ax[k], ay[k], ax[k1], ay[k1], bx[lp], by[lp], wx, wy)
            ux = wx
            uy = wy
            tau = taw
            tbu = 1.0
            l = l + 1 if l + 1 < m else 0
            cnt += 1
        lp = l - 1 if l > 0 else m - 1
        wx = ax[k1]
        wy = ay[k1]
        tbw = _ray_t(wx, wy, bx[lp], by[lp], bx[l], by[l])
        area += _piece(ux, uy, tau, tbu, wx, wy, 1.0, tbw,
                       ax[k], ay[k], wx, wy, bx[lp], by[lp], bx[l], by[l])
        ux = wx
        uy = wy
        tau = 1.0
        tbu = tbw
    if cnt != m:
        return -1.0
    return area


@jit
def fan_intersection_area(vx_a, vy_a, cx_a, cy_a, vx_b, vy_b, cx_b, cy_b, scratch, t_lo=-np.inf, t_hi=np.inf):
    """Exact intersection area of two star polygons, whatever their position.

    Polygon b is the union of its fan triangles (convex, disjoint interiors),
    so area(a & b) = sum over b's fan triangles U of area(a & U), and a & U is
    polygon a (possibly non-convex) clipped by the three half-planes of U
    (Sutherland-Hodgman: for a convex clip window the signed area of the
    output is exact even for a non-convex subject; it may only contain
    zero-area bridges). Triangles whose box misses a's box are skipped.
    Coordinates are taken relative to centre a.

    Early exits as in :func:`_polar_area`: the sum so far is a lower bound,
    and adding the areas of the triangles still to clip an upper bound; the
    former is returned once it exceeds ``t_hi``, the latter once it falls
    below ``t_lo`` (the defaults give the exact area).
    """
    tri_b = scratch[0]
    bb_b = scratch[1]
    b0 = scratch[2]
    b1 = scratch[3]
    tarea = scratch[7]
    n = vx_a.shape[0]
    nb = _fan(vx_b, vy_b, cx_b, cy_b, cx_a, cy_a, tri_b, bb_b)
    x0 = vx_a[0] - cx_a
    x1 = x0
    y0 = vy_a[0] - cy_a
    y1 = y0
    for k in range(1, n):
        x0 = min(x0, vx_a[k] - cx_a)
        x1 = max(x1, vx_a[k] - cx_a)
        y0 = min(y0, vy_a[k] - cy_a)
        y1 = max(y1, vy_a[k] - cy_a)
    # area of the triangles that can meet a (0 for the others): what may still be added
    rest = 0.0
    for l in range(nb):
        if bb_b[l, 0] >= x1 or bb_b[l, 2] <= x0 or bb_b[l, 1] >= y1 or bb_b[l, 3] <= y0:
            tarea[l] = -1.0
            continue
        u = tri_b[l]
        tarea[l] = 0.5 * ((u[1, 0] - u[0, 0]) * (u[2, 1] - u[0, 1]) - (u[1, 1] - u[0, 1]) * (u[2, 0] - u[0, 0]))
        rest += tarea[l]
    total = 0.0
    for l in range(nb):
        if tarea[l] < 0.0:
            continue
        if total > t_hi:
            return total
        if total + rest < t_lo:
            return total + rest
        rest -= tarea[l]
        for k in range(n):
            b0[k, 0] = vx_a[k] - cx_a
            b0[k, 1] = vy_a[k] - cy_a
        u = tri_b[l]
        m = _clip_halfplane(b0, n, u[0, 0], u[0, 1], u[1, 0], u[1, 1], b1)
        if m < 3:
            continue
        m = _clip_halfplane(b1, m, u[2, 0], u[2, 1], u[0, 0], u[0, 1], b0)
        if m < 3:
            continue
        m = _clip_halfplane(b0, m, u[1, 0], u[1, 1], u[2, 0], u[2, 1], b1)
        if m < 3:
            continue
        total += _shoelace(b1, m)
    return total


@jit
def polar_intersection_area(vx_a, vy_a, vx_b, vy_b, ox, oy, scratch, t_lo=-np.inf, t_hi=np.inf):
    """Polar-sweep intersection area around the point (ox, oy), or -1 if not applicable."""
    ra = scratch[4]
    rb = scratch[5]
    sec = scratch[6]
    suf = scratch[7]
    n = vx_a.shape[0]
    m = vx_b.shape[0]
    for k in range(n):
        ra[0, k] = vx_a[k] - ox
        ra[1, k] = vy_a[k] - oy
    for l in range(m):
        rb[0, l] = vx_b[l] - ox
        rb[1, l] = vy_b[l] - oy
    return _polar_area(ra[0, :n], ra[1, :n], rb[0, :m], rb[1, :m], sec, suf, t_lo, t_hi)


@jit
def star_intersection_area(vx_a, vy_a, cx_a, cy_a, vx_b, vy_b, cx_b, cy_b, scratch, t_lo=-np.inf, t_hi=np.inf):
    """Exact intersection area of two star polygons.

    vx/vy float64 (R,) vertices in increasing ray angle, c* the centres the
    polygons are star-convex around; scratch from :func:`make_scratch`.
    Fast path: when both polygons are strictly star-shaped around centre a
    (or around centre b) the area comes from an O(n + m) polar sweep
    (:func:`_polar_area`); otherwise from fan-triangle clipping. With
    ``t_lo``/``t_hi`` the polar sweep and the fan clipping may return early a
    lower bound > t_hi or an upper bound < t_lo (see :func:`_polar_area`,
    :func:`fan_intersection_area`); the defaults give the
    exact area.
    """
    r = polar_intersection_area(vx_a, vy_a, vx_b, vy_b, cx_a, cy_a, scratch, t_lo, t_hi)
    if r >= 0.0:
        return r
    r = polar_intersection_area(vx_b, vy_b, vx_a, vy_a, cx_b, cy_b, scratch, t_lo, t_hi)
    if r >= 0.0:
        return r
    return fan_intersection_area(vx_a, vy_a, cx_a, cy_a, vx_b, vy_b, cx_b, cy_b, scratch, t_lo, t_hi)


@jit
def make_scratch(R):
    """Work buffers of :func:`star_intersection_area` for polygons of <= R vertices."""
    return (np.empty((R, 3, 2), np.float64), np.empty((R, 4), np.float64),
            np.empty((8 * R + 16, 2), np.float64), np.empty((8 * R + 16, 2), np.float64),
            np.empty((2, R), np.float64), np.empty((2, R), np.float64),
            np.empty(R, np.int64), np.empty(R + 1, np.float64))


@jit
def polygon_area_kernel(vx, vy):
    """Shoelace area (float64) of polygon vertices vx, vy float64 (R,)."""
    R = vx.shape[0]
    if R == 0:
        return 0.0
    ox = vx[0]
    oy = vy[0]
    a = 0.0
    for i in range(R):
        j = i + 1 if i + 1 < R else 0
        a += (vx[i] - ox) * (vy[j] - oy) - (vx[j] - ox) * (vy[i] - oy)
    return 0.5 * a


# ============================================================================ NMS


@jit
def _overlap_value(inter, area_i, area_j, use_iou):
    if use_iou:
        u = area_i + area_j - inter
        return inter / u if u > 0.0 else 0.0
    m = min(area_i, area_j)
    return inter / m if m > 0.0 else 0.0


@jit
def _cell_range(lo, hi, g0, cell, n):
    a = min(max(int((lo - g0) // cell), 0), n - 1)
    b = min(max(int((hi - g0) // cell), 0), n - 1)
    return a, b


@jit
def _is_suppressed(j, jx, jy, geo, kept, grid, thresh, use_iou, stamp, scratch):
    """Whether a kept polygon registered in the grid overlaps j by more than thresh.

    jx, jy: float64 vertices of candidate j. Returns (suppressed, number of
    exact intersections computed).
    """
    cx, cy, area, bx0, by0, bx1, by1 = geo
    kvx, kvy, slot = kept
    head, nxt, item, gx0, gy0, cell, gw, gh = grid
    xa, xb = _cell_range(bx0[j], bx1[j], gx0, cell, gw)
    ya, yb = _cell_range(by0[j], by1[j], gy0, cell, gh)
    n_exact = 0
    for gyi in range(ya, yb + 1):
        for gxi in range(xa, xb + 1):
            e = head[gyi * gw + gxi]
            while e >= 0:
                i = item[e]
                e = nxt[e]
                if stamp[i] == j:
                    continue
                stamp[i] = j
                ix = min(bx1[i], bx1[j]) - max(bx0[i], bx0[j])
                iy = min(by1[i], by1[j]) - max(by0[i], by0[j])
                if ix <= 0.0 or iy <= 0.0:
                    continue
                bound = min(ix * iy, area[i], area[j])
                if _overlap_value(bound, area[i], area[j], use_iou) <= thresh:
                    continue
                s_ = slot[i]
                # the polar sweep may stop early once the answer is certain
                # (margins keep decisions near the threshold on the full area)
                if use_iou:
                    t_area = thresh * (area[i] + area[j]) / (1.0 + thresh)
                else:
                    t_area = thresh * min(area[i], area[j])
                inter = star_intersection_area(jx, jy, cx[j], cy[j], kvx[s_], kvy[s_], cx[i], cy[i], scratch,
                                               t_area * (1.0 - 1e-9) - 1e-12, t_area * (1.0 + 1e-9) + 1e-12)
                n_exact += 1
                if _overlap_value(inter, area[i], area[j], use_iou) > thresh:
                    return True, n_exact
    return False, n_exact


@jit
def _vertices(coords, i, vx, vy):
    """float64 vertices (x = column, y = row) of polygon i of float32 coords."""
    R = coords.shape[2]
    for k in range(R):
        vx[k] = np.float64(coords[i, 1, k])
        vy[k] = np.float64(coords[i, 0, k])


_BLOCK0 = 256  # first block of candidates checked in parallel; doubles up to _BLOCK_MAX
_BLOCK_MAX = 8192
_CHUNKS = 64  # parallel tasks per block (each with its own buffers)


@pjit
def _polygon_geometry(coords, points):
    """Centre (x, y), area, bounding box (x0, y0, x1, y1, centre included) and
    largest box side of every polygon (float64 arrays, in parallel)."""
    N = coords.shape[0]
    R = coords.shape[2]
    cx = np.empty(N, np.float64)
    cy = np.empty(N, np.float64)
    area = np.empty(N, np.float64)
    bx0 = np.empty(N, np.float64)
    by0 = np.empty(N, np.float64)
    bx1 = np.empty(N, np.float64)
    by1 = np.empty(N, np.float64)
    ext = np.empty(N, np.float64)
    nch = min(_CHUNKS, N)
    for c in prange(nch):
        jx = np.empty(R, np.float64)
        jy = np.empty(R, np.float64)
        for i in range((c * N) // nch, ((c + 1) * N) // nch):
            _vertices(coords, i, jx, jy)
            cy[i] = points[i, 0]
            cx[i] = points[i, 1]
            bx0[i] = min(cx[i], jx.min())
            bx1[i] = max(cx[i], jx.max())
            by0[i] = min(cy[i], jy.min())
            by1[i] = max(cy[i], jy.max())
            area[i] = polygon_area_kernel(jx, jy)
            ext[i] = max(bx1[i] - bx0[i], by1[i] - by0[i])
    return cx, cy, area, bx0, by0, bx1, by1, ext


@pjit
def _suppressed_block(b0, b1, coords, geo, kept, grid, thresh, use_iou, stamp, out):
    """``out[j]`` = candidate j (b0 <= j < b1) is suppressed by a polygon already
    kept (kept/grid are only read); returns the exact overlaps computed. Races
    on ``stamp`` can only repeat a check, never skip one."""
    R = coords.shape[2]
    n = b1 - b0
    nch = min(_CHUNKS, n)
    counts = np.zeros(nch, np.int64)
    for c in prange(nch):
        jx = np.empty(R, np.float64)
        jy = np.empty(R, np.float64)
        scratch = make_scratch(R)
        for j in range(b0 + (c * n) // nch, b0 + ((c + 1) * n) // nch):
            _vertices(coords, j, jx, jy)
            sup, ne = _is_suppressed(j, jx, jy, geo, kept, grid, thresh, use_iou, stamp, scratch)
            out[j] = sup
            counts[c] += ne
    return counts.sum()


@jit
def nms_kernel(coords, points, thresh, use_iou):
    """Greedy NMS of star polygons sorted by decreasing score.

    coords float32 (N, 2, R) vertex rows/columns (``dist_to_coord``), points
    int64 (N, 2) their centres; thresh float64; use_iou: overlap =
    inter/union if True else inter/min(area) (StarDist).

    Candidate j is kept iff no kept i < j overlaps it by more than ``thresh``
    (identical to StarDist's loop that lets every kept polygon suppress the
    later ones, skipping those already suppressed). Kept polygons are
    registered in a uniform bucket grid (cell = median polygon extent) over
    their bounding boxes, so each candidate is only compared with kept
    polygons whose boxes meet its box; the area of the boxes' intersection
    bounds the polygon intersection and skips the exact computation when it
    cannot exceed the threshold. Memory: O(N) besides the input (float64
    vertices are kept for the kept polygons only). Candidates go in blocks
    (256, doubling to 8192): a block is first checked in parallel against the
    polygons kept before it (most candidates are suppressed there), then
    walked in order, re-checking only the survivors against everything kept
    so far -- the same decisions as the plain serial loop. Returns a bool (N,)
    keep mask and the number of exact overlaps computed.
    """
    N = coords.shape[0]
    R = coords.shape[2]
    keep = np.zeros(N, np.bool_)
    if N == 0:
        return keep, 0
    cx, cy, area, bx0, by0, bx1, by1, ext = _polygon_geometry(coords, points)
    jx = np.empty(R, np.float64)
    jy = np.empty(R, np.float64)
    geo = (cx, cy, area, bx0, by0, bx1, by1)
    cell = max(4.0, np.median(ext))
    # bucket grid over the centres' extent (boxes are clamped to it: boxes that
    # overlap still share a cell after clamping)
    gx0 = cx.min()
    gy0 = cy.min()
    gw = int((cx.max() - gx0) / cell) + 1
    gh = int((cy.max() - gy0) / cell) + 1
    head = np.full(gw * gh, -1, np.int64)
    cap = 4 * N + 16
    nxt = np.empty(cap, np.int64)
    item = np.empty(cap, np.int64)
    n_ent = 0
    kcap = 64
    kvx = np.empty((kcap, R), np.float64)
    kvy = np.empty((kcap, R), np.float64)
    slot = np.full(N, -1, np.int64)
    n_kept = 0
    stamp = np.full(N, -1, np.int64)
    scratch = make_scratch(R)
    n_exact = 0
    pre = np.zeros(N, np.bool_)
    b0 = 0
    bsize = _BLOCK0
    for j in range(N):
        if j == b0:
            # next block: its candidates are checked in parallel against the
            # polygons kept so far (read-only meanwhile); the serial pass below
            # then only re-checks the few that survive
            b1 = min(N, b0 + bsize)
            if n_kept > 0:
                grid = (head, nxt, item, gx0, gy0, cell, gw, gh)
                n_exact += _suppressed_block(b0, b1, coords, geo, (kvx, kvy, slot), grid, thresh, use_iou,
                                             stamp, pre)
            b0 = b1
            bsize = min(2 * bsize, _BLOCK_MAX)
        if pre[j]:
            continue
        _vertices(coords, j, jx, jy)
        grid = (head, nxt, item, gx0, gy0, cell, gw, gh)
        sup, ne = _is_suppressed(j, jx, jy, geo, (kvx, kvy, slot), grid, thresh, use_iou, stamp, scratch)
        n_exact += ne
        if sup:
            continue
        keep[j] = True
        if n_kept == kcap:
            kvx2 = np.empty((2 * kcap, R), np.float64)
            kvy2 = np.empty((2 * kcap, R), np.float64)
            kvx2[:kcap] = kvx
            kvy2[:kcap] = kvy
            kvx = kvx2
            kvy = kvy2
            kcap *= 2
        kvx[n_kept] = jx
        kvy[n_kept] = jy
        slot[j] = n_kept
        n_kept += 1
        xa, xb = _cell_range(bx0[j], bx1[j], gx0, cell, gw)
        ya, yb = _cell_range(by0[j], by1[j], gy0, cell, gh)
        for gyi in range(ya, yb + 1):
            for gxi in range(xa, xb + 1):
                if n_ent == cap:
                    cap2 = 2 * cap
                    nxt2 = np.empty(cap2, np.int64)
                    item2 = np.empty(cap2, np.int64)
                    nxt2[:cap] = nxt
                    item2[:cap] = item
                    nxt = nxt2
                    item = item2
                    cap = cap2
                c = gyi * gw + gxi
                item[n_ent] = j
                nxt[n_ent] = head[c]
                head[c] = n_ent
                n_ent += 1
    return keep, n_exact


# ============================================================================ rasterisation


@jit
def _row_crossings(xp, yp, y, minc, maxc, tog_r, tog_l):
    """Parity toggles of skimage's point_in_polygon along the row ``y``.

    For pixel x of the row, point_in_polygon counts edge e as a right crossing
    iff the edge straddles (y0 > 0) != (y1 > 0) and E_e(x) > 0, and as a left
    crossing iff (y0 < 0) != (y1 < 0) and E_e(x) < 0, with
    E_e(x) = ((xp[i]-x)*y1 - (xp[i-1]-x)*y0) / (y1 - y0) (x-coordinate of the
    crossing minus x). E_e decreases with x, so each edge contributes to a
    prefix (right) or suffix (left) of the columns; the boundary column is
    found from the crossing estimate and settled with the very same float
    expression. tog_r/tog_l int8 (maxc-minc+2,) receive parity toggles.
    """
    n = xp.shape[0]
    width = maxc - minc + 1
    x1 = xp[n - 1]
    y1 = yp[n - 1] - y
    for i in range(n):
        x0 = xp[i]
        y0 = yp[i] - y
        a = (y0 > 0.0) != (y1 > 0.0)
        b = (y0 < 0.0) != (y1 < 0.0)
        if a or b:
            den = y1 - y0
            # crossing estimate and the largest column with E > 0
            est = (x0 * y1 - x1 * y0) / den
            c = int(math.floor(est))
            if c < minc - 1:
                c = minc - 1
            if c > maxc:
                c = maxc
            # E(c) > 0 for c <= cr (right), E(c) < 0 for c >= cl (left)
            while c >= minc and not (((x0 - c) * y1 - (x1 - c) * y0) / den > 0.0):
                c -= 1
            while c + 1 <= maxc and ((x0 - (c + 1)) * y1 - (x1 - (c + 1)) * y0) / den > 0.0:
                c += 1
            if a:
                # columns minc..c are right crossings
                if c >= minc:
                    tog_r[0] ^= 1
                    tog_r[c - minc + 1] ^= 1
            if b:
                cl = c + 1
                while cl > minc and ((x0 - (cl - 1)) * y1 - (x1 - (cl - 1)) * y0) / den < 0.0:
                    cl -= 1
                while cl <= maxc and not (((x0 - cl) * y1 - (x1 - cl) * y0) / den < 0.0):
                    cl += 1
                if cl <= maxc:
                    tog_l[cl - minc] ^= 1
                    tog_l[width] ^= 1
        x1 = x0
        y1 = y0


@jit
def paint_polygon(lab, yp, xp, value, tog_r, tog_l, counts):
    """Paint the pixels skimage.draw.polygon(yp, xp, lab.shape) returns.

    yp, xp float64 (R,) vertex rows / columns; tog_r, tog_l int8 scratch of
    length >= width + 2. A pixel is painted when skimage's point_in_polygon
    says inside, on an edge, or on a vertex (within 1e-12). ``counts`` int64
    (indexed by label value) is kept equal to the pixel count of every value.
    """
    H, W = lab.shape
    R = yp.shape[0]
    if R == 0:
        return
    ymin = yp.min()
    xmin = xp.min()
    minr = int(max(0.0, ymin))
    maxr = int(math.ceil(yp.max()))
    minc = int(max(0.0, xmin))
    maxc = int(math.ceil(xp.max()))
    if maxr > H - 1:
        maxr = H - 1
    if maxc > W - 1:
        maxc = W - 1
    if maxr < minr or maxc < minc:
        return
    width = maxc - minc + 1
    for r in range(minr, maxr + 1):
        for t in range(width + 1):
            tog_r[t] = 0
            tog_l[t] = 0
        _row_crossings(xp, yp, float(r), minc, maxc, tog_r, tog_l)
        pr = 0
        pl = 0
        for t in range(width):
            pr ^= tog_r[t]
            pl ^= tog_l[t]
            if pr or pl:
                counts[lab[r, minc + t]] -= 1
                lab[r, minc + t] = value
                counts[value] += 1
    # vertices (point_in_polygon's VERTEX case, tolerance 1e-12)
    for k in range(R):
        rr = int(math.floor(yp[k] + 0.5))
        cc = int(math.floor(xp[k] + 0.5))
        if minr <= rr <= maxr and minc <= cc <= maxc:
            if -1e-12 < xp[k] - cc < 1e-12 and -1e-12 < yp[k] - rr < 1e-12:
                counts[lab[rr, cc]] -= 1
                lab[rr, cc] = value
                counts[value] += 1


@jit
def polygons_to_label_kernel(coords, order, values, lab, counts):
    """Paint polygons coords float32 (n, 2, R) in the given order.

    order int64 (m,) indices into coords (painting order: later wins);
    values int32 (n,) label of each polygon, >= 1; lab int32 (H, W) painted
    in place; counts int64 (max value + 1,) the pixel count of every value
    in lab on entry (index 0: background), updated as pixels are painted, so
    that nothing has to count the label image afterwards.
    """
    R = coords.shape[2]
    W = lab.shape[1]
    tog_r = np.zeros(W + 2, np.int8)
    tog_l = np.zeros(W + 2, np.int8)
    yp = np.empty(R, np.float64)
    xp = np.empty(R, np.float64)
    for t in range(order.shape[0]):
        i = order[t]
        for k in range(R):
            yp[k] = np.float64(coords[i, 0, k])
            xp[k] = np.float64(coords[i, 1, k])
        paint_polygon(lab, yp, xp, values[i], tog_r, tog_l, counts)


# ============================================================================ candidates


@pjit
def candidates_kernel(prob, bits, thresh, b):
    """Candidates of prob float32 (Hg, Wg) (``bits``: the same memory viewed as uint32):
    pixels > thresh at least b pixels from the border. Returns their flat indices in raster
    order and, per candidate, a uint64 sort key: the order-preserving bits of its score,
    inverted (higher score first), above its raster position (ties: raster order). Rows
    are counted and filled in parallel."""
    Hg, Wg = prob.shape
    r0 = b
    nr = max(0, Hg - 2 * b)
    c0 = b
    c1 = max(b, Wg - b)
    counts = np.zeros(nr + 1, np.int64)
    for r in prange(nr):
        i = r0 + r
        cnt = 0
        for j in range(c0, c1):
            if prob[i, j] > thresh:
                cnt += 1
        counts[r + 1] = cnt
    for r in range(nr):
        counts[r + 1] += counts[r]
    n = counts[nr]
    flat = np.empty(n, np.int64)
    keys = np.empty(n, np.uint64)
    sign = np.uint32(0x80000000)
    for r in prange(nr):
        i = r0 + r
        t = counts[r]
        for j in range(c0, c1):
            v = prob[i, j]
            if v > thresh:
                flat[t] = i * Wg + j
                # float32 bits mapped to an unsigned order (-0.0 folded onto +0.0)
                u = bits[i, j]
                if u == sign:
                    u = np.uint32(0)
                u = u ^ np.uint32(0xFFFFFFFF) if u & sign else u | sign
                keys[t] = (np.uint64(~u) << np.uint64(32)) | np.uint64(t)
                t += 1
    return flat, keys


@pjit
def gather_dist_kernel(dist, flat):
    """dist float32 (R, Hg, Wg) at flat indices -> float32 (n, R)."""
    R = dist.shape[0]
    Wg = dist.shape[2]
    n = flat.shape[0]
    out = np.empty((n, R), np.float32)
    for t in prange(n):
        i = flat[t] // Wg
        j = flat[t] - i * Wg
        for k in range(R):
            out[t, k] = dist[k, i, j]
    return out


# ============================================================================ runners


def run_star_dist(lab, n_rays, gy, gx, out):
    """:func:`star_dist_kernel` on the foreground only, with a dynamic parallel
    schedule (chunks of 4 rows). ``out`` must be zero on entry.

    With numba's default static schedule a core taken by another process, or
    rows without objects, leave the other threads waiting at the end.
    """
    start, cols = foreground_rows_kernel(lab, gy, gx, out.shape[1], out.shape[2])
    if cols.shape[0] == 0:
        return
    labp = np.zeros((lab.shape[0] + 2, lab.shape[1] + 2), np.int32)
    labp[1:-1, 1:-1] = lab
    with numba.parallel_chunksize(4):
        star_dist_kernel(labp, n_rays, gy, gx, start, cols, out)


def run_edt_prob(lab, bb, ids, out):
    """:func:`edt_prob_kernel` with a dynamic schedule (objects differ in size)."""
    with numba.parallel_chunksize(1):
        edt_prob_kernel(lab, bb, ids, out)
