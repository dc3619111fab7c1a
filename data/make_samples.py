"""Regenerate the sample images in cellseg/samples/.

    python data/make_samples.py            # writes cellseg/samples/*.tif
    python data/make_samples.py --out DIR  # somewhere else
    python data/make_samples.py --dsb DATA/DSB2018-stage1-train-fixed   # also the two real DSB samples

The real samples (``dsb_nuclei``, ``dsb_he``) are two images of the 2018 Data Science Bowl
stage1_train set (BBBC038, community-fixed annotations; CC0 1.0, Caicedo et al., Nature
Methods 2019), copied unchanged with their annotation as labels. They are images of the
test splits of the bundled models (never trained or tuned on): the fluorescence image and the
colour image with the most annotated nuclei there (199 and 73).

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


#: sample name -> DSB 2018 image id: the fluorescence and the colour image with the most annotated nuclei
#: among the test split shared by the nuclei models (chosen by that rule, not by how a model does on them)
DSB_SAMPLES = {
    "dsb_nuclei": "e23e11414ee645b51081fb202d38b793f0c8ef2940f8228ded384899d21b02c2",
    "dsb_he": "0c2550a23b8a0f29a7575de8c61690d3c31bc897dd5ba66caec201d201a278c2",
}


def copy_dsb_samples(dsb_root, out_dir) -> list[Path]:
    """The DSB images byte for byte (RGBA PNG, as distributed) and their labels as TIFF."""
    import shutil

    from cellseg.io import read_labels, write_labels

    root, out = Path(dsb_root), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, image_id in DSB_SAMPLES.items():
        paths.append(Path(shutil.copyfile(root / "images" / f"{image_id}.png", out / f"{name}.png")))
        paths.append(write_labels(out / f"{name}_labels.tif", read_labels(root / "masks" / f"{image_id}.tif"), "YX"))
    return paths


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "cellseg" / "samples"), help="output folder")
    ap.add_argument("--dsb", default=None, help="DSB2018-stage1-train-fixed folder: also copy the real samples")
    args = ap.parse_args(argv)
    paths = make_samples(args.out) + (copy_dsb_samples(args.dsb, args.out) if args.dsb else [])
    for p in paths:
        print(f"{p}  {p.stat().st_size / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
