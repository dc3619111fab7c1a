"""cellseg segment --diameter / --pixel-size / --norm / --norm-transform."""
import csv

import numpy as np
import pytest

from cellseg.cli import main
from cellseg.datasets.synthetic import synthetic_cells
from cellseg.io import read_labels, write_image
from cellseg.models import load_model
from cellseg.scale import median_diameter, zoom_image


@pytest.fixture(scope="module")
def sized_model_path(tiny_model_path, tmp_path_factory):
    m = load_model(tiny_model_path)
    _, lab = synthetic_cells((128, 128), n_cells=14, seed=0)
    m.config["object_size"] = {"diameter": median_diameter(lab), "pixel_size": None, "default": "auto"}
    path = tmp_path_factory.mktemp("sized") / "sized.pt"
    m.save(path)
    return path


def test_diameter_and_pixel_size_reach_the_outputs(sized_model_path, tmp_path, capsys):
    img, _ = synthetic_cells((128, 128), n_cells=14, seed=5)
    big = zoom_image(img, 2.0)
    write_image(tmp_path / "in" / "big.tif", (big * 1000).astype(np.uint16), "YX")
    out = tmp_path / "out"
    d0 = load_model(sized_model_path).config["object_size"]["diameter"]
    rc = main(["segment", str(tmp_path / "in"), "-o", str(out), "--model", str(sized_model_path), "-q",
               "--diameter", str(2 * d0), "--pixel-size", "0.5", "--norm", "1", "99", "--norm-transform", "sqrt"])
    assert rc == 0, capsys.readouterr()
    lab = read_labels(out / "big_labels.tif")
    assert lab.shape == big.shape and lab.max() > 5
    rows = list(csv.DictReader(open(out / "big_objects.csv")))
    r = rows[0]
    assert float(r["area_um"]) == pytest.approx(float(r["area"]) * 0.25, rel=1e-6)
    assert float(r["equivalent_diameter_um"]) == pytest.approx(float(r["equivalent_diameter"]) * 0.5, rel=1e-3)


def test_auto_is_the_models_default_and_off_turns_it_off(sized_model_path, tmp_path, capsys):
    img, _ = synthetic_cells((96, 96), n_cells=8, seed=6)
    write_image(tmp_path / "in" / "a.tif", (img * 1000).astype(np.uint16), "YX")
    for d in (None, "off", "auto"):
        out = tmp_path / f"out_{d}"
        args = ["segment", str(tmp_path / "in"), "-o", str(out), "--model", str(sized_model_path), "-q"]
        assert main(args + ([] if d is None else ["--diameter", d])) == 0, capsys.readouterr()
        assert read_labels(out / "a_labels.tif").shape == img.shape


@pytest.mark.parametrize("bad, msg", [(["--diameter", "-4"], "diameter"), (["--diameter", "huge"], "diameter"),
                                      (["--pixel-size", "0"], "pixel_size"), (["--norm", "50", "10"], "--norm")])
def test_bad_scale_options_are_refused_before_any_work(sized_model_path, tmp_path, capsys, bad, msg):
    img, _ = synthetic_cells((64, 64), n_cells=4, seed=7)
    write_image(tmp_path / "in" / "a.tif", (img * 1000).astype(np.uint16), "YX")
    rc = main(["segment", str(tmp_path / "in"), "-o", str(tmp_path / "o"), "--model", str(sized_model_path), "-q"]
              + bad)
    assert rc == 2
    assert msg in capsys.readouterr().err
    assert not (tmp_path / "o" / "a_labels.tif").exists()


def test_numeric_diameter_needs_a_model_that_knows_its_size(tiny_model_path, tmp_path, capsys):
    from cellseg.models import CellsegModel

    model = CellsegModel.load(tiny_model_path, device="cpu")
    assert model.config["object_size"]["default"] == "off"  # a model trained by `fit` records its data's size
    del model.config["object_size"]  # as a model trained on 3D data, or one from before such records
    model.save(tmp_path / "unsized.pt")
    img, _ = synthetic_cells((64, 64), n_cells=4, seed=8)
    write_image(tmp_path / "in" / "a.tif", (img * 1000).astype(np.uint16), "YX")
    rc = main(["segment", str(tmp_path / "in"), "-o", str(tmp_path / "o"), "--model", str(tmp_path / "unsized.pt"),
               "-q", "--diameter", "30"])
    assert rc == 2 and "records no object size" in capsys.readouterr().err
