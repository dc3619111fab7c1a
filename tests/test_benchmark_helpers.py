"""Helpers the benchmarks score with (benchmarks/_cases.py)."""
from __future__ import annotations

import numpy as np

from benchmarks._cases import without_multi_piece


def test_without_multi_piece_drops_split_ids_and_their_predictions():
    gt = np.zeros((10, 12), np.int32)
    gt[1:3, 1:3] = 1          # one piece
    gt[5:7, 1:3] = 2          # id 2: two pieces
    gt[5:7, 8:10] = 2
    gt[8, 8] = 3              # diagonal neighbours are one piece (8-connectivity)
    gt[9, 9] = 3
    pred = np.zeros_like(gt)
    pred[1:3, 1:3] = 5
    pred[5:7, 1:3] = 6        # on id 2: dropped
    pred[5:7, 7:10] = 7       # 4 of 6 pixels on id 2: dropped
    pred[0, 8:11] = 8         # on nothing: kept (a false positive stays one)
    g, p, k = without_multi_piece(gt, pred)
    assert k == 1
    assert set(np.unique(g)) == {0, 1, 3}
    assert set(np.unique(p)) == {0, 5, 8}
    # nothing to drop: returned unchanged
    g2, p2, k2 = without_multi_piece(g, p)
    assert k2 == 0 and np.array_equal(g2, g) and np.array_equal(p2, p)


def test_illumination_conditions_scale_the_signal_above_the_dark_level():
    """bench_illumination.lit: a bright field (transmitted light) is multiplied as a whole; a dark
    field keeps its offset (the 1st percentile) and only the signal above it is scaled."""
    from benchmarks.bench_illumination import illumination, lit

    g = illumination("gradient 3x", (4, 7))
    assert np.allclose(g[:, 0], 1) and np.allclose(g[:, -1], 1 / 3)
    v = illumination("vignette", (257, 257))
    assert v[128, 128] == v.max() == 1 and np.isclose(v[0, 0], 0.4, atol=0.01)
    assert illumination("as read", (4, 4)) is None
    bright = np.full((20, 30), 200.0)
    bright[5:8, 5:8] = 40
    out = lit(bright, "YX", "gradient 2x")
    assert np.isclose(out[0, 0], 200) and np.isclose(out[0, -1], 100)
    dark = np.full((20, 30), 1000.0)  # a camera offset
    dark[5:8, 5:8] = 1400
    dark[5:8, 25:28] = 1400
    out = lit(dark, "YX", "gradient 2x")
    assert np.isclose(out[0, -1], 1000) and np.isclose(out[0, 0], 1000)
    for x in (6, 26):  # the nuclei's signal above the offset, times the field there
        assert np.isclose(out[6, x], 1000 + 400 * (1 - 0.5 * x / 29))
    rgb = np.stack([bright] * 3, -1)
    np.testing.assert_allclose(lit(rgb, "YXC", "gradient 2x")[..., 1], lit(bright, "YX", "gradient 2x"))
