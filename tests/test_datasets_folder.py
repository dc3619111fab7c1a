import numpy as np
import pytest
import tifffile
from PIL import Image

from cellseg.datasets import FolderDataset
from cellseg.datasets.ctc import DatasetError, MissingFolderError


def _make(root, names=("a", "b", "c", "d", "e"), shape=(12, 16)):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, n in enumerate(names):
        g = np.full(shape, 10 * i, np.uint8)
        if i % 2:
            Image.fromarray(np.dstack([g, g, g, np.full_like(g, 255)]), mode="RGBA").save(root / "images" / f"{n}.png")
        else:
            tifffile.imwrite(root / "images" / f"{n}.tif", g)
        lab = np.zeros(shape, np.uint16)
        lab[1:4, 1:5] = i + 1
        tifffile.imwrite(root / "masks" / f"{n}.tif", lab)
    return root


def test_pairs_by_stem_lazily(tmp_path):
    ds = FolderDataset(_make(tmp_path / "d"))
    assert len(ds) == 5 and ds.names == ["a", "b", "c", "d", "e"]
    s = ds[1]
    assert s.name == "b" and s.axes == "YX" and s.image.shape == (12, 16) and s.image[0, 0] == 10  # RGBA -> grey
    assert s.labels.dtype == np.int32 and s.labels.max() == 2
    assert ds["c"].image[0, 0] == 20 and ds[-1].name == "e"
    assert [x.name for x in ds] == ds.names and [x.name for x in ds[1:3]] == ["b", "c"]
    with pytest.raises(IndexError):
        ds[5]
    with pytest.raises(KeyError, match="zzz"):
        ds["zzz"]
    (tmp_path / "d" / "images" / "b.png").unlink()  # lazy: reading happens on access
    with pytest.raises(FileNotFoundError, match="b.png"):
        ds["b"]


def test_names_subset_and_colour_images(tmp_path):
    root = _make(tmp_path / "d")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (12, 16, 3), dtype=np.uint8)).save(
        root / "images" / "f.png")
    tifffile.imwrite(root / "masks" / "f.tif", np.ones((12, 16), np.uint16))
    ds = FolderDataset(root, names=["f", "a"])
    assert ds.names == ["f", "a"] and ds[0].axes == "YXC" and ds[0].image.shape == (12, 16, 3)
    with pytest.raises(DatasetError, match="unknown sample name.*nope"):
        FolderDataset(root, names=["a", "nope"])
    assert FolderDataset(root).subset(["a", "b"]).names == ["a", "b"]


def test_subset_of_a_relative_root(tmp_path, monkeypatch):
    _make(tmp_path / "d")
    monkeypatch.chdir(tmp_path)
    sub = FolderDataset("d").subset(["b", "c"])  # used to look for d/d/images
    assert sub.names == ["b", "c"] and sub["c"].image[0, 0] == 20


def test_unpaired_and_empty_folders_listed(tmp_path):
    root = _make(tmp_path / "d")
    tifffile.imwrite(root / "images" / "lonely.tif", np.zeros((4, 4), np.uint8))
    tifffile.imwrite(root / "masks" / "orphan.tif", np.zeros((4, 4), np.uint8))
    with pytest.raises(DatasetError, match=r"1 image\(s\) .* without a mask: lonely.tif; 1 mask\(s\) .* orphan.tif"):
        FolderDataset(root)
    (tmp_path / "e" / "images").mkdir(parents=True)
    (tmp_path / "e" / "masks").mkdir()
    with pytest.raises(DatasetError, match="no images"):
        FolderDataset(tmp_path / "e")
    with pytest.raises(MissingFolderError, match="masks folder"):
        FolderDataset(tmp_path / "e", masks="labels")
    with pytest.raises(MissingFolderError, match="nothing"):
        FolderDataset(tmp_path / "nothing")


def test_shape_mismatch_and_bad_mask_named(tmp_path):
    root = _make(tmp_path / "d")
    tifffile.imwrite(root / "masks" / "a.tif", np.zeros((5, 5), np.uint16))
    tifffile.imwrite(root / "masks" / "c.tif", np.full((12, 16), 0.5, np.float32))  # whole-number floats would pass
    ds = FolderDataset(root)
    with pytest.raises(DatasetError, match=r"a\.tif: mask of shape \(5, 5\) does not match"):
        ds["a"]
    with pytest.raises(ValueError, match=r"c\.tif: labels must be whole numbers"):
        ds["c"]


def test_split_deterministic(tmp_path):
    ds = FolderDataset(_make(tmp_path / "d", names=[f"s{i:02d}" for i in range(20)]))
    tr, va = ds.split(0.2, seed=3)
    assert len(va) == 4 and len(tr) == 16 and not set(tr) & set(va) and sorted(tr + va) == ds.names
    assert ds.split(0.2, seed=3) == (tr, va)
    assert ds.split(0.2, seed=4) != (tr, va)
    assert len(ds.split(0.01)[1]) == 1 and ds.split(0.0)[1] == []
    with pytest.raises(ValueError, match="val_fraction"):
        ds.split(1.0)


def test_dsb2018_index_filter(tmp_path):
    root = _make(tmp_path / "d")
    (root / "index.csv").write_text("id,height,kind_heuristic\na,12,fluorescence\nb,12,brightfield\n"
                                    "c,12,fluorescence\nd,12,brightfield\ne,12,fluorescence\n")
    assert FolderDataset.dsb2018(root).names == ["a", "c", "e"]
    assert FolderDataset.dsb2018(root, "brightfield").names == ["b", "d"]
    assert len(FolderDataset.dsb2018(root, None)) == 5
    with pytest.raises(ValueError, match=r"unknown modality 'histo'.*'brightfield' \(2\)"):
        FolderDataset.dsb2018(root, "histo")
    (root / "index.csv").unlink()
    with pytest.raises(MissingFolderError, match="index.csv"):
        FolderDataset.dsb2018(root)


@pytest.mark.data
def test_real_dsb2018(dsb2018):
    ds = FolderDataset(dsb2018)
    assert len(ds) == 664
    fl = FolderDataset.dsb2018(dsb2018)
    assert len(fl) == 541
    s = fl[0]
    assert s.axes == "YX" and s.image.ndim == 2 and s.image.shape == s.labels.shape  # RGBA equal channels -> grey
    assert s.labels.dtype == np.int32 and s.labels.max() > 0
    tr, va = fl.split(0.1, seed=0)
    assert len(va) == 54 and len(tr) == 487
