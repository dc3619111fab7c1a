"""Decoder input validation shared by every representation (base.check_outputs)."""
from __future__ import annotations

import numpy as np
import pytest

from cellseg.representations import base
from cellseg.representations.flows import Flows
from cellseg.representations.stardist import StarDist


def _stardist_outputs():
    lab = np.zeros((32, 32), np.int32)
    lab[4:14, 4:14] = 1
    lab[18:28, 16:30] = 2
    return StarDist(8).oracle_outputs(lab)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("head", ["prob", "dist"])
def test_non_finite_outputs_are_refused(head, bad):
    out = _stardist_outputs()
    out[head] = out[head].copy()
    # prob anywhere (here a background pixel); dist where it is read (a candidate pixel)
    out[head][(0, 1, 5) if head == "prob" else (3, 8, 8)] = bad
    with pytest.raises(ValueError, match=f"head '{head}' contains NaN or infinite values"):
        StarDist(8).decode(out)


def test_distances_are_checked_at_the_candidates_only():
    out = _stardist_outputs()
    ref = StarDist(8).decode(out)
    out["dist"] = out["dist"].copy()
    out["dist"][:, 1, 5] = np.nan  # background: never a candidate, never read
    out["dist"][:, 20, 2] = -1.0
    got = StarDist(8).decode(out)
    np.testing.assert_array_equal(got.labels, ref.labels)
    out["dist"][0, 22, 22] = np.nan  # inside object 2 (prob > 0.5): a candidate
    with pytest.raises(ValueError, match="head 'dist' contains NaN or infinite values at candidate pixels"):
        StarDist(8).decode(out)


def test_negative_distances_are_refused_only_where_it_matters():
    out = _stardist_outputs()
    assert StarDist(8).decode(out).n_objects == 2
    out["dist"] = out["dist"].copy()
    out["dist"][3, 20, 20] = -1e-3
    with pytest.raises(ValueError, match="head 'dist' has negative values at candidate pixels"):
        StarDist(8).decode(out)
    # flows may be negative: no such rule there
    lab = np.zeros((32, 32), np.int32)
    lab[4:14, 4:14] = 1
    assert Flows().decode(Flows().oracle_outputs(lab)).n_objects == 1


def test_check_outputs_returns_float32_contiguous():
    heads = StarDist(8).heads()
    out = {k: np.asfortranarray(v.astype(np.float64)) for k, v in _stardist_outputs().items()}
    got = base.check_outputs(out, heads, ndim=2)
    for k, v in got.items():
        assert v.dtype == np.float32 and v.flags.c_contiguous
        np.testing.assert_array_equal(v, out[k])


def test_make_params_checks_types_naming_the_parameter():
    # issue 14, item 13: a bad value is refused at the boundary, naming the parameter
    from cellseg.representations.base import make_params
    from cellseg.representations.distance import DistanceParams
    from cellseg.representations.flows import FlowsParams

    with pytest.raises(TypeError, match="min_size must be an integer, got 'x'"):
        make_params(DistanceParams, {"min_size": "x"})
    with pytest.raises(TypeError, match="min_size must be an integer, got 2.5"):
        make_params(DistanceParams, min_size=2.5)
    with pytest.raises(TypeError, match="h must be a number, got True"):
        make_params(DistanceParams, h=True)
    assert make_params(DistanceParams, {"min_size": 12.0, "h": 1}).min_size == 12  # JSON numbers are fine
    assert make_params(FlowsParams, {"dist_thresh": None}).dist_thresh is None
