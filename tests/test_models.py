"""Networks, CellsegModel persistence and the bundled-model registry."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cellseg.models import (  # noqa: E402
    BackboneConfig,
    CellsegModel,
    ModelFormatError,
    Network,
    make_config,
    registry,
)
from cellseg.models.unet import receptive_field_extent  # noqa: E402
from cellseg.representations import HeadSpec  # noqa: E402

TINY = {"depth": 2, "width": 4}


def tiny_model(ndim=2, **bb):
    from cellseg.representations import get

    return CellsegModel(make_config(get("distance", ndim=ndim), {**TINY, "ndim": ndim, **bb}), device="cpu")


@pytest.mark.parametrize("name", ["unet", "resunet"])
@pytest.mark.parametrize("norm", ["none", "batch", "group", "instance"])
def test_forward_shapes_2d(name, norm):
    heads = (HeadSpec("a", 1, "sigmoid"), HeadSpec("b", 3, "softplus"))
    cfg = {"backbone": {**TINY, "name": name, "norm": norm, "dropout": 0.1, "conv_after": 6}, "in_channels": 2}
    net = Network(cfg, heads=heads)
    raw = net(torch.randn(2, 2, 16, 24))
    assert set(raw) == {"a", "b"}
    assert raw["a"].shape == (2, 1, 16, 24) and raw["b"].shape == (2, 3, 16, 24)
    act = net.activate(raw)
    assert (act["a"] > 0).all() and (act["a"] < 1).all() and (act["b"] >= 0).all()


@pytest.mark.parametrize("name", ["unet", "resunet"])
def test_forward_shapes_3d(name):
    net = Network({"backbone": {"ndim": 3, "depth": 1, "width": 2, "name": name}, "in_channels": 1},
                  heads=(HeadSpec("x", 2),))
    assert isinstance(net.backbone.down[0].body[0], torch.nn.Conv3d)
    assert net(torch.randn(1, 1, 4, 8, 6))["x"].shape == (1, 2, 4, 8, 6)


def test_width_multiplier_and_depth():
    bb = BackboneConfig(depth=3, width=8, width_mult=1.5)
    assert [bb.channels(level) for level in range(4)] == [8, 12, 18, 27]
    net = Network({"backbone": bb.to_dict(), "in_channels": 1}, heads=(HeadSpec("x", 1),))
    assert net.div_by == 8
    assert net.backbone.down[3].body[0].out_channels == 27
    with pytest.raises(ValueError, match="divisible by 8"):
        net(torch.zeros(1, 1, 12, 16))


def test_backbone_config_errors():
    with pytest.raises(ValueError, match="unknown backbone option"):
        BackboneConfig.from_dict({"dept": 3})
    with pytest.raises(ValueError, match="normalization"):
        BackboneConfig(norm="layer")
    with pytest.raises(ValueError, match="backbone"):
        BackboneConfig(name="vit")


def test_seeded_init_is_deterministic():
    a, b = tiny_model(), tiny_model()
    c = tiny_model(seed=1)
    sa, sb, sc = a.network.state_dict(), b.network.state_dict(), c.network.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa if sa[k].is_floating_point())
    # the global torch RNG is not consumed by building
    torch.manual_seed(123)
    x = torch.rand(1)
    torch.manual_seed(123)
    tiny_model()
    assert torch.equal(torch.rand(1), x)


@pytest.mark.parametrize("conv_after", [0, 5])
@pytest.mark.parametrize("name", ["unet", "resunet"])
def test_receptive_field_matches_gradient_probe(name, conv_after):
    depth = 2
    m = tiny_model(name=name, norm="none", conv_after=conv_after, depth=depth)
    net = m.network.eval()
    n, ext = 96, 0
    for p in range(2**depth):  # every pooling phase
        x = torch.randn(1, 1, n, n, requires_grad=True)
        out = net(x)["dist"]
        c = 40 + p
        out[0, :, c, c].sum().backward()
        rows = np.nonzero(x.grad[0, 0].abs().sum(1).numpy())[0]
        ext = max(ext, c - rows.min(), rows.max() - c)
    assert ext == receptive_field_extent(net.backbone_config)
    assert m.receptive_field == 2 * ext + 1


def test_predict_pads_and_crops():
    m = tiny_model()
    x = np.random.default_rng(0).random((21, 30)).astype(np.float32)
    out = m.predict(x)
    assert set(out) == {"dist", "fg"}
    assert out["dist"].shape == (1, 21, 30) and out["dist"].dtype == np.float32
    # on a divisible image, predict equals the activated network output
    y = np.random.default_rng(1).random((16, 20)).astype(np.float32)
    with torch.no_grad():
        m.network.eval()
        ref = m.network.activate(m.network(torch.from_numpy(y[None, None])))["fg"][0].numpy()
    np.testing.assert_allclose(m.predict(y)["fg"], ref, rtol=1e-6, atol=1e-6)
    # (C, Y, X) with C=1 is the same as (Y, X)
    np.testing.assert_array_equal(m.predict(x[None])["dist"], out["dist"])
    with pytest.raises(TypeError, match="normalized float"):
        m.predict((x * 100).astype(np.uint16))
    with pytest.raises(ValueError, match="channel"):
        m.predict(np.zeros((2, 16, 16), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        m.predict(np.full((16, 16), np.nan, np.float32))


def test_predict_3d():
    m = tiny_model(ndim=3, depth=1)
    out = m.predict(np.random.default_rng(0).random((5, 9, 8)).astype(np.float32))
    assert out["dist"].shape == (1, 5, 9, 8)


def test_decode_uses_thresholds_as_defaults():
    m = tiny_model()
    m.thresholds = {"fg_thresh": 0.9, "min_size": 0}
    assert m.thresholds["fg_thresh"] == 0.9
    outputs = {"fg": np.zeros((1, 16, 16), np.float32), "dist": np.zeros((1, 16, 16), np.float32)}
    outputs["fg"][0, 4:10, 4:10] = 0.8
    outputs["dist"][0, 4:10, 4:10] = 0.5
    outputs["dist"][0, 7, 7] = 1.0
    assert m.decode(outputs).labels.max() == 0  # 0.8 < fg_thresh 0.9
    assert m.decode(outputs, fg_thresh=0.5).labels.max() == 1
    with pytest.raises(TypeError, match="unknown"):
        m.thresholds = {"nms_thresh": 0.3}


def test_save_load_roundtrip(tmp_path):
    m = tiny_model(norm="batch")
    # make BN statistics non-trivial
    m.network.train()
    with torch.no_grad():
        m.network(torch.randn(4, 1, 16, 16) * 3 + 1)
    m.thresholds = {"fg_thresh": 0.4}
    p = m.save(tmp_path / "m.pt")
    m2 = CellsegModel.load(p, device="cpu")
    assert m2.config == m.config and m2.thresholds["fg_thresh"] == 0.4
    x = np.random.default_rng(0).random((24, 24)).astype(np.float32)
    o1, o2 = m.predict(x), m2.predict(x)
    for k in o1:
        np.testing.assert_array_equal(o1[k], o2[k])
    # predict runs 2D networks channels-last on the CPU; what is saved stays in the standard layout
    assert all(v.is_contiguous() for v in m.state()["state_dict"].values())
    conv_w = next(v for v in m.network.parameters() if v.ndim == 4 and v.shape[1] > 1 and v.shape[2] > 1)
    assert conv_w.is_contiguous(memory_format=torch.channels_last)
    assert not conv_w.is_contiguous()
    # float16 storage: half the size, nearly identical outputs
    ph = m.save(tmp_path / "h.pt", half=True)
    assert ph.stat().st_size < 0.75 * p.stat().st_size
    o3 = CellsegModel.load(ph, device="cpu").predict(x)
    for k in o1:
        np.testing.assert_allclose(o3[k], o1[k], atol=2e-2)
    assert not list(tmp_path.glob(".*tmp"))


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        CellsegModel.load(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ModelFormatError, match="junk.pt"):
        CellsegModel.load(tmp_path / "junk.pt")
    torch.save({"hello": 1}, tmp_path / "other.pt")
    with pytest.raises(ModelFormatError, match="not a cellseg model"):
        CellsegModel.load(tmp_path / "other.pt")
    m = tiny_model()
    payload = m.state()
    torch.save({**payload, "format_version": 99}, tmp_path / "v99.pt")
    with pytest.raises(ModelFormatError, match="format_version 99"):
        CellsegModel.load(tmp_path / "v99.pt")
    # weights of a wider network under this config
    other = tiny_model(width=6).state()
    torch.save({**payload, "state_dict": other["state_dict"]}, tmp_path / "mismatch.pt")
    with pytest.raises(ModelFormatError, match="shape mismatch"):
        CellsegModel.load(tmp_path / "mismatch.pt")
    sd = dict(payload["state_dict"])
    sd.pop(next(iter(sd)))
    torch.save({**payload, "state_dict": sd}, tmp_path / "missing.pt")
    with pytest.raises(ModelFormatError, match="missing 1 tensor"):
        CellsegModel.load(tmp_path / "missing.pt")
    cfg = json.loads(payload["config"])
    cfg["representation"]["name"] = "nosuch"
    torch.save({**payload, "config": json.dumps(cfg)}, tmp_path / "rep.pt")
    with pytest.raises(ModelFormatError, match="unknown representation"):
        CellsegModel.load(tmp_path / "rep.pt")


def test_config_validation():
    cfg = make_config("distance", TINY)
    assert cfg["format_version"] == 1 and cfg["axes"] == "YX" and cfg["thresholds"]["fg_thresh"] == 0.5
    with pytest.raises(ModelFormatError, match="unknown config key"):
        CellsegModel({**cfg, "bogus": 1})
    with pytest.raises(ModelFormatError, match="disagrees"):
        CellsegModel({**cfg, "ndim": 3})
    with pytest.raises(ModelFormatError, match="pmin"):
        CellsegModel({**cfg, "normalization": {"pmin": 50, "pmax": 10}})


def test_registry(tmp_path):
    wd = tmp_path / "weights"
    assert registry.list_models(wd) == []
    with pytest.raises(registry.UnknownModelError, match="no bundled models"):
        registry.default_model_name(wd)
    m = tiny_model()
    m.save(tmp_path / "m.pt")
    card = tmp_path / "card.md"
    card.write_text("# tiny\n")
    e = registry.register_model(tmp_path / "m.pt", "tiny-distance", card=card, summary="a test", weights_dir=wd)
    assert e["sha256"] == registry.sha256sum(wd / "tiny-distance.pt")
    assert registry.list_models(wd) == ["tiny-distance"]
    assert registry.default_model_name(wd) == "tiny-distance"
    assert registry.model_card("tiny-distance", wd) == "# tiny\n"
    loaded = registry.load_pretrained("tiny-distance", device="cpu", weights_dir=wd)
    assert loaded.name == "tiny-distance"
    assert loaded.network.state_dict()["heads.convs.fg.weight"].dtype == torch.float32
    with pytest.raises(registry.UnknownModelError, match="bundled models: tiny-distance"):
        registry.load_pretrained("nope", weights_dir=wd)
    # a modified weights file fails the hash check
    with open(wd / "tiny-distance.pt", "ab") as f:
        f.write(b"x")
    with pytest.raises(ValueError, match="sha256"):
        registry.load_pretrained("tiny-distance", weights_dir=wd)


def test_registry_replacing_a_model_keeps_its_entry(tmp_path):
    """Re-registering a name keeps the registry-carried size, image statistics and default role,
    accepts the bundled card itself, and a missing card writes nothing."""
    wd = tmp_path / "weights"
    m = tiny_model()
    m.save(tmp_path / "m.pt")
    card = tmp_path / "card.md"
    card.write_text("# tiny\n")
    registry.register_model(tmp_path / "m.pt", "tiny", card=card, default=True, weights_dir=wd)
    registry.register_model(tmp_path / "m.pt", "other", weights_dir=wd)
    index_path = wd / "registry.json"
    index = json.loads(index_path.read_text())
    size = {"diameter": 20.0, "default": "off", "pixel_size": None, "measured": "median of the training objects"}
    index["models"]["tiny"].update(object_size=size, image_stats={"n_images": 3})
    index_path.write_text(json.dumps(index))
    (wd / "tiny.md").write_text("# tiny, edited in place\n")
    e = registry.register_model(tmp_path / "m.pt", "tiny", card=wd / "tiny.md", summary="again", weights_dir=wd)
    assert e["object_size"] == size and e["image_stats"] == {"n_images": 3} and e["default"] is True
    assert registry.default_model_name(wd) == "tiny"
    assert registry.model_card("tiny", wd) == "# tiny, edited in place\n"
    assert registry.load_pretrained("tiny", device="cpu", weights_dir=wd).config["object_size"]["diameter"] == 20.0
    # another name does not inherit them
    e2 = registry.register_model(tmp_path / "m.pt", "other", weights_dir=wd)
    assert "object_size" not in e2 and "default" not in e2
    # a card that does not exist: an error before the weights are written
    with pytest.raises(FileNotFoundError, match="does not exist"):
        registry.register_model(tmp_path / "m.pt", "third", card=tmp_path / "nope.md", weights_dir=wd)
    assert not (wd / "third.pt").exists() and "third" not in registry.list_models(wd)


def test_bundled_registry_is_consistent():
    """Every bundled entry has its weights and card and passes the hash check."""
    for name in registry.list_models():
        info = registry.model_info(name)
        assert registry.sha256sum(info["path"]) == info["sha256"], name
        if info["card_path"]:
            assert "Test" in registry.model_card(name) or "test" in registry.model_card(name)


def test_import_is_light():
    code = ("import sys, cellseg, cellseg.models, cellseg.train; "
            "from cellseg.models import list_models; list_models(); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_subsampled_outputs_rejected():
    from cellseg.representations import get

    with pytest.raises(ModelFormatError, match="grid"):
        CellsegModel(make_config(get("stardist", grid=(2, 2)), TINY))
    with pytest.raises(ModelFormatError, match="supports"):
        CellsegModel(make_config(get("stardist"), {**TINY, "ndim": 3}))


def test_head_bias_init_gives_known_starting_outputs():
    import torch

    from cellseg.models.heads import Heads
    from cellseg.representations import get
    from cellseg.representations.base import HeadSpec

    rep = get("offsets")
    heads = Heads(2, 8, rep.heads())
    out = heads(torch.randn(2, 8, 5, 5))
    assert torch.all(out["offset"] == 0) and torch.all(out["sigma"] == 1.0)
    assert out["seed"].abs().sum() > 0  # torch's default init where no bias_init is given
    with pytest.raises(ValueError, match="bias_init"):
        HeadSpec("x", 1, bias_init=float("nan"))


def test_bundled_name_wins_over_a_folder_or_file_of_that_name(tmp_path, monkeypatch):
    """``load_model("nuclei-flows")`` loads the bundled model even when the current folder holds a
    folder (or a file) of that name; a path (separator or suffix) is a path."""
    from cellseg.models import load_model

    name = registry.default_model_name()
    monkeypatch.chdir(tmp_path)
    (tmp_path / name).mkdir()
    assert load_model(name, device="cpu").name == name
    with pytest.raises(ModelFormatError, match="is a folder"):
        load_model(f"./{name}", device="cpu")
    (tmp_path / name).rmdir()
    (tmp_path / name).write_text("not a model")
    assert load_model(name, device="cpu").name == name
    # a bare name that is no bundled model but an existing file: the file
    tiny_model().save(tmp_path / "mine.pt")
    (tmp_path / "mine.pt").rename(tmp_path / "mine")
    assert load_model("mine", device="cpu").representation.name == "distance"
    with pytest.raises(FileNotFoundError):
        load_model("nope.pt", device="cpu")
    with pytest.raises(registry.UnknownModelError):
        load_model("nope", device="cpu")
