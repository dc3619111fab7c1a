"""Slow, obvious reference twins of the StarDist kernels (pure Python / NumPy).

* ``ref_star_dist``: the ray march written out in Python with NumPy float32
  scalars (the definition of StarDist's ``star_dist``, one pixel at a time).
* ``ref_edt_prob``: per-object EDT by brute force (every object pixel against
  every other-id pixel of the grown box), a different algorithm from the
  kernel's separable lower-envelope transform.
* ``ref_tri_tri_area`` / ``ref_star_intersection_area``: exact intersection of
  two star polygons as the sum over ALL pairs of fan triangles of the
  intersection of two convex triangles (Sutherland-Hodgman in Python) — a
  decomposition neither kernel path uses.
* ``raster_intersection_area``: the same by rasterised masks on a fine grid
  (``skimage.draw.polygon``), an independent approximate check.
* ``ref_nms``: brute-force greedy NMS, all pairs, with ``ref_star_intersection_area``.
* ``ref_polygons_to_label``: ``skimage.draw.polygon`` per polygon (StarDist's way).
* ``ref_ap``: AP at IoU >= thresh >= 0.5 by brute force (matches are unique).
"""
from __future__ import annotations

import math

import numpy as np


def ref_ray_angles(n_rays):
    return np.linspace(0, 2 * np.pi, n_rays, endpoint=False)


def ref_star_dist(lab, n_rays, grid=(1, 1)):
    lab = np.asarray(lab)
    H, W = lab.shape
    gy, gx = grid
    Hg, Wg = (H - 1) // gy + 1, (W - 1) // gx + 1
    out = np.zeros((n_rays, Hg, Wg), np.float32)
    f32 = np.float32
    st = f32(2 * math.pi / n_rays)
    for i in range(Hg):
        for j in range(Wg):
            v = lab[i * gy, j * gx]
            if v == 0:
                continue
            for k in range(n_rays):
                phi = f32(k) * st
                dy, dx = f32(np.sin(phi)), f32(np.cos(phi))
                y = x = f32(0)
                while True:
                    y = f32(y + dy)
                    x = f32(x + dx)
                    ii = int(np.rint(f32(f32(i * gy) + y)))
                    jj = int(np.rint(f32(f32(j * gx) + x)))
                    if not (0 <= ii < H and 0 <= jj < W) or lab[ii, jj] != v:
                        c = f32(f32(0.5) / max(abs(dy), abs(dx))) - f32(1)
                        y = f32(y + f32(c * dy))
                        x = f32(x + f32(c * dx))
                        out[k, i, j] = f32(np.sqrt(f32(y * y + x * x)))
                        break
    return out


def ref_edt_prob(lab, grid=(1, 1)):
    lab = np.asarray(lab)[:: grid[0], :: grid[1]]
    out = np.zeros(lab.shape, np.float32)
    if lab.size == 0 or lab.max() == 0:
        return out
    if lab.min() == lab.max():  # constant non-zero: background assumed around it
        return ref_edt_prob(np.pad(lab, 1))[1:-1, 1:-1].copy()
    H, W = lab.shape
    for v in np.unique(lab):
        if v == 0:
            continue
        rr, cc = np.nonzero(lab == v)
        r0 = rr.min() - (rr.min() > 0)
        r1 = rr.max() + (rr.max() < H - 1)
        c0 = cc.min() - (cc.min() > 0)
        c1 = cc.max() + (cc.max() < W - 1)
        fr, fc = np.nonzero(lab[r0:r1 + 1, c0:c1 + 1] != v)
        fr = fr + r0
        fc = fc + c0
        d = np.array([np.sqrt(np.min((fr - r) ** 2 + (fc - c) ** 2)) for r, c in zip(rr, cc)])
        out[rr, cc] = d / (d.max() + 1e-10)
    return out


def ref_dist_to_coord(dist, points):
    dist = np.asarray(dist)
    phis = ref_ray_angles(dist.shape[1])
    coord = (dist[:, None] * np.array([np.sin(phis), np.cos(phis)])).astype(np.float32)
    coord += np.asarray(points)[..., None]
    return coord


# --------------------------------------------------------------------------- geometry


def _clip(poly, a, b):
    """Keep the part of poly (list of (x, y)) left of the directed line a->b."""
    out = []
    n = len(poly)
    if n == 0:
        return out
    ex, ey = b[0] - a[0], b[1] - a[1]

    def side(p):
        return ex * (p[1] - a[1]) - ey * (p[0] - a[0])

    for i in range(n):
        p, q = poly[i - 1], poly[i]
        dp, dq = side(p), side(q)
        if dq >= 0:
            if dp < 0:
                t = dp / (dp - dq)
                out.append((p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1])))
            out.append(q)
        elif dp > 0:
            t = dp / (dp - dq)
            out.append((p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1])))
    return out


def _area(poly):
    return 0.5 * sum(poly[i - 1][0] * poly[i][1] - poly[i][0] * poly[i - 1][1] for i in range(len(poly)))


def ref_tri_tri_area(t, u):
    """Intersection area of two counter-clockwise triangles ((x, y), ...)."""
    poly = list(t)
    for i in range(3):
        poly = _clip(poly, u[i], u[(i + 1) % 3])
        if len(poly) < 3:
            return 0.0
    return _area(poly)


def _fans(coord, center):
    """Counter-clockwise fan triangles ((x, y) tuples) of a (2, n) rows/cols polygon."""
    ys, xs = np.asarray(coord, np.float64)
    cy, cx = float(center[0]), float(center[1])
    n = len(ys)
    tris = []
    for k in range(n):
        a = (float(xs[k]), float(ys[k]))
        b = (float(xs[(k + 1) % n]), float(ys[(k + 1) % n]))
        cr = (a[0] - cx) * (b[1] - cy) - (a[1] - cy) * (b[0] - cx)
        if cr > 0:
            tris.append(((cx, cy), a, b))
    return tris


def ref_polygon_area(coord):
    ys, xs = np.asarray(coord, np.float64)
    return 0.5 * float(np.sum(xs * np.roll(ys, -1) - np.roll(xs, -1) * ys))


def ref_star_intersection_area(coord_a, center_a, coord_b, center_b):
    ta, tb = _fans(coord_a, center_a), _fans(coord_b, center_b)

    def box(t):
        xs = [p[0] for p in t]
        ys = [p[1] for p in t]
        return min(xs), min(ys), max(xs), max(ys)

    bb = [box(t) for t in tb]
    total = 0.0
    for t in ta:
        x0, y0, x1, y1 = box(t)
        for u, (u0, v0, u1, v1) in zip(tb, bb):
            if u0 >= x1 or u1 <= x0 or v0 >= y1 or v1 <= y0:
                continue
            total += ref_tri_tri_area(t, u)
    return total


def raster_intersection_area(coord_a, coord_b, scale=16):
    """Intersection area by rasterising both polygons on a grid ``scale`` times finer."""
    from skimage.draw import polygon

    a = np.asarray(coord_a, np.float64)
    b = np.asarray(coord_b, np.float64)
    lo = np.minimum(a.min(1), b.min(1)) - 1
    hi = np.maximum(a.max(1), b.max(1)) + 1
    shape = tuple(int(math.ceil((h - l) * scale)) + 1 for l, h in zip(lo, hi))
    ma = np.zeros(shape, bool)
    mb = np.zeros(shape, bool)
    # pixel centres of the fine grid sit at (i + 0.5) / scale
    ra, ca = polygon((a[0] - lo[0]) * scale - 0.5, (a[1] - lo[1]) * scale - 0.5, shape)
    rb, cb = polygon((b[0] - lo[0]) * scale - 0.5, (b[1] - lo[1]) * scale - 0.5, shape)
    ma[ra, ca] = True
    mb[rb, cb] = True
    return np.count_nonzero(ma & mb) / scale**2


def ref_overlap(coord_a, center_a, coord_b, center_b, overlap="min"):
    inter = ref_star_intersection_area(coord_a, center_a, coord_b, center_b)
    aa, ab = ref_polygon_area(coord_a), ref_polygon_area(coord_b)
    if overlap == "min":
        m = min(aa, ab)
        return inter / m if m > 0 else 0.0
    u = aa + ab - inter
    return inter / u if u > 0 else 0.0


def ref_nms(dist, prob, points, thresh, overlap="min"):
    """Brute-force greedy NMS; kept indices, best first (ties: input order)."""
    dist = np.asarray(dist, np.float32)
    points = np.asarray(points)
    order = sorted(range(len(prob)), key=lambda i: (-float(prob[i]), i))
    coords = ref_dist_to_coord(dist, points)
    suppressed = np.zeros(len(prob), bool)
    kept = []
    for a, i in enumerate(order):
        if suppressed[i]:
            continue
        kept.append(i)
        for j in order[a + 1:]:
            if not suppressed[j] and ref_overlap(coords[i], points[i], coords[j], points[j], overlap) > thresh:
                suppressed[j] = True
    return np.array(kept, dtype=np.int64)


def ref_polygons_to_label(coords, shape, prob=None):
    from skimage.draw import polygon

    n = len(coords)
    order = np.arange(n) if prob is None else np.argsort(np.asarray(prob), kind="stable")
    lab = np.zeros(shape, np.int32)
    for i in order:
        rr, cc = polygon(np.asarray(coords[i][0], np.float64), np.asarray(coords[i][1], np.float64), shape)
        lab[rr, cc] = i + 1
    return lab


def ref_ap(y_true, y_pred, thresh=0.5):
    """TP / (TP + FP + FN) at IoU >= thresh (thresh >= 0.5: matches are unique)."""
    assert thresh >= 0.5
    ti = [v for v in np.unique(y_true) if v != 0]
    pi = [v for v in np.unique(y_pred) if v != 0]
    tp = 0
    for t in ti:
        mt = y_true == t
        for p in np.unique(y_pred[mt]):
            if p == 0:
                continue
            mp = y_pred == p
            iou = np.count_nonzero(mt & mp) / np.count_nonzero(mt | mp)
            if iou >= thresh:
                tp += 1
    denom = len(ti) + len(pi) - tp
    return 1.0 if denom == 0 else tp / denom


def ref_candidates(prob, dist, prob_thresh, border, grid=(1, 1)):
    """Candidate pixels with NumPy: mask, stable sort by decreasing score."""
    prob = np.asarray(prob)
    mask = prob > prob_thresh
    if border:
        inner = np.zeros_like(mask)
        inner[border:prob.shape[0] - border, border:prob.shape[1] - border] = True
        mask &= inner
    ii, jj = np.nonzero(mask)
    scores = prob[ii, jj]
    order = sorted(range(len(scores)), key=lambda t: (-float(scores[t]), t))
    ii, jj = ii[order], jj[order]
    return np.stack([ii * grid[0], jj * grid[1]], 1), prob[ii, jj], np.asarray(dist)[:, ii, jj].T
