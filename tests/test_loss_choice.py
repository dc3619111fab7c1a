"""The selectable loss of the probability / foreground head (``TrainConfig.loss``, ``cellseg train --loss``)."""
from __future__ import annotations

import argparse

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from cellseg.datasets.synthetic import synthetic_cells  # noqa: E402
from cellseg.models import CellsegModel  # noqa: E402
from cellseg.representations import get  # noqa: E402
from cellseg.train import TrainConfig, fit  # noqa: E402
from cellseg.train import cli as train_cli  # noqa: E402
from cellseg.train import loop as loop_mod  # noqa: E402
from cellseg.train import losses as L  # noqa: E402
from cellseg.train.augment import AugmentConfig  # noqa: E402

BB = {"depth": 2, "width": 8, "norm": "batch"}
CHOICES = ["bce", "weighted_bce", "dice", "focal", "soft_iou", "bce+dice"]
# representation -> its probability head; flows in both modes (omnipose adds a distance regression)
REPS = {"stardist": "prob", "flows": "prob", "omnipose": "prob", "distance": "fg"}


def _rep(key):
    return get("flows", mode="omnipose") if key == "omnipose" else get(key, n_rays=8) if key == "stardist" else get(key)


def data(n=3, shape=(64, 64), seed0=0):
    return [synthetic_cells(shape, n_cells=8, seed=seed0 + i) for i in range(n)]


def cfg(**kw):
    base = dict(epochs=2, steps_per_epoch=6, batch_size=4, patch_size=32, lr=3e-3, schedule="constant",
                augment=AugmentConfig.none(), tune_thresholds=False, verbose=False, num_threads=1)
    base.update(kw)
    return TrainConfig(**base)


def _labels(seed):
    return synthetic_cells((32, 32), n_cells=3, seed=seed)[1]


def _batch(rep, seed=0):
    ts = [rep.encode(_labels(seed + i)) for i in range(2)]
    tg = {k: torch.from_numpy(np.stack([t[k] for t in ts]).astype(np.float32)) for k in ts[0]}
    g = torch.Generator().manual_seed(seed)
    raw = {h: torch.randn((2, c, 32, 32), generator=g) for h, c in _channels(rep).items()}
    return raw, tg


def _channels(rep):
    name = rep.name
    if name == "stardist":
        return {"prob": 1, "dist": rep.n_rays}
    if name == "flows":
        return {"flow": 2, "prob": 1, **({"dist": 1} if rep.mode == "omnipose" else {})}
    if name == "distance":
        return {"dist": 1, "fg": 1}
    return {"offset": 2, "sigma": 2, "seed": 1}


def _old_loss(rep, raw, tg):
    """The representations' losses as they were before the choice existed, written out."""
    if rep.name == "stardist":
        tp, d = tg["prob"], F.softplus(raw["dist"])
        return (F.binary_cross_entropy_with_logits(raw["prob"], tp)
                + 0.2 * ((tp * (d - tg["dist"]).abs()).mean() / (tp.mean() + 1e-7))
                + 1e-4 * ((1 - tp) * d.abs()).mean())
    if rep.name == "flows":
        fg = (tg["prob"] > 0.5).float()
        total = F.mse_loss(raw["flow"], tg["flow"]) / 2.0 + F.binary_cross_entropy_with_logits(raw["prob"], fg)
        if rep.mode == "omnipose":
            w = (1.0 + fg) / 2.0
            total = total + (w * (raw["dist"] - tg["dist"]) ** 2).mean() / w.mean()
        return total
    assert rep.name == "distance"
    return (F.mse_loss(torch.sigmoid(raw["dist"]), tg["dist"])
            + F.binary_cross_entropy_with_logits(raw["fg"], tg["fg"]))


# ----------------------------------------------------------------------------- names
def test_unknown_name_raises_with_the_choices():
    for bad in ("nope", "bce+bce", "dice+", "Dice", "default+bce"):
        with pytest.raises(ValueError, match=r"TrainConfig.loss: unknown loss .*'default', one of bce, "
                                             r"weighted_bce, dice, focal, soft_iou, or a sum"):
            TrainConfig(loss=bad)
    for good in ("default", *L.HEAD_LOSSES, "bce+dice", "focal+soft_iou", "dice+bce+focal"):
        assert TrainConfig(loss=good).loss == good
    assert TrainConfig().loss == "default"
    assert TrainConfig.from_dict(TrainConfig(loss="dice").to_dict()).loss == "dice"
    old = TrainConfig().to_dict()
    del old["loss"]  # configs recorded before the option existed
    assert TrainConfig.from_dict(old).loss == "default"


def test_cli_names_match_the_registry():
    assert train_cli._LOSSES == tuple(L.HEAD_LOSSES)
    p = argparse.ArgumentParser()
    train_cli.add_arguments(p)
    text = p.format_help()
    for name in ("default", *L.HEAD_LOSSES, "bce+dice"):
        assert name in text


# ----------------------------------------------------------------------------- the loss functions
@pytest.mark.parametrize("key", list(REPS) + ["offsets"])
def test_default_is_the_representations_own_loss(key):
    """"default" is bit for bit the loss as it was (written out here), through the dispatcher."""
    rep = _rep(key)
    raw, tg = _batch(rep)
    if rep.name == "offsets":
        from cellseg.train.losses_offsets import loss

        tg = {"offset": torch.zeros((2, 2, 32, 32)),
              "instance": torch.from_numpy(np.stack([_labels(i) for i in range(2)])[:, None])}
        expected, _ = loss(raw, tg, rep)
    else:
        expected = _old_loss(rep, raw, tg)
    for fn in (L.representation_loss(rep), L.representation_loss(rep, head_loss="default")):
        total, _ = fn(raw, tg)
        assert torch.equal(total, expected)


@pytest.mark.parametrize("choice", CHOICES)
@pytest.mark.parametrize("key", list(REPS))
def test_choice_replaces_only_the_probability_head(key, choice):
    rep = _rep(key)
    head = REPS[key]
    raw, tg = _batch(rep, seed=3)
    raw = {k: v.requires_grad_() for k, v in raw.items()}
    t0, p0 = L.representation_loss(rep)(raw, tg)
    t1, p1 = L.representation_loss(rep, head_loss=choice)(raw, tg)
    target = (tg["prob"] > 0.5).float() if rep.name == "flows" else tg[head]
    new = L.head_loss_fn(choice)(raw[head].detach(), target)
    assert p1[head] == pytest.approx(new.item(), rel=1e-6)
    assert t1.item() == pytest.approx(t0.item() - p0[head] + new.item(), rel=1e-5, abs=1e-6)
    for k in p0:
        if k not in (head, "total"):
            assert p1[k] == p0[k], k  # regression terms untouched
    t1.backward()
    assert all(torch.isfinite(v.grad).all() for v in raw.values())
    if choice == "bce":  # the plain choice is the default loss, up to rounding
        assert t1.item() == pytest.approx(t0.item(), rel=1e-6)


def test_offsets_take_only_default():
    with pytest.raises(ValueError, match="representation 'offsets' has none"):
        L.representation_loss(get("offsets"), head_loss="dice")
    with pytest.raises(ValueError, match="has none"):
        fit("offsets", data(1), config=cfg(loss="focal", epochs=1, steps_per_epoch=1), backbone=BB)


# ----------------------------------------------------------------------------- training
@pytest.mark.parametrize("choice", CHOICES)
def test_each_choice_trains_and_is_recorded(choice, tmp_path):
    model = fit("distance", data(), config=cfg(loss=choice), backbone=BB, out_dir=tmp_path)
    hist = model.config["training"]["history"]
    assert all(np.isfinite(h["loss"]) and np.isfinite(h["loss_fg"]) for h in hist)
    assert hist[-1]["loss"] < hist[0]["loss"]
    for f in ("model.pt", "last.pt"):
        assert CellsegModel.load(tmp_path / f, device="cpu").config["training"]["train_config"]["loss"] == choice


@pytest.mark.parametrize("rep_key,choice", [("stardist", "focal"), ("flows", "dice"), ("omnipose", "weighted_bce")])
def test_other_representations_train_with_a_choice(rep_key, choice):
    model = fit(_rep(rep_key), data(2), config=cfg(loss=choice, epochs=1, steps_per_epoch=4), backbone=BB)
    hist = model.config["training"]["history"]
    assert np.isfinite(hist[-1]["loss"]) and np.isfinite(hist[-1]["loss_prob"])
    assert model.config["training"]["train_config"]["loss"] == choice


def test_default_trains_as_the_representations_loss(monkeypatch):
    """The loop's "default" uses the representation's loss exactly: same history as calling it directly."""
    from cellseg.train.losses_distance import loss

    a = fit("distance", data(2), config=cfg(epochs=1, steps_per_epoch=3), backbone=BB)
    monkeypatch.setattr(loop_mod, "representation_loss", lambda rep: lambda raw, t: loss(raw, t, rep))
    b = fit("distance", data(2), config=cfg(epochs=1, steps_per_epoch=3), backbone=BB)
    ha, hb = a.config["training"]["history"], b.config["training"]["history"]
    assert [h["loss"] for h in ha] == [h["loss"] for h in hb]
    for k, v in a.network.state_dict().items():
        assert torch.equal(v, b.network.state_dict()[k]), k


def test_resume_refuses_another_loss(tmp_path):
    fit("distance", data(2), config=cfg(loss="dice", epochs=1, steps_per_epoch=2), backbone=BB, out_dir=tmp_path)
    with pytest.raises(ValueError, match="trained with loss 'dice', this run asks for 'bce'"):
        fit("distance", data(2), config=cfg(loss="bce", epochs=2, steps_per_epoch=2), backbone=BB,
            out_dir=tmp_path, resume=True)
    with pytest.raises(ValueError, match="trained with loss 'dice', this run asks for 'default'"):
        fit("distance", data(2), config=cfg(epochs=2, steps_per_epoch=2), backbone=BB, out_dir=tmp_path, resume=True)
    m = fit("distance", data(2), config=cfg(loss="dice", epochs=2, steps_per_epoch=2), backbone=BB,
            out_dir=tmp_path, resume=True)
    assert len(m.config["training"]["history"]) == 2


# ----------------------------------------------------------------------------- CLI
@pytest.fixture
def folder(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    for sub in ("images", "masks"):
        (tmp_path / "data" / sub).mkdir(parents=True)
    for i in range(2):
        im, lab = synthetic_cells((64, 64), n_cells=8, seed=i)
        tifffile.imwrite(tmp_path / "data" / "images" / f"im{i}.tif", (im * 200).astype(np.uint8))
        tifffile.imwrite(tmp_path / "data" / "masks" / f"im{i}.tif", lab.astype(np.uint16))
    return tmp_path / "data"


def _parse(argv):
    p = argparse.ArgumentParser(prog="cellseg train")
    train_cli.add_arguments(p)
    return p.parse_args(argv)


def test_cli_flag_reaches_train_config(folder, tmp_path, monkeypatch, capsys):
    seen = {}

    def fake_fit(rep, train, config=None, **kw):
        seen["config"] = config
        raise ValueError("stop here")

    monkeypatch.setattr(loop_mod, "fit", fake_fit)
    base = ["--representation", "distance", "--data", str(folder), "--out", str(tmp_path / "m.pt"), "--quiet"]
    assert _parse(base).loss == "default"
    assert train_cli.run(_parse(base + ["--loss", "bce+dice"])) == 2
    assert seen["config"].loss == "bce+dice"
    assert train_cli.run(_parse(base)) == 2
    assert seen["config"].loss == "default"
    seen.clear()
    capsys.readouterr()
    assert train_cli.run(_parse(base + ["--loss", "iou"])) == 2
    assert "config" not in seen
    assert "unknown loss 'iou'" in capsys.readouterr().err
