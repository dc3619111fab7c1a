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
