"""numba kernels of the label utilities (:mod:`cellseg.labels`) and of the per-id work of the decoders
(pixels grouped by id, per-id sums, id maps); compiled on first use, cached."""
from __future__ import annotations

import numpy as np

from ._numba import jit


@jit
def fill_holes_inplace(lab, shape, lo, hi):
    """Fill the holes of every object of the flat int32 label image ``lab``
    (C order, ``shape``), in place, objects in id order.

    Object ``k + 1`` has the bounding box ``lo[k] <= coord < hi[k]`` (an empty
    box, ``hi[k, 0] <= lo[k, 0]``, for an absent id). Inside its box, pixels
    that are not the object and are face-connected to the box's faces through
    such pixels are *outside*; every other pixel not of the object is in a
    hole, and holes that are background (0) take the object's id
    (``scipy.ndimage.binary_fill_holes`` of the object's mask within its box,
    applied to background pixels only). Returns the number of pixels filled.
    """
    nd = shape.size
    gstr = np.ones(nd, np.int64)
    for a in range(nd - 2, -1, -1):
        gstr[a] = gstr[a + 1] * shape[a + 1]
    ext = np.empty(nd, np.int64)
    lstr = np.ones(nd, np.int64)
    coord = np.empty(nd, np.int64)
    filled = 0
    for k in range(lo.shape[0]):
        if hi[k, 0] <= lo[k, 0]:
            continue
        obj = k + 1
        size = 1
        for a in range(nd):
            ext[a] = hi[k, a] - lo[k, a]
            size *= ext[a]
        for a in range(nd - 1, -1, -1):
            lstr[a] = 1 if a == nd - 1 else lstr[a + 1] * ext[a + 1]
        glob = np.empty(size, np.int64)
        seen = np.zeros(size, np.uint8)
        stack = np.empty(size, np.int64)
        top = 0
        for li in range(size):
            r = li
            g = 0
            face = False
            for a in range(nd):
                c = r // lstr[a]
                r -= c * lstr[a]
                g += (lo[k, a] + c) * gstr[a]
                if c == 0 or c == ext[a] - 1:
                    face = True
            glob[li] = g
            if face and lab[g] != obj:
                seen[li] = 1
                stack[top] = li
                top += 1
        while top > 0:
            top -= 1
            li = stack[top]
            r = li
            for a in range(nd):
                coord[a] = r // lstr[a]
                r -= coord[a] * lstr[a]
            for a in range(nd):
                for d in (-1, 1):
                    c = coord[a] + d
                    if c < 0 or c >= ext[a]:
                        continue
                    lj = li + d * lstr[a]
                    if seen[lj] == 0 and lab[glob[lj]] != obj:
                        seen[lj] = 1
                        stack[top] = lj
                        top += 1
        for li in range(size):
            if seen[li] == 0 and lab[glob[li]] == 0:
                lab[glob[li]] = obj
                filled += 1
    return filled


@jit
def fill_holes_2d(lab, lo, hi):
    """:func:`fill_holes_inplace` for a 2D int32 label image ``lab`` (H, W):
    same result, written for speed. Each object's box gets a one-pixel frame,
    marked *outside* in advance, and the object's pixels are marked blocked;
    the flood starts from the box's border pixels that are not the object and
    steps to the four neighbours, which for a box pixel always exist (box or
    frame): no bounds checks, no divisions.
    """
    filled = 0
    for k in range(lo.shape[0]):
        y0 = lo[k, 0]
        y1 = hi[k, 0]
        if y1 <= y0:
            continue
        x0 = lo[k, 1]
        x1 = hi[k, 1]
        obj = k + 1
        h = y1 - y0
        w = x1 - x0
        Wp = w + 2
        # 0: not reached yet (not the object), 1: outside (frame or reached), 2: the object
        state = np.ones((h + 2) * Wp, np.uint8)
        stack = np.empty(h * w, np.int64)
        top = 0
        for r in range(h):
            row = lab[y0 + r]
            base = (r + 1) * Wp + 1
            edge_row = r == 0 or r == h - 1
            for c in range(w):
                if row[x0 + c] == obj:
                    state[base + c] = 2
                elif edge_row or c == 0 or c == w - 1:
                    stack[top] = base + c
                    top += 1
                else:
                    state[base + c] = 0
        while top > 0:
            top -= 1
            li = stack[top]
            for lj in (li - 1, li + 1, li - Wp, li + Wp):
                if state[lj] == 0:
                    state[lj] = 1
                    stack[top] = lj
                    top += 1
        for r in range(h):
            row = lab[y0 + r]
            base = (r + 1) * Wp + 1
            for c in range(w):
                if state[base + c] == 0 and row[x0 + c] == 0:
                    row[x0 + c] = obj
                    filled += 1
    return filled


@jit
def label_boxes(flat, shape, n):
    """Bounding boxes of ids 1..n of a flat label image of ``shape``: ``lo``, ``hi``
    int64 (n, ndim), ``lo <= coord < hi`` (empty box ``lo = hi = 0`` for an absent
    id), as ``scipy.ndimage.find_objects``."""
    nd = shape.size
    lo = np.zeros((n, nd), np.int64)
    hi = np.zeros((n, nd), np.int64)
    seen = np.zeros(n, np.bool_)
    W = shape[nd - 1]
    stride = np.ones(nd, np.int64)  # C-order strides of the leading axes, in pixels
    for a in range(nd - 2, -1, -1):
        stride[a] = stride[a + 1] * shape[a + 1]
    coord = np.zeros(nd, np.int64)
    for outer in range(flat.size // W):
        r = outer * W  # the row's first pixel: its leading coordinates
        for a in range(nd - 1):
            coord[a] = r // stride[a]
            r -= coord[a] * stride[a]
        for x in range(W):
            v = flat[outer * W + x]
            if v <= 0 or v > n:
                continue
            k = v - 1
            if not seen[k]:
                seen[k] = True
                for a in range(nd - 1):
                    lo[k, a] = coord[a]
                    hi[k, a] = coord[a] + 1
                lo[k, nd - 1] = x
                hi[k, nd - 1] = x + 1
            else:
                for a in range(nd - 1):
                    if coord[a] < lo[k, a]:
                        lo[k, a] = coord[a]
                    if coord[a] + 1 > hi[k, a]:
                        hi[k, a] = coord[a] + 1
                if x < lo[k, nd - 1]:
                    lo[k, nd - 1] = x
                if x + 1 > hi[k, nd - 1]:
                    hi[k, nd - 1] = x + 1
    return lo, hi


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
