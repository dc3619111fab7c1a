"""Accuracy of every bundled model on its held-out test split.

For each bundled model, the test split recorded in its config by the training
recipe (DSB 2018 fluorescence: 10% of the images by name with a fixed seed;
DIC-C2DH-HeLa: sequence 02 silver truth; the general models ``nuclei`` and
``cells``: one test split per source, see ``cellseg.train.general``, read at the
files' own scale so the model's default ``diameter`` — ``auto`` — does the
resampling) is segmented with the model's tuned
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


_SOURCE_TITLE = {
    "dsb-fluorescence": "DSB fluo", "dsb-brightfield": "DSB brightfield", "dsb-color": "DSB colour (H&E/bright.)",
    "he-kong": "H&E Kong GBM", "he-miccai2015": "H&E MICCAI15 CPM", "fluo-n2dl-hela": "Fluo-N2DL-HeLa gold",
    "dic-hela": "DIC-HeLa 02", "usiigaci-phase": "Usiigaci val 5",
}


def test_sets(model, data_root: Path) -> dict[str, list]:
    """``{split title: [(name, image, axes, labels), ...]}``: the model's held-out test split(s).

    Specialists (recipes ``nuclei-*``, ``hela-dic-*``) have one; the general models
    (``nuclei``, ``cells``) one per source, read at the files' own scale.
    """
    from cellseg import io
    from cellseg.datasets import CTCDataset, FolderDataset

    tr = model.config.get("training", {})
    split = tr.get("split") or {}
    names = split.get("test")
    recipe = tr.get("recipe", "")
    if not names:
        raise SystemExit(f"{model.config.get('name')}: no test split recorded in the model config")

    def read(name, ip, lp):
        im = io.read_image(ip)
        return name, im.data, im.axes, io.read_labels(lp)

    if recipe.startswith("nuclei-"):
        ds = FolderDataset.dsb2018(data_root / "DSB2018-stage1-train-fixed", modality="fluorescence")
        return {"DSB fluo": [read(n, ds.image_path(n), ds.mask_path(n)) for n in sorted(names)]}
    if recipe.startswith("hela-dic-"):
        ctc = CTCDataset(data_root / "DIC-C2DH-HeLa")
        return {"DIC-HeLa 02": [read(f"02/t{fr.t:03d}", fr.image_path, fr.label_path)
                                for fr in ctc.pairs("02", truth="ST")]}
    if recipe in ("nuclei", "cells"):
        from cellseg.train.general import _source_items

        out = {}
        for source in split.get("sources", {}):
            # the split rules give the same names now as when the model was trained; check it
            items = {n: (n, ip, lp) for n, ip, lp in _source_items(source, data_root)[0]["test"]}
            recorded = [n for n in names if n.startswith(source + "/")]
            unknown = [n for n in recorded if n not in items]
            if unknown:
                raise SystemExit(f"{source}: recorded test names {unknown[:3]} are not in the source's test split")
            out[_SOURCE_TITLE.get(source, source)] = [read(*items[n]) for n in recorded]
        return out
    raise SystemExit(f"unknown recipe {recipe!r} in the model config")


def evaluate_model(name: str, data_root: Path, sets_of: str | None = None, **seg_kwargs) -> list[dict]:
    """One row per test split of the model ``name`` (bundled name or model file), or of the
    model ``sets_of`` (to compare models on the same images). An image the model refuses
    (a colour image for a grey model) counts as an empty prediction, and the row says how many."""
    from cellseg.metrics import evaluate
    from cellseg.models import load_model
    from cellseg.segmenter import Segmenter, SegmenterError

    seg = Segmenter.from_pretrained(name, **seg_kwargs)
    seg.segment(np.random.default_rng(0).random((64, 64)).astype(np.float32))  # warm-up (numba, torch)
    rows = []
    for title, items in test_sets(load_model(sets_of) if sets_of else seg.model, data_root).items():
        pairs, seconds, mpx, refused = [], 0.0, 0.0, 0
        for img_name, img, axes, gt in items:
            t = time.perf_counter()
            try:
                pred = seg.segment(img, axes=axes).labels
            except SegmenterError:
                refused += 1
                pred = np.zeros_like(gt)
            seconds += time.perf_counter() - t
            mpx += gt.shape[-1] * gt.shape[-2] / 1e6
            pairs.append((img_name, gt, pred))
        rep = evaluate(pairs)
        s = rep.summary
        rows.append({"model": Path(name).stem if str(name).endswith(".pt") else name, "split": title,
                     "n_images": len(pairs), "ap50": s["ap50"], "ap75": s["ap75"], "ap90": s["ap90"],
                     "map": s["map"], "f1": s["f1_50"], "seg": s["seg"], "s_per_mpx": seconds / max(mpx, 1e-9),
                     "train_min": float(seg.model.config.get("training", {}).get("train_seconds", float("nan"))) / 60,
                     "refused": refused})
        if refused:
            print(f"  ({name} refused {refused} of {len(items)} images of {title}: scored as empty)")
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=None, help="comma-separated bundled model names or model files "
                                                  "(default: all bundled models)")
    p.add_argument("--data", default=os.environ.get("CELLSEG_DATA", str(HERE.parent.parent / "shared" / "data")))
    p.add_argument("--sets-of", default=None, metavar="MODEL",
                   help="evaluate on the test splits of this model instead of each model's own (e.g. a "
                        "specialist on the general model's sources; never on the specialist's training images: "
                        "the general models' DSB fluorescence test split is the specialists')")
    p.add_argument("--diameter", default=None, help="Segmenter diameter for every model (default: the model's)")
    p.add_argument("--backend", default="auto", help="what runs the network: auto (the default path, as users get "
                                                    "it), torch or onnx (see docs/speed.md)")
    p.add_argument("--precision", default="auto", help="auto, fp32, bf16 or int8")
    p.add_argument("--json", default=None)
    p.add_argument("--markdown", action="store_true", help="also print the table in Markdown (README)")
    args = p.parse_args(argv)
    from cellseg.models import list_models

    names = args.models.split(",") if args.models else list_models()
    data_root = Path(args.data).resolve()
    if not data_root.is_dir():
        raise SystemExit(f"data folder {data_root} not found (set CELLSEG_DATA or --data)")
    rows = []
    print(f"{'model':18s} {'test split':26s} {'images':>6s} {'AP50':>6s} {'AP75':>6s} {'AP90':>6s} {'mAP':>6s} "
          f"{'F1':>6s} {'SEG':>6s} {'s/Mpx':>6s} {'train min':>9s}")
    for n in names:
        kw = {} if args.diameter is None else {"diameter": args.diameter}
        kw.update(backend=args.backend, precision=args.precision)
        for r in evaluate_model(n, data_root, sets_of=args.sets_of, **kw):
            rows.append(r)
            print(f"{r['model']:18s} {r['split']:26s} {r['n_images']:6d} {r['ap50']:6.3f} {r['ap75']:6.3f} "
                  f"{r['ap90']:6.3f} {r['map']:6.3f} {r['f1']:6.3f} {r['seg']:6.3f} {r['s_per_mpx']:6.2f} "
                  f"{r['train_min']:9.0f}", flush=True)
    if args.markdown:
        print("\n| model | test split | AP@0.5 | AP@0.75 | AP@0.9 | mAP 0.5:0.95 | F1@0.5 | SEG | s/Mpx | training |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| `{r['model']}` | {r['split']}, {r['n_images']} images | {r['ap50']:.3f} | {r['ap75']:.3f} | "
                  f"{r['ap90']:.3f} | {r['map']:.3f} | {r['f1']:.3f} | {r['seg']:.3f} | {r['s_per_mpx']:.1f} | "
                  f"{r['train_min']:.0f} min |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
