"""Object size and resampling (cellseg.scale) and the Segmenter's scale path."""
import copy

import numpy as np
import pytest

from cellseg.datasets.synthetic import synthetic_cells
from cellseg.metrics import matching
from cellseg.models import load_model
from cellseg.models.network import CellsegModel
from cellseg.scale import equivalent_diameters, median_diameter, resize_labels, scale_factor, scaled_shape, zoom_image
from cellseg.segmenter import Segmenter, SegmenterError
from tests._events import events_and_result
from tests.reference.ref_scale import ref_resize_labels


def test_equivalent_diameters_of_discs_and_balls():
    yy, xx = np.mgrid[:101, :101]
    disc = ((yy - 50) ** 2 + (xx - 50) ** 2 <= 20 ** 2).astype(np.int32)
    assert equivalent_diameters(disc)[0] == pytest.approx(40.0, rel=0.02)
    zz, yy, xx = np.mgrid[:41, :41, :41]
    ball = ((zz - 20) ** 2 + (yy - 20) ** 2 + (xx - 20) ** 2 <= 10 ** 2).astype(np.int32)
    assert equivalent_diameters(ball)[0] == pytest.approx(20.0, rel=0.03)
    assert median_diameter(np.zeros((5, 5), np.int32)) is None


def test_median_diameter_excludes_cut_objects():
    lab = np.zeros((60, 60), np.int32)
    for i, (y, x) in enumerate([(15, 15), (15, 45), (45, 15)]):
        lab[y - 5:y + 5, x - 5:x + 5] = i + 1
    lab[55:60, 50:60] = 4  # cut by the border
    lab[0:2, 28:32] = 5
    assert median_diameter(lab, exclude_border=True) == pytest.approx(np.sqrt(400 / np.pi))
    assert median_diameter(lab) < median_diameter(lab, exclude_border=True) + 1e-9


@pytest.mark.parametrize("shape", [(64, 64), (40, 90), (30, 33)])
@pytest.mark.parametrize("factor", [0.37, 0.5, 0.8, 1.3, 2.0, 3.1])
def test_resize_labels_equals_reference(shape, factor):
    rng = np.random.default_rng(int(factor * 100) + shape[0])
    img, lab = synthetic_cells(shape, n_cells=max(1, shape[0] * shape[1] // 500), seed=int(rng.integers(1000)),
                               radius=(4.0, 9.0))
    # non-sequential ids and an unsigned dtype
    lab = np.where(lab > 0, lab * 7 + 3, 0).astype(np.uint16)
    lab[0, 0] = 999  # a one-pixel object in the corner
    out_shape = scaled_shape(shape, factor)
    fast = resize_labels(lab, out_shape)
    ref = ref_resize_labels(lab, out_shape)
    assert fast.shape == out_shape and fast.dtype == lab.dtype
    np.testing.assert_array_equal(fast, ref)


@pytest.mark.parametrize("factor", [0.5, 1.5, 2.0])
def test_resize_round_trip_keeps_objects(factor):
    _, lab = synthetic_cells((160, 192), n_cells=20, seed=7)
    up = resize_labels(lab, scaled_shape(lab.shape, factor))
    back = resize_labels(up, lab.shape)
    assert back.shape == lab.shape
    assert set(np.unique(up)) == set(np.unique(lab))  # every id survives the resampling
    assert set(np.unique(back)) == set(np.unique(lab))
    assert matching(lab, back, thresh=0.5).accuracy == 1.0
    # enlarging and shrinking back is exact up to boundary pixels; shrinking first loses detail
    m = matching(lab, back, thresh=0.7 if factor < 1 else 0.8)
    assert m.accuracy == 1.0
    assert m.mean_matched_score > (0.88 if factor < 1 else 0.95)
    assert median_diameter(up) == pytest.approx(median_diameter(lab) * factor, rel=0.06)


def test_resize_labels_same_shape_and_errors():
    lab = np.arange(12, dtype=np.int32).reshape(3, 4)
    out = resize_labels(lab, (3, 4))
    np.testing.assert_array_equal(out, lab)
    assert out is not lab
    with pytest.raises(ValueError, match="integers"):
        resize_labels(lab.astype(float), (6, 8))
    with pytest.raises(ValueError, match="axes"):
        resize_labels(lab, (6, 8, 2))


def test_resize_labels_3d():
    lab = np.zeros((10, 20, 20), np.int32)
    lab[2:8, 3:10, 3:10] = 1
    lab[3:7, 12:18, 11:19] = 2
    out = resize_labels(lab, (20, 40, 40))
    np.testing.assert_array_equal(out, ref_resize_labels(lab, (20, 40, 40)))
    assert set(np.unique(out)) == {0, 1, 2}


def test_zoom_image_keeps_channels_and_mean():
    rng = np.random.default_rng(0)
    x = rng.random((3, 50, 70)).astype(np.float32)
    x[1] += 5
    z = zoom_image(x, 0.5, spatial_ndim=2)
    assert z.shape == (3, 25, 35) and z.dtype == np.float32
    assert z[1].mean() == pytest.approx(x[1].mean(), abs=0.02)  # channels are not mixed
    assert zoom_image(x, 2.0, spatial_ndim=2).shape == (3, 100, 140)
    # a small bright spot survives downsampling (anti-aliasing spreads it instead of skipping it)
    spot = np.zeros((64, 64), np.float32)
    spot[33, 33] = 1.0
    assert zoom_image(spot, 0.25).sum() > 0


def test_scale_factor_rules():
    assert scale_factor(20.0, diameter=40.0) == 0.5
    assert scale_factor(20.0, diameter=40.0, pixel_size=0.5, model_pixel_size=0.25) == 2.0  # pixel size wins
    assert scale_factor(20.0) == 1.0
    with pytest.raises(ValueError):
        scale_factor(20.0, diameter=-1)


# ---------------------------------------------------------------------------- the Segmenter


@pytest.fixture(scope="module")
def sized_model(tiny_model_path):
    """The tiny test model, told the object size of its synthetic training cells."""
    m = load_model(tiny_model_path)
    _, lab = synthetic_cells((128, 128), n_cells=14, seed=0)
    m.config["object_size"] = {"diameter": median_diameter(lab), "pixel_size": None, "default": "off"}
    return m


def _scaled(img, lab, f):
    sh = scaled_shape(img.shape, f)
    return zoom_image(img, f), resize_labels(lab, sh)


def test_numeric_diameter_resamples_and_maps_back(sized_model):
    img, gt = synthetic_cells((160, 160), n_cells=14, seed=21)
    d0 = sized_model.config["object_size"]["diameter"]
    big, big_gt = _scaled(img, gt, 2.0)
    native = Segmenter(sized_model).segment(img).labels
    res = Segmenter(sized_model, diameter=2 * d0).segment(big)
    assert res.labels.shape == big.shape and res.labels.dtype == np.int32
    assert res.scale == pytest.approx(0.5) and res.diameter == pytest.approx(2 * d0)
    # the same objects as the native run, mapped onto the doubled grid
    expected = resize_labels(native, big.shape)
    assert matching(expected, res.labels, thresh=0.5).accuracy > 0.9
    assert matching(big_gt, res.labels, 0.5).accuracy >= matching(gt, native, 0.5).accuracy - 0.1
    ids = np.unique(res.labels)
    assert ids[0] == 0 and np.array_equal(ids[1:], np.arange(1, ids.size))  # 1..n
    assert set(res.scores()) == set(ids[1:].tolist())


def test_auto_diameter_follows_the_object_size(sized_model):
    """The estimate is the median size of the objects its passes decode, so it scales with
    the image (the barely trained test network merges some cells: its sizes are not the truth's)."""
    img, gt = synthetic_cells((128, 128), n_cells=14, seed=22)
    est = {}
    for f in (0.6, 1.0, 1.8):
        x, g = _scaled(img, gt, f)
        seg = Segmenter(sized_model, diameter="auto")
        events, res = events_and_result(seg.iter_segment(x))
        assert res.labels.shape == x.shape
        assert any(e.stage == "scale" and "diameter" in e.message for e in events)
        # segmented at the scale the estimate asks for, or at a pass's scale within REUSE_RATIO of it
        ratio = res.scale / (sized_model.config["object_size"]["diameter"] / res.diameter)
        assert 1 / Segmenter.REUSE_RATIO - 1e-6 <= ratio <= Segmenter.REUSE_RATIO + 1e-6
        est[f] = res.diameter
    assert est[0.6] / est[1.0] == pytest.approx(0.6, rel=0.2)
    assert est[1.8] / est[1.0] == pytest.approx(1.8, rel=0.2)


def test_auto_reuses_the_first_pass_at_the_model_size(sized_model, monkeypatch):
    img, _ = synthetic_cells((128, 128), n_cells=14, seed=23)
    seg = Segmenter(sized_model, diameter="auto")
    calls = []
    orig = seg.predict

    def counting(x, *a, **k):
        calls.append(x.shape)
        return (yield from orig(x, *a, **k))

    monkeypatch.setattr(seg, "predict", counting)
    res = seg.segment(img)
    if res.scale == 1.0:
        assert len(calls) == 1, calls  # the estimate's outputs are the result
    else:
        assert len(calls) >= 2


def test_pixel_size_wins_over_auto(sized_model):
    m = copy.deepcopy(sized_model)
    d0 = m.config["object_size"]["diameter"]
    m.config["object_size"].update(pixel_size=0.5, default="auto")
    img, _ = synthetic_cells((96, 96), n_cells=8, seed=3)
    seg = Segmenter(m)
    assert seg.scale_mode() == ("auto", None)
    assert seg.scale_mode(pixel_size=0.25) == ("fixed", pytest.approx(2 * d0))
    res = seg.segment(img, pixel_size=1.0)  # the image's pixels are twice the model's: shrink objects...
    assert res.scale == pytest.approx(2.0) and res.labels.shape == img.shape
    assert Segmenter(m, pixel_size=0.5).segment(img).scale == 1.0
    # a diameter the user gives wins over the pixel size
    assert Segmenter(m, diameter=d0 / 2, pixel_size=0.5).segment(img).scale == pytest.approx(2.0)


def test_stack_uses_one_scale_and_keeps_shape(sized_model):
    img, _ = synthetic_cells((96, 96), n_cells=8, seed=5)
    d0 = sized_model.config["object_size"]["diameter"]
    stack = np.stack([img, img[::-1], np.zeros_like(img)])
    res = Segmenter(sized_model, diameter=d0 * 1.5, tile=64).segment(stack, axes="TYX")
    assert res.labels.shape == stack.shape and res.labels[2].max() == 0
    assert res.scale == pytest.approx(1 / 1.5)


def test_redecode_maps_back(sized_model):
    img, _ = synthetic_cells((96, 96), n_cells=8, seed=6)
    d0 = sized_model.config["object_size"]["diameter"]
    seg = Segmenter(sized_model, diameter=d0 * 0.7, keep_outputs=True)
    res = seg.segment(img)
    again = seg.redecode(res)
    np.testing.assert_array_equal(again.labels, res.labels)
    assert (again.scale, again.diameter) == (res.scale, res.diameter) != (1.0, None)


def test_diameter_errors(tiny_model_path, sized_model):
    plain = load_model(tiny_model_path)
    del plain.config["object_size"]  # a model that records no size (trained on 3D data, or before such records)
    with pytest.raises(SegmenterError, match="records no object size"):
        Segmenter(plain, diameter=30)
    assert Segmenter(plain, diameter="auto").scale_mode() == ("off", None)  # nothing to match: own scale
    for bad in (0, -3, "big", float("nan")):
        with pytest.raises(SegmenterError, match="diameter"):
            Segmenter(sized_model, diameter=bad)
    with pytest.raises(SegmenterError, match="pixel_size"):
        Segmenter(sized_model, pixel_size=0)


def test_grey_stored_as_rgb_is_read_as_grey(sized_model):
    img, _ = synthetic_cells((96, 96), n_cells=8, seed=8)
    rgb = np.repeat(img[..., None], 3, axis=-1)
    a = Segmenter(sized_model).segment(rgb, axes="YXC").labels
    b = Segmenter(sized_model).segment(img).labels
    np.testing.assert_array_equal(a, b)
    colour = rgb.copy()
    colour[..., 0] *= 0.5
    with pytest.raises(SegmenterError, match="channel"):
        Segmenter(sized_model).segment(colour, axes="YXC")


def test_rgb_model_takes_grey_and_rgba():
    from cellseg import representations
    from cellseg.models.network import make_config

    cfg = make_config(representations.get("distance"), {"depth": 2, "width": 4, "seed": 0}, in_channels=3)
    m = CellsegModel(cfg, device="cpu")
    img, _ = synthetic_cells((64, 64), n_cells=4, seed=9)
    grey = Segmenter(m).segment(img).labels
    rgb = np.repeat(img[..., None], 3, axis=-1)
    np.testing.assert_array_equal(Segmenter(m).segment(rgb, axes="YXC").labels, grey)
    rgba = np.concatenate([rgb, np.full(img.shape + (1,), 7.0, np.float32)], axis=-1)
    np.testing.assert_array_equal(Segmenter(m).segment(rgba, axes="YXC").labels, grey)
    no_red = rgb.copy()
    no_red[..., 0] = 0  # an empty colour channel is background, not an error
    assert Segmenter(m).segment(no_red, axes="YXC").labels.shape == img.shape


def test_intensity_transforms(sized_model):
    from cellseg.segmenter import TRANSFORMS

    x = np.array([-0.5, 0.0, 0.01, 0.25, 1.0], np.float32)
    np.testing.assert_allclose(TRANSFORMS["sqrt"](x), [0, 0, 0.1, 0.5, 1.0], rtol=1e-6)
    lg = TRANSFORMS["log"](x)
    assert lg.dtype == np.float32 and lg[0] == lg[1] == 0 and lg[-1] == pytest.approx(1.0)
    assert np.all(np.diff(lg[1:]) > 0) and lg[2] > 0.1  # dim values are lifted the most
    img, _ = synthetic_cells((96, 96), n_cells=8, seed=12)
    seen = []
    seg = Segmenter(sized_model, transform="sqrt")
    orig = seg.model.predict

    def spy(x, **k):
        seen.append(x.copy())
        return orig(x, **k)

    seg.model.predict = spy
    try:
        seg.segment(img)
    finally:
        seg.model.predict = orig
    assert seen and seen[0].min() >= 0
    with pytest.raises(SegmenterError, match="transform"):
        Segmenter(sized_model, transform="gamma")


def test_blockwise_estimates_the_size_once(sized_model, tmp_path, monkeypatch):
    from cellseg import io
    from cellseg.blockwise import segment_blockwise

    img, gt = synthetic_cells((160, 160), n_cells=20, seed=31)
    big, big_gt = _scaled(img, gt, 1.6)
    seg = Segmenter(sized_model, diameter="auto")
    calls = []
    orig = Segmenter.estimate_diameter

    def counting(self, *a, **k):
        calls.append(1)
        return orig(self, *a, **k)

    monkeypatch.setattr(Segmenter, "estimate_diameter", counting)
    out, _ = segment_blockwise(seg, big, tmp_path / "labels.tif", block=128, margin=96)
    lab = io.read_labels(out)
    assert len(calls) == 1 and lab.shape == big.shape
    assert matching(big_gt, lab, 0.5).accuracy > 0.5 * matching(gt, Segmenter(sized_model).segment(img).labels,
                                                                 0.5).accuracy


def _record_passes(monkeypatch) -> list[tuple[int, ...]]:
    """The spatial shape of every image :meth:`Segmenter.predict` gets from now on, in order."""
    shapes: list[tuple[int, ...]] = []
    orig = Segmenter.predict

    def recording(self, x, *a, **k):
        shapes.append(tuple(x.shape[-2:]))
        return (yield from orig(self, x, *a, **k))

    monkeypatch.setattr(Segmenter, "predict", recording)
    return shapes


def test_auto_reuses_a_whole_frame_pass(sized_model, monkeypatch):
    """A frame smaller than the estimate's window, with objects near the model's size, is not run
    through the network again after the estimate: a pass of the estimate is the result."""
    img, gt = synthetic_cells((128, 128), n_cells=14, seed=22)
    sizes = _record_passes(monkeypatch)
    seg = Segmenter(sized_model, diameter="auto")
    d0 = sized_model.config["object_size"]["diameter"]
    # the image resampled so that the network's objects have the model's size (the barely trained
    # test network merges some cells, so its sizes are not the truth's)
    img, _ = _scaled(img, gt, d0 / seg.estimate_diameter(img)[0])
    sizes.clear()
    d, reuse = seg.estimate_diameter(img)
    estimate_passes = list(sizes)
    assert reuse is not None  # the frame fits the window: a pass covered it whole near the wanted scale
    f, outputs = reuse
    assert 1 / Segmenter.REUSE_RATIO <= seg._clip_factor(d0 / d) / f <= Segmenter.REUSE_RATIO
    sizes.clear()
    res = seg.segment(img)
    assert sizes == estimate_passes  # the estimate's passes and no pass for the result
    assert res.scale == pytest.approx(f) and res.labels.shape == img.shape
    sizes.clear()
    given = Segmenter(sized_model, diameter=res.diameter).segment(img)
    assert len(sizes) == 1  # a given diameter: one pass
    assert matching(given.labels, res.labels, 0.5).accuracy > 0.8


@pytest.mark.parametrize("f", [2, 3])
def test_resize_labels_keeps_objects_at_the_image_border(f):
    """Objects touching the image's edges keep their outer pixels when enlarged (the edge
    pixels continue beyond the image, as in the reference twin): the border rows and columns
    are those of the block-enlarged labels, and at 2x every pixel becomes a 2 x 2 block
    (at 3x linear interpolation rounds the objects' corners, inside and at the border alike)."""
    lab = np.zeros((6, 7), np.int32)
    lab[0:2, 0:3] = 4  # top-left corner
    lab[3:6, 4:7] = 9  # bottom-right corner
    lab[2:4, 1:3] = 2  # interior
    big = resize_labels(lab, (6 * f, 7 * f))
    expected = np.kron(lab, np.ones((f, f), np.int32))
    assert np.array_equal(big, ref_resize_labels(lab, big.shape))
    assert np.array_equal(big[[0, -1]], expected[[0, -1]]) and np.array_equal(big[:, [0, -1]], expected[:, [0, -1]])
    if f == 2:
        assert np.array_equal(big, expected)


def test_auto_decodes_a_reused_pass_once(sized_model, monkeypatch):
    """When a pass of the estimate is the result, its decoded labels are the result's too."""
    img, gt = synthetic_cells((128, 128), n_cells=14, seed=22)
    seg = Segmenter(sized_model, diameter="auto")
    d0 = sized_model.config["object_size"]["diameter"]
    img, _ = _scaled(img, gt, d0 / seg.estimate_diameter(img)[0])  # objects of the model's size: a pass is reused
    decoded = []
    orig = type(seg.rep).decode

    def counting(self, outputs, *a, **k):
        decoded.append(id(outputs))
        return orig(self, outputs, *a, **k)

    monkeypatch.setattr(type(seg.rep), "decode", counting)
    d, reuse = seg.estimate_diameter(img)
    n_estimate = len(decoded)
    decoded.clear()
    res = seg.segment(img)
    assert reuse is not None
    assert len(decoded) == n_estimate  # the estimate's decodes and none for the result
    # the same labels as decoding the result's outputs afresh
    again = Segmenter(sized_model, diameter=res.diameter, keep_outputs=True).segment(img)
    assert again.n_objects == res.n_objects
    # other decode parameters than the estimate's: decoded afresh
    decoded.clear()
    seg.segment(img, min_size=seg.params.min_size + 5)
    assert len(decoded) == n_estimate + 1


def test_auto_skips_the_full_scale_pass_for_large_objects(sized_model, monkeypatch):
    """Objects several times the model's size are measured at half or quarter scale: no pass of
    the estimate runs the frame at its own scale (that pass would cost more than the result's)."""
    img, gt = synthetic_cells((128, 128), n_cells=10, seed=23)
    big, big_gt = _scaled(img, gt, 3.0)
    sizes = _record_passes(monkeypatch)
    seg = Segmenter(sized_model, diameter="auto")
    d, _ = seg.estimate_diameter(big)
    d0 = sized_model.config["object_size"]["diameter"]
    assert d is not None and d > 1.8 * d0
    full_scale_pixels = 256 * 256  # the full-scale pass's window
    assert all(h * w < full_scale_pixels for h, w in sizes), sizes


def _disc_lattice(shape, diam, spacing, seed):
    """Separated discs of about ``diam`` px on a jittered square lattice: (image, labels)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    lab = np.zeros(shape, np.int32)
    n = 0
    for cy in np.arange(spacing / 2, shape[0], spacing):
        for cx in np.arange(spacing / 2, shape[1], spacing):
            r = diam / 2 * rng.uniform(0.9, 1.1)
            y, x = cy + rng.uniform(-4, 4), cx + rng.uniform(-4, 4)
            n += 1
            lab[(yy - y) ** 2 + (xx - x) ** 2 <= r * r] = n
    return (lab > 0).astype(np.float32), lab


class _ThresholdNet:
    """A stand-in network, perfect at every scale and on every window for separated bright
    discs: its outputs are the distance representation's targets of the connected
    components of the normalized image above 0.5."""

    def __init__(self, d0: float, min_px: int = 0):
        from cellseg.representations import get

        self.min_px = min_px  # components smaller than this are not objects (texture, hot pixels)
        self.representation = get("distance")
        self.thresholds: dict = {}
        self.config = {"ndim": 2, "in_channels": 1, "normalization": {"pmin": 0.0, "pmax": 100.0},
                       "thresholds": {}, "object_size": {"diameter": d0, "pixel_size": None, "default": "auto"}}
        self.in_channels, self.div_by, self.receptive_field = 1, 1, 1

    def predict(self, image, augment=None):
        from scipy import ndimage

        lab, _ = ndimage.label(np.asarray(image, np.float32).reshape(image.shape[-2:]) > 0.5)
        if self.min_px:
            small = np.bincount(lab.ravel()) < self.min_px
            small[0] = False
            lab[small[lab]] = 0
        return self.representation.encode(lab.astype(np.int32))


def test_auto_measures_objects_larger_than_its_windows():
    """Objects 2.5x the model's size, 40% of the half-scale window across: that window
    holds hardly an object clear of its border, and the cut ones read too small. The estimate
    measures them again on a wider view (within 10% of the truth), and the labels follow."""
    img, lab = _disc_lattice((1024, 1024), 150, 180, seed=3)
    seg = Segmenter(_ThresholdNet(60.0), diameter="auto")
    truth = median_diameter(lab)
    d, _ = seg.estimate_diameter(img)
    assert d is not None and abs(d / truth - 1) < 0.1, (d, truth)
    res = seg.segment(img)
    assert res.diameter == pytest.approx(d) and matching(lab, res.labels, 0.5).accuracy > 0.95


def test_auto_looks_wider_when_its_textured_windows_show_nothing(monkeypatch):
    """The most textured windows hold a fine texture without objects (a field of debris, say) and
    the cells lie beside it: the half- and full-scale windows find nothing, and the wider views (512 px
    at half, 1024 px at a quarter of the size) find the cells. Without them the size is not found."""
    n = 2048
    yy, xx = np.mgrid[:n, :n]
    img = np.zeros((n, n), np.float32)
    img[:400, :400] = (np.indices((400, 400)) // 4).sum(0) % 2 * 0.49  # 4 px squares: no objects
    lab = np.zeros((n, n), np.int32)
    rng = np.random.default_rng(0)
    for k, (cy, cx) in enumerate(((y, x) for y in range(560, 1000, 110) for x in range(560, 1000, 110)), start=1):
        r = 20 * rng.uniform(0.9, 1.1)
        lab[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = k
    img[lab > 0] = 1.0
    seg = Segmenter(_ThresholdNet(20.0, min_px=20), diameter="auto")
    passes = _record_passes(monkeypatch)
    d, _ = seg.estimate_diameter(img)
    truth = median_diameter(lab)
    assert d is not None and abs(d / truth - 1) < 0.1, (d, truth)
    assert passes[:4] == [(182, 182), (256, 256), (256, 256), (256, 256)]  # half, full, 512 @ 0.5, 1024 @ 0.25


def test_auto_trusts_few_small_objects_in_a_sparse_field(monkeypatch):
    """A sparse field (a few nuclei of the model's size in a large frame): windows hold few whole
    objects because there are few, not because the border cuts them; the size is read off them
    without further passes."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[:1024, :1024]
    lab = np.zeros((1024, 1024), np.int32)
    for i, (cy, cx) in enumerate(rng.uniform(60, 964, (6, 2)), start=1):
        lab[(yy - cy) ** 2 + (xx - cx) ** 2 <= 12 ** 2] = i
    img = (lab > 0).astype(np.float32)
    seg = Segmenter(_ThresholdNet(24.0), diameter="auto")
    passes = _record_passes(monkeypatch)
    d, _ = seg.estimate_diameter(img)
    assert d is not None and abs(d / median_diameter(lab) - 1) < 0.15
    assert len(passes) <= 2, passes  # half scale and the image's own scale
