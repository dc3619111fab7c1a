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
