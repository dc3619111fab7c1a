"""Test-time augmentation: outputs of transformed inputs mapped back to the image's frame.

The check that needs no trained network: replace the network by an analytic map that
is exactly equivariant (scalar heads = the image, displacement heads = its gradient,
per-axis sizes = |gradient|, StarDist rays = gradient . ray direction). For such a
"network" the mean over the 8 transforms, each mapped back by
``Representation.channel_map``, must equal the plain output; any wrong sign,
channel or ray index breaks the equality (the negative controls show it does).
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cellseg.models import CellsegModel, ModelFormatError, make_config  # noqa: E402
from cellseg.representations import get  # noqa: E402
from cellseg.representations.stardist import StarDist, ray_angles  # noqa: E402

TINY = {"depth": 1, "width": 4}


def _equivariant_forward(model):
    rep = model.representation
    calls = []

    def forward(x):
        x = np.asarray(x, np.float64)
        calls.append(x.copy())
        img = x[0]
        g = np.stack(np.gradient(img))  # component i along axis i
        out = {}
        for h in rep.heads():
            if h.name in rep.vector_heads:
                v = g if rep.vector_heads[h.name] else np.abs(g)
            elif isinstance(rep, StarDist) and h.name == "dist":
                phi = ray_angles(rep.n_rays)
                v = np.sin(phi)[:, None, None] * g[0] + np.cos(phi)[:, None, None] * g[1] + 3.0
            else:
                v = np.repeat(img[None], h.channels, 0)
            out[h.name] = v.astype(np.float32)
        return out

    model._forward = forward
    return calls


CASES = [("flows", 2, {}), ("flows", 3, {}), ("offsets", 2, {}), ("offsets", 3, {}), ("distance", 2, {}),
         ("stardist", 2, {"n_rays": 32}), ("stardist", 2, {"n_rays": 8}), ("flows", 2, {"mode": "omnipose"})]


@pytest.mark.parametrize("name,ndim,cfg", CASES)
def test_augmented_equals_plain_for_an_equivariant_network(name, ndim, cfg):
    rep = get(name, ndim=ndim, **cfg) if name != "stardist" else get(name, **cfg)
    m = CellsegModel(make_config(rep, {**TINY, "ndim": ndim}), device="cpu")
    calls = _equivariant_forward(m)
    rng = np.random.default_rng(0)
    shape = (5, 13, 10) if ndim == 3 else (13, 10)  # not square, not a multiple of div_by
    x = rng.random(shape).astype(np.float32)
    plain = m.predict(x, augment=False)
    assert len(calls) == 1
    aug = m.predict(x, augment=True)
    assert len(calls) == 9
    # the 8 inputs are 8 different arrays (the transforms of the padded image)
    seen = {(c.shape, c.tobytes()) for c in calls[1:]}
    assert len(seen) == 8
    assert set(aug) == set(plain)
    for k in plain:
        assert aug[k].shape == plain[k].shape and aug[k].dtype == np.float32
        np.testing.assert_allclose(aug[k], plain[k], rtol=1e-5, atol=1e-5, err_msg=k)


@pytest.mark.parametrize("name,head", [("flows", "flow"), ("offsets", "offset"), ("stardist", "dist")])
def test_wrong_channel_map_is_detected(name, head, monkeypatch):
    """Negative control: without the channel mapping the equality above fails."""
    rep = get(name)
    m = CellsegModel(make_config(rep, TINY), device="cpu")
    _equivariant_forward(m)
    x = np.random.default_rng(1).random((12, 12)).astype(np.float32)
    plain = m.predict(x, augment=False)
    real = type(rep).channel_map

    def identity_for_head(self, h, perm, flips):
        src, sign = real(self, h, perm, flips)
        if h == head:
            return np.arange(len(src)), np.ones(len(src), np.float32)
        return src, sign

    monkeypatch.setattr(type(rep), "channel_map", identity_for_head)
    aug = m.predict(x, augment=True)
    assert not np.allclose(aug[head], plain[head], rtol=1e-3, atol=1e-3)


def test_channel_map_by_hand():
    rep = get("flows")
    # identity
    src, sign = rep.channel_map("flow", (0, 1), (False, False))
    assert src.tolist() == [0, 1] and sign.tolist() == [1, 1]
    # rows reversed: the row component changes sign
    src, sign = rep.channel_map("flow", (0, 1), (True, False))
    assert src.tolist() == [0, 1] and sign.tolist() == [-1, 1]
    # axes swapped, then the transformed rows (= original columns) reversed
    src, sign = rep.channel_map("flow", (1, 0), (True, False))
    assert src.tolist() == [1, 0] and sign.tolist() == [1, -1]
    # scalar head untouched
    src, sign = rep.channel_map("prob", (1, 0), (True, True))
    assert src.tolist() == [0] and sign.tolist() == [1]
    # offsets' sigma follows the axes without a sign
    src, sign = get("offsets", ndim=3).channel_map("sigma", (0, 2, 1), (False, True, True))
    assert src.tolist() == [0, 2, 1] and sign.tolist() == [1, 1, 1]
    # StarDist, 8 rays (k * 45 degrees, direction (sin, cos) in (row, col)):
    sd = StarDist(n_rays=8)
    # rows reversed: angle -phi
    assert sd.channel_map("dist", (0, 1), (True, False))[0].tolist() == [0, 7, 6, 5, 4, 3, 2, 1]
    # columns reversed: angle pi - phi
    assert sd.channel_map("dist", (0, 1), (False, True))[0].tolist() == [4, 3, 2, 1, 0, 7, 6, 5]
    # axes swapped: angle pi/2 - phi
    assert sd.channel_map("dist", (1, 0), (False, False))[0].tolist() == [2, 1, 0, 7, 6, 5, 4, 3]
    with pytest.raises(KeyError, match="no head"):
        rep.channel_map("rays", (0, 1), (False, False))


def test_rays_that_do_not_map_are_refused():
    with pytest.raises(ValueError, match="multiple of 4"):
        StarDist(n_rays=6).channel_map("dist", (1, 0), (False, False))
    with pytest.raises(ValueError, match="even n_rays"):
        StarDist(n_rays=5).channel_map("dist", (0, 1), (False, True))
    # rows only: any n_rays maps
    assert StarDist(n_rays=5).channel_map("dist", (0, 1), (True, False))[0].tolist() == [0, 4, 3, 2, 1]


def test_model_default_and_config_validation(tmp_path):
    cfg = make_config(get("flows"), TINY)
    m = CellsegModel(cfg, device="cpu")
    assert m.augment is False
    x = np.random.default_rng(2).random((16, 16)).astype(np.float32)
    plain, aug = m.predict(x, augment=False), m.predict(x, augment=True)
    assert not np.allclose(plain["flow"], aug["flow"])  # a random network is not equivariant
    m.config["augment"] = True
    np.testing.assert_array_equal(m.predict(x)["flow"], aug["flow"])
    m2 = CellsegModel.load(m.save(tmp_path / "m.pt"), device="cpu")
    assert m2.augment is True
    np.testing.assert_allclose(m2.predict(x)["flow"], aug["flow"], atol=1e-6)
    with pytest.raises(ModelFormatError, match="augment must be true or false"):
        CellsegModel({**cfg, "augment": "yes"}, device="cpu")


def test_segmenter_and_tiles_use_augmentation():
    from cellseg.segmenter import Segmenter

    m = CellsegModel(make_config(get("distance"), TINY), device="cpu")
    img = (np.random.default_rng(3).random((40, 36)) * 1000).astype(np.uint16)
    res_aug = Segmenter(m, augment=True, keep_outputs=True).segment(img)
    res_plain = Segmenter(m, keep_outputs=True).segment(img)
    from cellseg.preprocess import normalize_percentile

    xn = normalize_percentile(img, 1.0, 99.8)
    np.testing.assert_allclose(res_aug.frames[0]["outputs"]["fg"], m.predict(xn, augment=True)["fg"], atol=1e-6)
    np.testing.assert_allclose(res_plain.frames[0]["outputs"]["fg"], m.predict(xn, augment=False)["fg"], atol=1e-6)
    # tiled with enough margin: the same outputs as one whole-image run
    tiled = Segmenter(m, augment=True, keep_outputs=True, tile=24).segment(img)  # the smallest allowed: 22
    np.testing.assert_allclose(tiled.frames[0]["outputs"]["fg"], res_aug.frames[0]["outputs"]["fg"], atol=1e-5)


def test_tuning_decides_augmentation():
    from cellseg.datasets.synthetic import synthetic_cells
    from cellseg.preprocess import normalize_percentile
    from cellseg.train.tune import tune_thresholds

    data = [synthetic_cells((48, 48), n_cells=4, seed=s) for s in range(2)]
    ims = [normalize_percentile(im, 1.0, 99.8) for im, _ in data]
    labs = [lab for _, lab in data]
    space = {"fg_thresh": (0.3, 0.6, 2), "marker_thresh": (0.2, 0.4, 2)}
    m = CellsegModel(make_config(get("distance"), TINY), device="cpu")
    for margin in (0.0, 0.005, 1.0):
        res = tune_thresholds(m, ims, labs, augment="auto", space=space, n_refine_rounds=0, augment_margin=margin)
        sc = res.augment_scores
        assert set(sc) == {"plain", "augmented"}
        assert res.augment == (sc["augmented"] > sc["plain"] and sc["augmented"] >= sc["plain"] + margin)
        assert res.score == sc["augmented" if res.augment else "plain"]
        assert m.config["augment"] is res.augment and m.augment is res.augment
    assert res.augment is False  # margin 1: never worth it
    # an exactly equivariant network scores the same both ways: the tie keeps the 8x faster plain run
    _equivariant_forward(m)
    res = tune_thresholds(m, ims, labs, augment="auto", space=space, n_refine_rounds=0, augment_margin=0.0)
    assert res.augment_scores["plain"] == res.augment_scores["augmented"]
    assert res.augment is False and m.config["augment"] is False
    # fixed choices tune once; the model keeps what it was told
    res = tune_thresholds(m, ims, labs, augment=True, space=space, n_refine_rounds=0)
    assert res.augment is True and res.augment_scores == {} and m.augment is True
    with pytest.raises(ValueError, match="augment must be"):
        tune_thresholds(m, ims, labs, augment="sometimes", space=space)


def test_train_config_checks_tune_augment():
    from cellseg.train import TrainConfig

    assert TrainConfig(tune_augment="auto").tune_augment == "auto"
    with pytest.raises(ValueError, match="tune_augment"):
        TrainConfig(tune_augment=True)
