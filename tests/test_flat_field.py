"""Correction of uneven illumination (``Segmenter(flat_field=...)``, ``--flat-field``)."""
import json

import numpy as np
import pytest
from scipy import ndimage

from cellseg.metrics import matching
from cellseg.preprocess import FLAT_FIELD_DEGREE, bright_background, flat_field
from cellseg.segmenter import Segmenter, SegmenterError


def _specimen(shape=(256, 384), diam=14, spacing=32, seed=0):
    """Dark discs (transmission 0.3) on a clear background (1.0), and their labels."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    trans = np.ones(shape, np.float32)
    lab = np.zeros(shape, np.int32)
    k = 0
    for cy in range(spacing // 2, h - spacing // 2 + 1, spacing):
        for cx in range(spacing // 2, w - spacing // 2 + 1, spacing):
            k += 1
            r = diam / 2 + rng.uniform(-1, 1)
            m = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            trans[m] = 0.3
            lab[m] = k
    return trans, lab


def _gradient(shape, low):
    return (1 - (1 - low) * np.arange(shape[1], dtype=np.float32) / (shape[1] - 1))[None, :]


def ref_illumination(lum, degree=FLAT_FIELD_DEGREE, closing=9 / 64):
    """The obvious illumination at full resolution: the 90th percentile of the luminance in a
    window of a block's size around each pixel (the fast path takes it once per block of a
    64-block grid), dark regions up to ``closing`` of the shorter side closed over (a grey
    closing), and the least-squares polynomial surface of ``degree`` through that, fitted with
    numpy's 2-D Legendre basis."""
    x = np.asarray(lum, np.float64)
    block = max(1, round(min(x.shape) / 64))
    x = ndimage.percentile_filter(x, 90, size=block, mode="reflect")
    k = int(round(closing * min(x.shape) / block)) * block | 1
    x = ndimage.grey_closing(x, size=(k, k), mode="reflect")
    h, w = x.shape
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    terms = [(i, j) for i in range(degree + 1) for j in range(degree + 1 - i)]
    cols = []
    for i, j in terms:
        ci, cj = np.zeros(i + 1), np.zeros(j + 1)
        ci[i], cj[j] = 1, 1
        cols.append(np.polynomial.legendre.legval(yy, ci) * np.polynomial.legendre.legval(xx, cj))
    a = np.stack([c.ravel() for c in cols], 1)
    coef, *_ = np.linalg.lstsq(a, x.ravel(), rcond=None)
    return (a @ coef).reshape(x.shape)


def test_flat_field_divides_by_the_full_resolution_field():
    """The correction equals the frame times mean(field) / field, the field computed at full
    resolution (the fast path fits a 64-block grid): within 3% everywhere."""
    trans, _ = _specimen()
    img = 200 * trans * _gradient(trans.shape, 0.3)
    field = ref_illumination(img)
    want = img * field.mean() / field
    got = flat_field(img)
    assert got.shape == img.shape and got.dtype == np.float32
    assert np.max(np.abs(got / want - 1)) < 0.03


def test_flat_field_levels_a_gradient_and_keeps_colour():
    """A 3x gradient over an RGB specimen: the background left and right agree within 5% after
    the correction, in every channel, and the channels keep their ratios."""
    trans, lab = _specimen()
    tint = np.array([0.9, 0.6, 0.8], np.float32)[:, None, None]
    img = 255 * tint * trans[None] * _gradient(trans.shape, 1 / 3)[None]
    out = flat_field(img, channel_axis=0)
    bg = lab == 0
    for c in range(3):
        left, right = out[c][:, :64][bg[:, :64]].mean(), out[c][:, -64:][bg[:, -64:]].mean()
        assert abs(left / right - 1) < 0.05, (c, left, right)
    np.testing.assert_allclose(out[1] / out[0], img[1] / img[0], rtol=1e-4)


def test_flat_field_leaves_a_frame_with_non_positive_illumination():
    img = np.full((64, 64), -5.0, np.float32)
    img[20:30, 20:30] = 3
    np.testing.assert_array_equal(flat_field(img), img)


def test_bright_background_tells_transmitted_light_from_fluorescence():
    trans, _ = _specimen()
    assert bright_background(200 * trans)  # brightfield: dark objects on a bright field
    assert bright_background(np.stack([200 * trans, 150 * trans, 220 * trans], -1), channel_axis=-1)
    assert not bright_background(200 * (1 - trans) + 10)  # fluorescence: bright objects, dark field
    assert not bright_background(np.full((32, 32), 7.0))  # constant


class _DarkNet:
    """A stand-in network for transmitted light: its objects are the connected components of the
    normalized frame below 0.5 (dark objects on a bright background), as distance targets."""

    def __init__(self):
        from cellseg.representations import get

        self.representation = get("distance")
        self.thresholds: dict = {}
        self.config = {"ndim": 2, "in_channels": 1, "normalization": {"pmin": 1.0, "pmax": 99.8}, "thresholds": {}}
        self.in_channels, self.div_by, self.receptive_field = 1, 1, 1

    def predict(self, image, augment=None):
        lab, _ = ndimage.label(np.asarray(image, np.float32).reshape(image.shape[-2:]) < 0.5)
        return self.representation.encode(lab.astype(np.int32))


def test_auto_corrects_a_bright_field_under_a_gradient():
    """Under a 4x gradient the dim side's background falls below the objects' level of the bright
    side: uncorrected, it reads as one object and the discs there are lost; ``auto`` corrects the
    frame (it has a bright background) and finds them all."""
    trans, lab = _specimen()
    img = (1000 * trans * _gradient(trans.shape, 0.25)).astype(np.uint16)
    off = Segmenter(_DarkNet(), flat_field="off").segment(img)
    auto = Segmenter(_DarkNet()).segment(img)
    assert auto.flat_field and not off.flat_field
    assert matching(lab, off.labels, 0.5).accuracy < 0.6
    assert matching(lab, auto.labels, 0.5).accuracy > 0.95
    assert auto.labels.shape == img.shape


def test_auto_leaves_fluorescence_and_on_off_force():
    """A dark-background frame is not corrected by ``auto``; ``on`` corrects it and ``off`` corrects
    nothing; a stack is decided once by its first frame with content."""
    trans, _ = _specimen()
    fluo = (1000 * (1 - trans) + 20).astype(np.uint16)
    bright = (1000 * trans).astype(np.uint16)
    assert not Segmenter(_DarkNet()).segment(fluo).flat_field
    assert Segmenter(_DarkNet(), flat_field="on").segment(fluo).flat_field
    assert not Segmenter(_DarkNet(), flat_field=False).segment(bright).flat_field
    stack = np.stack([np.zeros_like(bright), bright, fluo])
    assert Segmenter(_DarkNet()).segment(stack, axes="TYX").flat_field


def test_flat_field_choices_are_checked():
    with pytest.raises(SegmenterError, match="flat_field must be one of"):
        Segmenter(_DarkNet(), flat_field="yes")
    net3d = _DarkNet()
    net3d.config = {**net3d.config, "ndim": 3}
    with pytest.raises(SegmenterError, match="3D"):
        Segmenter(net3d, flat_field="on")


def test_cli_flat_field_is_recorded_when_not_the_default(tmp_path):
    """``--flat-field off`` is part of the run record (a rerun with the default is refused as other
    settings); the default adds nothing to it."""
    import tifffile

    from cellseg.cli import main

    trans, _ = _specimen((128, 128))
    tifffile.imwrite(tmp_path / "bf.tif", (1000 * trans * _gradient(trans.shape, 0.5)).astype(np.uint16))
    out = tmp_path / "out"
    assert main(["segment", str(tmp_path / "bf.tif"), "-o", str(out), "--flat-field", "off", "-q",
                 "--no-overlay"]) == 0
    settings = list(json.loads((out / "cellseg_run.json").read_text())["settings"].values())
    assert settings[0]["flat_field"] == "off"
    assert main(["segment", str(tmp_path / "bf.tif"), "-o", str(out), "-q", "--no-overlay"]) != 0
    out2 = tmp_path / "out2"
    assert main(["segment", str(tmp_path / "bf.tif"), "-o", str(out2), "-q", "--no-overlay"]) == 0
    settings = list(json.loads((out2 / "cellseg_run.json").read_text())["settings"].values())
    assert "flat_field" not in settings[0]


def test_auto_decides_on_the_corrected_frame():
    """A 10x exponential fall-off pulls most of the bright field below the middle of the frame's
    range, so the frame as read does not look like a bright field; corrected, it does, and ``auto``
    corrects it."""
    trans, lab = _specimen()
    fall = (10.0 ** -(np.arange(trans.shape[1]) / (trans.shape[1] - 1)))[None, :]
    img = (1000 * trans * fall).astype(np.float32)
    assert not bright_background(img)
    res = Segmenter(_DarkNet()).segment(img)
    assert res.flat_field
    assert matching(lab, res.labels, 0.5).accuracy > 0.9


def _spread(out, bg):
    return float(out[bg].max() / out[bg].min() - 1)


def test_flat_field_does_not_mistake_packed_nuclei_for_shade(monkeypatch):
    """Evenly lit, with dark nuclei packed in one corner: the background keeps its level next to
    them (within 4%), because each block's value is the bright field between them; with the mean of
    each block and no closing, the fit reads the packed nuclei as shade."""
    import cellseg.preprocess as pp

    trans, lab = _specimen((256, 256), diam=12, spacing=16)
    yy, xx = np.mgrid[:256, :256]
    corner = (yy < 96) & (xx < 96)
    trans = np.where(corner | (lab == 0), trans, 1.0).astype(np.float32)  # nuclei only in the corner
    img, bg = 200 * trans, trans == 1.0
    assert _spread(flat_field(img), bg) < 0.04
    monkeypatch.setattr(pp, "_FLAT_FIELD_PERCENTILE", 50.0)
    monkeypatch.setattr(pp, "_FLAT_FIELD_CLOSING", 0.0)
    assert _spread(flat_field(img), bg) > 0.08


def test_flat_field_closes_over_a_dark_clump(monkeypatch):
    """A dark clump (a fold, a cluster with no field between its cells) 30 px across in a 256 px
    field: closed over, it leaves the field around it level (within 4%); without the closing the
    fitted surface dips under it."""
    import cellseg.preprocess as pp

    yy, xx = np.mgrid[:256, :256]
    clump = (yy - 128) ** 2 + (xx - 100) ** 2 <= 15 ** 2
    img = np.where(clump, 40.0, 200.0).astype(np.float32)
    assert _spread(flat_field(img), ~clump) < 0.04
    monkeypatch.setattr(pp, "_FLAT_FIELD_CLOSING", 0.0)
    assert _spread(flat_field(img), ~clump) > 0.06
