"""OME-Zarr (NGFF 0.4 and 0.5) in and out: ``cellseg segment`` on real stores written in tmp_path.

Images are written with yaozarrs (the library cellseg uses for NGFF metadata: its v0.5
writer, and its v0.4 models with zarr-python for 0.4), segmented with the tiny model, and
read back with yaozarrs + zarr (and with napari's OME-Zarr reader): the labels must equal
those of the TIFF path on the same pixels, with the image's pixel sizes and coordinate
transformations.
"""
from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
import yaozarrs
import zarr

from cellseg import omezarr
from cellseg.cli import main
from cellseg.datasets.synthetic import synthetic_cells
from cellseg.io import read_image, read_labels, write_image

PIXEL_UM = (0.4, 0.4)  # Y, X


def _pixels():
    img, _ = synthetic_cells((96, 128), n_cells=8, seed=31)
    return (img * 1000).astype(np.uint16)


def _write_ngff(path, data, version, scale_yx=PIXEL_UM, unit="micrometer", n_levels=2, translation=None):
    """``data`` (YX) as an OME-Zarr with axes c, y, x (one channel) and ``n_levels`` 2x levels."""
    arrs = [data[None]]
    for _ in range(1, n_levels):
        arrs.append(arrs[-1][:, ::2, ::2])
    mod = yaozarrs.v05 if version == "0.5" else yaozarrs.v04
    axes = [mod.ChannelAxis(name="c"), mod.SpaceAxis(name="y", unit=unit), mod.SpaceAxis(name="x", unit=unit)]
    datasets = []
    for k in range(n_levels):
        tr = [mod.ScaleTransformation(scale=[1.0, scale_yx[0] * 2 ** k, scale_yx[1] * 2 ** k])]
        if translation is not None:
            tr.append(mod.TranslationTransformation(translation=[0.0, *translation]))
        datasets.append(mod.Dataset(path=str(k), coordinateTransformations=tr))
    image = mod.Image(multiscales=[mod.Multiscale(axes=axes, datasets=datasets)])
    if version == "0.5":
        from yaozarrs.write.v05 import write_image as write_v05

        write_v05(path, image, arrs, writer="zarr")
    else:  # yaozarrs writes 0.5 only: its 0.4 model for the metadata, zarr-python (v2) for the arrays
        g = zarr.open_group(str(path), mode="w", zarr_format=2)
        g.attrs.update(image.model_dump(mode="json", by_alias=True, exclude_none=True))
        for k, a in enumerate(arrs):
            g.create_array(str(k), shape=a.shape, dtype=a.dtype,
                           chunk_key_encoding={"name": "v2", "separator": "/"})[...] = a
    return path


def _group_attrs(path):
    """The attributes of a zarr group (v2 or v3) read with zarr-python."""
    return dict(zarr.open_group(str(path), mode="r").attrs)


def _ome(attrs):
    return attrs["ome"] if "ome" in attrs else attrs


def _rows(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def tiff_reference(tmp_path_factory, tiny_model_path):
    """Labels and CSV rows of the TIFF path on the same pixels and pixel sizes."""
    d = tmp_path_factory.mktemp("tiff_ref")
    write_image(d / "cells.tif", _pixels(), axes="YX", pixel_size={"Y": PIXEL_UM[0], "X": PIXEL_UM[1]})
    out = d / "out"
    assert main(["segment", str(d / "cells.tif"), "-o", str(out), "--model", str(tiny_model_path), "-q"]) == 0
    labels = read_labels(out / "cells_labels.tif")
    assert labels.max() > 0
    return labels, _rows(out / "cells_objects.csv")


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_segment_writes_labels_into_the_image_same_as_tiff(tmp_path, tiny_model_path, tiff_reference, version,
                                                           capsys):
    ref_labels, ref_rows = tiff_reference
    # 0.4 in nanometres: the unit is converted; a translation is carried over to the labels
    scale = PIXEL_UM if version == "0.5" else tuple(1000 * s for s in PIXEL_UM)
    unit = "micrometer" if version == "0.5" else "nanometer"
    src = _write_ngff(tmp_path / "cells.ome.zarr", _pixels(), version, scale, unit, n_levels=3,
                      translation=[5.0, 7.0])
    out = tmp_path / "out"
    rc = main(["segment", str(src), "-o", str(out), "--model", str(tiny_model_path), "-q"])
    assert rc == 0, capsys.readouterr()
    # the labels group, read with zarr-python and validated with yaozarrs
    image_meta = yaozarrs.validate_ome_object(_ome(_group_attrs(src)))
    labels_meta = _ome(_group_attrs(src / "labels"))
    assert labels_meta["labels"] == ["cellseg"]
    lab_attrs = _ome(_group_attrs(src / "labels" / "cellseg"))
    lab_model = (yaozarrs.v05 if version == "0.5" else yaozarrs.v04).LabelImage.model_validate(
        {"version": "0.5", **lab_attrs} if version == "0.5" else lab_attrs)
    assert lab_attrs["image-label"]["source"]["image"] == "../../"
    img_ms, lab_ms = image_meta.multiscales[0], lab_model.multiscales[0]
    assert [a.name for a in lab_ms.axes] == [a.name for a in img_ms.axes] == ["c", "y", "x"]
    assert [a.unit for a in lab_ms.axes] == [a.unit for a in img_ms.axes]
    assert len(lab_ms.datasets) == len(img_ms.datasets) == 3
    for li, ii in zip(lab_ms.datasets, img_ms.datasets):  # same coordinate transformations, level by level
        assert li.model_dump()["coordinateTransformations"] == ii.model_dump()["coordinateTransformations"]
        lab_arr = zarr.open_array(str(src / "labels" / "cellseg" / li.path), mode="r")
        img_arr = zarr.open_array(str(src / ii.path), mode="r")
        assert lab_arr.shape == (1, *img_arr.shape[1:])
        assert lab_arr.metadata.zarr_format == (3 if version == "0.5" else 2)
    labels0 = zarr.open_array(str(src / "labels" / "cellseg" / "0"), mode="r")[...]
    np.testing.assert_array_equal(labels0[0], ref_labels)  # same labels as the TIFF path
    # the pixel sizes reached the CSV's µm columns exactly as the TIFF's did
    rows = _rows(out / "cells_objects.csv")
    assert rows == ref_rows and "area_um" in rows[0]
    # the image itself is untouched; only the CSV and overlay are in OUT
    np.testing.assert_array_equal(zarr.open_array(str(src / "0"), mode="r")[0], _pixels())
    assert sorted(p.name for p in out.iterdir()) == ["cells_objects.csv", "cells_overlay.png", "cellseg_run.json"]
    # a rerun skips the input (its labels exist); --overwrite redoes it
    assert main(["segment", str(src), "-o", str(out), "--model", str(tiny_model_path), "-q"]) == 0
    assert "skipped" in capsys.readouterr().out
    assert main(["segment", str(src), "-o", str(out), "--model", str(tiny_model_path), "-q", "--overwrite"]) == 0
    assert "done" in capsys.readouterr().out
    assert _ome(_group_attrs(src / "labels"))["labels"] == ["cellseg"]
    assert not [p for p in (src / "labels").iterdir() if p.name.startswith(".") and ".part" in p.name]


def test_read_image_gives_axes_pixel_sizes_channel_names(tmp_path):
    src = _write_ngff(tmp_path / "a.zarr", _pixels(), "0.4", (500.0, 250.0), "nanometer", n_levels=2)
    img = omezarr.read_image(src)
    assert img.axes == "YX" and img.pixel_size == pytest.approx({"Y": 0.5, "X": 0.25})
    lv1 = omezarr.read_image(src, level=1)
    assert lv1.data.shape == (48, 64) and lv1.pixel_size == pytest.approx({"Y": 1.0, "X": 0.5})
    # no unit: no pixel size (the CSV gets pixel columns only)
    bare = _write_ngff(tmp_path / "b.zarr", _pixels(), "0.5", (0.5, 0.5), unit=None, n_levels=1)
    assert omezarr.read_image(bare).pixel_size is None
    with pytest.raises(omezarr.OmeZarrError, match=r"a\.zarr: has 2 resolution levels \(0 to 1\)"):
        omezarr.read_image(src, level=2)


def test_five_axes_squeezed_frame_interval_channel_names_and_labels_back(tmp_path):
    """NGFF 0.4 t, c, z, y, x: axes of size 1 squeezed,
    the time step in seconds, omero channel names; labels of the squeezed axes are written
    back with every axis, the channel of size 1."""
    data = np.random.default_rng(0).integers(0, 200, (3, 2, 1, 20, 24), dtype=np.uint8)
    g = zarr.open_group(str(tmp_path / "t.zarr"), mode="w", zarr_format=2)
    g.create_array("0", shape=data.shape, dtype=data.dtype,
                   chunk_key_encoding={"name": "v2", "separator": "/"})[...] = data
    g.attrs.update({
        "multiscales": [{"version": "0.4", "axes": [
            {"name": "t", "type": "time", "unit": "millisecond"}, {"name": "c", "type": "channel"},
            *({"name": a, "type": "space", "unit": "micrometer"} for a in "zyx")],
            "datasets": [{"path": "0", "coordinateTransformations": [
                {"type": "scale", "scale": [250.0, 1.0, 2.0, 0.3, 0.3]}]}]}],
        "omero": {"channels": [{"label": n, "color": "FFFFFF", "window": {"start": 0, "end": 255, "min": 0,
                                                                          "max": 255}} for n in ("DAPI", "GFP")]},
    })
    img = omezarr.read_image(tmp_path / "t.zarr")
    assert img.axes == "TCYX" and img.data.shape == (3, 2, 20, 24)
    np.testing.assert_array_equal(img.data, data[:, :, 0])
    assert img.channel_names == ["DAPI", "GFP"]
    assert img.frame_interval == pytest.approx(0.25)
    assert img.pixel_size == pytest.approx({"Y": 0.3, "X": 0.3})  # Z has size 1: squeezed
    labels = np.zeros((3, 20, 24), np.int32)
    labels[:, 4:9, 5:11] = 3
    omezarr.write_labels(tmp_path / "t.zarr", labels, "TYX", name="nuclei")
    back = omezarr.read_labels(tmp_path / "t.zarr", "nuclei")
    assert back.shape == (3, 1, 1, 20, 24)
    np.testing.assert_array_equal(back[:, 0, 0], labels)
    with pytest.raises(FileExistsError, match="nuclei: exists"):
        omezarr.write_labels(tmp_path / "t.zarr", labels, "TYX", name="nuclei")
    with pytest.raises(ValueError, match="do not fit level 0"):
        omezarr.write_labels(tmp_path / "t.zarr", labels[:, :10], "TYX", name="other")


def test_level_option_segments_a_lower_resolution(tmp_path, tiny_model_path, capsys):
    src = _write_ngff(tmp_path / "cells.zarr", _pixels(), "0.5", n_levels=3)
    out = tmp_path / "out"
    assert main(["segment", str(src), "-o", str(out), "--model", str(tiny_model_path), "-q", "--level", "1"]) == 0
    lab_ms = _ome(_group_attrs(src / "labels" / "cellseg"))["multiscales"][0]
    img_ms = _ome(_group_attrs(src))["multiscales"][0]
    assert lab_ms["datasets"][0]["coordinateTransformations"] == img_ms["datasets"][1]["coordinateTransformations"]
    assert len(lab_ms["datasets"]) == 2
    assert zarr.open_array(str(src / "labels" / "cellseg" / "0"), mode="r").shape == (1, 48, 64)
    rows = _rows(out / "cells_objects.csv")
    px = [float(r["area"]) for r in rows]
    um = [float(r["area_um"]) for r in rows]
    np.testing.assert_allclose(um, np.array(px) * (2 * PIXEL_UM[0]) * (2 * PIXEL_UM[1]), rtol=1e-6)
    rc = main(["segment", str(src), "-o", str(tmp_path / "o2"), "--model", str(tiny_model_path), "-q",
               "--level", "3"])
    text = capsys.readouterr()
    assert rc == 1
    assert f"FAILED {src}: has 3 resolution levels (0 to 2), asked for level 3" in text.out + text.err


def test_tiff_output_for_zarr_and_zarr_output_for_tiff(tmp_path, tiny_model_path, tiff_reference):
    ref_labels, _ = tiff_reference
    src = _write_ngff(tmp_path / "cells.ome.zarr", _pixels(), "0.5")
    out = tmp_path / "out"
    assert main(["segment", str(src), "-o", str(out), "--model", str(tiny_model_path), "-q",
                 "--output-format", "tiff", "--no-overlay"]) == 0
    lab = read_image(out / "cells_labels.tif")
    np.testing.assert_array_equal(lab.data, ref_labels)
    assert lab.pixel_size == pytest.approx({"Y": PIXEL_UM[0], "X": PIXEL_UM[1]})
    assert not (src / "labels").exists()
    # a TIFF with zarr output: a new OME-Zarr 0.5 holding the image and its labels
    write_image(tmp_path / "t.tif", _pixels(), axes="YX", pixel_size={"Y": PIXEL_UM[0], "X": PIXEL_UM[1]})
    out2 = tmp_path / "out2"
    assert main(["segment", str(tmp_path / "t.tif"), "-o", str(out2), "--model", str(tiny_model_path), "-q",
                 "--output-format", "zarr", "--labels-name", "nuclei"]) == 0
    made = out2 / "t.ome.zarr"
    back = omezarr.read_image(made)
    np.testing.assert_array_equal(back.data, _pixels())
    assert back.pixel_size == pytest.approx({"Y": PIXEL_UM[0], "X": PIXEL_UM[1]})
    np.testing.assert_array_equal(omezarr.read_labels(made, "nuclei"), ref_labels)
    assert _ome(_group_attrs(made / "labels"))["labels"] == ["nuclei"]
    yaozarrs.validate_zarr_store(str(made))  # structure and metadata valid NGFF 0.5


def _bad_stores(tmp_path):
    bad = {}
    (tmp_path / "empty.zarr").mkdir()
    bad["empty.zarr"] = "not a zarr group"
    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w", zarr_format=3).attrs["x"] = 1
    bad["plain.zarr"] = "no 'multiscales'"
    zarr.create_array(str(tmp_path / "array.zarr"), shape=(4, 4), dtype="u1", zarr_format=3)
    bad["array.zarr"] = "is a zarr array, not an OME-Zarr image group"
    g = zarr.open_group(str(tmp_path / "axes.zarr"), mode="w", zarr_format=3)
    g.attrs["ome"] = {"version": "0.5", "multiscales": [{
        "axes": [{"name": "angle", "type": "angle"}, {"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
        "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 1, 1]}]}]}]}
    g.create_array("0", shape=(2, 8, 8), dtype="u1")
    bad["axes.zarr"] = "unsupported axes [angle (angle), y (space), x (space)]"
    g = zarr.open_group(str(tmp_path / "plate.zarr"), mode="w", zarr_format=2)
    g.attrs["plate"] = {"version": "0.4", "rows": [{"name": "A"}], "columns": [{"name": "1"}], "wells": []}
    bad["plate.zarr"] = "is an OME-Zarr plate (HCS)"
    g = zarr.open_group(str(tmp_path / "missing_level.zarr"), mode="w", zarr_format=3)
    g.attrs["ome"] = {"version": "0.5", "multiscales": [{
        "axes": [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
        "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 1]}]}]}]}
    bad["missing_level.zarr"] = "resolution level '0' named in the metadata is not a zarr array"
    g = zarr.open_group(str(tmp_path / "invalid.zarr"), mode="w", zarr_format=3)
    g.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": [{"name": "y", "type": "space"}], "datasets": []}]}
    bad["invalid.zarr"] = "invalid OME-Zarr 0.5 metadata: multiscales.0.axes"
    return bad


def test_bad_zarr_inputs_are_failed_lines_naming_the_path(tmp_path, tiny_model_path, capsys):
    stores = tmp_path / "in"
    stores.mkdir()
    bad = _bad_stores(stores)
    good = _write_ngff(stores / "good.zarr", _pixels(), "0.5", n_levels=1)
    out = tmp_path / "out"
    rc = main(["segment", str(stores), "-o", str(out), "--model", str(tiny_model_path), "-q"])
    text = capsys.readouterr()
    msg = text.out + text.err
    assert rc == 1
    for name, what in bad.items():
        line = next((ln for ln in msg.splitlines() if ln.startswith(f"FAILED {stores / name}: ")), None)
        assert line is not None and what in line, (name, msg)
    assert "Traceback" not in msg
    assert f"done {good}" in msg and (good / "labels" / "cellseg").is_dir()
    for name in bad:  # nothing was written into a bad store
        assert not (stores / name / "labels").exists()


def test_failed_write_leaves_no_label_group_and_stale_temporaries_go(tmp_path, tiny_model_path, monkeypatch,
                                                                      capsys):
    src = _write_ngff(tmp_path / "cells.zarr", _pixels(), "0.5", n_levels=2)
    calls = []
    real = omezarr._create_array

    def fail_second(*a, **k):  # the first level is written, the second fails
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(*a, **k)

    monkeypatch.setattr(omezarr, "_create_array", fail_second)
    rc = main(["segment", str(src), "-o", str(tmp_path / "out"), "--model", str(tiny_model_path), "-q"])
    text = capsys.readouterr()
    assert rc == 1 and f"FAILED {src}: cannot write" in text.out + text.err
    labels_dir = src / "labels"
    assert not (labels_dir / "cellseg").exists()
    assert not [p for p in labels_dir.iterdir() if p.name != "zarr.json"] if labels_dir.exists() else True
    monkeypatch.setattr(omezarr, "_create_array", real)
    # a temporary group a killed writer left (a process id that no longer runs) is removed by the next write
    from cellseg._files import _HOST

    dead = 2 ** 22 + 12345
    while True:
        try:
            os.kill(dead, 0)
            dead += 1
        except ProcessLookupError:
            break
        except PermissionError:
            dead += 1
    stale = labels_dir / f".cellseg.{_HOST}-{dead}-0123abcd.part"
    stale.mkdir(parents=True)
    (stale / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group"}))
    assert main(["segment", str(src), "-o", str(tmp_path / "out"), "--model", str(tiny_model_path), "-q"]) == 0
    assert not stale.exists() and (labels_dir / "cellseg").is_dir()


def test_napari_reader_opens_image_and_labels(make_napari_viewer_proxy, tmp_path, tiny_model_path,
                                              tiff_reference):
    pytest.importorskip("napari_ome_zarr")
    ref_labels, _ = tiff_reference
    src = _write_ngff(tmp_path / "cells.ome.zarr", _pixels(), "0.5", n_levels=2)
    assert main(["segment", str(src), "-o", str(tmp_path / "out"), "--model", str(tiny_model_path), "-q"]) == 0
    viewer = make_napari_viewer_proxy()
    layers = viewer.open(str(src), plugin="napari-ome-zarr")
    kinds = sorted(type(lyr).__name__ for lyr in layers)
    assert kinds == ["Image", "Labels"], kinds
    lab = next(lyr for lyr in layers if type(lyr).__name__ == "Labels")
    img = next(lyr for lyr in layers if type(lyr).__name__ == "Image")
    data0 = np.asarray(lab.data[0] if lab.multiscale else lab.data)
    np.testing.assert_array_equal(np.squeeze(data0), ref_labels)
    # image and labels sit on the same grid, in micrometres
    np.testing.assert_allclose(lab.scale[-2:], PIXEL_UM)
    np.testing.assert_allclose(img.scale[-2:], lab.scale[-2:])
