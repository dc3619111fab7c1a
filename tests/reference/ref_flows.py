"""Slow, obvious twins of the flow kernels (cellseg.representations._flows_*_kernels).

Different algorithms where possible:

* heat diffusion: dense NumPy array shifts on each object's padded bounding box
  (the kernel iterates over a pixel list);
* smooth distance: Jacobi iteration of the same upwind update over the whole
  image at once, vectorised (the kernel uses per-object Gauss-Seidel fast
  sweeping); both converge to the same fixed point;
* Euler integration: ``scipy.ndimage.map_coordinates(order=1)`` once per step;
  the early stops: the float32 path of every point kept whole, then scanned for
  the first step that stops it;
* Cellpose grouping: ``np.add.at`` histogram, ``maximum_filter`` seeds,
  ``binary_dilation`` growth per seed;
* Omnipose grouping: explicit edge list + ``scipy.sparse.csgraph``;
* flow error: a loop over masks;
* AP: brute-force IoU matrix (exact for IoU thresholds >= 0.5, where matches
  are unique).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

FLOW_SCALE = 5.0


def _shift(a, offset, fill):
    """``out[p] = a[p + offset]`` with ``fill`` outside."""
    out = np.full_like(a, fill)
    src = []
    dst = []
    for o, n in zip(offset, a.shape):
        if o >= 0:
            src.append(slice(o, n))
            dst.append(slice(0, n - o))
        else:
            src.append(slice(0, n + o))
            dst.append(slice(-o, n))
    out[tuple(dst)] = a[tuple(src)]
    return out


# ----------------------------------------------------------------------------- Cellpose flows


def ref_cellpose_flows(labels, niter=None):
    lab = np.asarray(labels).astype(np.int64)
    nd = lab.ndim
    out = np.zeros((nd,) + lab.shape, np.float64)
    for i in np.unique(lab):
        if i == 0:
            continue
        coords = np.array(np.nonzero(lab == i))  # raster order
        lo = coords.min(1)
        hi = coords.max(1)
        ext = hi - lo + 1
        local = coords - lo[:, None] + 1
        mask = np.zeros(tuple(ext + 2), bool)
        mask[tuple(local)] = True
        if nd == 2:
            mean = np.round(coords.mean(1))  # round half to even, as Cellpose
            n_it = 2 * (ext[0] + ext[1] + 2) if niter is None else niter
        else:
            mean = coords.mean(1)
            n_it = 6 * (ext.sum() + 3) if niter is None else niter
        d2 = ((coords - mean[:, None]) ** 2).sum(0)
        c = tuple(local[:, int(np.argmin(d2))])
        T = np.zeros(mask.shape)
        if nd == 2:
            offs = [(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1)]
            den = 9.0
        else:
            offs = [(0, 0, 0), (1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)]
            den = 7.0
        for _ in range(n_it):
            T[c] += 1.0
            s = np.zeros_like(T)
            for o in offs:
                s = s + _shift(T, o, 0.0)
            T = np.where(mask, s / den, 0.0)
        g = []
        for a in range(nd):
            e = [0] * nd
            e[a] = 1
            g.append(_shift(T, tuple(e), 0.0) - _shift(T, tuple(-x for x in e), 0.0))
        g = np.array(g)
        nrm = np.sqrt((g ** 2).sum(0)) + 1e-60
        u = g / nrm
        for a in range(nd):
            out[(a,) + tuple(coords)] = u[(a,) + tuple(local)]
    return out


# ----------------------------------------------------------------------------- Omnipose distance


def _godunov2(a, b, h):
    lo = np.minimum(a, b)
    hi = np.maximum(a, b)
    with np.errstate(invalid="ignore"):
        two = 0.5 * (lo + hi + np.sqrt(np.maximum(2 * h * h - (hi - lo) ** 2, 0.0)))
        one_sided = (hi == np.inf) | (hi - lo >= h)
    return np.where(one_sided, lo + h, two)


def _godunov_n(avals, hs):
    """Vectorised upwind update of sum ((u - a_i)/h_i)^2 = 1 (3 axes)."""
    a = np.stack(avals)
    w = np.stack([np.full(avals[0].shape, 1.0 / h ** 2) for h in hs])
    order = np.argsort(a, axis=0, kind="stable")
    a = np.take_along_axis(a, order, 0)
    w = np.take_along_axis(w, order, 0)
    u = np.full(a.shape[1:], np.inf)
    done = np.zeros(a.shape[1:], bool)
    sw = np.zeros(a.shape[1:])
    swa = np.zeros(a.shape[1:])
    swa2 = np.zeros(a.shape[1:])
    for k in range(a.shape[0]):
        finite = np.isfinite(a[k]) & ~done
        sw = np.where(finite, sw + w[k], sw)
        swa = np.where(finite, swa + w[k] * np.where(finite, a[k], 0), swa)
        swa2 = np.where(finite, swa2 + w[k] * np.where(finite, a[k], 0) ** 2, swa2)
        disc = swa ** 2 - sw * (swa2 - 1.0)
        ok = finite & (disc >= 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            uk = (swa + np.sqrt(np.where(ok, disc, 0))) / np.where(ok, sw, 1)
        u = np.where(ok, uk, u)
        nxt = a[k + 1] if k + 1 < a.shape[0] else np.full(u.shape, np.inf)
        done = done | ~finite | (disc < 0) | (ok & (uk <= nxt))
    return u


def ref_omnipose_flows(labels, anisotropy=1.0, tol=1e-12, max_iter=100000):
    lab = np.asarray(labels).astype(np.int64)
    nd = lab.ndim
    pad = np.pad(lab, 1, constant_values=-1)  # -1: outside the image
    obj = pad > 0
    n_obj = len(np.unique(lab[lab > 0]))

    def neighbour(T, off):
        nl = _shift(pad, off, -1)
        nt = _shift(T, off, np.inf)
        return np.where(nl == pad, nt, np.where(nl == -1, np.inf, 0.0))

    # an object without any in-image pixel around it uses the image border as source
    border_src = np.zeros(pad.shape, bool)
    for i in np.unique(lab[lab > 0]):
        m = pad == i
        ring = ndi.binary_dilation(m, np.ones((3,) * nd, bool)) & ~m
        if not (ring & (pad != -1)).any():
            border_src |= m
    del n_obj

    def nb(T, off):
        v = neighbour(T, off)
        nl = _shift(pad, off, -1)
        return np.where(border_src & (nl == -1), 0.0, v)

    T = np.where(obj, np.inf, 0.0)
    for _ in range(max_iter):
        if nd == 2:
            u1 = _godunov2(np.minimum(nb(T, (-1, 0)), nb(T, (1, 0))), np.minimum(nb(T, (0, -1)), nb(T, (0, 1))), 1.0)
            u2 = _godunov2(np.minimum(nb(T, (-1, -1)), nb(T, (1, 1))), np.minimum(nb(T, (-1, 1)), nb(T, (1, -1))),
                           np.sqrt(2.0))
            with np.errstate(invalid="ignore"):
                new = np.where(np.isfinite(u1) & np.isfinite(u2), np.sqrt(u1 * u2), np.inf)
        else:
            new = _godunov_n([np.minimum(nb(T, (-1, 0, 0)), nb(T, (1, 0, 0))),
                              np.minimum(nb(T, (0, -1, 0)), nb(T, (0, 1, 0))),
                              np.minimum(nb(T, (0, 0, -1)), nb(T, (0, 0, 1)))], (anisotropy, 1.0, 1.0))
        new = np.where(obj, new, 0.0)
        with np.errstate(invalid="ignore"):
            diff = np.where(np.isfinite(new) & np.isfinite(T), np.abs(new - T), np.where(new == T, 0, np.inf))
        T = new
        if diff.max(initial=0.0) <= tol:
            break
    # gradient: out-of-image neighbours take the pixel's own value, other labels 0
    def gval(off):
        nl = _shift(pad, off, -1)
        nt = _shift(T, off, 0.0)
        return np.where(nl == -1, T, np.where(nl == pad, nt, 0.0))

    if nd == 2:
        v = {(dy, dx): gval((dy, dx)) for dy in (-1, 0, 1) for dx in (-1, 0, 1)}
        gy1 = 0.5 * (v[(1, 0)] - v[(-1, 0)])
        gx1 = 0.5 * (v[(0, 1)] - v[(0, -1)])
        pp = v[(1, 1)] - v[(-1, -1)]
        pm = v[(1, -1)] - v[(-1, 1)]
        g = np.array([0.5 * (gy1 + 0.25 * (pp + pm)), 0.5 * (gx1 + 0.25 * (pp - pm))])
    else:
        sp = (anisotropy, 1.0, 1.0)
        g = []
        for a in range(3):
            e = [0, 0, 0]
            e[a] = 1
            g.append((gval(tuple(e)) - gval(tuple(-x for x in e))) / (2 * sp[a]))
        g = np.array(g)
    nrm = np.sqrt((g ** 2).sum(0)) + 1e-60
    u = np.where(obj, g / nrm, 0.0)
    inner = (slice(1, -1),) * nd
    return u[(slice(None),) + inner], np.where(obj, T, 0.0)[inner]


# ----------------------------------------------------------------------------- Euler integration


def ref_follow(step, points, niter, suppress=False):
    step = np.asarray(step, np.float64)
    nd = step.shape[0]
    shape = step.shape[1:]
    # positions are float32, as in Cellpose/Omnipose (the interpolation here is float64:
    # results agree to float32 rounding, not bit for bit)
    p = np.array(points, np.float32).astype(np.float64)

    def interp(p):
        return np.array([ndi.map_coordinates(step[c], p, order=1, mode="nearest", output=np.float64)
                         for c in range(nd)])

    d0 = interp(p) if suppress else None
    for t in range(niter):
        d = interp(p)
        if suppress:
            d = (d + d0) / 2.0
            d0 = d
            d = d / (1.0 + t)
        for a in range(nd):
            p[a] = np.clip(p[a] + d[a], 0.0, shape[a] - 1.0).astype(np.float32)
    return p


def _interp_f32(step, p):
    """The kernels' float32 (bi/tri)linear interpolation of ``step`` (float32 ``(nd,
    *shape)``, zero beyond the last row / column) at float32 positions ``p``
    (``(nd, P)``), operation for operation (written out per corner)."""
    nd = step.shape[0]
    one = np.float32(1.0)
    pad = np.pad(step, [(0, 0)] + [(0, 1)] * nd)
    i = [p[a].astype(np.int64) for a in range(nd)]
    w = [p[a] - i[a].astype(np.float32) for a in range(nd)]
    out = []
    for c in range(nd):
        def s(*o):
            return pad[(c,) + tuple(i[a] + o[a] for a in range(nd))]
        if nd == 2:
            wy, wx = w
            out.append((one - wy) * (one - wx) * s(0, 0) + (one - wy) * wx * s(0, 1)
                       + wy * (one - wx) * s(1, 0) + wy * wx * s(1, 1))
        else:
            wz, wy, wx = w
            lo = (one - wy) * ((one - wx) * s(0, 0, 0) + wx * s(0, 0, 1)) + wy * ((one - wx) * s(0, 1, 0)
                                                                              + wx * s(0, 1, 1))
            hi = (one - wy) * ((one - wx) * s(1, 0, 0) + wx * s(1, 0, 1)) + wy * ((one - wx) * s(1, 1, 0)
                                                                              + wx * s(1, 1, 1))
            out.append((one - wz) * lo + wz * hi)
    return np.array(out, np.float32)


def ref_follow_stops(step, points, niter, tol):
    """Cellpose-mode integration with the early stops of ``follow_2d`` / ``follow_3d``:
    every point runs all ``niter`` float32 steps (its whole path is kept), then
    its path is scanned for the first step that stops it:

    * ``p[t+1] == p[t]``: end point ``p[t]``;
    * else with ``r = niter - t - 1`` steps left, ``o = p[t+1]`` if ``r`` is even
      else ``p[t]``, ``e = max |p[t+1] - p[t-1]|`` (``p[-1] = -1``) and
      ``bound = float32(ceil(r / 2)) * e``: end point ``o`` if ``e == 0``, or if
      ``tol > 0``, ``bound <= tol`` and ``floor(o - bound) == floor(o + bound)``
      on every axis;
    * no stop: ``p[niter]``.
    """
    step = np.asarray(step, np.float32)
    nd = step.shape[0]
    hi = np.array(step.shape[1:], np.float32)[:, None] - np.float32(1.0)
    p = np.array(points, np.float32)
    path = [p]
    for _ in range(niter):
        p = np.minimum(hi, np.maximum(np.float32(0.0), p + _interp_f32(step, p)))
        path.append(p)
    path = np.array(path)  # (niter + 1, nd, P)
    tol = np.float32(tol)
    out = np.empty(p.shape, np.float64)
    for i in range(p.shape[1]):
        q = path[:, :, i]
        end = q[niter]
        for t in range(niter):
            if np.array_equal(q[t + 1], q[t]):
                end = q[t]
                break
            r = niter - t - 1
            o = q[t + 1] if r % 2 == 0 else q[t]
            prev = q[t - 1] if t >= 1 else np.full(nd, -1.0, np.float32)
            e = np.abs(q[t + 1] - prev).max()
            bound = np.float32(np.ceil(r / 2)) * e
            if e == 0 or (tol > 0 and bound <= tol and np.array_equal(np.floor(o - bound), np.floor(o + bound))):
                end = o
                break
        out[:, i] = end
    return out


# ----------------------------------------------------------------------------- grouping


def ref_cellpose_clusters(final, shape, seed_min_count=10, grow_min=2, radius=5, pool=2):
    nd = len(shape)
    cells = tuple(np.clip(np.floor(final[a]).astype(np.int64), 0, shape[a] - 1) for a in range(nd))
    h = np.zeros(shape, np.int64)
    np.add.at(h, cells, 1)
    hmax = ndi.maximum_filter(h, size=2 * pool + 1, mode="constant", cval=0)
    seeds = np.argwhere((h == hmax) & (h > seed_min_count))  # raster order
    counts = h[tuple(seeds.T)]
    flat = np.ravel_multi_index(tuple(seeds.T), shape) if len(seeds) else np.zeros(0, np.int64)
    order = np.lexsort((flat, counts))
    M = np.zeros(shape, np.int64)
    struct = np.ones((3,) * nd, bool)
    L = 2 * radius + 1
    for rank, s in enumerate(seeds[order]):
        lo = s - radius
        win = np.zeros((L,) * nd, np.int64)
        src = []
        dst = []
        for a in range(nd):
            a0 = max(lo[a], 0)
            a1 = min(lo[a] + L, shape[a])
            src.append(slice(a0, a1))
            dst.append(slice(a0 - lo[a], a1 - lo[a]))
        win[tuple(dst)] = h[tuple(src)]
        cur = np.zeros(win.shape, bool)
        cur[(radius,) * nd] = True
        for _ in range(radius):
            cur = ndi.binary_dilation(cur, struct) & (win > grow_min)
        for w in np.argwhere(cur):
            g = w + lo
            M[tuple(g)] = rank + 1
    return M[cells].astype(np.int32)


def ref_omnipose_clusters(final, fg, flow, link_dist=3.0, max_divergence=0.5, connectivity=1, dist=None,
                          min_depth=0.0, merge_frac=2.0, absorb_ratio=0.0):
    """Links by scipy connected components, then region merging and fragment
    absorption written out with Python dicts and fractions (see ``link_points``
    for the rules)."""
    from fractions import Fraction

    fg = np.asarray(fg, bool)
    nd = fg.ndim
    coords = np.argwhere(fg)  # raster order
    P = len(coords)
    index = -np.ones(fg.shape, np.int64)
    index[fg] = np.arange(P)
    depth = np.full(P, np.inf) if dist is None else np.asarray(dist, np.float64)[fg]
    u = flow[:, fg].astype(np.float64)
    nrm = np.sqrt((u ** 2).sum(0))
    u = np.divide(u, nrm, out=np.zeros_like(u), where=nrm > 0)
    pairs = []  # (i, j, compatible)
    offsets = [o for o in np.ndindex(*(3,) * nd) if any(x != 1 for x in o)]
    for o in offsets:
        off = np.array(o) - 1
        if connectivity == 1 and np.count_nonzero(off) != 1:
            continue
        nb = coords + off
        inside = np.all((nb >= 0) & (nb < np.array(fg.shape)), axis=1)
        i = np.nonzero(inside)[0]
        j = index[tuple(nb[inside].T)]
        ok = j >= 0
        i, j = i[ok], j[ok]
        d = np.sqrt(((final[:, i] - final[:, j]) ** 2).sum(0))
        e = off / np.linalg.norm(off)
        rate = ((u[:, j] - u[:, i]) * e[:, None]).sum(0)
        good = (d <= link_dist) & (rate <= max_divergence)
        pairs += list(zip(i.tolist(), j.tolist(), good.tolist()))
    keep = [(i, j) for i, j, g in pairs if g and max(depth[i], depth[j]) >= min_depth]
    rows = np.array([p[0] for p in keep], int)
    cols = np.array([p[1] for p in keep], int)
    g = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(P, P))
    _, comp = connected_components(g, directed=False)
    # a component is named by its lowest point index
    name = {}
    for k in range(P):
        name.setdefault(comp[k], k)
    comp = np.array([name[c] for c in comp], int)
    while merge_frac <= 1.0:
        size = {c: int(np.count_nonzero(comp == c)) for c in set(comp.tolist())}
        stats = {}
        for i, j, good in pairs:
            a, b = sorted((comp[i], comp[j]))
            if a != b:
                n_, g_ = stats.get((a, b), (0, 0))
                stats[(a, b)] = (n_ + 1, g_ + int(good))
        best = {}
        for (a, b), (n_, g_) in stats.items():
            s_, o_ = (a, b) if (size[a], -a) < (size[b], -b) else (b, a)
            cand = (Fraction(g_, n_), g_, -o_)
            if s_ not in best or cand > best[s_][0]:
                best[s_] = (cand, o_, n_, g_)
        edges = [(s_, o_) for s_, (_, o_, n_, g_) in best.items() if g_ >= merge_frac * n_]
        if not edges:
            break
        m = coo_matrix((np.ones(len(edges)), ([e[0] for e in edges], [e[1] for e in edges])), shape=(P, P))
        _, cc = connected_components(m, directed=False)
        low = {}
        for c in sorted(set(comp.tolist())):
            low.setdefault(cc[c], c)
        new = np.array([low[cc[c]] for c in comp], int)
        if len(set(new.tolist())) == len(set(comp.tolist())):
            break
        comp = new
    while absorb_ratio > 0:
        peak = {}
        for k in range(P):
            peak[comp[k]] = max(peak.get(comp[k], -np.inf), depth[k])
        contact = {}  # (fragment, neighbour) -> neighbour pairs, both directions
        for i, j, _ in pairs:
            a, b = comp[i], comp[j]
            if a != b:
                contact[(a, b)] = contact.get((a, b), 0) + 1
                contact[(b, a)] = contact.get((b, a), 0) + 1
        pick = {}
        for (s_, o_), n_ in contact.items():
            if peak[s_] < absorb_ratio * peak[o_]:
                if s_ not in pick or (n_, -o_) > (contact[(s_, pick[s_])], -pick[s_]):
                    pick[s_] = o_
        if not pick:
            break
        m = coo_matrix((np.ones(len(pick)), (list(pick), list(pick.values()))), shape=(P, P))
        _, cc = connected_components(m, directed=False)
        low = {}
        for c in sorted(set(comp.tolist())):
            low.setdefault(cc[c], c)
        comp = np.array([low[cc[c]] for c in comp], int)
    # renumber by first point (raster order)
    out = np.zeros(P, np.int32)
    seen = {}
    for k in range(P):
        c = comp[k]
        if c not in seen:
            seen[c] = len(seen) + 1
        out[k] = seen[c]
    return out


def ref_flow_errors(labels, mu, flow, scale=FLOW_SCALE):
    lab = np.asarray(labels)
    ids = np.unique(lab)
    ids = ids[ids != 0]
    out = []
    for i in ids:
        m = lab == i
        out.append(float(np.mean(((mu[:, m] - flow[:, m] / scale) ** 2).sum(0))))
    return np.array(out)


# ----------------------------------------------------------------------------- metric


def ref_ap(y_true, y_pred, thresh=0.5):
    """AP = TP / (TP + FP + FN) at IoU >= thresh (thresh >= 0.5: matches are unique)."""
    assert thresh >= 0.5
    t = np.asarray(y_true)
    p = np.asarray(y_pred)
    ti = [i for i in np.unique(t) if i]
    pi = [j for j in np.unique(p) if j]
    tp = 0
    for i in ti:
        m = t == i
        for j in np.unique(p[m]):
            if j == 0:
                continue
            q = p == j
            iou = (m & q).sum() / (m | q).sum()
            if iou >= thresh:
                tp += 1
    n = len(ti) + len(pi) - tp
    return 1.0 if n == 0 else tp / n
