"""Regenerate the project-made sample images in cellseg/samples/.

    python data/make_samples.py            # writes cellseg/samples/*.tif
    python data/make_samples.py --out DIR  # somewhere else

The samples are synthetic (cellseg.datasets.synthetic, fixed seeds), so they
carry no third-party licence. Images are stored as uint16 "camera counts"
(offset 100, 4000 counts per unit of synthetic intensity), 0.5 µm pixels.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OFFSET, GAIN, PIXEL_UM = 100, 4000.0, 0.5


def to_counts(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img * GAIN) + OFFSET, 0, 65535).astype(np.uint16)


def make_samples(out_dir) -> list[Path]:
    from cellseg.datasets.synthetic import synthetic_cells, synthetic_stack
    from cellseg.io import write_image, write_labels

    out = Path(out_dir)
    px = {"Y": PIXEL_UM, "X": PIXEL_UM}
    img, lab = synthetic_cells((512, 512), n_cells=180, radius=(6, 14), seed=2024, touching=0.4)
    t_img, t_lab = synthetic_stack(5, (256, 256), n_cells=45, radius=(6, 12), seed=7, touching=0.4, motion=1.5)
    return [
        write_image(out / "synthetic_nuclei.tif", to_counts(img), "YX", pixel_size=px),
        write_labels(out / "synthetic_nuclei_labels.tif", lab, "YX", pixel_size=px),
        write_image(out / "synthetic_nuclei_t.tif", to_counts(t_img), "TYX", pixel_size=px),
        write_labels(out / "synthetic_nuclei_t_labels.tif", t_lab, "TYX", pixel_size=px),
    ]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "cellseg" / "samples"), help="output folder")
    args = ap.parse_args(argv)
    for p in make_samples(args.out):
        print(f"{p}  {p.stat().st_size / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
