"""The "unlike the training data" check (cellseg.qc) and its warning in the Segmenter."""
import numpy as np
import pytest

from cellseg import io
from cellseg.datasets.synthetic import synthetic_cells
from cellseg.qc import image_features, training_image_stats, unlike_training
from tests._events import events_and_result


def _fluo(seed):
    img, _ = synthetic_cells((128, 128), n_cells=12, seed=seed)
    return img


def _dic_like(seed):
    """Mid-grey, symmetric texture: relief-like edges of cells on a flat grey background."""
    img, _ = synthetic_cells((128, 128), n_cells=12, seed=seed)
    rng = np.random.default_rng(seed)
    return 100.0 + np.gradient(img.astype(float), axis=1) * 5 + rng.normal(0, 1, img.shape)


def test_features_tell_fluorescence_from_relief_and_colour():
    f = image_features(_fluo(0))
    d = image_features(_dic_like(0))
    assert f["median"] < 0.2 < d["median"]
    assert f["skew"] > 1.0 > abs(d["skew"])
    assert f["colour"] == d["colour"] == 0.0
    rgb = np.stack([_fluo(1), _fluo(1) * 0.2, _fluo(2)], axis=-1)
    assert image_features(rgb, channel_axis=-1)["colour"] > 0.05
    grey_rgb = np.stack([_fluo(1)] * 3, axis=0)
    assert image_features(grey_rgb, channel_axis=0) == pytest.approx(image_features(_fluo(1)), abs=1e-6)
    assert image_features(np.zeros((8, 8))) == {"median": 0.0, "skew": 0.0, "colour": 0.0}
    # finite float64 values beyond float32's range: the same statistics as the image scaled down
    huge = image_features(_fluo(3).astype(np.float64) * 1e300)
    assert huge == pytest.approx(image_features(_fluo(3)), abs=1e-4)


def test_unlike_training_names_the_statistics():
    stats = training_image_stats([_fluo(s) for s in range(5)], channel_axis=None)
    assert stats["n_images"] == 5 and stats["median"][0] <= stats["median"][1]
    assert unlike_training(image_features(_fluo(9)), stats) == []
    off = unlike_training(image_features(_dic_like(9)), stats)
    assert off and any("median intensity" in o for o in off)
    assert unlike_training(image_features(_dic_like(9)), None) == []


def test_segmenter_warns_once_per_image(tiny_model_path):
    from cellseg.models import load_model
    from cellseg.segmenter import Segmenter

    m = load_model(tiny_model_path)
    m.config["image_stats"] = training_image_stats([_fluo(s) for s in range(5)], channel_axis=None)
    seg = Segmenter(m)
    assert seg.segment(_fluo(11)).warnings == []
    stack = np.stack([_dic_like(3), _dic_like(4)])
    events, res = events_and_result(seg.iter_segment(stack, axes="TYX"))
    assert len(res.warnings) == 1 and "looks unlike" in res.warnings[0]
    assert [e.stage for e in events].count("warning") == 1


@pytest.mark.data
def test_bundled_models_warn_on_the_other_modality(dic_hela, fluo_hela):
    """The whole-cell (DIC, phase contrast) model given fluorescence (and the other way round)
    warns; each on its own data does not."""
    from cellseg.segmenter import Segmenter

    dic = io.read_image(sorted((dic_hela / "02").glob("*.tif"))[0]).data
    fluo = io.read_image(sorted((fluo_hela / "01").glob("*.tif"))[0]).data
    dic_model = Segmenter.from_pretrained("cells")
    nuc_model = Segmenter.from_pretrained("nuclei-flows")
    for seg, own, other in ((dic_model, dic, fluo), (nuc_model, fluo, dic)):
        f_own = image_features(own)
        f_other = image_features(other)
        stats = seg.model.config["image_stats"]
        assert unlike_training(f_own, stats) == []
        assert unlike_training(f_other, stats)
    assert any("looks unlike" in w for w in dic_model.segment(fluo[:256, :256]).warnings)


def test_suggest_model_prefers_the_narrower_training_range(monkeypatch):
    from cellseg import qc

    wide = {"median": [0.0, 0.95], "skew": [-4.0, 13.0], "colour": [0.0, 0.12]}  # fluorescence, brightfield, H&E
    narrow = {"median": [0.25, 0.42], "skew": [-0.2, 2.6], "colour": [0.0, 0.0]}  # DIC, phase contrast
    monkeypatch.setattr(qc, "_bundled_training_stats", lambda: (("nuc", "nuclei", wide), ("cel", "cells", narrow)))
    relief = {"median": 0.35, "skew": 0.3, "colour": 0.0}
    fluo = {"median": 0.02, "skew": 5.0, "colour": 0.0}
    he = {"median": 0.6, "skew": -0.5, "colour": 0.09}
    assert qc.suggest_model(relief, "nuclei", wide) == ("cel", "cells")  # inside both: the narrower is specific
    assert qc.suggest_model(fluo, "nuclei", wide) is None and qc.suggest_model(he, "nuclei", wide) is None
    assert qc.suggest_model(fluo, "cells", narrow) == ("nuc", "nuclei")  # unlike the running model's images
    assert qc.suggest_model(relief, "cells", narrow) is None
    assert qc.suggest_model(relief, None, wide) is None  # a model that does not say what it segments
    assert qc.suggest_model({"median": 0.99, "skew": 40.0, "colour": 0.5}, "cells", narrow) is None


def test_the_default_nuclei_model_points_whole_cell_images_to_the_cells_model(dic_hela, fluo_hela):
    """DIC HeLa falls inside the wide ranges of the nuclei model's training images (fluorescence,
    brightfield, H&E), so it gave no warning; it falls inside those of the cells model too."""
    from cellseg.segmenter import Segmenter

    dic = io.read_image(sorted((dic_hela / "02").glob("*.tif"))[0]).data[:256, :256]
    fluo = io.read_image(sorted((fluo_hela / "01").glob("*.tif"))[0]).data[:256, :256]
    nuclei, cells = Segmenter.from_pretrained("nuclei"), Segmenter.from_pretrained("cells")
    w = nuclei.segment(dic).warnings
    assert any("more like that of 'cells', a model for cells" in m and "--model cells" in m for m in w), w
    assert not any("cells" in m for m in nuclei.segment(fluo).warnings)
    w = cells.segment(fluo).warnings
    assert any("looks unlike" in m and "--model nuclei" in m for m in w), w
    assert not any("--model" in m for m in cells.segment(dic).warnings)
