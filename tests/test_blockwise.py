import numpy as np
import pytest
import tifffile

from cellseg.blockwise import percentile_range, segment_blockwise
from cellseg.datasets.synthetic import synthetic_cells
from cellseg.metrics import matching
from cellseg.models import load_model
from cellseg.segmenter import Segmenter


def _same_partition(a, b):
    """Equal up to a renumbering of ids (background fixed)."""
    if a.shape != b.shape or not np.array_equal(a > 0, b > 0):
        return False
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]]), axis=1)
    return len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))


@pytest.fixture(scope="module")
def seg(tiny_model_path):
    return Segmenter(load_model(tiny_model_path))


@pytest.mark.parametrize("suffix", [".tif", ".zarr"])
def test_blockwise_equals_whole_image(seg, tmp_path, suffix):
    img, _ = synthetic_cells((300, 330), n_cells=60, seed=7)
    rng = percentile_range(img, *seg.normalize)
    whole = seg.segment(img, norm_range=rng).labels
    assert whole.max() > 20
    out, cut = segment_blockwise(seg, img, tmp_path / f"labels{suffix}", block=100, margin=96)
    assert not list(tmp_path.glob(".*partial*"))
    if suffix == ".zarr":
        import zarr

        blk = np.asarray(zarr.open_array(str(out), mode="r")[...])
    else:
        blk = tifffile.imread(out)
    assert cut == []
    assert _same_partition(blk, whole), matching(whole, blk, 0.99)


def test_blockwise_from_memory_mapped_input(seg, tmp_path):
    img, _ = synthetic_cells((256, 256), n_cells=40, seed=9)
    src = tmp_path / "big.tif"
    tifffile.imwrite(src, img)
    mm = tifffile.memmap(src, mode="r")
    out, _ = segment_blockwise(seg, mm, tmp_path / "out.tif", block=96, margin=96)
    whole = seg.segment(img, norm_range=percentile_range(img, *seg.normalize)).labels
    assert _same_partition(tifffile.imread(out), whole)


def test_small_margin_reports_cut_objects(seg, tmp_path):
    img, _ = synthetic_cells((200, 200), n_cells=30, radius=(10, 16), seed=2)
    _, cut = segment_blockwise(seg, img, tmp_path / "o.tif", block=64, margin=2)
    assert len(cut) > 0
