"""The ``cellseg`` command line, run in-process through ``cellseg.cli.main``."""
import csv
import json

import numpy as np
import pytest
import tifffile

from cellseg.cli import main
from cellseg.datasets.synthetic import synthetic_cells
from cellseg.io import read_image, read_labels, write_labels


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    for i in range(2):
        img, _ = synthetic_cells((96, 128), n_cells=8, seed=20 + i)
        tifffile.imwrite(d / f"img{i}.tif", (img * 1000).astype(np.uint16))
    return d


def _outputs(d):
    """The output files in ``d``, without the record of the settings (cellseg_run.json)."""
    return sorted(p.name for p in d.iterdir() if p.name != "cellseg_run.json")


def test_segment_folder_writes_labels_csv_overlay(images, tmp_path, tiny_model_path, capsys):
    out = tmp_path / "out"
    rc = main(["segment", str(images), "-o", str(out), "--model", str(tiny_model_path), "-q"])
    assert rc == 0
    assert _outputs(out) == ["img0_labels.tif", "img0_objects.csv", "img0_overlay.png",
                             "img1_labels.tif", "img1_objects.csv", "img1_overlay.png"]
    lab = read_image(out / "img0_labels.tif")
    assert lab.axes == "YX" and lab.data.shape == (96, 128) and lab.data.max() > 0
    with open(out / "img0_objects.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(np.unique(lab.data)) - 1
    # a second run skips existing outputs (resume), --overwrite redoes them
    mtime = (out / "img0_labels.tif").stat().st_mtime_ns
    assert main(["segment", str(images), "-o", str(out), "--model", str(tiny_model_path), "-q"]) == 0
    assert "skipped" in capsys.readouterr().out
    assert (out / "img0_labels.tif").stat().st_mtime_ns == mtime


def test_bad_inputs_reported_by_name_batch_goes_on(images, tmp_path, tiny_model_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "corrupt.tif").write_bytes(b"II*\x00garbage")
    tifffile.imwrite(bad / "empty.tif", np.zeros((0, 5), np.uint8))
    tifffile.imwrite(bad / "flat.tif", np.full((40, 40), 3, np.uint16))
    tifffile.imwrite(bad / "four_d.tif", np.zeros((2, 2, 8, 8), np.uint8))
    out = tmp_path / "out"
    rc = main(["segment", str(images / "img0.tif"), str(bad), str(tmp_path / "missing.tif"), "-o", str(out),
               "--model", str(tiny_model_path), "-q"])
    assert rc == 1
    text = capsys.readouterr()
    msg = text.out + text.err
    for name in ("corrupt.tif", "empty.tif", "flat.tif", "four_d.tif", "missing.tif"):
        assert name in msg
    assert "Traceback" not in msg
    # the good file is done, no output at all for the bad ones (and no temporary files)
    assert _outputs(out) == ["img0_labels.tif", "img0_objects.csv", "img0_overlay.png"]


def test_threshold_override_and_unknown_param(images, tmp_path, tiny_model_path, capsys):
    out = tmp_path / "o"
    assert main(["segment", str(images / "img1.tif"), "-o", str(out), "--model", str(tiny_model_path),
                 "--prob-thresh", "0.9", "-q", "--no-overlay", "--no-csv"]) == 0
    assert _outputs(out) == ["img1_labels.tif"]
    assert main(["segment", str(images / "img1.tif"), "-o", str(out), "--model", str(tiny_model_path),
                 "--param", "bogus=1", "-q"]) == 2
    assert "bogus" in capsys.readouterr().err
    assert main(["segment", str(images / "img1.tif"), "-o", str(out), "--model", "no-such-model", "-q"]) == 2


def test_augment_flag_reaches_the_segmenter(images, tmp_path, tiny_model_path, monkeypatch):
    from cellseg import batch

    seen = []
    real = batch.SegmenterSpec.build

    def build(self):
        seg = real(self)
        seen.append(seg.augment)
        return seg

    monkeypatch.setattr(batch.SegmenterSpec, "build", build)
    for flag, want in ((["--augment"], True), (["--no-augment"], False), ([], False)):
        out = tmp_path / f"o{len(seen)}"
        assert main(["segment", str(images / "img1.tif"), "-o", str(out), "--model", str(tiny_model_path),
                     "-q", "--no-overlay", "--no-csv", *flag]) == 0
        assert seen[-1] is want, flag
    # both runs wrote a full label image
    a = read_labels(tmp_path / "o0" / "img1_labels.tif")
    b = read_labels(tmp_path / "o1" / "img1_labels.tif")
    assert a.data.shape == b.data.shape


def test_time_stack_keeps_axes_and_writes_ctc_layout(tmp_path, tiny_model_path):
    frames = np.stack([(synthetic_cells((64, 64), n_cells=5, seed=s)[0] * 1000).astype(np.uint16) for s in range(3)])
    tifffile.imwrite(tmp_path / "movie.tif", frames, imagej=True, metadata={"axes": "TYX"})
    out = tmp_path / "o"
    assert main(["segment", str(tmp_path / "movie.tif"), "-o", str(out), "--model", str(tiny_model_path),
                 "--ctc", "01", "-q"]) == 0
    lab = read_image(out / "movie_labels.tif")
    assert lab.axes == "TYX" and lab.data.shape == frames.shape
    masks = sorted(p.name for p in (out / "01_RES").iterdir())
    assert masks == ["mask000.tif", "mask001.tif", "mask002.tif"]
    np.testing.assert_array_equal(read_labels(out / "01_RES" / "mask001.tif"), lab.data[1])


def test_evaluate_ctc_and_plain_folders(tmp_path, capsys):
    gt_dir = tmp_path / "01_GT" / "SEG"
    res_dir = tmp_path / "01_RES"
    gt_dir.mkdir(parents=True)
    res_dir.mkdir()
    for t in range(3):
        _, lab = synthetic_cells((64, 64), n_cells=6, seed=t)
        write_labels(gt_dir / f"man_seg{t:03d}.tif", lab)
        write_labels(res_dir / f"mask{t:03d}.tif", lab)
    rc = main(["evaluate", str(tmp_path / "01_GT"), str(res_dir), "--json", str(tmp_path / "r.json")])
    assert rc == 0
    rep = json.loads((tmp_path / "r.json").read_text())
    text = json.dumps(rep)
    assert "seg" in text.lower()
    out = capsys.readouterr().out
    assert "1.000" in out
    (res_dir / "mask002.tif").unlink()
    assert main(["evaluate", str(tmp_path / "01_GT"), str(res_dir)]) == 2
    assert "man_seg002" in capsys.readouterr().err


def test_models_and_version(capsys):
    assert main(["models"]) == 0
    with pytest.raises(SystemExit):
        main(["--version"])
    assert "cellseg" in capsys.readouterr().out


def test_more_bad_inputs_progress_lines_and_hints(images, tmp_path, tiny_model_path, capsys):
    """Unreadable and unusable inputs: one FAILED line naming each file (with the option to use
    where one would help), a 'done' line per good file, no output for a bad file, exit 1."""
    bad = tmp_path / "bad"
    bad.mkdir()
    img = tifffile.imread(images / "img0.tif")
    tifffile.imwrite(bad / "big.tif", np.tile(img, (3, 3)))
    raw = (bad / "big.tif").read_bytes()
    (bad / "truncated.tif").write_bytes(raw[: len(raw) // 2])  # a valid header, half the pixels
    (bad / "big.tif").unlink()
    (bad / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    (bad / "notes.txt").write_text("not an image")
    tifffile.imwrite(bad / "stack3d.tif", np.stack([img] * 5), photometric="minisblack", metadata=None)  # axes?
    tifffile.imwrite(bad / "two_chan.tif", np.stack([img, img[::-1]]), imagej=True, metadata={"axes": "CYX"})
    nan = img.astype(np.float32)
    nan[:] = np.nan  # missing pixels are read as such; an image of nothing but missing ones is refused
    tifffile.imwrite(bad / "nan.tif", nan)
    tifffile.imwrite(bad / "one_d.tif", np.arange(50, dtype=np.uint16))
    out = tmp_path / "out"
    inputs = [str(images / "img0.tif"), str(bad), str(bad / "notes.txt"), str(images / "img1.tif")]
    rc = main(["segment", *inputs, "-o", str(out), "--model", str(tiny_model_path)])  # with progress bars
    assert rc == 1
    text = capsys.readouterr()
    lines = (text.out + text.err).splitlines()
    failed = {name: [ln for ln in lines if ln.startswith("FAILED") and name in ln]
              for name in ("truncated.tif", "garbage.png", "notes.txt", "stack3d.tif", "two_chan.tif", "nan.tif",
                           "one_d.tif")}
    assert all(len(v) == 1 for v in failed.values()), failed
    assert "--axes" in failed["stack3d.tif"][0] and "--channel" in failed["two_chan.tif"][0]
    assert "NaN" in failed["nan.tif"][0] and "unsupported file type" in failed["notes.txt"][0]
    assert sum(ln.startswith("done ") for ln in lines) == 2
    assert any("2 segmented, 0 skipped, 7 failed" in ln for ln in lines)
    assert "Traceback" not in text.out + text.err
    assert "files" in text.err  # the per-file progress bar
    assert _outputs(out) == ["img0_labels.tif", "img0_objects.csv", "img0_overlay.png",
                             "img1_labels.tif", "img1_objects.csv", "img1_overlay.png"]


def test_download_failure_is_a_message_not_a_traceback(monkeypatch, capsys):
    from cellseg.datasets import download as dl

    def offline(*a, **k):
        raise dl.DownloadError("could not reach https://example.org/x.zip (no network)")

    monkeypatch.setattr(dl, "download", offline)
    assert main(["download", "Fluo-N2DL-HeLa"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "no network" in err and "Traceback" not in err


# -- hardening (issue 14) ----------------------------------------------------------------------------
def _write_png(path, seed):
    from PIL import Image

    img, _ = synthetic_cells((96, 128), n_cells=8, seed=seed)
    Image.fromarray(np.clip(img * 255, 0, 255).astype(np.uint8)).save(path)


def test_inputs_with_the_same_stem_get_distinct_outputs(images, tmp_path, tiny_model_path, capsys):
    """a/img.tif, a/img.png and b/img.tif: all three are segmented into distinct files (their folder,
    and within one folder their extension, kept under -o); a rerun skips all three."""
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
    tifffile.imwrite(tmp_path / "a" / "img.tif", tifffile.imread(images / "img0.tif"))
    _write_png(tmp_path / "a" / "img.png", 21)
    tifffile.imwrite(tmp_path / "b" / "img.tif", tifffile.imread(images / "img1.tif"))
    out = tmp_path / "out"
    args = ["segment", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(out), "--model", str(tiny_model_path),
            "-q", "--no-csv", "--no-overlay"]
    assert main(args) == 0
    text = capsys.readouterr()
    assert "3 segmented, 0 skipped, 0 failed" in text.out
    assert "share a file name" in text.err
    got = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert got == ["a/img_png_labels.tif", "a/img_tif_labels.tif", "b/img_labels.tif", "cellseg_run.json"]
    assert not np.array_equal(read_labels(out / "a" / "img_tif_labels.tif"), read_labels(out / "b" / "img_labels.tif"))
    assert main(args) == 0
    assert "0 segmented, 3 skipped" in capsys.readouterr().out
    # names that would still clash are refused before any work
    tifffile.imwrite(tmp_path / "a" / "img_tif.tif", tifffile.imread(images / "img0.tif"))
    out2 = tmp_path / "out2"
    assert main(["segment", str(tmp_path / "a"), "-o", str(out2), "--model", str(tiny_model_path), "-q"]) == 2
    err = capsys.readouterr().err
    assert "same name" in err and "img_tif.tif" in err
    assert not out2.exists()


def test_segment_then_evaluate_plain_folders(tmp_path, tiny_model_path, capsys):
    """What `cellseg segment` writes is scored by `cellseg evaluate` against a plain GT folder:
    X_labels.tif pairs with X.tif; overlays and CSVs are ignored."""
    raw, gt = tmp_path / "raw", tmp_path / "gt"
    raw.mkdir()
    gt.mkdir()
    for i in range(2):
        img, lab = synthetic_cells((96, 128), n_cells=8, seed=30 + i)
        tifffile.imwrite(raw / f"x{i}.tif", (img * 1000).astype(np.uint16))
        write_labels(gt / f"x{i}.tif", lab)
    out = tmp_path / "out"
    assert main(["segment", str(raw), "-o", str(out), "--model", str(tiny_model_path), "-q"]) == 0
    assert (out / "x0_overlay.png").exists() and (out / "x0_objects.csv").exists()
    capsys.readouterr()
    rc = main(["evaluate", str(gt), str(out), "--json", str(tmp_path / "r.json")])
    text = capsys.readouterr()
    assert rc == 0, text.err
    assert "overlay" not in text.err and "warning" not in text.err
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["summary"]["n_images"] == 2 and [im["name"] for im in rep["images"]] == ["x0", "x1"]
    # the scores of the written labels against the truth (the tiny model is far from perfect)
    from cellseg.metrics import evaluate

    direct = evaluate([(f"x{i}", read_labels(gt / f"x{i}.tif"), read_labels(out / f"x{i}_labels.tif"))
                       for i in range(2)])
    assert rep["summary"]["n_pred"] > 0 and rep["summary"]["ap50"] > 0.1
    assert rep["summary"]["ap50"] == pytest.approx(direct.summary["ap50"]), rep["summary"]
    # a missing prediction: the hint names the command-line option
    (out / "x1_labels.tif").unlink()
    assert main(["evaluate", str(gt), str(out)]) == 2
    err = capsys.readouterr().err
    assert "--allow-missing" in err and "allow_missing=True" not in err and "x1.tif" in err
    # --allow-missing scores it as empty and says so
    assert main(["evaluate", str(gt), str(out), "--allow-missing"]) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "x1.tif" in err and "empty" in err
    # nothing paired at all: an error, not a table of zeros
    empty = tmp_path / "empty_pred"
    empty.mkdir()
    write_labels(empty / "other_labels.tif", np.zeros((96, 128), np.int32))
    assert main(["evaluate", str(gt), str(empty), "--allow-missing"]) == 2
    err = capsys.readouterr().err
    assert "none of the 2 ground-truth files" in err and "X_labels.tif" in err



def test_tile_zero_is_untiled_and_tiny_tiles_are_refused(images, tmp_path, tiny_model_path, capsys):
    """--tile 0 runs the whole image at once; a tile at or below twice the network's margin is
    refused before any work with the smallest size allowed (the tiny model: margin 24 px on a
    grid of 4, so 52 px)."""
    base = ["segment", str(images / "img0.tif"), "--model", str(tiny_model_path), "-q", "--no-csv", "--no-overlay"]
    assert main([*base, "-o", str(tmp_path / "whole")]) == 0
    assert main([*base, "-o", str(tmp_path / "zero"), "--tile", "0"]) == 0
    np.testing.assert_array_equal(read_labels(tmp_path / "zero" / "img0_labels.tif"),
                                  read_labels(tmp_path / "whole" / "img0_labels.tif"))
    capsys.readouterr()
    for tile in ("8", "48", "48,64"):
        assert main([*base, "-o", str(tmp_path / "small"), "--tile", tile]) == 2, tile
        err = capsys.readouterr().err
        assert "--tile" in err and "at least 52 px" in err and "Traceback" not in err
    assert not (tmp_path / "small").exists()
    assert main([*base, "-o", str(tmp_path / "t52"), "--tile", "52"]) == 0
    with pytest.raises(SystemExit):
        main([*base, "-o", str(tmp_path / "x"), "--tile", "big"])


def test_large_frames_are_tiled_without_tile_and_tile_zero_runs_them_whole(images, tmp_path, tiny_model_path,
                                                                           monkeypatch, capsys):
    """Without --tile a frame above the segmenter's pixel budget (made small here) goes through the
    network in tiles within the budget; --tile 0 runs it whole; the labels are the same. The help
    states the budget."""
    from cellseg import segmenter
    from cellseg.models.model import CellsegModel

    with pytest.raises(SystemExit):
        main(["segment", "--help"])
    assert f"tiles of at most {segmenter.MAX_PIXELS / 1e6:g} Mpx" in " ".join(capsys.readouterr().out.split())
    monkeypatch.setattr(segmenter, "MAX_PIXELS", 5000)
    calls = []
    real = CellsegModel.predict

    def recording(self, image, *args, **kwargs):
        calls.append(image.shape[-2:])
        return real(self, image, *args, **kwargs)

    monkeypatch.setattr(CellsegModel, "predict", recording)
    base = ["segment", str(images / "img0.tif"), "--model", str(tiny_model_path), "-q", "--no-csv", "--no-overlay"]
    assert main([*base, "-o", str(tmp_path / "auto")]) == 0
    assert len(calls) > 1 and max(h * w for h, w in calls) <= 5000
    calls.clear()
    assert main([*base, "-o", str(tmp_path / "zero"), "--tile", "0"]) == 0
    assert calls == [(96, 128)]
    np.testing.assert_array_equal(read_labels(tmp_path / "auto" / "img0_labels.tif").data,
                                  read_labels(tmp_path / "zero" / "img0_labels.tif").data)


def test_unusable_output_folder_is_refused_before_any_work(images, tmp_path, tiny_model_path, capsys, monkeypatch):
    from cellseg import batch

    built = []
    monkeypatch.setattr(batch.SegmenterSpec, "build", lambda self: built.append(self))
    a_file = tmp_path / "results.txt"
    a_file.write_text("not a folder")
    for out in (a_file, a_file / "sub", a_file / "sub" / "deeper"):
        rc = main(["segment", str(images), "-o", str(out), "--model", str(tiny_model_path), "-q"])
        err = capsys.readouterr().err
        assert rc == 2 and "error:" in err and str(a_file) in err and "is a file" in err, err
        assert "Traceback" not in err
    assert built == []


def test_write_failures_named_full_disk_stops_the_batch(images, tmp_path, tiny_model_path, capsys, monkeypatch):
    import errno

    from cellseg import visualize

    out = tmp_path / "out"
    real_save_png = visualize.save_png

    def deny_img0(path, rgb):  # a file-specific failure: reported, the batch goes on
        if "img0" in str(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_save_png(path, rgb)

    monkeypatch.setattr(visualize, "save_png", deny_img0)
    rc = main(["segment", str(images), "-o", str(out), "--model", str(tiny_model_path), "-q"])
    text = capsys.readouterr()
    assert rc == 1
    failed = [ln for ln in text.out.splitlines() if ln.startswith("FAILED")]
    assert len(failed) == 1 and str(out / "img0_overlay.png") in failed[0] and "Permission denied" in failed[0]
    assert "1 segmented, 0 skipped, 1 failed" in text.out and "Traceback" not in text.out + text.err
    monkeypatch.setattr(visualize, "save_png", real_save_png)

    # a full disk: the write fails (no file left behind), the path is named and the batch stops
    import tifffile as tf

    def full(path, *a, **k):
        with open(path, "wb") as f:
            f.write(b"II*\x00partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tf, "imwrite", full)
    out2 = tmp_path / "out2"
    rc = main(["segment", str(images), "-o", str(out2), "--model", str(tiny_model_path), "-q"])
    text = capsys.readouterr()
    assert rc == 1
    failed = [ln for ln in text.out.splitlines() if ln.startswith("FAILED")]
    assert len(failed) == 1 and str(out2 / "img0_labels.tif") in failed[0] and "No space left" in failed[0]
    assert "stopped" in text.err and "1 input not attempted" in text.err
    assert "0 segmented, 0 skipped, 1 failed, 0 not found, 1 not attempted" in text.out
    assert "Traceback" not in text.out + text.err
    assert list(out2.iterdir()) == []


def test_frame_bar_for_stacks_without_tiles(tmp_path, tiny_model_path, capsys):
    frames = np.stack([(synthetic_cells((64, 64), n_cells=5, seed=s)[0] * 1000).astype(np.uint16) for s in range(3)])
    tifffile.imwrite(tmp_path / "movie.tif", frames, imagej=True, metadata={"axes": "TYX"})
    assert main(["segment", str(tmp_path / "movie.tif"), "-o", str(tmp_path / "o"), "--model",
                 str(tiny_model_path), "--no-csv", "--no-overlay"]) == 0
    err = capsys.readouterr().err
    assert "frames" in err and "/3" in err and "tile" not in err


def _with_warnings(monkeypatch, messages):
    """Make every SegmentationResult carry ``messages`` (as a segmenter that warns would)."""
    from cellseg.segmenter import Segmenter

    real = Segmenter.iter_segment

    def iter_segment(self, *a, **k):
        res = yield from real(self, *a, **k)
        res.warnings.extend(messages)
        return res

    monkeypatch.setattr(Segmenter, "iter_segment", iter_segment)


def test_result_warnings_are_printed_per_file(images, tmp_path, tiny_model_path, capsys, monkeypatch):
    _with_warnings(monkeypatch, ["the image looks unlike the model's training data"])
    for quiet in (["-q"], []):
        rc = main(["segment", str(images), "-o", str(tmp_path / f"o{len(quiet)}"), "--model", str(tiny_model_path),
                   "--no-csv", "--no-overlay", *quiet])
        assert rc == 0
        err = capsys.readouterr().err
        for f in ("img0.tif", "img1.tif"):
            line = f"warning: {images / f}: the image looks unlike the model's training data"
            assert line in err.splitlines(), err


def test_ctc_layout_refuses_two_sequences_instead_of_overwriting(tmp_path, tiny_model_path, capsys):
    for sub, seed in (("a", 1), ("b", 2)):
        (tmp_path / sub).mkdir()
        img, _ = synthetic_cells((64, 64), n_cells=5, seed=seed)
        tifffile.imwrite(tmp_path / sub / "t000.tif", (img * 1000).astype(np.uint16))
    out = tmp_path / "o"
    rc = main(["segment", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(out), "--model", str(tiny_model_path),
               "--ctc", "01", "-q", "--no-csv", "--no-overlay"])
    err = capsys.readouterr().err
    assert rc == 1 and "FAILED writing the CTC results" in err and "would both write" in err
    # the first input's mask is there and is its own
    np.testing.assert_array_equal(read_labels(out / "01_RES" / "mask000.tif"),
                                  read_labels(out / "a" / "t000_labels.tif"))


def test_huge_finite_float_image_is_segmented(tmp_path, tiny_model_path, capsys):
    # issue 14, item 9: a float64 image with values near 1e302 is finite and segments like its scaled copy
    img, _ = synthetic_cells((96, 128), n_cells=8, seed=21)
    tifffile.imwrite(tmp_path / "small.tif", img.astype(np.float64))
    tifffile.imwrite(tmp_path / "huge.tif", img.astype(np.float64) * 1e302)
    out = tmp_path / "out"
    rc = main(["segment", str(tmp_path / "small.tif"), str(tmp_path / "huge.tif"), "-o", str(out),
               "--model", str(tiny_model_path), "-q"])
    text = capsys.readouterr()
    assert rc == 0, text.out + text.err
    assert "NaN" not in text.out + text.err
    small, huge = read_labels(out / "small_labels.tif"), read_labels(out / "huge_labels.tif")
    assert huge.max() > 0 and np.array_equal(small, huge)


def test_evaluate_accepts_imagej_float_labels_refuses_fractions(tmp_path, capsys):
    # issue 14, item 11: Fiji exports label images as float32
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    _, lab = synthetic_cells((64, 64), n_cells=6, seed=4)
    tifffile.imwrite(gt / "a.tif", lab.astype(np.float32), imagej=True)
    write_labels(pred / "a_labels.tif", lab)
    assert main(["evaluate", str(gt), str(pred)]) == 0
    assert "1.000" in capsys.readouterr().out
    tifffile.imwrite(gt / "a.tif", lab.astype(np.float32) / 3, imagej=True)
    assert main(["evaluate", str(gt), str(pred)]) == 2
    err = capsys.readouterr().err
    assert "a.tif" in err and "whole numbers" in err and "Traceback" not in err


def test_evaluate_refuses_binary_and_semantic_masks(tmp_path, capsys):
    # issue 14, item 10: the check training makes is shared; a binary mask is not scored as 0.000
    from scipy import ndimage as ndi

    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    _, lab = synthetic_cells((96, 96), n_cells=10, seed=6)
    edges = ndi.maximum_filter(lab, 3) != ndi.minimum_filter(lab, 3)
    write_labels(gt / "a.tif", lab)
    write_labels(pred / "a_labels.tif", np.where((lab > 0) & ~edges, 255, 0))  # semantic: one id, many blobs
    assert main(["evaluate", str(gt), str(pred)]) == 2
    err = capsys.readouterr().err
    assert "a_labels.tif" in err and "binary or semantic mask" in err and "Traceback" not in err
    # a ground truth of two 0/1 blobs per image (too few blobs for the per-image rule): the set is refused
    two = np.zeros((64, 64), np.uint8)
    two[5:15, 5:15] = two[40:50, 40:50] = 1
    inst = two.astype(np.int32)
    inst[40:50, 40:50] = 2
    for name in ("b", "c"):
        write_labels(gt / f"{name}.tif", two)
        write_labels(pred / f"{name}_labels.tif", inst)
    (gt / "a.tif").unlink()
    (pred / "a_labels.tif").unlink()
    assert main(["evaluate", str(gt), str(pred)]) == 2
    err = capsys.readouterr().err
    assert "binary masks" in err and "ground-truth" in err
    # the instance version scores 1
    for name in ("b", "c"):
        write_labels(gt / f"{name}.tif", inst)
    assert main(["evaluate", str(gt), str(pred)]) == 0
    assert "1.000" in capsys.readouterr().out


@pytest.mark.parametrize("opts,named", [
    (["--prob-thresh", "5"], "--prob-thresh 5: fg_thresh must be in [0, 1)"),
    (["--prob-thresh", "-1"], "--prob-thresh -1: fg_thresh must be in [0, 1)"),
    (["--param", "h=-2"], "--param h=-2: h must be > 0"),
    (["--param", "min_size=x"], "--param min_size=x:"),
])
def test_out_of_range_thresholds_are_refused_before_any_work(images, tmp_path, tiny_model_path, capsys,
                                                             opts, named):
    # issue 14, item 13: the ranges are those of the representation's Params
    out = tmp_path / "o"
    assert main(["segment", str(images / "img1.tif"), "-o", str(out), "--model", str(tiny_model_path), "-q",
                 *opts]) == 2
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err
    assert not out.exists()


def test_flows_probability_threshold_range():
    from cellseg.representations.flows import FlowsParams

    for bad in (5.0, -1.0, 1.0, float("nan")):
        with pytest.raises(ValueError, match=r"prob_thresh must be in \[0, 1\)"):
            FlowsParams(prob_thresh=bad)
    assert FlowsParams(prob_thresh=0.0).prob_thresh == 0.0


def test_ctrl_c_in_segment_is_a_message_and_exit_130(images, tmp_path, tiny_model_path, capsys, monkeypatch):
    # issue 14, item 15: no traceback; what was finished is kept and a rerun resumes
    from cellseg import batch

    real = batch.segment_file
    calls = []

    def interrupted_on_second(*a, **kw):
        calls.append(a[1])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(batch, "segment_file", interrupted_on_second)
    out = tmp_path / "out"
    rc = main(["segment", str(images), "-o", str(out), "--model", str(tiny_model_path), "-q"])
    text = capsys.readouterr()
    assert rc == 130
    assert "interrupted after 1 file of 2; rerun" in text.err
    assert "Traceback" not in text.out + text.err
    assert sorted(p.name for p in out.iterdir()) == ["cellseg_run.json",  # recorded on the way out
                                                     "img0_labels.tif", "img0_objects.csv", "img0_overlay.png"]
    monkeypatch.setattr(batch, "segment_file", real)
    assert main(["segment", str(images), "-o", str(out), "--model", str(tiny_model_path), "-q"]) == 0
    assert "skipped" in capsys.readouterr().out and (out / "img1_labels.tif").exists()


def test_non_model_pt_file_is_named_not_a_cellseg_model(images, tmp_path, capsys):
    # issue 14, item 16: no relay of torch's "retry with weights_only=False" advice
    import torch

    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    for name in ("module.pt", "junk.pt"):
        rc = main(["segment", str(images / "img0.tif"), "-o", str(tmp_path / "o"), "--model",
                   str(tmp_path / name), "-q"])
        err = capsys.readouterr().err
        assert rc == 2
        assert f"{name}: not a cellseg model file" in err
        assert "weights_only" not in err and "Traceback" not in err


def test_complete_rerun_removes_temporaries_of_a_killed_run(images, tmp_path, tiny_model_path, capsys):
    # issue 14, item 14: a SIGKILL left .img0_overlay.png.*.part.png; a rerun (all skipped) removes it
    from tests.test_files import _killed_writer_leaves

    out = tmp_path / "out"
    args = ["segment", str(images), "-o", str(out), "--model", str(tiny_model_path), "-q"]
    assert main(args) == 0
    stale = _killed_writer_leaves(out, "img0_overlay.png")
    capsys.readouterr()
    assert main(args) == 0
    assert not stale.exists()
    assert "removed 1 temporary file that an interrupted earlier run left" in capsys.readouterr().err
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


def test_time_lapse_outputs_keep_the_frame_interval_and_done_says_what_it_counts(tmp_path, tiny_model_path,
                                                                               capsys):
    # issue 14, item 17: the frame interval survives; the done line separates per-frame objects from tracks
    frames = np.stack([(synthetic_cells((64, 64), n_cells=5, seed=s)[0] * 1000).astype(np.uint16) for s in range(3)])
    tifffile.imwrite(tmp_path / "movie.tif", frames, imagej=True,
                     metadata={"axes": "TYX", "finterval": 2.5, "tunit": "min"})
    for link in (False, True):
        out = tmp_path / f"o{link}"
        assert main(["segment", str(tmp_path / "movie.tif"), "-o", str(out), "--model", str(tiny_model_path),
                     "-q"] + (["--link"] if link else [])) == 0
        lab = read_image(out / "movie_labels.tif")
        assert lab.axes == "TYX" and lab.frame_interval == pytest.approx(150.0)
        with open(out / "movie_objects.csv") as fh:
            rows = list(csv.DictReader(fh))
        assert "centroid_z" not in rows[0]
        done = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("done")][0]
        assert f": {len(rows)} objects in 3 frames (one CSV row each)" in done
        tracks = len(np.unique(lab.data)) - 1
        assert (f", {tracks} cells tracked over the frames" in done) == link


def test_rerun_with_other_settings_is_refused_not_skipped(images, tmp_path, tiny_model_path, capsys):
    # issue 14, item 12: a rerun with other thresholds (or another model) skipped every image as "outputs exist"
    import shutil

    from cellseg.models import load_model

    model = tmp_path / "m.pt"
    shutil.copy(tiny_model_path, model)
    out = tmp_path / "out"
    base = ["segment", str(images), "-o", str(out), "--model", str(model), "-q"]
    assert main(base) == 0
    record = json.loads((out / "cellseg_run.json").read_text())
    assert sorted(record["outputs"]) == ["img0", "img1"]
    (sid,) = set(record["outputs"].values())
    assert record["settings"][sid]["model"] == str(model) and "fg_thresh" in record["settings"][sid]["decode"]
    capsys.readouterr()
    mtime = (out / "img0_labels.tif").stat().st_mtime_ns
    # other thresholds: refused before any work, naming what changed
    assert main(base + ["--prob-thresh", "0.8"]) == 2
    err = capsys.readouterr().err
    assert "holds the outputs of 2 of these inputs (img0, img1) made with other settings" in err
    assert "decode fg_thresh: was " in err and "now 0.8" in err and "--overwrite" in err
    assert (out / "img0_labels.tif").stat().st_mtime_ns == mtime
    # --overwrite redoes them and records the new settings; a rerun with them resumes (skips)
    assert main(base + ["--prob-thresh", "0.8", "--overwrite"]) == 0
    assert main(base + ["--prob-thresh", "0.8"]) == 0
    assert capsys.readouterr().out.count("outputs exist, made with the same settings") == 2
    # the same model file with other weights is another model
    m = load_model(model)
    with torch_no_grad():
        next(iter(m.network.parameters())).add_(0.01)
    m.save(model)
    assert main(base + ["--prob-thresh", "0.8"]) == 2
    assert "is not the model of that name used then" in capsys.readouterr().err
    # outputs without a record (an earlier version, the record deleted): skipped as before, and said so
    (out / "cellseg_run.json").unlink()
    assert main(base) == 0
    assert capsys.readouterr().out.count("made by a run that did not record its settings") == 2


def torch_no_grad():
    import torch

    return torch.no_grad()


def test_models_marks_the_default_and_every_entry_states_its_test_figure(capsys):
    # issue 14, item 21: no default marked; nuclei-flows lacked its test figure
    import re

    from cellseg.models import default_model_name, list_models, model_card, model_info

    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    default = default_model_name()
    assert [ln.split()[0] for ln in lines if ln.split("  ")[0].endswith(" (default)")] == [default]
    assert lines[-1].startswith("(default): used when")
    for name in list_models():
        summary = model_info(name)["summary"]
        m = re.search(r"test (AP@0\.5|SEG) (0\.\d{3})", summary)
        assert m, f"{name}: {summary!r} states no test figure"
        assert m.group(2) in model_card(name), name


def test_small_things_of_the_first_week(images, tmp_path, tiny_model_path, capsys):
    # issue 14, item 21: hints, warnings and notes a new user needs
    from cellseg.io import write_image

    img = tifffile.imread(images / "img0.tif")
    src = tmp_path / "src"
    src.mkdir()
    # a 4-plane planar stack that tifffile calls colour samples (SYX): the hint names --axes
    tifffile.imwrite(src / "planes.tif", np.stack([img, img[::-1], img[:, ::-1], img[::-1, ::-1]]),
                     planarconfig="separate", photometric="minisblack")
    # --axes TYX against ImageJ metadata that says ZYX: accepted, with a warning
    tifffile.imwrite(tmp_path / "zstack.tif", np.stack([img] * 3), imagej=True, metadata={"axes": "ZYX"})
    # a channel named DAPI, asked for as dapi
    write_image(tmp_path / "two.ome.tif", np.stack([img, img[::-1]]), "CYX", channel_names=["DAPI", "GFP"])
    # a subfolder and other files in an input folder: said once
    (src / "sub").mkdir()
    (src / "sub" / "deeper.tif").write_bytes(b"")
    (src / "notes.txt").write_text("x")
    (src / "table.csv").write_text("x")
    out = tmp_path / "out"
    rc = main(["segment", str(src), "-o", str(out), "--model", str(tiny_model_path), "-q"])
    text = capsys.readouterr()
    assert rc == 1
    failed = [ln for ln in text.out.splitlines() if ln.startswith("FAILED")]
    assert len(failed) == 1 and "planes.tif" in failed[0]
    assert "if its 4 planes are Z slices or time points rather than channels, pass --axes ZYX" in failed[0]
    notes = [ln for ln in text.err.splitlines() if ln.startswith("note: left out")]
    assert notes == ["note: left out 1 subfolder and 2 files of other types (.csv, .txt) in the input folder: only "
                     ".tif, .tiff, .png and .jpg/.jpeg files directly in a folder are segmented (for subfolders give "
                     "them, or a "
                     "pattern such as 'DIR/**/*.tif')"]
    assert main(["segment", str(tmp_path / "zstack.tif"), "-o", str(out), "--model", str(tiny_model_path), "-q",
                 "--axes", "TYX"]) == 0
    err = capsys.readouterr().err
    assert "warning: " in err and "axes TYX override the axes the file declares (ZYX)" in err
    assert read_image(out / "zstack_labels.tif").axes == "TYX"
    assert main(["segment", str(tmp_path / "two.ome.tif"), "-o", str(out), "--model", str(tiny_model_path), "-q",
                 "--channel", "dapi"]) == 0
    capsys.readouterr()
    # an empty (0 x 10) TIFF is empty, not "truncated"
    tifffile.imwrite(tmp_path / "empty.tif", np.zeros((0, 10), np.uint8))
    assert main(["segment", str(tmp_path / "empty.tif"), "-o", str(out), "--model", str(tiny_model_path),
                 "-q"]) == 1
    failed = capsys.readouterr().out
    assert "image is empty" in failed and "truncated" not in failed


class _Recorder:
    """A Reporter that keeps every line: ``(text, to stderr)``."""

    def __init__(self):
        self.lines, self.n_files, self.events = [], None, 0

    def print(self, text, err=False):
        self.lines.append((text, err))

    say = print

    def begin(self, n_files):
        self.n_files = n_files

    def progress(self, event):
        self.events += 1

    def file_done(self, lines):
        self.lines += list(lines)

    def end(self):
        pass


def test_run_segment_from_python_says_what_the_command_line_prints(images, tmp_path, tiny_model_path, capsys):
    """The run behind ``cellseg segment``, called with options and a reporter, gives the same lines."""
    from cellseg.segment_run import SegmentOptions, SegmentUsageError, run_segment

    rec = _Recorder()
    opts = SegmentOptions(inputs=(str(images / "img0.tif"), str(images / "nope.tif")), out=str(tmp_path / "o"),
                          model=str(tiny_model_path), decode_flags={})
    assert run_segment(opts, rec) == 1
    assert rec.n_files == 1 and rec.events > 0
    assert rec.lines[0] == (f"error: {images / 'nope.tif'} (no such file or folder)", True)
    assert any(t.startswith(f"done {images / 'img0.tif'}: ") and not e for t, e in rec.lines)
    assert rec.lines[-1] == (f"1 segmented, 0 skipped, 0 failed, 1 not found; outputs in {tmp_path / 'o'}", False)
    # the command line prints the same lines (with --quiet, nothing else)
    capsys.readouterr()
    assert main(["segment", str(images / "img0.tif"), str(images / "nope.tif"), "-o", str(tmp_path / "c"),
                 "--model", str(tiny_model_path), "-q"]) == 1
    cap = capsys.readouterr()
    printed = [(t, True) for t in cap.err.splitlines()] + [(t, False) for t in cap.out.splitlines()]
    want = [(t.replace(str(tmp_path / "o"), str(tmp_path / "c")), e) for t, e in rec.lines]
    assert sorted(printed) == sorted(want)
    with pytest.raises(SegmentUsageError, match="--param expects NAME=VALUE"):
        run_segment(SegmentOptions(inputs=(str(images),), out=str(tmp_path / "p"), model=str(tiny_model_path),
                                   param=("fg_thresh",)), rec)


def test_a_folder_of_jpeg_images_is_segmented(tmp_path, tiny_model_path, capsys):
    """Histology and camera images often come as JPEG: a folder of them is an input like TIFF and PNG."""
    from PIL import Image

    src = tmp_path / "jpegs"
    src.mkdir()
    for i, name in enumerate(("a.jpg", "b.JPEG")):
        img, _ = synthetic_cells((96, 128), n_cells=8, seed=40 + i)
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(src / name, quality=95)
    out = tmp_path / "out"
    assert main(["segment", str(src), "-o", str(out), "--model", str(tiny_model_path), "-q"]) == 0
    assert "left out" not in capsys.readouterr().err
    for stem in ("a", "b"):
        lab = read_image(out / f"{stem}_labels.tif")
        assert lab.data.shape == (96, 128) and lab.data.max() > 0
