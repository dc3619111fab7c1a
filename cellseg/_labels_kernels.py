"""numba kernels of :mod:`cellseg.labels` (compiled on first use, cached)."""
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
