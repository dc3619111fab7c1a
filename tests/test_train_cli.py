"""``cellseg train`` front end (add_arguments / run) on a tiny synthetic folder."""
from __future__ import annotations

import argparse

import numpy as np
import pytest

torch = pytest.importorskip("torch")
tifffile = pytest.importorskip("tifffile")

from cellseg.datasets.synthetic import synthetic_cells  # noqa: E402
from cellseg.models import CellsegModel  # noqa: E402
from cellseg.train import cli as train_cli  # noqa: E402
from cellseg.train import loop as loop_mod  # noqa: E402

from .test_train import _bce_loss  # noqa: E402


@pytest.fixture
def folder(tmp_path):
    for sub in ("images", "masks"):
        (tmp_path / "data" / sub).mkdir(parents=True)
    for i in range(4):
        im, lab = synthetic_cells((64, 64), n_cells=8, seed=i)
        tifffile.imwrite(tmp_path / "data" / "images" / f"im{i}.tif", (im * 200).astype(np.uint8))
        tifffile.imwrite(tmp_path / "data" / "masks" / f"im{i}.tif", lab.astype(np.uint16))
    return tmp_path / "data"


def parse(argv):
    p = argparse.ArgumentParser(prog="cellseg train")
    train_cli.add_arguments(p)
    return p.parse_args(argv)


TINY = ["--depth", "2", "--width", "4", "--epochs", "2", "--steps-per-epoch", "2", "--batch-size", "2",
        "--patch-size", "32", "--quiet", "--threads", "1"]


def test_train_folder_and_resume(folder, tmp_path, monkeypatch):
    monkeypatch.setattr(loop_mod, "representation_loss", _bce_loss)
    out = tmp_path / "m.pt"
    args = parse(["--representation", "distance", "--data", str(folder), "--out", str(out),
                  "--val-fraction", "0.25", "--half", *TINY])
    assert train_cli.run(args) == 0
    m = CellsegModel.load(out)
    assert m.representation.name == "distance" and m.network.backbone_config.width == 4
    assert m.config["training"]["val_data"]["n_images"] == 1
    assert m.config["training"]["tuning"]["metric"] == "map"
    assert (tmp_path / "m_checkpoints" / "last.pt").exists()
    # resume a finished run: nothing to train, the model is written again
    args = parse(["--representation", "distance", "--data", str(folder), "--out", str(out),
                  "--val-fraction", "0.25", "--resume", "--no-tune-thresholds", *TINY])
    assert train_cli.run(args) == 0
    # fine-tune from the saved model
    out2 = tmp_path / "ft.pt"
    args = parse(["--fine-tune", str(out), "--data", str(folder), "--out", str(out2), *TINY])
    assert train_cli.run(args) == 0
    assert "fine_tuned_from" in CellsegModel.load(out2).config["training"]


def test_errors_are_reported(folder, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(loop_mod, "representation_loss", _bce_loss)
    args = parse(["--representation", "distance", "--data", str(folder), "--out", str(tmp_path / "m.tif")])
    assert train_cli.run(args) == 2
    assert ".pt" in capsys.readouterr().err
    assert train_cli.run(parse(["--data", str(folder), "--out", str(tmp_path / "m.pt")])) == 2
    assert "--representation is required" in capsys.readouterr().err
    assert train_cli.run(parse(["--representation", "distance", "--data", str(tmp_path / "nope"),
                           "--out", str(tmp_path / "m.pt")])) == 2
    assert "does not exist" in capsys.readouterr().err
    assert train_cli.run(parse(["--representation", "distance", "--data", str(folder), "--out", str(tmp_path / "m.pt"),
                           "--patch-size", "30", "--depth", "2"])) == 2
    assert "divisible" in capsys.readouterr().err
    # float masks
    tifffile.imwrite(folder / "masks" / "im0.tif", np.zeros((64, 64), np.float32) + 0.5)
    args = parse(["--representation", "distance", "--data", str(folder), "--out", str(tmp_path / "m.pt")])
    assert train_cli.run(args) == 2
    assert "im0.tif" in capsys.readouterr().err


def test_parser_is_importable_without_torch():
    import subprocess
    import sys

    code = ("import sys, argparse; from cellseg.train import cli as train_cli; p = argparse.ArgumentParser(); "
            "train_cli.add_arguments(p); p.parse_args(['--data', 'x', '--out', 'y.pt']); "
            "assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unwritable_out_is_an_error_before_training(folder, tmp_path, capsys, monkeypatch):
    """--out below a regular file (unwritable even for root) or naming a folder: a clear error before
    the data is read, no traceback; a write failure at the end names the file."""
    import errno

    calls = []
    monkeypatch.setattr(loop_mod, "fit", lambda *a, **k: calls.append(1))
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    for out, what in ((a_file / "m.pt", "is a file"), (a_file / "sub" / "m.pt", "is a file"),
                      (tmp_path, "is a folder")):
        if out == tmp_path:
            (tmp_path / "dir.pt").mkdir()
            out = tmp_path / "dir.pt"
        rc = train_cli.run(parse(["--representation", "distance", "--data", str(tmp_path / "no-data"),
                             "--out", str(out), *TINY]))
        err = capsys.readouterr().err
        assert rc == 2 and "error:" in err and what in err and "Traceback" not in err, err
    assert calls == []
    # --checkpoint-dir below a file
    rc = train_cli.run(parse(["--representation", "distance", "--data", str(folder), "--out", str(tmp_path / "m.pt"),
                         "--checkpoint-dir", str(a_file / "ck"), *TINY]))
    assert rc == 2 and "checkpoint folder" in capsys.readouterr().err

    # the disk fills up while saving the final model
    class Result:
        config = {"training": {}}
        thresholds = {}

        def save(self, path, half=False):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(loop_mod, "fit", lambda *a, **k: Result())
    out = tmp_path / "final.pt"
    rc = train_cli.run(parse(["--representation", "distance", "--data", str(folder), "--out", str(out), *TINY]))
    err = capsys.readouterr().err
    assert rc == 1 and f"{out}: No space left on device" in err and "Traceback" not in err, err


def test_temporaries_of_a_killed_run_are_removed(tmp_path):
    # issue 14, item 14: a killed training run leaves a hidden temporary checkpoint behind
    from .test_files import _killed_writer_leaves

    ckpt = tmp_path / "m_checkpoints"
    ckpt.mkdir()
    stale = [_killed_writer_leaves(ckpt, "last.pt"), _killed_writer_leaves(tmp_path, "m.pt")]
    rc = train_cli.run(parse(["--representation", "distance", "--data", str(tmp_path / "no-data"),
                         "--out", str(tmp_path / "m.pt"), *TINY]))
    assert rc == 2  # no data; the folders were tidied first
    assert not any(p.exists() for p in stale)


def test_a_model_that_finds_nothing_is_saved_with_a_warning(folder, tmp_path, capsys, monkeypatch):
    # issue 14, item 20
    from .test_train import _decodes_nothing

    monkeypatch.setattr(loop_mod, "representation_loss", _bce_loss)
    _decodes_nothing(monkeypatch)
    out = tmp_path / "m.pt"
    rc = train_cli.run(parse(["--representation", "distance", "--data", str(folder), "--out", str(out),
                         "--val-fraction", "0.25", *TINY]))
    err = capsys.readouterr().err
    assert rc == 0 and out.exists()
    assert f"warning: {out}: the trained model finds no object in the 1 validation image even with tuned" in err
    assert err.count("finds no object") == 1


def test_fine_tune_the_general_cells_model_on_grey_images_at_its_object_size(folder, tmp_path, capsys):
    """The bundled RGB model takes the grey folder (repeated to 3 channels), at its own object size
    (60 px: the synthetic cells are enlarged), with the patch size it was trained with."""
    from cellseg.models import load_model

    base = load_model("cells")
    args = parse(["--fine-tune", "cells", "--data", str(folder), "--out", str(tmp_path / "ft.pt"), "--epochs", "1",
                  "--steps-per-epoch", "1", "--batch-size", "1", "--val-fraction", "0.25", "--threads", "1",
                  "--no-tune-thresholds"])
    assert train_cli.run(args) == 0
    out = capsys.readouterr().err  # the training log
    assert "resampled to the model's object size (60 px)" in out and "patch (256, 256)" in out
    m = CellsegModel.load(tmp_path / "ft.pt", device="cpu")
    assert m.in_channels == 3 and m.config["object_size"] == base.config["object_size"]
    factors = m.config["training"]["object_size_resampling"]["factors"]
    assert len(factors) == 4 and all(f > 2 for f in factors.values())
    assert m.config["image_stats"]["n_images"] == base.config["image_stats"]["n_images"] + 3


def test_keep_scale_needs_fine_tune(folder, tmp_path, capsys):
    args = parse(["--representation", "distance", "--data", str(folder), "--out", str(tmp_path / "m.pt"),
                  "--keep-scale"])
    assert train_cli.run(args) == 2 and "--fine-tune" in capsys.readouterr().err


def test_objects_annotated_in_parts_train_with_a_note(folder, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(loop_mod, "representation_loss", _bce_loss)
    lab = tifffile.imread(folder / "masks" / "im0.tif").astype(np.uint16)
    new = int(lab.max()) + 1
    for y, x in [(0, 0), (0, 61), (61, 0), (61, 61)]:  # one more object, in four corner parts
        lab[y:y + 3, x:x + 3] = new
    tifffile.imwrite(folder / "masks" / "im0.tif", lab)
    args = parse(["--representation", "distance", "--data", str(folder), "--out", str(tmp_path / "m.pt"),
                  "--val-fraction", "0.25", "--no-tune-thresholds", *TINY])
    assert train_cli.run(args) == 0
    err = capsys.readouterr().err
    assert "note: " in err and "im0.tif: 1 object annotated in separate parts keep their largest part" in err
