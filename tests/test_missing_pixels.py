"""NaN and infinite pixels given to the Segmenter (Python, napari): missing data, label 0 there."""
import numpy as np
import pytest

from cellseg.datasets.synthetic import synthetic_cells
from cellseg.metrics import matching
from cellseg.segmenter import Segmenter, SegmenterError
from cellseg_napari._testing import OracleModel


def test_nan_border_is_missing_data():
    """A registered image with a NaN border: segmented (it was a ValueError from the normalization),
    label 0 on the border, the objects inside found, a warning with the count."""
    image, gt = synthetic_cells((96, 96), n_cells=8, seed=2)
    img = image.astype(np.float32)
    img[:, :6] = np.nan
    img[0, 50] = np.inf
    res = Segmenter(OracleModel("stardist", gt)).segment(img)
    assert res.labels.shape == gt.shape and not res.labels[:, :6].any() and res.labels[0, 50] == 0
    inner = gt.copy()
    inner[:, :6] = 0
    assert matching(inner, res.labels, thresh=0.5).accuracy >= 0.9
    assert any(w.startswith(f"{96 * 6 + 1} pixels are NaN or infinite") for w in res.warnings)


def test_nan_in_a_colour_stack_and_all_nan():
    image, gt = synthetic_cells((64, 64), n_cells=5, seed=4)
    rgb = np.repeat(image.astype(np.float32)[None, ..., None], 3, axis=-1)
    rgb = np.concatenate([rgb, rgb], axis=0)  # T, Y, X, C
    rgb[1, 10:20, 10:20, :] = np.nan  # a patch of one frame, in every channel
    res = Segmenter(OracleModel("stardist", [gt, gt])).segment(rgb, axes="TYXC")
    assert res.labels.shape == (2, 64, 64)
    assert not res.labels[1, 10:20, 10:20].any() and res.labels[0].any()
    with pytest.raises(SegmenterError, match="every pixel is NaN or infinite"):
        Segmenter(OracleModel("stardist", gt)).segment(np.full((64, 64), np.nan, np.float32))
