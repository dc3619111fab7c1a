"""DenoiSeg on noisy DSB 2018 nuclei: segmentation from a few annotated images, with and without
the joint denoising head (the DSB experiment of Buchholz et al. 2020, "DenoiSeg: joint denoising
and segmentation").

Usage (from the repository root)::

    .venv/bin/python -m benchmarks.bench_denoiseg [--quick] [--steps N] [--sigmas 10,20]
                                                  [--annotated 10,19] [--rep distance] [--tune-seconds S]
                                                  [--json FILE]

Data: the fluorescence images of ``$CELLSEG_DATA/DSB2018-stage1-train-fixed`` (8-bit, 0-255),
split as the bundled nuclei models split them (``cellseg.models.recipes``: test = 10% of the
names, then validation = 10% of the rest, the rest is the training split). Every image gets
pixel-wise Gaussian noise of standard deviation ``sigma`` on the 0-255 scale (float, not clipped;
a fixed seed per image and sigma). Of the training split, ``n`` images (a seeded permutation;
the 10 are among the 19) keep their masks; the others are unlabelled.

For each sigma and ``n`` two models are trained with the same network, patches, augmentation
(flips and 90° rotations only: Noise2Void needs noise that is independent from pixel to pixel)
and number of steps:

* ``seg only``: the representation's heads on the ``n`` annotated images;
* ``DenoiSeg``: the same plus the denoising head, Noise2Void masking on every patch, the
  unlabelled images as well (``TrainConfig(denoise=True)``, alpha 0.5, half the patches from
  annotated images).

Both pick their decode thresholds on the noisy validation split; the figures are on the noisy
test split: AP@0.5 (TP / (TP + FP + FN) after optimal matching at IoU >= 0.5, pooled over the
images), CTC SEG (pooled over the reference objects), and for DenoiSeg the PSNR of the denoised
test images against the clean ones (peak 255, mean over the images), beside the PSNR of the noisy
input. ``--quick`` is a reduced configuration (sigma 20, 10 annotated images, a small network,
few steps, 100 unlabelled and 10 validation / test images): a check that everything runs, whose
figures say little about the method.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HERE = Path(__file__).resolve().parent
NORM = {"pmin": 1.0, "pmax": 99.8}


def load_split(data_root: Path) -> dict[str, list]:
    """``{"train"|"val"|"test": [(name, clean float32 0-255 (Y, X), labels int32)]}``."""
    from cellseg.datasets import FolderDataset
    from cellseg.train.recipes import DSB_FOLDER, DSB_TEST_SEED, DSB_VAL_SEED

    ds = FolderDataset.dsb2018(data_root / DSB_FOLDER, modality="fluorescence")
    rest, test = ds.split(0.1, seed=DSB_TEST_SEED)
    train, val = ds.subset(rest).split(0.1, seed=DSB_VAL_SEED)

    def load(names):
        out = []
        for n in names:
            s = ds.load(n)
            img = np.asarray(s.image, np.float32)
            if "C" in s.axes:
                img = img.mean(axis=s.axes.index("C"))
            out.append((n, img, s.labels))
        return out

    return {"train": train, "val": val, "test": test, "load": load}


def add_noise(img: np.ndarray, sigma: float, index: int) -> np.ndarray:
    rng = np.random.default_rng([int(sigma), int(index), 18])
    return (img + rng.normal(0.0, sigma, img.shape)).astype(np.float32)


def psnr(clean: np.ndarray, x: np.ndarray, peak: float = 255.0) -> float:
    mse = float(np.mean((np.asarray(x, np.float64) - np.asarray(clean, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(peak * peak / mse)


def run_case(rep: str, sigma: float, n_annot: int, split: dict, args, denoise: bool) -> dict:
    from cellseg.denoise import denoise_image
    from cellseg.train import TrainConfig, TrainingData, fit
    from cellseg.train.augment import AugmentConfig
    from cellseg.train.denoiseg import UnlabeledData
    from cellseg.train.loop import evaluate_model

    def noisy(items, offset):
        return [(n, add_noise(img, sigma, offset + i), lab) for i, (n, img, lab) in enumerate(items)]

    tr, va, te = (noisy(split[k], o) for k, o in (("annot", 0), ("val", 10_000), ("test", 20_000)))
    train = TrainingData.from_arrays([(x, lab) for _, x, lab in tr], names=[n for n, _, _ in tr],
                                     normalization=NORM, source="dsb-train-annotated")
    val = TrainingData.from_arrays([(x, lab) for _, x, lab in va], names=[n for n, _, _ in va],
                                   normalization=NORM, source="dsb-val")
    test = TrainingData.from_arrays([(x, lab) for _, x, lab in te], names=[n for n, _, _ in te],
                                    normalization=NORM, source="dsb-test")
    unl = None
    if denoise:
        un = noisy(split["unlabeled"], 30_000)
        unl = UnlabeledData.from_arrays([x for _, x, _ in un], names=[n for n, _, _ in un], normalization=NORM)
    epochs = max(1, min(10, args.steps // 10))
    cfg = TrainConfig(epochs=epochs, steps_per_epoch=max(1, args.steps // epochs), batch_size=args.batch_size,
                      patch_size=args.patch, lr=1e-3, warmup_steps=min(50, args.steps // 10), schedule="cosine",
                      augment=AugmentConfig(rotate_prob=0.0, scale_prob=0.0, elastic_prob=0.0, intensity_prob=0.0,
                                            noise_prob=0.0, blur_prob=0.0),
                      val_max_images=args.val_max, tune_time_limit=args.tune_seconds, verbose=not args.quiet,
                      num_threads=args.threads, denoise=denoise, seed=0)
    t0 = time.perf_counter()
    model = fit(rep, train, val=val, config=cfg, backbone=args.backbone, unlabeled=unl, device=args.device)
    secs = time.perf_counter() - t0
    res = evaluate_model(model, test)
    row = {"sigma": sigma, "annotated": n_annot, "unlabeled": len(unl) if unl is not None else 0,
           "model": "DenoiSeg" if denoise else "seg only", "representation": rep, "steps": epochs *
           cfg.steps_per_epoch, "ap50": res["ap50"], "seg": res["seg"], "n_test": len(test),
           "psnr_input": float(np.mean([psnr(split["test"][i][1], x) for i, (_, x, _) in enumerate(te)])),
           "psnr_denoised": None, "train_seconds": secs}
    if denoise:
        row["psnr_denoised"] = float(np.mean([psnr(split["test"][i][1], denoise_image(model, x))
                                              for i, (_, x, _) in enumerate(te)]))
    return row


def format_table(rows: list[dict]) -> str:
    out = ["| sigma | annotated | unlabelled | model | AP@0.5 | SEG | PSNR denoised (dB) | PSNR noisy input (dB) "
           "| steps | train s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        den = "-" if r["psnr_denoised"] is None else f"{r['psnr_denoised']:.2f}"
        out.append(f"| {r['sigma']:g} | {r['annotated']} | {r['unlabeled']} | {r['model']} | {r['ap50']:.3f} | "
                   f"{r['seg']:.3f} | {den} | {r['psnr_input']:.2f} | {r['steps']} | {r['train_seconds']:.0f} |")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.environ.get("CELLSEG_DATA", str(HERE.parent.parent / "shared" / "data")))
    p.add_argument("--quick", action="store_true", help="reduced configuration (see above)")
    p.add_argument("--steps", type=int, default=None, help="training steps per model (default 2000; quick 60)")
    p.add_argument("--sigmas", default=None, help="noise levels on the 0-255 scale (default 10,20; quick 20)")
    p.add_argument("--annotated", default=None, help="numbers of annotated images (default 10,19; quick 10)")
    p.add_argument("--rep", default="distance", choices=("distance", "stardist", "flows", "offsets"))
    p.add_argument("--max-unlabeled", type=int, default=None, help="at most this many unlabelled images")
    p.add_argument("--max-test", type=int, default=None, help="at most this many test (and validation) images")
    p.add_argument("--tune-seconds", type=float, default=None,
                   help="time limit of each model's threshold search on validation (default 600; quick 60)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", default=None)
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    q = args.quick
    args.steps = args.steps or (60 if q else 2000)
    sigmas = [float(s) for s in (args.sigmas or ("20" if q else "10,20")).split(",")]
    annotated = [int(n) for n in (args.annotated or ("10" if q else "10,19")).split(",")]
    max_unl = args.max_unlabeled if args.max_unlabeled is not None else (100 if q else None)
    max_test = args.max_test if args.max_test is not None else (10 if q else None)
    args.backbone = ({"name": "unet", "depth": 2, "width": 16, "norm": "batch", "seed": 0} if q else
                     {"name": "unet", "depth": 3, "width": 32, "norm": "batch", "seed": 0})
    args.batch_size, args.patch = (4, 64) if q else (8, 128)
    args.val_max = 10 if q else 16
    if args.tune_seconds is None:
        args.tune_seconds = 60.0 if q else 600.0

    data_root = Path(args.data).resolve()
    if not data_root.is_dir():
        raise SystemExit(f"data folder {data_root} not found (set CELLSEG_DATA or --data)")
    split = load_split(data_root)
    load = split.pop("load")
    order = np.random.default_rng(18).permutation(len(split["train"]))
    train_names = [split["train"][i] for i in order]
    if max(annotated) >= len(train_names):
        raise SystemExit(f"the training split has {len(train_names)} images; annotate fewer")
    cut = (lambda names: names[:max_test]) if max_test else (lambda names: names)
    base = {"val": load(cut(split["val"])), "test": load(cut(split["test"]))}
    rows = []
    print(f"DSB 2018 fluorescence: {len(train_names)} training, {len(base['val'])} validation, {len(base['test'])} "
          f"test images; representation {args.rep}, {args.steps} steps per model", flush=True)
    for n in annotated:
        rest = train_names[n:]
        case = {**base, "annot": load(train_names[:n]),
                "unlabeled": load(rest[:max_unl] if max_unl is not None else rest)}
        for sigma in sigmas:
            for denoise in (False, True):
                row = run_case(args.rep, sigma, n, case, args, denoise)
                rows.append(row)
                print(format_table([row]).splitlines()[-1], flush=True)
                if args.json:  # after every model, so that an interrupted run keeps what it measured
                    Path(args.json).write_text(json.dumps(rows, indent=1))
    print()
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
