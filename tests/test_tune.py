"""Threshold tuning finds known optima on outputs built for it."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from scipy import ndimage as ndi

from cellseg.representations.base import Decoded, HeadSpec, Representation, check_outputs
from cellseg.train.tune import TUNABLE, score_labels, tune_params


@dataclass(frozen=True)
class _P:
    prob_thresh: float = 0.5
    min_size: float = 0.0


class ThresholdRep(Representation):
    """Decode = connected components of ``prob > prob_thresh`` with at least ``min_size`` pixels."""

    name = "threshold"
    Params = _P

    def heads(self):
        return (HeadSpec("prob", 1, "sigmoid"),)

    def encode(self, labels):
        return {"prob": (labels > 0).astype(np.float32)[None]}

    def decode(self, outputs, params=None):
        p = self.params(params)
        o = check_outputs(outputs, self.heads())
        lab, n = ndi.label(o["prob"][0] > p.prob_thresh)
        sizes = np.bincount(lab.ravel(), minlength=n + 1)
        keep = sizes >= p.min_size
        keep[0] = False
        lut = np.zeros(n + 1, np.int32)
        lut[keep] = np.arange(1, keep.sum() + 1)
        return Decoded(lut[lab], np.ones(int(keep.sum()), np.float32))

    def config(self):
        return {}


def _scene(seed, distractor_prob, distractor_size=3):
    """Squares (GT) at prob 0.8 with a 0.3 halo ring that merges neighbours when included;
    small distractor blobs at ``distractor_prob``."""
    rng = np.random.default_rng(seed)
    lab = np.zeros((64, 64), np.int32)
    prob = np.zeros((1, 64, 64), np.float32)
    k = 0
    for y in range(4, 60, 14):
        for x in range(4, 60, 14):
            if rng.random() < 0.8:
                k += 1
                prob[0, y - 2:y + 10, x - 2:x + 10] = 0.3  # halo: touches the neighbours' halos
                lab[y:y + 8, x:x + 8] = k
    prob[0][lab > 0] = 0.8
    for _ in range(4):  # distractors in the background gaps
        y, x = rng.integers(0, 64 - distractor_size, 2)
        if not (lab[y:y + distractor_size, x:x + distractor_size] > 0).any() and \
                not (prob[0, y:y + distractor_size, x:x + distractor_size] > 0).any():
            prob[0, y:y + distractor_size, x:x + distractor_size] = distractor_prob
    return {"prob": prob}, lab


def test_finds_threshold_interval():
    rep = ThresholdRep()
    scenes = [_scene(s, 0.55) for s in range(3)]
    outs, labs = [o for o, _ in scenes], [lab for _, lab in scenes]
    # the optimum is any prob_thresh in [0.55, 0.8): below, distractors (and below 0.3, merged halos)
    assert score_labels(labs, [rep.decode(o, {"prob_thresh": 0.6}).labels for o in outs]) == 1.0
    assert score_labels(labs, [rep.decode(o, {"prob_thresh": 0.5}).labels for o in outs]) < 1.0
    res = tune_params(rep, outs, labs, space={"prob_thresh": (0.05, 0.95, 7)})
    assert 0.55 <= res.params["prob_thresh"] < 0.8
    assert res.score == 1.0
    assert len(res.table) >= 7
    # a coarse grid that misses the interval is rescued by the refinement
    res = tune_params(rep, outs, labs, space={"prob_thresh": (0.1, 0.9, 3)})  # grid 0.1, 0.5, 0.9
    assert 0.55 <= res.params["prob_thresh"] < 0.8 and res.score == 1.0


def test_two_parameters():
    """Distractors brighter than the cells: only min_size removes them (cells have 64 px, distractors 9)."""
    rep = ThresholdRep()
    scenes = [_scene(s, 0.9, distractor_size=3) for s in range(3)]
    outs, labs = [o for o, _ in scenes], [lab for _, lab in scenes]
    res = tune_params(rep, outs, labs, space={"prob_thresh": (0.1, 0.9, 9), "min_size": (0, 100, 6)})
    assert res.score == 1.0
    assert 0.3 <= res.params["prob_thresh"] < 0.8
    assert 9 < res.params["min_size"] <= 64
    # the other decode parameters come from ``base``
    res = tune_params(rep, outs, labs, space={"prob_thresh": (0.1, 0.9, 9)}, base={"min_size": 20})
    assert res.params["min_size"] == 20 and res.score == 1.0


def test_seg_metric_and_errors():
    rep = ThresholdRep()
    o, lab = _scene(0, 0.55)
    res = tune_params(rep, [o], [lab], metric="seg", space={"prob_thresh": (0.1, 0.9, 5)})
    assert res.score == pytest.approx(1.0) and 0.3 <= res.params["prob_thresh"] < 0.8
    with pytest.raises(ValueError, match="no decode parameter"):
        tune_params(rep, [o], [lab], space={"nms_thresh": (0.1, 0.9)})
    with pytest.raises(ValueError, match="no default"):
        tune_params(rep, [o], [lab])
    with pytest.raises(ValueError, match="metric"):
        tune_params(rep, [o], [lab], metric="f2", space={"prob_thresh": (0.1, 0.9)})
    with pytest.raises(ValueError, match="at least one"):
        tune_params(rep, [], [], space={"prob_thresh": (0.1, 0.9)})


@pytest.mark.parametrize("rep_name", sorted(TUNABLE))
def test_default_spaces_match_params(rep_name):
    from cellseg import representations

    try:
        rep = representations.get(rep_name)
    except ImportError:
        pytest.skip(f"representation {rep_name} not available")
    import dataclasses

    fields = {f.name for f in dataclasses.fields(rep.Params)}
    assert set(TUNABLE[rep_name]) <= fields


def test_distance_oracle_outputs_tune_to_perfect():
    """Real decoder: from oracle outputs the tuner reaches (near) perfect mAP and beats a bad start."""
    from cellseg.datasets.synthetic import synthetic_cells
    from cellseg.representations import get

    rep = get("distance")
    labs = [synthetic_cells((64, 64), n_cells=8, seed=s)[1] for s in range(2)]
    outs = [rep.oracle_outputs(lab) for lab in labs]
    bad = score_labels(labs, [rep.decode(o, {"fg_thresh": 0.01, "marker_thresh": 0.95 - 1e-3}).labels for o in outs])
    res = tune_params(rep, outs, labs)
    assert res.score > 0.9 and res.score > bad


def test_time_limit_truncates():
    rep = ThresholdRep()
    o, lab = _scene(0, 0.55)
    res = tune_params(rep, [o], [lab], space={"prob_thresh": (0.1, 0.9, 9)}, time_limit=0.0)
    assert res.truncated and len(res.table) == 1
    assert res.params["prob_thresh"] == 0.9  # the coarse grid starts at the highest threshold
