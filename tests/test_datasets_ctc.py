import warnings

import numpy as np
import pytest
import tifffile
from PIL import Image

from cellseg.datasets import CTCDataset, pair_label_folders, write_result
from cellseg.datasets.ctc import DatasetError, MissingFolderError, PairingError
from cellseg.io import read_image, read_labels
from cellseg.labels import LabelError


def _lab(t, shape=(16, 20)):
    lab = np.zeros(shape, np.uint16)
    lab[2:6, 2:6] = 1 + t
    lab[8:12, 10:15] = 100 + t
    return lab


def _make_ctc(root, nseq=2, frames=5, gt=(1, 3), st=True, digits=3):
    for s in range(1, nseq + 1):
        seq = root / f"{s:02d}"
        seq.mkdir(parents=True)
        for t in range(frames):
            tifffile.imwrite(seq / f"t{t:0{digits}d}.tif", np.full((16, 20), t, np.uint8))
        if gt:
            (root / f"{s:02d}_GT" / "SEG").mkdir(parents=True)
            (root / f"{s:02d}_GT" / "TRA").mkdir(parents=True)
            for t in gt:
                tifffile.imwrite(root / f"{s:02d}_GT" / "SEG" / f"man_seg{t:0{digits}d}.tif", _lab(t))
        if st:
            (root / f"{s:02d}_ST" / "SEG").mkdir(parents=True)
            for t in range(frames):
                tifffile.imwrite(root / f"{s:02d}_ST" / "SEG" / f"man_seg{t:0{digits}d}.tif", _lab(t))
    return root


def test_layout_sequences_frames_pairs(tmp_path):
    ds = CTCDataset(_make_ctc(tmp_path / "Fake-DS"))
    assert ds.name == "Fake-DS" and ds.sequences == ["01", "02"]
    fr = ds.frames("01")
    assert [t for t, _ in fr] == [0, 1, 2, 3, 4] and fr[2][1].name == "t002.tif"
    assert ds.frames(2) == ds.frames("02")
    gt = ds.pairs("01", "GT")
    assert [(p.seq, p.t) for p in gt] == [("01", 1), ("01", 3)]
    assert gt[0].image_path.name == "t001.tif" and gt[0].label_path.name == "man_seg001.tif"
    img, lab = gt[1].load()
    assert img[0, 0] == 3 and lab.dtype == np.int32 and set(np.unique(lab)) == {0, 4, 103}
    assert len(ds.pairs("02", "ST")) == 5
    assert ds.pairs("01") == gt  # auto prefers gold truth
    assert ds.truths("01") == ["GT", "ST"]
    assert len(ds.all_pairs("ST")) == 10


def test_four_digit_frames_and_auto_falls_back_to_st(tmp_path):
    ds = CTCDataset(_make_ctc(tmp_path / "D", nseq=1, frames=3, gt=(), digits=4))
    assert [t for t, _ in ds.frames("01")] == [0, 1, 2]
    pairs = ds.pairs("01")
    assert len(pairs) == 3 and pairs[0].label_path.name == "man_seg0000.tif"
    with pytest.raises(MissingFolderError, match=r"01_GT.SEG"):
        ds.pairs("01", "GT")


def test_3d_slice_annotations_are_skipped(tmp_path):
    root = _make_ctc(tmp_path / "D", nseq=1, frames=3, gt=(1,), st=False)
    tifffile.imwrite(root / "01_GT" / "SEG" / "man_seg_002_007.tif", _lab(2))
    tifffile.imwrite(root / "01_GT" / "SEG" / "man_seg002_008.tif", _lab(2))
    ds = CTCDataset(root)
    assert [p.t for p in ds.pairs("01", "GT")] == [1]
    assert sorted(p.name for p in ds.skipped) == ["man_seg002_008.tif", "man_seg_002_007.tif"]


def test_clear_errors(tmp_path):
    with pytest.raises(MissingFolderError, match="nowhere"):
        CTCDataset(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no CTC sequences"):
        CTCDataset(tmp_path / "empty")
    root = _make_ctc(tmp_path / "D", nseq=1, frames=3, gt=(1,), st=False)
    ds = CTCDataset(root)
    with pytest.raises(DatasetError, match="no sequence '02'"):
        ds.frames("02")
    with pytest.raises(MissingFolderError, match="01_ST"):
        ds.pairs("01", "ST")
    with pytest.raises(ValueError, match="truth must be"):
        ds.pairs("01", "gold")
    tifffile.imwrite(root / "01_GT" / "SEG" / "man_seg009.tif", _lab(9))
    with pytest.raises(DatasetError, match=r"man_seg009.tif: annotated frame 9 has no raw image"):
        ds.pairs("01", "GT")
    (root / "01_GT" / "SEG" / "man_seg009.tif").unlink()
    tifffile.imwrite(root / "01_GT" / "SEG" / "man_seg002.tif", np.zeros((5, 5), np.uint16))
    with pytest.raises(DatasetError, match="do not match image"):
        ds.pairs("01", "GT")[1].load()


def test_write_result(tmp_path):
    lab = np.zeros((16, 20), np.int32)
    lab[3:7, 3:7] = 300
    p = write_result(tmp_path, "01", 7, lab)
    assert p == tmp_path / "01_RES" / "mask007.tif"
    with tifffile.TiffFile(p) as t:
        assert t.series[0].dtype == np.uint16
    assert np.array_equal(read_labels(p), lab)
    assert write_result(tmp_path, 2, 12, lab, ndigits=4).name == "mask0012.tif"
    assert (tmp_path / "02_RES").is_dir()
    with pytest.raises(LabelError, match="uint16"):
        write_result(tmp_path, "01", 8, lab + 70000)
    with pytest.raises(LabelError, match="whole numbers"):  # whole-number floats are labels (issue 14, item 11)
        write_result(tmp_path, "01", 9, lab.astype(np.float32) + 0.5)
    with pytest.raises(ValueError, match="3 digits"):
        write_result(tmp_path, "01", 1000, lab)
    assert sorted(f.name for f in (tmp_path / "01_RES").iterdir()) == ["mask007.tif"]


def test_pair_ctc_folders(tmp_path):
    root = _make_ctc(tmp_path / "D", nseq=1, frames=5, gt=(1, 3), st=False)
    for t in (1, 3, 4):
        write_result(root, "01", t, _lab(t).astype(np.int32))
    with pytest.warns(UserWarning, match=r"mask004.tif"):
        pairs = pair_label_folders(root / "01_GT", root / "01_RES")
    assert [(n, g.name, p.name) for n, g, p in pairs] == [("001", "man_seg001.tif", "mask001.tif"),
                                                          ("003", "man_seg003.tif", "mask003.tif")]
    with pytest.warns(UserWarning):
        assert pair_label_folders(root / "01_GT" / "SEG", root / "01_RES") == pairs
    (root / "01_RES" / "mask003.tif").unlink()
    with pytest.raises(PairingError, match=r"1 of 2 ground-truth files .* man_seg003.tif.*mask004.tif"):
        pair_label_folders(root / "01_GT", root / "01_RES")
    with pytest.warns(UserWarning):
        pairs = pair_label_folders(root / "01_GT", root / "01_RES", allow_missing=True)
    assert [(n, p) for n, _, p in pairs][1] == ("003", None)
    (tmp_path / "plain_pred").mkdir()
    tifffile.imwrite(tmp_path / "plain_pred" / "001.tif", _lab(1))
    with pytest.raises(PairingError, match="no CTC result files"):
        pair_label_folders(root / "01_GT", tmp_path / "plain_pred")


def test_pair_plain_folders(tmp_path):
    gt, pr = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pr.mkdir()
    for name in ("a", "b", "c"):
        tifffile.imwrite(gt / f"{name}.tif", _lab(1))
    Image.fromarray(_lab(1)).save(pr / "a.png")
    tifffile.imwrite(pr / "b.tiff", _lab(1))
    (gt / "notes.txt").write_text("ignored")
    with pytest.raises(PairingError, match=r"1 of 3 .*c\.tif"):
        pair_label_folders(gt, pr)
    tifffile.imwrite(pr / "c.tif", _lab(1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pairs = pair_label_folders(gt, pr)
    assert [(n, p.name) for n, _, p in pairs] == [("a", "a.png"), ("b", "b.tiff"), ("c", "c.tif")]
    tifffile.imwrite(pr / "a.tif", _lab(1))
    with pytest.raises(PairingError, match="two files with the name 'a'"):
        pair_label_folders(gt, pr)
    with pytest.raises(MissingFolderError, match="nope"):
        pair_label_folders(gt, tmp_path / "nope")
    (tmp_path / "none").mkdir()
    with pytest.raises(PairingError, match="no label images"):
        pair_label_folders(tmp_path / "none", gt)


@pytest.mark.data
def test_real_dic_hela_silver_truth(dic_hela):
    ds = CTCDataset(dic_hela)
    assert ds.name == "DIC-C2DH-HeLa" and ds.sequences == ["01", "02"]
    for s in ds.sequences:
        assert len(ds.frames(s)) == 84
        pairs = ds.pairs(s)  # no gold SEG here: auto -> ST
        assert len(pairs) == 84 and ds.truths(s) == ["ST"]
    img, lab = ds.pairs("02")[40].load()
    assert img.shape == lab.shape == (512, 512) and lab.max() > 0
    with pytest.raises(MissingFolderError, match="01_GT"):
        ds.pairs("01", "GT")


@pytest.mark.data
def test_real_fluo_hela_gold_truth(fluo_hela, tmp_path):
    ds = CTCDataset(fluo_hela)
    assert ds.sequences == ["01"]
    pairs = ds.pairs("01", "GT")
    assert [p.t for p in pairs] == [13, 52, 75, 79]
    img = read_image(pairs[0].image_path)
    assert img.shape == (700, 1100)
    # write predictions as CTC results and pair them back
    for p in pairs:
        write_result(tmp_path, "01", p.t, p.read_labels())
    got = pair_label_folders(fluo_hela / "01_GT", tmp_path / "01_RES")
    assert [n for n, _, _ in got] == ["013", "052", "075", "079"]
    assert np.array_equal(read_labels(got[0][2]), read_labels(got[0][1]))


def test_3d_frames_need_axes(tmp_path):
    root = tmp_path / "D3"
    (root / "01").mkdir(parents=True)
    (root / "01_GT" / "SEG").mkdir(parents=True)
    tifffile.imwrite(root / "01" / "t000.tif", np.zeros((5, 16, 20), np.uint16), metadata=None)
    lab = np.zeros((5, 16, 20), np.uint16)
    lab[1:3, 2:6, 2:6] = 1
    tifffile.imwrite(root / "01_GT" / "SEG" / "man_seg000.tif", lab, metadata=None)
    from cellseg.io import AxesError

    with pytest.raises(AxesError, match="t000.tif.*axes="):
        CTCDataset(root).pairs("01")[0].load()
    img, got = CTCDataset(root, axes="ZYX").pairs("01")[0].load()
    assert img.shape == got.shape == (5, 16, 20) and got.max() == 1


def test_pair_plain_folders_with_what_cellseg_segment_writes(tmp_path):
    """X_labels.tif pairs with X.tif; *_overlay.png and *_objects.csv are never predictions;
    with allow_missing a missing prediction is listed in a warning, and no pair at all is an error."""
    gt, pr = tmp_path / "gt", tmp_path / "out"
    gt.mkdir()
    pr.mkdir()
    for name in ("a", "b"):
        tifffile.imwrite(gt / f"{name}.tif", _lab(1))
        tifffile.imwrite(pr / f"{name}_labels.tif", _lab(1))
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(pr / f"{name}_overlay.png")
        (pr / f"{name}_objects.csv").write_text("id\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pairs = pair_label_folders(gt, pr)
    assert [(n, g.name, p.name) for n, g, p in pairs] == [("a", "a.tif", "a_labels.tif"),
                                                          ("b", "b.tif", "b_labels.tif")]
    # an exact stem pairs too; both for one truth file is ambiguous
    tifffile.imwrite(pr / "a.tif", _lab(1))
    with pytest.raises(PairingError, match="two predictions for a.tif"):
        pair_label_folders(gt, pr)
    (pr / "a.tif").unlink()
    (pr / "b_labels.tif").unlink()
    with pytest.raises(PairingError, match=r"1 of 2 .*b\.tif.*allow_missing=True"):
        pair_label_folders(gt, pr)
    with pytest.warns(UserWarning, match=r"1 of 2 ground-truth files .* scored as empty predictions: b\.tif"):
        pairs = pair_label_folders(gt, pr, allow_missing=True)
    assert [(n, p and p.name) for n, _, p in pairs] == [("a", "a_labels.tif"), ("b", None)]
    # nothing paired: an error even with allow_missing (not a table of zeros)
    (pr / "a_labels.tif").unlink()
    tifffile.imwrite(pr / "other_labels.tif", _lab(1))
    for allow in (False, True):
        with pytest.raises(PairingError, match=r"none of the 2 ground-truth files .*X_labels.tif.*other_labels"):
            pair_label_folders(gt, pr, allow_missing=allow)


def test_one_ground_truth_file_is_not_called_files(tmp_path):
    # issue 14, item 21: "none of the 1 ground-truth files"
    gt, pr = tmp_path / "gt", tmp_path / "pr"
    gt.mkdir()
    pr.mkdir()
    tifffile.imwrite(gt / "a.tif", _lab(1))
    tifffile.imwrite(pr / "other_labels.tif", _lab(1))
    with pytest.raises(PairingError) as info:
        pair_label_folders(gt, pr)
    assert str(info.value).startswith(f"the ground-truth file in {gt} has no prediction in {pr}")
