import csv

import numpy as np
import pytest

from cellseg.measure import COLUMNS, object_table, write_csv
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
    assert tuple(read[0].keys()) == COLUMNS and read[1]["area"] == "9"
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
