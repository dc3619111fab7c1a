"""DistanceMap round trip on real annotations (decode of the oracle outputs).

Measured AP@0.5 figures (pooled TP/FP/FN) are in the engineer's report; the
bounds below sit just under them. Fluo-N2DL-HeLa gold truth contains objects
made of 2-3 disconnected pieces (dividing cells under one id), which no
watershed decoder can return as one object: its ceiling is about 0.97.
"""
from __future__ import annotations

import csv

import numpy as np
import pytest

from cellseg.metrics import matching
from cellseg.representations.distance import DistanceMap

pytestmark = pytest.mark.data


def _counts(gt, pred, thr=0.5):
    m = matching(gt, pred, thresh=thr)
    return m.tp, m.fp, m.fn


def _pooled_ap(labels_list, rep):
    tot = np.zeros(3)
    for lab in labels_list:
        pred = rep.decode(rep.oracle_outputs(lab)).labels
        tot += _counts(lab, pred)
    return tot[0] / tot.sum()


def _read(paths):
    import tifffile

    return [tifffile.imread(str(p)).astype(np.int32) for p in paths]


def test_round_trip_dsb2018(dsb2018):
    with open(dsb2018 / "index.csv") as fh:
        rows = [r for r in csv.DictReader(fh)]
    rng = np.random.default_rng(0)
    pick = rng.choice(len(rows), 25, replace=False)
    labs = _read([dsb2018 / "masks" / f"{rows[i]['id']}.tif" for i in pick])
    assert _pooled_ap(labs, DistanceMap()) >= 0.98


def test_round_trip_dic_hela_silver(dic_hela):
    labs = _read(sorted((dic_hela / "01_ST" / "SEG").glob("man_seg*.tif"))[::30])
    assert _pooled_ap(labs, DistanceMap()) >= 0.96


def test_round_trip_fluo_hela_gold(fluo_hela):
    labs = _read(sorted((fluo_hela / "01_GT" / "SEG").glob("man_seg*.tif")))
    assert _pooled_ap(labs, DistanceMap()) >= 0.95
