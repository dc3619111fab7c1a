"""StarDist 3D: kernels against their reference twins, thresholds, round trip, API."""
from __future__ import annotations

import numpy as np
import pytest

from cellseg.datasets.synthetic import synthetic_cells_3d
from cellseg.metrics import matching
from cellseg.representations import get
from cellseg.representations import stardist3d as S3
from cellseg.representations.stardist import StarDist
from tests.reference import ref_stardist3d as ref

INT_DTYPES = [np.uint8, np.int8, np.uint16, np.int16, np.int32, np.uint32, np.int64, np.uint64]


def ellipsoids(shape=(12, 20, 20), n=4, seed=0, touching=True):
    """Random ellipsoids (later ones do not overwrite earlier ones)."""
    rng = np.random.default_rng(seed)
    lab = np.zeros(shape, np.int32)
    zz, yy, xx = np.mgrid[: shape[0], : shape[1], : shape[2]]
    for i in range(1, n + 1):
        c = rng.uniform(0, shape)
        ax = rng.uniform(2, 5, 3)
        m = ((zz - c[0]) / ax[0]) ** 2 + ((yy - c[1]) / ax[1]) ** 2 + ((xx - c[2]) / ax[2]) ** 2 <= 1
        lab[m & ((lab == 0) if touching else True)] = i
    return lab


# ----------------------------------------------------------------------------- rays


@pytest.mark.parametrize("n_rays,aniso", [(4, 1.0), (32, 1.0), (96, 1.0), (64, 3.0)])
def test_golden_spiral_rays(n_rays, aniso):
    rays, faces = S3.rays_golden_spiral(n_rays, aniso)
    assert rays.shape == (n_rays, 3) and rays.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(rays, axis=1), 1, atol=1e-6)
    assert faces.shape == (2 * n_rays - 4, 3)  # a triangulated sphere: F = 2V - 4
    assert np.all(np.linalg.det(rays[faces].astype(np.float64)) <= 1e-7)  # StarDist's orientation
    assert rays[0, 0] == -1 and rays[-1, 0] == 1  # the poles are rays along Z
    if aniso > 1:
        iso, _ = S3.rays_golden_spiral(n_rays)
        # coarse Z: objects are flat in voxels, the rays lean towards the Y-X plane
        assert np.mean(np.abs(rays[:, 0])) < 0.75 * np.mean(np.abs(iso[:, 0]))


def test_unit_polyhedron_volume_approaches_the_sphere():
    rays, faces = S3.rays_golden_spiral(96)
    v = S3.polyhedra_volumes(np.full((1, 96), 10.0), rays, faces)[0]
    assert 0.9 * 4 / 3 * np.pi * 1000 < v < 4 / 3 * np.pi * 1000
    assert v == pytest.approx(ref.volume(np.full(96, 10.0), rays, faces), rel=1e-9)


# ----------------------------------------------------------------------------- targets


@pytest.mark.parametrize("grid", [(1, 1, 1), (2, 2, 2), (1, 2, 3)])
def test_star_dist3d_equals_reference(grid):
    lab = ellipsoids()
    rays, _ = S3.rays_golden_spiral(12, 2.0)
    np.testing.assert_array_equal(S3.star_dist3d(lab, rays, grid), ref.star_dist3d(lab, rays, grid))


@pytest.mark.parametrize("dtype", INT_DTYPES)
def test_star_dist3d_every_dtype_and_sparse_ids(dtype):
    lab = ellipsoids((8, 12, 12), 3, seed=1)
    lab[lab > 0] += 40  # non-sequential ids
    rays, _ = S3.rays_golden_spiral(8)
    ours = S3.star_dist3d(lab.astype(dtype), rays)
    np.testing.assert_array_equal(ours, ref.star_dist3d(lab, rays))
    assert np.all(ours[:, lab == 0] == 0) and np.all(ours[:, lab > 0] >= 1)


def test_star_dist3d_object_at_the_border_ends_at_the_border():
    lab = np.zeros((5, 5, 5), np.int32)
    lab[:, :, :] = 1  # one object filling the volume: every ray ends at the image border
    rays = np.array([[1, 0, 0], [0, -1, 0], [0, 0, 1], [-1, 0, 0]], np.float32)
    d = S3.star_dist3d(lab, rays)
    assert d[0, 1, 2, 2] == 4 and d[1, 1, 2, 2] == 3 and d[2, 1, 2, 2] == 3 and d[3, 1, 2, 2] == 2


def test_edt_prob3d_peaks_at_one_and_follows_the_anisotropy():
    lab = np.zeros((9, 21, 21), np.int32)
    lab[1:8, 3:18, 3:18] = 5
    p1 = S3.edt_prob3d(lab, 1.0)
    p3 = S3.edt_prob3d(lab, 3.0)
    assert p1.max() == pytest.approx(1.0) and np.all(p1[lab == 0] == 0)
    # with coarse Z the slab is thicker physically: the centre plane is flatter in Z
    assert p3[4, 10, 10] == pytest.approx(1.0) and p3[2, 10, 10] > p1[2, 10, 10]
    np.testing.assert_array_equal(S3.edt_prob3d(lab, 3.0, (2, 1, 3)), p3[::2, ::1, ::3])


def test_encode_shapes_and_grid():
    rep = get("stardist", ndim=3, n_rays=16, grid=(1, 2, 2), anisotropy=2.0)
    t = rep.encode(ellipsoids((9, 15, 16)))
    assert t["prob"].shape == (1, 9, 8, 8) and t["dist"].shape == (16, 9, 8, 8)
    assert t["prob"].dtype == np.float32 and t["dist"].dtype == np.float32


# ----------------------------------------------------------------------------- rasterisation


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_polyhedra_to_label_equals_reference(seed):
    rng = np.random.default_rng(seed)
    rays, faces = S3.rays_golden_spiral(20, 1.5)
    n = 5
    dist = rng.uniform(1.0, 5.0, (n, 20)).astype(np.float32)  # non-convex star polyhedra
    points = rng.integers(-2, [12, 18, 18], (n, 3)).astype(np.float32)  # some cut by the border
    prob = rng.permutation(n).astype(np.float32)
    ours = S3.polyhedra_to_label(dist, points, rays, faces, (10, 16, 16), prob)
    np.testing.assert_array_equal(ours, ref.polyhedra_to_label(dist, points, rays, faces, (10, 16, 16), prob))
    assert ours.dtype == np.int32 and len(np.unique(ours)) > 2


def test_polyhedra_to_label_voxels_on_a_face_are_inside():
    # an axis-aligned octahedron with integer vertices: voxels on its faces count
    rays = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], np.float32)
    from scipy.spatial import ConvexHull

    faces = np.array([f[::-1] if np.linalg.det(rays[f]) > 0 else f for f in ConvexHull(rays).simplices], np.int32)
    lab = S3.polyhedra_to_label(np.full((1, 6), 2.0), np.array([[3, 3, 3]]), rays, faces, (7, 7, 7))
    zz, yy, xx = np.mgrid[:7, :7, :7]
    np.testing.assert_array_equal(lab, (np.abs(zz - 3) + np.abs(yy - 3) + np.abs(xx - 3) <= 2).astype(np.int32))


def test_polyhedra_to_label_empty_and_bad_input():
    rays, faces = S3.rays_golden_spiral(8)
    assert not S3.polyhedra_to_label(np.zeros((0, 8)), np.zeros((0, 3)), rays, faces, (4, 5, 6)).any()
    with pytest.raises(ValueError):
        S3.polyhedra_to_label(np.full((1, 8), -1.0), np.zeros((1, 3)), rays, faces, (4, 5, 6))
    with pytest.raises(ValueError):
        S3.polyhedra_to_label(np.full((1, 7), 1.0), np.zeros((1, 3)), rays, faces, (4, 5, 6))


# ----------------------------------------------------------------------------- NMS


def _random_candidates(seed, n=30, n_rays=14, size=(8, 12, 12)):
    rng = np.random.default_rng(seed)
    rays, faces = S3.rays_golden_spiral(n_rays, 1.0 + seed % 3)
    dist = rng.uniform(1.5, 4.5, (n, n_rays)).astype(np.float32)
    points = rng.integers(0, size, (n, 3)).astype(np.float32)
    return dist, points, rays, faces


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("thresh", [0.1, 0.3, 0.5])
def test_nms_equals_reference(seed, thresh):
    dist, points, rays, faces = _random_candidates(seed)
    keep, n_counts = S3._nms_sorted(dist, points, rays, faces, thresh)
    np.testing.assert_array_equal(keep, ref.nms(dist, points, rays, faces, thresh))
    assert 0 < keep.sum() < len(keep) and n_counts > 0  # some pairs reach the voxel count


def test_nms_threshold_edges():
    """Two identical polyhedra overlap 1: suppressed below 1, both kept at 1; disjoint ones always kept."""
    rays, faces = S3.rays_golden_spiral(16)
    d = np.full((2, 16), 3.0, np.float32)
    same = np.array([[5, 5, 5], [5, 5, 5]], np.float32)
    assert S3._nms_sorted(d, same, rays, faces, 0.999)[0].tolist() == [True, False]
    assert S3._nms_sorted(d, same, rays, faces, 1.0)[0].tolist() == [True, True]
    far = np.array([[5, 5, 5], [5, 5, 12]], np.float32)  # 7 apart, radius 3: disjoint
    assert S3._nms_sorted(d, far, rays, faces, 0.0)[0].tolist() == [True, True]


def test_nms_decision_at_the_voxel_count():
    """A pair decided by the voxel count (not by the bounds): the threshold just below and at
    the overlap flips the decision."""
    rays, faces = S3.rays_golden_spiral(24)
    d = np.full((2, 24), 4.0, np.float32)
    pts = np.array([[8, 8, 8], [8, 8, 13]], np.float32)
    vol = S3.polyhedra_volumes(d, rays, faces)
    inter = len(ref.voxels(d[0], pts[0], rays, faces) & ref.voxels(d[1], pts[1], rays, faces))
    ov = inter / (vol.min() + 1e-10)
    assert 0 < ov < 1
    assert S3._nms_sorted(d, pts, rays, faces, ov - 1e-6)[0].tolist() == [True, False]
    assert S3._nms_sorted(d, pts, rays, faces, ov + 1e-6)[0].tolist() == [True, True]


def test_non_maximum_suppression_3d_sorts_by_score():
    dist, points, rays, faces = _random_candidates(5, n=25)
    prob = np.random.default_rng(5).permutation(25).astype(np.float32)
    kept = S3.non_maximum_suppression_3d(dist, prob, points, rays, faces, 0.3)
    order = np.argsort(-prob, kind="stable")
    keep = ref.nms(dist[order], points[order], rays, faces, 0.3)
    assert kept.tolist() == order[keep].tolist()
    with pytest.raises(ValueError):
        S3.non_maximum_suppression_3d(dist, prob, points, rays, faces, 1.5)


# ----------------------------------------------------------------------------- candidates


def test_candidates_threshold_border_grid_and_ties():
    prob = np.zeros((6, 7, 8), np.float32)
    prob[3, 3, 3] = 0.7
    prob[3, 3, 4] = 0.7  # tie: raster order
    prob[2, 4, 5] = np.float32(0.5)  # exactly at the threshold: not a candidate
    prob[0, 3, 3] = 0.9  # on the border
    dist = np.random.default_rng(0).uniform(1, 2, (5, 6, 7, 8)).astype(np.float32)
    pts, sc, d = S3.candidates_3d(prob, dist, 0.5, 1, grid=(2, 1, 3))
    assert pts.tolist() == [[6, 3, 9], [6, 3, 12]]
    np.testing.assert_array_equal(d, dist[:, 3, 3, 3:5].T)
    pts0, _, _ = S3.candidates_3d(prob, dist, 0.5, 0)
    assert pts0[0].tolist() == [0, 3, 3] and len(pts0) == 3


# ----------------------------------------------------------------------------- representation


def test_get_dispatches_to_3d_and_config_round_trips():
    rep = get("stardist", ndim=3, n_rays=32, grid=(1, 2, 2), anisotropy=2.5)
    assert isinstance(rep, S3.StarDist3D) and rep.ndim == 3 and rep.ndims == (3,)
    assert type(rep)(**rep.config()) == rep
    assert get("stardist", **rep.config()) == rep
    assert StarDist(ndim=3) == S3.StarDist3D()
    assert isinstance(get("stardist"), StarDist) and get("stardist").config() == {"n_rays": 32, "grid": (1, 1)}
    assert [h.name for h in rep.heads()] == ["prob", "dist"] and rep.heads()[1].channels == 32
    with pytest.raises(ValueError):
        StarDist(ndim=4)
    with pytest.raises(ValueError):
        S3.StarDist3D(anisotropy=0)
    with pytest.raises(ValueError):
        S3.StarDist3D(grid=(1, 2))
    with pytest.raises(TypeError):
        rep.params({"overlap": "iou"})


def test_channel_map_refuses_transforms_of_the_rays():
    rep = S3.StarDist3D(n_rays=16)
    src, sign = rep.channel_map("dist", (0, 1, 2), (False, False, False))
    assert src.tolist() == list(range(16))
    with pytest.raises(ValueError):
        rep.channel_map("dist", (0, 1, 2), (False, True, False))
    assert rep.channel_map("prob", (0, 2, 1), (True, False, False))[0].tolist() == [0]


def test_decode_rejects_bad_outputs():
    rep = S3.StarDist3D(n_rays=8)
    o = rep.oracle_outputs(ellipsoids((8, 12, 12), 2))
    bad = dict(o, dist=-o["dist"] - 1)
    with pytest.raises(ValueError, match="negative"):
        rep.decode(bad, {"border": 0})
    with pytest.raises(ValueError):
        rep.decode({"prob": o["prob"][:, 0], "dist": o["dist"][:, 0]})
    assert rep.decode({"prob": np.zeros_like(o["prob"]), "dist": o["dist"]}).n_objects == 0


@pytest.mark.parametrize("aniso,shape", [(1.0, (32, 64, 64)), (2.0, (16, 64, 64)), (3.0, (12, 64, 64)),
                                         (4.0, (10, 64, 64))])
def test_round_trip_synthetic_nuclei(aniso, shape):
    """decode(encode(labels)) finds the nuclei: AP@0.5 >= 0.95, isotropic and with coarse Z."""
    _, lab = synthetic_cells_3d(shape, radius=(6, 10), anisotropy=aniso, seed=3)
    rep = get("stardist", ndim=3, anisotropy=aniso)
    dec = rep.decode(rep.oracle_outputs(lab), {"border": 0})
    assert dec.labels.shape == lab.shape and dec.labels.dtype == np.int32
    m = matching(lab, dec.labels, thresh=0.5)
    assert m.n_true >= 5
    assert m.accuracy >= 0.95, m
    assert np.all(np.diff(dec.scores) <= 0) and dec.n_objects == dec.labels.max()


def test_round_trip_with_a_grid():
    _, lab = synthetic_cells_3d((16, 64, 64), radius=(7, 10), anisotropy=2.0, seed=4)
    rep = get("stardist", ndim=3, anisotropy=2.0, grid=(1, 2, 2))
    dec = rep.decode(rep.oracle_outputs(lab), {"border": 0}, shape=lab.shape)
    assert matching(lab, dec.labels, thresh=0.5).accuracy >= 0.9


def test_loss_and_a_tiny_3d_model_save_and_load(tmp_path):
    """The StarDist loss takes 3D batches; a 3D model with StarDist 3D heads is built, saved
    and loaded back as StarDist 3D."""
    torch = pytest.importorskip("torch")
    from cellseg.models.network import CellsegModel, make_config
    from cellseg.train.losses import representation_loss

    rep = get("stardist", ndim=3, n_rays=16, anisotropy=2.0)
    _, lab = synthetic_cells_3d((8, 24, 24), radius=(4, 6), anisotropy=2.0, seed=1)
    tg = {k: torch.from_numpy(v[None]) for k, v in rep.encode(lab).items()}
    p = tg["prob"].clamp(1e-4, 1 - 1e-4)
    d = tg["dist"].clamp_min(1e-3)
    perfect = {"prob": torch.log(p / (1 - p)), "dist": d + torch.log(-torch.expm1(-d))}
    rand = {k: torch.randn(v.shape, generator=torch.Generator().manual_seed(0), requires_grad=True)
            for k, v in tg.items()}
    fn = representation_loss(rep)
    l_perfect, parts = fn(perfect, tg)
    l_rand, _ = fn(rand, tg)
    assert parts["dist"] < 1e-3 and l_perfect < l_rand
    l_rand.backward()
    assert rand["dist"].grad.abs().sum() > 0
    cfg = make_config(rep, {"name": "unet", "ndim": 3, "depth": 2, "width": 4})
    model = CellsegModel(cfg, device="cpu")
    path = model.save(tmp_path / "m.pt")
    back = CellsegModel.load(path, device="cpu")
    assert back.representation == rep and isinstance(back.representation, S3.StarDist3D)


def test_nms_with_absurd_distances_counts_from_the_planes():
    """A kept polyhedron whose box is too large to hold as a mask (distances of a diverged
    network) still suppresses what lies inside it; a polyhedron beside the volume stays."""
    rays, faces = S3.rays_golden_spiral(16)
    d = np.concatenate([np.full((1, 16), 2000.0), np.full((2, 16), 3.0)]).astype(np.float32)
    pts = np.array([[5, 5, 5], [6, 6, 6], [5, 5, 4500]], np.float32)
    keep, n_counts = S3._nms_sorted(d, pts, rays, faces, 0.5)
    assert keep.tolist() == [True, False, True]
