"""napari with 3-D layers: the axes choice (ZYX or TYX), 3D models on volumes, 2D models
plane by plane, and 3D training from layers and folders (widgets under Xvfb through
pytest-xvfb, as tests/test_napari_plugin.py)."""
from __future__ import annotations

import numpy as np
import pytest

napari = pytest.importorskip("napari")
torch = pytest.importorskip("torch")

from cellseg import io  # noqa: E402
from cellseg.datasets.synthetic import synthetic_cells_3d  # noqa: E402
from cellseg.models import CellsegModel  # noqa: E402
from cellseg.representations import get  # noqa: E402
from cellseg.segmenter import Segmenter  # noqa: E402
from cellseg_napari import _axes, _scale, _training  # noqa: E402
from cellseg_napari._testing import OracleModel  # noqa: E402

WAIT_MS = 60_000
TINY_NET = next(k for k in _training.NETWORKS if k.startswith("tiny"))


def _vol(seed=0, anisotropy=2.0, shape=(12, 40, 40)):
    return synthetic_cells_3d(shape, n_cells=5, radius=(5, 8), anisotropy=anisotropy, seed=seed)


def _open(viewer, name, qtbot):
    _, widget = viewer.window.add_plugin_dock_widget("cellseg-toolkit", name)  # named after the distribution
    if hasattr(widget, "busy"):
        qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    return widget


# ----------------------------------------------------------------------------- logic


def test_volume_training_pairs_keep_z():
    img, lab = _vol()
    pairs, names, n_in = _training.training_pairs_from_layers(img, lab, "ZYX", volume=True)
    assert len(pairs) == 1 and pairs[0][0].shape == img.shape and names == ["layer"] and n_in == 1
    planes, _, _ = _training.training_pairs_from_layers(img, lab, "ZYX")  # a 2D model: the labelled planes
    assert len(planes) == int((lab.reshape(len(lab), -1) > 0).any(1).sum()) and planes[0][0].ndim == 2
    # a time-lapse of volumes: one volume per annotated frame; channels go first in each volume
    t_img, t_lab = np.stack([img, img]), np.stack([lab, np.zeros_like(lab)])
    pairs, names, _ = _training.training_pairs_from_layers(t_img, t_lab, "TZYX", volume=True)
    assert names == ["layer[T=0]"] and pairs[0][0].shape == img.shape
    two = np.stack([img, 2 * img], axis=1)  # Z C Y X
    pairs, _, n_in = _training.training_pairs_from_layers(two, lab, "ZCYX", volume=True)
    assert n_in == 2 and pairs[0][0].shape == (2, *img.shape)
    np.testing.assert_array_equal(pairs[0][0][1], 2 * img)
    with pytest.raises(ValueError, match="no Z axis"):
        _training.training_pairs_from_layers(img, lab, "TYX", volume=True)
    with pytest.raises(ValueError, match="not RGB colour"):
        _training.training_pairs_from_layers(np.stack([img] * 3, -1), lab, "ZYXC", channel=_axes.COLOUR, volume=True)


def test_z_step_from_the_layer_and_the_note_for_another_voxel_shape():
    assert _scale.z_step_from_layer((2.0, 0.5, 0.5), "ZYX") == 4.0
    assert _scale.z_step_from_layer((1.0, 1.0, 1.0), "ZYX") is None  # napari's default scale says nothing
    assert _scale.z_step_from_layer((1.0, 1.0, 1.0), "ZYX", {"pixel_size": {"Z": 1.0, "Y": 0.4, "X": 0.4}}) == 2.5
    assert _scale.z_step_from_layer((3.0, 1.0, 1.0), "TYX") is None
    model3 = OracleModel(get("distance", ndim=3, anisotropy=2.0), _vol()[1])
    assert _scale.z_step_note(model3, "ZYX", 2.1) is None
    assert _scale.z_step_note(model3, "ZYX", None) is None
    assert "Z step of 2 px, this layer's is 4 px: resample Z by 2" in _scale.z_step_note(model3, "ZYX", 4.0)
    assert _scale.z_step_note(OracleModel("distance", _vol()[1][0]), "ZYX", 4.0) is None  # 2D model


def test_training_job_trains_a_3d_model_from_layers_and_from_a_folder(tmp_path):
    img, lab = _vol()
    pairs, names, n_in = _training.training_pairs_from_layers(img, lab, "ZYX", volume=True)
    job = _training.TrainingJob(pairs, tmp_path / "v.pt", representation="offsets", epochs=1, steps_per_epoch=1,
                                batch_size=1, patch_size=32, network=_training.NETWORKS[TINY_NET], names=names,
                                ndim=3, anisotropy=2.0)
    path = _run(job)
    m = CellsegModel.load(path, device="cpu")
    assert m.ndim == 3 and m.representation.anisotropy == 2.0
    # Z: the patch size over the Z step (at least 16), within the volume (12 planes)
    assert m.config["training"]["train_config"]["patch_size"] == [12, 32, 32]
    # a folder of ZYX volumes: 3D from the data, the Z step from the files' voxel size
    root = tmp_path / "d"
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for i in range(2):
        im, lb = _vol(i, anisotropy=3.0)
        ps = {"Z": 1.5, "Y": 0.5, "X": 0.5}
        io.write_image(root / "images" / f"v{i}.tif", im.astype(np.float32), axes="ZYX", pixel_size=ps)
        io.write_labels(root / "masks" / f"v{i}.tif", lb, axes="ZYX", pixel_size=ps)
    job = _training.TrainingJob(root, tmp_path / "f.pt", representation="distance", epochs=1, steps_per_epoch=1,
                                batch_size=1, patch_size=32, network=_training.NETWORKS[TINY_NET])
    m = CellsegModel.load(_run(job), device="cpu")
    assert m.ndim == 3 and m.representation.anisotropy == 3.0


def _run(job):
    gen = job.run()
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


# ----------------------------------------------------------------------------- widgets


def test_segment_widget_3d_model_on_a_volume_and_a_time_lapse(make_napari_viewer_proxy, qtbot):
    """A 3-D layer napari only numbers asks for its axes; as ZYX a 3D model segments it as one
    volume and the result is a 3D labels layer with the image's scale; as TYX the 3D model is
    refused (it needs Z), and a 2D model segments the frames one by one."""
    img, lab = _vol()
    viewer = make_napari_viewer_proxy()
    viewer.add_image(img, name="vol", scale=(2.0, 1.0, 1.0))
    widget = _open(viewer, "Segment", qtbot)
    rep3 = get("distance", ndim=3, anisotropy=2.0)
    widget.use_model(OracleModel(rep3, lab), "oracle 3d")
    widget._image.value = "vol"
    assert widget._axes.value is None and {"ZYX", "TYX"} <= set(widget._axes.choices)
    widget.run()
    assert widget._status.value.startswith("choose the axes of 'vol'")
    widget._axes.value = "ZYX"
    widget.run()
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    layer = viewer.layers["vol labels"]
    out = np.asarray(layer.data)
    assert out.ndim == 3 and layer.ndim == 3 and layer.metadata["axes"] == "ZYX"
    assert tuple(layer.scale) == (2.0, 1.0, 1.0) and tuple(layer.axis_labels) == ("z", "y", "x")
    np.testing.assert_array_equal(out, Segmenter(OracleModel(rep3, lab)).segment(img, axes="ZYX").labels)
    assert out.max() == lab.max() and "note" not in widget._status.value
    # the same volume with a Z step of 4: segmented, with a note
    viewer.layers["vol"].scale = (4.0, 1.0, 1.0)
    widget.use_model(OracleModel(rep3, lab), "oracle 3d")
    widget.run()
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    assert "note: the model was trained on volumes with a Z step of 2 px" in widget._status.value
    # as a time-lapse the 3D model has no volume to segment
    viewer.add_image(img, name="movie")
    widget._image.value = "movie"
    widget._axes.value = "TYX"
    widget.use_model(OracleModel(rep3, lab), "oracle 3d")
    widget.run()
    assert not widget.busy
    assert "this model segments 3D volumes (ZYX): 'movie' has no Z axis" in widget._status.value
    assert "movie labels" not in viewer.layers
    # a 2D model segments the frames one by one (no stitching: ids differ between frames)
    widget.use_model(OracleModel("distance", list(lab)), "oracle 2d")
    widget.run()
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    t_lab = np.asarray(viewer.layers["movie labels"].data)
    np.testing.assert_array_equal(t_lab, Segmenter(OracleModel("distance", list(lab))).segment(img, axes="TYX").labels)
    assert tuple(viewer.layers["movie labels"].axis_labels) == ("t", "y", "x")


def test_train_widget_trains_a_3d_model_on_3d_layers(make_napari_viewer_proxy, qtbot, tmp_path):
    img, lab = _vol()
    viewer = make_napari_viewer_proxy()
    viewer.add_image(img, name="vol", scale=(2.5, 1.0, 1.0))
    viewer.add_labels(lab, name="vol gt", scale=(2.5, 1.0, 1.0))
    train = _open(viewer, "Train", qtbot)
    train._image.value, train._labels_layer.value = "vol", "vol gt"
    assert train._axes.value is None  # napari only numbers the axes: asked
    assert train._dims.native.isHidden()
    with pytest.raises(ValueError, match="choose the axes of 'vol'"):
        train.make_job()
    train._axes.value = "TYX"
    assert train._dims.native.isHidden()  # frames: a 2D model
    train._axes.value = "ZYX"
    assert not train._dims.native.isHidden() and train._dims.value == 2 and train._z_step.native.isHidden()
    job = train.make_job()
    assert job.ndim == 2 and len(job.data) > 1  # the planes
    train._dims.value = 3
    assert not train._z_step.native.isHidden() and train._z_step.value == 2.5  # from the layer's scale
    job = train.make_job()
    assert job.ndim == 3 and job.anisotropy == 2.5 and len(job.data) == 1 and job.data[0][0].shape == img.shape
    train._rep.value = "flows"
    train._network.value = TINY_NET
    train._epochs.value, train._steps.value, train._batch.value, train._patch.value = 1, 2, 1, 32
    train._out.value = str(tmp_path / "vol.pt")
    train.train()
    qtbot.waitUntil(lambda: not train.busy, timeout=WAIT_MS)
    name = train.registered_name
    try:
        assert train.saved_as == str(tmp_path / "vol.pt"), train._status.value
        m = CellsegModel.load(tmp_path / "vol.pt", device="cpu")
        assert m.ndim == 3 and m.representation.name == "flows" and m.representation.anisotropy == 2.5
        # fine-tuning keeps the model's dimensionality: no choice
        train._start.value = name
        assert train._dims.native.isHidden() and train._z_step.native.isHidden()
    finally:
        if name:
            train.trained_models.remove(name)
