"""Fluorescence images saved with their colour table (DAPI in blue, a magenta LUT): one grey image
in colour, segmented as grey (``cellseg.segmenter.pseudo_colour_channel``)."""
from pathlib import Path

import numpy as np
import pytest

from cellseg.datasets.synthetic import synthetic_cells
from cellseg.metrics import matching
from cellseg.segmenter import Segmenter, pseudo_colour_channel
from cellseg_napari._testing import OracleModel

SAMPLES = Path(__file__).resolve().parents[1] / "cellseg" / "samples"


def _grey(seed=0):
    image, gt = synthetic_cells((96, 96), n_cells=8, seed=seed)
    return (image / image.max() * 255).astype(np.uint8), gt


def test_pseudo_colour_channel_finds_one_grey_image_in_colour():
    g, _ = _grey()
    z = np.zeros_like(g)
    assert pseudo_colour_channel(np.stack([z, z, g], -1), 2) == 2  # DAPI in blue
    assert pseudo_colour_channel(np.stack([z, g, z]), 0) == 1  # GFP in green, channels first
    assert pseudo_colour_channel(np.stack([g, z, (0.8 * g).astype(np.uint8)], -1), 2) == 0  # magenta LUT
    alpha = np.full_like(g, 255)
    assert pseudo_colour_channel(np.stack([z, z, g, alpha], -1), 2) == 2  # RGBA, constant alpha
    # JPEG leaves a trace in the empty channels
    leak = np.random.default_rng(1).integers(0, 3, g.shape).astype(np.uint8)
    assert pseudo_colour_channel(np.stack([leak, leak, g], -1), 2) == 2


def test_real_colour_and_grey_in_every_channel_are_left_alone():
    g, _ = _grey()
    z = np.zeros_like(g)
    red = np.random.default_rng(0).integers(0, 20, g.shape).astype(np.uint8)
    assert pseudo_colour_channel(np.stack([red, g, 255 - g], -1), 2) is None  # three images
    assert pseudo_colour_channel(np.stack([g[::-1], z, g], -1), 2) is None  # two different images
    assert pseudo_colour_channel(np.stack([g, g, g], -1), 2) is None  # nothing empty: normalized alike
    assert pseudo_colour_channel(np.stack([z, z, g, g], -1), 2) is None  # four channels of data
    assert pseudo_colour_channel(np.stack([z, z, z], -1), 2) is None  # nothing at all
    assert pseudo_colour_channel(np.stack([z, g], -1), 2) is None  # two channels: not colour
    from cellseg import io

    he = io.read_image(SAMPLES / "dsb_he.png")  # a stained-tissue image: real colour
    assert he.axes == "YXC" and pseudo_colour_channel(he.data, 2) is None


@pytest.mark.parametrize("in_channels", [1, 3])
def test_a_pseudo_coloured_image_is_segmented_as_its_grey_image(in_channels):
    """A grey model used to refuse it ("the image has 3 channels; choose one") and an RGB model got
    (0, 0, grey), a colour it never saw; both now get the grey image, and a note says so."""
    g, gt = _grey(seed=3)
    z = np.zeros_like(g)
    grey_run = Segmenter(OracleModel("stardist", gt, in_channels=in_channels)).segment(g)
    model = OracleModel("stardist", gt, in_channels=in_channels)
    res = Segmenter(model).segment(np.stack([z, z, g], -1), axes="YXC")
    np.testing.assert_array_equal(res.labels, grey_run.labels)
    assert matching(gt, res.labels, thresh=0.5).accuracy >= 0.95
    want = gt.shape if in_channels == 1 else (3,) + gt.shape
    assert model.last_input.shape == want
    if in_channels == 3:  # grey repeated, not (0, 0, grey)
        assert all(np.array_equal(model.last_input[0], model.last_input[c]) for c in (1, 2))
    assert any("blue channel" in w and "segmented as grey" in w for w in res.warnings)


def test_the_default_model_on_the_sample_saved_in_blue(tmp_path):
    """The bundled DSB sample saved as a blue PNG (DAPI's colour table) gives the labels of the grey
    sample, through the command line."""
    from PIL import Image

    from cellseg import io
    from cellseg.cli import main

    grey = io.read_image(SAMPLES / "dsb_nuclei.png").data
    assert grey.ndim == 2
    z = np.zeros_like(grey)
    Image.fromarray(np.stack([z, z, grey], -1)).save(tmp_path / "blue.png")
    Image.fromarray(grey).save(tmp_path / "grey.png")
    out = tmp_path / "out"
    assert main(["segment", str(tmp_path / "blue.png"), str(tmp_path / "grey.png"), "-o", str(out), "-q",
                 "--no-overlay"]) == 0
    blue, ref = io.read_labels(out / "blue_labels.tif"), io.read_labels(out / "grey_labels.tif")
    assert ref.max() > 100
    np.testing.assert_array_equal(blue, ref)
