import numpy as np
import pytest
from scipy import ndimage as ndi

from cellseg.datasets import synthetic as syn
from cellseg.datasets import synthetic_cells, synthetic_cells_3d, synthetic_stack


def _touching_ids(lab):
    """ids that share an (8-connected) edge with another object."""
    ids = set()
    nd = lab.ndim
    for ax in range(nd):
        for shift in (1,):
            a = np.moveaxis(lab, ax, 0)
            x, y = a[:-shift], a[shift:]
            m = (x != 0) & (y != 0) & (x != y)
            ids |= set(np.unique(x[m])) | set(np.unique(y[m]))
    if nd == 2:  # diagonals
        for x, y in ((lab[:-1, :-1], lab[1:, 1:]), (lab[:-1, 1:], lab[1:, :-1])):
            m = (x != 0) & (y != 0) & (x != y)
            ids |= set(np.unique(x[m])) | set(np.unique(y[m]))
    return ids


def test_types_shapes_and_exact_count():
    img, lab = synthetic_cells((128, 160), n_cells=30, seed=1)
    assert img.shape == lab.shape == (128, 160)
    assert img.dtype == np.float32 and lab.dtype == np.int32
    assert set(np.unique(lab)) == set(range(31))


def test_deterministic_per_seed():
    a = synthetic_cells((96, 96), n_cells=12, seed=7)
    b = synthetic_cells((96, 96), n_cells=12, seed=7)
    c = synthetic_cells((96, 96), n_cells=12, seed=8)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])
    g = synthetic_cells((96, 96), n_cells=12, seed=np.random.default_rng(7))
    assert np.array_equal(g[1], a[1])


def test_default_count_scales_with_area():
    _, small = synthetic_cells((128, 128), seed=0)
    _, big = synthetic_cells((256, 256), seed=0)
    assert 5 <= small.max() and 3 * small.max() <= big.max() <= 5 * small.max()


def test_objects_connected_and_sized():
    _, lab = synthetic_cells((256, 256), n_cells=60, radius=(5, 9), seed=2, touching=0.6)
    for i, sl in enumerate(ndi.find_objects(lab), start=1):
        _, n = ndi.label(lab[sl] == i)
        assert n == 1, f"object {i} has {n} components"
    areas = np.bincount(lab.ravel())[1:]
    assert areas.min() >= syn._MIN_PIXELS
    assert areas.max() <= np.pi * (9 * 1.6 * 1.2) ** 2  # bounded by the largest possible shape
    assert areas.std() > 5  # differently sized


def test_touching_zero_keeps_cells_apart_and_one_packs_them():
    _, apart = synthetic_cells((256, 256), n_cells=40, seed=3, touching=0.0)
    assert _touching_ids(apart) == set()
    # the gap is respected: dilating every object by 1 pixel never merges two objects
    grown = ndi.grey_dilation(apart, size=3)
    assert len(np.unique(grown)) == 41
    _, packed = synthetic_cells((256, 256), n_cells=40, seed=3, touching=1.0)
    assert len(_touching_ids(packed)) >= 0.9 * 40


def test_no_overlap_later_cells_never_overwrite_earlier_ones():
    rng = np.random.default_rng(0)
    lab, cells, rasters = syn._place_cells(rng, (160, 160), np.ones(2), 50, (6, 14), 1.0, 1.6, 0.15, 2.0)
    for i, ras in enumerate(rasters, start=1):
        assert int(ras.mask.sum()) == int((lab == i).sum())


def test_star_convex_wrt_centre():
    rng = np.random.default_rng(4)
    lab, cells, _ = syn._place_cells(rng, (160, 160), np.ones(2), 45, (6, 14), 0.8, 1.6, 0.15, 2.0)
    bad = total = 0
    for i, cell in enumerate(cells, start=1):
        pts = np.argwhere(lab == i).astype(float)
        c = cell.center
        for p in pts:
            n = int(np.ceil(np.abs(p - c).max())) + 1
            s = np.arange(n + 1) / n
            q = np.rint(c[None] + s[:, None] * (p - c)[None]).astype(int)
            total += 1
            bad += int(np.any(lab[q[:, 0], q[:, 1]] != i))
    assert bad / total < 0.01, (bad, total)


def test_impossible_density_raises_clearly():
    with pytest.raises(ValueError, match="could place only"):
        synthetic_cells((32, 32), n_cells=200, radius=(6, 8))


@pytest.mark.parametrize("kw", [dict(shape=(10, 10, 10)), dict(radius=(5, 2)), dict(touching=1.5),
                                dict(noise=-1), dict(n_cells=-3)])
def test_bad_arguments(kw):
    with pytest.raises(ValueError):
        synthetic_cells(**kw)


def test_render_knobs_validated_and_used():
    with pytest.raises(TypeError, match="unknown Render option"):
        synthetic_cells((64, 64), n_cells=3, render={"sparkle": 1})
    clean, lab = synthetic_cells((128, 128), n_cells=15, seed=5, noise=0.0)
    noisy, lab2 = synthetic_cells((128, 128), n_cells=15, seed=5, noise=3.0)
    assert np.array_equal(lab, lab2)
    bgmask = ndi.binary_erosion(lab == 0, iterations=4)
    # noise-free background is smooth; noisy one is not
    assert np.abs(np.diff(clean, axis=1))[bgmask[:, 1:]].mean() < 0.005
    assert np.abs(np.diff(noisy, axis=1))[bgmask[:, 1:]].mean() > 0.02
    # cells are brighter than the background
    assert clean[lab > 0].mean() > clean[bgmask].mean() + 0.2
    flat, lf = synthetic_cells((64, 64), n_cells=4, seed=5, noise=0.0,
                               render=syn.Render(gradient=0.0, texture=0.0, blur=0.0, intensity=(0.5, 0.5)))
    assert np.allclose(flat[lf == 0], 0.1, atol=1e-6)
    assert flat[lf > 0].min() >= 0.1 + 0.5 * 0.7 - 1e-6 and flat[lf > 0].max() <= 0.6 + 1e-6


def test_3d_anisotropy_and_count():
    img, lab = synthetic_cells_3d((24, 96, 96), n_cells=15, radius=(6, 10), anisotropy=2.0, seed=0)
    assert img.shape == lab.shape == (24, 96, 96) and lab.dtype == np.int32
    assert set(np.unique(lab)) == set(range(16))
    ext = np.array([[s.stop - s.start for s in sl] for sl in ndi.find_objects(lab)], float)
    inner = (ext[:, 1] < 30) & (ext[:, 0] < 20)
    ratio = np.median(ext[inner, 1] / ext[inner, 0])
    assert 1.4 < ratio < 3.0  # about twice as many pixels in Y as slices in Z
    for i, sl in enumerate(ndi.find_objects(lab), start=1):
        assert ndi.label(lab[sl] == i)[1] == 1
    a, b = synthetic_cells_3d((16, 48, 48), n_cells=4, seed=9), synthetic_cells_3d((16, 48, 48), n_cells=4, seed=9)
    assert np.array_equal(a[1], b[1])


def test_stack_consistent_ids_and_small_motion():
    imgs, labs = synthetic_stack(4, (128, 128), n_cells=20, seed=0, motion=1.0)
    assert imgs.shape == labs.shape == (4, 128, 128) and labs.dtype == np.int32
    first = set(np.unique(labs[0])) - {0}
    assert first == set(range(1, 21))
    for t in range(1, 4):
        ids = set(np.unique(labs[t])) - {0}
        assert ids <= first and len(ids) >= 18
        c0 = ndi.center_of_mass(labs[t - 1] > 0, labs[t - 1], sorted(ids & set(np.unique(labs[t - 1]))))
        c1 = ndi.center_of_mass(labs[t] > 0, labs[t], sorted(ids & set(np.unique(labs[t - 1]))))
        step = np.linalg.norm(np.array(c1) - np.array(c0), axis=1)
        assert np.median(step) < 4.0 and step.max() > 0.1  # cells move, a little
    assert not np.array_equal(labs[0], labs[3])


@pytest.mark.slow
def test_benchmark_sizes_honour_counts():
    _, lab = synthetic_cells((2048, 2048), n_cells=2000, seed=0)
    assert lab.max() == 2000 and len(np.unique(lab)) == 2001
