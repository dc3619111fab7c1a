import csv

import numpy as np
import pytest

from cellseg.measure import COLUMNS, object_table, table_columns, write_csv
from cellseg.visualize import label_colors, overlay, save_png


def test_object_table_values():
    lab = np.zeros((10, 12), np.int32)
    lab[0:3, 0:4] = 4      # touches the border, area 12
    lab[5:8, 6:9] = 9      # interior, area 9
    img = np.arange(120, dtype=np.float32).reshape(10, 12)
    rows = object_table(lab, "YX", img, {4: 0.9, 9: 0.5}, cut=[9])
    by = {r["id"]: r for r in rows}
    assert by[4]["area"] == 12 and by[9]["area"] == 9
    assert by[4]["touches_border"] and not by[9]["touches_border"]
    assert by[9]["cut_by_block"] and not by[4]["cut_by_block"]
    assert by[9]["centroid_y"] == pytest.approx(6.0) and by[9]["centroid_x"] == pytest.approx(7.0)
    assert (by[9]["bbox_y0"], by[9]["bbox_x0"], by[9]["bbox_y1"], by[9]["bbox_x1"]) == (5, 6, 8, 9)
    assert by[9]["mean_intensity"] == pytest.approx(img[5:8, 6:9].mean())
    assert by[4]["score"] == 0.9


def test_object_table_time_axis_and_csv(tmp_path):
    lab = np.zeros((2, 8, 8), np.int32)
    lab[0, 2:4, 2:4] = 1
    lab[1, 4:7, 4:7] = 1
    rows = object_table(lab, "TYX")
    assert [(r["frame"], r["area"]) for r in rows] == [(0, 4), (1, 9)]
    p = write_csv(tmp_path / "o.csv", rows)
    with open(p) as fh:
        read = list(csv.DictReader(fh))
    assert tuple(read[0].keys()) == table_columns("TYX") and read[1]["area"] == "9"
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".")]


def test_overlay_colours_labels_and_keeps_background_grey(tmp_path):
    img = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    lab = np.zeros((64, 64), np.int32)
    lab[10:20, 10:20] = 3
    lab[40:50, 30:45] = 8
    rgb = overlay(img, lab)
    assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8
    bg = rgb[lab == 0]
    assert np.all(bg[:, 0] == bg[:, 1]) and np.all(bg[:, 1] == bg[:, 2])
    fg = rgb[lab > 0].astype(int)
    assert np.mean(fg.max(1) - fg.min(1)) > 20  # coloured
    save_png(tmp_path / "o.png", rgb)
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(tmp_path / "o.png")), rgb)


def test_label_colors_distinct():
    c = label_colors(50)
    assert c.shape == (51, 3) and tuple(c[0]) == (0, 0, 0)
    assert len({tuple(x) for x in c[1:]}) == 50


def test_csv_columns_fit_the_data_and_numbers_their_precision(tmp_path):
    # issue 14, item 17: no empty *_z columns in 2D, no empty µm columns, no 17-digit floats
    lab = np.zeros((10, 12), np.int32)
    lab[1:4, 1:4] = 1
    lab[5:8, 6:10] = 2
    lab[4, 6] = 2  # centroid with a long decimal expansion
    img = np.linspace(0, 1e-3, 120).reshape(10, 12)

    def read(p):
        with open(p) as fh:
            return list(csv.DictReader(fh))

    rows = read(write_csv(tmp_path / "a.csv", object_table(lab, "YX", img, {1: 0.123456789}),
                          table_columns("YX")))
    cols = tuple(rows[0])
    assert not [c for c in cols if "_z" in c or c.endswith("_um")]
    assert cols == table_columns("YX") and set(cols) < set(COLUMNS)
    r1, r2 = rows
    assert r2["centroid_y"] == "5.85" and r2["centroid_x"] == "7.38"  # 5.846..., 7.3846...
    assert r1["score"] == "0.1235" and r2["score"] == ""
    assert r1["mean_intensity"] == "0.000218487"  # 6 significant digits
    assert float(r1["mean_intensity"]) == pytest.approx(img[1:4, 1:4].mean(), rel=1e-5)
    assert r1["equivalent_diameter"] == "3.39"
    # with the pixel size: µm columns (no z in 2D); volumes: z columns
    rows = read(write_csv(tmp_path / "b.csv", object_table(lab, "YX", pixel_size={"Y": 0.3, "X": 0.3}),
                          table_columns("YX", {"Y": 0.3, "X": 0.3})))
    assert "centroid_y_um" in rows[0] and "centroid_z_um" not in rows[0]
    assert rows[0]["area_um"] == "0.81" and rows[1]["centroid_x_um"] == "2.21538"
    vol = np.zeros((3, 6, 6), np.int32)
    vol[1, 2:4, 2:4] = 5
    rows = read(write_csv(tmp_path / "c.csv", object_table(vol, "ZYX")))
    assert rows[0]["centroid_z"] == "1.0" and rows[0]["bbox_z1"] == "2" and "area_um" not in rows[0]
    # no objects: the header still fits the data
    empty = read(write_csv(tmp_path / "d.csv", [], table_columns("TZYX")))
    assert empty == [] and "centroid_z" in open(tmp_path / "d.csv").readline()
