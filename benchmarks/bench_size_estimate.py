"""The size estimate behind ``diameter="auto"`` on validation images, at x0.5, x1 and x2.

For each source of a general model (``nuclei``, ``cells``), its *validation* images
(``cellseg.train.general``'s split; ``--split train`` its training images; never the test
split) and their labels are resampled by
0.5, 1 and 2; :meth:`cellseg.segmenter.Segmenter.estimate_diameter` estimates the objects'
median diameter, which is compared with the labels' median equivalent diameter. Prints,
per source and scale, the median ratio estimate / truth and the share of images whose
estimate is within 1.25x of the truth (the general models are trained with scale
augmentation of 0.55-1.8x, so such an error costs little).

    python benchmarks/bench_size_estimate.py --models nuclei,cells [--max-images 8] [--split val|train]
        [--json out.json]
"""
from __future__ import annotations

import functools
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.bench_scale import SCALES, _resample, parse_model_bench_args, run_models  # noqa: E402


def validation_items(model, data_root: Path, max_images: int | None, part: str = "val") -> dict[str, list]:
    """``{source: [(name, image, axes, labels)]}``: the validation (``part="val"``) or training
    (``"train"``) images of a general model's sources."""
    from cellseg import io
    from cellseg.train.general import _source_items

    out = {}
    for source in model.config.get("training", {}).get("split", {}).get("sources", {}):
        items = _source_items(source, data_root)[0][part]
        items = items[:max_images] if max_images else items
        out[source] = []
        for name, ip, lp in items:
            im = io.read_image(ip)
            out[source].append((name, im.data, im.axes, io.read_labels(lp)))
    return out


def bench_model(name: str, data_root: Path, max_images: int | None, part: str = "val") -> list[dict]:
    from cellseg.models import load_model
    from cellseg.scale import median_diameter
    from cellseg.segmenter import Segmenter

    model = load_model(name)
    seg = Segmenter(model, diameter="auto")
    rows = []
    for source, items in validation_items(model, data_root, max_images, part).items():
        row: dict = {"model": name, "source": source, "n_images": len(items)}
        for f in SCALES:
            ratios = []
            for _, img, axes, gt in items:
                x, g = _resample(img, axes, gt, f)
                truth = median_diameter(g)
                if not truth:
                    continue
                # the frame as Segmenter.iter_segment gives it to the estimate: channels first, matched
                xc = np.moveaxis(x, axes.index("C"), 0) if "C" in axes else x
                d, _ = seg.estimate_diameter(seg._match_channels(np.ascontiguousarray(xc), "C" in axes))
                ratios.append((d or float(model.config["object_size"]["diameter"])) / truth)
            r = np.asarray(ratios)
            row[f"median_ratio_x{f:g}"] = float(np.median(r)) if r.size else None
            row[f"within_1.25_x{f:g}"] = float(np.mean((r >= 0.8) & (r <= 1.25))) if r.size else None
        rows.append(row)
        print(f"{name:8s} {source:16s} {len(items):4d}  " + "  ".join(
            f"x{f:g} {row[f'median_ratio_x{f:g}']:.2f} ({100 * row[f'within_1.25_x{f:g}']:.0f}%)"
            if row[f"median_ratio_x{f:g}"] is not None else f"x{f:g} -" for f in SCALES), flush=True)
    return rows


def main(argv=None) -> int:
    args = parse_model_bench_args(argv, __doc__, ("val", "train"),
                                  "the sources' validation images (default) or their training images",
                                  models="nuclei,cells", per="source")
    return run_models(args, f"{'model':8s} {'source':16s} {'n':>4s}  per scale: median estimate/truth (share "
                      f"within 1.25x), {args.split} images", functools.partial(bench_model, part=args.split))


if __name__ == "__main__":
    raise SystemExit(main())
