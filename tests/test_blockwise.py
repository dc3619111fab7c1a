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


def test_mapped_rows_reads_and_writes_like_the_memmap(tmp_path):
    from cellseg.blockwise import MappedRows

    rng = np.random.default_rng(0)
    a = rng.integers(0, 60000, (37, 23, 5)).astype(np.uint16)
    src = tmp_path / "a.tif"
    tifffile.imwrite(src, a)
    mm = tifffile.memmap(src, mode="r")
    rows = MappedRows.from_memmap(mm)
    assert rows is not None and rows.shape == a.shape and rows.dtype == a.dtype
    assert MappedRows.from_memmap(mm[3:]) is None  # a view: its offset is not the file's
    assert MappedRows.from_memmap(a) is None
    for key in [..., (slice(3, 20), slice(None), 2), (slice(None, None, 4), slice(1, None, 3)), 5, -1,
                (slice(30, 90),), (slice(10, 10),), (slice(None, None, -1),)]:
        np.testing.assert_array_equal(rows[key], a[key], err_msg=str(key))
    out = tmp_path / "o.tif"
    from cellseg.blockwise import open_output

    w = open_output(out, (40, 30), (16, 16))
    assert isinstance(w, MappedRows)
    ref = np.zeros((40, 30), np.int32)
    for sl, v in [((slice(0, 16), slice(0, 16)), 1), ((slice(10, 40), slice(5, 30)), 2), ((7,), 3)]:
        w[sl] = v
        ref[sl] = v
    np.testing.assert_array_equal(w[...], ref)
    del w
    np.testing.assert_array_equal(tifffile.imread(out), ref)
    with pytest.raises(ValueError, match="read-only"):
        rows[0] = 1


def test_percentile_range_of_a_subsample_read_in_bands(tmp_path):
    rng = np.random.default_rng(1)
    a = rng.gamma(2.0, 300.0, (1000, 700)).astype(np.uint16)
    step = int(np.ceil((a.size / 5000) ** 0.5))
    want = np.percentile(a[::step, ::step].astype(np.float32), [1, 99.8])
    src = tmp_path / "a.tif"
    tifffile.imwrite(src, a)
    for img in (a, tifffile.memmap(src, mode="r")):
        for band_bytes in (2**26, 7 * 1400, 1):  # one band, bands of 7 rows (not a multiple of step), one row
            assert percentile_range(img, 1, 99.8, max_samples=5000, band_bytes=band_bytes) == tuple(
                float(v) for v in want)
