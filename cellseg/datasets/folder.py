"""A folder of images with a parallel folder of label masks.

::

    root/images/<name>.png|.tif|.tiff|.jpg
    root/masks/<name>.tif|.tiff|.png       (int label images, 0 = background)

Images and masks are paired by file stem. Loading is lazy: a :class:`Sample`
is read from disk when indexed. Colour PNGs whose channels are all equal (the
DSB 2018 images are RGBA with three equal channels) are read as grey ``YX``
images (see :func:`cellseg.io.read_image`).
"""
from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cellseg import io
from cellseg.datasets.ctc import DatasetError, MissingFolderError, need_dir, short_listing

__all__ = ["FolderDataset", "Sample", "IMAGE_SUFFIXES", "MASK_SUFFIXES"]

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
MASK_SUFFIXES = (".tif", ".tiff", ".png")


@dataclass(frozen=True)
class Sample:
    """One image with its int32 labels. ``axes`` describes ``image``."""

    name: str
    image: np.ndarray
    labels: np.ndarray
    axes: str = "YX"


def _files(folder: Path, suffixes) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for f in sorted(folder.iterdir()):
        if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in suffixes:
            if f.stem in out:
                raise DatasetError(f"{folder}: two files with the name {f.stem!r}: {out[f.stem].name} and {f.name}")
            out[f.stem] = f
    return out


class FolderDataset(Sequence):
    """Images and masks paired by name; ``len()``, indexing by position or name.

    Parameters
    ----------
    root : folder holding the two subfolders.
    images, masks : names of the subfolders (relative to ``root``) or paths.
    names : optional subset (and order) of sample names; unknown names raise.

    Raises :class:`DatasetError` (``MissingFolderError`` for missing folders)
    listing images without masks and masks without images, or when the
    folders hold no images at all.
    """

    def __init__(self, root, images: str | Path = "images", masks: str | Path = "masks", names=None):
        self.root = need_dir(Path(root), "dataset folder")
        self.images_dir = need_dir(self.root / images, "images folder")
        self.masks_dir = need_dir(self.root / masks, "masks folder")
        self._images = _files(self.images_dir, IMAGE_SUFFIXES)
        self._masks = _files(self.masks_dir, MASK_SUFFIXES)
        if not self._images and not self._masks:
            raise DatasetError(
                f"{self.root}: no images in {self.images_dir} and no masks in {self.masks_dir} "
                f"(expected {', '.join(IMAGE_SUFFIXES)} files)"
            )
        no_mask = [n for n in self._images if n not in self._masks]
        no_image = [n for n in self._masks if n not in self._images]
        if no_mask or no_image:
            parts = []
            if no_mask:
                parts.append(f"{len(no_mask)} image(s) in {self.images_dir} without a mask: "
                             f"{short_listing(self._images[n].name for n in no_mask)}")
            if no_image:
                parts.append(f"{len(no_image)} mask(s) in {self.masks_dir} without an image: "
                             f"{short_listing(self._masks[n].name for n in no_image)}")
            raise DatasetError(f"{self.root}: " + "; ".join(parts))
        if names is None:
            self._names = sorted(self._images)
        else:
            names = [str(n) for n in names]
            unknown = [n for n in names if n not in self._images]
            if unknown:
                raise DatasetError(f"{self.root}: unknown sample name(s): {short_listing(unknown)}")
            if len(set(names)) != len(names):
                raise DatasetError(f"{self.root}: repeated sample names in names=")
            self._names = names

    # ----------------------------------------------------------------- access
    @property
    def names(self) -> list[str]:
        return list(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self):
        return f"FolderDataset({str(self.root)!r}, {len(self)} samples)"

    def image_path(self, name: str) -> Path:
        return self._images[self._check_name(name)]

    def mask_path(self, name: str) -> Path:
        return self._masks[self._check_name(name)]

    def _check_name(self, name: str) -> str:
        if name not in self._names:
            raise KeyError(f"{self.root}: no sample named {name!r}")
        return name

    def __getitem__(self, key):
        if isinstance(key, slice):
            return [self.load(n) for n in self._names[key]]
        if isinstance(key, (int, np.integer)):
            n = len(self._names)
            if not -n <= key < n:
                raise IndexError(f"sample index {key} out of range for {n} samples")
            return self.load(self._names[int(key)])
        if isinstance(key, str):
            return self.load(key)
        raise TypeError(f"index with an int, a slice or a sample name, not {type(key).__name__}")

    def __iter__(self):
        for n in self._names:
            yield self.load(n)

    def load(self, name: str) -> Sample:
        """Read one sample; checks that image and mask sizes agree."""
        ip, mp = self.image_path(name), self.mask_path(name)
        img = io.read_image(ip)
        lab = io.read_labels(mp)
        spatial = tuple(s for s, a in zip(img.shape, img.axes) if a != "C")
        if spatial != lab.shape:
            raise DatasetError(f"{mp}: mask of shape {lab.shape} does not match image {ip.name} of shape {img.shape} "
                               f"(axes {img.axes})")
        return Sample(name=name, image=img.data, labels=lab, axes=img.axes)

    # ----------------------------------------------------------------- subsets
    def subset(self, names) -> "FolderDataset":
        """A dataset over the same folders restricted to ``names``."""
        # absolute sub-folders: with a relative root, root / "root/images" would nest the root twice
        return FolderDataset(self.root, self.images_dir.absolute(), self.masks_dir.absolute(), names=names)

    def split(self, val_fraction: float = 0.1, seed: int = 0) -> tuple[list[str], list[str]]:
        """Deterministic random split into ``(train_names, val_names)``.

        ``round(len * val_fraction)`` names (at least one when
        ``val_fraction > 0`` and there are two samples or more) go to
        validation. Same names and seed, same split. Both lists are sorted.
        """
        if not 0.0 <= float(val_fraction) < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        names = sorted(self._names)
        n = len(names)
        n_val = int(round(n * val_fraction))
        if val_fraction > 0 and n_val == 0 and n > 1:
            n_val = 1
        n_val = min(n_val, n - 1) if n > 1 else 0
        perm = np.random.default_rng(seed).permutation(n)
        val = sorted(names[i] for i in perm[:n_val])
        train = sorted(names[i] for i in perm[n_val:])
        return train, val

    # ----------------------------------------------------------------- DSB 2018
    @classmethod
    def dsb2018(cls, root, modality: str | None = "fluorescence") -> "FolderDataset":
        """The DSB 2018 stage1_train layout (``images/``, ``masks/``, ``index.csv``).

        ``modality`` selects rows of ``index.csv`` by its modality tag (column
        ``kind_heuristic`` or ``modality``), e.g. ``"fluorescence"``,
        ``"brightfield"``, ``"color (histology/brightfield)"``; ``None`` or
        ``"all"`` keeps every image. The tag is a heuristic of whoever built the
        index (see the data's SOURCE.md).
        """
        root = need_dir(Path(root), "DSB 2018 folder")
        if modality is None or modality == "all":
            return cls(root)
        index = root / "index.csv"
        if not index.is_file():
            raise MissingFolderError(
                f"{index}: index.csv with a modality column not found (use modality=None for all images)")
        with open(index, newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows:
            raise DatasetError(f"{index}: empty index")
        col = next((c for c in ("kind_heuristic", "modality") if c in rows[0]), None)
        if col is None or "id" not in rows[0]:
            raise DatasetError(f"{index}: needs columns 'id' and 'kind_heuristic' (or 'modality'); has {list(rows[0])}")
        tags: dict[str, int] = {}
        for r in rows:
            tags[r[col]] = tags.get(r[col], 0) + 1
        if modality not in tags:
            raise ValueError(f"{index}: unknown modality {modality!r}; available: "
                             + ", ".join(f"{k!r} ({v})" for k, v in sorted(tags.items())))
        names = sorted(r["id"] for r in rows if r[col] == modality)
        return cls(root, names=names)
