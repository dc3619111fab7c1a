import numpy as np
import pytest

from cellseg.labels import LabelError, as_labels, fill_holes, link_by_iou, relabel_sequential, remove_small


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.int8, np.int16, np.int32, np.int64, np.uint64])
def test_as_labels_accepts_every_integer_dtype(dtype):
    a = np.array([[0, 3], [5, 0]], dtype=dtype)
    out = as_labels(a)
    assert out.dtype == np.int32 and out.flags.c_contiguous
    assert out.tolist() == [[0, 3], [5, 0]]


def test_as_labels_rejects_float_negative_and_names_source():
    with pytest.raises(LabelError, match="mask.tif.*whole numbers.*0.5"):
        as_labels(np.full((3, 3), 0.5, np.float32), name="mask.tif")
    with pytest.raises(LabelError, match="mask.tif.*whole numbers.*nan"):
        as_labels(np.full((3, 3), np.nan), name="mask.tif")
    with pytest.raises(LabelError, match="non-negative"):
        as_labels(np.full((3, 3), -2.0))
    with pytest.raises(LabelError, match="integer"):
        as_labels(np.full((3, 3), "a"))
    with pytest.raises(LabelError, match="non-negative"):
        as_labels(np.array([[-1, 0]], np.int16))
    with pytest.raises(LabelError, match="dimensions"):
        as_labels(np.zeros((2, 2, 2), np.int32), ndim=2)
    with pytest.raises(LabelError, match="int32"):
        as_labels(np.array([[2**40]], np.int64))


def test_relabel_sequential_keeps_partition():
    a = np.array([[0, 7, 7], [100, 0, 3]], np.uint16)
    r = relabel_sequential(a)
    assert sorted(np.unique(r).tolist()) == [0, 1, 2, 3]
    # same partition: a one-to-one map between ids
    pairs = set(zip(a.ravel().tolist(), r.ravel().tolist()))
    assert len(pairs) == len(np.unique(a))


def test_fill_holes_per_object_and_remove_small():
    a = np.zeros((9, 9), np.int32)
    a[1:8, 1:8] = 2
    a[4, 4] = 0  # hole
    a[0, 8] = 9  # one-pixel object
    f = fill_holes(a)
    assert f[4, 4] == 2
    # a hole between two objects is not filled with either
    b = np.zeros((5, 7), np.int32)
    b[:, :3] = 1
    b[:, 4:] = 2
    assert fill_holes(b)[2, 3] == 0
    r = remove_small(f, 2)
    assert 9 not in r and (r == 2).sum() == 49


def test_link_by_iou_keeps_ids_across_frames():
    s = np.zeros((3, 20, 20), np.int32)
    s[0, 2:8, 2:8] = 1
    s[1, 3:9, 2:8] = 5   # same cell moved by one row
    s[2, 3:9, 3:9] = 9
    s[1, 12:18, 12:18] = 6  # new cell in frame 1
    out, mapping = link_by_iou(s, 0.3)
    assert out[1, 5, 5] == 1 and out[2, 5, 5] == 1
    assert out[1, 15, 15] == 6
    assert mapping[5] == 1 and mapping[9] == 1


def test_link_by_iou_below_threshold_keeps_new_id():
    s = np.zeros((2, 20, 20), np.int32)
    s[0, 0:10, 0:10] = 1
    s[1, 7:17, 7:17] = 2  # IoU 9/191 < 0.3
    out, mapping = link_by_iou(s, 0.3)
    assert out[1, 10, 10] == 2 and mapping == {}


def _holey(rng, shape, n):
    """Random rings / shells (some nested, some with other objects inside their
    holes), sparse ids, and speckle: every kind of hole and non-hole."""
    lab = np.zeros(shape, np.int32)
    grids = np.indices(shape)
    for _ in range(n):
        c = [rng.uniform(0, s) for s in shape]
        r = np.sqrt(sum((g - cc) ** 2 for g, cc in zip(grids, c)))
        r0 = rng.uniform(2, min(shape) / 3)
        w = rng.uniform(0.8, 3)
        lab[(r >= r0) & (r < r0 + w)] = rng.integers(1, 3 * n)
    speck = rng.random(shape) < 0.05
    lab[speck] = rng.integers(0, 3 * n, speck.sum())
    return lab


@pytest.mark.parametrize("seed", range(6))
def test_fill_holes_vs_reference(seed):
    from tests.reference.ref_labels import ref_fill_holes

    rng = np.random.default_rng(seed)
    shape = (48, 61) if seed < 4 else (14, 20, 23)
    lab = _holey(rng, shape, 8)
    out = fill_holes(lab)
    np.testing.assert_array_equal(out, ref_fill_holes(lab))
    assert (out != lab).any() or seed >= 4  # the 2D cases do have holes to fill
    # holes on the image border are not holes; an object filling the whole image
    np.testing.assert_array_equal(fill_holes(np.ones((3, 4), np.int32)), np.ones((3, 4)))
    assert fill_holes(np.zeros((0, 5), np.int32)).shape == (0, 5)


@pytest.mark.parametrize("shape", [(1, 1), (37, 53), (5, 1, 9), (6, 11, 13), (1, 7)])
def test_label_boxes_vs_find_objects(shape):
    from scipy import ndimage as ndi

    from cellseg._labels_kernels import label_boxes

    rng = np.random.default_rng(len(shape) * 100 + shape[-1])
    lab = rng.integers(0, 9, size=shape).astype(np.int32)
    lab[lab == 4] = 0  # an absent id in the middle
    n = int(lab.max())
    lo, hi = label_boxes(lab.reshape(-1), np.array(shape, np.int64), n)
    for k, sl in enumerate(ndi.find_objects(lab, max_label=n)):
        if sl is None:
            assert (lo[k] == 0).all() and (hi[k] == 0).all()
        else:
            assert list(lo[k]) == [s.start for s in sl] and list(hi[k]) == [s.stop for s in sl]


def test_as_labels_accepts_float_images_of_whole_numbers():
    # issue 14, item 11: ImageJ/Fiji export label images as float32
    for a in (np.array([[0, 3], [70000, 0]], np.float32), np.array([[0, 3], [70000, 0]], np.float64),
              np.array([[0, 3], [7, 0]], np.float16)):
        out = as_labels(a)
        assert out.dtype == np.int32 and out.tolist() == a.astype(np.int64).tolist()


def test_sequential_counts_and_orders_ids_on_both_paths():
    from cellseg.labels import sequential

    rng = np.random.default_rng(0)
    for ids in ([0, 3, 9, 4], [0, 5, 2**30, 7]):  # a lookup table; ids too sparse for one (np.unique)
        a = rng.choice(np.array(ids, np.int64), size=(6, 7))
        a[0, 0], a[0, 1] = ids[1], ids[2]  # a few ids always present
        r, n = sequential(a)
        present = np.unique(a[a > 0])
        assert n == present.size and r.dtype == np.int32
        np.testing.assert_array_equal(r, np.searchsorted(present, a) * (a > 0) + (a > 0))
        np.testing.assert_array_equal(relabel_sequential(a), r)
    r, n = sequential(np.full((2, 3), 9, np.uint8))  # no background
    assert n == 1 and (r == 1).all()
    r, n = sequential(np.zeros((0, 4), np.int32))
    assert n == 0 and r.shape == (0, 4)
    with pytest.raises(LabelError):
        sequential(np.zeros((2, 2, 2)), ndim=2)


def test_bounding_boxes_are_find_objects_slices():
    from scipy import ndimage as ndi

    from cellseg.labels import bounding_boxes

    lab = np.zeros((4, 9, 7), np.uint16)
    lab[1:3, 2:5, 0:2] = 3
    lab[0, 8, 6] = 1
    lo, hi = bounding_boxes(lab, n=5)  # ids 2, 4 and 5 absent
    for k, sl in enumerate(ndi.find_objects(lab.astype(np.int32), max_label=5)):
        want = ([0] * 3, [0] * 3) if sl is None else ([s.start for s in sl], [s.stop for s in sl])
        assert (lo[k].tolist(), hi[k].tolist()) == want
    lo, hi = bounding_boxes(np.zeros((3, 3), np.int32))
    assert lo.shape == hi.shape == (0, 2)
