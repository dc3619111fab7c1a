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
    return sorted(p.name for p in d.iterdir())


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
    nan[3, 3] = np.nan
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
