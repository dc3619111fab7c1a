"""DenoiSeg: Noise2Void masking (against its reference twin), the masked loss, joint training,
``cellseg denoise``, ``Segmenter(denoise=True)`` and model files with and without the head."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cellseg import io  # noqa: E402
from cellseg.cli import main  # noqa: E402
from cellseg.datasets.synthetic import synthetic_cells  # noqa: E402
from cellseg.denoise import NoDenoisingHead, denoise_image, denoised_frame  # noqa: E402
from cellseg.models import CellsegModel, make_config  # noqa: E402
from cellseg.models.network import ModelFormatError  # noqa: E402
from cellseg.segmenter import Segmenter  # noqa: E402
from cellseg.train import TrainConfig, fit  # noqa: E402
from cellseg.train.augment import AugmentConfig  # noqa: E402
from cellseg.train.denoiseg import (  # noqa: E402
    DENOISE_HEAD,
    JointLoss,
    UnlabeledData,
    load_unlabeled,
    masked_mse,
    n2v_mask,
    n2v_mask_batch,
    neighbour_offsets,
)
from cellseg.train.recipes import _denoise_line  # noqa: E402
from tests._events import events_and_result  # noqa: E402
from tests.reference.ref_n2v import ref_n2v_mask  # noqa: E402

BB = {"depth": 2, "width": 8, "norm": "batch"}


def _noisy(n, seed0=0, shape=(64, 64), sigma=0.15):
    out = []
    for i in range(n):
        img, lab = synthetic_cells(shape, n_cells=8, seed=seed0 + i)
        rng = np.random.default_rng(100 + seed0 + i)
        out.append(((img + rng.normal(0, sigma, img.shape)).astype(np.float32), lab))
    return out


def _cfg(**kw):
    base = dict(epochs=2, steps_per_epoch=6, batch_size=4, patch_size=32, lr=1e-2, schedule="constant",
                augment=AugmentConfig.none(), tune_thresholds=False, verbose=False, num_threads=1, denoise=True)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def denoise_model(tmp_path_factory):
    data = _noisy(3)
    unl = [im for im, _ in _noisy(2, seed0=50)]
    model = fit("distance", data, config=_cfg(epochs=3, steps_per_epoch=10), backbone=BB, unlabeled=unl,
                device="cpu", name="tiny-denoiseg")
    path = tmp_path_factory.mktemp("models") / "den.pt"
    model.save(path)
    return model, path


# ----------------------------------------------------------------------------- masking
@pytest.mark.parametrize("shape,fraction,radius", [
    ((1, 17, 23), 0.05, 2),
    ((2, 16, 16), 0.1, 1),
    ((1, 5, 5), 0.3, 2),  # every axis exactly 2 * radius + 1: offsets mirrored at both borders
    ((3, 7, 9, 11), 0.04, 2),  # 3D, three channels
    ((1, 40, 3), 0.02, 1),
])
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_mask_matches_reference(shape, fraction, radius, seed):
    x = np.random.default_rng(seed + 1000).normal(size=shape).astype(np.float32)
    fast, fmask = n2v_mask(x, np.random.default_rng(seed), fraction, radius)
    slow, smask = ref_n2v_mask(x, np.random.default_rng(seed), fraction, radius)
    np.testing.assert_array_equal(fmask, smask)  # which pixels
    np.testing.assert_array_equal(fast, slow)  # which replacements
    assert fmask.sum() == max(1, round(fraction * np.prod(shape[1:])))
    np.testing.assert_array_equal(fast[:, ~fmask], x[:, ~fmask])  # the others untouched
    np.testing.assert_array_equal(x, np.random.default_rng(seed + 1000).normal(size=shape).astype(np.float32))


def test_mask_replaces_by_a_neighbour_in_the_window():
    h, w, r = 12, 15, 2
    x = np.arange(h * w, dtype=np.float32).reshape(1, h, w)  # a value names its pixel
    for seed in range(20):
        m, mask = n2v_mask(x, np.random.default_rng(seed), 0.2, r)
        for y0, x0 in zip(*np.nonzero(mask)):
            src = int(m[0, y0, x0])
            ys, xs = divmod(src, w)
            assert (ys, xs) != (y0, x0)
            assert max(abs(ys - y0), abs(xs - x0)) <= r


def test_offsets_and_errors():
    off = neighbour_offsets(2, 1)
    assert off.shape == (8, 2) and not np.any(np.all(off == 0, axis=1))
    assert neighbour_offsets(3, 2).shape == (124, 3)
    x = np.zeros((1, 4, 9), np.float32)
    with pytest.raises(ValueError, match="too small"):
        n2v_mask(x, np.random.default_rng(0), 0.1, 2)
    with pytest.raises(ValueError, match="fraction"):
        n2v_mask(np.zeros((1, 9, 9), np.float32), np.random.default_rng(0), 0.0, 1)


def test_batch_masks_every_sample_in_order():
    x = np.random.default_rng(3).normal(size=(3, 1, 16, 16)).astype(np.float32)
    mb, maskb = n2v_mask_batch(x, np.random.default_rng(5), 0.05, 2)
    rng = np.random.default_rng(5)
    for i in range(3):
        m, mask = ref_n2v_mask(x[i], rng, 0.05, 2)
        np.testing.assert_array_equal(mb[i], m)
        np.testing.assert_array_equal(maskb[i, 0], mask.astype(np.float32))


# ----------------------------------------------------------------------------- losses
def test_masked_loss_ignores_unmasked_pixels():
    g = torch.Generator().manual_seed(0)
    target = torch.randn(2, 2, 8, 8, generator=g)
    mask = (torch.rand(2, 1, 8, 8, generator=g) < 0.2).float()
    pred = torch.randn(2, 2, 8, 8, generator=g, requires_grad=True)
    a = masked_mse(pred, target, mask)
    other = pred.detach().clone()
    other[torch.broadcast_to(mask, other.shape) == 0] += 100.0  # change every unmasked prediction
    b = masked_mse(other, target, mask)
    assert float(a.detach()) == pytest.approx(float(b), rel=1e-6)
    sel = torch.broadcast_to(mask, pred.shape) > 0
    expect = ((pred.detach() - target)[sel] ** 2).mean()
    assert float(a.detach()) == pytest.approx(float(expect), rel=1e-6)
    a.backward()
    assert torch.all(pred.grad[~sel] == 0) and torch.any(pred.grad[sel] != 0)
    assert float(masked_mse(pred, target, torch.zeros_like(mask)).detach()) == 0.0


def test_segmentation_loss_sees_only_annotated_samples():
    seen = []

    def seg(raw, targets):
        seen.append(raw["fg"].detach().clone())
        return ((raw["fg"] - targets["fg"]) ** 2).mean(), {"fg": 1.0}

    g = torch.Generator().manual_seed(1)
    raw = {"fg": torch.randn(4, 1, 8, 8, generator=g), DENOISE_HEAD: torch.randn(4, 1, 8, 8, generator=g)}
    targets = {"fg": torch.rand(4, 1, 8, 8, generator=g)}
    extra = {"clean": torch.randn(4, 1, 8, 8, generator=g), "mask": (torch.rand(4, 1, 8, 8, generator=g) < .3).float(),
             "labeled": np.array([True, False, True, False])}
    loss = JointLoss(seg, denoise_weight=0.25)
    total, parts = loss(raw, targets, extra)
    assert len(seen) == 1 and torch.equal(seen[0], raw["fg"][[0, 2]])
    den = masked_mse(raw[DENOISE_HEAD], extra["clean"], extra["mask"])
    segv = ((raw["fg"][[0, 2]] - targets["fg"][[0, 2]]) ** 2).mean()
    assert float(total) == pytest.approx(0.75 * float(segv) + 0.25 * float(den), rel=1e-6)
    assert parts["fg"] == 1.0 and parts["denoise"] == pytest.approx(float(den))
    # the unannotated samples' segmentation outputs do not matter
    raw2 = {k: v.clone() for k, v in raw.items()}
    raw2["fg"][[1, 3]] = 50.0
    assert float(loss(raw2, targets, extra)[0]) == pytest.approx(float(total), rel=1e-6)
    # no annotated sample: no segmentation term at all
    seen.clear()
    total0, parts0 = loss(raw, targets, {**extra, "labeled": np.zeros(4, bool)})
    assert not seen and parts0["seg"] == 0.0
    assert float(total0) == pytest.approx(0.25 * float(den), rel=1e-6)


# ----------------------------------------------------------------------------- training
def test_tiny_joint_run_lowers_the_masked_loss(denoise_model):
    model, _ = denoise_model
    assert model.denoises and model.config["denoise"] is True
    untrained = CellsegModel(model.config, device="cpu")  # the same deterministic initial weights
    x = np.stack([im for im, _ in _noisy(2, seed0=80)])[:, None]
    from cellseg.preprocess import normalize_percentile

    x = np.stack([normalize_percentile(v, 1.0, 99.8) for v in x]).astype(np.float32)
    masked, mask = n2v_mask_batch(x, np.random.default_rng(0), 0.05, 2)

    def loss(m):
        net = m.network.eval()
        with torch.no_grad():
            out = net(torch.from_numpy(masked))[DENOISE_HEAD]
        return float(masked_mse(out, torch.from_numpy(x), torch.from_numpy(mask)))

    before, after = loss(untrained), loss(model)
    assert after < 0.5 * before
    hist = model.config["training"]["history"]
    assert "loss_denoise" in hist[0] and "loss_seg" in hist[0]
    assert model.config["training"]["unlabeled_data"]["n_images"] == 2


@pytest.mark.parametrize("rep", ["stardist", "flows", "offsets"])
def test_joint_training_for_every_representation(rep):
    m = fit(rep, _noisy(2), config=_cfg(epochs=1, steps_per_epoch=2, batch_size=2), backbone=BB,
            unlabeled=[im for im, _ in _noisy(1, seed0=40)], device="cpu")
    out = m.predict(np.zeros((32, 32), np.float32) + 0.5)
    assert out[DENOISE_HEAD].shape == (1, 32, 32)
    assert set(out) == {h.name for h in m.representation.heads()} | {DENOISE_HEAD}
    assert np.isfinite(m.config["training"]["history"][0]["loss_denoise"])


def test_training_options_are_checked(tmp_path):
    with pytest.raises(ValueError, match="denoise=True"):
        fit("distance", _noisy(2), config=_cfg(denoise=False), backbone=BB, unlabeled=[_noisy(1)[0][0]])
    with pytest.raises(ValueError, match="denoise_weight"):
        TrainConfig(denoise_weight=1.5)
    with pytest.raises(ValueError, match="labeled_fraction"):
        TrainConfig(labeled_fraction=0.0)
    plain = CellsegModel(make_config("distance", BB), device="cpu")
    with pytest.raises(ValueError, match="no denoising head"):
        fit(None, _noisy(2), config=_cfg(), model=plain)
    (tmp_path / "empty").mkdir()
    from cellseg.train.dataset import DataError

    with pytest.raises(DataError, match="empty"):
        load_unlabeled(tmp_path / "empty")


def test_unlabeled_folder_loads_images_only(tmp_path):
    d = tmp_path / "unl" / "images"
    d.mkdir(parents=True)
    for i, (im, _) in enumerate(_noisy(2)):
        io.write_image(d / f"u{i}.tif", im, "YX")
    (d / "bad.tif").write_bytes(b"not a tiff")
    from cellseg.train.dataset import DataError

    with pytest.raises(DataError, match="bad.tif"):
        load_unlabeled(tmp_path / "unl")
    (d / "bad.tif").unlink()
    u = load_unlabeled(tmp_path / "unl")
    assert isinstance(u, UnlabeledData) and u.names == ["u0", "u1"] and u.samples[0].image.shape == (1, 64, 64)


# ----------------------------------------------------------------------------- model files
def test_model_files_record_the_head(denoise_model, tmp_path):
    model, path = denoise_model
    loaded = CellsegModel.load(path, device="cpu")
    assert loaded.denoises
    x = _noisy(1, seed0=9)[0][0]
    np.testing.assert_allclose(loaded.predict(x)[DENOISE_HEAD], model.predict(x)[DENOISE_HEAD], atol=1e-5)
    assert "denoising head: **yes**" in _denoise_line(loaded.config)
    assert "2 unlabelled images" in _denoise_line(loaded.config)
    bad = dict(model.config, denoise="yes")
    with pytest.raises(ModelFormatError, match="denoise must be true or false"):
        CellsegModel(bad, device="cpu")


def test_old_model_files_load(tmp_path):
    cfg = make_config("distance", BB)
    assert "denoise" not in cfg  # what models written before the head existed hold
    path = CellsegModel(cfg, device="cpu").save(tmp_path / "old.pt")
    payload = torch.load(path, weights_only=True)
    assert "denoise" not in json.loads(payload["config"])
    old = CellsegModel.load(path, device="cpu")
    assert not old.denoises
    assert set(old.predict(np.zeros((16, 16), np.float32))) == {"dist", "fg"}
    assert _denoise_line(old.config) == "- denoising head: none (segmentation only)"
    from cellseg.models import load_model

    assert not load_model("nuclei", device="cpu").denoises  # a bundled model


# ----------------------------------------------------------------------------- inference
@pytest.mark.parametrize("transform", ["linear", "sqrt", "log"])
def test_denoised_frame_undoes_the_normalization(denoise_model, transform):
    model, _ = denoise_model
    seg = Segmenter(model, diameter="off", transform=transform)
    raw = (_noisy(1)[0][0] * 1000 + 200).astype(np.float32)
    from cellseg.segmenter import TRANSFORMS

    # a head that returned its input exactly gives the raw frame back (where the transform keeps
    # the values: sqrt and log clip what lies below the lower percentile to 0)
    xn = seg.normalized(raw)
    fake = {DENOISE_HEAD: TRANSFORMS[transform](xn)[None]}
    keep = xn >= 0 if transform != "linear" else np.ones(raw.shape, bool)
    assert keep.mean() > 0.95
    np.testing.assert_allclose(denoised_frame(seg, raw, fake)[keep], raw[keep], rtol=1e-4, atol=0.05)


def test_segmenter_returns_the_denoised_image(denoise_model):
    model, _ = denoise_model
    img = (_noisy(1, seed0=30)[0][0] * 100 + 50).astype(np.float32)
    stack = np.stack([img, img[::-1]])
    res = Segmenter(model, denoise=True).segment(stack, axes="TYX")
    assert res.denoised.shape == stack.shape and res.denoised.dtype == np.float32
    np.testing.assert_allclose(res.denoised, denoise_image(model, stack, axes="TYX"), rtol=1e-5, atol=1e-3)
    assert Segmenter(model).segment(img).denoised is None
    plain = CellsegModel(make_config("distance", BB, name="plain-model"), device="cpu")
    with pytest.raises(NoDenoisingHead, match="plain-model has no denoising head"):
        Segmenter(plain, denoise=True)


def test_cli_denoise(denoise_model, tmp_path, capsys):
    model, path = denoise_model
    img = (_noisy(1, seed0=60)[0][0] * 1000 + 300).clip(0, 65535).astype(np.uint16)
    inp = tmp_path / "in"
    inp.mkdir()
    io.write_image(inp / "a.tif", img, "YX")
    io.write_image(inp / "b.tif", np.stack([img, img]), "CYX")  # one-channel model: channel by channel
    out = tmp_path / "out"
    assert main(["denoise", str(inp), "-o", str(out), "--model", str(path), "-q"]) == 0
    a = io.read_image(out / "a_denoised.tif")
    assert a.axes == "YX" and a.data.shape == img.shape and a.data.dtype == np.float32
    # intensities stay in the input's units, and the result is smoother than the input
    assert abs(float(np.median(a.data)) - float(np.median(img))) < 0.2 * float(img.std())
    assert np.abs(np.diff(a.data, axis=1)).mean() < np.abs(np.diff(img.astype(np.float32), axis=1)).mean()
    b = io.read_image(out / "b_denoised.tif")
    assert b.axes == "CYX" and b.data.shape == (2, *img.shape)
    np.testing.assert_allclose(b.data[0], a.data, rtol=1e-5, atol=1e-2)

    plain = tmp_path / "plain.pt"
    CellsegModel(make_config("distance", BB), device="cpu").save(plain)
    capsys.readouterr()
    out2 = tmp_path / "out2"
    assert main(["denoise", str(inp / "a.tif"), "-o", str(out2), "--model", str(plain)]) == 2
    err = capsys.readouterr().err
    assert f"model {plain} has no denoising head" in err and "--denoise" in err
    assert not out2.exists() or not list(out2.glob("*.tif"))

    (inp / "c.tif").write_bytes(b"broken")
    assert main(["denoise", str(inp), "-o", str(out), "--model", str(path), "-q"]) == 1
    assert "FAILED" in capsys.readouterr().err and not (out / "c_denoised.tif").exists()


def test_cli_train_with_unlabeled(tmp_path, capsys):
    root = tmp_path / "data"
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for i, (im, lab) in enumerate(_noisy(2)):
        io.write_image(root / "images" / f"s{i}.tif", im, "YX")
        io.write_labels(root / "masks" / f"s{i}.tif", lab)
    unl = tmp_path / "unl"
    unl.mkdir()
    io.write_image(unl / "u.tif", _noisy(1, seed0=70)[0][0], "YX")
    base = ["train", "-r", "distance", "--data", str(root), "--epochs", "1", "--steps-per-epoch", "2",
            "--batch-size", "2", "--patch-size", "32", "--depth", "2", "--width", "8", "--threads", "1",
            "--no-tune-thresholds", "--quiet", "--device", "cpu", "--val-fraction", "0"]
    assert main([*base, "--out", str(tmp_path / "m0.pt"), "--unlabeled", str(unl)]) == 2
    assert "add --denoise" in capsys.readouterr().err
    out = tmp_path / "m.pt"
    assert main([*base, "--out", str(out), "--unlabeled", str(unl), "--denoise", "--denoise-weight", "0.3"]) == 0
    m = CellsegModel.load(out, device="cpu")
    assert m.denoises and m.config["training"]["train_config"]["denoise_weight"] == 0.3
    assert m.config["training"]["unlabeled_data"]["names"] == ["u"]


# ----------------------------------------------------------------------------- napari (logic, no viewer)
def test_napari_segment_adds_a_denoised_layer(denoise_model):
    pytest.importorskip("napari")
    from cellseg_napari import _layers, _models, _run

    model, _ = denoise_model
    img = (_noisy(1, seed0=31)[0][0] * 100 + 50).astype(np.float32)
    _, run = events_and_result(_run.segmentation_task(model, img, "YX", denoise=True))
    data, kw, kind = _layers.denoised_layer(run, "cells", scale=(0.5, 0.5))
    assert kind == "image" and kw["name"] == "cells denoised" and kw["scale"] == (0.5, 0.5)
    assert data.shape == img.shape and kw["metadata"]["axes"] == "YX"
    np.testing.assert_allclose(data, denoise_image(model, img), rtol=1e-5, atol=1e-3)
    _, plain = events_and_result(_run.segmentation_task(model, img, "YX"))
    assert _layers.denoised_layer(plain, "cells") is None
    assert _models.model_denoises(model) and not _models.model_denoises(
        CellsegModel(make_config("distance", BB), device="cpu"))


def test_napari_training_job_takes_an_unlabelled_folder(tmp_path):
    pytest.importorskip("napari")
    from cellseg.train import TrainingWarning
    from cellseg_napari import _training

    unl = tmp_path / "unl"
    unl.mkdir()
    io.write_image(unl / "u.tif", _noisy(1, seed0=71)[0][0], "YX")
    pairs = _noisy(3)
    with pytest.raises(ValueError, match="tick 'denoise'"):
        _training.TrainingJob(pairs, tmp_path / "m.pt", unlabeled=unl)
    job = _training.TrainingJob(pairs, tmp_path / "m.pt", representation="distance", epochs=1, steps_per_epoch=2,
                                patch_size=32, batch_size=2, network=BB, denoise=True, unlabeled=unl)
    from tests._events import events_and_result

    with warnings.catch_warnings():  # two steps may find no object; the warning is not the point here
        warnings.simplefilter("ignore", TrainingWarning)
        _, path = events_and_result(job.run())
    m = CellsegModel.load(path, device="cpu")
    assert m.denoises and m.config["training"]["unlabeled_data"]["names"] == ["u"]


@pytest.mark.filterwarnings("ignore::cellseg.train.TrainingWarning")  # a few steps find no object
def test_joint_run_resumes_exactly_and_refuses_a_changed_head(tmp_path):
    c = _cfg(epochs=2, steps_per_epoch=3, batch_size=2, val_every=1)
    train, val, unl = _noisy(2), _noisy(1, seed0=10), [im for im, _ in _noisy(1, seed0=40)]
    kw = dict(val=val, config=c, backbone=BB, unlabeled=unl, device="cpu")
    ref = fit("distance", train, out_dir=tmp_path / "a", **kw)
    fit("distance", train, out_dir=tmp_path / "b", callback=lambda ev: False if ev["event"] == "epoch" else None,
        **kw)
    resumed = fit("distance", train, out_dir=tmp_path / "b", resume=True, **kw)
    wa, wb = ref.network.state_dict(), resumed.network.state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert [h["loss_denoise"] for h in ref.config["training"]["history"]] == \
        [h["loss_denoise"] for h in resumed.config["training"]["history"]]
    fit("distance", train, out_dir=tmp_path / "c", callback=lambda ev: False if ev["event"] == "step" else None,
        **kw)
    with pytest.raises(ValueError, match="denoising head"):
        fit("distance", train, val=val, config=_cfg(epochs=2, steps_per_epoch=3, batch_size=2, denoise=False),
            backbone=BB, out_dir=tmp_path / "c", resume=True, device="cpu")
