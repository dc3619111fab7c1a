"""Noisy images: the images as read and under pixel-wise noise, segmented with
``noise_filter="off"`` and with the default ``"auto"``.

For the validation images of a model's sources (``--split val``, the default: for deciding the
filter) or its test splits (``--split test``), each image gets, with a fixed seed per image (a
colour image in every channel; grey stored as RGB as one grey image, stored the same way):

- ``as read``: nothing;
- ``gauss 5%``, ``gauss 10%``, ``gauss 20%``: Gaussian noise whose standard deviation is that
  fraction of the image's 1-99.8 percentile range (float, not clipped);
- ``poisson 30``, ``poisson 10``: shot noise: the signal above the dark level (the 1st percentile
  for a dark background, 0 for a bright one) scaled so the 99.8th percentile is 30 (10) photons,
  drawn as Poisson counts.

The model segments each with its defaults and with ``noise_filter="off"``. Prints AP@0.5 per
condition for both, and how many of the images ``"auto"`` filtered; ``--on`` compares
``noise_filter="on"`` (every image filtered) with ``"off"`` instead.

    python benchmarks/bench_noise.py --models nuclei,cells [--split val|test] [--on]
        [--max-images N] [--data ../shared/data] [--json FILE]
"""
from __future__ import annotations

import functools
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.bench_illumination import condition_rows  # noqa: E402
from benchmarks.bench_scale import parse_model_bench_args, run_models  # noqa: E402

CONDITIONS = ("as read", "gauss 5%", "gauss 10%", "gauss 20%", "poisson 30", "poisson 10")


def noisy(img: np.ndarray, axes: str, kind: str, seed: int) -> np.ndarray:
    """``img`` under the noise of ``kind`` (see the module's doc), float32; ``seed`` fixes the draw."""
    from cellseg.preprocess import bright_background

    x = np.asarray(img, np.float32)
    if kind == "as read":
        return x
    if "C" in axes:
        c = axes.index("C")
        first = np.take(x, 0, axis=c)
        if all(np.array_equal(first, np.take(x, i, axis=c)) for i in range(1, min(3, x.shape[c]))):
            # grey stored as RGB(A): one grey image with noise, stored the same way
            grey = noisy(first, axes.replace("C", ""), kind, seed)
            out = x.copy()
            for i in range(min(3, x.shape[c])):  # an alpha channel stays as it is
                np.moveaxis(out, c, 0)[i] = grey
            return out
    rng = np.random.default_rng(seed)
    lo, hi = np.percentile(x, (1.0, 99.8))
    if kind.startswith("gauss"):
        frac = float(kind.split()[1].rstrip("%")) / 100
        return (x + rng.normal(0.0, frac * float(hi - lo), x.shape)).astype(np.float32)
    if kind.startswith("poisson"):
        photons = float(kind.split()[1])
        ca = axes.index("C") if "C" in axes else None
        dark = 0.0 if bright_background(x, channel_axis=ca) else float(lo)
        scale = photons / max(float(hi) - dark, 1e-6)
        return rng.poisson(np.clip(x - dark, 0, None) * scale).astype(np.float32)
    raise ValueError(kind)


def bench_model(name: str, data_root: Path, max_images: int | None, part: str = "val",
                forced: bool = False) -> list[dict]:
    return condition_rows(name, data_root, max_images, part, CONDITIONS,
                          lambda img, axes, kind, i: noisy(img, axes, kind, 1000 + i), "noise_filter", forced)


def main(argv=None) -> int:
    args = parse_model_bench_args(argv, __doc__, ("val", "test"),
                                  "the sources' validation images (default) or the models' test splits",
                                  flags=[("--on", "compare noise_filter='on' (every image filtered) with 'off'")])
    on = bool(args.on)
    mode = "on" if on else "auto"
    return run_models(args, f"{'model':10s} {args.split + ' split':26s} {'n':>4s}  AP@0.5 per condition: "
                      f"noise_filter='off' -> '{mode}' (images filtered)",
                      functools.partial(bench_model, part=args.split, forced=on))


if __name__ == "__main__":
    sys.exit(main())
