"""Composites of fluorescence stains (DAPI in blue with a cytoplasm or membrane stain in green):
a nuclei model segments the blue channel (``cellseg.segmenter.fluorescence_composite``), and a
composite with no blue channel is refused with a clear message instead of segmented as colour."""
import os
from pathlib import Path

import numpy as np
import pytest

from benchmarks._cases import cytoplasm_stain as _cytoplasm
from cellseg.datasets.synthetic import synthetic_cells
from cellseg.metrics import matching
from cellseg.segmenter import Segmenter, SegmenterError, fluorescence_composite
from cellseg_napari._testing import OracleModel

SAMPLES = Path(__file__).resolve().parents[1] / "cellseg" / "samples"
DATA = Path(os.environ.get("CELLSEG_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def _grey(seed=0):
    image, gt = synthetic_cells((96, 96), n_cells=8, seed=seed)
    return (image / image.max() * 255).astype(np.uint8), gt


def _nuclei_oracle(gt, in_channels=3):
    model = OracleModel("stardist", gt, in_channels=in_channels)
    model.config["objects"] = "nuclei"
    return model


def test_composites_are_told_from_colour_and_from_grey():
    g, gt = _grey()
    cyto, z = _cytoplasm(gt), np.zeros_like(g)
    assert fluorescence_composite(np.stack([z, cyto, g], -1), 2) == (True, 2)  # DAPI blue, cytoplasm green
    assert fluorescence_composite(np.stack([cyto, z, g]), 0) == (True, 2)  # channels first, cytoplasm red
    alpha = np.full_like(g, 255)
    assert fluorescence_composite(np.stack([cyto, cyto // 2, g, alpha], -1), 2) == (True, 2)  # RGBA
    assert fluorescence_composite(np.stack([g, cyto, z], -1), 2) == (True, None)  # no blue: nothing to go by
    # not composites: grey in every channel, one grey image in colour, two channels, four of data
    assert fluorescence_composite(np.stack([g, g, g], -1), 2) == (False, None)
    assert fluorescence_composite(np.stack([z, z, g], -1), 2) == (False, None)
    assert fluorescence_composite(np.stack([cyto, g], -1), 2) == (False, None)
    assert fluorescence_composite(np.stack([z, cyto, g, g], -1), 2) == (False, None)
    # transmitted light: bright backgrounds in every channel (stained tissue, inverted stains)
    assert fluorescence_composite(np.stack([255 - cyto, 255 - g, 255 - g // 2], -1), 2) == (False, None)
    from cellseg import io

    he = io.read_image(SAMPLES / "dsb_he.png")
    assert he.axes == "YXC" and fluorescence_composite(he.data, 2) == (False, None)


@pytest.mark.parametrize("in_channels", [1, 3])
def test_a_nuclei_model_segments_the_blue_channel_of_a_composite(in_channels):
    """An RGB nuclei model used to get the composite as colour (cells and nuclei alike), a grey one
    refused it; both now segment the blue channel, and a note says so."""
    g, gt = _grey(seed=3)
    comp = np.stack([np.zeros_like(g), _cytoplasm(gt, 1), g], -1)
    grey_run = Segmenter(_nuclei_oracle(gt, in_channels)).segment(g)
    model = _nuclei_oracle(gt, in_channels)
    res = Segmenter(model).segment(comp, axes="YXC")
    np.testing.assert_array_equal(res.labels, grey_run.labels)
    assert matching(gt, res.labels, thresh=0.5).accuracy >= 0.95
    if in_channels == 3:  # the blue channel repeated, not the colour image
        assert all(np.array_equal(model.last_input[0], model.last_input[c]) for c in (1, 2))
    assert any("composite of fluorescence stains" in w and "blue channel" in w for w in res.warnings)
    assert res.channel == 2 and grey_run.channel is None
    # a channel chosen by hand wins
    res = Segmenter(_nuclei_oracle(gt, in_channels)).segment(comp, axes="YXC", channel=1)
    assert not any("composite" in w for w in res.warnings) and res.channel == 1


def test_a_composite_without_blue_is_refused_and_other_models_are_left_alone():
    g, gt = _grey(seed=4)
    comp = np.stack([g, _cytoplasm(gt, 2), np.zeros_like(g)], -1)
    with pytest.raises(SegmenterError, match="none in blue.*--channel"):
        Segmenter(_nuclei_oracle(gt)).segment(comp, axes="YXC")
    assert Segmenter(_nuclei_oracle(gt)).segment(comp, axes="YXC", channel=0).n_objects == gt.max()
    # a whole-cell RGB model takes the composite as it is
    model = OracleModel("stardist", gt, in_channels=3)
    assert Segmenter(model).segment(comp, axes="YXC").channel is None  # all channels
    assert model.last_input.shape == (3,) + gt.shape


def test_a_channel_named_for_a_nuclear_stain_wins_over_colour():
    """A 3-channel image whose channel names name DAPI: a nuclei RGB model used to take all three
    channels as colour; it now takes the DAPI channel, as it does for other channel counts."""
    g, gt = _grey(seed=5)
    data = np.stack([g, _cytoplasm(gt, 3), 255 - g])
    model = _nuclei_oracle(gt)
    res = Segmenter(model).segment(data, axes="CYX", channel_names=["DAPI", "GFP", "phalloidin"])
    assert res.channel == 0 and any("'DAPI'" in w for w in res.warnings)
    assert matching(gt, res.labels, thresh=0.5).accuracy >= 0.95
    assert all(np.array_equal(model.last_input[0], model.last_input[c]) for c in (1, 2))


def test_the_default_model_on_the_sample_as_a_composite(tmp_path):
    """The bundled DSB sample as the blue channel of a composite with a cytoplasm stain in green gives
    the labels of the grey sample through the command line; with the stains in red and green and
    nothing in blue, the file fails with a message that names it, and no output is written."""
    from PIL import Image

    from cellseg import io
    from cellseg.cli import main

    grey = io.read_image(SAMPLES / "dsb_nuclei.png").data
    gt = io.read_labels(SAMPLES / "dsb_nuclei_labels.tif")
    cyto, z = _cytoplasm(gt, 4), np.zeros_like(grey)
    Image.fromarray(np.stack([z, cyto, grey], -1)).save(tmp_path / "composite.png")
    Image.fromarray(np.stack([grey, cyto, z], -1)).save(tmp_path / "red_green.png")
    Image.fromarray(grey).save(tmp_path / "grey.png")
    out = tmp_path / "out"
    rc = main(["segment", str(tmp_path / "composite.png"), str(tmp_path / "grey.png"), str(tmp_path / "red_green.png"),
               "-o", str(out), "--no-overlay", "-q"])
    assert rc != 0  # one file failed
    comp, ref = io.read_labels(out / "composite_labels.tif"), io.read_labels(out / "grey_labels.tif")
    assert ref.max() > 100
    np.testing.assert_array_equal(comp, ref)
    assert not list(out.glob("red_green*"))
    # the measurements are of the channel segmented, the nuclear stain, not of the colours' mean
    import csv

    rows = {name: list(csv.DictReader(open(out / f"{name}_objects.csv"))) for name in ("composite", "grey")}
    assert [r["mean_intensity"] for r in rows["composite"]] == [r["mean_intensity"] for r in rows["grey"]]


@pytest.mark.skipif(not (DATA / "DSB2018-stage1-train-fixed").is_dir(), reason=f"annotated data not found under {DATA}")
def test_no_annotated_colour_image_is_taken_for_a_composite():
    """Every colour image of the annotated sets (DSB colour, the two H&E sets: stained samples in
    transmitted light) is left as colour, and DSB fluorescence images put in blue beside a cytoplasm
    stain are composites."""
    from cellseg import io
    from cellseg.train.general import _source_items

    n = 0
    for source in ("dsb-color", "he-kong", "he-miccai2015"):
        for part in _source_items(source, DATA)[0].values():
            for name, ip, _ in part:
                im = io.read_image(ip)
                assert fluorescence_composite(im.data, im.axes.index("C")) == (False, None), name
                n += 1
    assert n >= 140
    for name, ip, lp in _source_items("dsb-fluorescence", DATA)[0]["train"][:40]:
        im, lab = io.read_image(ip), io.read_labels(lp)
        x = im.data if "C" not in im.axes else np.take(im.data, 0, axis=im.axes.index("C"))
        x = (x.astype(np.float32) / max(float(x.max()), 1) * 255).astype(np.uint8)
        comp = np.stack([np.zeros_like(x), _cytoplasm(lab, 5), x], -1)
        assert fluorescence_composite(comp, 2) == (True, 2), name
