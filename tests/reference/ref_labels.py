"""Slow, obvious twins of the label helpers' numba kernels."""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def ref_fill_holes(labels):
    """Per object in id order: ``binary_fill_holes`` of its mask in its bounding
    box (scipy's default face connectivity), written to background pixels only."""
    lab = np.array(labels, np.int32, copy=True)
    for i, sl in enumerate(ndi.find_objects(lab), start=1):
        if sl is None:
            continue
        filled = ndi.binary_fill_holes(lab[sl] == i)
        lab[sl][filled & (lab[sl] == 0)] = i
    return lab
