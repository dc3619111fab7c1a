"""Offsets round trip on real annotations: decode of the oracle outputs, and of
the oracle with ~1 px of noise on the offsets (seed recomputed accordingly).

Unlike watershed decoders, clustering on embeddings returns objects made of
disconnected pieces (dividing cells under one id in Fluo-N2DL-HeLa) whole.
"""
from __future__ import annotations

import csv

import numpy as np
import pytest

from cellseg.metrics import matching
from cellseg.representations.offsets import Offsets
from tests.test_rep_offsets import _noisy

pytestmark = pytest.mark.data


def _counts(gt, pred, thr=0.5):
    m = matching(gt, pred, thresh=thr)
    return m.tp, m.fp, m.fn


def _pooled_ap(labels_list, noise_px=0.0):
    rep = Offsets()
    rng = np.random.default_rng(0)
    tot = np.zeros(3)
    for lab in labels_list:
        out = _noisy(rep, lab, rng, noise_px) if noise_px else rep.oracle_outputs(lab)
        tot += _counts(lab, rep.decode(out, dict(min_size=1)).labels)
    return tot[0] / tot.sum()


def _read(paths):
    import tifffile

    return [tifffile.imread(str(p)).astype(np.int32) for p in paths]


def test_round_trip_dsb2018(dsb2018):
    with open(dsb2018 / "index.csv") as fh:
        rows = [r for r in csv.DictReader(fh)]
    pick = np.random.default_rng(0).choice(len(rows), 25, replace=False)
    labs = _read([dsb2018 / "masks" / f"{rows[i]['id']}.tif" for i in pick])
    assert _pooled_ap(labs) >= 0.99
    assert _pooled_ap(labs, 1.0) >= 0.98


def test_round_trip_dic_hela_silver(dic_hela):
    labs = _read(sorted((dic_hela / "01_ST" / "SEG").glob("man_seg*.tif"))[::30])
    assert _pooled_ap(labs) >= 0.99
    assert _pooled_ap(labs, 1.0) >= 0.98


def test_round_trip_fluo_hela_gold(fluo_hela):
    labs = _read(sorted((fluo_hela / "01_GT" / "SEG").glob("man_seg*.tif")))
    assert _pooled_ap(labs) >= 0.99
    assert _pooled_ap(labs, 1.0) >= 0.98
