"""Speed of cellseg.metrics.matching_dataset vs stardist.matching.matching_dataset.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_metrics.py [--n-images 20] [--size 1024]
                                                 [--objects 500] [--repeat 3] [--json FILE]

Builds ``--n-images`` seeded synthetic ground-truth label images
(``cellseg.datasets.synthetic_cells``, touching star-convex cells) of
``size x size`` pixels with ``--objects`` cells each, and a perturbed
prediction per image (cells missed, merged with a neighbour, split in two,
boundaries grown by a pixel and shifted, false positives added, ids permuted).
Both libraries then evaluate the same pairs at the 10 IoU thresholds
0.5:0.05:0.95 (numba warmed up first for both); the script checks that the
results agree — TP/FP/FN/n_true/n_pred identical, precision/recall/accuracy/F1
to 1e-12, the IoU averages to 1e-6 (StarDist sums float32 scores, we float64)
— and prints the median wall time of ``--repeat`` runs and the ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make ``cellseg`` importable from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
COUNTS = ("tp", "fp", "fn", "n_true", "n_pred")
RATIOS = ("precision", "recall", "accuracy", "f1")
SCORES = ("mean_true_score", "mean_matched_score", "panoptic_quality")


def perturb(y: np.ndarray, seed: int, p_miss=0.03, p_merge=0.03, p_split=0.03, p_fp=0.02) -> np.ndarray:
    """A plausible, imperfect prediction of the label image ``y`` (seeded)."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    pred = y.astype(np.int32, copy=True)
    ids = np.unique(pred)
    ids = ids[ids != 0]
    n = ids.size
    # merges: relabel one cell of a touching/neighbouring pair into the other
    a, b = pred[:, :-1].ravel(), pred[:, 1:].ravel()
    m = (a != b) & (a > 0) & (b > 0)
    neighbours = np.unique(np.stack([a[m], b[m]], 1), axis=0) if m.any() else np.zeros((0, 2), np.int32)
    if len(neighbours):
        for u, v in neighbours[rng.permutation(len(neighbours))[: int(p_merge * n)]]:
            pred[pred == v] = u
    # splits: cut a cell through its centre along a random direction
    objs = ndi.find_objects(pred)
    for i in rng.choice(ids, int(p_split * n), replace=False):
        sl = objs[i - 1] if i - 1 < len(objs) else None
        if sl is None:
            continue
        mask = pred[sl] == i
        if mask.sum() < 8:
            continue
        yy, xx = np.nonzero(mask)
        ang = rng.uniform(0, np.pi)
        side = (yy - yy.mean()) * np.cos(ang) + (xx - xx.mean()) * np.sin(ang) > 0
        sub = pred[sl]
        sub[yy[side], xx[side]] = int(ids.max()) + 1 + int(i)
    # misses
    for i in rng.choice(ids, int(p_miss * n), replace=False):
        pred[pred == i] = 0
    # boundaries: grow into the background by one pixel, then shift by one pixel
    grown = ndi.grey_dilation(pred, size=3)
    pred = np.where(pred == 0, grown, pred)
    pred = np.roll(pred, (1, -1), axis=(0, 1))
    # false positives: small disks in the background
    next_id = int(pred.max()) + 1
    yy, xx = np.ogrid[: pred.shape[0], : pred.shape[1]]
    for _ in range(int(p_fp * n)):
        cy, cx = rng.integers(0, pred.shape[0]), rng.integers(0, pred.shape[1])
        disk = ((yy - cy) ** 2 + (xx - cx) ** 2 <= rng.uniform(3, 7) ** 2) & (pred == 0)
        pred[disk] = next_id
        next_id += 1
    # non-sequential ids
    ids = np.unique(pred)
    ids = ids[ids != 0]
    lut = np.zeros(int(pred.max()) + 1, np.int32)
    lut[ids] = rng.permutation(ids.size) * 7 + 3
    return lut[pred]


def make_pairs(n_images: int, size: int, objects: int, seed: int = 0):
    try:
        from cellseg.datasets.synthetic import synthetic_cells
    except ImportError as e:  # pragma: no cover - the generator is part of cellseg
        raise SystemExit(f"cellseg.datasets.synthetic is needed: {e}")
    ys_true, ys_pred = [], []
    for k in range(n_images):
        _, y = synthetic_cells((size, size), n_cells=objects, seed=seed + k, noise=0)
        ys_true.append(y.astype(np.int32))
        ys_pred.append(perturb(y, seed=10_000 + seed + k))
    return ys_true, ys_pred


def compare(ours, theirs) -> None:
    """Raise AssertionError unless the two results agree (see the module notes)."""
    for o, t in zip(ours, theirs, strict=True):
        for f in COUNTS:
            if getattr(o, f) != getattr(t, f):
                raise AssertionError(
                    f"thresh {o.thresh}: {f} differs: ours {getattr(o, f)}, stardist {getattr(t, f)}")
        for f in RATIOS:
            if abs(getattr(o, f) - getattr(t, f)) > 1e-12:
                raise AssertionError(f"thresh {o.thresh}: {f} differs: {getattr(o, f)} vs {getattr(t, f)}")
        for f in SCORES:
            if abs(getattr(o, f) - float(getattr(t, f))) > 1e-6:
                raise AssertionError(f"thresh {o.thresh}: {f} differs: {getattr(o, f)} vs {getattr(t, f)}")


def median_time(fn, repeat: int):
    times, res = [], None
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        res = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-images", type=int, default=20)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--objects", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = ap.parse_args(argv)

    from cellseg.metrics import matching_dataset

    try:
        from stardist.matching import matching_dataset as sd_matching_dataset
    except ImportError:
        sd_matching_dataset = None
        print("stardist not installed: timing cellseg only (pip install stardist==0.9.2 for the comparison)")

    t0 = time.perf_counter()
    ys_true, ys_pred = make_pairs(args.n_images, args.size, args.objects, args.seed)
    print(f"built {args.n_images} pairs of {args.size}x{args.size} with {args.objects} objects "
          f"in {time.perf_counter() - t0:.1f} s")

    # warm-up: numba compile (or cache load) for both
    matching_dataset(ys_true[:1], ys_pred[:1], THRESHOLDS)
    if sd_matching_dataset:
        sd_matching_dataset(ys_true[:1], ys_pred[:1], THRESHOLDS, show_progress=False)

    t_ours, all_ours, ours = median_time(lambda: matching_dataset(ys_true, ys_pred, THRESHOLDS), args.repeat)
    result = {"n_images": args.n_images, "size": args.size, "objects": args.objects, "repeat": args.repeat,
              "thresholds": list(THRESHOLDS), "ours_s": t_ours, "ours_runs_s": all_ours,
              "cpu_count": os.cpu_count(), "python": platform.python_version(),
              "load_avg": os.getloadavg() if hasattr(os, "getloadavg") else None}
    print(f"cellseg  matching_dataset: median {t_ours:.3f} s  runs {[round(x, 3) for x in all_ours]}")
    if sd_matching_dataset:
        t_sd, all_sd, theirs = median_time(
            lambda: sd_matching_dataset(ys_true, ys_pred, THRESHOLDS, show_progress=False), args.repeat)
        compare(ours, theirs)
        print(f"stardist matching_dataset: median {t_sd:.3f} s  runs {[round(x, 3) for x in all_sd]}")
        print("results agree: TP/FP/FN/n_true/n_pred identical, ratios to 1e-12, IoU averages to 1e-6")
        print(f"ratio stardist/cellseg: {t_sd / t_ours:.1f}x")
        result.update(stardist_s=t_sd, stardist_runs_s=all_sd, ratio=t_sd / t_ours, equal=True)
    print("pooled AP:", " ".join(f"{r.thresh:.2f}:{r.accuracy:.3f}" for r in ours))
    result["ap"] = {f"{r.thresh:.2f}": r.accuracy for r in ours}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
