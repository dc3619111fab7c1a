"""The stitching rule of a 2D model on a Z stack (documented in the README): planes are
segmented one by one, then each plane's objects take the id of the object in the plane
above with which they overlap at IoU >= 0.3 (greedy, best IoU first, one-to-one); an
object without such a partner, or after a plane without it, starts a new 3D object."""
from __future__ import annotations

import numpy as np
import pytest

from cellseg.segmenter import Segmenter

_testing = pytest.importorskip("cellseg_napari._testing")


def _disk(shape, cy, cx, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_a_2d_model_stitches_planes_by_iou():
    shape = (64, 96)
    planes = []
    # plane 0: A and B
    p = np.zeros(shape, np.int32)
    p[_disk(shape, 20, 20, 8)] = 1
    p[_disk(shape, 20, 60, 8)] = 2
    planes.append(p)
    # plane 1: A shifted a little (IoU ~0.7: same object), B moved by 12 px (IoU < 0.3: a new object)
    p = np.zeros(shape, np.int32)
    p[_disk(shape, 20, 22, 8)] = 1
    p[_disk(shape, 20, 72, 8)] = 2
    planes.append(p)
    # plane 2: A missing
    p = np.zeros(shape, np.int32)
    p[_disk(shape, 20, 72, 8)] = 2
    planes.append(p)
    # plane 3: A back (after a gap: a new object); B's id continues
    p = np.zeros(shape, np.int32)
    p[_disk(shape, 20, 22, 8)] = 1
    p[_disk(shape, 20, 72, 8)] = 2
    planes.append(p)
    # plane 4: A split in two halves, both overlapping it at IoU > 0.3: the larger half keeps
    # A's id, the other starts a new object
    p = np.zeros(shape, np.int32)
    a = _disk(shape, 20, 22, 8)
    xx = np.mgrid[: shape[0], : shape[1]][1]
    p[a & (xx <= 22)] = 1
    p[a & (xx >= 24)] = 3
    planes.append(p)
    full = a.sum()
    assert (p == 1).sum() / full > (p == 3).sum() / full > 0.3
    model = _testing.OracleModel("distance", planes)
    res = Segmenter(model).segment(np.stack([(q > 0).astype(np.float32) for q in planes]), axes="ZYX")
    lab = res.labels

    def at(z, y, x):
        return int(lab[z, y, x])

    a0, b0 = at(0, 20, 20), at(0, 20, 60)
    assert a0 and b0 and a0 != b0
    assert at(1, 20, 22) == a0  # IoU above 0.3: the same 3D object
    assert at(1, 20, 72) not in (0, a0, b0)  # below: a new object
    b1 = at(1, 20, 72)
    assert at(2, 20, 72) == b1 and at(3, 20, 72) == b1
    assert at(3, 20, 22) not in (0, a0, b0, b1)  # a gap ends an object
    a3 = at(3, 20, 22)
    assert at(4, 20, 18) == a3 and at(4, 20, 27) not in (0, a0, b0, b1, a3)  # one-to-one
    assert len(np.unique(lab[lab > 0])) == 5
