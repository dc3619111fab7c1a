"""Slow, obvious twin of cellseg.train.denoiseg.n2v_mask (Noise2Void blind-spot masking)."""
from __future__ import annotations

import itertools

import numpy as np


def ref_n2v_mask(image: np.ndarray, rng: np.random.Generator, fraction: float = 0.02, radius: int = 2):
    """The same random draws as the fast version (the pixels by ``rng.choice`` over the flat
    index, then one offset index per pixel by ``rng.integers``), everything else pixel by pixel."""
    x = np.asarray(image, dtype=np.float32)
    sp = x.shape[1:]
    n = 1
    for s in sp:
        n *= s
    k = max(1, int(round(fraction * n)))
    flat = rng.choice(n, size=k, replace=False)
    offsets = [o for o in itertools.product(range(-radius, radius + 1), repeat=len(sp)) if any(v != 0 for v in o)]
    picks = rng.integers(0, len(offsets), size=k)
    out = x.copy()
    mask = np.zeros(sp, bool)
    for f, pick in zip(flat, picks):
        # the flat index in C order, one axis at a time from the last
        coord = []
        rest = int(f)
        for s in reversed(sp):
            coord.append(rest % s)
            rest //= s
        coord = coord[::-1]
        nb = []
        for c, o, s in zip(coord, offsets[pick], sp):
            v = c + o
            if v < 0 or v >= s:
                v = c - o  # mirrored back into the image
            nb.append(v)
        assert tuple(nb) != tuple(coord)
        for ch in range(x.shape[0]):
            out[(ch, *coord)] = x[(ch, *nb)]  # from the original, never an already replaced value
        mask[tuple(coord)] = True
    return out, mask
