"""Files users bring that the reader used to refuse or explain wrongly: float images with NaN or
infinite pixels, (1, 1, Y, X) arrays written without axes, channels stored last or first without
metadata, and damaged TIFFs whose tifffile log line reached stderr. Each through
``cellseg.io`` and through ``cellseg segment``."""
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from cellseg import io
from cellseg.cli import main
from cellseg.datasets.synthetic import synthetic_cells
from cellseg.io import AxesError, ImageReadError, read_image, read_labels

REPO = Path(__file__).resolve().parents[1]


def _cells(seed=3, shape=(128, 128)):
    img, lab = synthetic_cells(shape, n_cells=10, seed=seed)
    return (img * 1000).astype(np.float32), lab


def _segment(capsys, *args):
    rc = main(["segment", *map(str, args), "-q"])
    text = capsys.readouterr()
    return rc, text.out, text.err


def _failed(out, name):
    lines = [ln for ln in out.splitlines() if ln.startswith("FAILED") and name in ln]
    assert len(lines) == 1, out
    return lines[0]


# --------------------------------------------------------------------------- NaN and infinite pixels


def test_fill_nonfinite_uses_the_lowest_finite_value_of_each_frame():
    a = np.arange(2 * 2 * 4 * 5, dtype=np.float32).reshape(2, 2, 4, 5) + 10  # T C Y X
    a[0, 0, 0, 0] = np.nan
    a[0, 1, 1, :] = np.inf
    a[1, 0, 2, 2] = -np.inf
    a[1, 1] = np.nan  # a frame without a finite value: the lowest of the whole image
    filled, missing = io.fill_nonfinite(a, "TCYX")
    assert np.isfinite(filled).all() and filled.dtype == a.dtype
    assert np.array_equal(missing, ~np.isfinite(a))
    assert filled[0, 0, 0, 0] == np.nanmin(np.where(np.isfinite(a[0, 0]), a[0, 0], np.nan))
    assert (filled[0, 1, 1] == a[0, 1, 0, 0]).all()  # frame 0, channel 1: its own lowest value
    assert filled[1, 0, 2, 2] == a[1, 0, 0, 0]
    assert (filled[1, 1] == 11).all()  # a[0, 0, 0, 1]: the lowest finite value of the image
    assert np.array_equal(filled[np.isfinite(a)], a[np.isfinite(a)])
    assert np.isnan(a[0, 0, 0, 0])  # the input is left as it was


def test_fill_nonfinite_leaves_finite_and_integer_images_alone_and_refuses_all_missing():
    f = np.ones((4, 4), np.float32)
    assert io.fill_nonfinite(f, "YX")[0] is f and io.fill_nonfinite(f, "YX")[1] is None
    u = np.ones((4, 4), np.uint16)
    assert io.fill_nonfinite(u, "YX")[1] is None
    with pytest.raises(ValueError, match=r"border\.tif: every pixel is NaN or infinite"):
        io.fill_nonfinite(np.full((4, 4), np.nan), "YX", where="border.tif")


def test_read_image_returns_nan_pixels_as_stored(tmp_path):
    img, _ = _cells()
    img[:, :8] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", img)
    im = read_image(tmp_path / "nan.tif")
    assert im.axes == "YX" and np.isnan(im.data[:, :8]).all() and np.isfinite(im.data[:, 8:]).all()


def test_segment_reads_nan_and_inf_pixels_as_missing_data(tmp_path, tiny_model_path, capsys):
    img, lab = _cells()
    bad = img.copy()
    bad[:, :20] = np.nan  # the border of a registered image
    bad[0, 60], bad[1, 60] = np.inf, -np.inf
    ids = [i for i in np.unique(lab) if i and (lab == i)[:, 30:].any()]
    centres = [tuple(np.round(np.argwhere(lab == i).mean(0)).astype(int)) for i in ids]
    centres = [(y, x) for y, x in centres if 30 <= x < 120 and 4 <= y < 124][:3]
    assert centres
    for y, x in centres:  # single missing pixels inside cells: label 0 there, the cell is still found
        bad[y, x] = np.nan
    n_bad = int((~np.isfinite(bad)).sum())
    tifffile.imwrite(tmp_path / "border.tif", bad)
    out = tmp_path / "out"
    rc, text, err = _segment(capsys, tmp_path / "border.tif", "-o", out, "--model", tiny_model_path)
    assert rc == 0, text + err
    assert f"warning: {tmp_path / 'border.tif'}: {n_bad} pixels are NaN or infinite" in err
    labels = read_labels(out / "border_labels.tif")
    assert labels.shape == bad.shape and labels.max() > 0
    assert (labels[~np.isfinite(bad)] == 0).all()
    for y, x in centres:
        assert labels[y - 1:y + 2, x - 1:x + 2].max() > 0
    assert "nan" not in (out / "border_objects.csv").read_text().lower()  # intensities of filled pixels


def test_time_lapse_with_channels_and_missing_pixels(tmp_path, tiny_model_path, capsys):
    frames = [_cells(seed=s)[0] for s in (4, 5)]
    a = np.stack([np.stack([f, f[::-1]]) for f in frames])  # T C Y X
    a[1, 1, :, -10:] = np.nan  # missing in one channel of one frame
    tifffile.imwrite(tmp_path / "tl.tif", a, imagej=True, metadata={"axes": "TCYX"})
    out = tmp_path / "out"
    rc, text, err = _segment(capsys, tmp_path / "tl.tif", "-o", out, "--model", tiny_model_path, "--channel", "1")
    assert rc == 0, text + err
    assert "1280 pixels are NaN or infinite" in err
    im = read_image(out / "tl_labels.tif")
    assert im.axes == "TYX" and (im.data[1, :, -10:] == 0).all() and im.data[1].max() > 0


def test_an_image_without_a_finite_pixel_is_refused_by_name(tmp_path, tiny_model_path, capsys):
    tifffile.imwrite(tmp_path / "void.tif", np.full((64, 64), np.nan, np.float32))
    rc, text, err = _segment(capsys, tmp_path / "void.tif", "-o", tmp_path / "out", "--model", tiny_model_path)
    assert rc == 1
    assert f"{tmp_path / 'void.tif'}: every pixel is NaN or infinite" in _failed(text, "void.tif")


# --------------------------------------------------------------------------- unnamed axes of length 1


def test_unnamed_axes_of_length_one_are_dropped(tmp_path):
    img, _ = _cells()
    tifffile.imwrite(tmp_path / "q.tif", img[None, None])
    with tifffile.TiffFile(tmp_path / "q.tif") as tif:
        assert tif.series[0].axes == "QQYX"  # what the user's file looked like
    im = read_image(tmp_path / "q.tif")
    assert im.axes == "YX" and np.array_equal(im.data, img) and im.file_axes == "YX"
    assert read_image(tmp_path / "q.tif", axes="YX").axes == "YX"
    lab = np.arange(128 * 128, dtype=np.uint16).reshape(1, 1, 128, 128) % 7
    tifffile.imwrite(tmp_path / "lab.tif", lab)
    assert read_labels(tmp_path / "lab.tif").shape == (128, 128)
    # a Q of length 1 beside a real one: the real one is still ambiguous
    tifffile.imwrite(tmp_path / "q5.tif", np.stack([img] * 5)[None])
    with pytest.raises(AxesError, match=r"q5\.tif: cannot tell the axes of this 3D image of shape \(5, 128, 128\)"):
        read_image(tmp_path / "q5.tif")
    assert read_image(tmp_path / "q5.tif", axes="ZYX").data.shape == (5, 128, 128)


def test_plain_stack_stays_ambiguous(tmp_path):
    img, _ = _cells()
    tifffile.imwrite(tmp_path / "z5.tif", np.stack([img] * 5))
    with pytest.raises(AxesError) as e:
        read_image(tmp_path / "z5.tif")
    msg = str(e.value)
    assert "z5.tif" in msg and "axes='ZYX'" in msg and "CYX" not in msg and "YXC" not in msg


def test_segment_writes_labels_with_the_shape_the_reader_returns(tmp_path, tiny_model_path, capsys):
    img, _ = _cells()
    tifffile.imwrite(tmp_path / "q.tif", img[None, None])
    out = tmp_path / "out"
    for extra in ([], ["--block-size", "128", "--overwrite"]):  # whole and block-wise
        rc, text, err = _segment(capsys, tmp_path / "q.tif", "-o", out, "--model", tiny_model_path, *extra)
        assert rc == 0, text + err
        labels = read_image(out / "q_labels.tif")
        assert labels.axes == "YX" and labels.data.shape == read_image(tmp_path / "q.tif").data.shape
        assert labels.data.max() > 0


# --------------------------------------------------------------------------- channels without metadata


def test_channels_last_hint_and_override(tmp_path):
    img, _ = _cells()
    a = np.stack([img, img[::-1]], axis=-1)
    tifffile.imwrite(tmp_path / "yx2.tif", a)
    with pytest.raises(AxesError) as e:
        read_image(tmp_path / "yx2.tif")
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path / 'yx2.tif'}: cannot tell the axes")
    assert "axes='YXC'" in msg and "channel=" in msg and "'ZYX'" not in msg and "'TYX'" not in msg
    im = read_image(tmp_path / "yx2.tif", axes="YXC")
    assert im.axes == "YXC" and np.array_equal(im.data, a)
    # a file that names its axes keeps them
    tifffile.imwrite(tmp_path / "z.tif", np.stack([img] * 4), imagej=True, metadata={"axes": "ZYX"})
    with pytest.raises(AxesError, match="contradict"):
        read_image(tmp_path / "z.tif", axes="YXC")


def test_channels_first_hint_names_cyx(tmp_path):
    img, _ = _cells()
    tifffile.imwrite(tmp_path / "c2.tif", np.stack([img, img[::-1]]))
    with pytest.raises(AxesError) as e:
        read_image(tmp_path / "c2.tif")
    msg = str(e.value)
    assert "c2.tif" in msg and "axes='ZYX'" in msg and "axes='TYX'" in msg and "axes='CYX'" in msg
    assert "channel=" in msg


def test_segment_hints_name_the_channel_options(tmp_path, tiny_model_path, capsys):
    img, _ = _cells()
    tifffile.imwrite(tmp_path / "yx2.tif", np.stack([img, img[::-1]], axis=-1))
    tifffile.imwrite(tmp_path / "c2.tif", np.stack([img, img[::-1]]))
    out = tmp_path / "out"
    rc, text, err = _segment(capsys, tmp_path / "yx2.tif", tmp_path / "c2.tif", "-o", out, "--model",
                             tiny_model_path)
    assert rc == 1
    last = _failed(text, "yx2.tif")
    assert "--axes YXC" in last and "--channel" in last and "--axes ZYX" not in last and "--axes TYX" not in last
    first = _failed(text, "c2.tif")
    assert "--axes CYX" in first and "--channel" in first and "--axes ZYX" in first
    rc, text, err = _segment(capsys, tmp_path / "yx2.tif", "-o", out, "--model", tiny_model_path,
                             "--axes", "YXC", "--channel", "0")
    assert rc == 0, text + err
    assert read_labels(out / "yx2_labels.tif").shape == img.shape


# --------------------------------------------------------------------------- damaged files


def _corrupt(path):
    path.write_bytes(b"II*\x00garbage")
    return path


def test_damaged_tiff_is_named_and_tifffile_logs_nothing(tmp_path, caplog):
    p = _corrupt(tmp_path / "corrupt.tif")
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(ImageReadError, match=r"corrupt\.tif: damaged TIFF \(invalid offset"):
            read_image(p)
        from cellseg.blockrun import probe

        with pytest.raises(ValueError, match=r"corrupt\.tif"):
            probe(p)
    assert not [r for r in caplog.records if r.name.startswith("tifffile")]
    # outside cellseg's reads tifffile's log is left alone
    with caplog.at_level(logging.WARNING, logger="tifffile"):
        logging.getLogger("tifffile").warning("a message of the application's own use of tifffile")
    assert any(r.name == "tifffile" for r in caplog.records)


def test_segment_damaged_tiff_prints_only_the_failed_line(tmp_path, tiny_model_path):
    p = _corrupt(tmp_path / "corrupt.tif")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-m", "cellseg", "segment", str(p), "-o", str(tmp_path / "out"),
                          "--model", str(tiny_model_path), "-q"], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 1
    assert "tifffile" not in run.stderr and "invalid offset" not in run.stderr, run.stderr
    lines = [ln for ln in (run.stdout + run.stderr).splitlines() if ln.strip()]
    assert lines[0] == f"FAILED {p}: damaged TIFF (invalid offset to first page 1651663207)", lines
