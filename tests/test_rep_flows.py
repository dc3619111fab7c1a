"""Flows representation: kernels vs their reference twins, thresholds, round trips."""
from __future__ import annotations

import numpy as np
import pytest

from cellseg import _labels_kernels as LK
from cellseg.labels import sequential
from cellseg.representations import _flows_targets_kernels as TK
from cellseg.representations import flows as F
from cellseg.representations.base import Decoded, make_params
from tests.reference import ref_flows as R

INT_DTYPES = [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64]


# ----------------------------------------------------------------------------- inputs


def voronoi_labels(seed, shape=(40, 48), n=7, fill=0.75):
    """Touching, irregular objects (Voronoi cells cut by disks), some on the border."""
    rng = np.random.default_rng(seed)
    nd = len(shape)
    pts = rng.uniform(0, 1, (n, nd)) * np.array(shape)
    grid = np.indices(shape).reshape(nd, -1).T.astype(float)
    d = ((grid[:, None, :] - pts[None]) ** 2).sum(-1)
    own = d.argmin(1)
    r = rng.uniform(0.3, 0.6, n) * min(shape) * fill
    keep = d[np.arange(len(own)), own] <= r[own] ** 2
    lab = np.where(keep, own + 1, 0).reshape(shape)
    return lab.astype(np.int32)


def thin_cells(shape=(120, 120), seed=0, n=5, width=(3.0, 5.0)):
    """Long thin curved arcs; every other one carries a side branch (Y shape)."""
    rng = np.random.default_rng(seed)
    lab = np.zeros(shape, np.int32)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    k = 0
    for _ in range(500):
        if k == n:
            break
        w = rng.uniform(*width) / 2
        cy, cx = rng.uniform(15, shape[0] - 15), rng.uniform(15, shape[1] - 15)
        R_, a0, span = rng.uniform(20, 45), rng.uniform(0, 2 * np.pi), rng.uniform(1.2, 2.4)
        t = np.linspace(a0, a0 + span, 150)
        path = [np.stack([cy + R_ * (np.sin(t) - np.sin(a0)), cx + R_ * (np.cos(t) - np.cos(a0))], 1)]
        if k % 2:
            m = path[0][75]
            ang, L = rng.uniform(0, 2 * np.pi), rng.uniform(12, 25)
            s = np.linspace(0, L, 40)
            path.append(np.stack([m[0] + s * np.sin(ang), m[1] + s * np.cos(ang)], 1))
        P = np.concatenate(path)
        d = np.min((yy[..., None] - P[:, 0]) ** 2 + (xx[..., None] - P[:, 1]) ** 2, axis=-1)
        m = d <= w * w
        if m.sum() < 40 or (lab[m] > 0).any() or (np.pad(lab, 1)[1:-1, 1:-1][m] > 0).any():
            continue
        grown = np.zeros_like(m)
        grown[1:, :] |= m[:-1, :]
        grown[:-1, :] |= m[1:, :]
        grown[:, 1:] |= m[:, :-1]
        grown[:, :-1] |= m[:, 1:]
        if (lab[grown] > 0).any():
            continue
        k += 1
        lab[m] = k
    return lab


def scramble(lab, seed, dtype=np.int32):
    """Non-sequential ids (same objects) in ``dtype``."""
    rng = np.random.default_rng(seed)
    ids = np.unique(lab)
    ids = ids[ids > 0]
    hi = min(np.iinfo(dtype).max, 10_000)
    new = rng.choice(np.arange(1, hi), size=ids.size, replace=False)
    lut = np.zeros(lab.max() + 1, np.int64)
    lut[ids] = new
    return lut[lab].astype(dtype)


def synth(shape=(128, 128), n=30, seed=0):
    from cellseg.datasets.synthetic import synthetic_cells

    return synthetic_cells(shape, n_cells=n, seed=seed)[1]


def synth3d(shape=(20, 64, 64), n=12, seed=0, anisotropy=2.0):
    from cellseg.datasets.synthetic import synthetic_cells_3d

    return synthetic_cells_3d(shape, n_cells=n, seed=seed, anisotropy=anisotropy)[1]


def same_partition(a, b):
    """True when a and b label the same pixel sets (ids may differ)."""
    if a.shape != b.shape or ((a > 0) != (b > 0)).any():
        return False
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))


def compare_unit(ours, ref, mask, atol=1e-5):
    """Unit vectors agree where the reference gradient is not degenerate."""
    ours = np.asarray(ours, np.float64)[:, mask]
    ref = np.asarray(ref, np.float64)[:, mask]
    nrm = np.sqrt((ref ** 2).sum(0))
    ok = nrm > 0.5  # unit vectors; degenerate (zero) gradients stay 0 in both
    np.testing.assert_allclose(ours[:, ok], ref[:, ok], atol=atol)
    assert np.abs(ours[:, ~ok]).max(initial=0) <= atol


# ----------------------------------------------------------------------------- API


def test_params_and_config():
    rep = F.Flows("omnipose", ndim=3, anisotropy=2.5)
    assert type(rep)(**rep.config()) == rep
    assert [h.name for h in rep.heads()] == ["flow", "prob", "dist"]
    assert [h.channels for h in rep.heads()] == [3, 1, 1]
    assert [h.name for h in F.Flows().heads()] == ["flow", "prob"]
    assert F.Flows().heads()[1].activation == "sigmoid"
    with pytest.raises(TypeError, match="nitr"):
        rep.params({"nitr": 3})
    with pytest.raises(TypeError):
        make_params(F.FlowsParams, {"prob_threshold": 0.5})
    assert rep.params(niter=7).niter == 7
    for bad in ({"niter": -1}, {"max_size_fraction": 0}, {"prob_thresh": np.nan}, {"niter": 1.5},
                {"link_dist": -1.0}):
        with pytest.raises(ValueError):
            F.FlowsParams(**bad)
    with pytest.raises(ValueError):
        F.Flows("stardist")
    with pytest.raises(ValueError):
        F.Flows(ndim=4)
    with pytest.raises(ValueError):
        F.Flows(anisotropy=0)


def test_registry_name():
    from cellseg.representations import get

    assert isinstance(get("flows", mode="omnipose"), F.Flows)


def test_decode_validates_outputs():
    rep = F.Flows()
    lab = voronoi_labels(0)
    out = rep.oracle_outputs(lab)
    with pytest.raises(KeyError):
        rep.decode({"flow": out["flow"]})
    with pytest.raises(ValueError):
        rep.decode({"flow": out["flow"][:1], "prob": out["prob"]})
    bad = dict(out)
    bad["prob"] = out["prob"].copy()
    bad["prob"][0, 0, 0] = np.nan
    with pytest.raises(ValueError):
        rep.decode(bad)
    with pytest.raises(ValueError):
        F.Flows(ndim=3).decode(out)


def test_encode_validates_labels():
    rep = F.Flows()
    with pytest.raises(ValueError):
        rep.encode(np.full((4, 4), 0.5, np.float32))  # fractional labels (whole-number floats are labels)
    with pytest.raises(ValueError):
        rep.encode(-np.ones((4, 4), np.int32))
    with pytest.raises(ValueError):
        rep.encode(np.zeros((4, 4, 4), np.int32))


# ----------------------------------------------------------------------------- targets vs reference


@pytest.mark.parametrize("seed", range(3))
def test_cellpose_flows_vs_reference_2d(seed):
    lab = voronoi_labels(seed)
    ours = F.cellpose_flows(lab)
    ref = R.ref_cellpose_flows(lab)
    compare_unit(ours, ref, lab > 0)
    assert np.all(ours[:, lab == 0] == 0)
    # a fixed iteration count for every object, as Cellpose does for a whole image
    compare_unit(F.cellpose_flows(lab, niter=37), R.ref_cellpose_flows(lab, niter=37), lab > 0)


def test_cellpose_flows_2d_bit_identical_to_reference():
    """The twin sums the nine neighbours in the kernel's order and divides by 9:
    the float32 flows are the same bits (the kernel sweeps each box as one flat
    run; frame columns, one-pixel and one-row objects, objects on every border
    and an object covering the image must come out as the twin's)."""
    lab = np.zeros((9, 11), np.int32)
    lab[0, 0] = 1
    lab[8, 10] = 2
    lab[4, 2:9] = 3
    lab[1:8, 10] = 4
    lab[2, 5] = 5
    cases = [lab, np.ones((5, 7), np.int32), np.ones((1, 6), np.int32), np.ones((6, 1), np.int32),
             voronoi_labels(0), voronoi_labels(1), synth(seed=1)]
    for lab in cases:
        np.testing.assert_array_equal(F.cellpose_flows(lab), R.ref_cellpose_flows(lab).astype(np.float32))
    lab = voronoi_labels(2)
    np.testing.assert_array_equal(F.cellpose_flows(lab, niter=37),
                                  R.ref_cellpose_flows(lab, niter=37).astype(np.float32))


@pytest.mark.parametrize("dtype", INT_DTYPES)
def test_targets_every_int_dtype_and_nonsequential_ids(dtype):
    lab = voronoi_labels(5, shape=(24, 30), n=5)
    sc = scramble(lab, 1, dtype)
    assert sc.dtype == dtype
    for mode in ("cellpose", "omnipose"):
        rep = F.Flows(mode)
        a = rep.encode(lab)
        b = rep.encode(sc)
        assert set(a) == set(b) == {h.name for h in rep.heads()}
        for k in a:
            assert a[k].dtype == np.float32 and a[k].shape[1:] == lab.shape
            np.testing.assert_array_equal(a[k], b[k])


def test_huge_ids_use_the_unique_path():
    lab = voronoi_labels(2, shape=(20, 20), n=4)
    big = np.where(lab > 0, lab.astype(np.int64) * 400_000_000, 0)
    np.testing.assert_array_equal(F.cellpose_flows(big), F.cellpose_flows(lab))


def test_cellpose_flows_vs_reference_3d():
    lab = voronoi_labels(3, shape=(9, 14, 16), n=5)
    compare_unit(F.cellpose_flows(lab), R.ref_cellpose_flows(lab), lab > 0)


@pytest.mark.parametrize("seed", range(3))
def test_omnipose_flows_vs_reference_2d(seed):
    lab = voronoi_labels(seed + 10, shape=(30, 34), n=6)
    mu, dist = F.omnipose_flows(lab)
    rmu, rdist = R.ref_omnipose_flows(lab)
    np.testing.assert_allclose(dist, rdist, atol=1e-6)
    compare_unit(mu, rmu, lab > 0, atol=1e-5)
    assert np.all(dist[lab == 0] == 0) and np.all(dist[lab > 0] > 0)


def test_omnipose_flows_vs_reference_3d():
    lab = voronoi_labels(4, shape=(8, 14, 15), n=5)
    mu, dist = F.omnipose_flows(lab, anisotropy=2.0)
    rmu, rdist = R.ref_omnipose_flows(lab, anisotropy=2.0)
    np.testing.assert_allclose(dist, rdist, atol=1e-6)
    compare_unit(mu, rmu, lab > 0, atol=1e-5)


def test_omnipose_distance_is_a_distance():
    # a disk far from the border: the smooth distance is close to the Euclidean one
    yy, xx = np.mgrid[:61, :61]
    lab = ((yy - 30) ** 2 + (xx - 30) ** 2 <= 20 ** 2).astype(np.int32)
    _, dist = F.omnipose_flows(lab)
    assert 19.0 < dist[30, 30] < 21.0  # nearest background pixel at distance 21
    # an object filling the image: the image border is the source
    _, dist = F.omnipose_flows(np.ones((9, 9), np.int32))
    assert np.isfinite(dist).all() and dist[4, 4] > dist[0, 0] > 0


def test_border_objects_and_empty():
    lab = np.zeros((12, 12), np.int32)
    lab[:4, :5] = 3  # corner object
    lab[5:, 10:] = 9  # right border
    lab[11, 0] = 2  # single pixel
    for mode in ("cellpose", "omnipose"):
        t = F.Flows(mode).encode(lab)
        assert np.isfinite(t["flow"]).all()
        n = np.sqrt((t["flow"] ** 2).sum(0))
        assert np.allclose(n[(lab > 0) & (n > 0)], 5.0, atol=1e-4)
    compare_unit(F.cellpose_flows(lab), R.ref_cellpose_flows(lab), lab > 0)
    mu, dist = F.omnipose_flows(lab)
    rmu, rdist = R.ref_omnipose_flows(lab)
    np.testing.assert_allclose(dist, rdist, atol=1e-6)
    compare_unit(mu, rmu, lab > 0)
    for nd in (2, 3):
        z = np.zeros((6,) * nd, np.uint16)
        for mode in ("cellpose", "omnipose"):
            rep = F.Flows(mode, ndim=nd)
            t = rep.encode(z)
            assert not t["flow"].any() and not t["prob"].any()
            d = rep.decode(rep.oracle_outputs(z))
            assert d.labels.dtype == np.int32 and not d.labels.any() and d.n_objects == 0


# ----------------------------------------------------------------------------- decoding pieces vs reference


def smooth_field(rng, shape, amp=1.0):
    from scipy import ndimage as ndi

    f = np.array([ndi.gaussian_filter(rng.normal(size=shape), 2.0) for _ in shape])
    f *= amp / np.abs(f).max()
    return f.astype(np.float32)


@pytest.mark.parametrize("suppress", [False, True])
@pytest.mark.parametrize("nd", [2, 3])
def test_follow_vs_reference(nd, suppress):
    rng = np.random.default_rng(nd + 2 * suppress)
    shape = (17, 19) if nd == 2 else (7, 9, 11)
    step = smooth_field(rng, shape)
    pts = np.array(np.nonzero(rng.random(shape) < 0.5), np.float64)
    pts[:, :5] += rng.random((nd, 5))  # off-grid starts too
    pts = np.clip(pts, 0, np.array(shape)[:, None] - 1)
    ours = F.follow_flows(step, pts, 15, suppress=suppress)
    ref = R.ref_follow(step, pts, 15, suppress=suppress)
    np.testing.assert_allclose(ours, ref, atol=2e-5)  # float32 positions; float64 interpolation in the twin


def test_follow_exact_cases():
    step = np.zeros((2, 6, 7), np.float32)
    pts = np.array(np.nonzero(np.ones((6, 7))), np.float64)
    np.testing.assert_array_equal(F.follow_flows(step, pts, 50), pts)  # zero flow: nothing moves
    step[1] = 1.0  # constant +x: points walk to the border and stay clamped there
    out = F.follow_flows(step, pts, 3)
    np.testing.assert_array_equal(out[1], np.minimum(pts[1] + 3, 6))
    np.testing.assert_array_equal(out[0], pts[0])
    with pytest.raises(ValueError):
        F.follow_flows(step, pts[:1], 3)


@pytest.mark.parametrize("nd", [2, 3])
def test_follow_early_stops_vs_reference(nd):
    """The early stops (``tol``) against the twin that keeps every point's whole
    float32 path and scans it afterwards: the same end points, bit for bit."""
    rng = np.random.default_rng(10 + nd)
    shape = (17, 19) if nd == 2 else (7, 9, 11)
    step = smooth_field(rng, shape)
    pts = np.array(np.nonzero(rng.random(shape) < 0.5), np.float64)
    pts[:, :5] += rng.random((nd, 5))
    pts = np.clip(pts, 0, np.array(shape)[:, None] - 1)
    fired = 0
    for niter in (1, 2, 15, 60):
        full = F.follow_flows(step, pts, niter)
        np.testing.assert_array_equal(full, R.ref_follow_stops(step, pts, niter, 0.0))  # exact stops only
        for tol in (0.01, 0.05, 0.5):
            ours = F.follow_flows(step, pts, niter, tol=tol)
            np.testing.assert_array_equal(ours, R.ref_follow_stops(step, pts, niter, tol))
            fired += int(np.any(ours != full, 0).sum())
    assert fired > 0  # the approximate stop did fire


def test_follow_early_stops_on_cellpose_flows_keep_pixels():
    """On Cellpose flows every point settles on a sink and stops early; its end
    point moves by about ``tol`` at most and never leaves its pixel."""
    lab = voronoi_labels(0)
    fg = lab > 0
    step = F.Flows().encode(lab)["flow"] * fg / np.float32(F.FLOW_SCALE)
    pts = np.array(np.nonzero(fg), np.float64)
    full = F.follow_flows(step, pts, 200)
    ours = F.follow_flows(step, pts, 200, tol=F.FOLLOW_TOL)
    np.testing.assert_array_equal(ours, R.ref_follow_stops(step, pts, 200, F.FOLLOW_TOL))
    assert np.any(ours != full)
    np.testing.assert_array_equal(np.floor(ours), np.floor(full))
    assert np.abs(ours - full).max() <= F.FOLLOW_TOL


def test_follow_early_stop_thresholds():
    """A constant step of 1/64 px along x (every value exact in float32): the
    two-step displacement is 1/32, so with ``r`` steps left the bound is
    ``ceil(r/2) / 32``."""
    step = np.zeros((2, 4, 40), np.float32)
    step[1] = 1.0 / 64
    niter = 20
    x0 = 2.0
    pts = np.array([[1.5], [x0]])
    full = F.follow_flows(step, pts, niter)
    assert full[1, 0] == x0 + niter / 64
    # tol = 1/16: the first stop is at t = 15 (r = 4, bound 2/32, even: end point p_16)
    tol = 1 / 16
    assert F.follow_flows(step, pts, niter, tol=tol)[1, 0] == x0 + 16 / 64
    # just below: not at t = 15 nor t = 16 (r = 3, bound 2/32); t = 17 (r = 2, 1/32): p_18
    below = float(np.nextafter(np.float32(tol), np.float32(0)))
    assert F.follow_flows(step, pts, niter, tol=below)[1, 0] == x0 + 18 / 64
    # below 1/32 only the last step (r = 0, bound 0) stops: the full run
    assert F.follow_flows(step, pts, niter, tol=float(np.nextafter(np.float32(1 / 32), np.float32(0))))[1, 0] \
        == full[1, 0]
    # the pixel test: at t = 15, o + bound = p_16 + 1/16 lands exactly on 3.0, so no
    # early stop at all (every later candidate also reaches pixel 3): the full run
    x1 = 3.0 - 20 / 64
    p1 = np.array([[1.5], [x1]])
    assert F.follow_flows(step, p1, niter, tol=tol)[1, 0] == F.follow_flows(step, p1, niter)[1, 0] \
        == x1 + niter / 64
    # 1/64 further left it stays inside pixel 2 and stops at p_16
    x2 = x1 - 1 / 64
    assert F.follow_flows(step, np.array([[1.5], [x2]]), niter, tol=tol)[1, 0] == x2 + 16 / 64
    for p in (pts, p1):
        for t in (0.0, below, tol):
            np.testing.assert_array_equal(F.follow_flows(step, p, niter, tol=t), R.ref_follow_stops(step, p, niter, t))
    with pytest.raises(ValueError, match="tol"):
        F.follow_flows(step, pts, niter, tol=-0.1)
    with pytest.raises(ValueError, match="tol"):
        F.follow_flows(step, pts, niter, suppress=True, tol=0.05)


def clustered_points(rng, shape, n_clusters, per, spread):
    centres = rng.uniform(3, np.array(shape) - 3, (n_clusters, len(shape)))
    pts = np.concatenate([c + rng.normal(0, spread, (per, len(shape))) for c in centres]).T
    return np.clip(pts, 0, np.array(shape)[:, None] - 1)


@pytest.mark.parametrize("seed", range(4))
def test_cellpose_clusters_vs_reference(seed):
    rng = np.random.default_rng(seed)
    shape = (40, 44)
    pts = clustered_points(rng, shape, 9, 80, 0.5 + seed * 0.3)
    pts = np.concatenate([pts, rng.uniform(0, 39, (2, 60))], 1)  # plus scattered noise
    ours = F.cellpose_clusters(pts, shape)
    ref = R.ref_cellpose_clusters(pts, shape)
    np.testing.assert_array_equal(ours, ref)
    assert ours.max() > 0


def test_cellpose_clusters_vs_reference_3d():
    rng = np.random.default_rng(7)
    shape = (14, 20, 22)
    pts = clustered_points(rng, shape, 6, 60, 1.0)
    np.testing.assert_array_equal(F.cellpose_clusters(pts, shape), R.ref_cellpose_clusters(pts, shape))


def test_cellpose_seed_and_growth_thresholds():
    shape = (20, 20)
    for count, is_seed in ((10, False), (11, True)):
        pts = np.array([[5.5] * count, [5.5] * count])
        ids = F.cellpose_clusters(pts, shape, seed_min_count=10)
        assert (ids > 0).all() == is_seed and (ids > 0).any() == is_seed
        np.testing.assert_array_equal(ids, R.ref_cellpose_clusters(pts, shape, 10))
    # growth goes through bins with more than 2 end points only
    for side, grows in ((2, False), (3, True)):
        pts = np.array([[5.2] * 20 + [5.2] * side, [5.2] * 20 + [6.2] * side])
        ids = F.cellpose_clusters(pts, shape)
        assert (ids[20:] == ids[0]).all() == grows
        np.testing.assert_array_equal(ids, R.ref_cellpose_clusters(pts, shape))
    # two equal peaks 3 bins apart: both are seeds (5x5 window), the later one wins the overlap
    pts = np.array([[5.0] * 15 + [5.0] * 15, [5.0] * 15 + [8.0] * 15])
    ids = F.cellpose_clusters(pts, shape)
    np.testing.assert_array_equal(ids, R.ref_cellpose_clusters(pts, shape))
    assert set(ids) == {1, 2}


@pytest.mark.parametrize("seed", range(3))
def test_omnipose_clusters_vs_reference(seed):
    rng = np.random.default_rng(seed)
    shape = (25, 27) if seed < 2 else (7, 10, 11)
    fg = rng.random(shape) < 0.6
    flow = smooth_field(rng, shape)
    final = np.array(np.nonzero(fg), float) + rng.normal(0, 1.5, (len(shape), fg.sum()))
    for link, div in ((3.0, 0.5), (1.5, 10.0), (2.0, -0.2)):
        ours = F.omnipose_clusters(final, fg, flow, link, div)
        np.testing.assert_array_equal(ours, R.ref_omnipose_clusters(final, fg, flow, link, div))
    # full connectivity, the depth rule and region merging (random depths, some exactly at min_depth)
    depth = rng.choice([0.5, 0.84, 1.0, 1.5, 3.0], size=shape)
    for conn, md, frac in ((len(shape), 0.0, 2.0), (1, 1.0, 2.0), (1, 1.0, 0.5), (len(shape), 1.5, 0.5),
                           (1, 1.0, 1.0), (1, 3.0, 0.0)):
        for link, div in ((3.0, 0.5), (2.0, 0.0)):
            ours = F.omnipose_clusters(final, fg, flow, link, div, conn, depth, md, frac)
            ref = R.ref_omnipose_clusters(final, fg, flow, link, div, conn, depth, md, frac)
            np.testing.assert_array_equal(ours, ref)
    # fragment absorption (1/3 * 3.0 == 1.0 exactly: peaks of 1.0 next to 3.0 sit at the ratio)
    for conn, md, frac, ratio in ((1, 1.0, 2.0, 0.3), (1, 1.0, 0.5, 1 / 3), (len(shape), 0.0, 2.0, 0.5),
                                  (1, 1.5, 1.0, 1.0), (1, 3.0, 2.0, 0.2)):
        for link, div in ((3.0, 0.5), (2.0, 0.0)):
            ours = F.omnipose_clusters(final, fg, flow, link, div, conn, depth, md, frac, ratio)
            ref = R.ref_omnipose_clusters(final, fg, flow, link, div, conn, depth, md, frac, ratio)
            np.testing.assert_array_equal(ours, ref)


def test_omnipose_link_thresholds():
    fg = np.zeros((3, 4), bool)
    fg[1, 1:3] = True
    flow = np.zeros((2, 3, 4), np.float32)
    flow[1, 1, 1] = -1.0  # pixel (1,1) moves -x, (1,2) still: they separate at rate 1
    final = np.array([[1.0, 1.0], [1.0, 4.0]])  # end points 3 apart
    assert len(set(F.omnipose_clusters(final, fg, flow, 3.0, 1.0))) == 1
    assert len(set(F.omnipose_clusters(final, fg, flow, np.nextafter(3.0, 0), 1.0))) == 2
    assert len(set(F.omnipose_clusters(final, fg, flow, 3.0, np.nextafter(1.0, 0)))) == 2


def test_omnipose_depth_rule_and_merge_thresholds():
    """Two touching 1-pixel-wide rows: every pair is compatible; the depth rule
    cuts pairs with both depths below min_depth (>= links), region merging
    joins the pieces back when g / n >= merge_frac (exactly at the fraction too)."""
    fg = np.zeros((4, 6), bool)
    fg[1:3, 1:5] = True
    flow = np.zeros((2, 4, 6), np.float32)
    final = np.array(np.nonzero(fg), float)
    depth = np.full(fg.shape, 0.84)
    args = (final, fg, flow, 3.0, 0.5, 1, depth)
    assert len(set(F.omnipose_clusters(*args, 0.84, 2.0))) == 1  # max depth == min_depth links
    assert len(set(F.omnipose_clusters(*args, np.nextafter(0.84, 1), 2.0))) == 8  # all cut
    assert len(set(F.omnipose_clusters(*args, 1.0, 1.0))) == 1  # every pair compatible: g/n = 1
    # one incompatible pair (flows pull (1,2)-(1,3) apart) among the cross pairs of the last merge
    flow[1, 1, 3] = 1.0
    flow[1, 1, 2] = -1.0
    for frac in (0.5, 0.75, 1.0):
        ours = F.omnipose_clusters(final, fg, flow, 3.0, 0.5, 1, depth, 1.0, frac)
        ref = R.ref_omnipose_clusters(final, fg, flow, 3.0, 0.5, 1, depth, 1.0, frac)
        np.testing.assert_array_equal(ours, ref)


def test_omnipose_absorb_ratio_threshold_and_choice():
    """Three unlinked groups A | F | B (end points far apart): F, the fragment,
    joins a neighbour only when its peak depth is strictly below absorb_ratio
    times that neighbour's; it picks the neighbour sharing the most pairs
    (ties: the lower root, i.e. A)."""
    def case(rows, depth_f, ratio):
        fg = np.ones((2, 6), bool)
        final = np.zeros((2, 12))
        depth = np.full(fg.shape, 8.0)
        group = np.array([[{"A": 0, "F": 1, "B": 2}[c] for c in r] for r in rows])
        final[1] = group.ravel() * 50.0
        depth[group == 1] = depth_f
        flow = np.zeros((2,) + fg.shape, np.float32)
        args = (final, fg, flow, 3.0, 0.5, 1, depth, 0.0, 2.0, ratio)
        ours = F.omnipose_clusters(*args)
        np.testing.assert_array_equal(ours, R.ref_omnipose_clusters(*args))
        return ours.reshape(fg.shape)

    rows = ("AAFFBB", "AAFBBB")  # F touches A by 2 pairs, B by 3
    assert len(set(case(rows, 2.0, 0.25).ravel())) == 3  # 2.0 == 0.25 * 8: not below, kept
    lab = case(rows, np.nextafter(2.0, 0), 0.25)
    assert len(set(lab.ravel())) == 2 and lab[0, 2] == lab[0, 5] != lab[0, 0]  # into B
    assert len(set(case(rows, 2.0, 0.0).ravel())) == 3  # disabled
    lab = case(("AAFFBB", "AAFFBB"), 1.0, 0.25)  # 2 pairs each side: the lower root (A) wins
    assert len(set(lab.ravel())) == 2 and lab[0, 2] == lab[0, 0] != lab[0, 5]
    with pytest.raises(ValueError, match="absorb_ratio"):
        F.FlowsParams(absorb_ratio=1.5)


def test_flow_errors_vs_reference():
    rng = np.random.default_rng(0)
    lab = scramble(voronoi_labels(6), 2)
    flow = rng.normal(size=(2,) + lab.shape).astype(np.float32) * 5
    for mode in ("cellpose", "omnipose"):
        mu = F.cellpose_flows(lab) if mode == "cellpose" else F.omnipose_flows(lab)[0]
        np.testing.assert_allclose(F.mask_flow_errors(lab, flow, mode), R.ref_flow_errors(lab, mu, flow),
                                   rtol=1e-6)


def test_fused_flow_errors_equal_flows_then_errors():
    """``heat_flow_errors_2d`` (per object, no flow image) gives the very float64
    values of ``heat_flows_2d`` then ``flow_errors``; ``group_points`` gives the CSR
    of ``group_pixels`` straight from the points (ids 0 skipped, empty ids)."""
    rng = np.random.default_rng(4)
    for lab in (voronoi_labels(6), synth(seed=2), np.ones((1, 5), np.int32)):
        lab, n = sequential(lab, 2)
        flow = (rng.normal(size=(2,) + lab.shape) * 5).astype(np.float32)
        mu = F.cellpose_flows(lab)
        ref = TK.flow_errors(lab.ravel(), mu.reshape(2, -1), flow.reshape(2, -1), F.FLOW_SCALE, n)
        order, offsets = LK.group_pixels(lab.ravel(), n)
        got = np.full(n, -1.0)
        TK.heat_flow_errors_2d(order, offsets, lab.shape[0], lab.shape[1], flow, F.FLOW_SCALE, got)
        np.testing.assert_array_equal(got, ref)
        np.testing.assert_array_equal(F.mask_flow_errors(lab, flow), ref)
        idx = np.flatnonzero(lab)
        o2, off2 = LK.group_points(lab.ravel()[idx], idx, n)
        np.testing.assert_array_equal(o2, order)
        np.testing.assert_array_equal(off2, offsets)
    # points without an object (id 0) and an id without points (NaN error)
    ids = np.array([0, 2, 2, 0, 2], np.int32)
    idx = np.array([1, 3, 4, 6, 9], np.int64)
    order, offsets = LK.group_points(ids, idx, 3)
    np.testing.assert_array_equal(order, [3, 4, 9])
    np.testing.assert_array_equal(offsets, [0, 0, 3, 3])
    err = np.zeros(3)
    TK.heat_flow_errors_2d(order, offsets, 2, 5, np.zeros((2, 2, 5), np.float32), F.FLOW_SCALE, err)
    assert np.isnan(err[0]) and np.isnan(err[2]) and err[1] > 0


# ----------------------------------------------------------------------------- decoder thresholds


def test_flow_threshold_exactly_at_error():
    lab = voronoi_labels(1)
    rep = F.Flows()
    out = rep.oracle_outputs(lab)
    rng = np.random.default_rng(0)
    out["flow"] = (out["flow"] + rng.normal(0, 1.0, out["flow"].shape) * (lab > 0)).astype(np.float32)
    ref = rep.decode(out, dict(flow_threshold=1e9))
    err = ref.extra["flow_errors"]
    assert err.size >= 3 and np.all(err > 0)
    e = float(np.sort(err)[err.size // 2])
    keep = rep.decode(out, dict(flow_threshold=e))
    drop = rep.decode(out, dict(flow_threshold=np.nextafter(e, 0)))
    assert keep.n_objects == int((err <= e).sum())
    assert drop.n_objects == int((err < e).sum()) == keep.n_objects - 1
    assert np.all(keep.extra["flow_errors"] <= e)
    off = rep.decode(out, dict(flow_threshold=0))  # QC disabled
    assert off.n_objects == ref.n_objects and np.isnan(off.extra["flow_errors"]).all()


def test_prob_thresh_is_strict():
    lab = np.zeros((30, 30), np.int32)
    lab[5:20, 5:20] = 4
    rep = F.Flows()
    out = rep.oracle_outputs(lab)
    out["prob"] = np.where(lab > 0, 0.7, 0.2)[None].astype(np.float32)
    assert rep.decode(out, dict(prob_thresh=0.7)).n_objects == 0
    d = rep.decode(out, dict(prob_thresh=np.nextafter(np.float32(0.7), 0)))
    assert d.n_objects == 1 and same_partition(d.labels, lab)
    np.testing.assert_allclose(d.scores, [0.7], rtol=1e-6)


def test_min_size_and_max_size():
    lab = np.zeros((40, 40), np.int32)
    lab[2:6, 2:6] = 1  # 16 px
    lab[20:35, 20:35] = 2
    rep = F.Flows()
    out = rep.oracle_outputs(lab)
    assert rep.decode(out, dict(min_size=16)).n_objects == 2
    assert rep.decode(out, dict(min_size=17)).n_objects == 1
    assert rep.decode(out, dict(max_size_fraction=224 / 1600)).n_objects == 1  # 225 px object dropped


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("mode", ["cellpose", "omnipose"])
@pytest.mark.parametrize("seed", [0, 1])
def test_round_trip_synthetic_2d(mode, seed):
    lab = synth(seed=seed)
    rep = F.Flows(mode)
    d = rep.decode(rep.oracle_outputs(scramble(lab, seed, np.uint16)))
    assert isinstance(d, Decoded) and d.labels.dtype == np.int32
    assert R.ref_ap(lab, d.labels, 0.5) == 1.0
    assert R.ref_ap(lab, d.labels, 0.9) == 1.0
    assert d.scores.shape == (d.n_objects,) and np.allclose(d.scores, 1.0)
    assert d.extra["flow_errors"].shape == (d.n_objects,)
    if mode == "cellpose":  # exact: the QC recomputes the very flows that were decoded
        assert np.all(d.extra["flow_errors"] < 1e-9)
        assert same_partition(d.labels, lab)
    else:  # a few single border pixels can be cut off (local distance maxima on the border)
        assert np.mean(d.labels[lab > 0] > 0) > 0.995


@pytest.mark.parametrize("mode", ["cellpose", "omnipose"])
def test_round_trip_synthetic_3d(mode):
    lab = synth3d()
    rep = F.Flows(mode, ndim=3, anisotropy=2.0)
    d = rep.decode(rep.oracle_outputs(lab))
    assert R.ref_ap(lab, d.labels, 0.5) == 1.0
    assert R.ref_ap(lab, d.labels, 0.9) == 1.0


@pytest.mark.parametrize("seed", range(3))
def test_omnipose_keeps_thin_branched_cells_whole(seed):
    lab = thin_cells(seed=seed)
    assert lab.max() == 5
    rep = F.Flows("omnipose")
    d = rep.decode(rep.oracle_outputs(lab))
    assert R.ref_ap(lab, d.labels, 0.5) == 1.0
    assert R.ref_ap(lab, d.labels, 0.9) == 1.0


def test_round_trip_with_noisy_flows_and_probs():
    lab = synth(seed=3)
    for mode in ("cellpose", "omnipose"):
        rep = F.Flows(mode)
        out = rep.oracle_outputs(lab)
        rng = np.random.default_rng(0)
        out["flow"] = (out["flow"] + rng.normal(0, 0.5, out["flow"].shape)).astype(np.float32)
        out["prob"] = np.clip(out["prob"] * 0.8 + 0.1 + rng.normal(0, 0.05, out["prob"].shape), 0, 1)
        d = rep.decode(out)
        assert R.ref_ap(lab, d.labels, 0.5) >= 0.95


def test_label_sums_vs_bincount():
    rng = np.random.default_rng(7)
    lab = rng.integers(0, 6, 5000).astype(np.int32)
    lab[lab == 3] = 0  # an absent id
    vals = rng.random(5000).astype(np.float32)
    counts, sums = LK.label_sums(lab, vals, 7)
    np.testing.assert_array_equal(counts, np.bincount(lab, minlength=8))
    np.testing.assert_allclose(sums[1:], np.bincount(lab, weights=vals.astype(np.float64), minlength=8)[1:],
                               rtol=1e-12)
    assert sums[0] == 0.0  # the background is only counted


def test_padded_step_2d_equals_numpy():
    rng = np.random.default_rng(3)
    flow = (rng.normal(size=(2, 23, 31)) * 5).astype(np.float32)
    fg = rng.random((23, 31)) < 0.6
    got = F._padded_step(flow, fg)
    ref = np.zeros((24, 32, 2), np.float32)
    ref[:23, :31] = np.moveaxis(flow * fg / np.float32(F.FLOW_SCALE), 0, -1)
    np.testing.assert_array_equal(got, ref)
