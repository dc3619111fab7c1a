"""The napari plugin's plain logic (the modules behind the widgets), without a viewer or Qt."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("napari")

from cellseg.datasets.synthetic import synthetic_cells, synthetic_stack  # noqa: E402
from cellseg.metrics import matching  # noqa: E402
from cellseg.segmenter import Segmenter  # noqa: E402
from cellseg_napari import _axes, _evaluation, _io, _layers, _models, _params, _run, _scale, _training  # noqa: E402
from cellseg_napari._testing import OracleModel  # noqa: E402
from tests._events import events_and_result  # noqa: E402


def _drive(gen):
    events, value = events_and_result(gen)
    return value, events


@pytest.fixture(scope="module")
def cells():
    return synthetic_cells((128, 128), n_cells=14, seed=3)


# ----------------------------------------------------------------------------- imports


@pytest.mark.parametrize("module", ["cellseg_napari", "cellseg_napari._widgets", "cellseg_napari._models",
                                    "cellseg_napari._params", "cellseg_napari._axes", "cellseg_napari._scale",
                                    "cellseg_napari._run", "cellseg_napari._layers", "cellseg_napari._evaluation",
                                    "cellseg_napari._training", "cellseg_napari._io", "cellseg_napari._sample"])
def test_plugin_modules_do_not_import_torch(module):
    code = f"import sys, {module}; bad = [m for m in ('torch', 'cellseg.models.network', 'cellseg.train') " \
           f"if m in sys.modules]; assert not bad, bad"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


# ----------------------------------------------------------------------------- params, axes


def test_param_specs_use_tuned_thresholds_and_coerce_back():
    from cellseg.representations import get

    specs = {s.name: s for s in _params.param_specs(get("stardist"), {"prob_thresh": 0.7})}
    assert specs["prob_thresh"].kind == "float" and specs["prob_thresh"].value == 0.7
    assert specs["nms_thresh"].value == 0.4  # dataclass default
    assert specs["border"].kind == "int"
    assert specs["overlap"].kind == "text" and specs["overlap"].value == "min"
    assert "probability" in specs["prob_thresh"].doc
    assert _params.coerce_param("text", _params.param_text("iou")) == "iou"
    assert _params.coerce_param("text", _params.param_text(None)) is None
    assert _params.coerce_param("text", "0.25") == 0.25
    assert _params.coerce_param("int", 3.0) == 3 and _params.coerce_param("bool", 1) is True
    with pytest.raises(TypeError, match="unknown"):
        _params.param_specs(get("stardist"), {"not_a_param": 1})


def test_param_specs_show_only_the_knobs_of_the_model_configuration():
    from cellseg.representations import get

    for mode, hidden in (("cellpose", {"dist_thresh", "link_dist", "max_divergence", "connectivity", "min_depth",
                                        "merge_frac", "absorb_ratio"}),
                         ("omnipose", {"seed_min_count"})):
        rep = get("flows", mode=mode)
        specs = _params.param_specs(rep, {"absorb_ratio": 0.2})
        assert {s.name for s in specs if not s.shown} == hidden
        assert set(rep.decode_param_names()) == {s.name for s in specs if s.shown}
        assert {s.name: s.value for s in specs}["absorb_ratio"] == 0.2  # hidden or not, the value is kept
    assert all(s.shown for s in _params.param_specs(get("stardist")))


def test_axes_and_channel_choices():
    assert _axes.axes_choices((64, 64)) == ["YX"]
    assert _axes.axes_choices((5, 64, 64))[0] == "ZYX"
    assert _axes.axes_choices((2, 64, 64))[0] == "CYX"
    assert _axes.axes_choices((5, 64, 64), metadata={"axes": "TYX"})[0] == "TYX"
    assert _axes.axes_choices((64, 64, 3), rgb=True) == ["YXC"]
    assert _axes.axes_choices((64, 64), metadata={"axes": "ZYX"}) == ["YX"]  # metadata that does not fit
    with pytest.raises(ValueError):
        _axes.axes_choices((4,))
    assert _axes.channel_choices((64, 64), "YX") == []
    assert _axes.channel_choices((64, 64, 3), "YXC", rgb=True) == [("red", 0), ("green", 1), ("blue", 2)]
    ch = _axes.channel_choices((2, 8, 8), "CYX", metadata={"channel_names": ["nuc", "mem"]}, in_channels=2)
    assert ch == [("all channels", None), ("nuc", 0), ("mem", 1)]


def test_model_spec_and_trained_registry(tmp_path):
    f = tmp_path / "m.pt"
    f.write_bytes(b"x")
    with pytest.raises(ValueError):
        _models.model_spec(_models.CUSTOM_MODEL, None)
    with pytest.raises(FileNotFoundError):
        _models.model_spec(_models.CUSTOM_MODEL, tmp_path / "missing.pt")
    assert _models.model_spec(_models.CUSTOM_MODEL, f) == str(f)
    seen = []
    reg = _models.TrainedModels()
    reg.changed.connect(lambda: seen.append(1))
    name = reg.add(f)
    assert name == "m" and reg.path("m") == f.resolve() and seen == [1]
    g = tmp_path / "sub"
    g.mkdir()
    (g / "m.pt").write_bytes(b"y")
    assert reg.add(g / "m.pt") == "m (2)"  # same stem, other file: a new name
    assert reg.add(f) == "m"  # same file again: same name
    assert _models.model_spec("m", trained=reg) == str(f.resolve())
    assert _models.model_spec("m") == "m"  # without the registry: a bundled model's name
    assert _models.model_choices(reg)[-3:] == ["m", "m (2)", _models.CUSTOM_MODEL]
    n = len(seen)
    reg.remove("m (2)")
    assert len(seen) == n + 1 and "m (2)" not in reg


def test_each_viewer_has_one_registry_of_trained_models():
    """The Segment and Train widgets of a viewer share its registry: napari hands each its own
    proxy of the viewer. Another viewer has its own."""
    from napari.components import ViewerModel
    from napari.utils._proxies import PublicOnlyProxy

    from cellseg_napari._widgets.common import trained_models_of

    v, w = ViewerModel(), ViewerModel()
    reg = trained_models_of(PublicOnlyProxy(v))
    assert trained_models_of(PublicOnlyProxy(v)) is reg and trained_models_of(v) is reg
    assert trained_models_of(w) is not reg


# ----------------------------------------------------------------------------- segmentation


def test_segmentation_task_matches_segmenter_and_ground_truth(cells):
    image, gt = cells
    model = OracleModel("stardist", gt)
    run, events = _drive(_run.segmentation_task(model, image, "YX"))
    assert events and 0 <= events[-1].fraction <= 1
    ref = Segmenter(OracleModel("stardist", gt)).segment(image)
    np.testing.assert_array_equal(run.result.labels, ref.labels)
    assert run.result.labels.dtype == np.int32
    assert matching(gt, run.result.labels, thresh=0.5).accuracy >= 0.95
    assert "outputs" in run.result.frames[0]  # kept for re-decoding


def test_build_segmenter_tile_none_tiles_large_frames_and_zero_runs_them_whole():
    """Tile None (the widget's 0): frames above the pixel budget go through the network in tiles;
    an explicit 0 runs the whole image at once, whatever its size."""
    model = OracleModel("stardist", np.zeros((32, 32), np.int32))
    big = (20_000, 20_000)
    assert _run.build_segmenter(model).tile is None and _run.build_segmenter(model).network_tile(big) is not None
    assert _run.build_segmenter(model, tile=0).network_tile(big) == 0
    assert _run.build_segmenter(model, tile=128).network_tile(big) == 128


def test_segmentation_task_passes_augmentation(cells):
    torch = pytest.importorskip("torch")  # noqa: F841
    from cellseg.models import CellsegModel, make_config
    from cellseg.representations import get

    image, _ = cells
    model = CellsegModel(make_config(get("distance"), {"depth": 1, "width": 4}), device="cpu")
    assert _run.build_segmenter(model).augment is False  # the model's choice
    model.config["augment"] = True
    assert _run.build_segmenter(model).augment is True
    assert _run.build_segmenter(model, augment=False).augment is False
    runs = {a: _drive(_run.segmentation_task(model, image, "YX", augment=a))[0] for a in (False, True)}
    from cellseg.preprocess import normalize_percentile

    x = normalize_percentile(image, 1.0, 99.8)
    fg = {a: run.result.frames[0]["outputs"]["fg"] for a, run in runs.items()}
    assert np.abs(fg[True] - fg[False]).max() > 1e-4  # a random network is not equivariant
    for a in runs:  # augment=False wins over the model's default
        np.testing.assert_allclose(fg[a], model.predict(x, augment=a)["fg"], atol=1e-6)


def test_redecode_changes_labels_without_network_call(cells):
    image, gt = cells
    model = OracleModel("stardist", gt)
    run, _ = _drive(_run.segmentation_task(model, image, "YX"))
    assert model.n_predict == 1
    same = _run.redecode(run, {"prob_thresh": 0.5})
    np.testing.assert_array_equal(same.labels, run.result.labels)
    strict = _run.redecode(run, {"prob_thresh": 0.97, "border": 30})
    assert model.n_predict == 1
    assert strict.n_objects < run.result.n_objects  # candidates near the border dropped
    expect = Segmenter(OracleModel("stardist", gt), params={"prob_thresh": 0.97, "border": 30}).segment(image)
    np.testing.assert_array_equal(strict.labels, expect.labels)
    assert strict.params.prob_thresh == 0.97


@pytest.mark.parametrize("axes,link", [("TYX", True), ("TYX", False), ("ZYX", False)])
def test_redecode_stacks_equals_iter_segment(axes, link):
    frames, labs = synthetic_stack(n_frames=3, shape=(96, 96), n_cells=8, seed=1)
    model = OracleModel("stardist", list(labs))
    run, events = _drive(_run.segmentation_task(model, frames, axes, link=link))
    assert max(e.n_frames for e in events) == 3
    again = _run.redecode(run, {"prob_thresh": 0.5})
    np.testing.assert_array_equal(again.labels, run.result.labels)
    assert model.n_predict == 3
    if axes == "TYX" and link:  # linked: a cell keeps its id over time
        assert set(np.unique(run.result.labels[0])) & set(np.unique(run.result.labels[1])) - {0}


def test_output_and_polygon_layers(cells):
    image, gt = cells
    run, _ = _drive(_run.segmentation_task(OracleModel("stardist", gt), image, "YX"))
    layers = {kw["name"]: (data, kw, kind) for data, kw, kind in _layers.output_layers(run, "img")}
    prob, kw, kind = layers["img prob"]
    assert kind == "image" and prob.shape == image.shape
    dist = layers["img dist"][0]
    assert dist.shape == (32,) + image.shape  # channel axis first
    polys, pkw, pkind = _layers.polygon_layer(run, "img")
    assert pkind == "shapes" and len(polys) == run.result.n_objects
    assert all(p.shape == (32, 2) for p in polys)
    # polygon vertices surround their object's centre
    ids = np.unique(run.result.labels)[1:]
    centres = np.array([np.argwhere(run.result.labels == i).mean(0) for i in ids])
    poly_centres = np.array([p.mean(0) for p in polys])
    d = np.linalg.norm(poly_centres[:, None] - centres[None], axis=-1).min(1)
    assert np.median(d) < 3


def test_flow_outputs_become_a_colour_layer():
    image, gt = synthetic_cells((96, 96), n_cells=8, seed=0)
    run, _ = _drive(_run.segmentation_task(OracleModel("flows", gt), image, "YX"))
    assert matching(gt, run.result.labels, thresh=0.5).accuracy >= 0.9
    layers = {kw["name"]: (data, kw) for data, kw, _ in _layers.output_layers(run, "img")}
    flow, kw = layers["img flow"]
    assert kw["rgb"] and flow.shape == (96, 96, 3) and kw["metadata"]["axes"] == "YXC"
    assert flow[gt > 0].max() > 0.5 and flow[gt == 0].max() < 0.05  # coloured inside cells only
    assert _layers.polygon_layer(run, "img") is None  # no polygons from flows


def test_flow_to_rgb_colours_by_direction():
    yy, xx = np.mgrid[-10:11, -10:11].astype(np.float32)
    rgb = _layers.flow_to_rgb(np.stack([yy, xx]))
    assert rgb.shape == (21, 21, 3) and rgb.min() >= 0 and rgb.max() <= 1
    assert rgb[10, 10].max() == 0  # no flow: black
    assert not np.allclose(rgb[0, 10], rgb[20, 10])  # up vs down: different hues
    with pytest.raises(ValueError):
        _layers.flow_to_rgb(np.zeros((3, 4, 4)))


# ----------------------------------------------------------------------------- evaluation


def _block_labels():
    gt = np.zeros((60, 60), np.int32)
    gt[2:12, 2:12] = 1     # found (correct)
    gt[2:12, 20:30] = 2    # missed (FN)
    gt[20:30, 2:10] = 3    # merged with 4
    gt[20:30, 10:18] = 4
    gt[40:56, 40:56] = 5   # split in two
    pred = np.zeros_like(gt)
    pred[2:12, 3:12] = 7   # IoU 0.9 with 1
    pred[20:30, 2:18] = 8  # holds all of 3 and 4: merge
    pred[40:56, 40:48] = 9  # two halves of 5: split
    pred[40:56, 48:56] = 10
    pred[45:50, 2:7] = 11  # nothing there: FP
    return gt, pred


def test_error_categories_definitions():
    gt, pred = _block_labels()
    cat, counts = _evaluation.error_categories(gt, pred, 0.5)
    assert counts == {"correct": 1, "false positive": 1, "false negative": 1, "merge": 1, "split": 1}
    assert np.all(cat[pred == 7] == 1)
    assert np.all(cat[pred == 11] == 2)
    assert np.all(cat[gt == 2] == 3)
    assert np.all(cat[pred == 8] == 4)
    assert np.all(cat[(pred == 9) | (pred == 10)] == 5)
    assert np.all(cat[(gt == 0) & (pred == 0)] == 0)
    assert cat.dtype == np.int32 and set(np.unique(cat)) <= set(_evaluation.ERROR_CATEGORIES) | {0}
    # stricter matching: the 0.9-IoU object is no longer correct
    _, strict = _evaluation.error_categories(gt, pred, 0.95)
    assert strict["correct"] == 0 and strict["false positive"] == 2 and strict["false negative"] == 2


def test_evaluation_rows_self_and_known_counts():
    gt, pred = _block_labels()
    rows = dict(_evaluation.evaluation_rows(gt, gt, [0.5, 0.9]))
    assert rows["AP@0.50"] == 1 and rows["AP@0.90"] == 1 and rows["F1@0.50"] == 1
    assert rows["PQ@0.50"] == pytest.approx(1) and rows["SEG"] == pytest.approx(1)
    rows = dict(_evaluation.evaluation_rows(gt, pred, [0.5]))
    # matched at 0.5: 1↔7 (0.9) and 3 or 4 ↔ 8 (0.5 each, >= 0.5 counts) and 5 ↔ 9 or 10 (0.5)
    m = matching(gt, pred, thresh=0.5)
    assert rows["TP@0.50"] == m.tp and rows["FP@0.50"] == m.fp and rows["FN@0.50"] == m.fn
    assert rows["AP@0.50"] == pytest.approx(m.tp / (m.tp + m.fp + m.fn))


def test_time_lapse_is_evaluated_frame_by_frame():
    _, labs = synthetic_stack(n_frames=2, shape=(64, 64), n_cells=5, seed=4)  # ids kept over time
    pred = labs.copy()
    pred[1][pred[1] == 3] = 0  # object 3 lost in frame 1 only
    n = sum(len(np.unique(f)) - 1 for f in labs)
    rows = dict(_evaluation.evaluation_rows(labs, pred, [0.5], axes="TYX"))
    assert rows["frames"] == 2 and rows["FN@0.50"] == 1 and rows["TP@0.50"] == n - 1
    as_volume = dict(_evaluation.evaluation_rows(labs, pred, [0.5]))  # without T: one 3D object per track
    assert as_volume["TP@0.50"] + as_volume["FN@0.50"] == len(np.unique(labs)) - 1 < n
    assert "frames" not in as_volume
    cat, counts = _evaluation.error_categories(labs, pred, 0.5, axes="TYX")
    assert cat.shape == labs.shape and counts["false negative"] == 1
    assert np.all(cat[1][labs[1] == 3] == 3) and not np.any(cat[0] == 3)


# ----------------------------------------------------------------------------- files


def test_looks_like_labels(cells):
    image, gt = cells
    raw16 = (image / image.max() * 4000 + 100).astype(np.uint16)
    raw8_bg = np.where(gt > 0, (image / image.max() * 250).astype(np.uint8), 0).astype(np.uint8)
    assert _io.looks_like_labels(gt)
    assert _io.looks_like_labels(gt.astype(np.uint16))
    assert not _io.looks_like_labels(raw16)
    assert not _io.looks_like_labels(raw8_bg)  # zero background but noisy cells
    assert not _io.looks_like_labels(image)  # float
    assert _io.looks_like_labels(raw16, "cells_masks.tif")  # the name says so


def test_reader_and_writer_round_trip(tmp_path, cells):
    from cellseg.io import read_labels, write_image

    image, gt = cells
    lab_path = tmp_path / "x.tif"
    out = _io.write_labels_layer(lab_path, gt, {"metadata": {"axes": "YX"}})
    assert out == [str(lab_path)]
    np.testing.assert_array_equal(read_labels(lab_path), gt)
    (data, kw, kind), = _io.read_layers(lab_path)
    assert kind == "labels" and kw["metadata"]["axes"] == "YX"
    np.testing.assert_array_equal(data, gt)
    img_path = tmp_path / "raw.tif"
    write_image(img_path, (image * 1000).astype(np.uint16), axes="YX", pixel_size={"Y": 0.5, "X": 0.5})
    (data, kw, kind), = _io.read_layers(img_path)
    assert kind == "image" and kw["scale"] == (0.5, 0.5)
    # a TZYX-less stack in labels-layer order ZYX → written and read back
    stack = np.stack([gt, gt])
    _io.write_labels_layer(tmp_path / "s.tif", stack, {"metadata": {"axes": "TYX"}})
    assert read_labels(tmp_path / "s.tif").shape == stack.shape
    with pytest.raises(ValueError):
        _io.write_labels_layer(tmp_path / "bad.png", gt, {})
    # colour TIFF → an RGB image layer; 2-channel CYX → one layer keeping its channel axis
    rgb = np.stack([(image * 200).astype(np.uint8)] * 3, axis=-1)
    rgb[..., 0] = 0
    import tifffile

    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    (data, kw, kind), = _io.read_layers(tmp_path / "rgb.tif")
    assert kind == "image" and kw.get("rgb") and data.shape == rgb.shape
    write_image(tmp_path / "two.tif", np.stack([gt, gt]).astype(np.uint16), axes="CYX",
                channel_names=["a", "b"])
    (data, kw, kind), = _io.read_layers(tmp_path / "two.tif")
    assert kind == "image" and kw["metadata"]["axes"] == "CYX" and kw["metadata"]["channel_names"] == ["a", "b"]
    from cellseg_napari._io import get_reader

    assert get_reader(str(tmp_path)) is None and get_reader(str(tmp_path / "x.png")) is None
    assert callable(get_reader([str(lab_path), str(img_path)]))
    assert [k for *_, k in get_reader(str(lab_path))([str(lab_path), str(img_path)])] == ["labels", "image"]


def test_sample_data_layers():
    from cellseg_napari import _sample

    layers = _sample.synthetic_sample()
    assert [k for *_, k in layers] == ["image", "labels"]
    assert layers[1][0].max() == 40
    bundled = _sample.bundled_sample()
    assert bundled[0][2] == "image" and bundled[1][2] == "labels"
    assert bundled[0][0].shape == bundled[1][0].shape
    tl = _sample.bundled_timelapse()
    assert tl[0][1]["metadata"]["axes"] == "TYX"


# ----------------------------------------------------------------------------- training


def test_training_pairs_from_layers():
    frames, labs = synthetic_stack(n_frames=3, shape=(48, 48), n_cells=4, seed=0)
    labs = labs.copy()
    labs[1] = 0  # an unannotated frame is skipped
    pairs, names, n_in = _training.training_pairs_from_layers(frames, labs, "TYX")
    assert len(pairs) == 2 and n_in == 1 and names == ["layer[T=0]", "layer[T=2]"]
    two = np.stack([frames[0], frames[0]])  # CYX
    pairs, names, n_in = _training.training_pairs_from_layers(two, labs[0], "CYX")
    assert n_in == 2 and pairs[0][0].shape == (2, 48, 48)
    with pytest.raises(ValueError, match="do not match"):
        _training.training_pairs_from_layers(frames, labs[:2], "TYX")
    with pytest.raises(ValueError, match="no labelled"):
        _training.training_pairs_from_layers(frames, np.zeros_like(labs), "TYX")


def test_training_job_saves_a_loadable_model(tmp_path):
    from cellseg.models import load_model

    img, gt = synthetic_cells((64, 64), n_cells=6, seed=0)
    pairs, names, n_in = _training.training_pairs_from_layers(img, gt, "YX")
    job = _training.TrainingJob(pairs, tmp_path / "m.pt", representation="distance", epochs=2, steps_per_epoch=2,
                                patch_size=32, batch_size=2, network={"depth": 1, "width": 4}, names=names)
    path, events = _drive(job.run())
    assert path == str(tmp_path / "m.pt")
    steps = [e for e in events if e["event"] == "step"]
    assert len(steps) == 4 and steps[-1]["fraction"] == 1.0
    assert [e["fraction"] for e in steps] == sorted(e["fraction"] for e in steps)
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [1, 2]
    assert all(np.isfinite(e["loss"]) for e in steps)
    model = load_model(path)
    assert model.representation.name == "distance" and model.config["name"] == "m"


def test_training_job_stop_saves_nothing(tmp_path):
    img, gt = synthetic_cells((64, 64), n_cells=6, seed=0)
    job = _training.TrainingJob([(img, gt)], tmp_path / "m.pt", representation="distance", epochs=50,
                                steps_per_epoch=50, patch_size=32, batch_size=1, network={"depth": 1, "width": 4})
    gen = job.run()
    next(gen)
    job.stop()
    path, events = _drive(gen)
    assert path is None and not (tmp_path / "m.pt").exists()
    assert sum(e["event"] == "step" for e in events) < 10


def test_float_decimals():
    assert _params.float_decimals(0.4) == 2
    assert _params.float_decimals(0.375) == 3
    assert _params.float_decimals(0.4375) == 4
    assert _params.float_decimals(1 / 3) == 6  # capped: tuned values have at most 6 decimals
    assert _params.float_decimals(15.0) == 2


# ----------------------------------------------------------------------------- scale (object diameter, pixel size)


def _sized_oracle(gt, default="auto", model_factor=2.0, pixel_size=None, **kw):
    """An oracle whose objects are ``model_factor`` times larger than those of ``gt``: an
    image with ``gt``'s objects is resampled by ``model_factor`` (the diameter it is given
    must say so) and the labels come back on the image's grid."""
    from cellseg.scale import median_diameter

    d = median_diameter(gt)
    size = {"diameter": model_factor * d, "pixel_size": pixel_size, "default": default}
    return OracleModel("stardist", gt, object_size=size, **kw), d


def test_scale_control_helpers():
    _, gt = synthetic_cells((64, 64), n_cells=5, seed=0)
    sized, d = _sized_oracle(gt, default="off")
    plain = OracleModel("stardist", gt)
    assert [v for _, v in _scale.diameter_choices(None)] == ["default", "auto", "off", "px"]
    assert _scale.diameter_choices(sized)[0] == ("model default (off)", "default")
    assert [v for _, v in _scale.diameter_choices(sized)] == ["default", "auto", "off", "px"]
    assert [v for _, v in _scale.diameter_choices(plain)] == ["off"]  # no object size: no diameter
    assert "no object size" in _scale.diameter_choices(plain)[0][0]
    assert "no object size" in _scale.object_size_text(plain)
    assert f"{2 * d:.3g} px" in _scale.object_size_text(sized)
    assert _scale.diameter_value("default", 5) is None and _scale.diameter_value(None) is None
    assert _scale.diameter_value("auto", 5) == "auto" and _scale.diameter_value("off") == "off"
    assert _scale.diameter_value("px", 23.5) == 23.5
    with pytest.raises(ValueError, match="diameter"):
        _scale.diameter_value("px", 0)
    assert _scale.pixel_size_from_scale((1.0, 1.0), "YX") is None  # napari's default scale: not known
    assert _scale.pixel_size_from_scale((0.5, 0.5), "YX") == 0.5
    assert _scale.pixel_size_from_scale((2.0, 0.25, 0.25), "ZYX") == 0.25
    assert _scale.pixel_size_from_scale((0.5, 2.0), "YX") == pytest.approx(1.0)  # anisotropic: geometric mean
    assert _scale.pixel_size_from_scale((0.5, 0.5), "YXC") == 0.5  # an RGB layer's scale has no C entry
    assert _scale.pixel_size_from_scale((1.0, 0.5), "ZYX") is None and _scale.pixel_size_from_scale(None, "YX") is None
    # a numeric diameter needs a model that records its object size
    from cellseg.segmenter import SegmenterError

    with pytest.raises(SegmenterError, match="no object size"):
        _run.build_segmenter(plain, diameter=12.0)
    assert _run.build_segmenter(plain, diameter="auto").scale_mode() == ("off", None)


@pytest.mark.parametrize("choice", ["default", "auto", "off", "px"])
def test_segmentation_task_diameter_choice_reaches_the_segmenter(choice):
    image, gt = synthetic_cells((96, 96), n_cells=8, seed=0)
    model, d = _sized_oracle(gt, default="auto")
    diameter = _scale.diameter_value(choice, d)
    run, events = _drive(_run.segmentation_task(model, image, "YX", diameter=diameter))
    res = run.result
    assert run.segmenter.diameter == (None if choice == "default" else ("auto" if choice == "auto" else
                                                                        "off" if choice == "off" else d))
    assert res.labels.shape == image.shape  # labels on the layer's grid, whatever the scale
    assert matching(gt, res.labels, thresh=0.5).accuracy >= 0.95
    if choice == "off":
        assert res.scale == 1.0 and res.diameter is None and model.inputs == [image.shape]
        assert "own scale" in _scale.scale_summary(res, model)
    elif choice == "px":
        assert res.scale == pytest.approx(2.0) and res.diameter == pytest.approx(d)
        assert model.inputs == [(192, 192)] and _scale.network_scale(res) == 2.0
        assert "resampled ×2 to the model's" in _scale.scale_summary(res, model)
    else:  # auto (the model's default here): the estimate's passes (the first at half scale), then 2x
        assert res.diameter == pytest.approx(d, rel=0.1) and res.scale == pytest.approx(2.0, rel=0.1)
        assert any(e.stage == "scale" and "object diameter" in e.message for e in events)
        assert model.inputs[0] == (48, 48) and model.inputs[-1][0] > 180
        summary = _scale.scale_summary(res, model)
        assert f"object diameter {res.diameter:.1f} px" in summary and "resampled" in summary


def test_pixel_size_scales_to_the_model_pixel_size():
    image, gt = synthetic_cells((96, 96), n_cells=8, seed=0)
    model, _ = _sized_oracle(gt, default="auto", pixel_size=0.25)
    run, events = _drive(_run.segmentation_task(model, image, "YX", pixel_size=0.5))
    assert run.result.scale == pytest.approx(2.0) and model.inputs == [(192, 192)]  # no estimate pass
    assert not any(e.stage == "scale" for e in events)
    assert run.result.labels.shape == image.shape
    assert matching(gt, run.result.labels, thresh=0.5).accuracy >= 0.95


def test_redecode_after_a_resampled_run_gives_labels_on_the_layer_grid():
    image, gt = synthetic_cells((96, 96), n_cells=8, seed=0)
    model, d = _sized_oracle(gt)
    run, _ = _drive(_run.segmentation_task(model, image, "YX", diameter=d))
    n = model.n_predict
    assert run.result.frames[0]["outputs"]["prob"].shape[-2:] == (192, 192)  # cached at the model's scale
    same = _run.redecode(run, {"prob_thresh": 0.5})
    np.testing.assert_array_equal(same.labels, run.result.labels)
    strict = _run.redecode(run, {"prob_thresh": 0.97, "border": 30})
    assert model.n_predict == n  # no network call
    assert strict.labels.shape == image.shape and 0 < strict.n_objects < run.result.n_objects
    ref, _ = _sized_oracle(gt)
    expect = Segmenter(ref, params={"prob_thresh": 0.97, "border": 30}, diameter=d).segment(image)
    np.testing.assert_array_equal(strict.labels, expect.labels)
    assert strict.diameter == pytest.approx(d) and strict.scale == pytest.approx(2.0)  # carried over


def test_resampled_stack_redecodes_on_the_layer_grid():
    frames, labs = synthetic_stack(n_frames=3, shape=(64, 64), n_cells=6, seed=2)
    from cellseg.scale import median_diameter

    d = median_diameter(labs[0])
    model = OracleModel("stardist", list(labs), object_size={"diameter": 1.5 * d, "pixel_size": None,
                                                             "default": "off"})
    run, _ = _drive(_run.segmentation_task(model, frames, "TYX", diameter=d, link=True))
    assert run.result.labels.shape == frames.shape and model.inputs == [(96, 96)] * 3
    again = _run.redecode(run, {"prob_thresh": 0.5})
    np.testing.assert_array_equal(again.labels, run.result.labels)
    for t in range(3):
        assert matching(labs[t], again.labels[t], thresh=0.5).accuracy >= 0.9


def test_output_and_polygon_layers_of_a_resampled_run():
    image, gt = synthetic_cells((96, 96), n_cells=8, seed=0)
    model, d = _sized_oracle(gt)
    run, _ = _drive(_run.segmentation_task(model, image, "YX", diameter=d))
    layers = {kw["name"]: (data, kw) for data, kw, _ in _layers.output_layers(run, "img", scale=(0.5, 0.5))}
    prob, kw = layers["img prob"]
    assert prob.shape == (192, 192)  # the model's grid, placed over the image by scale and translate
    assert kw["scale"] == pytest.approx((0.25, 0.25)) and kw["translate"] == pytest.approx((-0.125, -0.125))
    dist, kw = layers["img dist"]
    assert dist.shape == (32, 192, 192) and kw["scale"] == pytest.approx((1.0, 0.25, 0.25))
    # model pixel i lies at image position (i + 0.5) / 2 - 0.5: its world position is that times 0.5
    i = 37
    assert i * kw["scale"][1] + kw["translate"][1] == pytest.approx(((i + 0.5) / 2 - 0.5) * 0.5)
    polys, pkw, _ = _layers.polygon_layer(run, "img")
    labels = run.result.labels
    ids = np.unique(labels)[1:]
    assert len(polys) == len(ids)
    centres = np.array([np.argwhere(labels == k).mean(0) for k in ids])
    d_c = np.linalg.norm(np.array([p.mean(0) for p in polys])[:, None] - centres[None], axis=-1).min(1)
    assert np.median(d_c) < 2  # on the image's grid, not the model's (2x) grid


# ----------------------------------------------------------------------------- RGB layers


def test_rgb_channel_choices_and_axes():
    assert _axes.channel_choices((64, 64, 4), "YXC", rgb=True, in_channels=3)[0] == (
        "all channels (alpha dropped)", None)
    assert _axes.channel_choices((64, 64, 3), "YXC", rgb=True, in_channels=3)[0] == ("all channels", None)
    assert _axes.channel_choices((64, 64, 3), "YXC", rgb=True, in_channels=1, equal=True)[0] == (
        "grey (equal colour channels)", None)
    assert _axes.channel_choices((64, 64, 3), "YXC", rgb=True, in_channels=1)[0] == ("red", 0)
    # an RGB layer's colour axis is its last one, whatever its metadata says
    assert _axes.axes_choices((64, 64, 3), rgb=True, metadata={"axes": "CYX"}) == ["YXC"]
    grey = np.random.default_rng(0).integers(0, 255, (16, 16), dtype=np.uint8)
    assert _axes.channels_equal(np.stack([grey] * 3, -1), 2)
    assert _axes.channels_equal(np.stack([grey] * 3 + [np.full_like(grey, 255)], -1), 2)  # alpha aside
    colour = np.stack([grey, grey, 255 - grey], -1)
    assert not _axes.channels_equal(colour, 2) and not _axes.channels_equal(grey, 1)
    # a grey image shown in blue: a grey model is offered the grey image first
    blue = np.stack([np.zeros_like(grey)] * 2 + [grey], -1)
    assert _axes.pseudo_colour(blue, 2) == 2 and _axes.pseudo_colour(colour, 2) is None
    assert _axes.channel_choices((16, 16, 3), "YXC", rgb=True, in_channels=1, pseudo=2)[0] == (
        "grey (its blue channel, the others empty)", None)
    # a composite of stains (nuclei in blue, cells in green): a nuclei model is offered the blue channel first
    cells = np.zeros((16, 16), np.uint8)
    cells[2:14, 2:14] = 120
    nuclei = np.zeros((16, 16), np.uint8)
    nuclei[5:9, 5:9] = 250
    composite = np.stack([np.zeros_like(grey), cells, nuclei], -1)
    assert _axes.composite_nuclear_channel(composite, 2) == 2 and _axes.composite_nuclear_channel(colour, 2) is None
    assert _axes.channel_choices((16, 16, 3), "YXC", rgb=True, in_channels=3, composite=2)[:2] == [
        ("its blue channel (the nuclear stain of a fluorescence composite)", None), ("red", 0)]


@pytest.mark.parametrize("kind", ["rgb", "rgba", "grey-as-rgb"])
def test_rgb_image_reaches_the_model_as_colour_or_grey(kind):
    image, gt = synthetic_cells((96, 96), n_cells=8, seed=6)
    grey = (image / image.max() * 255).astype(np.uint8)
    if kind == "grey-as-rgb":
        data = np.stack([grey] * 3, axis=-1)
        model = OracleModel("stardist", gt)
    else:
        # cells green on a blue background, a little red noise (a constant channel cannot be normalized)
        red = np.random.default_rng(0).integers(0, 20, grey.shape).astype(np.uint8)
        data = np.stack([red, grey, 255 - grey], axis=-1)
        if kind == "rgba":
            data = np.concatenate([data, np.full_like(grey, 255)[..., None]], axis=-1)
        model = OracleModel("stardist", gt, in_channels=3)
    choices = _axes.channel_choices(data.shape, "YXC", rgb=True, in_channels=model.in_channels,
                                    equal=_axes.channels_equal(data, 2))
    assert choices[0][1] is None  # all colour channels (or grey) by default
    run, _ = _drive(_run.segmentation_task(model, data, "YXC", channel=choices[0][1]))
    assert run.result.labels.shape == gt.shape and run.result.axes == "YX"
    assert matching(gt, run.result.labels, thresh=0.5).accuracy >= 0.95
    x = model.last_input
    if kind == "grey-as-rgb":
        assert x.shape == gt.shape  # read as grey
    else:
        assert x.shape == (3,) + gt.shape  # colour, channels first, alpha dropped
        # each colour reaches the model in its place (the oracle gets normalized channels)
        for c in range(3):
            assert np.corrcoef(x[c].ravel(), data[..., c].ravel().astype(np.float32))[0, 1] > 0.999


# ----------------------------------------------------------------------------- issue 14, items 18 and 19


def test_stack_axes_are_asked_unless_napari_knows_them():
    """A 3-D layer that napari only numbers is not taken for a z-stack: T or Z decides whether
    frames are segmented one by one or planes stitched into 3-D objects (the CLI asks for
    --axes too). Known: the layer's metadata, napari's axis labels, 2-D and RGB layers."""
    combo = _axes.axes_combo_choices((5, 64, 64))
    assert _axes.known_axes((5, 64, 64)) is None
    assert combo[0] == (_axes.CHOOSE_AXES, None) and {"TYX", "ZYX", "CYX"} <= {v for _, v in combo}
    assert ("TYX: time-lapse", "TYX") in combo and ("ZYX: z-stack", "ZYX") in combo
    assert _axes.known_axes((5, 64, 64), axis_labels=("-3", "-2", "-1")) is None  # napari's default labels
    assert _axes.known_axes((5, 64, 64), axis_labels=("0", "1", "2")) is None
    assert _axes.known_axes((5, 64, 64), axis_labels=("t", "y", "x")) == "TYX"
    assert _axes.known_axes((5, 64, 64), axis_labels=("Z", "Y", "X")) == "ZYX"
    assert _axes.known_axes((5, 64, 64), axis_labels=("time", "y", "x")) == "TYX"
    assert _axes.known_axes((5, 64, 64), axis_labels=("t", "t", "x")) is None
    assert _axes.known_axes((5, 64, 64), metadata={"axes": "TYX"}) == "TYX"
    assert _axes.axes_combo_choices((5, 64, 64), axis_labels=("z", "y", "x"))[0] == ("ZYX: z-stack", "ZYX")
    # 4-D: T and Z, or channels
    assert _axes.known_axes((3, 5, 64, 64)) is None
    assert _axes.axes_combo_choices((3, 5, 64, 64))[0][1] is None
    assert _axes.known_axes((3, 5, 64, 64), axis_labels=("t", "z", "y", "x")) == "TZYX"
    assert _axes.known_axes((2, 5, 64, 64), axis_labels=("c", "z", "y", "x")) == "CZYX"
    # RGB stacks: the colour axis is known, the stack axis is not
    assert _axes.known_axes((4, 64, 64, 3), rgb=True) is None
    assert _axes.known_axes((4, 64, 64, 3), rgb=True, axis_labels=("t", "y", "x")) == "TYXC"
    # nothing to ask
    assert _axes.known_axes((64, 64)) == "YX" and _axes.known_axes((64, 64, 3), rgb=True) == "YXC"
    assert _axes.axes_combo_choices((64, 64)) == [("YX", "YX")]
    assert _axes.known_axes((2, 64, 64), metadata={"channel_names": ["a", "b"]}) == "CYX"
    hint = _axes.axes_hint("stack", (5, 64, 64), [v for _, v in combo])
    assert hint.startswith("choose the axes of 'stack' (5, 64, 64)")
    assert "T for time" in hint and "Z for depth" in hint
    assert _axes.display_axis_labels("TYX") == ("t", "y", "x")


def test_reader_puts_a_channel_axis_first_and_names_the_axes(tmp_path):
    """napari aligns layers by their last axes: the ZYX labels of a ZCYX image (an ImageJ
    hyperstack) would lie along its C axis; the reader moves C first."""
    from cellseg.io import write_image

    zcyx = np.random.default_rng(0).integers(0, 1000, (3, 2, 32, 32)).astype(np.uint16)
    write_image(tmp_path / "zc.tif", zcyx, axes="ZCYX", pixel_size={"Z": 2.0, "Y": 0.5, "X": 0.5})
    (data, kw, kind), = _io.read_layers(tmp_path / "zc.tif")
    assert kind == "image" and data.shape == (2, 3, 32, 32) and kw["metadata"]["axes"] == "CZYX"
    np.testing.assert_array_equal(data, np.moveaxis(zcyx, 1, 0))
    assert kw["scale"] == (1.0, 2.0, 0.5, 0.5) and kw["axis_labels"] == ("c", "z", "y", "x")
    tyx = zcyx[:, 0]
    write_image(tmp_path / "t.tif", tyx, axes="TYX")
    (data, kw, kind), = _io.read_layers(tmp_path / "t.tif")
    assert kw["metadata"]["axes"] == "TYX" and kw["axis_labels"] == ("t", "y", "x")


def _rgba(seed=0):
    image, gt = synthetic_cells((64, 64), n_cells=6, seed=seed)
    grey = (image / image.max() * 255).astype(np.uint8)
    red = np.random.default_rng(seed).integers(0, 20, grey.shape).astype(np.uint8)
    return np.stack([red, grey, 255 - grey, np.full_like(grey, 255)], axis=-1), gt


def test_training_channel_choice_and_colour_layers():
    """An RGB(A) layer trains in colour (3 channels, alpha dropped: the constant alpha made
    '1 of 4 normalization groups ... are constant'), or on one chosen channel."""
    from cellseg.train.general import to_rgb3

    rgba, gt = _rgba()
    ch = _axes.training_channel_choices(rgba.shape, "YXC", rgb=True)
    assert ch[0] == ("colour (RGB, alpha dropped)", _axes.COLOUR)
    assert [v for _, v in ch[1:]] == [0, 1, 2, 3] and ch[2][0] == "green only"
    pairs, names, n_in = _training.training_pairs_from_layers(rgba, gt, "YXC", channel=_axes.COLOUR)
    assert n_in == 3 and names == ["layer"]
    np.testing.assert_array_equal(pairs[0][0], to_rgb3(rgba, "YXC", "x"))  # the library's colour conversion
    data = _training.training_data(pairs, names, in_channels=3)
    assert data.in_channels == 3 and data.samples[0].image.shape == (3, 64, 64)
    pairs, _, n_in = _training.training_pairs_from_layers(rgba, gt, "YXC", channel=1)
    assert n_in == 1 and pairs[0][0].shape == (64, 64)
    np.testing.assert_array_equal(pairs[0][0], rgba[..., 1])
    # an empty colour channel reads as background (0), as the Segmenter reads it
    rgb = rgba[..., :3].copy()
    rgb[..., 0] = 0
    pairs, names, _ = _training.training_pairs_from_layers(rgb, gt, "YXC", channel=_axes.COLOUR)
    x = _training.training_data(pairs, names, in_channels=3).samples[0].image
    assert np.all(x[0] == 0) and x[1].max() > 0.9 and x[2].max() > 0.9
    # a grey image for a 3-channel model (fine-tuning a general model): repeated
    x = _training.training_data([(rgba[..., 1], gt)], in_channels=3).samples[0].image
    assert x.shape == (3, 64, 64) and np.array_equal(x[0], x[1]) and np.array_equal(x[0], x[2])
    # grey stored as RGB: grey first; a 2-channel layer: all channels first
    g3 = np.stack([rgba[..., 1]] * 3, axis=-1)
    assert _axes.training_channel_choices(g3.shape, "YXC", rgb=True, equal=True)[0] == (
        "grey (equal colour channels)", 0)
    two = _axes.training_channel_choices((2, 64, 64), "CYX", metadata={"channel_names": ["dapi", "gfp"]})
    assert two == [("all 2 channels", None), ("dapi only", 0), ("gfp only", 1)]
    assert _axes.training_channel_choices((64, 64), "YX") == []


def test_training_job_on_an_rgba_layer_and_its_history_line(tmp_path):
    """The default representation is flows (the best of the bundled models); the last epoch's
    line says "finishing…" while the model is saved, its summary (the history) does not."""
    from cellseg.models import load_model

    assert _training.DEFAULT_REPRESENTATION == "flows"
    rgba, gt = _rgba()
    pairs, names, n_in = _training.training_pairs_from_layers(rgba, gt, "YXC", channel=_axes.COLOUR)
    job = _training.TrainingJob(pairs, tmp_path / "c.pt", epochs=1, steps_per_epoch=2, patch_size=32,
                                batch_size=2, network={"depth": 1, "width": 4}, names=names, in_channels=n_in)
    path, events = _drive(job.run())
    assert path == str(tmp_path / "c.pt")
    last = [e for e in events if e["event"] == "epoch"][-1]
    assert last["message"].endswith("(finishing…)") and "finishing" not in last["summary"]
    model = load_model(path)
    assert model.representation.name == "flows" and model.config["in_channels"] == 3
