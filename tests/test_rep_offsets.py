"""Offsets (spatial embeddings): medoid and clustering kernels against their
reference twins, thresholds, encode/oracle, round trips."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from cellseg.metrics import matching
from cellseg.representations import get
from cellseg.representations.offsets import (
    Offsets,
    OffsetsParams,
    medoids,
    radius_for_sigma,
    sigma_for_radius,
)
from tests.reference.ref_offsets import cluster_ref, medoid_ref

INT_DTYPES = [np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.uint64, np.int64]


def _check_medoids(lab, aniso=1.0):
    ids, coords = medoids(lab, aniso)
    rids, rcoords, rsums, all_sums = medoid_ref(lab, aniso)
    np.testing.assert_array_equal(ids, rids)
    for k, (pts, s) in enumerate(all_sums):
        j = np.flatnonzero((pts == coords[k]).all(1))
        assert j.size == 1, "medoid must be a pixel of its object"
        # a true minimiser (up to rounding of the sums) ...
        assert s[j[0]] <= s.min() * (1 + 1e-12) + 1e-9
        # ... and the very same pixel whenever the minimum is unique
        if np.sort(s)[1:2].size == 0 or np.sort(s)[1] > s.min() * (1 + 1e-9) + 1e-9:
            np.testing.assert_array_equal(coords[k], rcoords[k])


# ---------------------------------------------------------------- medoid


@pytest.mark.parametrize("seed", range(4))
def test_medoid_matches_brute_force_random(seed):
    rng = np.random.default_rng(seed)
    for t in range(25):
        if t % 2:
            shape = tuple(rng.integers(1, 30, size=2))
            aniso = 1.0
        else:
            shape = tuple(rng.integers(1, 9, size=3))
            aniso = float(rng.choice([1.0, 2.0, 0.7]))
        lab = rng.integers(0, 4, size=shape)  # scattered, non-convex, disconnected objects
        if t % 3 == 0:
            lab = (ndi.gaussian_filter(rng.random(shape), 2) > 0.5) * 3
        _check_medoids(lab, aniso)


def test_medoid_large_and_nonconvex_objects():
    # objects above the all-pairs size limit take the bounded search
    yy, xx = np.mgrid[:60, :70]
    lab = np.zeros((60, 70), np.int32)
    lab[((yy - 30) ** 2 + (xx - 20) ** 2 < 15 ** 2)] = 4  # disc, symmetric (ties)
    ring = ((yy - 30) ** 2 + (xx - 52) ** 2 < 16 ** 2) & ((yy - 30) ** 2 + (xx - 52) ** 2 > 9 ** 2)
    lab[ring & (xx < 60)] = 9  # C shape: centroid and geometric median off the object
    lab[2:5, 30:68] = 2  # thin bar
    _check_medoids(lab)
    rng = np.random.default_rng(5)
    blob = ndi.gaussian_filter(rng.random((12, 40, 40)), 3) > 0.5
    _check_medoids(ndi.label(blob)[0], 2.0)


@pytest.mark.parametrize("dtype", INT_DTYPES)
def test_medoid_dtypes_sparse_ids_edge_cases(dtype):
    hi = min(np.iinfo(dtype).max, 2**31 - 1)
    lab = np.zeros((9, 12), dtype)
    lab[0:3, 0:4] = hi  # border object
    lab[5, 7] = 7  # single pixel
    lab[4:9, 9:12] = hi // 2
    ids, coords = medoids(lab)
    assert ids.tolist() == sorted({hi, 7, hi // 2})
    _check_medoids(lab)
    assert coords[ids.tolist().index(7)].tolist() == [5, 7]
    # empty
    ids, coords = medoids(np.zeros((4, 4), dtype))
    assert ids.size == 0 and coords.shape == (0, 2)


# ---------------------------------------------------------------- clustering


def _random_outputs(rng, shape, n_centres=4, noise=0.004):
    """Embeddings scattered around a few centres + random sigma and seeds."""
    nd = len(shape)
    rep = Offsets(nd, anisotropy=1.0 if nd == 2 else 2.0)
    u = rep.grid(shape).astype(np.float64)
    centres = rng.random((n_centres, nd)) * np.array(shape) * rep.spacing / rep.scale
    owner = rng.integers(0, n_centres, size=shape)
    target = np.moveaxis(centres[owner], -1, 0)
    off = (target - u + noise * rng.standard_normal(u.shape)).astype(np.float32)
    sigma = (sigma_for_radius(rng.uniform(2, 12, size=(nd, *shape))) ).astype(np.float32)
    seed = rng.random((1, *shape)).astype(np.float32)
    return rep, {"offset": off, "sigma": sigma, "seed": seed}


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("nd", [2, 3])
def test_cluster_matches_reference_loop(seed, nd):
    rng = np.random.default_rng(seed)
    shape = (40, 44) if nd == 2 else (6, 20, 18)
    rep, out = _random_outputs(rng, shape)
    for kw in [dict(), dict(min_size=0, seed_thresh=0.2, fg_thresh=0.1),
               dict(min_size=25, new_fraction=0.8, min_unclustered_sum=50),
               dict(min_mask_sum=10**6)]:
        p = rep.params(kw)
        d = rep.decode(out, p)
        ref, scores = cluster_ref(rep, out, p)
        np.testing.assert_array_equal(d.labels, ref)
        np.testing.assert_allclose(d.scores, scores, rtol=1e-6)
        assert d.labels.dtype == np.int32 and d.scores.dtype == np.float32
        # seeds lie on their objects and carry the reported scores
        for i, (s, sc) in enumerate(zip(d.extra["seeds"], d.scores), start=1):
            assert out["seed"][0][tuple(s)] == sc


def test_cluster_spread_embeddings_use_a_coarser_grid():
    # offsets of random sign and size spread embeddings over +-1 (1024 px)
    rng = np.random.default_rng(11)
    rep = Offsets()
    shape = (30, 30)
    out = {"offset": rng.uniform(-0.99, 0.99, size=(2, *shape)).astype(np.float32),
           "sigma": np.full((2, *shape), sigma_for_radius(200.0), np.float32),
           "seed": rng.random((1, *shape)).astype(np.float32)}
    p = rep.params(min_size=1)
    d = rep.decode(out, p)
    np.testing.assert_array_equal(d.labels, cluster_ref(rep, out, p)[0])
    assert d.n_objects > 1


def _two_blobs():
    """Two 3x3 objects with perfect embeddings, the second with seed 0.7."""
    rep = Offsets()
    lab = np.zeros((12, 12), np.int32)
    lab[1:4, 1:4] = 1
    lab[7:10, 6:9] = 2
    out = rep.oracle_outputs(lab)
    out["seed"][0][lab == 2] = 0.7
    return rep, lab, out


def test_cluster_thresholds():
    rep, lab, out = _two_blobs()
    # seed exactly at seed_thresh is a seed (>=); just above it is not
    assert rep.decode(out, dict(seed_thresh=0.7, min_size=1)).n_objects == 2
    assert rep.decode(out, dict(seed_thresh=np.nextafter(np.float32(0.7), 1), min_size=1)).n_objects == 1
    # seed exactly at fg_thresh is not foreground (>)
    assert rep.decode(out, dict(fg_thresh=np.float32(0.7), seed_thresh=0.1, min_size=1)).n_objects == 1
    # object of exactly min_size pixels is kept, min_size + 1 drops it
    assert rep.decode(out, dict(min_size=9)).n_objects == 2
    assert rep.decode(out, dict(min_size=10)).n_objects == 0
    # min_unclustered_sum: after the first object, 9 pixels remain unclustered
    assert rep.decode(out, dict(min_size=1, min_unclustered_sum=8)).n_objects == 2
    assert rep.decode(out, dict(min_size=1, min_unclustered_sum=9)).n_objects == 1
    # min_mask_sum: 18 foreground pixels
    assert rep.decode(out, dict(min_size=1, min_mask_sum=17)).n_objects == 2
    assert rep.decode(out, dict(min_size=1, min_mask_sum=18)).n_objects == 0
    # scores: seed score of each object's seed, objects in seed order
    d = rep.decode(out, dict(min_size=1))
    np.testing.assert_allclose(d.scores, [out["seed"][0][lab == 1].max(), 0.7], rtol=1e-6)
    assert (d.labels == lab).all()


def test_cluster_new_fraction_and_no_overwrite():
    # A (seeded first) has a narrow margin; B's wide Gaussian also reaches A's
    # (already clustered) embeddings: B's proposal is 16 new + 16 old pixels
    rep = Offsets()
    lab = np.zeros((10, 20), np.int32)
    lab[2:6, 2:6] = 1  # 16 px
    lab[2:6, 12:16] = 2  # 16 px, centres 10 px apart
    out = rep.oracle_outputs(lab)
    out["sigma"][:, lab == 1] = sigma_for_radius(3.0)
    out["sigma"][:, lab == 2] = sigma_for_radius(30.0)
    out["seed"][0][lab == 2] = 0.9
    # exactly half of B's proposal is new: rejected (strict >), accepted below 0.5
    d = rep.decode(out, dict(min_size=1, new_fraction=0.5))
    assert d.n_objects == 1 and (d.labels == (lab == 1)).all()
    d = rep.decode(out, dict(min_size=1, new_fraction=0.49))
    # accepted B takes only its new pixels: A is not overwritten
    assert d.n_objects == 2 and (d.labels == lab).all()
    for kw in (dict(min_size=1, new_fraction=0.5), dict(min_size=1, new_fraction=0.49)):
        np.testing.assert_array_equal(rep.decode(out, kw).labels, cluster_ref(rep, out, rep.params(kw))[0])
    # B seeded first with its wide margin swallows A
    out["seed"][0][lab == 2] = 1.0
    out["seed"][0][lab == 1] = 0.9
    d = rep.decode(out, dict(min_size=1))
    assert d.n_objects == 1 and (d.labels > 0).sum() == 32


def test_cluster_empty_and_validation():
    rep = Offsets()
    z = {"offset": np.zeros((2, 6, 6), np.float32), "sigma": np.zeros((2, 6, 6), np.float32),
         "seed": np.zeros((1, 6, 6), np.float32)}
    d = rep.decode(z)
    assert d.n_objects == 0 and d.labels.shape == (6, 6) and d.extra["seeds"].shape == (0, 2)
    with pytest.raises(KeyError):
        rep.decode({"offset": z["offset"], "seed": z["seed"]})
    with pytest.raises(ValueError):
        rep.decode({**z, "offset": np.zeros((3, 6, 6), np.float32)})
    with pytest.raises(ValueError):
        rep.decode({**z, "seed": np.full((1, 6, 6), np.nan, np.float32)})
    with pytest.raises(TypeError, match="unknown"):
        rep.decode(z, dict(seed_treshold=0.5))
    with pytest.raises(ValueError):
        OffsetsParams(min_size=-1)
    with pytest.raises(ValueError):
        OffsetsParams(new_fraction=1.0)


# ---------------------------------------------------------------- representation


def test_config_heads_registry():
    rep = get("offsets", ndim=3, anisotropy=2.0, scale=512.0)
    assert isinstance(rep, Offsets) and type(rep)(**rep.config()) == rep
    assert [(h.name, h.channels, h.activation) for h in rep.heads()] == [
        ("offset", 3, "tanh"), ("sigma", 3, "identity"), ("seed", 1, "sigmoid")]
    with pytest.raises(ValueError):
        Offsets(ndim=2, anisotropy=2.0)
    with pytest.raises(ValueError):
        Offsets(scale=0)
    np.testing.assert_allclose(radius_for_sigma(sigma_for_radius(7.5)), 7.5)
    # the Gaussian is 0.5 at the radius
    s = sigma_for_radius(5.0)
    assert np.exp(-np.exp(10 * s) * (5.0 / 1024) ** 2) == pytest.approx(0.5)


def test_encode_targets_against_brute_force_medoids():
    rng = np.random.default_rng(2)
    lab = (ndi.label(ndi.gaussian_filter(rng.random((30, 36)), 2) > 0.5)[0] * 5).astype(np.uint16)
    rep = Offsets()
    t = rep.encode(lab)
    assert set(t) == {"offset", "instance", "center"}
    assert t["offset"].shape == (2, 30, 36) and all(v.dtype == np.float32 for v in t.values())
    ids, coords, _, _ = medoid_ref(lab)
    u = rep.grid(lab.shape)
    for i, c in zip(ids, coords):
        m = lab == i
        # u + offset is the medoid everywhere on the object
        e = (u + t["offset"])[:, m] * rep.scale
        np.testing.assert_allclose(e, np.repeat(c[:, None], m.sum(), 1), atol=1e-3)
        assert t["center"][0][m].sum() == 1 and t["center"][0][tuple(c)] == 1
    assert (t["offset"][:, lab == 0] == 0).all()
    np.testing.assert_array_equal(t["instance"][0], np.searchsorted(np.unique(lab), lab))
    # 3D: the Z offset is in physical (anisotropic) units
    lab3 = np.zeros((5, 6, 6), np.int32)
    lab3[0:5, 2, 2] = 1
    rep3 = Offsets(3, anisotropy=2.0)
    t3 = rep3.encode(lab3)
    np.testing.assert_allclose(t3["offset"][0, 0:5, 2, 2] * 1024, [4, 2, 0, -2, -4], atol=1e-3)
    with pytest.raises(ValueError, match="scale"):
        Offsets(scale=8.0).encode(np.pad(np.ones((3, 30), np.int32), 1))


def test_oracle_outputs():
    rep, lab, out = _two_blobs()
    o = rep.oracle_outputs(lab)
    assert set(o) == {"offset", "sigma", "seed"}
    assert (o["seed"][0][lab > 0] > 0.999).all() and (o["seed"][0][lab == 0] == 0).all()
    r = radius_for_sigma(o["sigma"][:, lab == 1])
    np.testing.assert_allclose(r, np.sqrt(9 / np.pi), rtol=1e-5)


def _noisy(rep, lab, rng, px=1.0):
    """Oracle with offsets perturbed by ``px`` pixels (rms per axis) and the seed
    recomputed as the Gaussian score of the perturbed embedding."""
    o = rep.oracle_outputs(lab)
    off = o["offset"] + (px / rep.scale) * rng.standard_normal(o["offset"].shape).astype(np.float32)
    off[:, lab == 0] = 0
    t = rep.encode(lab)
    u = rep.grid(lab.shape)
    centre = u + t["offset"]
    margin = np.exp(10 * o["sigma"].astype(np.float64))
    seed = np.exp(-(margin * (u + off - centre) ** 2).sum(0))
    seed[lab == 0] = 0
    return {"offset": off, "sigma": o["sigma"], "seed": seed[None].astype(np.float32)}


def test_round_trip_synthetic_2d():
    from cellseg.datasets.synthetic import synthetic_cells

    rep = Offsets()
    rng = np.random.default_rng(0)
    for seed in range(2):
        _, lab = synthetic_cells((256, 256), n_cells=60, seed=seed)
        assert matching(lab, rep.decode(rep.oracle_outputs(lab)).labels, thresh=0.5).accuracy == 1.0
        # offsets off by ~1 px still decode every cell
        assert matching(lab, rep.decode(_noisy(rep, lab, rng, 1.0)).labels, thresh=0.5).accuracy == 1.0


def test_round_trip_synthetic_3d():
    from cellseg.datasets.synthetic import synthetic_cells_3d

    rep = Offsets(3, anisotropy=2.0)
    _, lab = synthetic_cells_3d((20, 64, 64), n_cells=12, anisotropy=2.0, seed=0)
    assert matching(lab, rep.decode(rep.oracle_outputs(lab)).labels, thresh=0.5).accuracy == 1.0
    rng = np.random.default_rng(1)
    assert matching(lab, rep.decode(_noisy(rep, lab, rng, 1.0)).labels, thresh=0.5).accuracy == 1.0
