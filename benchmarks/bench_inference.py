"""Network speed on the CPU: eager torch fp32 and the fast paths side by side, in one run.

For each bundled model (or ``--models``), on the DSB 2018 fluorescence test split (the split of
``benchmarks/bench_accuracy.py``: the ``nuclei`` model's, the same 54 images as the nuclei
specialists') and optionally a synthetic image of ``--synthetic N`` px a side, every path of
``cellseg.models.inference`` that can run here — torch fp32 (the reference), torch bf16, onnx
fp32, onnx int8 (models with int8 ranges) — is timed with the repeats interleaved (path after
path in each round, so that load from other processes hits every path alike):

* network s/Mpx: ``model.predict`` on each image normalized at its own scale (the network
  alone: padding, no tiling), the median of ``--repeats`` rounds, per megapixel of image;
* end to end s/Mpx: ``Segmenter.segment`` of each image with the model's defaults (object
  size estimate, resampling, tiling, decoding), the median of the rounds;
* the ratio of each to torch fp32, and the largest absolute difference of the network's
  outputs from torch fp32 (per head, over the images);
* AP@0.5 (and AP@0.75) on the DSB fluorescence test split for ``--ap-models`` (default
  ``nuclei``) with each path, through the public ``Segmenter``;
* setup: the first-use cost of a path (ONNX export, int8 quantization), not in the timings.

``--calibrate`` first measures the int8 activation ranges of each model on its validation
split (never the test split: the inputs the network gets from ``Segmenter.segment`` of up to
``--calibration-images`` validation images, spread over the model's sources) and writes them to
``cellseg/models/weights/<name>.int8.json`` (what ``--precision int8`` uses for bundled models),
then segments each of the model's test splits with fp32 and int8: int8 becomes the model's
default CPU path (``"default": true`` in the file) only when AP@0.5 stays within 0.005 of fp32
on every split.

    python benchmarks/bench_inference.py [--models nuclei] [--threads 2] [--repeats 3]
        [--synthetic 2048] [--json out.json] [--calibrate] [--data ../shared/data]

Run it alone on the machine (``flock /tmp/cellseg-cpu.lock ...``): the figures are times.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

#: a fast path is a model's default only when its AP@0.5 stays within this of fp32's
AP_TOLERANCE = 0.005
ALL_PATHS = (("torch", "fp32"), ("torch", "bf16"), ("onnx", "fp32"), ("onnx", "int8"))


def _label(path) -> str:
    return f"{path[0]} {path[1]}"


def dsb_test(data_root: Path) -> list:
    """``[(name, image, axes, labels)]``: the DSB fluorescence test split of ``nuclei``."""
    from benchmarks.bench_accuracy import test_sets
    from cellseg.models import load_model

    return test_sets(load_model("nuclei", device="cpu"), data_root)["DSB fluo"]


def val_images(model, data_root: Path, n: int) -> list:
    """Up to ``n`` ``(image, axes)`` of the model's validation split, spread over its sources."""
    from cellseg import io

    split = model.config.get("training", {}).get("split") or {}
    names = list(split.get("val") or [])
    recipe = model.config.get("training", {}).get("recipe", "")
    paths: list[list] = []
    if recipe in ("nuclei", "cells"):
        from cellseg.train.general import _source_items

        for source in split.get("sources", {}):
            items = {nm: ip for nm, ip, _ in _source_items(source, data_root)[0]["val"]}
            paths.append([items[nm] for nm in names if nm in items])
    elif recipe.startswith("nuclei-"):
        from cellseg.datasets import FolderDataset

        ds = FolderDataset.dsb2018(data_root / "DSB2018-stage1-train-fixed", modality="fluorescence")
        paths.append([ds.image_path(nm) for nm in sorted(names)])
    elif recipe.startswith("hela-dic-"):
        from cellseg.datasets import CTCDataset
        from cellseg.train.recipes import HELA_VAL_FROM

        ctc = CTCDataset(data_root / "DIC-C2DH-HeLa")
        paths.append([fr.image_path for fr in ctc.pairs("01", truth="ST") if fr.t >= HELA_VAL_FROM])
    else:
        raise SystemExit(f"{model.name}: no validation split recorded (recipe {recipe!r})")
    # round robin over the sources, so a small source is not crowded out by a large one
    chosen, i = [], 0
    while len(chosen) < n and any(i < len(p) for p in paths):
        chosen += [p[i] for p in paths if i < len(p)]
        i += 1
    out = []
    for p in chosen[:n]:
        im = io.read_image(p)
        out.append((np.asarray(im.data), im.axes))
    return out


def calibrate_bundled(name: str, data_root: Path, n: int) -> Path:
    """Measure the int8 ranges of bundled model ``name`` on the network inputs of its validation
    images (as ``Segmenter.segment`` feeds them, object size estimate included), and write them
    beside its weights."""
    from cellseg.models import load_model
    from cellseg.models.inference import _ranges_path, calibrate
    from cellseg.segmenter import Segmenter

    model = load_model(name, device="cpu")
    seen: list[np.ndarray] = []
    orig = model._forward

    def spy(x, *a, **k):
        seen.append(np.array(x, np.float32))
        return orig(x, *a, **k)

    model._forward = spy
    seg = Segmenter(model, backend="torch", precision="fp32")
    for img, axes in val_images(model, data_root, n):
        seg.segment(img, axes=axes)
    del model._forward
    # one input per image pass is enough: drop the test-time augmentation's transposed copies
    uniq, shapes = [], set()
    for x in seen:
        key = (x.shape, float(x.sum()))
        if key not in shapes:
            shapes.add(key)
            uniq.append(x)
    out = _ranges_path(name)
    calibrate(model, uniq, save=out)
    print(f"{name}: int8 ranges from {len(uniq)} network inputs of {n} validation images -> {out}")
    return out


def check_int8(name: str, data_root: Path) -> dict:
    """AP@0.5 of bundled model ``name`` on each of its test splits (``bench_accuracy.test_sets``)
    with torch fp32 and onnx int8; int8 becomes the model's default CPU path (``"default": true``
    in its ranges file) when no split loses more than :data:`AP_TOLERANCE`."""
    from benchmarks.bench_accuracy import test_sets
    from cellseg.metrics import evaluate
    from cellseg.models import load_model
    from cellseg.models.inference import _ranges_path
    from cellseg.segmenter import Segmenter, SegmenterError

    model = load_model(name, device="cpu")
    splits = {}
    for title, items in test_sets(model, data_root).items():
        ap = {}
        for path in (("torch", "fp32"), ("onnx", "int8")):
            seg = Segmenter(model, backend=path[0], precision=path[1])
            pairs = []
            for nm, img, axes, gt in items:
                try:
                    lab = seg.segment(img, axes=axes).labels
                except SegmenterError:  # a colour image for a grey model: empty, as bench_accuracy counts it
                    lab = np.zeros_like(gt)
                pairs.append((nm, gt, lab))
            ap[path[1]] = float(evaluate(pairs).summary["ap50"])
        splits[title] = {"n_images": len(items), "ap50_fp32": ap["fp32"], "ap50_int8": ap["int8"],
                         "delta": ap["int8"] - ap["fp32"]}
        print(f"  {name} {title}: AP@0.5 fp32 {ap['fp32']:.4f} int8 {ap['int8']:.4f} "
              f"({ap['int8'] - ap['fp32']:+.4f})", flush=True)
    ok = all(v["delta"] >= -AP_TOLERANCE for v in splits.values())
    p = _ranges_path(name)
    rec = json.loads(p.read_text())
    rec["check"] = {"test_splits": splits, "tolerance": AP_TOLERANCE,
                    "rule": "AP@0.5 of int8 within the tolerance of fp32 (or better) on every test split"}
    rec["default"] = bool(ok)
    p.write_text(json.dumps(rec, indent=0, sort_keys=True) + "\n")
    print(f"{name}: int8 {'is' if ok else 'is not'} the default CPU path")
    return rec["check"]


def _normalized(seg, img, axes):
    """The frame as the network gets it at the image's own scale (channels picked as the
    Segmenter picks them)."""
    from cellseg.segmenter import TRANSFORMS

    x, ax, _, _ = seg._select_channel(np.asarray(img), axes, None, None)
    if "C" in ax:
        x = np.moveaxis(x, ax.index("C"), 0)
    x = seg._match_channels(x, "C" in ax)
    return TRANSFORMS[seg.transform](seg.normalized(x))


def bench_model(name: str, items: list, paths: list, repeats: int, ap: bool) -> dict:
    from cellseg.metrics import evaluate
    from cellseg.models import load_model
    from cellseg.models.inference import InferenceError
    from cellseg.segmenter import Segmenter

    model = load_model(name, device="cpu")
    mpx = sum(float(np.prod(gt.shape[-2:])) for _, _, _, gt in items) / 1e6
    segs, setup = {}, {}
    for p in paths:
        t = time.perf_counter()
        try:
            s = Segmenter(model, backend=p[0], precision=p[1])
            s.model.predict(np.zeros((model.in_channels, 64, 64), np.float32), backend=p[0], precision=p[1])
        except InferenceError as exc:
            print(f"  {name} {_label(p)}: skipped ({exc})")
            continue
        setup[p] = time.perf_counter() - t
        segs[p] = s
    inputs = [_normalized(segs[("torch", "fp32")], img, axes) for _, img, axes, _ in items]
    # outputs and their differences from fp32
    ref = [model.predict(x, augment=False) for x in inputs]
    diff = {}
    for p in segs:
        d = 0.0
        for x, r in zip(inputs, ref):
            o = model.predict(x, augment=False, backend=p[0], precision=p[1])
            d = max(d, max(float(np.max(np.abs(o[h] - r[h]))) for h in r))
        diff[p] = d
    net = {p: [] for p in segs}
    e2e = {p: [] for p in segs}
    labels = {p: None for p in segs}
    for s in segs.values():  # warm-up: numba, first calls
        s.segment(np.random.default_rng(0).random((64, 64)).astype(np.float32))
    for _ in range(repeats):
        for p, s in segs.items():
            t = time.perf_counter()
            for x in inputs:
                model.predict(x, augment=False, backend=p[0], precision=p[1])
            net[p].append(time.perf_counter() - t)
        for p, s in segs.items():
            t = time.perf_counter()
            labs = [s.segment(img, axes=axes).labels for _, img, axes, _ in items]
            e2e[p].append(time.perf_counter() - t)
            labels[p] = labs
    rows, runs = [], []
    base_net, base_e2e = np.median(net[("torch", "fp32")]), np.median(e2e[("torch", "fp32")])
    ap_ref = None
    for p in segs:
        row = {"model": name, "path": _label(p),
               "net_s_per_mpx": float(np.median(net[p]) / mpx), "net_speedup": float(base_net / np.median(net[p])),
               "e2e_s_per_mpx": float(np.median(e2e[p]) / mpx), "e2e_speedup": float(base_e2e / np.median(e2e[p])),
               "max_abs_diff": diff[p]}
        if ap:
            s = evaluate([(nm, gt, lab) for (nm, _, _, gt), lab in zip(items, labels[p])]).summary
            ap_ref = float(s["ap50"]) if ap_ref is None else ap_ref  # torch fp32 runs first
            row.update(ap50=float(s["ap50"]), ap50_delta=float(s["ap50"]) - ap_ref, ap75=float(s["ap75"]))
        row.update(setup_s=setup[p], n_images=len(items), mpx=mpx)
        rows.append(row)
        runs.append({"model": name, "path": _label(p), "net_runs_s": [float(v) for v in net[p]],
                     "e2e_runs_s": [float(v) for v in e2e[p]]})
    return {"rows": rows, "runs": runs}


def bench_synthetic(name: str, side: int, paths: list, repeats: int) -> list[dict]:
    """One synthetic ``side``² image: network and end to end (the model's defaults)."""
    from cellseg.datasets.synthetic import synthetic_cells
    from cellseg.models import load_model
    from cellseg.models.inference import InferenceError
    from cellseg.segmenter import Segmenter

    model = load_model(name, device="cpu")
    img, _ = synthetic_cells((side, side), n_cells=max(8, side * side // 1500), seed=3)
    img = (img * 1000).astype(np.float32)
    segs = {}
    for p in paths:
        try:
            segs[p] = Segmenter(model, backend=p[0], precision=p[1], diameter="off")
            segs[p].model.predict(np.zeros((model.in_channels, 64, 64), np.float32), backend=p[0], precision=p[1])
        except InferenceError:
            segs.pop(p, None)
    x = _normalized(segs[("torch", "fp32")], img, "YX")
    net = {p: [] for p in segs}
    e2e = {p: [] for p in segs}
    for _ in range(repeats):
        for p, s in segs.items():
            t = time.perf_counter()
            model.predict(x, augment=False, backend=p[0], precision=p[1])
            net[p].append(time.perf_counter() - t)
            t = time.perf_counter()
            s.segment(img)
            e2e[p].append(time.perf_counter() - t)
    mpx = side * side / 1e6
    b_net, b_e2e = np.median(net[("torch", "fp32")]), np.median(e2e[("torch", "fp32")])
    return [{"model": name, "path": _label(p), "image": f"synthetic {side}x{side} (diameter off)",
             "net_s_per_mpx": float(np.median(net[p]) / mpx), "e2e_s_per_mpx": float(np.median(e2e[p]) / mpx),
             "net_speedup": float(b_net / np.median(net[p])), "e2e_speedup": float(b_e2e / np.median(e2e[p]))}
            for p in segs]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=None, help="comma-separated bundled model names (default: all)")
    p.add_argument("--paths", default=",".join(f"{b}-{q}" for b, q in ALL_PATHS),
                   help="comma-separated BACKEND-PRECISION paths (torch-fp32 is always run: the reference)")
    p.add_argument("--ap-models", default="nuclei", help="models whose AP on the DSB fluorescence test split is "
                                                         "measured with each path ('' for none)")
    p.add_argument("--threads", type=int, default=2, help="torch (and ONNX Runtime) threads")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--images", type=int, default=None, help="only the first N test images (a quick run)")
    p.add_argument("--synthetic", type=int, default=0, metavar="N", help="also time a synthetic N x N image")
    p.add_argument("--calibrate", action="store_true",
                   help="first write each model's int8 ranges, measured on its validation split")
    p.add_argument("--calibration-images", type=int, default=24)
    p.add_argument("--data", default=os.environ.get("CELLSEG_DATA", str(HERE.parent.parent / "shared" / "data")))
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from cellseg.models import list_models

    names = args.models.split(",") if args.models else list_models()
    paths = [tuple(s.strip().split("-", 1)) for s in args.paths.split(",") if s.strip()]
    if ("torch", "fp32") not in paths:
        paths.insert(0, ("torch", "fp32"))
    data_root = Path(args.data).resolve()
    if not data_root.is_dir():
        raise SystemExit(f"data folder {data_root} not found (set CELLSEG_DATA or --data)")
    if args.calibrate:
        for n in names:
            calibrate_bundled(n, data_root, args.calibration_images)
            check_int8(n, data_root)
    items = dsb_test(data_root)[: args.images]
    ap_models = {m for m in args.ap_models.split(",") if m}
    from cellseg.models.inference import bf16_supported

    meta = {"threads": args.threads, "repeats": args.repeats, "cpu": platform.processor() or platform.machine(),
            "bf16_native": bf16_supported(), "torch": torch.__version__, "images": len(items),
            "split": "DSB 2018 fluorescence test split (bench_accuracy.py, the nuclei model's)"}
    try:
        import onnxruntime

        meta["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        meta["onnxruntime"] = None
    print(f"{len(items)} DSB fluorescence test images, {args.threads} threads, median of {args.repeats} "
          f"interleaved rounds; bf16 native: {meta['bf16_native']}")
    print(f"{'model':16s} {'path':11s} {'net s/Mpx':>9s} {'x':>5s} {'e2e s/Mpx':>9s} {'x':>5s} {'max|diff|':>9s} "
          f"{'AP50':>6s} {'dAP50':>7s} {'AP75':>6s} {'setup s':>7s}")
    rows, runs = [], []
    for n in names:
        res = bench_model(n, items, paths, args.repeats, ap=n in ap_models)
        runs += res["runs"]
        for r in res["rows"]:
            rows.append(r)
            ap = (f"{r['ap50']:6.3f} {r['ap50_delta']:+7.4f} {r['ap75']:6.3f}" if "ap50" in r else f"{'':6s} {'':7s} "
                  f"{'':6s}")
            print(f"{r['model']:16s} {r['path']:11s} {r['net_s_per_mpx']:9.2f} {r['net_speedup']:5.2f} "
                  f"{r['e2e_s_per_mpx']:9.2f} {r['e2e_speedup']:5.2f} {r['max_abs_diff']:9.2e} {ap} "
                  f"{r['setup_s']:7.1f}", flush=True)
    synth = []
    if args.synthetic:
        for n in names:
            for r in bench_synthetic(n, args.synthetic, paths, args.repeats):
                synth.append(r)
                print(f"{r['model']:16s} {r['path']:11s} {r['net_s_per_mpx']:9.2f} {r['net_speedup']:5.2f} "
                      f"{r['e2e_s_per_mpx']:9.2f} {r['e2e_speedup']:5.2f}  ({r['image']})", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows, "synthetic": synth, "runs": runs},
                                              indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
