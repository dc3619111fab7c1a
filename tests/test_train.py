"""The training loop: a tiny model learns, checkpoints resume exactly, thresholds get tuned."""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cellseg.datasets.synthetic import synthetic_cells  # noqa: E402
from cellseg.models import CellsegModel  # noqa: E402
from cellseg.representations import get  # noqa: E402
from cellseg.train import TrainConfig, fit  # noqa: E402
from cellseg.train import loop as loop_mod  # noqa: E402
from cellseg.train import losses as L  # noqa: E402
from cellseg.train.augment import AugmentConfig  # noqa: E402

BB = {"depth": 2, "width": 8, "norm": "batch"}


def _bce_loss(rep):
    """A plain loss for the distance heads, so the loop is tested on its own."""

    def f(raw, targets):
        a = L.binary_cross_entropy(raw["fg"], targets["fg"])
        b = L.binary_cross_entropy(raw["dist"], targets["dist"])
        return a + b, {"fg": a.item(), "dist": b.item()}

    return f


@pytest.fixture
def plain_loss(monkeypatch):
    monkeypatch.setattr(loop_mod, "representation_loss", _bce_loss)


def data(n=4, shape=(64, 64), seed0=0):
    return [synthetic_cells(shape, n_cells=8, seed=seed0 + i) for i in range(n)]


def cfg(**kw):
    base = dict(epochs=3, steps_per_epoch=8, batch_size=4, patch_size=32, lr=1e-2, schedule="constant",
                augment=AugmentConfig.none(), tune_thresholds=False, verbose=False, num_threads=1)
    base.update(kw)
    return TrainConfig(**base)


def test_tiny_model_learns(plain_loss, tmp_path):
    events = []
    model = fit("distance", data(), val=data(1, seed0=10), config=cfg(epochs=4), backbone=BB, out_dir=tmp_path,
                callback=events.append, device="auto")
    hist = model.config["training"]["history"]
    assert len(hist) == 4
    assert hist[-1]["loss"] < 0.7 * hist[0]["loss"]
    assert hist[-1]["val_loss"] < hist[0]["val_loss"]
    assert {"val_ap50", "val_map", "val_seg", "loss_fg", "loss_dist", "lr"} <= set(hist[0])
    kinds = [e["event"] for e in events]
    assert kinds.count("step") == 32 and kinds.count("epoch") == 4 and kinds[-1] == "done"
    for f in ("last.pt", "best.pt", "model.pt", "history.json"):
        assert (tmp_path / f).exists(), f
    assert len(json.loads((tmp_path / "history.json").read_text())) == 4
    loaded = CellsegModel.load(tmp_path / "model.pt", device="cpu")
    assert loaded.config["normalization"] == {"pmin": 1.0, "pmax": 99.8}
    assert loaded.config["training"]["train_data"]["n_images"] == 4
    # the returned model holds the weights of the best epoch (val mAP, then AP50, then val loss)
    ref = CellsegModel.load(tmp_path / "best.pt", device="cpu")
    x = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    np.testing.assert_array_equal(ref.predict(x)["fg"], loaded.predict(x)["fg"])
    best = 1 + max(range(4), key=lambda i: (hist[i]["val_map"], hist[i]["val_ap50"], -hist[i]["val_loss"]))
    assert ref.config["training"]["best_epoch"] == best == loaded.config["training"]["best_epoch"]


def _weights(model):
    return {k: v.clone() for k, v in model.network.state_dict().items()}


@pytest.mark.parametrize("stop_at", [("epoch", 1), ("step", 3)])
def test_resume_continues_exactly(plain_loss, tmp_path, stop_at):
    c = cfg(epochs=2, steps_per_epoch=5, augment=AugmentConfig(), schedule="cosine", warmup_steps=2)
    train, val = data(3), data(1, seed0=10)
    ref = fit("distance", train, val=val, config=c, backbone=BB, out_dir=tmp_path / "a")

    kind, n = stop_at

    def stopper(ev):
        if ev["event"] == kind and ev.get("epoch") == 1 and (kind == "epoch" or ev["step"] == n):
            return False
        return None

    fit("distance", train, val=val, config=c, backbone=BB, out_dir=tmp_path / "b", callback=stopper)
    assert (tmp_path / "b" / "last.pt").exists() and not (tmp_path / "b" / "model.pt").exists()
    resumed = fit("distance", train, val=val, config=c, backbone=BB, out_dir=tmp_path / "b", resume=True)
    wa, wb = _weights(ref), _weights(resumed)
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    ha = ref.config["training"]["history"]
    hb = resumed.config["training"]["history"]
    assert [h["loss"] for h in ha] == [h["loss"] for h in hb]
    assert [h["val_ap50"] for h in ha] == [h["val_ap50"] for h in hb]


def test_resume_errors(plain_loss, tmp_path):
    with pytest.raises(FileNotFoundError, match="last.pt"):
        fit("distance", data(2), config=cfg(), backbone=BB, out_dir=tmp_path, resume=True)
    fit("distance", data(2), config=cfg(epochs=1, steps_per_epoch=1), backbone=BB, out_dir=tmp_path)
    with pytest.raises(FileExistsError, match="resume"):
        fit("distance", data(2), config=cfg(epochs=1, steps_per_epoch=1), backbone=BB, out_dir=tmp_path)
    with pytest.raises(ValueError, match="differ"):
        fit("distance", data(2), config=cfg(), backbone={**BB, "width": 4}, out_dir=tmp_path, resume=True)


def test_same_seed_same_run(plain_loss):
    c = cfg(epochs=1, steps_per_epoch=3, augment=AugmentConfig())
    a = fit("distance", data(2), config=c, backbone=BB)
    b = fit("distance", data(2), config=c, backbone=BB)
    wa, wb = _weights(a), _weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_fit_validation_errors(plain_loss):
    with pytest.raises(ValueError, match="divisible by 4"):
        fit("distance", data(2), config=cfg(patch_size=30), backbone=BB)
    with pytest.raises(ValueError, match="schedule"):
        cfg(schedule="linear")
    from cellseg.train.dataset import DataError

    im, lab = data(1)[0]
    with pytest.raises(DataError, match="whole numbers"):  # float labels of whole numbers are fine (item 11)
        fit("distance", [(im, lab.astype(float) + 0.5)], config=cfg(), backbone=BB)


def test_tuning_at_end_stores_thresholds(plain_loss, tmp_path):
    model = fit("distance", data(3), val=data(2, seed0=20), config=cfg(epochs=2, tune_thresholds=True),
                backbone=BB, out_dir=tmp_path)
    tuning = model.config["training"]["tuning"]
    assert tuning["metric"] == "map" and tuning["thresholds"] == model.thresholds
    assert CellsegModel.load(tmp_path / "model.pt").thresholds == model.thresholds


def test_fine_tune_existing_model(plain_loss):
    m = fit("distance", data(2), config=cfg(epochs=1, steps_per_epoch=2), backbone=BB)
    before = _weights(m)
    m2 = fit(None, data(2, seed0=5), model=m, config=cfg(epochs=1, steps_per_epoch=2, lr=1e-2))
    assert m2 is m and "fine_tuned_from" in m2.config["training"]
    assert any(not torch.equal(before[k], v) for k, v in _weights(m2).items() if v.is_floating_point())


_HAVE = [r for r in ("distance", "stardist", "flows", "offsets")
         if importlib.util.find_spec(f"cellseg.train.losses_{r}") is not None]


@pytest.mark.parametrize("rep_name", _HAVE)
def test_fit_with_representation_loss(rep_name):
    """Each representation's own loss trains through the loop (finite, decreasing)."""
    rep = get(rep_name)
    c = cfg(epochs=2, steps_per_epoch=6, lr=3e-3)
    model = fit(rep, data(3), config=c, backbone={**BB, "width": 8})
    hist = model.config["training"]["history"]
    assert all(np.isfinite(h["loss"]) for h in hist)
    assert hist[-1]["loss"] < hist[0]["loss"]


def test_fit_3d(plain_loss):
    from cellseg.datasets.synthetic import synthetic_cells_3d

    vols = [synthetic_cells_3d((16, 32, 32), n_cells=4, seed=i) for i in range(2)]
    rep = get("distance", ndim=3)
    c = cfg(epochs=1, steps_per_epoch=2, batch_size=2, patch_size=(8, 16, 16), augment=AugmentConfig())
    model = fit(rep, vols, val=vols[:1], config=c, backbone={"ndim": 3, "depth": 1, "width": 2})
    assert model.ndim == 3 and model.config["axes"] == "ZYX"
    assert model.predict(vols[0][0].astype(np.float32))["dist"].shape == (1, 16, 32, 32)


def _decodes_nothing(monkeypatch):
    from cellseg.representations.base import Decoded

    def nothing(self, outputs, params=None):
        shape = next(iter(outputs.values())).shape[1:]
        return Decoded(np.zeros(shape, np.int32), np.zeros(0, np.float32))

    monkeypatch.setattr(type(get("distance")), "decode", nothing)


@pytest.mark.parametrize("tune", [False, True])
def test_a_model_that_finds_nothing_is_saved_with_a_warning(plain_loss, tmp_path, monkeypatch, tune):
    # issue 14, item 20: a model whose validation finds no object used to be saved without a word
    _decodes_nothing(monkeypatch)
    with pytest.warns(loop_mod.TrainingWarning, match="finds no object in the 2 validation images"):
        model = fit("distance", data(2), val=data(2, seed0=30), config=cfg(epochs=1, steps_per_epoch=1,
                                                                             tune_thresholds=tune),
                    backbone=BB, out_dir=tmp_path)
    warn = model.config["training"]["warnings"]
    assert len(warn) == 1 and "probably useless" in warn[0]
    assert ("even with tuned thresholds" in warn[0]) == tune
    assert model.config["training"]["history"][-1]["val_objects"] == 0
    assert CellsegModel.load(tmp_path / "model.pt").config["training"]["warnings"] == warn


def test_useless_model_message_rules():
    hist = [{"epoch": 1, "val_ap50": 0.0, "val_objects": 7}, {"epoch": 2, "val_ap50": 0.4, "val_objects": 9}]
    assert loop_mod._useless_model_message(hist, {"best_epoch": 2}, 3) is None
    msg = loop_mod._useless_model_message(hist, {"best_epoch": 1}, 3)
    assert "finds 7 objects in the 3 validation images, none of which matches" in msg
    assert loop_mod._useless_model_message(hist, {"best_epoch": 1, "tuning": {"score": 0.2}}, 3) is None
    assert loop_mod._useless_model_message([], {}, 3) is None  # no validation: nothing to say


def test_training_log_counts_one_image_as_one_image(plain_loss, capsys):
    # issue 14, item 21: "training distance on 1 images"
    fit("distance", data(1), val=data(1, seed0=40), config=cfg(epochs=1, steps_per_epoch=1, verbose=True),
        backbone=BB)
    err = capsys.readouterr().err
    assert "training distance on 1 image (" in err and "validating on 1;" in err


# --------------------------------------------------------------------------- object size
def _resampling_model(default="auto"):
    """A tiny model that records an object size twice the synthetic cells' (as the general models do)."""
    from cellseg.scale import median_diameter

    m = fit("distance", data(2), config=cfg(epochs=1, steps_per_epoch=2), backbone=BB)
    d = float(np.median([median_diameter(lab, exclude_border=True) for _, lab in data(2, seed0=5)]))
    m.config["object_size"] = {"diameter": round(2 * d, 3), "pixel_size": None, "default": default}
    return m


def _record_sampled_shapes(monkeypatch):
    shapes: list = []
    real = loop_mod.PatchSampler

    def sampler(train, *a, **k):
        shapes.extend(s.shape for s in train.samples)
        return real(train, *a, **k)

    monkeypatch.setattr(loop_mod, "PatchSampler", sampler)
    return shapes


def test_fine_tuning_resamples_to_the_models_object_size(plain_loss, monkeypatch):
    from cellseg.scale import median_diameter

    m = _resampling_model()
    shapes = _record_sampled_shapes(monkeypatch)
    new = data(2, seed0=5)
    m2 = fit(None, new, val=data(1, seed0=9), model=m, config=cfg(epochs=1, steps_per_epoch=2))
    rec = m2.config["training"]["object_size_resampling"]
    assert rec["diameter"] == m.config["object_size"]["diameter"]
    for i, (_, lab) in enumerate(new):  # each image by its own objects' size: about 2x
        f = rec["factors"][f"train[{i}]"]
        assert f == pytest.approx(m.config["object_size"]["diameter"] / median_diameter(lab, exclude_border=True),
                                  rel=1e-3)
        assert 1.6 < f < 2.4
        assert shapes[i] == tuple(int(round(n * f)) for n in lab.shape)
    assert "val[0]" in rec["factors"]
    assert m2.config["object_size"]["default"] == "auto"  # the record of the model itself stays


def test_fine_tuning_keeps_the_scale_when_asked_or_when_the_model_does_not_resample(plain_loss, monkeypatch):
    resampling, not_resampling = _resampling_model(), _resampling_model(default="off")
    shapes = _record_sampled_shapes(monkeypatch)
    m = fit(None, data(2, seed0=5), model=resampling, config=cfg(epochs=1, steps_per_epoch=2, match_object_size=False))
    assert "object_size_resampling" not in m.config["training"] and shapes == [(64, 64)] * 2
    shapes.clear()
    m = fit(None, data(2, seed0=5), model=not_resampling, config=cfg(epochs=1, steps_per_epoch=2))
    assert "object_size_resampling" not in m.config["training"] and shapes == [(64, 64)] * 2
    with pytest.raises(ValueError, match="match_object_size"):
        cfg(match_object_size="yes")


def test_a_new_model_records_its_training_object_size(plain_loss):
    from cellseg.scale import equivalent_diameters
    from cellseg.segmenter import Segmenter

    train = data(3)
    m = fit("distance", train, config=cfg(epochs=1, steps_per_epoch=2), backbone=BB)
    size = m.config["object_size"]
    per_image = []
    for _, lab in train:  # the median over images of their interior objects' median diameter
        edge = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
        inner = np.where(np.isin(lab, edge[edge > 0]), 0, lab)
        per_image.append(np.median(equivalent_diameters(inner)))
    assert size == {"diameter": pytest.approx(float(np.median(per_image)), abs=1e-3), "pixel_size": None,
                    "default": "off"}
    img = train[0][0]
    res = Segmenter(m, diameter=2 * size["diameter"], backend="torch").segment(img)  # was refused: no size
    assert res.labels.shape == img.shape


def test_match_object_size_resamples_images_labels_and_pixel_size():
    from cellseg.scale import median_diameter
    from cellseg.train.dataset import TrainingData, TrainingSample
    from cellseg.train.general import match_object_size, training_object_size

    yy, xx = np.mgrid[:80, :80]
    lab = np.zeros((80, 80), np.int32)
    for i, (cy, cx) in enumerate([(20, 20), (20, 60), (60, 20), (60, 60)], start=1):
        lab[(yy - cy) ** 2 + (xx - cx) ** 2 <= 36] = i  # discs of 13 px
    img = (lab > 0).astype(np.float32)[None]
    ps = {"Z": None, "Y": 0.5, "X": 0.5}
    td = TrainingData([TrainingSample("a", img, lab, ps)], check=False)
    assert training_object_size(td) == {"diameter": pytest.approx(median_diameter(lab), abs=1e-3), "pixel_size": 0.5,
                                        "default": "off"}
    out, factors = match_object_size(td, 26.0)
    s = out.samples[0]
    assert factors["a"] == pytest.approx(26.0 / median_diameter(lab), rel=1e-3)
    assert s.labels.shape == s.image.shape[1:] == (round(80 * factors["a"]),) * 2
    assert median_diameter(s.labels) == pytest.approx(26.0, rel=0.05) and s.labels.max() == 4
    assert s.pixel_size["Y"] == pytest.approx(0.5 / factors["a"])
    other = TrainingSample("b", img, lab, {"Z": None, "Y": 0.8, "X": 0.8})  # two pixel sizes: none recorded
    assert training_object_size(TrainingData([td.samples[0], other], check=False))["pixel_size"] is None


def test_an_rgb_model_trains_on_grey_and_rgba_images():
    from cellseg.train.dataset import to_channels_first

    grey = np.arange(12, dtype=np.uint16).reshape(3, 4)
    x = to_channels_first(grey, "YX", 2, 3, "g")
    assert x.shape == (3, 3, 4) and all(np.array_equal(c, grey) for c in x)
    rgba = np.random.default_rng(0).random((3, 4, 4)).astype(np.float32)
    np.testing.assert_array_equal(to_channels_first(rgba, "YXC", 2, 3, "a"), np.moveaxis(rgba[..., :3], -1, 0))
    with pytest.raises(Exception, match="takes 3 channels, the image has 2"):
        to_channels_first(np.zeros((2, 3, 4)), "CYX", 2, 3, "two")


def test_training_reads_a_grey_image_shown_in_colour_as_the_segmenter_does():
    """DAPI saved in blue: an RGB model trains on the grey image repeated (as it segments it), not on
    (0, 0, grey); a grey model on the blue channel itself."""
    from cellseg.train.dataset import to_channels_first

    g = np.random.default_rng(0).random((16, 16)).astype(np.float32)
    blue = np.stack([np.zeros_like(g), np.zeros_like(g), g], -1)
    x = to_channels_first(blue, "YXC", 2, 3, "blue")
    assert x.shape == (3, 16, 16) and all(np.array_equal(c, g) for c in x)
    np.testing.assert_array_equal(to_channels_first(blue, "YXC", 2, 1, "blue")[0], g)
