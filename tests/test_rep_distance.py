"""DistanceMap: kernels against their reference twins, thresholds, round trips."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from cellseg.metrics import matching
from cellseg.representations import get
from cellseg.representations.distance import (
    DistanceMap,
    DistanceParams,
    h_maxima,
    normalized_distance,
    watershed,
)
from tests.reference.ref_distance import (
    ap_ref,
    decode_ref,
    normalized_distance_ref,
    watershed_ref,
)

INT_DTYPES = [np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.uint64, np.int64]


def _random_labels(rng, shape, n_ids=4, ids=None):
    lab = rng.integers(0, n_ids, size=shape)
    if ids is not None:  # map 1..n_ids-1 onto arbitrary ids
        lut = np.array([0, *ids])
        lab = lut[lab]
    return lab


def _blobs(rng, shape, n=6):
    """Touching blob-shaped objects (Voronoi cells of random points cut by a mask)."""
    pts = rng.integers(0, shape, size=(n, len(shape)))
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    d = ((grid[..., None, :] - pts) ** 2).sum(-1)
    lab = d.argmin(-1) + 1
    lab[ndi.gaussian_filter(rng.random(shape), 2) < 0.5] = 0
    return lab


# ---------------------------------------------------------------- normalized distance


@pytest.mark.parametrize("seed", range(6))
def test_normalized_distance_matches_per_object_scipy_2d(seed):
    rng = np.random.default_rng(seed)
    for _ in range(10):
        shape = tuple(rng.integers(1, 14, size=2))
        lab = _random_labels(rng, shape, n_ids=int(rng.integers(2, 5)))
        np.testing.assert_allclose(normalized_distance(lab), normalized_distance_ref(lab), atol=1e-6)
    lab = _blobs(rng, (40, 50))
    np.testing.assert_allclose(normalized_distance(lab), normalized_distance_ref(lab), atol=1e-6)


@pytest.mark.parametrize("aniso", [1.0, 2.0, 0.5, 3.3])
def test_normalized_distance_matches_per_object_scipy_3d(aniso):
    rng = np.random.default_rng(int(aniso * 10))
    for _ in range(6):
        shape = tuple(rng.integers(1, 9, size=3))
        lab = _random_labels(rng, shape, n_ids=3)
        np.testing.assert_allclose(normalized_distance(lab, aniso), normalized_distance_ref(lab, aniso), atol=1e-6)
    lab = _blobs(rng, (10, 24, 20), n=5)
    np.testing.assert_allclose(normalized_distance(lab, aniso), normalized_distance_ref(lab, aniso), atol=1e-6)


@pytest.mark.parametrize("dtype", INT_DTYPES)
def test_normalized_distance_every_integer_dtype_and_sparse_ids(dtype):
    rng = np.random.default_rng(3)
    hi = np.iinfo(dtype).max if np.iinfo(dtype).max < 2**31 else 2**31 - 1
    lab = _random_labels(rng, (17, 23), n_ids=4, ids=[hi, 7, hi // 2]).astype(dtype)
    ref = normalized_distance_ref(lab)
    out = normalized_distance(lab)
    assert out.dtype == np.float32 and out.shape == lab.shape
    np.testing.assert_allclose(out, ref, atol=1e-6)
    # same result as for the sequentially relabelled image
    seq = np.searchsorted(np.unique(lab), lab)
    np.testing.assert_array_equal(out, normalized_distance(seq))


def test_normalized_distance_edge_cases():
    # empty
    assert not normalized_distance(np.zeros((5, 6), np.uint8)).any()
    assert normalized_distance(np.zeros((0, 4), np.int32)).shape == (0, 4)
    # one object filling the image: the border becomes its boundary
    full = np.full((5, 7), 3, np.uint16)
    d = normalized_distance(full)
    np.testing.assert_allclose(d, normalized_distance_ref(full), atol=1e-6)
    assert d.max() == 1.0 and d[0, 0] == pytest.approx(1 / 3)
    # border object: the image border is not a boundary -> max on the border row
    lab = np.zeros((6, 6), np.int32)
    lab[:3, 1:5] = 2
    d = normalized_distance(lab)
    assert d[0, 2] == 1.0 and d[2, 2] < 1.0
    # single pixels and 1-pixel-wide lines are all 1.0
    lab = np.zeros((5, 9), np.int64)
    lab[2, 2] = 5
    lab[1:4, 6] = 9
    assert set(np.unique(normalized_distance(lab)[lab > 0])) == {1.0}
    # bool is one object
    np.testing.assert_allclose(normalized_distance(lab > 0), normalized_distance_ref((lab > 0).astype(int)))
    # every object peaks at exactly 1
    rng = np.random.default_rng(0)
    lab = _blobs(rng, (50, 60), n=8)
    d = normalized_distance(lab)
    for i in np.unique(lab[lab > 0]):
        assert d[lab == i].max() == 1.0
    assert (d[lab == 0] == 0).all()


def test_normalized_distance_rejects_bad_input():
    with pytest.raises(ValueError):
        normalized_distance(np.full((4, 4), 0.5, np.float32))  # fractional (whole-number floats are labels)
    with pytest.raises(ValueError):
        normalized_distance(-np.ones((4, 4), np.int32))
    with pytest.raises(ValueError):
        normalized_distance(np.zeros(4, np.int32))
    with pytest.raises(ValueError):
        normalized_distance(np.zeros((4, 4), np.int32), anisotropy=0)


# ---------------------------------------------------------------- watershed


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ndim", [2, 3])
def test_watershed_matches_skimage_on_continuous_images(seed, ndim):
    rng = np.random.default_rng(seed)
    shape = (31, 37) if ndim == 2 else (7, 15, 13)
    img = ndi.gaussian_filter(rng.random(shape), 1.5)
    for conn in (1, ndim):
        markers = np.zeros(shape, np.int32)
        idx = rng.choice(img.size, size=8, replace=False)
        markers.flat[idx] = rng.choice([1, 5, 9, 1000, 2**31 - 1], size=8)
        mask = rng.random(shape) > 0.15 if seed % 2 else None
        out = watershed(img, markers, mask, connectivity=conn)
        ref = watershed_ref(img, markers, mask, connectivity=conn)
        assert out.dtype == np.int32
        np.testing.assert_array_equal(out, ref)


def test_watershed_plateaus_fifo_and_edge_cases():
    # a flat image: FIFO flooding = growth by breadth-first distance from the markers
    img = np.zeros((9, 11))
    markers = np.zeros((9, 11), np.int32)
    markers[4, 1] = 1
    markers[4, 9] = 2
    out = watershed(img, markers)
    np.testing.assert_array_equal(out, watershed_ref(img, markers))
    assert (out[:, :5] == 1).all() and (out[:, 6:] == 2).all()
    # quantized images (many ties, markers on plateaus) still agree with skimage
    rng = np.random.default_rng(7)
    for t in range(40):
        shape = (int(rng.integers(1, 12)), int(rng.integers(1, 12))) if t % 2 else (3, 5, 6)
        q = rng.integers(0, 3, size=shape).astype(float)
        qmk = np.zeros(q.shape, np.int32)
        k = min(4, q.size)
        qmk.flat[rng.choice(q.size, k, replace=False)] = rng.permutation(np.arange(1, k + 1))
        qmask = rng.random(shape) > 0.2
        for conn in (1, q.ndim):
            np.testing.assert_array_equal(watershed(q, qmk, qmask, conn), watershed_ref(q, qmk, qmask, conn))
    np.testing.assert_array_equal(watershed(q.astype(np.uint8), qmk), watershed_ref(q.astype(np.uint8), qmk))
    # markers outside the mask are dropped; unreachable mask pixels stay 0
    mask = np.zeros((5, 8), bool)
    mask[:, :3] = True
    mask[:, 5:] = True
    mk = np.zeros((5, 8), np.int32)
    mk[2, 1] = 4
    mk[2, 4] = 7  # outside the mask
    out = watershed(np.zeros((5, 8)), mk, mask)
    np.testing.assert_array_equal(out, watershed_ref(np.zeros((5, 8)), mk, mask))
    assert (out[:, :3] == 4).all() and (out[:, 3:] == 0).all()
    # no markers, empty image, integer image
    assert not watershed(rng.random((4, 4)), np.zeros((4, 4), np.uint8)).any()
    assert watershed(np.zeros((0, 3)), np.zeros((0, 3), np.int32)).shape == (0, 3)
    with pytest.raises(ValueError):
        watershed(np.zeros((3, 3)), np.zeros((3, 4), np.int32))
    with pytest.raises(ValueError):
        watershed(np.full((3, 3), np.nan), np.zeros((3, 3), np.int32))
    with pytest.raises(ValueError):
        watershed(np.zeros((3, 3)), np.zeros((3, 3), np.int32), connectivity=3)


# ---------------------------------------------------------------- h-maxima


@pytest.mark.parametrize("seed", range(4))
def test_h_maxima_matches_skimage(seed):
    from skimage.morphology import h_maxima as sk_h_maxima

    rng = np.random.default_rng(seed)
    for t in range(30):
        shape = tuple(rng.integers(1, 16, size=2)) if t % 2 else tuple(rng.integers(1, 7, size=3))
        f = rng.random(shape)
        if t % 3 == 0:
            f = ndi.gaussian_filter(f, 1)
        if t % 5 == 0:
            f = np.round(f * 4) / 4  # plateaus and exact dynamics
        if t % 7 == 0:
            f[f < 0.3] = 0
        h = float(rng.choice([0.05, 0.1, 0.25, 0.5]))
        np.testing.assert_array_equal(h_maxima(f, h), sk_h_maxima(f, h).astype(bool))
        conn1 = ndi.generate_binary_structure(f.ndim, 1)
        np.testing.assert_array_equal(h_maxima(f, h, connectivity=1),
                                      sk_h_maxima(f, h, footprint=conn1).astype(bool))


def test_h_maxima_thresholds():
    f = np.array([[0.0, 0.5, 0.25, 0.75, 0.0]])
    # peak 0.5 has dynamic exactly 0.25 (saddle 0.25, higher peak 0.75)
    np.testing.assert_array_equal(h_maxima(f, 0.25), [[0, 1, 0, 1, 0]])
    np.testing.assert_array_equal(h_maxima(f, 0.2500001), [[0, 0, 0, 1, 0]])
    # global maximum: kept while h <= value range, nothing above
    np.testing.assert_array_equal(h_maxima(f, 0.75), [[0, 0, 0, 1, 0]])
    assert not h_maxima(f, 0.7500001).any()
    # equal peaks with a shallow saddle are two separate maxima
    g = np.array([[0.0, 1.0, 0.9, 1.0, 0.0]])
    np.testing.assert_array_equal(h_maxima(g, 0.5), [[0, 1, 0, 1, 0]])
    # constant image, integer image
    assert not h_maxima(np.ones((3, 3)), 0.1).any()
    np.testing.assert_array_equal(h_maxima(np.array([[0, 3, 1, 5]], np.uint8), 2), [[0, 1, 0, 1]])
    with pytest.raises(ValueError):
        h_maxima(f, 0)


# ---------------------------------------------------------------- representation


def test_params_config_registry():
    rep = get("distance", ndim=3, anisotropy=2.0)
    assert isinstance(rep, DistanceMap) and type(rep)(**rep.config()) == rep
    assert [h.name for h in rep.heads()] == ["dist", "fg"]
    assert all(h.activation == "sigmoid" and h.channels == 1 for h in rep.heads())
    with pytest.raises(TypeError, match="unknown"):
        rep.params({"fg_tresh": 0.5})
    with pytest.raises(ValueError):
        DistanceParams(h=0)
    with pytest.raises(ValueError):
        DistanceParams(min_size=-1)
    with pytest.raises(ValueError):
        DistanceMap(ndim=4)
    with pytest.raises(ValueError):
        DistanceMap(ndim=2, anisotropy=2.0)
    assert rep.params(dict(h=0.2)).h == 0.2


def test_encode_targets():
    rng = np.random.default_rng(1)
    lab = _blobs(rng, (30, 40), n=5).astype(np.uint16) * 3
    t = DistanceMap().encode(lab)
    assert set(t) == {"dist", "fg"}
    assert t["dist"].shape == (1, 30, 40) and t["dist"].dtype == np.float32
    np.testing.assert_array_equal(t["fg"][0], (lab > 0).astype(np.float32))
    np.testing.assert_allclose(t["dist"][0], normalized_distance_ref(lab), atol=1e-6)
    with pytest.raises(ValueError):
        DistanceMap().encode(np.zeros((3, 4, 5), np.int32))


def test_decode_validates_outputs():
    rep = DistanceMap()
    ok = {"dist": np.zeros((1, 8, 8), np.float32), "fg": np.zeros((1, 8, 8), np.float32)}
    assert rep.decode(ok).n_objects == 0
    with pytest.raises(KeyError):
        rep.decode({"dist": ok["dist"]})
    with pytest.raises(ValueError):
        rep.decode({"dist": ok["dist"], "fg": np.zeros((1, 8, 9), np.float32)})
    with pytest.raises(ValueError):
        rep.decode({"dist": np.full((1, 8, 8), np.nan, np.float32), "fg": ok["fg"]})
    with pytest.raises(ValueError):
        rep.decode({"dist": np.zeros((1, 4, 8, 8), np.float32), "fg": np.zeros((1, 4, 8, 8), np.float32)})


@pytest.mark.parametrize("seed", range(3))
def test_decode_matches_reference_pipeline(seed):
    rng = np.random.default_rng(seed)
    rep = DistanceMap()
    # noisy "network" outputs
    lab = _blobs(rng, (48, 56), n=7)
    o = rep.oracle_outputs(lab)
    noisy = {
        "dist": np.clip(o["dist"] + 0.1 * rng.standard_normal(o["dist"].shape), 0, 1).astype(np.float32),
        "fg": np.clip(o["fg"] + 0.3 * rng.standard_normal(o["fg"].shape), 0, 1).astype(np.float32),
    }
    for kw in [dict(), dict(smooth_sigma=0, min_size=0), dict(h=0.1, marker_thresh=0.5, min_size=20)]:
        p = rep.params(kw)
        for out in (o, noisy):
            got = rep.decode(out, p).labels
            np.testing.assert_array_equal(got, decode_ref(out["dist"][0], out["fg"][0], 1.0, p))
    # 3D
    rep3 = DistanceMap(3, anisotropy=2.0)
    lab3 = _blobs(rng, (8, 24, 24), n=4)
    o3 = rep3.oracle_outputs(lab3)
    np.testing.assert_array_equal(rep3.decode(o3).labels,
                                  decode_ref(o3["dist"][0], o3["fg"][0], 2.0, rep3.params()))


def test_decode_thresholds_and_scores():
    rep = DistanceMap()
    lab = np.zeros((20, 30), np.int32)
    lab[2:7, 2:7] = 1  # 25 px
    lab[10:16, 10:16] = 2  # 36 px
    o = rep.oracle_outputs(lab)
    o["fg"][0][lab == 2] = 0.8
    # min_size: exactly the object size keeps it, one more drops it
    d = rep.decode(o, dict(min_size=25, smooth_sigma=0))
    assert d.n_objects == 2
    d = rep.decode(o, dict(min_size=26, smooth_sigma=0))
    assert d.n_objects == 1 and (d.labels > 0).sum() == 36
    # scores: mean fg probability per object, ids 1..n
    d = rep.decode(o, dict(smooth_sigma=0))
    np.testing.assert_allclose(d.scores, [1.0, 0.8], rtol=1e-6)
    assert d.labels.dtype == np.int32 and set(np.unique(d.labels)) == {0, 1, 2}
    # fg exactly at fg_thresh is background (strict >)
    o2 = {k: v.copy() for k, v in o.items()}
    o2["fg"][0][lab == 1] = 0.5
    d = rep.decode(o2, dict(smooth_sigma=0))
    assert d.n_objects == 1 and not d.labels[lab == 1].any()
    # marker exactly at marker_thresh is not a marker (strict >)
    o3 = {k: v.copy() for k, v in o.items()}
    o3["dist"][0][lab == 1] *= 0.5  # the peak of object 1 is now exactly 0.5
    assert rep.decode(o3, dict(smooth_sigma=0, marker_thresh=0.5)).n_objects == 1
    assert rep.decode(o3, dict(smooth_sigma=0, marker_thresh=0.49)).n_objects == 2


def test_min_distance_merges_close_markers():
    rep = DistanceMap()
    lab = np.zeros((12, 30), np.int32)
    lab[2:10, 2:28] = 1
    dist = np.zeros((1, 12, 30), np.float32)
    dist[0, 2:10, 2:28] = 0.2
    dist[0, 5:7, 8:10] = 1.0
    dist[0, 5:7, 14:16] = 1.0  # second peak 6 px away, deep saddle
    o = {"dist": dist, "fg": (lab > 0).astype(np.float32)[None]}
    assert rep.decode(o, dict(smooth_sigma=0)).n_objects == 2
    # closest peak pixels are 5 px apart: merged at min_distance 5, not below
    assert rep.decode(o, dict(smooth_sigma=0, min_distance=5)).n_objects == 1
    assert rep.decode(o, dict(smooth_sigma=0, min_distance=4.99)).n_objects == 2
    d = rep.decode(o, dict(smooth_sigma=0, min_distance=5))
    assert d.labels[lab > 0].min() == 1 and (d.extra["markers"] > 0).sum() == 8


def test_round_trip_synthetic_2d():
    from cellseg.datasets.synthetic import synthetic_cells

    rep = DistanceMap()
    for seed in range(2):
        _, lab = synthetic_cells((256, 256), n_cells=60, seed=seed)
        d = rep.decode(rep.oracle_outputs(lab))
        assert matching(lab, d.labels, thresh=0.5).accuracy == 1.0 == ap_ref(lab, d.labels, 0.5)


def test_round_trip_synthetic_3d():
    from cellseg.datasets.synthetic import synthetic_cells_3d

    rep = DistanceMap(3, anisotropy=2.0)
    _, lab = synthetic_cells_3d((20, 64, 64), n_cells=12, anisotropy=2.0, seed=0)
    d = rep.decode(rep.oracle_outputs(lab))
    assert matching(lab, d.labels, thresh=0.5).accuracy == 1.0 == ap_ref(lab, d.labels, 0.5)


def test_ap_ref_helper():
    a = np.zeros((10, 10), np.int32)
    a[1:4, 1:4] = 1
    a[6:9, 6:9] = 2
    assert ap_ref(a, a) == 1.0
    assert ap_ref(np.zeros_like(a), np.zeros_like(a)) == 1.0
    assert ap_ref(a, np.zeros_like(a)) == 0.0
    b = a.copy()
    b[b == 2] = 0  # one missed: TP 1, FN 1
    assert ap_ref(a, b) == 0.5
    c = a * 7  # ids do not matter
    assert ap_ref(a, c) == 1.0
    d = a.copy()
    d[1:4, 1] = 0  # IoU 6/9: a match at 0.5, not at 0.7
    assert ap_ref(a, d, 0.5) == 1.0 and ap_ref(a, d, 0.7) == pytest.approx(1 / 3)
