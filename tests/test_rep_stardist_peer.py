"""Parity with the ``stardist`` package (skipped when it is not installed)."""
from __future__ import annotations

import numpy as np
import pytest

from cellseg.representations import stardist as S
from tests.test_rep_stardist import INT_DTYPES, random_labels

pytestmark = pytest.mark.peer

sd_geometry = pytest.importorskip("stardist.geometry")
sd_nms = pytest.importorskip("stardist.nms")
sd_utils = pytest.importorskip("stardist.utils")


def _synthetic(shape=(256, 256), n=60, seed=2):
    from cellseg.datasets.synthetic import synthetic_cells

    return synthetic_cells(shape, n_cells=n, seed=seed)[1]


@pytest.mark.parametrize("grid", [(1, 1), (2, 2), (1, 3)])
def test_star_dist_equals_stardist(grid):
    lab = _synthetic()
    ours = S.star_dist(lab, 32, grid).transpose(1, 2, 0)
    theirs = sd_geometry.star_dist(lab, 32, grid=grid)
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-3)
    assert np.abs(ours - theirs).max() <= 1e-6  # in practice identical float32 arithmetic


@pytest.mark.parametrize("dtype", INT_DTYPES)
def test_star_dist_and_edt_prob_equal_stardist_every_dtype(dtype):
    lab = random_labels((40, 37), 9, 8, max_id=120).astype(dtype)
    np.testing.assert_allclose(S.star_dist(lab, 16).transpose(1, 2, 0), sd_geometry.star_dist(lab, 16),
                               rtol=0, atol=1e-3)
    np.testing.assert_allclose(S.edt_prob(lab), sd_utils.edt_prob(lab), rtol=0, atol=1e-6)


def test_edt_prob_equals_stardist_synthetic():
    lab = _synthetic()
    np.testing.assert_allclose(S.edt_prob(lab), sd_utils.edt_prob(lab), rtol=0, atol=1e-6)


def test_dist_to_coord_and_polygons_to_label_equal_stardist():
    rng = np.random.default_rng(0)
    n = 60
    dist = (rng.uniform(0, 12, (n, 32)) * rng.uniform(0.3, 1, (n, 1))).astype(np.float32)
    pts = rng.integers(-5, 130, (n, 2))
    prob = rng.random(n).astype(np.float32)
    np.testing.assert_array_equal(S.dist_to_coord(dist, pts), sd_geometry.dist_to_coord(dist, pts))
    coords = S.dist_to_coord(dist, pts)
    np.testing.assert_array_equal(S.polygons_to_label(coords, (120, 128), prob),
                                  sd_geometry.polygons_to_label(dist, pts, (120, 128), prob=prob))


def _noisy_oracle(lab, noise, seed):
    rep = S.StarDist(32)
    o = rep.oracle_outputs(lab)
    rng = np.random.default_rng(seed)
    inside = lab > 0
    prob = np.clip(o["prob"] + rng.normal(0, noise, o["prob"].shape) * inside, 0, 1).astype(np.float32)
    dist = (o["dist"] * (1 + rng.normal(0, noise, o["dist"].shape))).clip(0).astype(np.float32)
    return prob[0], dist


@pytest.mark.parametrize("noise", [0.0, 0.05, 0.15])
@pytest.mark.parametrize("thresh", [0.3, 0.4, 0.5])
def test_nms_kept_set_equals_stardist(noise, thresh):
    lab = _synthetic((192, 192), 35, 4)
    prob, dist = _noisy_oracle(lab, noise, 1)
    pts, sc, d = S.candidates(prob, dist, 0.5, 2)
    assert len(sc) > 500
    coords = S.dist_to_coord(d, pts)
    keep, _ = S._nms_coords(coords, pts, thresh, "min")
    theirs = sd_nms.non_maximum_suppression_inds(d, pts.astype(np.int32), scores=sc, thresh=thresh, verbose=0)
    np.testing.assert_array_equal(keep, theirs)
    # the public wrapper (its own stable sort) keeps the same set
    kept = S.non_maximum_suppression(d, sc, pts, thresh)
    np.testing.assert_array_equal(np.sort(kept), np.flatnonzero(theirs))


def test_decode_ap_equals_stardist_pipeline():
    from cellseg.metrics import matching

    lab = _synthetic((256, 256), 60, 6)
    prob, dist = _noisy_oracle(lab, 0.05, 2)
    rep = S.StarDist(32)
    ours = rep.decode({"prob": prob[None], "dist": dist}).labels
    pts, probi, disti = sd_nms.non_maximum_suppression(np.ascontiguousarray(dist.transpose(1, 2, 0)), prob,
                                                       b=2, nms_thresh=0.4, prob_thresh=0.5)
    theirs = sd_geometry.polygons_to_label(disti, pts, prob=probi, shape=lab.shape)
    for t in (0.5, 0.75):
        a, b = matching(lab, ours, thresh=t).accuracy, matching(lab, theirs, thresh=t).accuracy
        assert abs(a - b) <= 0.005, (t, a, b)
    assert matching(lab, ours, thresh=0.5).accuracy >= 0.95


@pytest.mark.data
def test_real_dsb_parity(dsb2018):
    import tifffile

    f = sorted((dsb2018 / "masks").glob("*.tif"))[0]
    lab = tifffile.imread(str(f)).astype(np.int32)
    np.testing.assert_allclose(S.star_dist(lab, 32).transpose(1, 2, 0), sd_geometry.star_dist(lab, 32),
                               rtol=0, atol=1e-3)
    rep = S.StarDist(32)
    o = rep.oracle_outputs(lab)
    pts, sc, d = S.candidates(o["prob"][0], o["dist"], 0.5, 2)
    keep, _ = S._nms_coords(S.dist_to_coord(d, pts), pts, 0.4, "min")
    theirs = sd_nms.non_maximum_suppression_inds(d, pts.astype(np.int32), scores=sc, thresh=0.4, verbose=0)
    np.testing.assert_array_equal(keep, theirs)
