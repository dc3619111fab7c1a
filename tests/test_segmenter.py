import numpy as np
import pytest

from cellseg.datasets.synthetic import synthetic_cells, synthetic_stack
from cellseg.metrics import matching
from cellseg.models import load_model
from cellseg.segmenter import Segmenter, SegmenterError
from tests._events import events_and_result


@pytest.fixture(scope="module")
def seg(tiny_model_path):
    return Segmenter(load_model(tiny_model_path))


def test_segments_synthetic_cells(seg):
    img, gt = synthetic_cells((192, 160), n_cells=20, seed=11)
    res = seg.segment(img)
    assert res.labels.dtype == np.int32 and res.labels.shape == img.shape and res.axes == "YX"
    m = matching(gt, res.labels, 0.5)
    assert m.accuracy > 0.3, m  # a barely trained network still finds many cells (untrained: ~0)


@pytest.mark.parametrize("tile", [64, 96, (64, 128)])
def test_tiled_equals_untiled(seg, tile):
    img, _ = synthetic_cells((200, 232), n_cells=30, seed=3)
    full = seg.segment(img).labels
    tiled = Segmenter(seg.model, tile=tile).segment(img).labels
    assert full.max() > 5
    np.testing.assert_array_equal(tiled, full)


def test_progress_events_and_result(seg):
    img, _ = synthetic_cells((128, 192), n_cells=10, seed=5)
    events, res = events_and_result(Segmenter(seg.model, tile=64).iter_segment(img))
    predict = [e for e in events if e.stage == "predict"]
    assert predict and predict[-1].done == predict[-1].total > 1
    assert events[-1].fraction == 1.0
    assert res.n_objects == len(np.unique(res.labels)) - 1


class _LocalModel:
    """A stand-in network (2D or 3D) whose outputs at a pixel depend on the input within 2 px
    (a receptive field of 5), each computed directly (``ndimage.correlate``, no running sums), so
    tiles with the default margin give exactly the whole-frame outputs; ``calls`` holds the spatial
    shape of every input. ``object_size``: recorded in its config (``diameter=`` resamples)."""

    def __init__(self, ndim: int, object_size: dict | None = None):
        from cellseg.representations import get

        self.representation = get("distance", ndim=ndim)
        self.config = {"ndim": ndim, "in_channels": 1, "normalization": {"pmin": 0.0, "pmax": 100.0}}
        if object_size is not None:
            self.config["object_size"] = dict(object_size)
        self.thresholds = {"fg_thresh": 0.2, "min_size": 3}
        self.in_channels = 1
        self.div_by = 4
        self.receptive_field = 5
        self.calls: list[tuple[int, ...]] = []

    def predict(self, image, augment=None):
        from scipy import ndimage as ndi

        x = np.asarray(image, np.float64)
        self.calls.append(tuple(x.shape))
        s = ndi.correlate(x, np.full((3,) * x.ndim, 1.0 / 3 ** x.ndim), mode="reflect")
        return {"dist": np.clip(s, 0, 1)[None].astype(np.float32), "fg": (s > 0.1)[None].astype(np.float32)}


def _cones(shape, n, radius, seed):
    """Separate cones of height 1 (peaked objects, one maximum each) on a dark background."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).astype(np.float64)
    img = np.zeros(shape)
    centres: list[np.ndarray] = []
    while len(centres) < n:
        c = np.array([rng.uniform(radius, s - radius) for s in shape])
        if all(np.linalg.norm(c - o) > 2.5 * radius for o in centres):
            centres.append(c)
            r = np.sqrt(sum((g - v) ** 2 for g, v in zip(grid, c)))
            img = np.maximum(img, np.clip(1 - r / radius, 0, None))
    return img.astype(np.float32)


def test_large_frames_are_tiled_within_the_pixel_budget(seg, monkeypatch):
    """Without a tile, a frame of more than ``max_pixels`` goes through the network in several
    calls of at most ``max_pixels`` pixels each, context included, and gives the labels of the
    whole-frame run; a frame within the budget is one call, and so is ``tile=0`` above it."""
    img, _ = synthetic_cells((200, 232), n_cells=30, seed=3)
    model = seg.model
    calls = []
    real = model.predict

    def recording(x, *args, **kwargs):
        calls.append(x.shape[-2:])
        return real(x, *args, **kwargs)

    monkeypatch.setattr(model, "predict", recording)
    whole = Segmenter(model, tile=0, max_pixels=10_000).segment(img)
    assert calls == [img.shape]
    assert whole.n_objects > 5
    calls.clear()
    events, auto = events_and_result(Segmenter(model, max_pixels=10_000).iter_segment(img))
    totals = {e.total for e in events if e.stage == "predict"}
    assert len(calls) > 1 and totals == {len(calls)}
    assert max(h * w for h, w in calls) <= 10_000
    np.testing.assert_array_equal(auto.labels, whole.labels)
    calls.clear()
    Segmenter(model, max_pixels=img.size).segment(img)  # the whole frame fits: one call
    assert calls == [img.shape]


def test_default_pixel_budget_and_bad_budgets(seg):
    import math

    from cellseg.segmenter import MAX_PIXELS
    from cellseg.tiling import tile_grid

    s = Segmenter(seg.model)
    assert s.max_pixels == MAX_PIXELS and 1_000_000 <= MAX_PIXELS <= 16_000_000
    side = math.isqrt(MAX_PIXELS)
    assert s.network_tile((side, side)) is None
    tile = s.network_tile((side + 1, side + 1))
    assert tile is not None
    windows = tile_grid((side + 1, side + 1), tile, s.default_margin(), seg.model.div_by)
    assert max((t.read[0].stop - t.read[0].start) * (t.read[1].stop - t.read[1].start) for t in windows) <= MAX_PIXELS
    assert Segmenter(seg.model, tile=0).network_tile((10 ** 5, 10 ** 5)) == 0
    assert Segmenter(seg.model, tile=96).network_tile((10 ** 5, 10 ** 5)) == 96
    for bad in (0, -5, 2.5, "many", True):
        with pytest.raises(SegmenterError, match="max_pixels"):
            Segmenter(seg.model, max_pixels=bad)


def test_pixel_budget_counts_the_resampled_frame():
    """The budget applies to the frame the network sees: an image resampled 2x by ``diameter``
    is tiled though it fits the budget at its own size; labels equal those of ``tile=0``."""
    model = _LocalModel(2, object_size={"diameter": 16.0, "default": "off"})
    img = _cones((64, 80), 6, 8.0, seed=1)
    whole = Segmenter(model, diameter=8.0, tile=0, max_pixels=img.size).segment(img)
    assert model.calls == [(128, 160)]
    model.calls.clear()
    tiled = Segmenter(model, diameter=8.0, max_pixels=img.size).segment(img)
    assert len(model.calls) > 1 and max(a * b for a, b in model.calls) <= img.size
    assert whole.n_objects == 6
    np.testing.assert_array_equal(tiled.labels, whole.labels)


def test_large_volumes_are_tiled_within_the_voxel_budget():
    """A 3D model: the budget is in voxels; the tiles cut the volume along all three axes where
    needed and give the labels of the whole-volume run."""
    model = _LocalModel(3)
    vol = _cones((40, 56, 64), 8, 7.0, seed=2)
    whole = Segmenter(model, tile=0, max_pixels=5000).segment(vol, axes="ZYX")
    assert model.calls == [vol.shape] and whole.n_objects == 8
    model.calls.clear()
    budget = 24 * 32 * 32
    events, tiled = events_and_result(Segmenter(model, max_pixels=budget).iter_segment(vol, axes="ZYX"))
    assert len(model.calls) > 1 and max(int(np.prod(c)) for c in model.calls) <= budget
    assert {e.total for e in events if e.stage == "predict"} == {len(model.calls)}
    assert all(max(c[ax] for c in model.calls) < vol.shape[ax] for ax in range(3))  # cut along Z, Y and X
    np.testing.assert_array_equal(tiled.labels, whole.labels)


def test_time_stack_and_linking(seg):
    imgs, gts = synthetic_stack(n_frames=3, shape=(96, 96), n_cells=8, seed=2)
    res = seg.segment(imgs, axes="TYX")
    assert res.labels.shape == imgs.shape and res.axes == "TYX"
    ids = [set(np.unique(f[f > 0]).tolist()) for f in res.labels]
    assert not (ids[0] & ids[1])  # unlinked: ids unique across frames
    linked = seg.segment(imgs, axes="TYX", link=True).labels
    lids = [set(np.unique(f[f > 0]).tolist()) for f in linked]
    assert len(lids[0] & lids[1]) >= 0.6 * len(lids[0])  # cells move a little: most keep their id


def test_z_stack_with_2d_model_is_stitched(seg):
    img, _ = synthetic_cells((96, 96), n_cells=8, seed=4)
    vol = np.stack([img, img * 1.01, img * 0.99])
    res = seg.segment(vol, axes="ZYX")
    assert res.axes == "ZYX"
    # the same cells in every slice: stitching gives each the same id through Z
    assert set(np.unique(res.labels[0])) == set(np.unique(res.labels[2]))


def test_a_nuclei_model_takes_the_channel_named_for_a_nuclear_stain(seg):
    """Several named channels and none chosen: a model that segments nuclei takes the one channel
    named for a nuclear stain, and says so; other models, unnamed or ambiguous channels still ask."""
    import copy

    img, _ = synthetic_cells((64, 64), n_cells=4, seed=1)
    noise = np.random.default_rng(0).random(img.shape).astype(np.float32)
    cyx = np.stack([noise, img])
    nuclei_model = copy.copy(seg.model)
    nuclei_model.config = {**seg.model.config, "objects": "nuclei"}
    nseg = Segmenter(nuclei_model)
    ref = seg.segment(img).labels
    for names in (["Phalloidin", "DAPI"], ["actin-GFP", "Hoechst 33342"], ["mito", "H2B-mCherry"], ["a", "SiR-DNA"]):
        res = nseg.segment(cyx, axes="CYX", channel_names=names)
        np.testing.assert_array_equal(res.labels, ref)
        assert any(f"segmented channel 1 ({names[1]!r}, a nuclear stain) of 2" in w for w in res.warnings)
    np.testing.assert_array_equal(nseg.segment(cyx, axes="CYX", channel=0, channel_names=["a", "DAPI"]).labels,
                                  seg.segment(noise).labels)  # a channel given wins
    for names in (None, ["GFP", "RFP"], ["DAPI", "Hoechst"]):
        with pytest.raises(SegmenterError, match="choose one with channel"):
            nseg.segment(cyx, axes="CYX", channel_names=names)
    with pytest.raises(SegmenterError, match="choose one with channel"):  # not a nuclei model
        seg.segment(cyx, axes="CYX", channel_names=["Phalloidin", "DAPI"])


def test_bundled_models_say_what_they_segment():
    from cellseg.segmenter import segments_nuclei

    assert load_model("nuclei").config["objects"] == "nuclei" and load_model("cells").config["objects"] == "cells"
    assert segments_nuclei(Segmenter(load_model("nuclei-flows")))
    assert not segments_nuclei(Segmenter(load_model("cells")))


def test_channel_selection_and_axes_errors(seg):
    img, _ = synthetic_cells((64, 64), n_cells=4, seed=1)
    noise = np.random.default_rng(0).random(img.shape).astype(np.float32)
    cyx = np.stack([noise, img])
    a = seg.segment(cyx, axes="CYX", channel=1).labels
    b = seg.segment(img).labels
    np.testing.assert_array_equal(a, b)
    c = seg.segment(np.moveaxis(cyx, 0, -1), axes="YXC", channel="nuclei", channel_names=["noise", "nuclei"]).labels
    np.testing.assert_array_equal(c, b)
    with pytest.raises(SegmenterError, match="choose one with channel"):
        seg.segment(cyx, axes="CYX")
    with pytest.raises(SegmenterError, match="no channel named"):
        seg.segment(cyx, axes="CYX", channel="dapi", channel_names=["a", "b"])
    with pytest.raises(SegmenterError, match="say which axes"):
        seg.segment(cyx)
    with pytest.raises(SegmenterError, match="do not match"):
        seg.segment(img, axes="ZYX")


def test_redecode_without_network(seg):
    img, _ = synthetic_cells((128, 128), n_cells=12, seed=8)
    s = Segmenter(seg.model, keep_outputs=True)
    res = s.segment(img)
    outputs = res.frames[0]["outputs"]
    calls = []
    orig = s.model.predict
    s.model.predict = lambda *a, **k: calls.append(1) or orig(*a, **k)
    try:
        strict = s.decode(outputs, fg_thresh=0.95).labels
    finally:
        s.model.predict = orig
    assert not calls
    assert (strict > 0).sum() < (res.labels > 0).sum()


def test_unknown_param_raises(seg):
    with pytest.raises(TypeError, match="unknown"):
        Segmenter(seg.model, params={"nonsense": 1})


def test_constant_frame_gives_no_objects(seg):
    res = seg.segment(np.full((64, 64), 7, np.uint16))
    assert res.labels.max() == 0
    (fr,) = res.frames
    assert fr.empty and fr["empty"] and "empty" in fr and "outputs" not in fr and fr.get("outputs") is None


def test_frames_typed_and_as_mappings(seg):
    """Frames are FrameResult records; their mapping spelling (``fr["index"]``, ``"outputs" in fr``)
    reads the same fields."""
    from cellseg.segmenter import FrameResult

    imgs, _ = synthetic_stack(n_frames=2, shape=(80, 80), n_cells=6, seed=5)
    res = Segmenter(seg.model, keep_outputs=True).segment(imgs, axes="TYX", link=True)
    plain = seg.segment(imgs, axes="TYX", link=True)
    assert all(isinstance(fr, FrameResult) for fr in res.frames + plain.frames)
    assert [fr.index for fr in res.frames] == [(0,), (1,)]
    for fr in res.frames:
        assert fr["index"] == fr.index and fr["id_scores"] is fr.id_scores and fr["extra"] is fr.extra
        assert "outputs" in fr and fr.get("outputs") is fr.outputs and "empty" not in fr and not fr.get("empty")
        assert fr.keys() == ["index", "scores", "extra", "id_scores", "outputs"]
    for fr in plain.frames:
        assert fr.outputs is None and "outputs" not in fr and fr.get("outputs", 0) == 0
        with pytest.raises(KeyError):
            fr["outputs"]
    # ids of linked frames: the scores follow the labels' ids
    assert set(np.unique(res.labels[res.labels > 0]).tolist()) <= set(res.scores())


@pytest.mark.parametrize("axes", ["YX", "TYX", "ZYX"])
def test_redecode_equals_segment_with_new_params(seg, axes):
    imgs, _ = synthetic_stack(n_frames=3, shape=(80, 80), n_cells=6, seed=5)
    img = imgs[0] if axes == "YX" else imgs
    link = axes == "TYX"
    s = Segmenter(seg.model, keep_outputs=True)
    first = s.segment(img, axes=axes, link=link)
    again = s.redecode(first, fg_thresh=0.8)
    direct = Segmenter(seg.model, params={"fg_thresh": 0.8}).segment(img, axes=axes, link=link)
    np.testing.assert_array_equal(again.labels, direct.labels)
    assert again.axes == direct.axes and again.params == direct.params
    with pytest.raises(ValueError, match="keep_outputs"):
        seg.redecode(seg.segment(img, axes=axes))


# -- real images, bundled model -------------------------------------------------------------------

def _bundled_stardist():
    from cellseg.models import list_models

    if "nuclei-stardist" not in list_models():
        pytest.skip("the bundled model nuclei-stardist is not installed (cellseg/models/weights)")
    return load_model("nuclei-stardist")


def _real_image(kind: str, root):
    import tifffile

    from cellseg.io import read_image

    if kind == "fluo_hela":  # Fluo-N2DL-HeLa 01 t075: ~50 nuclei in the crop, several touching
        return tifffile.imread(root / "01" / "t075.tif")[128:384, 400:688]
    if kind == "dic_hela":  # DIC-C2DH-HeLa 01 t000: not the model's domain, but many objects; odd size
        return tifffile.imread(root / "01" / "t000.tif")[40:299, 90:382]
    # DSB 2018 fluorescence image, 260 x 347 (not multiples of the network's div_by), 131 nuclei
    return read_image(root / "images" / "9bb6e39d5f4415bc7554842ee5d1280403a602f2ba56122b87f453a62d37c06e.png").data


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.parametrize("kind", ["fluo_hela", "dic_hela", "dsb2018"])
def test_tiled_equals_untiled_on_real_images(kind, request):
    """Tiled labels are identical to the whole-image labels on real images with the bundled
    StarDist model, for a square tile (split along both axes) and two non-square ones, with
    the default margin (from the receptive field)."""
    from cellseg.tiling import tile_grid

    img = _real_image(kind, request.getfixturevalue(kind))  # skips when the data is missing
    model = _bundled_stardist()
    assert img.ndim == 2 and min(img.shape) >= 256
    full = Segmenter(model).segment(img).labels
    assert full.max() >= 20, f"{kind}: only {full.max()} objects in the whole-image run"
    for tile in (240, (184, 400), (400, 240)):
        seg = Segmenter(model, tile=tile)
        assert len(tile_grid(img.shape, tile, seg.default_margin(), model.div_by)) >= 3
        tiled = seg.segment(img).labels
        np.testing.assert_array_equal(tiled, full, err_msg=f"{kind}, tile {tile}")


def test_models_satisfy_the_predictor_protocol(seg):
    """The real model and the stand-in models of the tests have what the Segmenter reads."""
    from cellseg.representations import get
    from cellseg.segmenter import Predictor, RoutedPredictor
    from cellseg_napari._testing import OracleModel

    assert isinstance(seg.model, Predictor) and isinstance(seg.model, RoutedPredictor)
    oracle = OracleModel("stardist", np.zeros((32, 32), np.int32))
    assert isinstance(oracle, Predictor) and not isinstance(oracle, RoutedPredictor)
    assert Segmenter(oracle).inference == ("torch", "fp32") and Segmenter(oracle).augment is False

    class NoPredict:  # a config and a representation are not enough
        representation, config, thresholds = get("stardist"), {"ndim": 2}, {}
        in_channels = div_by = receptive_field = 1

    assert not isinstance(NoPredict(), Predictor)
