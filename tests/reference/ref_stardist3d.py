"""Slow, obvious twins of the 3D StarDist kernels (``cellseg/representations/_stardist3d_kernels.py``)."""
from __future__ import annotations

import math

import numpy as np


def star_dist3d(lab, rays, grid=(1, 1, 1)):
    """March along every ray in float32 until the rounded position leaves the object."""
    lab = np.asarray(lab)
    rays = np.asarray(rays, np.float32)
    shape = tuple((s - 1) // g + 1 for s, g in zip(lab.shape, grid))
    out = np.zeros((len(rays),) + shape, np.float32)
    for i in range(shape[0]):
        for j in range(shape[1]):
            for k in range(shape[2]):
                v = lab[i * grid[0], j * grid[1], k * grid[2]]
                if v == 0:
                    continue
                for r, (dz, dy, dx) in enumerate(rays):
                    z = y = x = np.float32(0)
                    while True:
                        z, y, x = z + dz, y + dy, x + dx
                        ii = int(np.rint(np.float32(i * grid[0]) + z))
                        jj = int(np.rint(np.float32(j * grid[1]) + y))
                        kk = int(np.rint(np.float32(k * grid[2]) + x))
                        if not (0 <= ii < lab.shape[0] and 0 <= jj < lab.shape[1] and 0 <= kk < lab.shape[2]) \
                                or lab[ii, jj, kk] != v:
                            a, b, c = int(np.rint(z)), int(np.rint(y)), int(np.rint(x))
                            out[r, i, j, k] = np.float32(math.sqrt(a * a + b * b + c * c))
                            break
    return out


def polyverts(dist, center, rays):
    return (np.asarray(center, np.float32)[None] + np.asarray(dist, np.float32)[:, None]
            * np.asarray(rays, np.float32)).astype(np.float32)


def bbox(pv):
    r = np.rint(pv).astype(np.int64)
    return r.min(0), r.max(0)


def _planes(pv, center, faces):
    """For every face: the four (normal, anchor) half-spaces of tetrahedron (centre, face)."""
    c = np.asarray(center, np.float64)
    P = pv.astype(np.float64)
    out = []
    for a, b, cc in faces:
        tets = []
        for p0, p1, p2 in ((P[a], P[b], P[cc]), (c, P[b], P[a]), (c, P[cc], P[b]), (c, P[a], P[cc])):
            u, w = p1 - p0, p2 - p0
            n = np.array([u[1] * w[2] - u[2] * w[1], u[2] * w[0] - u[0] * w[2], u[0] * w[1] - u[1] * w[0]])
            tets.append((n, p0))
        out.append(tets)
    return out


def inside(z, y, x, planes):
    """Inside or on one of the tetrahedra (float64 plane test, evaluated as the kernel does)."""
    for tets in planes:
        if all((n[0] * (z - a[0]) + n[1] * (y - a[1])) + n[2] * (x - a[2]) >= 0.0 for n, a in tets):
            return True
    return False


def voxels(dist, center, rays, faces):
    """Set of integer (z, y, x) voxels inside the polyhedron (no image bounds)."""
    pv = polyverts(dist, center, rays)
    lo, hi = bbox(pv)
    planes = _planes(pv, center, faces)
    return {(z, y, x) for z in range(lo[0], hi[0] + 1) for y in range(lo[1], hi[1] + 1)
            for x in range(lo[2], hi[2] + 1) if inside(float(z), float(y), float(x), planes)}


def polyhedra_to_label(dist, points, rays, faces, shape, prob=None):
    n = len(dist)
    order = np.arange(n) if prob is None else np.argsort(-np.asarray(prob, np.float64), kind="stable")
    lab = np.zeros(shape, np.int32)
    for i in order:
        for z, y, x in voxels(dist[i], points[i], rays, faces):
            if 0 <= z < shape[0] and 0 <= y < shape[1] and 0 <= x < shape[2] and lab[z, y, x] == 0:
                lab[z, y, x] = i + 1
    return lab


def volume(dist, rays, faces):
    v = np.asarray(dist, np.float64)[:, None] * np.asarray(rays, np.float32).astype(np.float64)
    return sum(np.linalg.det(np.array([v[b] - v[a], v[c] - v[a], -v[a]])) / 6.0 for a, b, c in faces)


def _sphere_iso(r1, p1, r2, p2, an):
    d = math.sqrt(sum((an[k] * (p1[k] - p2[k])) ** 2 for k in range(3)))
    if d > r1 + r2:
        return 0.0
    if max(r1, r2) >= d + min(r1, r2) - 1e-10:
        return math.pi * 4 / 3 * min(r1, r2) ** 3 / (an[0] * an[1] * an[2])
    t = (r1 + r2 - d) / 2 / d
    h1, h2 = (r2 - r1 + d) * t, (r1 - r2 + d) * t
    return (math.pi / 3 * h1 * h1 * (3 * r1 - h1) + math.pi / 3 * h2 * h2 * (3 * r2 - h2)) / (an[0] * an[1] * an[2])


def _radii(pv, center, faces, an):
    q = (pv.astype(np.float64) - np.asarray(center, np.float64)) * an
    r_out = float(np.sqrt((q ** 2).sum(1).max()))
    r_in = np.inf
    for a, b, c in faces:
        p, s = q[b] - q[a], q[c] - q[a]  # (z, y, x); n = p x s in x, y, z order, listed z, y, x
        n = np.array([p[2] * s[1] - p[1] * s[2], p[0] * s[2] - p[2] * s[0], p[1] * s[0] - p[0] * s[1]])
        r_in = min(r_in, float(q[a] @ n) / (np.linalg.norm(n) + 1e-10))
    return r_out, r_in


def nms(dist, points, rays, faces, thresh):
    """Candidates sorted by decreasing score; the kernel's rule written plainly:
    j is suppressed by a kept i < j when the cheap bounds or the voxel count say so."""
    n = len(dist)
    pvs = [polyverts(dist[i], points[i], rays) for i in range(n)]
    boxes = [bbox(pv) for pv in pvs]
    vols = [volume(dist[i], rays, faces) for i in range(n)]
    ext = np.mean([hi - lo for lo, hi in boxes], axis=0)
    an = np.array([ext.max() / e if e > 0 else 1.0 for e in ext])
    radii = [_radii(pvs[i], points[i], faces, an) for i in range(n)]
    vox = {}
    keep = np.zeros(n, bool)
    for j in range(n):
        suppressed = False
        for i in np.flatnonzero(keep):
            amin = min(vols[i], vols[j])
            w = [min(boxes[i][1][k], boxes[j][1][k]) - max(boxes[i][0][k], boxes[j][0][k]) for k in range(3)]
            box = float(np.prod(w)) if min(w) > 0 else 0.0
            upper = min(_sphere_iso(radii[i][0], points[i], radii[j][0], points[j], an), box)
            if upper < 1e-10 or min(1.0, upper / (amin + 1e-10)) <= thresh:
                continue
            if max(0.0, _sphere_iso(radii[i][1], points[i], radii[j][1], points[j], an) / (amin + 1e-10)) > thresh:
                suppressed = True
                break
            for k in (i, j):
                if k not in vox:
                    vox[k] = voxels(dist[k], points[k], rays, faces)
            if len(vox[i] & vox[j]) / (amin + 1e-10) > thresh:
                suppressed = True
                break
        keep[j] = not suppressed
    return keep
