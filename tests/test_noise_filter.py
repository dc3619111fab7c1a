"""Filtering of pixel-wise noise before the network (``Segmenter(noise_filter=...)``,
``cellseg segment --noise-filter``; ``cellseg.preprocess.noise_sigma``/``denoise_frame``)."""
import json
from pathlib import Path

import numpy as np
import pytest

from cellseg.datasets.synthetic import synthetic_cells
from cellseg.metrics import matching
from cellseg.preprocess import NOISE_LEVEL, denoise_frame, noise_level, noise_sigma
from cellseg.segmenter import Segmenter, SegmenterError
from cellseg_napari._testing import OracleModel

SAMPLES = Path(__file__).resolve().parents[1] / "cellseg" / "samples"


def ref_noise_sigma(img):
    """The obvious estimate: Immerkær's 3 x 3 mask applied pixel by pixel to every interior pixel,
    the median of the absolute responses over 0.6745 (a Gaussian's median absolute deviation) and
    over 6 (the mask's gain on pixel-wise noise: the root of the sum of its squared weights)."""
    x = np.asarray(img, np.float64)
    mask = [[1, -2, 1], [-2, 4, -2], [1, -2, 1]]
    h, w = x.shape
    out = []
    for i in range(1, h - 1):
        for j in range(1, w - 1):
            out.append(abs(sum(mask[a][b] * x[i - 1 + a, j - 1 + b] for a in range(3) for b in range(3))))
    return float(np.median(out)) / 0.6745 / np.sqrt(sum(v * v for row in mask for v in row))


def _fluorescence(seed=0, shape=(96, 96), sigma=0.0):
    """Bright cells on a dark background (background 10, cells about 100) with Gaussian noise."""
    image, gt = synthetic_cells(shape, n_cells=8, seed=seed, noise=0.0)
    clean = 10 + 90 * image / image.max()
    rng = np.random.default_rng(seed + 100)
    return (clean + rng.normal(0, sigma, clean.shape)).astype(np.float32), clean.astype(np.float32), gt


@pytest.mark.parametrize("sigma", [0.0, 3.0, 12.0])
def test_noise_sigma_equals_its_reference_and_reads_the_noise(sigma):
    noisy, _, _ = _fluorescence(seed=1, shape=(48, 56), sigma=sigma)
    assert noise_sigma(noisy) == pytest.approx(ref_noise_sigma(noisy), rel=1e-5, abs=1e-6)
    big, _, _ = _fluorescence(seed=2, shape=(256, 256), sigma=sigma)
    if sigma:  # the cells' edges and shading do not count: within 10% of the noise added
        assert noise_sigma(big) == pytest.approx(sigma, rel=0.1)
    else:
        assert noise_sigma(big) < 0.5
    rgb = np.stack([big, big, big], -1)
    assert noise_sigma(rgb, channel_axis=2) == pytest.approx(noise_sigma(big), rel=1e-5, abs=1e-4)


def test_noise_level_tells_noisy_from_clean_fluorescence():
    clean, _, _ = _fluorescence(seed=3, shape=(128, 128))
    noisy, _, _ = _fluorescence(seed=3, shape=(128, 128), sigma=10.0)
    assert noise_level(clean) < NOISE_LEVEL < noise_level(noisy)
    assert noise_level(np.full((16, 16), 5.0)) == 0.0
    with pytest.raises(ValueError, match="2D frame"):
        noise_sigma(np.zeros((2, 40)))


def test_denoise_frame_lowers_the_noise_and_keeps_the_cells():
    noisy, clean, gt = _fluorescence(seed=4, shape=(128, 128), sigma=15.0)
    out = denoise_frame(noisy)
    assert out.dtype == np.float32 and out.shape == noisy.shape
    rmse_in = np.sqrt(np.mean((noisy - clean) ** 2))
    rmse_out = np.sqrt(np.mean((out - clean) ** 2))
    assert rmse_out < 0.5 * rmse_in
    # the cells stay where they were: thresholded halfway, the filtered frame is their foreground
    def iou(a, b):
        return np.sum(a & b) / np.sum(a | b)

    ref = clean > 55
    assert iou(out > 55, ref) > 0.75 and iou(out > 55, ref) > iou(noisy > 55, ref) + 0.2  # 0.80 against 0.54
    flat = np.full((32, 32), 7.0, np.float32)
    np.testing.assert_array_equal(denoise_frame(flat), flat)  # nothing to filter


def test_auto_filters_noisy_fluorescence_only():
    """``auto`` filters a frame with a dark background (fluorescence) whose noise is above 3% of its
    range; a clean one, and transmitted light however noisy (DIC-like relief on a mid-grey
    background, a bright field), are left as read; ``on`` and ``off`` force it. The network gets
    the filtered frame."""
    def frames(sigma):
        noisy, clean, gt = _fluorescence(seed=5, shape=(128, 128), sigma=sigma)
        relief = 100 + 2 * (clean - np.roll(clean, 3, axis=1)) + (noisy - clean)
        return {"dark": noisy, "relief": relief, "bright": noisy.max() - noisy}, gt

    def run(img, gt, mode="auto"):
        model = OracleModel("stardist", gt)
        res = Segmenter(model, noise_filter=mode).segment(img)
        return res, model.last_input

    low, gt = frames(3.0)  # noise level 0.041: just above NOISE_LEVEL
    assert noise_level(low["dark"]) > NOISE_LEVEL
    res, seen = run(low["dark"], gt)
    assert res.noise_filter
    assert noise_sigma(seen) < 0.5 * noise_sigma((low["dark"] - low["dark"].min()) / np.ptp(low["dark"]))
    high, gt = frames(20.0)  # noise levels 0.14-0.17
    for kind in ("relief", "bright"):
        assert not run(high[kind], gt)[0].noise_filter and run(high[kind], gt, "on")[0].noise_filter
    clean, gt = frames(0.0)
    assert not any(run(f, gt)[0].noise_filter for f in clean.values())
    noisy = low["dark"]
    assert not run(noisy, gt, "off")[0].noise_filter
    assert Segmenter(OracleModel("stardist", gt), noise_filter=True).noise_filter == "on"
    with pytest.raises(SegmenterError, match="noise_filter must be"):
        Segmenter(OracleModel("stardist", gt), noise_filter="always")
    model3d = OracleModel("stardist", gt)
    model3d.config = {**model3d.config, "ndim": 3}
    with pytest.raises(SegmenterError, match="3D volumes"):
        Segmenter(model3d, noise_filter="on")


def test_a_stack_is_decided_by_its_first_frame():
    noisy, _, gt = _fluorescence(seed=6, shape=(96, 96), sigma=10.0)
    clean, _, _ = _fluorescence(seed=6, shape=(96, 96))
    res = Segmenter(OracleModel("stardist", [gt, gt])).segment(np.stack([noisy, clean]), axes="TYX")
    assert res.noise_filter


def test_the_default_model_on_the_noisy_sample(tmp_path):
    """The bundled DSB sample under Gaussian noise of a tenth of its range (σ 25 on 0-255): the
    default model with the filter (``auto``) finds far more of the annotated nuclei than without;
    the run record names the choice only when it is not ``auto``."""
    import tifffile

    from cellseg import io
    from cellseg.cli import main

    grey = io.read_image(SAMPLES / "dsb_nuclei.png").data.astype(np.float32)
    gt = io.read_labels(SAMPLES / "dsb_nuclei_labels.tif")
    noisy = grey + np.random.default_rng(0).normal(0, 25, grey.shape).astype(np.float32)
    tifffile.imwrite(tmp_path / "noisy.tif", noisy)
    aps = {}
    for mode in ("auto", "off"):
        out = tmp_path / mode
        args = ["segment", str(tmp_path / "noisy.tif"), "-o", str(out), "-q", "--no-overlay", "--no-csv"]
        assert main(args + ([] if mode == "auto" else ["--noise-filter", mode])) == 0
        aps[mode] = matching(gt, io.read_labels(out / "noisy_labels.tif"), thresh=0.5).accuracy
        record = json.loads((out / "cellseg_run.json").read_text())
        assert json.dumps(record).count("noise_filter") == (0 if mode == "auto" else 1)
    assert aps["auto"] > aps["off"] + 0.15, aps
    assert aps["auto"] > 0.5, aps
