"""Numba kernels of the 3D StarDist representation (private; see ``stardist3d.py``).

Polyhedron ``p`` has centre ``c`` and vertices ``v_k = c + d_k * u_k`` (float32,
as StarDist computes them) for the unit ray directions ``u_k``; the triangular
faces of the ray lattice split it into tetrahedra ``(c, A, B, C)``. A voxel
(integer ``z, y, x``) is inside the polyhedron when it is inside (or on) one of
these tetrahedra. A tetrahedron is four half-spaces ``n . (q - P) >= 0`` with
``n = (B - A) x (C - A)`` for the vertex triples ``(A, B, C)``, ``(c, B, A)``,
``(c, C, B)``, ``(c, A, C)`` (StarDist's ``inside_tetrahedron``; the faces are
oriented so that ``c`` is on the inner side), evaluated in float64 as
``(n0*(z-P0) + n1*(y-P1)) + n2*(x-P2)``.

Along a row (``z``, ``y`` fixed) that expression is a monotone function of
``x`` (every rounding step is monotone), so each half-space holds a half-line
of the row and each tetrahedron an interval: the kernels find the interval ends
from the plane equation and settle them by evaluating the expression itself at
the neighbouring voxels. The voxels so found are exactly the voxels on which
the expression is ``>= 0`` for all four planes of some tetrahedron — the slow
per-voxel test of ``tests/reference/ref_stardist3d.py`` — at O(faces) cost per
row instead of O(faces) per voxel.
"""
from __future__ import annotations

import math

import numpy as np

from cellseg._numba import jit, pjit, prange

# ----------------------------------------------------------------------------- targets


@jit
def _star_dist3d_voxel(lab, rays, value, fi, fj, fk, n, out_ray):
    """Distances of the voxel at (fi, fj, fk) (float32 coordinates) with id ``value``."""
    Z, Y, X = lab.shape
    for r in range(n):
        dz = rays[r, 0]
        dy = rays[r, 1]
        dx = rays[r, 2]
        x = np.float32(0.0)
        y = np.float32(0.0)
        z = np.float32(0.0)
        while True:
            x += dx
            y += dy
            z += dz
            ii = int(np.rint(fi + z))
            jj = int(np.rint(fj + y))
            kk = int(np.rint(fk + x))
            if ii < 0 or ii >= Z or jj < 0 or jj >= Y or kk < 0 or kk >= X or lab[ii, jj, kk] != value:
                x2 = int(np.rint(x))
                y2 = int(np.rint(y))
                z2 = int(np.rint(z))
                out_ray[r] = np.float32(math.sqrt(float(x2 * x2 + y2 * y2 + z2 * z2)))
                break


@pjit
def star_dist3d_kernel(lab, rays, gz, gy, gx, out):
    """StarDist's ``star_dist3D``: for every grid voxel of an object, step along each
    (unit) ray in float32 from the voxel until the rounded position leaves the image or
    the object; the distance is the length of the rounded step vector (as StarDist's
    C++). lab int32 (Z, Y, X); rays float32 (R, 3) (z, y, x); out float32 (R, Zg, Yg, Xg),
    zero on entry (background stays 0)."""
    R = rays.shape[0]
    Zg, Yg, Xg = out.shape[1], out.shape[2], out.shape[3]
    for i in prange(Zg):
        buf = np.empty(R, np.float32)
        for j in range(Yg):
            for k in range(Xg):
                value = lab[i * gz, j * gy, k * gx]
                if value == 0:
                    continue
                _star_dist3d_voxel(lab, rays, value, np.float32(i * gz), np.float32(j * gy),
                                   np.float32(k * gx), R, buf)
                for r in range(R):
                    out[r, i, j, k] = buf[r]


# ----------------------------------------------------------------------------- geometry


@jit
def polyverts_kernel(dist, center, rays):
    """Vertices float32 (R, 3) of one polyhedron: ``center + dist * ray`` in float32."""
    R = rays.shape[0]
    out = np.empty((R, 3), np.float32)
    for r in range(R):
        for a in range(3):
            out[r, a] = center[a] + dist[r] * rays[r, a]
    return out


@jit
def polyhedron_bbox(pv, bbox):
    """Inclusive integer box (z0, z1, y0, y1, x0, x1) of rounded vertex coordinates
    (StarDist's ``polyhedron_bbox``); it holds every voxel inside the polyhedron."""
    for a in range(3):
        lo = np.int64(1) << 40
        hi = -(np.int64(1) << 40)
        for r in range(pv.shape[0]):
            v = np.int64(np.rint(pv[r, a]))
            lo = min(lo, v)
            hi = max(hi, v)
        bbox[2 * a] = lo
        bbox[2 * a + 1] = hi


@jit
def tetra_planes(pv, center, faces, normals, anchors, tbox):
    """Half-spaces of the tetrahedra (centre, face): normals/anchors float64 (F, 4, 3);
    tbox float64 (F, 4) the z and y range of each tetrahedron (rows outside it are skipped)."""
    F = faces.shape[0]
    c0 = np.float64(center[0])
    c1 = np.float64(center[1])
    c2 = np.float64(center[2])
    for f in range(F):
        ia, ib, ic = faces[f, 0], faces[f, 1], faces[f, 2]
        for t in range(4):
            # (A, B, C), (c, B, A), (c, C, B), (c, A, C)
            if t == 0:
                p0, p1, p2 = ia, ib, ic
            elif t == 1:
                p0, p1, p2 = -1, ib, ia
            elif t == 2:
                p0, p1, p2 = -1, ic, ib
            else:
                p0, p1, p2 = -1, ia, ic
            if p0 < 0:
                a0, a1, a2 = c0, c1, c2
            else:
                a0, a1, a2 = np.float64(pv[p0, 0]), np.float64(pv[p0, 1]), np.float64(pv[p0, 2])
            u0 = np.float64(pv[p1, 0]) - a0
            u1 = np.float64(pv[p1, 1]) - a1
            u2 = np.float64(pv[p1, 2]) - a2
            w0 = np.float64(pv[p2, 0]) - a0
            w1 = np.float64(pv[p2, 1]) - a1
            w2 = np.float64(pv[p2, 2]) - a2
            normals[f, t, 0] = u1 * w2 - u2 * w1
            normals[f, t, 1] = u2 * w0 - u0 * w2
            normals[f, t, 2] = u0 * w1 - u1 * w0
            anchors[f, t, 0] = a0
            anchors[f, t, 1] = a1
            anchors[f, t, 2] = a2
        za, zb, zc = np.float64(pv[ia, 0]), np.float64(pv[ib, 0]), np.float64(pv[ic, 0])
        ya, yb, yc = np.float64(pv[ia, 1]), np.float64(pv[ib, 1]), np.float64(pv[ic, 1])
        zlo = min(min(c0, za), min(zb, zc))
        zhi = max(max(c0, za), max(zb, zc))
        ylo = min(min(c1, ya), min(yb, yc))
        yhi = max(max(c1, ya), max(yb, yc))
        tbox[f, 0] = zlo - 1e-6
        tbox[f, 1] = zhi + 1e-6
        tbox[f, 2] = ylo - 1e-6
        tbox[f, 3] = yhi + 1e-6


@jit
def _plane_value(n, a, z, y, x):
    return (n[0] * (z - a[0]) + n[1] * (y - a[1])) + n[2] * (x - a[2])


@jit
def row_marks(normals, anchors, tbox, z, y, x0, x1, marks):
    """marks[x - x0] = 1 for the voxels (z, y, x0..x1) inside the polyhedron (0 elsewhere);
    returns the number marked."""
    W = x1 - x0 + 1
    for t in range(W):
        marks[t] = 0
    if W <= 0:
        return 0
    fz = np.float64(z)
    fy = np.float64(y)
    F = normals.shape[0]
    for f in range(F):
        if fz < tbox[f, 0] or fz > tbox[f, 1] or fy < tbox[f, 2] or fy > tbox[f, 3]:
            continue
        lo = x0
        hi = x1
        for t in range(4):
            n = normals[f, t]
            a = anchors[f, t]
            base = n[0] * (fz - a[0]) + n[1] * (fy - a[1])
            n2 = n[2]
            if n2 > 0.0:  # holds on [T, inf)
                s = a[2] - base / n2
                if s > hi + 1:
                    s = hi + 1.0
                elif s < lo - 1:
                    s = lo - 1.0
                k = np.int64(math.ceil(s))
                while k > lo and (base + n2 * (np.float64(k - 1) - a[2])) >= 0.0:
                    k -= 1
                while k <= hi and not ((base + n2 * (np.float64(k) - a[2])) >= 0.0):
                    k += 1
                lo = max(lo, k)
            elif n2 < 0.0:  # holds on (-inf, T]
                s = a[2] - base / n2
                if s > hi + 1:
                    s = hi + 1.0
                elif s < lo - 1:
                    s = lo - 1.0
                k = np.int64(math.floor(s))
                while k < hi and (base + n2 * (np.float64(k + 1) - a[2])) >= 0.0:
                    k += 1
                while k >= lo and not ((base + n2 * (np.float64(k) - a[2])) >= 0.0):
                    k -= 1
                hi = min(hi, k)
            else:
                if not ((base + n2 * (np.float64(lo) - a[2])) >= 0.0):
                    hi = lo - 1
            if lo > hi:
                break
        for x in range(lo, hi + 1):
            marks[x - x0] = 1
    cnt = 0
    for t in range(W):
        cnt += marks[t]
    return cnt


@jit
def _volume(dist, rays, faces):
    """Volume of a star polyhedron (sum of the signed tetrahedra, StarDist's formula)."""
    vol = 0.0
    for f in range(faces.shape[0]):
        ia, ib, ic = faces[f, 0], faces[f, 1], faces[f, 2]
        A = (dist[ia] * np.float64(rays[ia, 0]), dist[ia] * np.float64(rays[ia, 1]), dist[ia] * np.float64(rays[ia, 2]))
        B = (dist[ib] * np.float64(rays[ib, 0]), dist[ib] * np.float64(rays[ib, 1]), dist[ib] * np.float64(rays[ib, 2]))
        C = (dist[ic] * np.float64(rays[ic, 0]), dist[ic] * np.float64(rays[ic, 1]), dist[ic] * np.float64(rays[ic, 2]))
        m00, m01, m02 = B[0] - A[0], B[1] - A[1], B[2] - A[2]
        m10, m11, m12 = C[0] - A[0], C[1] - A[1], C[2] - A[2]
        m20, m21, m22 = -A[0], -A[1], -A[2]
        det = m00 * (m11 * m22 - m21 * m12) - m01 * (m10 * m22 - m12 * m20) + m02 * (m10 * m21 - m11 * m20)
        vol += det / 6.0
    return vol


@jit
def volumes_kernel(dist, rays, faces):
    """Volumes float64 (n,) of the polyhedra dist float64 (n, R)."""
    n = dist.shape[0]
    out = np.empty(n, np.float64)
    for i in range(n):
        out[i] = _volume(dist[i], rays, faces)
    return out


# ----------------------------------------------------------------------------- rasterisation


@jit
def polyhedra_to_label_kernel(dist, points, rays, faces, values, lab, counts):
    """Paint polyhedra in the given order (first painted wins: no voxel is overwritten).

    dist float32 (n, R), points float32 (n, 3), values int32 (n,) the ids; lab int32
    (Z, Y, X) zero on entry; counts int64 (max id + 1) voxel counts per id (index 0 must
    hold lab.size on entry)."""
    Z, Y, X = lab.shape
    F = faces.shape[0]
    normals = np.empty((F, 4, 3), np.float64)
    anchors = np.empty((F, 4, 3), np.float64)
    tbox = np.empty((F, 4), np.float64)
    bbox = np.empty(6, np.int64)
    marks = np.empty(X + 1, np.uint8)
    for i in range(dist.shape[0]):
        pv = polyverts_kernel(dist[i], points[i], rays)
        polyhedron_bbox(pv, bbox)
        tetra_planes(pv, points[i], faces, normals, anchors, tbox)
        x0 = max(bbox[4], 0)
        x1 = min(bbox[5], X - 1)
        if x0 > x1:
            continue
        v = values[i]
        for z in range(max(bbox[0], 0), min(bbox[1], Z - 1) + 1):
            for y in range(max(bbox[2], 0), min(bbox[3], Y - 1) + 1):
                if row_marks(normals, anchors, tbox, z, y, x0, x1, marks) == 0:
                    continue
                for x in range(x0, x1 + 1):
                    if marks[x - x0] and lab[z, y, x] == 0:
                        lab[z, y, x] = v
                        counts[v] += 1
                        counts[0] -= 1


# ----------------------------------------------------------------------------- NMS


@jit
def _sphere_iso(r1, p1, r2, p2, aniso):
    """StarDist's ``intersect_sphere_isotropic``: intersection volume of two balls in
    isotropic coordinates, in voxel units."""
    dz = aniso[0] * (p1[0] - p2[0])
    dy = aniso[1] * (p1[1] - p2[1])
    dx = aniso[2] * (p1[2] - p2[2])
    d = math.sqrt(dz * dz + dy * dy + dx * dx)
    rmin = min(r1, r2)
    rmax = max(r1, r2)
    if d > r1 + r2:
        return 0.0
    if rmax >= d + rmin - 1e-10:
        return math.pi * 4.0 / 3.0 * rmin * rmin * rmin / (aniso[0] * aniso[1] * aniso[2])
    t = (r1 + r2 - d) / 2.0 / d
    h1 = (r2 - r1 + d) * t
    h2 = (r1 - r2 + d) * t
    v1 = math.pi / 3.0 * h1 * h1 * (3.0 * r1 - h1)
    v2 = math.pi / 3.0 * h2 * h2 * (3.0 * r2 - h2)
    return (v1 + v2) / (aniso[0] * aniso[1] * aniso[2])


@jit
def _radii_iso(pv, center, faces, aniso):
    """Outer radius (farthest vertex) and inner radius (nearest face plane) around the
    centre, in isotropic coordinates (StarDist's ``bounding_radius_*_isotropic``)."""
    R = pv.shape[0]
    rmax2 = 0.0
    for r in range(R):
        z = aniso[0] * (pv[r, 0] - center[0])
        y = aniso[1] * (pv[r, 1] - center[1])
        x = aniso[2] * (pv[r, 2] - center[2])
        rmax2 = max(rmax2, z * z + y * y + x * x)
    rmin = np.inf
    for f in range(faces.shape[0]):
        ia, ib, ic = faces[f, 0], faces[f, 1], faces[f, 2]
        Az = aniso[0] * (pv[ia, 0] - center[0])
        Ay = aniso[1] * (pv[ia, 1] - center[1])
        Ax = aniso[2] * (pv[ia, 2] - center[2])
        pz = aniso[0] * (pv[ib, 0] - center[0]) - Az
        py = aniso[1] * (pv[ib, 1] - center[1]) - Ay
        px = aniso[2] * (pv[ib, 2] - center[2]) - Ax
        qz = aniso[0] * (pv[ic, 0] - center[0]) - Az
        qy = aniso[1] * (pv[ic, 1] - center[1]) - Ay
        qx = aniso[2] * (pv[ic, 2] - center[2]) - Ax
        nz = px * qy - py * qx
        ny = pz * qx - px * qz
        nx = py * qz - pz * qy
        norm = 1.0 / (math.sqrt(nz * nz + ny * ny + nx * nx) + 1e-10)
        rmin = min(rmin, (Az * nz + Ay * ny + Ax * nx) * norm)
    return math.sqrt(rmax2), rmin


@jit
def _bbox_inter(b1, b2):
    """StarDist's ``intersect_bbox`` (product of the overlaps of the inclusive bounds)."""
    out = 1.0
    for a in range(3):
        w = min(b1[2 * a + 1], b2[2 * a + 1]) - max(b1[2 * a], b2[2 * a])
        if w <= 0:
            return 0.0
        out *= w
    return out


#: most voxels of kept-polyhedron masks held by the NMS (256 MiB of uint8)
POOL_MAX = 1 << 28


@jit
def _center_out(lo, hi, c, out):
    """lo..hi ordered by distance from c (c, c+1, c-1, c+2, ...); returns the count."""
    c = min(max(c, lo), hi)
    m = 0
    out[m] = c
    m += 1
    k = 1
    while m < hi - lo + 1:
        if c + k <= hi:
            out[m] = c + k
            m += 1
        if c - k >= lo:
            out[m] = c - k
            m += 1
        k += 1
    return m


@jit
def render_mask(normals, anchors, tbox, bbox, mask, marks):
    """mask (flat uint8, the inclusive box in z, y, x order) = voxels inside the polyhedron."""
    x0, x1 = bbox[4], bbox[5]
    W = x1 - x0 + 1
    H = bbox[3] - bbox[2] + 1
    for z in range(bbox[0], bbox[1] + 1):
        for y in range(bbox[2], bbox[3] + 1):
            row = ((z - bbox[0]) * H + (y - bbox[2])) * W
            row_marks(normals, anchors, tbox, z, y, x0, x1, marks)
            for t in range(W):
                mask[row + t] = marks[t]


@jit
def overlap_count(mask_i, has_mask, ni, ai, ti, bi, nj, aj, tj, bj, cj, limit, mi, mj, zs, ys):
    """Voxels inside both polyhedra: kept ``i`` given by its mask over its box ``bi`` (or,
    when not ``has_mask``, by its planes), ``j`` by its planes. Rows are visited from j's
    centre outwards; stops once above ``limit``."""
    z0, z1 = max(bi[0], bj[0]), min(bi[1], bj[1])
    y0, y1 = max(bi[2], bj[2]), min(bi[3], bj[3])
    x0, x1 = max(bi[4], bj[4]), min(bi[5], bj[5])
    if z0 > z1 or y0 > y1 or x0 > x1:
        return 0
    W = bi[5] - bi[4] + 1
    H = bi[3] - bi[2] + 1
    nz = _center_out(z0, z1, np.int64(np.rint(cj[0])), zs)
    ny = _center_out(y0, y1, np.int64(np.rint(cj[1])), ys)
    cnt = 0
    for a in range(nz):
        z = zs[a]
        for b in range(ny):
            y = ys[b]
            if row_marks(nj, aj, tj, z, y, x0, x1, mj) == 0:
                continue
            if has_mask:
                row = ((z - bi[0]) * H + (y - bi[2])) * W + (x0 - bi[4])
                for t in range(x1 - x0 + 1):
                    cnt += mask_i[row + t] & mj[t]
            else:
                row_marks(ni, ai, ti, z, y, x0, x1, mi)
                for t in range(x1 - x0 + 1):
                    cnt += mi[t] & mj[t]
            if cnt > limit:
                return cnt
    return cnt


@jit
def nms3d_kernel(dist, points, rays, faces, thresh):
    """Greedy NMS of star polyhedra sorted by decreasing score.

    dist float32 (n, R), points float32 (n, 3); thresh float64. Candidate j is
    suppressed when a kept i < j overlaps it by more than ``thresh``; overlap =
    voxels inside both / volume of the smaller. StarDist's cheap bounds decide
    first (an upper bound: the smaller of the isotropic outer-ball intersection
    and the box overlap, <= thresh keeps; a lower bound: the inner-ball
    intersection, > thresh suppresses); the voxel count decides the rest. Kept
    polyhedra are found through a bucket grid over their boxes and rendered once
    into a mask over their box; a count walks the candidate's rows from its
    centre outwards and stops as soon as the overlap exceeds the threshold.
    Returns (keep bool (n,), number of voxel counts done).
    """
    n = dist.shape[0]
    R = rays.shape[0]
    F = faces.shape[0]
    keep = np.zeros(n, np.bool_)
    if n == 0:
        return keep, 0
    dist64 = dist.astype(np.float64)
    vol = volumes_kernel(dist64, rays, faces)
    bboxes = np.empty((n, 6), np.int64)
    pvs = np.empty((n, R, 3), np.float32)
    ext = np.zeros(3, np.float64)
    for i in range(n):
        pvs[i] = polyverts_kernel(dist[i], points[i], rays)
        polyhedron_bbox(pvs[i], bboxes[i])
        for a in range(3):
            ext[a] += np.float64(bboxes[i, 2 * a + 1] - bboxes[i, 2 * a]) / n
    # StarDist's anisotropy estimate: the inverse of the mean box extents, max-normalised
    aniso = np.ones(3, np.float64)
    emax = max(ext[0], ext[1], ext[2])
    for a in range(3):
        aniso[a] = emax / ext[a] if ext[a] > 0 else 1.0
    r_out = np.empty(n, np.float64)
    r_in = np.empty(n, np.float64)
    c64 = points.astype(np.float64)
    for i in range(n):
        pv64 = pvs[i].astype(np.float64)
        r_out[i], r_in[i] = _radii_iso(pv64, c64[i], faces, aniso)
    # uniform bucket grid over the boxes of kept polyhedra; a cell is at least the
    # largest box extent, so every box meets at most 2 cells per axis
    cs = np.ones(3, np.int64)
    org = np.empty(3, np.int64)
    ncell = np.empty(3, np.int64)
    for a in range(3):
        lo = bboxes[0, 2 * a]
        hi = bboxes[0, 2 * a + 1]
        m = 1
        for i in range(n):
            lo = min(lo, bboxes[i, 2 * a])
            hi = max(hi, bboxes[i, 2 * a + 1])
            m = max(m, bboxes[i, 2 * a + 1] - bboxes[i, 2 * a] + 1)
        cs[a] = m
        org[a] = lo
        ncell[a] = (hi - lo) // m + 1
    head = -np.ones(ncell[0] * ncell[1] * ncell[2], np.int64)
    nxt = np.empty(8 * n, np.int64)
    who = np.empty(8 * n, np.int64)
    n_entries = 0
    stamp = -np.ones(n, np.int64)
    ni = np.empty((F, 4, 3), np.float64)
    ai = np.empty((F, 4, 3), np.float64)
    ti = np.empty((F, 4), np.float64)
    nj = np.empty((F, 4, 3), np.float64)
    aj = np.empty((F, 4, 3), np.float64)
    tj = np.empty((F, 4), np.float64)
    wmax = 1
    for a in range(3):
        wmax = max(wmax, cs[a])
    mi = np.empty(wmax + 1, np.uint8)
    mj = np.empty(wmax + 1, np.uint8)
    zs = np.empty(wmax + 1, np.int64)
    ys = np.empty(wmax + 1, np.int64)
    # masks of the kept polyhedra over their boxes, in one growing pool of at most
    # POOL_MAX voxels (boxes beyond it -- absurd distances -- are counted from their planes)
    mask_at = -np.ones(n, np.int64)
    pool = np.empty(1 << 16, np.uint8)
    pool_used = 0
    n_counts = 0
    for j in range(n):
        bj = bboxes[j]
        suppressed = False
        planes_j = False
        c0 = np.empty(3, np.int64)
        c1 = np.empty(3, np.int64)
        for a in range(3):
            c0[a] = (bj[2 * a] - org[a]) // cs[a]
            c1[a] = (bj[2 * a + 1] - org[a]) // cs[a]
        for cz in range(c0[0], c1[0] + 1):
            for cy in range(c0[1], c1[1] + 1):
                for cx in range(c0[2], c1[2] + 1):
                    e = head[(cz * ncell[1] + cy) * ncell[2] + cx]
                    while e >= 0 and not suppressed:
                        i = who[e]
                        e = nxt[e]
                        if stamp[i] == j:
                            continue
                        stamp[i] = j
                        amin = min(vol[i], vol[j])
                        upper = min(_sphere_iso(r_out[i], c64[i], r_out[j], c64[j], aniso),
                                    _bbox_inter(bboxes[i], bj))
                        if upper < 1e-10 or min(1.0, upper / (amin + 1e-10)) <= thresh:
                            continue
                        lower = _sphere_iso(r_in[i], c64[i], r_in[j], c64[j], aniso)
                        if max(0.0, lower / (amin + 1e-10)) > thresh:
                            suppressed = True
                            break
                        if not planes_j:
                            tetra_planes(pvs[j], points[j], faces, nj, aj, tj)
                            planes_j = True
                        limit = (amin + 1e-10) * thresh
                        has_mask = mask_at[i] >= 0
                        if not has_mask:
                            tetra_planes(pvs[i], points[i], faces, ni, ai, ti)
                        cnt = overlap_count(pool[max(mask_at[i], 0):], has_mask, ni, ai, ti, bboxes[i],
                                            nj, aj, tj, bj, c64[j], limit, mi, mj, zs, ys)
                        n_counts += 1
                        if cnt / (amin + 1e-10) > thresh:
                            suppressed = True
                            break
                    if suppressed:
                        break
                if suppressed:
                    break
            if suppressed:
                break
        if suppressed:
            continue
        keep[j] = True
        size = (bj[1] - bj[0] + 1) * (bj[3] - bj[2] + 1) * (bj[5] - bj[4] + 1)
        if pool_used + size <= POOL_MAX:
            if pool_used + size > pool.shape[0]:
                grown = np.empty(max(2 * pool.shape[0], pool_used + size), np.uint8)
                grown[:pool_used] = pool[:pool_used]
                pool = grown
            if not planes_j:
                tetra_planes(pvs[j], points[j], faces, nj, aj, tj)
            mask_at[j] = pool_used
            render_mask(nj, aj, tj, bj, pool[pool_used:pool_used + size], mj)
            pool_used += size
        for cz in range(c0[0], c1[0] + 1):
            for cy in range(c0[1], c1[1] + 1):
                for cx in range(c0[2], c1[2] + 1):
                    cell = (cz * ncell[1] + cy) * ncell[2] + cx
                    who[n_entries] = j
                    nxt[n_entries] = head[cell]
                    head[cell] = n_entries
                    n_entries += 1
    return keep, n_counts


# ----------------------------------------------------------------------------- candidates


@jit
def gather_dist3d_kernel(dist, flat):
    """dist float32 (R, Zg, Yg, Xg) at flat indices -> float32 (n, R)."""
    R = dist.shape[0]
    m = dist.shape[1] * dist.shape[2] * dist.shape[3]
    d2 = dist.reshape(R, m)
    n = flat.shape[0]
    out = np.empty((n, R), np.float32)
    for t in range(n):
        for k in range(R):
            out[t, k] = d2[k, flat[t]]
    return out

