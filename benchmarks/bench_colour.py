"""Fluorescence nuclei stored in colour, segmented by a nuclei model with its defaults.

DSB 2018 fluorescence images of a model's validation (default) or test split, each as grey and
in four colour layouts a microscope export gives, with the same labels:

- ``blue``: the grey image in the blue channel, red and green empty (DAPI's colour table);
- ``blue+green``: a composite, the nuclei in blue and a cytoplasm stain in green (the nuclei
  grown by 8 px into cells, each at its own brightness: ``benchmarks._cases.cytoplasm_stain``);
- ``blue+green+red``: the same with a third stain of sparse bright spots in red;
- ``red+green``: the nuclei in red and the cytoplasm in green, blue empty.

AP@0.5 pooled over the images; a file the model refuses counts as an empty prediction, and the
row says how many. The labels come from the annotation, so the layouts differ in colour only.

    python benchmarks/bench_colour.py [--models nuclei] [--split val|test] [--max-images 20] [--json F]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from benchmarks._cases import cytoplasm_stain  # noqa: E402
from benchmarks.bench_scale import parse_model_bench_args  # noqa: E402

LAYOUTS = ("grey", "blue", "blue+green", "blue+green+red", "red+green")


def layout(grey: np.ndarray, labels: np.ndarray, kind: str, seed: int = 0) -> tuple[np.ndarray, str]:
    """The image ``grey`` (uint8) in the colour layout ``kind`` (see the module's doc) and its axes."""
    if kind == "grey":
        return grey, "YX"
    from scipy import ndimage as ndi

    z = np.zeros_like(grey)
    cyto = cytoplasm_stain(labels, seed)
    rng = np.random.default_rng(seed + 1)
    spots = ndi.gaussian_filter((rng.random(grey.shape) > 0.999).astype(np.float32), 1.5)
    spots = np.clip(spots / max(float(spots.max()), 1e-6) + 0.02 * rng.random(grey.shape), 0, 1)
    spots = (spots * 255).astype(np.uint8)
    rgb = {"blue": (z, z, grey), "blue+green": (z, cyto, grey), "blue+green+red": (spots, cyto, grey),
           "red+green": (grey, cyto, z)}[kind]
    return np.stack(rgb, -1), "YXC"


def dsb_fluorescence(data_root: Path, split: str, max_images: int | None) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(name, grey uint8, labels)`` of the DSB fluorescence images of the general models' ``split``
    (``val`` or ``test``, as ``cellseg.train.general`` draws them)."""
    from cellseg import io
    from cellseg.train.general import _source_items

    parts = _source_items("dsb-fluorescence", data_root)[0]
    items = parts[split][:max_images] if max_images else parts[split]
    out = []
    for name, ip, lp in items:
        im = io.read_image(ip)
        x = im.data if "C" not in im.axes else np.take(im.data, 0, axis=im.axes.index("C"))
        lo, hi = np.percentile(x, (0.0, 100.0))
        grey = (np.clip((x.astype(np.float32) - lo) / max(float(hi - lo), 1e-6), 0, 1) * 255).astype(np.uint8)
        out.append((name, grey, io.read_labels(lp)))
    return out


def bench_model(name: str, data_root: Path, split: str, max_images: int | None) -> list[dict]:
    import warnings

    from cellseg.metrics import evaluate
    from cellseg.segmenter import Segmenter, SegmenterError

    seg = Segmenter.from_pretrained(name)
    items = dsb_fluorescence(data_root, split, max_images)
    rows = []
    for kind in LAYOUTS:
        pairs, refused = [], 0
        for i, (img_name, grey, gt) in enumerate(items):
            image, axes = layout(grey, gt, kind, seed=i)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    pred = seg.segment(image, axes=axes).labels
            except SegmenterError:
                refused, pred = refused + 1, np.zeros_like(gt)
            pairs.append((img_name, gt, pred))
        ap50 = float(evaluate(pairs).summary["ap50"])
        rows.append({"model": name, "split": split, "layout": kind, "n_images": len(items), "ap50": ap50,
                     "refused": refused})
        print(f"{name:10s} {split:5s} {kind:16s} {len(items):4d}  AP@0.5 {ap50:.3f}  refused {refused}", flush=True)
    return rows


def main(argv=None) -> int:
    args = parse_model_bench_args(argv, __doc__, ("val", "test"),
                                  "the DSB fluorescence validation images (default) or test split", per="layout")
    rows = []
    for name in args.models.split(","):
        rows += bench_model(name, Path(args.data), args.split, args.max_images)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
