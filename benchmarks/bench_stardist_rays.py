"""Where a StarDist model loses accuracy: its probability or its ray distances.

On the test split of a StarDist model trained by a recipe (the names recorded in the
model's config), each image is decoded four ways with the model's thresholds:

- ``predicted``: the network's probability and distances (what the model gives);
- ``oracle``: the targets of the ground truth (``StarDist.encode``): the decoder's ceiling;
- ``network prob, true dist``: the network's probability with the true ray distances;
- ``true prob, network dist``: the true probability with the network's distances.

and prints AP at IoU 0.5, 0.75 and 0.9 for each, plus the ray error at object centres
(pixels whose true probability exceeds 0.5): mean signed error (px), mean absolute error
(px) and mean relative error (|error| / true distance). When the ``network prob, true
dist`` row is close to the oracle and ``true prob, network dist`` is close to the
prediction, the distances are what limits the model.

    python benchmarks/bench_stardist_rays.py --model nuclei-stardist [--max-images 20] [--data ../shared/data]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="nuclei-stardist", help="bundled name or model file (a DSB StarDist recipe)")
    ap.add_argument("--data", default=os.environ.get("CELLSEG_DATA", str(HERE.parent.parent / "shared" / "data")))
    ap.add_argument("--max-images", type=int, default=None)
    args = ap.parse_args(argv)

    from cellseg.metrics import matching_dataset
    from cellseg.segmenter import Segmenter, drain  # drain: a generator's return value
    from cellseg.train.dataset import TrainingData
    from cellseg.train.recipes import DSB_FOLDER

    seg = Segmenter.from_pretrained(args.model, device="cpu")
    rep = seg.rep
    if rep.name != "stardist":
        raise SystemExit(f"{args.model}: a {rep.name} model; this benchmark needs a StarDist model")
    split = seg.model.config.get("training", {}).get("split", {})
    names = list(split.get("test", []))[: args.max_images]
    if not names:
        raise SystemExit(f"{args.model}: the model records no test split")
    data = TrainingData.dsb2018(Path(args.data) / DSB_FOLDER, names=names)
    rows = {k: ([], []) for k in ("predicted", "oracle", "network prob, true dist", "true prob, network dist")}
    err = []
    for s in data.samples:
        img = s.image[0] if s.image.ndim == 3 else s.image
        gt = s.labels
        out = drain(seg.predict(img))
        enc = rep.encode(gt)
        tp, td = enc["prob"][0], enc["dist"]
        pp, pd = out["prob"][0], out["dist"]
        centre = tp > 0.5
        e = pd[:, centre] - td[:, centre]
        err.append((e.mean(), np.abs(e).mean(), (np.abs(e) / np.maximum(td[:, centre], 1.0)).mean()))
        for key, (p, d) in {"predicted": (pp, pd), "oracle": (tp, td), "network prob, true dist": (pp, td),
                            "true prob, network dist": (tp, pd)}.items():
            rows[key][0].append(gt)
            rows[key][1].append(seg.decode({"prob": p[None], "dist": d}).labels)
    e = np.mean(np.array(err), axis=0)
    print(f"model {args.model}: {len(data)} test images of {DSB_FOLDER}")
    print(f"ray error at object centres: signed {e[0]:+.2f} px, absolute {e[1]:.2f} px, relative {e[2]:.3f}")
    print("| decoded from | AP@0.5 | AP@0.75 | AP@0.9 |\n|---|---|---|---|")
    for key, (ys, ps) in rows.items():
        aps = [matching_dataset(ys, ps, thresh=t).accuracy for t in (0.5, 0.75, 0.9)]
        print(f"| {key} | " + " | ".join(f"{a:.3f}" for a in aps) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
