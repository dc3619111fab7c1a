"""StarDist 3D parity with the ``stardist`` package (skipped when it is not installed)."""
from __future__ import annotations

import numpy as np
import pytest

from cellseg.datasets.synthetic import synthetic_cells_3d
from cellseg.representations import stardist3d as S3

pytestmark = pytest.mark.peer

sd = pytest.importorskip("stardist")
sd_geometry = pytest.importorskip("stardist.geometry")
sd_nms = pytest.importorskip("stardist.nms")
sd_utils = pytest.importorskip("stardist.utils")


def _nuclei(aniso, shape=(16, 64, 64), seed=3):
    return synthetic_cells_3d(shape, radius=(6, 10), anisotropy=aniso, seed=seed)[1]


@pytest.mark.parametrize("n_rays,aniso", [(32, 1.0), (96, 1.0), (64, 2.5)])
def test_rays_equal_golden_spiral(n_rays, aniso):
    rays, faces = S3.rays_golden_spiral(n_rays, aniso)
    theirs = sd.Rays_GoldenSpiral(n_rays, anisotropy=None if aniso == 1 else (aniso, 1, 1))
    np.testing.assert_array_equal(rays, theirs.vertices)
    np.testing.assert_array_equal(faces, theirs.faces)


@pytest.mark.parametrize("aniso,grid", [(1.0, (1, 1, 1)), (2.0, (1, 2, 2)), (3.0, (2, 1, 4))])
def test_star_dist3d_and_edt_prob_equal_stardist(aniso, grid):
    lab = _nuclei(aniso)
    rays, _ = S3.rays_golden_spiral(48, aniso)
    theirs = sd_geometry.star_dist3D(lab, sd.Rays_GoldenSpiral(48, anisotropy=(aniso, 1, 1)), grid=grid)
    ours = S3.star_dist3d(lab, rays, grid).transpose(1, 2, 3, 0)
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)
    ss = tuple(slice(None, None, g) for g in grid)
    np.testing.assert_allclose(S3.edt_prob3d(lab, aniso, grid), sd_utils.edt_prob(lab, (aniso, 1, 1))[ss],
                               rtol=0, atol=1e-5)


def _outputs(aniso, noise, seed):
    """Oracle outputs of synthetic nuclei (distinct scores); ``noise``: relative noise on the
    distances and absolute noise on the probabilities (a messier NMS)."""
    rng = np.random.default_rng(seed)
    lab = _nuclei(aniso, shape=(max(12, int(32 / aniso)), 48, 48), seed=seed)
    rep = S3.StarDist3D(n_rays=48, anisotropy=aniso)
    o = rep.oracle_outputs(lab)
    prob = o["prob"][0]
    dist = o["dist"]
    if noise:
        prob = prob + rng.normal(0, noise, prob.shape).astype(np.float32)
        dist = dist * rng.lognormal(0, noise, dist.shape).astype(np.float32)
    fg = lab > 0
    # distinct scores (StarDist breaks ties in its own order): the foreground values are
    # replaced by their ranks, spread evenly over (0, 1), in the same order
    v = prob[fg].astype(np.float64) + rng.uniform(0, 1e-9, int(fg.sum()))
    rank = np.empty(v.size)
    rank[np.argsort(v, kind="stable")] = np.arange(v.size)
    prob = np.zeros(lab.shape, np.float32)
    prob[fg] = ((rank + 1) / (v.size + 1)).astype(np.float32)
    assert len(np.unique(prob[fg])) == fg.sum()
    return rep, lab, prob, np.maximum(dist, np.float32(S3.MIN_DIST))


@pytest.mark.parametrize("aniso,noise,seed,nms_thresh", [(1.0, 0.0, 3, 0.4), (2.0, 0.0, 4, 0.4),
                                                         (3.0, 0.15, 5, 0.3), (1.0, 0.15, 6, 0.1)])
def test_nms_and_labels_equal_stardist(aniso, noise, seed, nms_thresh):
    rep, lab, prob, dist = _outputs(aniso, noise, seed)
    rays, faces = rep.rays
    pts, sc, d = S3.candidates_3d(prob, dist, 0.7, 2)
    keep, _ = S3._nms_sorted(d, pts.astype(np.float32), rays, faces, nms_thresh)
    t_pts, t_prob, t_dist = sd_nms.non_maximum_suppression_3d(
        dist.transpose(1, 2, 3, 0), prob, sd.Rays_GoldenSpiral(48, anisotropy=(aniso, 1, 1)),
        nms_thresh=nms_thresh, prob_thresh=0.7, b=2)
    assert len(t_pts) > 3
    assert sorted(map(tuple, pts[keep].tolist())) == sorted(map(tuple, t_pts.tolist()))

    # rasterisation: StarDist's Qhull convex-hull pre-filter drops a few voxels that lie
    # exactly on the hull (its own tetrahedron test counts them in); every other voxel agrees
    ours = S3.polyhedra_to_label(d[keep], pts[keep], rays, faces, lab.shape, sc[keep])
    theirs = sd_geometry.polyhedron_to_label(t_dist, t_pts, sd.Rays_GoldenSpiral(48, anisotropy=(aniso, 1, 1)),
                                             lab.shape, prob=t_prob, verbose=False)
    # ids: both number the kept polyhedra by decreasing score
    diff = ours != theirs
    assert diff.sum() <= 0.005 * (ours > 0).sum()
    assert np.all(theirs[diff] == 0)
    for z, y, x in np.argwhere(diff):
        i = ours[z, y, x] - 1
        c = pts[keep][i].astype(np.float32)
        pv = (c[None] + d[keep][i][:, None] * rays).astype(np.float32)
        on_vertex_plane = any(_float32_tetra(np.float32([z, y, x]), c, pv[f]) for f in faces)
        assert on_vertex_plane


def _float32_tetra(p, c, abc):
    """StarDist's ``inside_tetrahedron`` in float32."""
    def hs(A, B, C):
        m0, m1, m2 = B - A, C - A, p - A
        det = (m0[0] * (m1[1] * m2[2] - m2[1] * m1[2]) - m0[1] * (m1[0] * m2[2] - m1[2] * m2[0])
               + m0[2] * (m1[0] * m2[1] - m1[1] * m2[0]))
        return det >= 0
    a, b, cc = abc
    return hs(a, b, cc) and hs(c, b, a) and hs(c, cc, b) and hs(c, a, cc)
