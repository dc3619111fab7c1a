import numpy as np
import pytest
from scipy import ndimage as ndi

from cellseg.tiling import block_grid, owned_objects, run_tiled, tile_grid


@pytest.mark.parametrize("shape,tile,margin,div", [((100, 130), 48, 8, 8), ((64, 64), 32, 0, 1),
                                                     ((37, 91), 40, 5, 4), ((20, 30, 40), 24, 4, 4)])
def test_tile_cores_partition_image(shape, tile, margin, div):
    cover = np.zeros(shape, np.int32)
    for t in tile_grid(shape, tile, margin, div):
        cover[t.core] += 1
        for ax, s in enumerate(t.read):
            assert s.start % div == 0
            assert 0 <= s.start <= t.core[ax].start and t.core[ax].stop <= s.stop <= shape[ax]
            assert t.crop[ax].stop - t.crop[ax].start == t.core[ax].stop - t.core[ax].start
    assert np.all(cover == 1)


def _filter_predict(x):
    # a local, non-separable operation with a 7x7 support (receptive field 7), computed
    # directly per pixel (no running sums), so rounding does not depend on the position
    k = np.arange(49, dtype=np.float64).reshape(7, 7) % 5 - 2
    y = ndi.correlate(x.astype(np.float64), k, mode="reflect")
    return {"a": y[None].astype(np.float32), "b": (x[None] ** 2).astype(np.float32)}


@pytest.mark.parametrize("tile", [32, 48, 100])
def test_crop_stitching_equals_untiled_for_local_operator(tile):
    rng = np.random.default_rng(0)
    img = rng.random((150, 203)).astype(np.float32)
    full = _filter_predict(img)
    tiled = run_tiled(_filter_predict, img, spatial_ndim=2, tile=tile, margin=4, div_by=1)
    for k in full:
        np.testing.assert_array_equal(tiled[k], full[k])


def test_margin_too_small_differs():
    # the test above can fail: with no margin the seams differ
    rng = np.random.default_rng(1)
    img = rng.random((96, 96)).astype(np.float32)
    full = _filter_predict(img)
    tiled = run_tiled(_filter_predict, img, spatial_ndim=2, tile=32, margin=0, div_by=1)
    assert not np.array_equal(tiled["a"], full["a"])


def test_linear_blend_of_constant_is_constant():
    img = np.ones((70, 90), np.float32)
    out = run_tiled(lambda x: {"a": np.full((1,) + x.shape, 3.0, np.float32)}, img, 2, tile=32, margin=8,
                    div_by=4, blend="linear")
    np.testing.assert_allclose(out["a"], 3.0, rtol=1e-6)


def test_tiled_torch_unet_matches_untiled():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(0)

    class TinyUNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.e1 = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
            self.e2 = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                                    nn.Conv2d(16, 16, 3, padding=1), nn.ReLU())
            self.up = nn.ConvTranspose2d(16, 8, 2, 2)
            self.d1 = nn.Sequential(nn.Conv2d(16, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 1))

        def forward(self, x):
            a = self.e1(x)
            b = self.e2(nn.functional.max_pool2d(a, 2))
            return self.d1(torch.cat([self.up(b), a], 1))

    net = TinyUNet().eval()

    def predict(x):
        with torch.no_grad():
            return {"p": net(torch.from_numpy(x)[None, None]).numpy()[0]}

    rng = np.random.default_rng(2)
    img = ndi.gaussian_filter(rng.random((96, 128)), 2).astype(np.float32)
    full = predict(img)["p"]
    # receptive field: 3 + 2*(2+2) + ... < 24; margin 16 on a div_by=2 grid
    tiled = run_tiled(predict, img, spatial_ndim=2, tile=64, margin=16, div_by=2)["p"]
    assert np.abs(tiled - full).max() < 1e-5
    assert np.array_equal(tiled > 0.0, full > 0.0) or np.abs(full).min() < 1e-5


def _blobs(shape, n, seed):
    rng = np.random.default_rng(seed)
    lab = np.zeros(shape, np.int32)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for i in range(1, n + 1):
        cy, cx = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        r = rng.integers(3, 9)
        lab[((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & (lab == 0)] = i * 3 + 7  # non-sequential ids
    return lab


def test_every_object_owned_by_exactly_one_block():
    lab = _blobs((200, 170), 60, 3)
    ids = set(np.unique(lab[lab > 0]).tolist())
    owners = {}
    blocks = block_grid(lab.shape, 64, 20)
    assert len(blocks) >= 9
    for b in blocks:
        window = lab[b.read]
        owned, cut = owned_objects(window, b, lab.shape)
        assert not cut.any()  # margin 20 > object size: nothing truncated
        for i in owned.tolist():
            assert i not in owners
            owners[i] = b.index
    assert set(owners) == ids


def test_cut_objects_are_flagged():
    lab = np.zeros((60, 60), np.int32)
    lab[10:50, 28:34] = 5  # a tall object crossing a block edge at y=30 with margin 4
    blocks = block_grid(lab.shape, 30, 4)
    flagged = []
    for b in blocks:
        owned, cut = owned_objects(lab[b.read], b, lab.shape)
        flagged += [(int(i), bool(c)) for i, c in zip(owned, cut)]
    assert flagged == [(5, True)]


def test_tile_zero_means_untiled():
    from cellseg.tiling import check_tile

    rng = np.random.default_rng(3)
    img = rng.random((60, 70)).astype(np.float32)
    calls = []

    def predict(x):
        calls.append(x.shape)
        return _filter_predict(x)

    out = run_tiled(predict, img, spatial_ndim=2, tile=0, margin=4)
    assert calls == [img.shape]
    np.testing.assert_array_equal(out["a"], _filter_predict(img)["a"])
    assert check_tile(0, 4) is None and check_tile((0, 0), 4) is None and check_tile(None, 4) is None
    # 0 on one axis: that axis is not cut
    tiles = tile_grid((60, 70), (0, 32), 4, 1)
    assert {(t.read[0].start, t.read[0].stop) for t in tiles} == {(0, 60)} and len(tiles) > 1


@pytest.mark.parametrize("tile,margin,div,least", [(8, 24, 4, 52), (48, 24, 4, 52), (51, 24, 4, 52),
                                                   (128, 64, 16, 144), (16, 5, 4, 20), ((64, 20), 12, 4, 28)])
def test_tiles_at_or_below_twice_the_margin_are_refused(tile, margin, div, least):
    from cellseg.tiling import check_tile

    img = np.zeros((300, 300), np.float32)
    for call in (lambda: check_tile(tile, margin, div), lambda: tile_grid(img.shape, tile, margin, div),
                 lambda: run_tiled(_filter_predict, img, spatial_ndim=2, tile=tile, margin=margin, div_by=div)):
        with pytest.raises(ValueError, match=f"at least {least} px"):
            call()
    assert check_tile(least, margin, div) == least
    assert len(tile_grid(img.shape, least, margin, div)) > 1


def test_bad_tile_values_are_refused():
    from cellseg.tiling import check_tile

    for bad in (-1, 2.5, "x", (64, -3), ()):
        with pytest.raises(ValueError):
            check_tile(bad, 4)


def test_segmenter_tile_zero_and_too_small(tiny_model_path):
    from cellseg.datasets.synthetic import synthetic_cells
    from cellseg.models import load_model
    from cellseg.segmenter import Segmenter

    model = load_model(tiny_model_path)
    img, _ = synthetic_cells((96, 96), n_cells=6, seed=1)
    whole = Segmenter(model).segment(img).labels
    np.testing.assert_array_equal(Segmenter(model, tile=0).segment(img).labels, whole)
    with pytest.raises(ValueError, match="at least 52 px"):
        Segmenter(model, tile=8).segment(img)


@pytest.mark.parametrize("shape,budget,margin,div", [((1000, 1300), 250_000, 52, 8), ((5000, 5400), 4_000_000, 112, 16),
                                                     ((3000, 200), 100_000, 20, 4), ((60, 400, 500), 1_000_000, 26, 8),
                                                     ((37, 91), 1000, 5, 4)])
def test_budget_tile_keeps_every_window_within_the_budget(shape, budget, margin, div):
    """The tile chosen for a pixel budget: every read window (core plus context) holds at most
    ``budget`` pixels, windows start on the ``div`` grid, the cores partition the frame, and the
    cores along an axis are equal but for the last one (never longer than the others)."""
    from cellseg.tiling import budget_tile

    tile = budget_tile(shape, budget, margin, div)
    assert tile is not None and len(tile) == len(shape)
    tiles = tile_grid(shape, tile, margin, div)
    assert len(tiles) > 1
    assert max(int(np.prod([s.stop - s.start for s in t.read])) for t in tiles) <= budget
    cover = np.zeros(shape, np.int32)
    for t in tiles:
        cover[t.core] += 1
        assert all(s.start % div == 0 for s in t.read)
    assert np.all(cover == 1)
    for ax in range(len(shape)):
        cores = sorted({(t.core[ax].start, t.core[ax].stop) for t in tiles})
        sizes = [b - a for a, b in cores]
        assert len(set(sizes[:-1])) <= 1 and sizes[-1] <= sizes[0]


def test_budget_tile_whole_frame_uncut_axes_and_smallest_tiles():
    from cellseg.tiling import budget_tile, check_tile

    assert budget_tile((2000, 2000), 4_000_000, 52, 8) is None  # fits: one call
    # a long strip: only the long axis is cut (0: not cut), into as few tiles as the budget allows
    tile = budget_tile((40_000, 300), 4_000_000, 52, 8)
    assert tile is not None and tile[1] == 0 and tile[0] * 300 <= 4_000_000
    # windows of at most 13,333 rows, 112 of them context (margin 52 on the grid of 8): 4 cores of 10,000
    assert len(tile_grid((40_000, 300), tile, 52, 8)) == 4
    # a budget below the smallest tile allowed: the smallest tiles (cores of div_by), never smaller
    tile = budget_tile((300, 300), 1000, 52, 8)
    assert tile == (120, 120) and check_tile(tile, 52, 8) == tile
