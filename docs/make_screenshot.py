"""Make the README screenshot of the napari plugin: docs/images/napari_plugin.png.

Opens a napari viewer (under Xvfb when there is no display: the script re-runs
itself with ``xvfb-run``), loads the bundled sample ``synthetic_nuclei``, opens
the cellseg "Segment" widget, segments the sample with a bundled model (the
default one unless ``--model`` names another bundled model or a ``.pt`` file)
and saves a screenshot of the whole window: canvas with the labels over the
image, layer list and the dock widget.

    .venv/bin/python docs/make_screenshot.py [--model NAME_OR_PATH] [--out PATH]

While no model is bundled, ``--train-synthetic PATH`` first trains a small
DistanceMap model (U-Net depth 2, width 16; 50 epochs of 25 steps, about 5 min
on 2 CPU cores) on eight synthetic 256² images (seeds 100-107, none of them the
sample) with the plugin's own training job, saves it to PATH and uses it. The
committed PNG was made that way; re-run without options once a model is bundled.

``--oracle`` replaces the network by the sample's ground truth encoded as head
outputs: it shows the widget without any trained model and is for checking the
script only, never for the README.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "images" / "napari_plugin.png"


def _wait(app, cond, timeout=600.0, what="work"):
    t0 = time.perf_counter()
    while not cond():
        app.processEvents()
        time.sleep(0.02)
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError(f"{what} did not finish in {timeout:.0f} s")


def train_synthetic(path: Path) -> None:
    """Train the small synthetic-cells model used while no model is bundled."""
    from cellseg.datasets.synthetic import synthetic_cells
    from cellseg_napari._training import TrainingJob

    pairs = [synthetic_cells((256, 256), seed=100 + i) for i in range(8)]
    job = TrainingJob(pairs, path, representation="distance", epochs=50, steps_per_epoch=25, patch_size=128,
                      batch_size=4, network={"depth": 2, "width": 16}, names=[f"synthetic{i}" for i in range(8)])
    gen = job.run()
    while True:
        try:
            ev = next(gen)
        except StopIteration as stop:
            print(f"saved {stop.value}")
            return
        if ev["event"] == "epoch":
            print(ev["message"], flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="bundled model name or .pt file (default: the default bundled model)")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--oracle", action="store_true", help="no network: ground truth as outputs (script check only)")
    ap.add_argument("--size", default="1400x860", help="window size WxH")
    ap.add_argument("--train-synthetic", metavar="PATH", default=None,
                    help="train a small model on synthetic cells first, save it to PATH (.pt) and use it")
    args = ap.parse_args(argv)
    if args.train_synthetic and not os.environ.get("CELLSEG_XVFB"):
        train_synthetic(Path(args.train_synthetic))
        args.model = args.train_synthetic

    if not os.environ.get("DISPLAY") and not os.environ.get("CELLSEG_XVFB"):
        xvfb = shutil.which("xvfb-run")
        if xvfb is None:
            print("no X display and no xvfb-run: install xvfb (apt-get install xvfb xauth)", file=sys.stderr)
            return 2
        env = {**os.environ, "CELLSEG_XVFB": "1", "QT_QPA_PLATFORM": "xcb"}
        again = ["--out", str(args.out), "--size", args.size] + (["--model", str(args.model)] if args.model else []) \
            + (["--oracle"] if args.oracle else [])
        cmd = [xvfb, "-a", "-s", "-screen 0 1600x1000x24", sys.executable, __file__, *again]
        return subprocess.call(cmd, env=env)

    import napari
    import numpy as np
    from qtpy.QtWidgets import QApplication

    w, h = (int(v) for v in args.size.lower().split("x"))
    viewer = napari.Viewer(show=True, title="cellseg")
    app = QApplication.instance()
    viewer.window._qt_window.resize(w, h)
    viewer.open_sample("cellseg-toolkit", "bundled")
    _, widget = viewer.window.add_plugin_dock_widget("cellseg-toolkit", "Segment")
    if args.oracle:
        from cellseg_napari._testing import OracleModel

        gt = np.asarray(viewer.layers["synthetic_nuclei ground truth"].data)
        widget.use_model(OracleModel("stardist", gt), "oracle")
    else:
        if args.model is not None:
            if Path(args.model).suffix == ".pt":
                name = widget.trained_models.add(args.model)
            else:
                name = args.model
            widget._model_choice.value = name
        _wait(app, lambda: widget.model is not None or widget._model_status.value.startswith("cannot"),
              what="model loading")
        if widget.model is None:
            print(f"cannot load a model: {widget._model_status.value}", file=sys.stderr)
            return 1
    widget._show_polygons.value = False
    widget.run()
    _wait(app, lambda: not widget.busy, what="segmentation")
    print(widget._status.value)
    if "synthetic_nuclei labels" not in viewer.layers:
        print(f"segmentation failed: {widget._status.value}", file=sys.stderr)
        return 1
    viewer.layers["synthetic_nuclei ground truth"].visible = False
    viewer.layers.selection.active = viewer.layers["synthetic_nuclei labels"]
    viewer.reset_view()
    for _ in range(20):
        app.processEvents()
        time.sleep(0.02)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(out), canvas_only=False)
    viewer.close()
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
