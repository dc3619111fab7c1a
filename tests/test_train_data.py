"""Training data: validation errors, normalization, patch sampling."""
from __future__ import annotations

import numpy as np
import pytest

from cellseg.datasets.synthetic import synthetic_cells
from cellseg.train.augment import AugmentConfig
from cellseg.train.dataset import DataError, PatchSampler, TrainingData, load_training_data


def pairs(n=3, shape=(48, 48), n_cells=6):
    return [synthetic_cells(shape, n_cells=n_cells, seed=i) for i in range(n)]


def test_from_arrays_normalizes_and_keeps_labels():
    ps = pairs()
    raw = [(im * 1000 + 50).astype(np.uint16) for im, _ in ps]
    data = TrainingData.from_arrays([(r, lab) for r, (_, lab) in zip(raw, ps)], normalization={"pmin": 1, "pmax": 99})
    assert len(data) == 3 and data.ndim == 2 and data.in_channels == 1
    s = data[0]
    assert s.image.shape == (1, 48, 48) and s.image.dtype == np.float32 and s.labels.dtype == np.int32
    assert np.percentile(s.image, 1) == pytest.approx(0, abs=1e-4)
    assert np.percentile(s.image, 99) == pytest.approx(1, abs=1e-3)
    np.testing.assert_array_equal(s.labels, ps[0][1])


def test_rgb_averaged_and_channels_first():
    im, lab = pairs(1)[0]
    rgb = np.stack([im, im * 0.5, im * 0.25], axis=-1)
    data = TrainingData.from_arrays([(rgb, lab)], axes="YXC")
    assert data[0].image.shape == (1, 48, 48)
    data2 = TrainingData.from_arrays([(np.moveaxis(rgb, -1, 0), lab)], in_channels=3)
    assert data2[0].image.shape == (3, 48, 48)


def test_float_labels_accepted_when_whole_numbers_only():
    im, lab = pairs(1)[0]
    data = TrainingData.from_arrays([(im, lab.astype(np.float32))], names=["img7"])  # ImageJ export
    assert data[0].labels.dtype == np.int32 and np.array_equal(data[0].labels, lab)
    with pytest.raises(DataError, match=r"img7.*whole numbers"):
        TrainingData.from_arrays([(im, lab.astype(np.float32) * 0.5)], names=["img7"])


def test_shape_mismatch_rejected():
    im, lab = pairs(1)[0]
    with pytest.raises(DataError, match=r"a\.tif.*differs"):
        TrainingData.from_arrays([(im[:40], lab)], names=["a.tif"])


def test_empty_set_rejected():
    with pytest.raises(DataError, match="empty"):
        TrainingData.from_arrays([])
    im, lab = pairs(1)[0]
    with pytest.raises(DataError, match="no labelled objects"):
        TrainingData.from_arrays([(im, np.zeros_like(lab))])


def test_semantic_mask_rejected():
    """One id covering many separate blobs (a 0/255 mask) is not an instance image."""
    im, lab = pairs(1)[0]
    from scipy import ndimage as ndi

    # drop the label edges so touching cells become separate blobs of one value
    edges = ndi.maximum_filter(lab, 3) != ndi.minimum_filter(lab, 3)
    sem = np.where((lab > 0) & ~edges, 255, 0).astype(np.uint8)
    with pytest.raises(DataError, match=r"mask3: label 255 consists of \d+ separate blobs"):
        TrainingData.from_arrays([(im, sem)], names=["mask3"])


def test_binary_01_masks_rejected():
    from scipy import ndimage as ndi

    ps = pairs(2)
    bins = []
    for im, lab in ps:
        b = ((lab > 0) & (ndi.maximum_filter(lab, 3) == ndi.minimum_filter(lab, 3))).astype(np.uint8)
        # keep only 3 blobs so the per-id check (>= 4 blobs) does not fire first
        cc, n = ndi.label(b)
        bins.append((im, np.isin(cc, [1, 2, 3]).astype(np.uint8)))
    with pytest.raises(DataError, match="a single value besides 0"):
        TrainingData.from_arrays(bins)
    # a single object per image with 0/1 values is a valid instance set
    one = [(im, (ndi.label(b)[0] == 1).astype(np.uint8)) for im, b in bins]
    assert len(TrainingData.from_arrays(one)) == 2


def test_split_is_deterministic_and_disjoint():
    data = TrainingData.from_arrays(pairs(5), names=list("edcba"))
    tr, va = data.split(0.4, seed=3)
    tr2, va2 = data.split(0.4, seed=3)
    assert tr.names == tr2.names and va.names == va2.names
    assert len(va) == 2 and not set(tr.names) & set(va.names)
    assert sorted(tr.names + va.names) == list("abcde")


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_training_data(tmp_path / "nope")
    (tmp_path / "x").mkdir()
    with pytest.raises(DataError, match="not a CTC dataset"):
        load_training_data(tmp_path / "x")


def test_folder_roundtrip(tmp_path):
    import tifffile

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for i, (im, lab) in enumerate(pairs(2)):
        tifffile.imwrite(tmp_path / "images" / f"s{i}.tif", (im * 200).astype(np.uint8))
        tifffile.imwrite(tmp_path / "masks" / f"s{i}.tif", lab.astype(np.uint16))
    data = load_training_data(tmp_path)
    assert data.names == ["s0", "s1"] and data[1].image.shape == (1, 48, 48)
    tifffile.imwrite(tmp_path / "masks" / "s1.tif", np.zeros((40, 48), np.uint16))
    with pytest.raises(DataError, match="s1"):
        load_training_data(tmp_path)


class _FG:
    """Minimal representation stand-in for the sampler: foreground target only."""

    name = "fg"

    def encode(self, labels):
        return {"fg": (labels > 0).astype(np.float32)[None]}


def test_patch_sampler_shapes_and_foreground_bias():
    ps = []
    for i in range(3):  # sparse objects in big images
        lab = np.zeros((128, 128), np.int32)
        lab[20 + 10 * i:30 + 10 * i, 90:100] = 1
        lab[100:108, 10 + 5 * i:20 + 5 * i] = 2
        im = (lab > 0).astype(np.float32) + np.random.default_rng(i).random(lab.shape).astype(np.float32) * 0.1
        ps.append((im, lab))
    data = TrainingData.from_arrays(ps)
    frac = {}
    for fg_prob in (0.0, 1.0):
        s = PatchSampler(data, _FG(), (32, 32), AugmentConfig.none(), fg_prob=fg_prob)
        x, t = s.batch(np.random.default_rng(0), 64)
        assert x.shape == (64, 1, 32, 32) and t["fg"].shape == (64, 1, 32, 32)
        # the image channel and the target stay aligned (image = labels + small noise)
        np.testing.assert_array_equal(x[:, 0] > 0.5, t["fg"][:, 0] > 0.5)
        frac[fg_prob] = float((t["fg"].reshape(64, -1).max(1) > 0).mean())
    assert frac[1.0] == 1.0 and frac[0.0] < 0.7
    s = PatchSampler(data, _FG(), (32, 32))
    a = s.batch(np.random.default_rng(5), 4)
    b = s.batch(np.random.default_rng(5), 4)
    np.testing.assert_array_equal(a[0], b[0])


def test_patch_larger_than_image():
    data = TrainingData.from_arrays(pairs(1, (20, 24), n_cells=1))
    x, t = PatchSampler(data, _FG(), (32, 32), AugmentConfig.none()).batch(np.random.default_rng(0), 2)
    assert x.shape == (2, 1, 32, 32)
    assert t["fg"].sum() == 2 * (data[0].labels > 0).sum()


def test_an_object_annotated_in_parts_keeps_its_largest_part():
    """A few ids in separate parts (as some sources annotate cut-off protrusions) are instance labels
    with a flaw: training keeps each such object's largest part, with a warning; a class mask is refused."""
    from cellseg.labels import check_instance_labels
    from cellseg.train.dataset import DataWarning

    lab = np.zeros((64, 64), np.int32)
    for i, (y, x) in enumerate([(12, 12), (12, 30), (12, 48), (40, 12), (40, 30), (40, 48)], start=1):
        lab[y:y + 8, x:x + 8] = i
    for y, x, n in [(1, 1, 4), (1, 60, 3), (60, 1, 3), (60, 60, 3)]:  # one object in four parts
        lab[y:y + n, x:x + n] = 7
    im = (lab > 0).astype(np.float32) + np.random.default_rng(0).normal(0, 0.05, lab.shape).astype(np.float32)
    assert check_instance_labels(lab, "f") == 10  # was refused: "label 7 consists of 4 separate blobs"
    with pytest.warns(DataWarning, match=r"frag: 1 object annotated in separate parts keep their largest part "
                                         r"\(27 px left out\)"):
        td = TrainingData.from_arrays([(im, lab)], names=["frag"])
    out = td.samples[0].labels
    assert int((out == 7).sum()) == 16 and out[1:5, 1:5].min() == 7
    np.testing.assert_array_equal(out[lab != 7], lab[lab != 7])  # nothing else changes
    with pytest.raises(DataError, match="separate blobs"):  # most blobs under one id: a class mask
        TrainingData.from_arrays([(im, (lab > 0).astype(np.uint8))], names=["binary"])



def test_test_labels_are_read_as_annotated(tmp_path):
    """trim=False (recipes' test splits): objects in parts stay as annotated, they are scored so."""
    import tifffile

    from cellseg.train.dataset import DataWarning

    lab = np.zeros((48, 48), np.uint16)
    for i, (y, x) in enumerate([(8, 8), (8, 20), (8, 32), (30, 8), (30, 20), (30, 32)], start=1):
        lab[y:y + 8, x:x + 8] = i
    for y, x in [(0, 0), (0, 45), (45, 0), (45, 45)]:  # one object in four parts (fewer than half the blobs)
        lab[y:y + 3, x:x + 3] = 7
    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
    tifffile.imwrite(tmp_path / "images" / "a.tif", (lab > 0).astype(np.float32) + 0.1)
    tifffile.imwrite(tmp_path / "masks" / "a.tif", lab)
    kept = TrainingData.from_folder(tmp_path, trim=False)
    np.testing.assert_array_equal(kept.samples[0].labels, lab)
    with pytest.warns(DataWarning):
        trimmed = TrainingData.from_folder(tmp_path)
    assert int((trimmed.samples[0].labels == 7).sum()) == 9
