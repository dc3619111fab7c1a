"""StarDist representation: kernels vs slow reference twins, thresholds, round trip."""
from __future__ import annotations

import numpy as np
import pytest

from cellseg.labels import LabelError
from cellseg.representations import _stardist_kernels as K
from cellseg.representations import get
from cellseg.representations import stardist as S
from tests.reference import ref_stardist as R

INT_DTYPES = [np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.uint64, np.int64]


def random_labels(shape, n, seed, max_id=None):
    """Random ellipses painted one over the other: touching, non-convex, cut by the border."""
    rng = np.random.default_rng(seed)
    lab = np.zeros(shape, np.int64)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    ids = rng.choice(np.arange(1, (max_id or 4 * n) + 1), size=n, replace=False)
    for v in ids:
        cy, cx = rng.uniform(-2, shape[0] + 2), rng.uniform(-2, shape[1] + 2)
        ry, rx = rng.uniform(1.5, shape[0] / 3), rng.uniform(1.5, shape[1] / 3)
        t = rng.uniform(0, np.pi)
        u = (yy - cy) * np.cos(t) + (xx - cx) * np.sin(t)
        w = -(yy - cy) * np.sin(t) + (xx - cx) * np.cos(t)
        lab[(u / ry) ** 2 + (w / rx) ** 2 <= 1] = v
    return lab


def poly(dist, point):
    """(2, R) coords and centre from distances at an integer point."""
    return S.dist_to_coord(np.asarray(dist, np.float32)[None], np.asarray(point)[None])[0]


# ----------------------------------------------------------------------------- encode


@pytest.mark.parametrize("seed,shape,n_rays,grid", [
    (0, (23, 29), 8, (1, 1)), (1, (20, 20), 12, (1, 1)), (2, (25, 18), 6, (2, 3)), (3, (17, 26), 5, (3, 1)),
])
def test_star_dist_matches_reference(seed, shape, n_rays, grid):
    lab = random_labels(shape, 6, seed)
    got = S.star_dist(lab, n_rays, grid)
    ref = R.ref_star_dist(lab, n_rays, grid)
    assert got.shape == ref.shape == (n_rays, (shape[0] - 1) // grid[0] + 1, (shape[1] - 1) // grid[1] + 1)
    assert got.dtype == np.float32
    # same float32 march; sin/cos of the ray angle may differ by one ulp between
    # numpy and libm, any different stepping decision would show as >= 0.5
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)
    assert (got[:, lab[:: grid[0], :: grid[1]] == 0] == 0).all()
    assert (got[:, lab[:: grid[0], :: grid[1]] != 0] >= 0.5).all()


def test_star_dist_known_values_constant_image_and_border():
    lab = np.full((5, 5), 3, np.uint8)  # one object cut by all four borders
    d = S.star_dist(lab, 4)
    # from the centre: 2 steps inside, the 3rd leaves the image -> 3 - 0.5 = 2.5
    np.testing.assert_allclose(d[:, 2, 2], [2.5, 2.5, 2.5, 2.5], atol=1e-6)
    np.testing.assert_allclose(d[:, 0, 0], [4.5, 4.5, 0.5, 0.5], atol=1e-6)
    lab = np.zeros((7, 7), np.int32)
    lab[2:5, 1:6] = 9  # 3 x 5 rectangle
    d = S.star_dist(lab, 4)
    np.testing.assert_allclose(d[:, 3, 3], [2.5, 1.5, 2.5, 1.5], atol=1e-6)


@pytest.mark.parametrize("n_rays", [4, 12, 24, 32])
def test_ray_offset_table_equals_float32_rounding(n_rays):
    """The integer offset table replaces rint(float32(i) + ys[k, t]) by
    i + rint(ys[k, t]) except where it is flagged: check that claim for start
    rows 0..H-1 of a tall image, and that flagged entries exist where the
    fractional part sits at 1/2 (n_rays = 12: sin 30 deg = 0.5, ties to even
    depend on the parity of i)."""
    H, W = 70000, 3
    ys, xs = K._ray_tables(n_rays, H, W)
    Wp = W + 2
    off = K._ray_offsets(ys, xs, Wp, H, W)
    T = 400  # the first steps of every ray are enough to see every fractional part
    i = np.arange(H, dtype=np.float32)[::97]
    for k in range(n_rays):
        for tab in (ys, xs):
            got = np.rint(i[:, None] + tab[k, None, 1:T]).astype(np.int64)
            want = i[:, None].astype(np.int64) + np.rint(tab[k, 1:T]).astype(np.int64)
            ok = off[k, 1:T] != K._NEAR_HALF
            assert (got[:, ok] == want[:, ok]).all()
        flat_ok = off[k, 1:T] != K._NEAR_HALF
        dec = (np.rint(ys[k, 1:T]).astype(np.int64) * Wp + np.rint(xs[k, 1:T]).astype(np.int64))
        np.testing.assert_array_equal(off[k, 1:T][flat_ok], dec[flat_ok])
    if n_rays == 12:
        assert (off[1, 1:T] == K._NEAR_HALF).any()  # 0.5 steps in y: the float path runs


@pytest.mark.parametrize("n_rays", [12, 24])
def test_star_dist_near_half_positions_match_reference(n_rays):
    """Rays whose positions have fractional part exactly 1/2 (ties to even):
    start pixels of both parities, objects cut by all four borders."""
    lab = np.zeros((19, 23), np.int32)
    lab[:, :9] = 2
    lab[4:15, 9:] = 5
    lab[8:11, 12:20] = 3
    lab[0, 20:] = 7
    got = S.star_dist(lab, n_rays)
    np.testing.assert_allclose(got, R.ref_star_dist(lab, n_rays), rtol=0, atol=1e-5)


def test_star_dist_empty_and_single_pixel():
    assert not S.star_dist(np.zeros((6, 9), np.int32), 8).any()
    lab = np.zeros((6, 9), np.int32)
    lab[0, 8] = 4  # corner pixel: every ray leaves at the first step
    d = S.star_dist(lab, 8)
    np.testing.assert_allclose(d, R.ref_star_dist(lab, 8), rtol=0, atol=1e-6)
    assert np.count_nonzero(d) == 8


@pytest.mark.parametrize("dtype", INT_DTYPES + [bool])
def test_encode_every_integer_dtype(dtype):
    lab = random_labels((24, 27), 7, 5, max_id=100)
    if dtype is bool:
        lab = lab > 0
    rep = S.StarDist(n_rays=8)
    want = rep.encode(lab.astype(np.int32))
    got = rep.encode(lab.astype(dtype))
    assert set(got) == {"prob", "dist"}
    for k in got:
        assert got[k].dtype == np.float32
        np.testing.assert_array_equal(got[k], want[k])


def test_non_sequential_and_huge_ids():
    lab = random_labels((26, 22), 6, 7)
    small = S.StarDist(8).encode(lab)
    relab = np.where(lab > 0, lab * 1_000_003 % (2**31 - 1) + 1, 0)
    relab[lab == lab.max()] = 2**31 - 1
    assert len(np.unique(relab)) == len(np.unique(lab))
    big = S.StarDist(8).encode(relab)
    for k in small:
        np.testing.assert_array_equal(small[k], big[k])
    # ids above 65535 do not wrap (StarDist casts to uint16; we do not)
    two = np.zeros((6, 6), np.int64)
    two[:, :3] = 1
    two[:, 3:] = 65537
    d = S.star_dist(two, 4)
    assert d[0, 2, 1] == pytest.approx(1.5)  # ray to the right stops at the id change


def test_encode_rejects_bad_labels():
    rep = S.StarDist(8)
    with pytest.raises(LabelError):
        rep.encode(np.full((5, 5), 0.5, np.float32))
    with pytest.raises(LabelError):
        rep.encode(-np.ones((5, 5), np.int32))
    with pytest.raises(LabelError):
        rep.encode(np.zeros((2, 5, 5), np.int32))
    with pytest.raises(ValueError):
        S.star_dist(np.zeros((5, 5), np.int32), n_rays=2)
    with pytest.raises(ValueError):
        S.star_dist(np.zeros((5, 5), np.int32), grid=(0, 1))


@pytest.mark.parametrize("seed,grid", [(0, (1, 1)), (1, (1, 1)), (2, (2, 2)), (3, (1, 3))])
def test_edt_prob_matches_bruteforce(seed, grid):
    lab = random_labels((31, 26), 7, seed)
    got = S.edt_prob(lab, grid)
    ref = R.ref_edt_prob(lab, grid)
    assert got.dtype == np.float32 and got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)
    inside = lab[:: grid[0], :: grid[1]] > 0
    assert (got[~inside] == 0).all() and (got[inside] > 0).all() and got.max() <= 1


def test_edt_prob_edge_cases():
    assert not S.edt_prob(np.zeros((6, 7), np.int32)).any()
    assert S.edt_prob(np.zeros((0, 7), np.int32)).shape == (0, 7)
    const = np.full((5, 6), 4, np.int16)
    np.testing.assert_allclose(S.edt_prob(const), R.ref_edt_prob(const), atol=1e-6)
    one = np.zeros((5, 5), np.int32)
    one[2, 2] = 7
    assert S.edt_prob(one)[2, 2] == pytest.approx(1.0)
    # an object on the border: the border is not background
    lab = np.zeros((4, 8), np.int32)
    lab[:, :3] = 1
    p = S.edt_prob(lab)
    np.testing.assert_allclose(p[:, 0], 1.0, atol=1e-6)  # 3 px from its right edge everywhere


def test_encode_shapes_oracle_and_config():
    rep = S.StarDist(n_rays=16, grid=(2, 3))
    lab = random_labels((21, 26), 5, 11)
    t = rep.encode(lab)
    assert t["prob"].shape == (1, 11, 9) and t["dist"].shape == (16, 11, 9)
    o = rep.oracle_outputs(lab)
    for k in t:
        np.testing.assert_array_equal(o[k], t[k])
    assert [h.name for h in rep.heads()] == ["prob", "dist"]
    assert [h.channels for h in rep.heads()] == [1, 16]
    assert [h.activation for h in rep.heads()] == ["sigmoid", "softplus"]
    assert type(rep)(**rep.config()) == rep
    assert get("stardist", **rep.config()) == rep
    assert hash(rep) == hash(S.StarDist(16, (2, 3)))
    with pytest.raises(ValueError):
        S.StarDist(n_rays=2)


# ----------------------------------------------------------------------------- polygons


def test_dist_to_coord_bit_identical_to_reference():
    rng = np.random.default_rng(0)
    d = (rng.random((50, 32)) * 30).astype(np.float32)
    p = rng.integers(0, 2000, (50, 2))
    np.testing.assert_array_equal(S.dist_to_coord(d, p), R.ref_dist_to_coord(d, p))


def _random_pair(rng, n_rays):
    kind = rng.integers(0, 5)
    base = rng.uniform(3, 12)
    da = (base * (1 + rng.uniform(-0.5, 0.5, n_rays))).astype(np.float32)
    db = (rng.uniform(3, 12) * (1 + rng.uniform(-0.5, 0.5, n_rays))).astype(np.float32)
    if kind == 1:  # spiky: some very short rays
        da[rng.integers(0, n_rays, n_rays // 3)] *= 0.1
    if kind == 2:  # some zero rays
        db[rng.integers(0, n_rays, 2)] = 0
    pa = np.array([50, 50])
    off = {0: 3, 1: 8, 2: 12, 3: 25, 4: 1}[int(kind)]
    pb = pa + rng.integers(-off, off + 1, 2)
    return poly(da, pa), pa, poly(db, pb), pb


@pytest.mark.parametrize("n_rays", [3, 8, 32])
def test_intersection_area_exact_vs_triangle_pairs(n_rays):
    rng = np.random.default_rng(n_rays)
    sc = K.make_scratch(n_rays)
    n_polar = n_fan = 0
    for _ in range(60):
        ca, pa, cb, pb = _random_pair(rng, n_rays)
        ref = R.ref_star_intersection_area(ca, pa, cb, pb)
        got = S.polygon_intersection_area(ca, pa, cb, pb)
        assert got == pytest.approx(ref, rel=1e-9, abs=1e-9)
        assert S.polygon_intersection_area(cb, pb, ca, pa) == pytest.approx(ref, rel=1e-9, abs=1e-9)
        a = [np.ascontiguousarray(c, np.float64) for c in (ca[1], ca[0], cb[1], cb[0])]
        # both kernel paths, each against the reference
        fan = K.fan_intersection_area(a[0], a[1], float(pa[1]), float(pa[0]), a[2], a[3], float(pb[1]),
                                      float(pb[0]), sc)
        assert fan == pytest.approx(ref, rel=1e-9, abs=1e-9)
        n_fan += 1
        polar = K.polar_intersection_area(a[0], a[1], a[2], a[3], float(pa[1]), float(pa[0]), sc)
        if polar >= 0:
            assert polar == pytest.approx(ref, rel=1e-9, abs=1e-9)
            n_polar += 1
    assert n_polar >= 5 and n_fan == 60  # the polar fast path really was exercised


def test_intersection_area_vs_rasterised_masks():
    rng = np.random.default_rng(1)
    for _ in range(12):
        ca, pa, cb, pb = _random_pair(rng, 16)
        exact = S.polygon_intersection_area(ca, pa, cb, pb)
        raster = R.raster_intersection_area(ca, cb, scale=16)
        perim = sum(np.hypot(*np.diff(np.concatenate([c, c[:, :1]], 1), axis=1)).sum() for c in (ca, cb))
        assert abs(exact - raster) <= perim / 16 + 0.05, (exact, raster)


def test_intersection_area_hand_built_diamonds():
    # 4 rays: a "diamond" |dy| + |dx| <= a around the centre (vertices exactly integer)
    a = 4.0
    A = poly([a] * 4, (10, 10))
    np.testing.assert_array_equal(A, [[10, 14, 10, 6], [14, 10, 6, 10]])
    assert S.polygon_area(A) == 2 * a * a
    assert S.polygon_intersection_area(A, (10, 10), A, (10, 10)) == 2 * a * a
    for s in (1, 2, 3, 4, 6, 7):  # shifted along x by s: a diamond of half-size a - s/2
        B = poly([a] * 4, (10, 10 + s))
        assert S.polygon_intersection_area(A, (10, 10), B, (10, 10 + s)) == 2 * (a - s / 2) ** 2
    B = poly([a] * 4, (10, 18))  # touching at one vertex
    assert S.polygon_intersection_area(A, (10, 10), B, (10, 18)) == 0.0
    B = poly([a] * 4, (30, 30))
    assert S.polygon_intersection_area(A, (10, 10), B, (30, 30)) == 0.0
    small = poly([1.0] * 4, (11, 10))  # inside A
    assert S.polygon_intersection_area(A, (10, 10), small, (11, 10)) == 2.0
    # a diamond with one zero ray (a triangle) against the full one
    T = poly([a, a, 0, a], (10, 10))
    assert S.polygon_area(T) == a * a  # two of the four fan triangles remain
    assert S.polygon_intersection_area(A, (10, 10), T, (10, 10)) == a * a


# ----------------------------------------------------------------------------- NMS


def _cluster_candidates(rng, n_obj, per_obj, n_rays, shape=(60, 60)):
    pts, dist, prob = [], [], []
    for _ in range(n_obj):
        c = rng.integers(8, shape[0] - 8, 2)
        r = rng.uniform(3, 8)
        for _ in range(per_obj):
            pts.append(c + rng.integers(-3, 4, 2))
            dist.append(r * (1 + rng.uniform(-0.35, 0.35, n_rays)))
            prob.append(rng.uniform(0.5, 1))
    prob = np.round(np.array(prob), 2).astype(np.float32)  # ties on purpose
    return np.array(dist, np.float32), prob, np.array(pts)


@pytest.mark.parametrize("overlap", ["min", "iou"])
@pytest.mark.parametrize("thresh", [0.0, 0.2, 0.4, 0.7])
def test_nms_matches_bruteforce(overlap, thresh):
    rng = np.random.default_rng(int(thresh * 10) + (overlap == "iou"))
    dist, prob, pts = _cluster_candidates(rng, 5, 8, 12)
    got = S.non_maximum_suppression(dist, prob, pts, thresh, overlap)
    ref = R.ref_nms(dist, prob, pts, thresh, overlap)
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("overlap", ["min", "iou"])
def test_nms_matches_bruteforce_across_parallel_blocks(overlap):
    """More candidates than the first block (256): later blocks are checked in
    parallel against the polygons kept before them, then walked in order."""
    rng = np.random.default_rng(7 + (overlap == "iou"))
    dist, prob, pts = _cluster_candidates(rng, 40, 14, 12, shape=(110, 110))
    assert len(prob) > 2 * 256
    got = S.non_maximum_suppression(dist, prob, pts, 0.3, overlap)
    ref = R.ref_nms(dist, prob, pts, 0.3, overlap)
    assert len(ref) > 20
    np.testing.assert_array_equal(got, ref)


def _diamonds(shift):
    pts = np.array([[20, 20], [20, 20 + shift]])
    dist = np.full((2, 4), 4.0, np.float32)
    return dist, np.array([0.9, 0.8], np.float32), pts


@pytest.mark.parametrize("overlap,shift,value", [
    ("min", 4, 0.25),        # inter 8 / area 32
    ("min", 2, 18 / 32),     # inter 18 / 32
    ("iou", 2, 18 / 46),     # inter 18 / union 46 (not dyadic: correctly rounded both sides)
    ("iou", 4, 8 / 56),
])
def test_nms_exactly_at_threshold(overlap, shift, value):
    dist, prob, pts = _diamonds(shift)
    c = S.dist_to_coord(dist, pts)
    inter = S.polygon_intersection_area(c[0], pts[0], c[1], pts[1])
    assert inter == 2 * (4 - shift / 2) ** 2
    eps = 1e-9
    assert list(S.non_maximum_suppression(dist, prob, pts, value, overlap)) == [0, 1]  # not > thresh
    assert list(S.non_maximum_suppression(dist, prob, pts, value + eps, overlap)) == [0, 1]
    assert list(S.non_maximum_suppression(dist, prob, pts, value - eps, overlap)) == [0]


def test_nms_order_ties_and_validation():
    dist, prob, pts = _diamonds(1)
    prob[:] = 0.7  # tie: input order wins
    assert list(S.non_maximum_suppression(dist, prob, pts, 0.3)) == [0]
    assert list(S.non_maximum_suppression(dist[::-1], prob, pts[::-1], 0.3)) == [0]
    assert list(S.non_maximum_suppression(dist, np.array([0.1, 0.9], np.float32), pts, 0.3)) == [1]
    assert S.non_maximum_suppression(np.zeros((0, 8), np.float32), np.zeros(0), np.zeros((0, 2), int)).size == 0
    with pytest.raises(ValueError):
        S.non_maximum_suppression(dist, prob, pts, 1.5)
    with pytest.raises(ValueError):
        S.non_maximum_suppression(dist, prob, pts, 0.3, overlap="dice")
    with pytest.raises(ValueError):
        S.non_maximum_suppression(-dist, prob, pts, 0.3)
    with pytest.raises(ValueError):
        S.non_maximum_suppression(dist, prob[:1], pts, 0.3)


def test_nms_far_apart_and_huge_polygon():
    # a huge polygon among small ones: the bucket grid must still find every pair
    rng = np.random.default_rng(3)
    dist, prob, pts = _cluster_candidates(rng, 6, 4, 8, shape=(80, 80))
    dist = np.concatenate([dist, np.full((1, 8), 60.0, np.float32)])
    prob = np.concatenate([prob, [0.55]]).astype(np.float32)
    pts = np.concatenate([pts, [[40, 40]]])
    for thresh in (0.3, 0.6):
        np.testing.assert_array_equal(S.non_maximum_suppression(dist, prob, pts, thresh),
                                      R.ref_nms(dist, prob, pts, thresh))


# ----------------------------------------------------------------------------- rasterisation


def test_polygons_to_label_equals_skimage_rule():
    rng = np.random.default_rng(4)
    shape = (40, 47)
    for n_rays in (4, 8, 13):
        n = 25
        pts = rng.integers(-3, 45, (n, 2))
        dist = (rng.uniform(0, 9, (n, n_rays)) * rng.integers(0, 2, (n, 1)) + rng.integers(0, 4, (n, 1)))
        dist = dist.astype(np.float32)
        dist[0] = 0  # degenerate polygon: the single centre pixel
        dist[1] = np.round(dist[1])  # integer vertices: edges through pixel centres
        prob = rng.random(n).astype(np.float32)
        prob[3] = prob[4]  # a tie: stable order
        coords = S.dist_to_coord(dist, pts)
        got = S.polygons_to_label(coords, shape, prob)
        ref = R.ref_polygons_to_label(coords, shape, prob)
        np.testing.assert_array_equal(got, ref)
        # the pixel counts kept while painting (overlaps repainted, polygons partly outside)
        lab, counts = S._polygons_to_label(coords, shape, prob)
        np.testing.assert_array_equal(counts, np.bincount(ref.ravel(), minlength=n + 1))
        assert (counts[1:] == 0).any()  # some polygons are covered entirely (or empty): ids absent
        np.testing.assert_array_equal(S.polygons_to_label(coords, shape), R.ref_polygons_to_label(coords, shape))


def test_polygons_to_label_axis_aligned_and_empty():
    # an axis aligned square (8 rays at 45 degrees: corners exact up to float32)
    d = np.array([4, 4 * np.sqrt(2)] * 4, np.float32)
    coords = S.dist_to_coord(d[None], np.array([[10, 10]]))
    np.testing.assert_array_equal(S.polygons_to_label(coords, (20, 20)),
                                  R.ref_polygons_to_label(coords, (20, 20)))
    lab = S.polygons_to_label(np.zeros((0, 2, 8), np.float32), (5, 6))
    assert lab.shape == (5, 6) and lab.dtype == np.int32 and not lab.any()
    with pytest.raises(ValueError):
        S.polygons_to_label(coords, (20, 20), prob=np.ones(3))


# ----------------------------------------------------------------------------- decode


def _synthetic(shape=(160, 160), n=30, seed=0):
    from cellseg.datasets.synthetic import synthetic_cells

    return synthetic_cells(shape, n_cells=n, seed=seed)[1]


def test_round_trip_synthetic_ap_is_one():
    from cellseg.metrics import matching

    lab = _synthetic()
    rep = S.StarDist(32)
    dec = rep.decode(rep.oracle_outputs(lab))
    assert dec.labels.dtype == np.int32 and dec.labels.shape == lab.shape
    assert matching(lab, dec.labels, thresh=0.5).accuracy == 1.0
    assert R.ref_ap(lab, dec.labels, 0.5) == 1.0
    assert matching(lab, dec.labels, thresh=0.75).accuracy >= 0.9


def test_decode_contract():
    lab = _synthetic((96, 96), 12, 3)
    rep = S.StarDist(16)
    dec = rep.decode(rep.oracle_outputs(lab), {"prob_thresh": 0.5, "nms_thresh": 0.4})
    n = dec.n_objects
    assert n > 0 and set(np.unique(dec.labels)) == set(range(n + 1))
    assert dec.scores.dtype == np.float32 and dec.scores.shape == (n,)
    assert np.all(np.diff(dec.scores) <= 0)  # id 1 = best
    assert dec.extra["polygons"].shape == (n, 2, 16) and dec.extra["polygons"].dtype == np.float32
    assert dec.extra["points"].shape == (n, 2)
    np.testing.assert_array_equal(dec.extra["prob"], dec.scores)
    # each centre lies in its own polygon: painted with its id or a better (smaller) one
    for i, (y, x) in enumerate(dec.extra["points"], start=1):
        assert 1 <= dec.labels[y, x] <= i
    with pytest.raises(TypeError):
        rep.decode(rep.oracle_outputs(lab), {"prob_treshold": 0.5})
    with pytest.raises(ValueError):
        rep.params(nms_thresh=2.0)
    with pytest.raises(ValueError):
        rep.params(overlap="dice")
    out = rep.oracle_outputs(lab)
    with pytest.raises(KeyError):
        rep.decode({"prob": out["prob"]})
    with pytest.raises(ValueError):
        rep.decode({"prob": out["prob"], "dist": out["dist"][:8]})
    with pytest.raises(ValueError):
        rep.decode({"prob": out["prob"], "dist": -out["dist"]})


def test_decode_empty_and_prob_threshold_exact():
    rep = S.StarDist(8)
    empty = {"prob": np.zeros((1, 20, 20), np.float32), "dist": np.zeros((8, 20, 20), np.float32)}
    dec = rep.decode(empty)
    assert dec.n_objects == 0 and not dec.labels.any() and dec.extra["polygons"].shape == (0, 2, 8)
    prob = np.zeros((1, 20, 20), np.float32)
    dist = np.full((8, 20, 20), 3.0, np.float32)
    prob[0, 5, 5] = 0.5  # exactly at the threshold: not a candidate
    prob[0, 14, 14] = np.nextafter(np.float32(0.5), np.float32(1))
    dec = rep.decode({"prob": prob, "dist": dist}, {"prob_thresh": 0.5})
    assert dec.n_objects == 1 and tuple(dec.extra["points"][0]) == (14, 14)
    # the border knob: a candidate one pixel from the border
    prob[0, 1, 10] = 0.9
    assert rep.decode({"prob": prob, "dist": dist}).n_objects == 1
    assert rep.decode({"prob": prob, "dist": dist}, {"border": 0}).n_objects == 2


def test_decode_grid_round_trip():
    from cellseg.metrics import matching

    lab = _synthetic((128, 128), 16, 5)
    rep = S.StarDist(32, grid=(2, 2))
    out = rep.oracle_outputs(lab)
    assert out["prob"].shape == (1, 64, 64)
    dec = rep.decode(out, shape=lab.shape)
    assert dec.labels.shape == lab.shape
    assert matching(lab, dec.labels, thresh=0.5).accuracy >= 0.9
    assert (dec.extra["points"] % 2 == 0).all()


def test_hidden_objects_are_dropped_and_relabelled():
    rep = S.StarDist(4)
    prob = np.zeros((1, 30, 30), np.float32)
    dist = np.zeros((4, 30, 30), np.float32)
    prob[0, 10, 10], dist[:, 10, 10] = 0.9, 6.0   # big diamond
    prob[0, 10, 11], dist[:, 10, 11] = 0.8, 1.0   # small one inside: overlap/min = 1 -> suppressed
    prob[0, 22, 22], dist[:, 22, 22] = 0.7, 3.0
    dec = rep.decode({"prob": prob, "dist": dist}, {"nms_thresh": 0.4})
    assert dec.n_objects == 2 and list(np.unique(dec.labels)) == [0, 1, 2]
    dec = rep.decode({"prob": prob, "dist": dist}, {"nms_thresh": 1.0})  # nothing suppressed
    # the small diamond (lower score) is painted first and then fully covered: dropped
    assert dec.n_objects == 2
    np.testing.assert_allclose(dec.scores, [0.9, 0.7])


def test_import_is_light():
    import subprocess
    import sys

    code = ("import sys, cellseg.representations.stardist as S; S.StarDist(8).heads(); "
            "print(sorted(m for m in ('numba', 'torch', 'cellseg.representations._stardist_kernels') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("border,grid", [(0, (1, 1)), (2, (1, 1)), (1, (2, 3))])
def test_candidates_match_reference(border, grid):
    rng = np.random.default_rng(border)
    prob = np.round(rng.random((13, 17)), 1).astype(np.float32)  # many ties and exact 0.5s
    dist = rng.random((6, 13, 17)).astype(np.float32)
    pts, sc, d = S.candidates(prob, dist, 0.5, border, grid)
    rp, rs, rd = R.ref_candidates(prob, dist, 0.5, border, grid)
    np.testing.assert_array_equal(pts, rp)
    np.testing.assert_array_equal(sc, rs)
    np.testing.assert_array_equal(d, rd)
    assert (sc > 0.5).all() and len(sc) > 0
    assert S.candidates(np.zeros((4, 4), np.float32), np.zeros((6, 4, 4), np.float32))[0].shape == (0, 2)


def test_candidates_sort_key_orders_negative_scores_and_signed_zeros():
    """The kernel sorts by a key built from the float32 bits: negative scores, -0.0 and
    +0.0 (equal scores: raster order) must come out as a stable argsort puts them."""
    rng = np.random.default_rng(11)
    prob = np.round(rng.normal(size=(21, 19)), 1).astype(np.float32)
    prob[2, 3], prob[4, 5], prob[6, 7], prob[1, 1] = -0.0, 0.0, -0.0, np.float32(-1e-38)  # tiny subnormal
    dist = rng.random((4, 21, 19)).astype(np.float32)
    for thresh in (-0.55, -1e-30, 0.0, 0.3):
        pts, sc, d = S.candidates(prob, dist, thresh, 0)
        rp, rs, rd = R.ref_candidates(prob, dist, thresh, 0, (1, 1))
        np.testing.assert_array_equal(pts, rp)
        np.testing.assert_array_equal(sc, rs)
        np.testing.assert_array_equal(d, rd)


def test_intersection_early_exit_bounds_are_sound():
    # NMS passes (t_lo, t_hi) around the threshold area: a returned value above
    # t_hi must mean the exact area is above it, below t_lo that it is below
    rng = np.random.default_rng(12)
    sc = K.make_scratch(32)
    n_early = [0, 0]
    for _ in range(150):
        ca, pa, cb, pb = _random_pair(rng, 32)
        a = [np.ascontiguousarray(c, np.float64) for c in (ca[1], ca[0], cb[1], cb[0])]
        args = (a[0], a[1], float(pa[1]), float(pa[0]), a[2], a[3], float(pb[1]), float(pb[0]), sc)
        # the dispatcher (polar sweep where it applies) and the fan clipping on its own
        for fn in (K.star_intersection_area, K.fan_intersection_area):
            exact = fn(*args)
            for T in (0.3 * exact, 0.9 * exact, exact, 1.1 * exact, 2.0 * exact + 1):
                lo, hi = T * (1 - 1e-9) - 1e-12, T * (1 + 1e-9) + 1e-12
                r = fn(*args, lo, hi)
                if r > hi:
                    assert exact > T
                elif r < lo:
                    assert exact < T
                else:
                    assert r == exact  # undecided: the full area
                n_early[fn is K.fan_intersection_area] += r != exact
    assert min(n_early) > 50  # the early exits of both were exercised
