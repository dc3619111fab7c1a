"""Scale robustness: the test images at x0.5, x1 and x2 (labels with them), segmented with
``diameter="auto"``, against the same images with the diameter given.

For every test split of a model (see ``bench_accuracy.test_sets``), each image and its
labels are resampled by 0.5 and 2 (``cellseg.scale.zoom_image`` / ``resize_labels``);
the model segments them with ``diameter="auto"`` (its first-pass estimate) and with the
diameter given (the median equivalent diameter of the resampled ground truth). Prints
AP@0.5 per scale, its difference to the native figure, and the time of ``auto`` over the
time with the diameter given (median over images and the pooled ratio).

    python benchmarks/bench_scale.py --models nuclei [--max-images 20] [--data ../shared/data]
        [--split test|val]

``--split val`` runs the same on each source's validation images (``cellseg.train.general``'s
split, as ``bench_size_estimate.py``): for deciding changes to the estimate without the test split.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.bench_accuracy import test_sets  # noqa: E402

SCALES = (0.5, 1.0, 2.0)


def _resample(img: np.ndarray, axes: str, gt: np.ndarray, f: float):
    from cellseg.scale import resize_labels, scaled_shape, zoom_image

    if f == 1.0:
        return img, gt
    x = np.asarray(img, np.float32)
    if "C" in axes:
        c = axes.index("C")
        x = np.moveaxis(zoom_image(np.moveaxis(x, c, 0), f, spatial_ndim=2), 0, c)
    else:
        x = zoom_image(x, f, spatial_ndim=2)
    return x, resize_labels(gt, scaled_shape(gt.shape, f))


def _timed(seg, x, axes):
    t = time.perf_counter()
    res = seg.segment(x, axes=axes)
    return res, time.perf_counter() - t


def bench_model(name: str, data_root: Path, max_images: int | None, part: str = "test") -> list[dict]:
    from cellseg.metrics import matching_dataset
    from cellseg.models import load_model
    from cellseg.scale import median_diameter
    from cellseg.segmenter import Segmenter

    model = load_model(name)
    auto = Segmenter(model, diameter="auto")
    warmed = False
    rows = []
    if part == "test":
        sets = test_sets(model, data_root)
    else:  # the sources' validation images, by source name
        from benchmarks.bench_size_estimate import validation_items

        sets = validation_items(model, data_root, None, part)
    for title, items in sets.items():
        items = items[:max_images] if max_images else items
        if not items:  # a source without validation images (Fluo-N2DL-HeLa is test only)
            continue
        if not warmed and items:  # compiles every decoder kernel before anything is timed
            auto.segment(items[0][1], axes=items[0][2])
            warmed = True
        row = {"model": name, "split": title, "n_images": len(items)}
        ratios, t_auto_all, t_given_all = [], 0.0, 0.0
        for f in SCALES:
            trues, preds, preds_given = [], [], []
            for img_name, img, axes, gt in items:
                x, g = _resample(img, axes, gt, f)
                res, ta = _timed(auto, x, axes)
                d = median_diameter(g)
                given = Segmenter(model, diameter=d) if d else Segmenter(model, diameter="off")
                res_given, tg = _timed(given, x, axes)
                ratios.append(ta / tg)
                t_auto_all += ta
                t_given_all += tg
                trues.append(g)
                preds.append(res.labels)
                preds_given.append(res_given.labels)
            row[f"ap50_x{f:g}"] = matching_dataset(trues, preds, thresh=0.5).accuracy
            # the same with the annotated median diameter given: what the estimate costs in accuracy
            row[f"ap50_given_x{f:g}"] = matching_dataset(trues, preds_given, thresh=0.5).accuracy
        row["auto_time_ratio_median"] = float(np.median(ratios))
        row["auto_time_ratio_pooled"] = t_auto_all / t_given_all
        rows.append(row)
        print(f"{name:10s} {title:26s} {len(items):4d}  " + "  ".join(
            f"x{f:g} {row[f'ap50_x{f:g}']:.3f} ({row[f'ap50_x{f:g}'] - row['ap50_x1']:+.3f})" for f in SCALES)
            + f"  auto/given time: median {row['auto_time_ratio_median']:.2f}, pooled "
              f"{row['auto_time_ratio_pooled']:.2f}  | diameter given: " + "  ".join(
                f"x{f:g} {row[f'ap50_given_x{f:g}']:.3f}" for f in SCALES), flush=True)
    return rows


def run_models(args: argparse.Namespace, header: str,
               bench: Callable[[str, Path, int | None], list[dict]]) -> int:
    """Print ``header``, run ``bench(model, data root, max images)`` for each of ``args.models``
    (comma-separated) and write the rows to ``args.json`` when given."""
    data_root = Path(args.data).resolve()
    if not data_root.is_dir():
        raise SystemExit(f"data folder {data_root} not found (set CELLSEG_DATA or --data)")
    print(header)
    rows = []
    for n in args.models.split(","):
        rows += bench(n, data_root, args.max_images)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


def parse_model_bench_args(argv, doc: str | None, splits: tuple[str, str], split_help: str,
                           models: str = "nuclei", per: str = "split",
                           flags: Sequence[tuple[str, str]] = ()) -> argparse.Namespace:
    """The options the per-model benchmarks share: ``--models``, ``--data``, ``--max-images`` (per
    ``per``), ``--split`` (one of ``splits``, the first the default) and ``--json``, and a
    benchmark's own on/off ``flags`` (``(option, help)``)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=models, help="comma-separated bundled model names or model files")
    p.add_argument("--data", default=os.environ.get("CELLSEG_DATA", str(HERE.parent.parent / "shared" / "data")))
    p.add_argument("--max-images", type=int, default=None, help=f"at most this many images per {per}")
    p.add_argument("--split", default=splits[0], choices=list(splits), help=split_help)
    p.add_argument("--json", default=None)
    for flag, text in flags:
        p.add_argument(flag, action="store_true", help=text)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_model_bench_args(argv, __doc__, ("test", "val"),
                                  "the models' test splits (default) or their sources' validation images",
                                  per="test split")
    return run_models(args, f"{'model':10s} {args.split + ' split':26s} {'n':>4s}  AP@0.5 with diameter='auto' "
                      "at x0.5, x1, x2 (difference to x1); time of auto over the diameter given; AP@0.5 with the "
                      "annotated diameter given", functools.partial(bench_model, part=args.split))


if __name__ == "__main__":
    sys.exit(main())
