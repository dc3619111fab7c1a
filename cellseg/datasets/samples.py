"""Small sample images shipped with cellseg (``cellseg/samples/``).

The ``synthetic_*`` samples are made by ``data/make_samples.py`` with
:mod:`cellseg.datasets.synthetic`; ``dsb_nuclei`` and ``dsb_he`` (with their
annotations) are two images of the 2018 Data Science Bowl stage1_train set
(BBBC038, CC0 1.0; Caicedo et al., Nature Methods 16, 1247-1253, 2019), copied by
``data/make_samples.py --dsb``. All can be redistributed freely.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from cellseg import io

__all__ = ["SAMPLES", "list_samples", "sample", "sample_path"]

SAMPLES = {
    "synthetic_nuclei": ("synthetic_nuclei.tif", "512x512 uint16 synthetic nuclei (180 cells, some touching), YX"),
    "synthetic_nuclei_labels": ("synthetic_nuclei_labels.tif", "labels of synthetic_nuclei, YX"),
    "synthetic_nuclei_t": ("synthetic_nuclei_t.tif", "5x256x256 uint16 time-lapse of 45 moving nuclei, TYX"),
    "synthetic_nuclei_t_labels": ("synthetic_nuclei_t_labels.tif",
                                  "labels of synthetic_nuclei_t (same id over time), TYX"),
    "dsb_nuclei": ("dsb_nuclei.png", "520x696 fluorescence nuclei (199 annotated), DSB 2018 stage1_train e23e1141... "
                                     "(grey stored as RGBA PNG, read as YX), CC0 (Caicedo et al. 2019)"),
    "dsb_nuclei_labels": ("dsb_nuclei_labels.tif", "annotation of dsb_nuclei (DSB 2018, community-fixed), YX"),
    "dsb_he": ("dsb_he.png", "256x320 colour (stained tissue) nuclei (73 annotated), DSB 2018 stage1_train "
                             "0c2550a2... (RGBA PNG, read as YXC), CC0 (Caicedo et al. 2019)"),
    "dsb_he_labels": ("dsb_he_labels.tif", "annotation of dsb_he (DSB 2018, community-fixed), YX"),
}


def list_samples() -> list[str]:
    """Names accepted by :func:`sample`."""
    return list(SAMPLES)


def sample_path(name: str) -> Path:
    """Path of a bundled sample file."""
    if name not in SAMPLES:
        raise ValueError(f"unknown sample {name!r}; available: {', '.join(SAMPLES)}")
    path = Path(str(resources.files("cellseg") / "samples" / SAMPLES[name][0]))
    if not path.is_file():
        raise FileNotFoundError(f"{path}: sample file missing from the installation (run data/make_samples.py)")
    return path


def sample(name: str) -> io.ImageData:
    """Read a bundled sample as :class:`cellseg.io.ImageData` (axes, 0.5 µm pixels)."""
    return io.read_image(sample_path(name))
