"""Uneven illumination: the images as read and under an illumination gradient or a vignette,
segmented with ``flat_field="off"`` and with the default ``"auto"``.

For every test split of a model (``--split test``, see ``bench_accuracy.test_sets``) or the
validation images of its sources (``--split val``, the default: for deciding the correction), each
image's signal above its dark level is multiplied by a smooth illumination field (a lamp does
not scale the camera's offset): the dark level is 0 for an image with a bright background
(transmitted light, :func:`cellseg.preprocess.bright_background`) and the image's 1st percentile
for one with a dark background (fluorescence: offset and background):

- ``as read``: no field;
- ``gradient 2x``, ``gradient 3x``: from 1 on the left edge to 1/2 (1/3) on the right;
- ``vignette``: 1 at the centre, 0.4 in the corners (quadratic in the distance).

The model segments each with its defaults (``diameter="auto"``) and with ``flat_field="off"``.
Prints AP@0.5 per condition for both, and how many of the images ``"auto"`` corrected.

    python benchmarks/bench_illumination.py --models nuclei,cells [--split val|test]
        [--max-images N] [--data ../shared/data] [--json FILE]
"""
from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.bench_scale import parse_model_bench_args, run_models  # noqa: E402

#: condition name -> illumination field of a (h, w) frame, or None for the image as read
CONDITIONS = ("as read", "gradient 2x", "gradient 3x", "vignette")


def illumination(kind: str, shape: tuple[int, int]) -> np.ndarray | None:
    """The multiplicative illumination field of a condition, float32 of ``shape`` (None: none)."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == "as read":
        return None
    if kind.startswith("gradient"):
        low = 1 / float(kind.split()[1].rstrip("x"))
        return (1 - (1 - low) * xx / max(w - 1, 1)).astype(np.float32)
    if kind == "vignette":
        r2 = (((yy - (h - 1) / 2) / (h / 2)) ** 2 + ((xx - (w - 1) / 2) / (w / 2)) ** 2) / 2
        return (1 - 0.6 * np.minimum(r2, 1)).astype(np.float32)
    raise ValueError(kind)


def lit(img: np.ndarray, axes: str, kind: str) -> np.ndarray:
    """``img`` (axes with Y, X and maybe C) under the illumination of ``kind``, as float32: the
    signal above the dark level (0 for a bright background, else the 1st percentile) times the
    field."""
    from cellseg.preprocess import bright_background

    x = np.asarray(img, np.float32)
    field = illumination(kind, (x.shape[axes.index("Y")], x.shape[axes.index("X")]))
    if field is None:
        return x
    ca = axes.index("C") if "C" in axes else None
    dark = np.float32(0.0 if bright_background(x, channel_axis=ca) else np.percentile(x, 1))
    if ca is not None:
        field = np.expand_dims(field, ca)
    return dark + (x - dark) * field


def condition_rows(name: str, data_root: Path, max_images: int | None, part: str, conditions: Sequence[str],
                   apply: Callable[[np.ndarray, str, str, int], np.ndarray], option: str,
                   forced: bool = False) -> list[dict]:
    """AP@0.5 of the model ``name`` on the images of ``part`` (``"val"``: its sources' validation
    images; ``"test"``: its test splits) under each of ``conditions`` (``apply(image, axes, condition,
    index)`` makes an image's version), segmented with its defaults (``auto``) and with the
    Segmenter option ``option`` ``"off"``; one row per split, with how many images ``auto`` changed
    (the result's attribute ``option`` true). ``forced``: ``option="on"`` in place of the default
    (the row's ``"auto"`` figures are then those of ``"on"``, and the row says so)."""
    from cellseg.metrics import matching_dataset
    from cellseg.models import load_model
    from cellseg.segmenter import Segmenter

    model = load_model(name)
    modes = {"auto": Segmenter(model, **({option: "on"} if forced else {})), "off": Segmenter(model, **{option: "off"})}
    if part == "test":
        from benchmarks.bench_accuracy import test_sets

        sets = test_sets(model, data_root)
    else:
        from benchmarks.bench_size_estimate import validation_items

        sets = validation_items(model, data_root, None, part)
    rows = []
    for title, items in sets.items():
        items = items[:max_images] if max_images else items
        if not items:
            continue
        row: dict = {"model": name, "split": title, "n_images": len(items)}
        if forced:
            row[option] = "on"
        cells = []
        for kind in conditions:
            images = [apply(img, axes, kind, i) for i, (_, img, axes, _) in enumerate(items)]
            for mode, seg in modes.items():
                preds, changed = [], 0
                for image, (_, _, axes, gt) in zip(images, items):
                    res = seg.segment(image, axes=axes)
                    preds.append(res.labels)
                    changed += bool(getattr(res, option))
                ap = matching_dataset([it[3] for it in items], preds, thresh=0.5).accuracy
                row[f"ap50 {kind} {mode}"] = ap
                if mode == "auto":
                    row[f"corrected {kind}"] = changed
            cells.append(f"{kind}: {row[f'ap50 {kind} off']:.3f} -> {row[f'ap50 {kind} auto']:.3f} "
                         f"({row[f'corrected {kind}']}/{len(items)})")
        rows.append(row)
        print(f"{name:10s} {title:26s} {len(items):4d}  " + "  ".join(cells), flush=True)
    return rows


def bench_model(name: str, data_root: Path, max_images: int | None, part: str = "val") -> list[dict]:
    return condition_rows(name, data_root, max_images, part, CONDITIONS,
                          lambda img, axes, kind, _: lit(img, axes, kind), "flat_field")


def main(argv=None) -> int:
    args = parse_model_bench_args(argv, __doc__, ("val", "test"),
                                  "the sources' validation images (default) or the models' test splits")
    return run_models(args, f"{'model':10s} {args.split + ' split':26s} {'n':>4s}  AP@0.5 per condition: "
                      "flat_field='off' -> 'auto' (images 'auto' corrected)",
                      functools.partial(bench_model, part=args.split))


if __name__ == "__main__":
    sys.exit(main())
