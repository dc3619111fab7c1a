"""3D training from ``cellseg train``: ZYX folders (dimensionality from the data), anisotropy
from the files' voxel size or ``--anisotropy``, every 3D representation, and ``cellseg segment``
with the trained model on a held-back volume."""
from __future__ import annotations

import argparse
import csv

import numpy as np
import pytest

torch = pytest.importorskip("torch")
tifffile = pytest.importorskip("tifffile")

from cellseg import io  # noqa: E402
from cellseg.datasets.synthetic import synthetic_cells, synthetic_cells_3d  # noqa: E402
from cellseg.metrics import matching  # noqa: E402
from cellseg.models import CellsegModel  # noqa: E402
from cellseg.segmenter import Segmenter  # noqa: E402
from cellseg.train import cli as train_cli  # noqa: E402
from cellseg.train.dataset import DataError, data_anisotropy, load_training_data  # noqa: E402

SHAPE = (16, 48, 48)
RADIUS = (5, 8)


def volume(seed: int, anisotropy: float = 2.0):
    return synthetic_cells_3d(SHAPE, radius=RADIUS, anisotropy=anisotropy, seed=seed)


def _uint16(img):
    """A synthetic image (about 0..1, noise below 0) as 16-bit camera counts."""
    return np.clip(np.asarray(img) * 1000 + 100, 0, 65535).astype(np.uint16)


def write_folder(root, n: int = 4, anisotropy: float = 2.0, voxel: bool = True, xy: float = 0.5, seed0: int = 0):
    """``root/images`` + ``root/masks`` of ZYX volumes; ``voxel``: the files record the voxel size
    (``xy`` µm in Y/X, ``anisotropy * xy`` in Z), else they are plain TIFF stacks."""
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img, lab = volume(seed0 + i, anisotropy)
        img = _uint16(img)
        if voxel:
            ps = {"Z": anisotropy * xy, "Y": xy, "X": xy}
            io.write_image(root / "images" / f"v{i}.tif", img, axes="ZYX", pixel_size=ps)
            io.write_labels(root / "masks" / f"v{i}.tif", lab, axes="ZYX", pixel_size=ps)
        else:
            tifffile.imwrite(root / "images" / f"v{i}.tif", img)
            tifffile.imwrite(root / "masks" / f"v{i}.tif", lab.astype(np.uint16))
    return root


def parse(argv):
    p = argparse.ArgumentParser(prog="cellseg train")
    train_cli.add_arguments(p)
    return p.parse_args(argv)


ONE_STEP = ["--depth", "1", "--width", "2", "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "1",
            "--patch-size", "8", "16", "16", "--quiet", "--threads", "1", "--no-tune-thresholds"]


# ----------------------------------------------------------------------------- data


def test_a_zyx_folder_loads_as_3d_with_its_voxel_size(tmp_path):
    root = write_folder(tmp_path / "d", n=2, anisotropy=3.0, xy=0.25)
    data = load_training_data(root, ndim=None)
    assert data.ndim == 3 and data.samples[0].image.shape == (1, *SHAPE)
    assert data.samples[0].pixel_size == pytest.approx({"Z": 0.75, "Y": 0.25, "X": 0.25})
    a, vs = data_anisotropy(data)
    assert a == pytest.approx(3.0) and vs["Z"] == pytest.approx(0.75)
    # plain TIFF stacks: the 3D labels say the image is ZYX; no voxel size
    plain = load_training_data(write_folder(tmp_path / "p", n=2, voxel=False), ndim=None)
    assert plain.ndim == 3 and data_anisotropy(plain) == (None, None)
    # 2D folders stay 2D
    two = tmp_path / "two"
    for sub in ("images", "masks"):
        (two / sub).mkdir(parents=True)
    im, lab = synthetic_cells((32, 32), n_cells=3, seed=0)
    tifffile.imwrite(two / "images" / "a.tif", (im * 200).astype(np.uint8))
    tifffile.imwrite(two / "masks" / "a.tif", lab.astype(np.uint16))
    assert load_training_data(two, ndim=None).ndim == 2


def test_bad_3d_folders_are_refused_naming_the_file(tmp_path):
    root = write_folder(tmp_path / "d", n=2)
    # a 2D label next to a 3D image
    tifffile.imwrite(root / "masks" / "v1.tif", volume(1)[1][3].astype(np.uint16))
    with pytest.raises(DataError, match=r"v1\.tif.*2D label image.*next to the 3D image"):
        load_training_data(root, ndim=None)
    # a mixed folder: one 2D pair among 3D ones
    im2, lab2 = synthetic_cells((48, 48), n_cells=3, seed=0)
    tifffile.imwrite(root / "images" / "v1.tif", (im2 * 200).astype(np.uint8))
    tifffile.imwrite(root / "masks" / "v1.tif", lab2.astype(np.uint16))
    with pytest.raises(DataError, match=r"v1\.tif.*2D label image.*v0\.tif is 3D.*all 2D images or all 3D"):
        load_training_data(root, ndim=None)
    # mismatched shapes
    img, lab = volume(1)
    tifffile.imwrite(root / "images" / "v1.tif", img[:-2].astype(np.float32))
    tifffile.imwrite(root / "masks" / "v1.tif", lab.astype(np.uint16))
    with pytest.raises(DataError, match=r"v1\.tif.*differs from labels shape"):
        load_training_data(root, ndim=None)
    # a time series is not a volume
    io.write_image(root / "images" / "v1.tif", img.astype(np.float32), axes="TYX")
    with pytest.raises(DataError, match=r"v1\.tif.*time series"):
        load_training_data(root, ndim=None)


def test_volumes_with_different_voxel_sizes_are_refused(tmp_path):
    root = write_folder(tmp_path / "d", n=2, anisotropy=2.0)
    img, lab = volume(1, 3.0)
    ps = {"Z": 1.5, "Y": 0.5, "X": 0.5}
    io.write_image(root / "images" / "v1.tif", img.astype(np.float32), axes="ZYX", pixel_size=ps)
    io.write_labels(root / "masks" / "v1.tif", lab, axes="ZYX", pixel_size=ps)
    with pytest.raises(DataError, match=r"different voxel sizes.*v0 has a Z step of 2 pixels, v1 of 3"):
        data_anisotropy(load_training_data(root, ndim=None))


# ----------------------------------------------------------------------------- CLI


def test_patch_size_defaults():
    assert train_cli._patch_size(None, 2, 3, 1.0) == 128
    assert train_cli._patch_size(None, 3, 3, 1.0) == (64, 64, 64)
    assert train_cli._patch_size(None, 3, 3, 2.0) == (32, 64, 64)
    assert train_cli._patch_size(None, 3, 2, 4.0) == (16, 64, 64)
    assert train_cli._patch_size(None, 3, 5, 4.0) == (32, 64, 64)  # multiples of 2**depth
    assert train_cli._patch_size([16, 32, 32], 3, 2, 1.0) == (16, 32, 32)
    assert train_cli._patch_size([32], 3, 2, 1.0) == 32


@pytest.mark.parametrize("text, expect", [("2.5", (2.5, None)), ("1.5,0.5,0.5", (3.0, {"Z": 1.5, "Y": 0.5, "X": 0.5}))])
def test_anisotropy_option(text, expect):
    assert parse(["--data", "x", "--out", "m.pt", "--anisotropy", text]).anisotropy == expect


@pytest.mark.parametrize("text", ["0", "-1", "a", "1,2", "1,0.5,0.4", "inf"])
def test_bad_anisotropy_option(text, capsys):
    with pytest.raises(SystemExit):
        parse(["--data", "x", "--out", "m.pt", "--anisotropy", text])
    assert "--anisotropy" in capsys.readouterr().err


@pytest.mark.parametrize("rep, heads", [("distance", {"dist", "fg"}), ("flows", {"flow", "prob"}),
                                        ("offsets", {"offset", "sigma", "seed"}), ("stardist", {"prob", "dist"})])
def test_every_3d_representation_trains_from_a_zyx_folder(tmp_path, rep, heads):
    root = write_folder(tmp_path / "d", n=2, anisotropy=2.5)
    out = tmp_path / "m.pt"
    extra = ["--rep-config", "n_rays=16"] if rep == "stardist" else []
    assert train_cli.run(parse(["-r", rep, "--data", str(root), "--out", str(out), *extra, *ONE_STEP])) == 0
    m = CellsegModel.load(out, device="cpu")
    assert m.ndim == 3 and m.config["axes"] == "ZYX" and m.network.backbone_config.ndim == 3
    assert m.representation.ndim == 3 if rep != "stardist" else type(m.representation).__name__ == "StarDist3D"
    assert m.representation.anisotropy == 2.5  # from the files' voxel size, stored in the model
    assert m.config["training"]["anisotropy"] == {"value": 2.5, "source": "files",
                                                  "voxel_size_um": {"Z": 1.25, "Y": 0.5, "X": 0.5}}
    assert m.config["training"]["train_config"]["patch_size"] == [8, 16, 16]
    assert set(m.predict(np.zeros(SHAPE, np.float32))) >= heads


def test_anisotropy_option_wins_over_the_files(tmp_path, capsys):
    root = write_folder(tmp_path / "d", n=2, anisotropy=2.0)
    out = tmp_path / "m.pt"
    assert train_cli.run(parse(["-r", "distance", "--data", str(root), "--out", str(out), "--anisotropy", "3",
                           *ONE_STEP])) == 0
    assert "--anisotropy 3 overrides the voxel size the files record (Z step 2 pixels" in capsys.readouterr().err
    m = CellsegModel.load(out, device="cpu")
    assert m.representation.anisotropy == 3.0 and m.config["training"]["anisotropy"]["source"] == "--anisotropy"
    # plain stacks without a voxel size: the option, else 1 (said in the model)
    plain = write_folder(tmp_path / "p", n=2, voxel=False)
    assert train_cli.run(parse(["-r", "offsets", "--data", str(plain), "--out", str(out), "--anisotropy",
                           "1.2,0.3,0.3", *ONE_STEP, "--checkpoint-dir", str(tmp_path / "c2")])) == 0
    m = CellsegModel.load(out, device="cpu")
    assert m.representation.anisotropy == pytest.approx(4.0)
    assert m.config["training"]["anisotropy"]["voxel_size_um"] == {"Z": 1.2, "Y": 0.3, "X": 0.3}
    assert train_cli.run(parse(["-r", "flows", "--rep-config", "mode=omnipose", "--data", str(plain), "--out", str(out),
                           *ONE_STEP, "--checkpoint-dir", str(tmp_path / "c3")])) == 0
    m = CellsegModel.load(out, device="cpu")
    assert m.representation.anisotropy == 1.0 and m.config["training"]["anisotropy"]["source"].startswith("default")


def test_3d_options_on_the_wrong_data_are_errors(tmp_path, capsys):
    root3 = write_folder(tmp_path / "d", n=2)
    two = tmp_path / "two"
    for sub in ("images", "masks"):
        (two / sub).mkdir(parents=True)
    im, lab = synthetic_cells((32, 32), n_cells=3, seed=0)
    tifffile.imwrite(two / "images" / "a.tif", (im * 200).astype(np.uint8))
    tifffile.imwrite(two / "masks" / "a.tif", lab.astype(np.uint16))
    out = str(tmp_path / "m.pt")
    assert train_cli.run(parse(["-r", "distance", "--data", str(two), "--out", out, "--rep-config", "ndim=3",
                           *ONE_STEP])) == 2
    assert "--rep-config ndim=3: the training data are 2D" in capsys.readouterr().err
    assert train_cli.run(parse(["-r", "distance", "--data", str(root3), "--out", out, "--rep-config", "ndim=2",
                           *ONE_STEP])) == 2
    assert "--rep-config ndim=2: the training data are 3D" in capsys.readouterr().err
    assert train_cli.run(parse(["-r", "distance", "--data", str(two), "--out", out, "--anisotropy", "2",
                           *ONE_STEP])) == 2
    assert "--anisotropy applies to 3D (ZYX) data" in capsys.readouterr().err
    # a 3D validation folder for 2D training data
    assert train_cli.run(parse(["-r", "distance", "--data", str(two), "--val-data", str(root3), "--out", out,
                           *ONE_STEP])) == 2
    assert "v0.tif" in capsys.readouterr().err


# ----------------------------------------------------------------------------- acceptance

#: a tiny schedule: seconds of CPU per representation (3D convolutions on 2 x 16x32x32 patches)
TINY = ["--depth", "2", "--width", "8", "--epochs", "2", "--batch-size", "2", "--patch-size", "16", "32", "32",
        "--lr", "5e-3", "--quiet", "--threads", "1", "--val-fraction", "0.25"]
#: steps per epoch: the regression heads of offsets and StarDist take longer to learn
STEPS = {"distance": 80, "flows": 40, "offsets": 100, "stardist": 100}


def _ap50(truth, pred) -> float:
    return float(matching(truth, pred, thresh=0.5).accuracy)


@pytest.mark.slow
@pytest.mark.parametrize("rep", ["distance", "flows", "offsets", "stardist"])
def test_a_tiny_3d_model_segments_a_held_back_volume_better_than_untrained(tmp_path, rep):
    """Each representation trains from ``cellseg train`` on a synthetic ZYX folder and
    ``cellseg segment`` then finds the objects of a held-back volume: AP@0.5 at least 0.3,
    which the same network with its initial weights (and the trained thresholds) does not reach."""
    from cellseg.cli import main

    root = write_folder(tmp_path / "d", n=4, anisotropy=2.0)
    out = tmp_path / "m.pt"
    extra = {"stardist": ["--rep-config", "n_rays=32"], "offsets": ["--rep-config", "scale=64"]}.get(rep, [])
    assert train_cli.run(parse(["-r", rep, "--data", str(root), "--out", str(out), *extra, *TINY,
                           "--steps-per-epoch", str(STEPS[rep])])) == 0
    img, truth = volume(100)
    ps = {"Z": 1.0, "Y": 0.5, "X": 0.5}
    io.write_image(tmp_path / "held.tif", _uint16(img), axes="ZYX", pixel_size=ps)
    assert main(["segment", str(tmp_path / "held.tif"), "--model", str(out), "-o", str(tmp_path / "seg"),
                 "--no-overlay"]) == 0
    pred = io.read_labels(tmp_path / "seg" / "held_labels.tif")
    assert pred.shape == SHAPE
    trained = _ap50(truth, pred)
    model = CellsegModel.load(out, device="cpu")
    untrained = CellsegModel(model.config, device="cpu")  # the initial weights (seeded), same thresholds
    before = _ap50(truth, Segmenter(untrained).segment(img, axes="ZYX").labels)
    print(f"{rep}: held-back AP@0.5 trained {trained:.3f}, untrained {before:.3f}")
    assert trained >= 0.3 > before, (trained, before)
    # the CSV is in µm from the file's voxel size: Z centroids are slice index x 1 µm
    rows = list(csv.DictReader(open(tmp_path / "seg" / "held_objects.csv")))
    assert len(rows) == pred.max() > 0
    r = rows[0]
    assert float(r["centroid_z_um"]) == pytest.approx(float(r["centroid_z"]) * 1.0, abs=0.01)
    assert float(r["centroid_x_um"]) == pytest.approx(float(r["centroid_x"]) * 0.5, abs=0.01)
    vol = np.count_nonzero(pred == int(r["id"]))
    assert float(r["area_um"]) == pytest.approx(vol * 1.0 * 0.5 * 0.5, rel=1e-3)


def test_fine_tuning_a_3d_model_keeps_its_anisotropy(tmp_path, capsys):
    out, out2 = tmp_path / "m.pt", tmp_path / "ft.pt"
    assert train_cli.run(parse(["-r", "distance", "--data", str(write_folder(tmp_path / "a", n=2, anisotropy=2.0)),
                           "--out", str(out), *ONE_STEP])) == 0
    other = write_folder(tmp_path / "b", n=2, anisotropy=3.0)
    assert train_cli.run(parse(["--fine-tune", str(out), "--data", str(other), "--out", str(out2), *ONE_STEP])) == 0
    assert "trained with a Z step of 2 pixels, the files record 3" in capsys.readouterr().err
    m = CellsegModel.load(out2, device="cpu")
    assert m.ndim == 3 and m.representation.anisotropy == 2.0
    assert m.config["training"]["anisotropy"] == {"value": 2.0, "source": "fine-tuned model"}
    assert train_cli.run(parse(["--fine-tune", str(out), "--data", str(other), "--out", str(out2), "--anisotropy", "3",
                           *ONE_STEP])) == 2
    assert "--anisotropy: the model to fine-tune keeps its own" in capsys.readouterr().err


def test_segment_says_when_a_volume_has_another_z_step_than_the_model(tmp_path, capsys):
    from cellseg.cli import main

    out = tmp_path / "m.pt"
    assert train_cli.run(parse(["-r", "distance", "--data", str(write_folder(tmp_path / "a", n=2, anisotropy=2.0)),
                           "--out", str(out), *ONE_STEP])) == 0
    img, _ = volume(7)
    for name, z in (("same", 1.0), ("deeper", 2.0)):
        io.write_image(tmp_path / f"{name}.tif", _uint16(img), axes="ZYX", pixel_size={"Z": z, "Y": 0.5, "X": 0.5})
    capsys.readouterr()
    assert main(["segment", str(tmp_path / "same.tif"), str(tmp_path / "deeper.tif"), "--model", str(out),
                 "-o", str(tmp_path / "seg"), "--no-overlay"]) == 0
    err = capsys.readouterr().err
    assert "deeper.tif: the model was trained on volumes with a Z step of 2 pixels; this file's is 4" in err
    assert "resample Z by 2" in err and "same.tif: the model was trained" not in err
    assert io.read_labels(tmp_path / "seg" / "deeper_labels.tif").shape == SHAPE
