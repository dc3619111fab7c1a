import os

import numpy as np
import pytest
import tifffile
from PIL import Image

from cellseg import io
from cellseg.io import AxesError, ImageReadError, read_image, read_labels, transpose_axes, write_image, write_labels
from cellseg.labels import LabelError

RNG = np.random.default_rng(0)


def _rand(shape, dtype):
    if np.dtype(dtype).kind == "f":
        return RNG.random(shape).astype(dtype)
    info = np.iinfo(dtype)
    return RNG.integers(max(info.min, -1000), min(info.max, 60000), size=shape, endpoint=True).astype(dtype)


# --------------------------------------------------------------------------- reading TIFF flavours


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.uint32, np.float32])
def test_2d_plain_tiff(tmp_path, dtype):
    a = _rand((20, 30), dtype)
    p = tmp_path / "a.tif"
    tifffile.imwrite(p, a, metadata=None)
    im = read_image(p)
    assert im.axes == "YX" and im.data.dtype == dtype and np.array_equal(im.data, a)
    assert im.pixel_size is None and im.channel_names is None and im.path == p


@pytest.mark.parametrize("axes,shape", [("ZYX", (4, 20, 30)), ("TYX", (3, 20, 30)), ("CYX", (2, 20, 30)),
                                        ("TZCYX", (2, 3, 2, 16, 18))])
def test_imagej_hyperstacks(tmp_path, axes, shape):
    a = _rand(shape, np.uint16)
    p = tmp_path / "ij.tif"
    tifffile.imwrite(p, a, imagej=True, metadata={"axes": axes})
    im = read_image(p)
    assert im.axes == axes and np.array_equal(im.data, a)


def test_imagej_spacing_and_units(tmp_path):
    p = tmp_path / "z.tif"
    tifffile.imwrite(p, _rand((5, 20, 30), np.uint8), imagej=True, resolution=(1 / 0.25, 1 / 0.25),
                     metadata={"axes": "ZYX", "spacing": 1.5, "unit": "micron"})
    im = read_image(p)
    assert im.axes == "ZYX"
    assert im.pixel_size == pytest.approx({"Z": 1.5, "Y": 0.25, "X": 0.25})
    # no unit: the sizes are not known in micrometres
    q = tmp_path / "nounit.tif"
    tifffile.imwrite(q, _rand((5, 20, 30), np.uint8), imagej=True, resolution=(4, 4), metadata={"axes": "ZYX"})
    assert read_image(q).pixel_size is None


def test_rgb_samples_become_c(tmp_path):
    a = _rand((20, 30, 3), np.uint8)
    p = tmp_path / "rgb.tif"
    tifffile.imwrite(p, a, photometric="rgb")
    im = read_image(p)
    assert im.axes == "YXC" and np.array_equal(im.data, a)
    assert read_image(p, axes="YXS").axes == "YXC"
    with pytest.raises(AxesError, match="rgb.tif.*contradict"):
        read_image(p, axes="YXT")


def test_ome_tiff_axes_sizes_and_channel_names(tmp_path):
    a = _rand((3, 20, 30), np.uint16)
    p = tmp_path / "x.ome.tif"
    tifffile.imwrite(p, a, ome=True, metadata={"axes": "CYX", "PhysicalSizeX": 0.3, "PhysicalSizeY": 0.4,
                                               "Channel": {"Name": ["DAPI", "GFP", "RFP"]}})
    im = read_image(p)
    assert im.axes == "CYX" and np.array_equal(im.data, a)
    assert im.pixel_size == pytest.approx({"X": 0.3, "Y": 0.4})
    assert im.channel_names == ["DAPI", "GFP", "RFP"]
    b = _rand((2, 4, 20, 30), np.float32)
    q = tmp_path / "z.ome.tif"
    tifffile.imwrite(q, b, ome=True, metadata={"axes": "CZYX", "PhysicalSizeX": 250, "PhysicalSizeXUnit": "nm",
                                               "PhysicalSizeY": 250, "PhysicalSizeYUnit": "nm",
                                               "PhysicalSizeZ": 1.0})
    im = read_image(q)
    assert im.axes == "CZYX" and im.data.dtype == np.float32
    assert im.pixel_size == pytest.approx({"X": 0.25, "Y": 0.25, "Z": 1.0})


def test_resolution_in_centimetres_is_used_inches_ignored(tmp_path):
    p = tmp_path / "cm.tif"
    tifffile.imwrite(p, _rand((8, 9), np.uint8), resolution=(1e4 / 0.65, 1e4 / 0.65), resolutionunit="CENTIMETER")
    assert read_image(p).pixel_size == pytest.approx({"X": 0.65, "Y": 0.65})
    q = tmp_path / "inch.tif"
    tifffile.imwrite(q, _rand((8, 9), np.uint8), resolution=(72, 72), resolutionunit="INCH")
    assert read_image(q).pixel_size is None


@pytest.mark.parametrize("meta", [None, {}])
def test_plain_stack_is_ambiguous_unless_axes_given(tmp_path, meta):
    a = _rand((5, 20, 30), np.uint16)
    p = tmp_path / "stack.tif"
    tifffile.imwrite(p, a, metadata=meta)
    with pytest.raises(AxesError, match=r"stack\.tif.*axes="):
        read_image(p)
    im = read_image(p, axes="tyx")
    assert im.axes == "TYX" and np.array_equal(im.data, a)


def test_planar_three_plane_stack(tmp_path):
    """tifffile stores (3|4, Y, X) arrays without metadata as planar RGB (axes SYX)."""
    a = np.zeros((4, 20, 30), np.uint16)
    a[1, 2:5, 2:5] = 7
    p = tmp_path / "planar.tif"
    with pytest.warns(DeprecationWarning):
        tifffile.imwrite(p, a, metadata=None)
    assert read_image(p).axes == "CYX"
    assert read_image(p, axes="ZYX").axes == "ZYX"  # ambiguous: the override may call it a stack
    assert np.array_equal(read_labels(p), a)  # labels are never colour planes


def test_singleton_axes_are_squeezed(tmp_path):
    p = tmp_path / "one.tif"
    tifffile.imwrite(p, _rand((1, 1, 20, 30), np.uint8), imagej=True, metadata={"axes": "TZYX"})
    assert read_image(p).axes == "YX"


@pytest.mark.parametrize("axes,match", [("YX", "2 letters but the image has 3"), ("ZZX", "repeated"),
                                        ("QYX", "unknown axis"), ("YXZ", "contradict"), ("ZTY", "must contain Y and X"),
                                        (3, "must be a string")])
def test_axes_override_validated(tmp_path, axes, match):
    p = tmp_path / "s.tif"
    tifffile.imwrite(p, _rand((4, 20, 30), np.uint8), imagej=True, metadata={"axes": "ZYX"})
    with pytest.raises(AxesError, match=match) as e:
        read_image(p, axes=axes)
    assert "s.tif" in str(e.value)


def test_axes_override_renames_and_drops_pixel_size(tmp_path):
    p = tmp_path / "s.tif"
    tifffile.imwrite(p, _rand((4, 20, 30), np.uint8), imagej=True, resolution=(2, 2),
                     metadata={"axes": "ZYX", "spacing": 3.0, "unit": "um"})
    im = read_image(p, axes="TYX")
    assert im.axes == "TYX" and im.pixel_size == pytest.approx({"Y": 0.5, "X": 0.5})


# --------------------------------------------------------------------------- PNG / JPEG


def test_png_grey_rgba_equal_channels_and_colour(tmp_path):
    g = _rand((20, 30), np.uint8)
    Image.fromarray(g).save(tmp_path / "g.png")
    rgba = np.dstack([g, g, g, np.full_like(g, 255)])
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    col = _rand((20, 30, 3), np.uint8)
    Image.fromarray(col).save(tmp_path / "c.png")
    g16 = _rand((20, 30), np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    for name in ("g.png", "rgba.png"):
        im = read_image(tmp_path / name)
        assert im.axes == "YX" and np.array_equal(im.data, g), name
    im = read_image(tmp_path / "c.png")
    assert im.axes == "YXC" and np.array_equal(im.data, col)
    im = read_image(tmp_path / "g16.png")
    assert im.axes == "YX" and np.array_equal(im.data.astype(np.uint16), g16)
    Image.fromarray(g).save(tmp_path / "g.jpg", quality=95)
    im = read_image(tmp_path / "g.jpg")
    assert im.axes == "YX" and np.abs(im.data.astype(int) - g).mean() < 40


def test_png_labels(tmp_path):
    lab = np.zeros((20, 30), np.uint16)
    lab[2:5, 3:9] = 1
    lab[10:15, 10:20] = 300
    Image.fromarray(lab).save(tmp_path / "l.png")
    out = read_labels(tmp_path / "l.png")
    assert out.dtype == np.int32 and np.array_equal(out, lab)
    Image.fromarray(_rand((20, 30, 3), np.uint8)).save(tmp_path / "col.png")
    with pytest.raises(LabelError, match="col.png.*single-channel"):
        read_labels(tmp_path / "col.png")


# --------------------------------------------------------------------------- labels round trip


@pytest.mark.parametrize("top,disk", [(200, np.uint8), (300, np.uint16), (70000, np.uint32)])
@pytest.mark.parametrize("axes,shape", [("YX", (20, 30)), ("ZYX", (3, 20, 30)), ("TYX", (2, 20, 30)),
                                        ("TZYX", (2, 3, 10, 12))])
def test_labels_round_trip(tmp_path, top, disk, axes, shape):
    lab = RNG.integers(0, 5, size=shape).astype(np.int32)
    lab.flat[0] = top
    p = write_labels(tmp_path / "lab.tif", lab, axes=axes)
    with tifffile.TiffFile(p) as t:
        assert t.series[0].dtype == disk
        assert t.pages[0].compression != 1  # compressed
        assert t.is_imagej == (disk != np.uint32) and t.is_ome == (disk == np.uint32)
    back = read_labels(p)
    assert back.dtype == np.int32 and np.array_equal(back, lab)
    assert read_image(p).axes == axes
    assert not [f for f in os.listdir(tmp_path) if f != "lab.tif"]  # no temporary left behind


def test_labels_pixel_size_round_trip_and_forced_dtype(tmp_path):
    lab = np.zeros((3, 20, 30), np.int32)
    lab[1, 5:9, 5:9] = 7
    p = write_labels(tmp_path / "l.tif", lab, axes="ZYX", pixel_size={"Z": 2.0, "y": 0.5, "X": 0.5}, dtype="uint16")
    im = read_image(p)
    assert im.data.dtype == np.uint16 and im.pixel_size == pytest.approx({"Z": 2.0, "Y": 0.5, "X": 0.5})
    with pytest.raises(LabelError, match="does not fit into uint8"):
        write_labels(tmp_path / "m.tif", lab * 100, dtype=np.uint8, axes="ZYX")
    with pytest.raises(ValueError, match="uint8, uint16 or uint32"):
        write_labels(tmp_path / "m.tif", lab, dtype=np.int32, axes="ZYX")
    assert not (tmp_path / "m.tif").exists()


@pytest.mark.parametrize("bad,kw,exc,match", [
    (np.full((4, 4), 1.5, np.float32), {}, LabelError, "whole numbers"),
    (-np.ones((4, 4), np.int32), {}, LabelError, "non-negative"),
    (np.zeros((4, 4), np.int32), {"axes": "ZYX"}, AxesError, "3 letters"),
    (np.zeros((2, 4, 4), np.int32), {"axes": "CYX"}, AxesError, "unknown axis"),
    (np.zeros((2, 4, 4), np.int32), {"axes": "YXZ"}, AxesError, "order TZYX"),
    (np.zeros((4, 4), np.int32), {"pixel_size": {"X": 0.5}}, ValueError, "both 'Y' and 'X'"),
    (np.zeros((4, 4), np.int32), {"pixel_size": {"Z": 0.5, "Y": 1, "X": 1}}, ValueError, "not a spatial axis"),
    (np.zeros((4, 4), np.int32), {"pixel_size": {"Y": -1, "X": 1}}, ValueError, "positive"),
    (np.zeros((4, 4), np.int32), {"compression": "jpeg2000000"}, ValueError, "unknown compression"),
    (np.zeros((0, 4), np.int32), {}, LabelError, "empty"),
])
def test_write_labels_rejects_bad_input_before_touching_disk(tmp_path, bad, kw, exc, match):
    with pytest.raises(exc, match=match) as e:
        write_labels(tmp_path / "out.tif", bad, **kw)
    assert "out.tif" in str(e.value)
    assert os.listdir(tmp_path) == []


def test_write_refuses_non_tiff(tmp_path):
    with pytest.raises(ValueError, match="TIFF"):
        write_labels(tmp_path / "x.png", np.zeros((4, 4), np.int32))


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "res.tif"
    old = np.zeros((10, 10), np.int32)
    old[2:4, 2:4] = 1
    write_labels(target, old)
    before = target.read_bytes()

    def broken(path, *a, **k):  # writes some bytes, then fails like a full disk would
        with open(path, "wb") as f:
            f.write(b"II*\x00garbage")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tifffile, "imwrite", broken)
    with pytest.raises(OSError, match="No space"):
        write_labels(target, old * 2)
    with pytest.raises(OSError):
        write_labels(tmp_path / "new.tif", old)
    with pytest.raises(OSError):
        write_image(tmp_path / "img.tif", np.zeros((5, 5), np.float32), "YX")
    assert sorted(os.listdir(tmp_path)) == ["res.tif"]
    assert target.read_bytes() == before


# --------------------------------------------------------------------------- broken files


def test_broken_files_raise_clear_errors(tmp_path):
    good = tmp_path / "good.tif"
    tifffile.imwrite(good, _rand((4, 64, 64), np.uint16), imagej=True, metadata={"axes": "ZYX"}, compression="zlib")
    raw = good.read_bytes()
    (tmp_path / "trunc.tif").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "head.tif").write_bytes(raw[:60])
    (tmp_path / "empty.tif").write_bytes(b"")
    (tmp_path / "text.tif").write_text("not an image")
    (tmp_path / "text.png").write_text("not an image")
    for name in ("trunc.tif", "head.tif", "empty.tif", "text.tif", "text.png"):
        for fn in (read_image, read_labels):
            with pytest.raises(ImageReadError, match=name.replace(".", r"\.")):
                fn(tmp_path / name)
    unc = tmp_path / "unc.tif"
    tifffile.imwrite(unc, _rand((3, 64, 64), np.uint16), imagej=True, metadata={"axes": "ZYX"})
    (tmp_path / "trunc_unc.tif").write_bytes(unc.read_bytes()[:-3000])
    with pytest.raises(ImageReadError, match="trunc_unc"):
        read_image(tmp_path / "trunc_unc.tif")
    with pytest.raises(FileNotFoundError, match="missing.tif"):
        read_image(tmp_path / "missing.tif")
    (tmp_path / "x.bmp").write_bytes(b"BM")
    with pytest.raises(ImageReadError, match="unsupported file type"):
        read_image(tmp_path / "x.bmp")
    with pytest.raises(ImageReadError, match="folder"):
        read_image(tmp_path)


def test_read_labels_rejects_float_negative_and_wrong_dims(tmp_path):
    tifffile.imwrite(tmp_path / "f.tif", np.full((5, 5), 0.25, np.float32))
    tifffile.imwrite(tmp_path / "n.tif", -np.ones((5, 5), np.int16))
    tifffile.imwrite(tmp_path / "z.tif", np.ones((3, 5, 5), np.uint16), imagej=True, metadata={"axes": "ZYX"})
    with pytest.raises(LabelError, match=r"f\.tif.*whole numbers.*0\.25"):
        read_labels(tmp_path / "f.tif")
    with pytest.raises(LabelError, match=r"n\.tif.*non-negative"):
        read_labels(tmp_path / "n.tif")
    with pytest.raises(LabelError, match=r"z\.tif.*2 dimensions"):
        read_labels(tmp_path / "z.tif", ndim=2)
    assert read_labels(tmp_path / "z.tif", ndim=(2, 3)).shape == (3, 5, 5)


# --------------------------------------------------------------------------- write_image, transpose


def test_write_image_float_round_trip(tmp_path):
    a = RNG.random((2, 20, 30))  # float64 -> float32
    p = write_image(tmp_path / "h.tif", a, "CYX", pixel_size={"Y": 0.5, "X": 0.5})
    im = read_image(p)
    assert im.axes == "CYX" and im.data.dtype == np.float32 and np.allclose(im.data, a.astype(np.float32))
    assert im.pixel_size == pytest.approx({"Y": 0.5, "X": 0.5})
    with tifffile.TiffFile(p) as t:
        assert t.is_imagej
    q = write_image(tmp_path / "n.tif", a.astype(np.float32), "CYX", channel_names=["prob", "dist"])
    im = read_image(q)
    assert im.channel_names == ["prob", "dist"] and im.axes == "CYX"
    r = write_image(tmp_path / "i.tif", np.arange(20, dtype=np.int32).reshape(4, 5) - 3, "YX")
    assert np.array_equal(read_image(r).data, np.arange(20).reshape(4, 5) - 3)
    with pytest.raises(ValueError, match="channel names"):
        write_image(tmp_path / "bad.tif", a, "CYX", channel_names=["one"])
    with pytest.raises(AxesError, match="order TZCYX"):
        write_image(tmp_path / "bad.tif", a, "YXC")
    with pytest.raises(ValueError, match="cannot write data of type"):
        write_image(tmp_path / "bad.tif", np.zeros((3, 3), complex), "YX")
    assert not (tmp_path / "bad.tif").exists()


def test_transpose_axes():
    a = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    b = transpose_axes(a, "ZYXC", "CZYX")
    assert b.shape == (5, 2, 3, 4) and b[4, 1, 2, 3] == a[1, 2, 3, 4]
    assert transpose_axes(a, "ZYXC", "ZYXC") is not None and np.array_equal(transpose_axes(a, "ZYXC", "ZYXC"), a)
    c = transpose_axes(np.zeros((1, 4, 5)), "ZYX", "TYXC")
    assert c.shape == (1, 4, 5, 1)
    assert transpose_axes(np.zeros((4, 5, 3)), "YXS", "CYX").shape == (3, 4, 5)
    with pytest.raises(AxesError, match="cannot drop axis 'Z' of size 2"):
        transpose_axes(np.zeros((2, 4, 5)), "ZYX", "YX")
    with pytest.raises(AxesError, match="3 dimensions"):
        transpose_axes(np.zeros((2, 4, 5)), "YX", "XY")
    with pytest.raises(AxesError):
        transpose_axes(np.zeros((4, 5)), "YX", "YYX")


def test_imagedata_validates_axes():
    with pytest.raises(AxesError):
        io.ImageData(np.zeros((3, 4)), "ZYX")
    im = io.ImageData(np.zeros((3, 4, 5)), "cyx")
    assert im.axes == "CYX" and im.size("C") == 3 and im.size("T") == 1


# --------------------------------------------------------------------------- real data


@pytest.mark.data
def test_real_ctc_and_dsb_files(dic_hela, fluo_hela, dsb2018):
    im = read_image(dic_hela / "01" / "t000.tif")
    assert im.axes == "YX" and im.shape == (512, 512) and im.data.dtype == np.uint8
    lab = read_labels(dic_hela / "01_ST" / "SEG" / "man_seg000.tif")
    assert lab.dtype == np.int32 and lab.shape == (512, 512) and 9 <= len(np.unique(lab)) - 1 <= 18
    im = read_image(fluo_hela / "01" / "t013.tif")
    assert im.shape == (700, 1100) and im.data.dtype == np.uint16
    png = sorted((dsb2018 / "images").glob("*.png"))[0]
    im = read_image(png)
    assert im.axes == "YX" and im.data.dtype == np.uint8  # RGBA with equal channels -> grey
    with Image.open(png) as p:
        assert p.mode == "RGBA"


def test_read_labels_accepts_imagej_float_label_images(tmp_path):
    # issue 14, item 11: Fiji saves label images as float32; whole numbers are labels
    lab = np.array([[0, 0, 2], [5, 5, 0]], np.float32)
    tifffile.imwrite(tmp_path / "fiji.tif", lab, imagej=True)
    out = read_labels(tmp_path / "fiji.tif")
    assert out.dtype == np.int32 and out.tolist() == [[0, 0, 2], [5, 5, 0]]


def test_frame_interval_is_read_and_written_back(tmp_path):
    # issue 14, item 17: the ImageJ frame interval of a TYX input was dropped from the outputs
    a = np.zeros((3, 8, 8), np.uint16)
    tifffile.imwrite(tmp_path / "min.tif", a, imagej=True, metadata={"axes": "TYX", "finterval": 2.5, "tunit": "min"})
    tifffile.imwrite(tmp_path / "sec.tif", a, imagej=True, metadata={"axes": "TYX", "finterval": 0.5})
    tifffile.imwrite(tmp_path / "z.tif", a, imagej=True, metadata={"axes": "ZYX", "finterval": 0.5})
    assert read_image(tmp_path / "min.tif").frame_interval == pytest.approx(150.0)
    assert read_image(tmp_path / "sec.tif").frame_interval == pytest.approx(0.5)
    assert read_image(tmp_path / "z.tif").frame_interval is None  # no T axis
    assert read_image(tmp_path / "sec.tif", axes="ZYX").frame_interval is None  # T renamed away
    lab = np.zeros((3, 8, 8), np.int32)
    lab[:, 2:4, 2:4] = 1
    for top in (1, 70000):  # ImageJ (uint8) and OME-TIFF (uint32) label files
        lab[0, 0, 0] = top
        p = write_labels(tmp_path / f"l{top}.tif", lab, axes="TYX", frame_interval=150.0)
        im = read_image(p)
        assert im.axes == "TYX" and im.frame_interval == pytest.approx(150.0)
    p = write_image(tmp_path / "i.tif", a.astype(np.float32), "TYX", frame_interval=2.0)
    assert read_image(p).frame_interval == pytest.approx(2.0)
    with pytest.raises(ValueError, match="no T axis"):
        write_labels(tmp_path / "x.tif", lab[0], axes="YX", frame_interval=1.0)
    with pytest.raises(ValueError, match="positive"):
        write_labels(tmp_path / "x.tif", lab, axes="TYX", frame_interval=-1)
