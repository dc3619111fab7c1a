"""Accuracy of every bundled model on its held-out test split.

For each bundled model, the test split recorded in its config by the training
recipe (DSB 2018 fluorescence: 10% of the images by name with a fixed seed;
DIC-C2DH-HeLa: sequence 02 silver truth) is segmented with the model's tuned
thresholds through the public ``Segmenter`` and scored with ``cellseg.metrics``:
AP at IoU 0.5/0.75/0.9 (AP = TP/(TP+FP+FN)), mean AP over 0.5:0.95, F1 at 0.5,
CTC SEG, seconds per megapixel on this machine (network + decode) and the
minutes its training loop took (recorded in the model config).

    python benchmarks/bench_accuracy.py [--models nuclei-stardist,...] [--data ../shared/data] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def test_pairs(model, data_root: Path):
    """(name, image, labels) of the model's test split."""
    from cellseg import io
    from cellseg.datasets import CTCDataset, FolderDataset

    tr = model.config.get("training", {})
    split = tr.get("split") or {}
    names = split.get("test")
    recipe = tr.get("recipe", "")
    if not names:
        raise SystemExit(f"{model.config.get('name')}: no test split recorded in the model config")
    if recipe.startswith("nuclei-"):
        ds = FolderDataset.dsb2018(data_root / "DSB2018-stage1-train-fixed", modality="fluorescence")
        sub = ds.subset(names)
        for s in sub:
            yield s.name, s.image, s.labels
    elif recipe.startswith("hela-dic-"):
        ctc = CTCDataset(data_root / "DIC-C2DH-HeLa")
        for fr in ctc.pairs("02", truth="ST"):
            yield f"02/t{fr.t:03d}", io.read_image(fr.image_path).data, io.read_labels(fr.label_path)
    else:
        raise SystemExit(f"unknown recipe {recipe!r} in the model config")


def evaluate_model(name: str, data_root: Path) -> dict:
    from cellseg.metrics import evaluate
    from cellseg.segmenter import Segmenter

    seg = Segmenter.from_pretrained(name)
    seg.segment(np.random.default_rng(0).random((64, 64)).astype(np.float32))  # warm-up (numba, torch)
    pairs, seconds, mpx = [], 0.0, 0.0
    for img_name, img, gt in test_pairs(seg.model, data_root):
        axes = "YX" if img.ndim == 2 else None
        t = time.perf_counter()
        pred = seg.segment(img, axes=axes).labels
        seconds += time.perf_counter() - t
        mpx += img.shape[-1] * img.shape[-2] / 1e6
        pairs.append((img_name, gt, pred))
    rep = evaluate(pairs)
    s = rep.summary
    row = {"model": name, "n_images": len(pairs), "ap50": s["ap50"], "ap75": s["ap75"], "ap90": s["ap90"],
           "map": s["map"], "f1": s["f1_50"], "seg": s["seg"], "s_per_mpx": seconds / max(mpx, 1e-9),
           "train_min": float(seg.model.config.get("training", {}).get("train_seconds", float("nan"))) / 60}
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=None, help="comma-separated bundled model names (default: all)")
    p.add_argument("--data", default=os.environ.get("CELLSEG_DATA", str(HERE.parent.parent / "shared" / "data")))
    p.add_argument("--json", default=None)
    p.add_argument("--markdown", action="store_true", help="also print the table in Markdown (README)")
    args = p.parse_args(argv)
    from cellseg.models import list_models

    names = args.models.split(",") if args.models else list_models()
    data_root = Path(args.data).resolve()
    if not data_root.is_dir():
        raise SystemExit(f"data folder {data_root} not found (set CELLSEG_DATA or --data)")
    rows = []
    print(f"{'model':22s} {'images':>6s} {'AP50':>6s} {'AP75':>6s} {'AP90':>6s} {'mAP':>6s} {'F1':>6s} "
          f"{'SEG':>6s} {'s/Mpx':>6s} {'train min':>9s}")
    for n in names:
        r = evaluate_model(n, data_root)
        rows.append(r)
        print(f"{n:22s} {r['n_images']:6d} {r['ap50']:6.3f} {r['ap75']:6.3f} {r['ap90']:6.3f} {r['map']:6.3f} "
              f"{r['f1']:6.3f} {r['seg']:6.3f} {r['s_per_mpx']:6.2f} {r['train_min']:9.0f}", flush=True)
    if args.markdown:
        print("\n| model | test split | AP@0.5 | AP@0.75 | AP@0.9 | mAP 0.5:0.95 | F1@0.5 | SEG | s/Mpx | training |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| `{r['model']}` | {r['n_images']} images | {r['ap50']:.3f} | {r['ap75']:.3f} | {r['ap90']:.3f} | "
                  f"{r['map']:.3f} | {r['f1']:.3f} | {r['seg']:.3f} | {r['s_per_mpx']:.1f} | {r['train_min']:.0f} min |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
