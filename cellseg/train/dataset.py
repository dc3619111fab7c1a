"""Training data: loading, validation, normalization and patch sampling.

:class:`TrainingData` holds normalized images ``float32 (C, *spatial)`` and
``int32`` labels in memory (normalized once, at load). Build it from

* arrays: ``TrainingData.from_arrays([(image, labels), ...])``
* a Cell Tracking Challenge dataset: ``TrainingData.from_ctc(root, sequences=("01",), truth="ST")``
* an ``images/`` + ``masks/`` folder: ``TrainingData.from_folder(root)`` (or
  ``TrainingData.dsb2018(root)`` for the DSB 2018 fluorescence subset)
* any of the two folder layouts: :func:`load_training_data`.

Every sample is validated once (:class:`DataError` naming the sample): labels
must be integer instance images of the image's spatial shape; masks that look
*binary/semantic* (one id made of many separate blobs, or only ids 0/1 in the
whole set while images hold several separate blobs) are rejected with a hint.

:class:`PatchSampler` draws augmented training patches that favour foreground
and encodes their targets with the representation *after* the geometric
augmentation.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
from scipy import ndimage as ndi

from cellseg.labels import LabelError, as_labels, check_not_binary, mask_stats

from .augment import AugmentConfig, augment_intensity, dim_objects, sample_patch

__all__ = [
    "DataError",
    "DataWarning",
    "TrainingSample",
    "TrainingData",
    "PatchSampler",
    "load_training_data",
    "data_anisotropy",
    "check_instance_labels",
    "to_channels_first",
]

class DataError(ValueError):
    """Unusable training data; the message names the sample (file) and what is wrong."""


class DataWarning(UserWarning):
    """Training data used with a change the user should know of (objects annotated in parts)."""


@dataclass
class TrainingSample:
    """One normalized training image and its labels."""

    name: str
    image: np.ndarray  # float32 (C, *spatial), normalized
    labels: np.ndarray  # int32 (*spatial)
    #: µm per pixel by axis letter (``Z``, ``Y``, ``X``) as the image file records it (None: unknown)
    pixel_size: dict | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.labels.shape)


def to_channels_first(data: np.ndarray, axes: str | None, ndim: int, in_channels: int, name: str) -> np.ndarray:
    """``(C, *spatial)`` float32 view of an image with ``axes`` (``None``: ``YX``/``ZYX`` or ``C``+those).

    With ``in_channels == 1`` several channels (e.g. RGB) are averaged; with ``in_channels == 3``
    (an RGB model such as the general ``nuclei`` and ``cells``) a grey image is repeated and RGBA
    loses its alpha, as :class:`cellseg.segmenter.Segmenter` gives such images to the model; so is a
    grey image shown in colour (DAPI in blue: :func:`cellseg.segmenter.pseudo_colour_channel`), which
    the segmenter reads as grey.
    """
    x = np.asarray(data)
    if x.dtype == bool or x.dtype.kind not in "uif":
        raise DataError(f"{name}: image has unsupported dtype {x.dtype}")
    spatial = "ZYX"[3 - ndim:]
    if axes is None:
        if x.ndim == ndim:
            axes = spatial
        elif x.ndim == ndim + 1:
            axes = "C" + spatial
        else:
            raise DataError(f"{name}: expected a {ndim}D image ({spatial} or C{spatial}), got shape {x.shape}")
    axes = axes.upper()
    if set(axes) - set("C" + spatial) or len(axes) != x.ndim:
        raise DataError(f"{name}: image with axes {axes!r} and shape {x.shape} is not a {ndim}D ({spatial}) image"
                        " (time series must be split into frames; 3D data needs a 3D model)")
    if not set(spatial) <= set(axes):
        raise DataError(f"{name}: image with axes {axes!r} lacks spatial axes {spatial!r}")
    if "C" not in axes:
        x = x[None]
        axes = "C" + axes
    x = np.moveaxis(x, [axes.index(a) for a in "C" + spatial], list(range(ndim + 1)))
    c = x.shape[0]
    if c in (3, 4) and in_channels in (1, 3):
        from ..segmenter import pseudo_colour_channel

        grey = pseudo_colour_channel(x, 0)
        if grey is not None:  # one grey image in colour: as the segmenter reads it
            x, c = x[grey:grey + 1], 1
    if c != in_channels:
        if in_channels == 1:
            x = x.astype(np.float32).mean(axis=0, keepdims=True)
        elif in_channels == 3 and c == 1:
            x = np.repeat(x, 3, axis=0)
        elif in_channels == 3 and c == 4:
            x = x[:3]
        else:
            raise DataError(f"{name}: the model takes {in_channels} channels, the image has {c}")
    return np.ascontiguousarray(x, dtype=np.float32)


def check_instance_labels(labels: np.ndarray, name: str) -> int:
    """:func:`cellseg.labels.check_instance_labels` raising :class:`DataError` (one id made of many
    separate blobs: a binary or semantic mask); returns the number of foreground blobs."""
    from cellseg.labels import check_instance_labels as check

    try:
        return check(labels, name)
    except LabelError as exc:
        raise DataError(f"{exc} Training needs instance labels.") from None


def check_pair(image: np.ndarray, labels: Any, name: str, ndim: int, trim: bool = True) -> np.ndarray:
    """``labels`` as an ``ndim``-D instance label image of the spatial shape of ``image (C, *spatial)``.

    A binary or semantic mask is refused (:func:`check_instance_labels`). With ``trim``, an
    object annotated in separate parts (a cell and its cut-off protrusions under one id) of an
    image with several ids keeps its largest part, with a :class:`DataWarning`: the training
    targets need one region per id. Images of one value are left whole (a set of 0/1 masks is
    refused by :class:`TrainingData`'s check of the whole set).
    """
    lab = np.asarray(labels)
    try:  # float labels (ImageJ exports) are fine when every value is a whole number
        lab = as_labels(lab, name=name)
    except LabelError as exc:
        raise DataError(str(exc)) from None
    if lab.ndim != ndim:
        raise DataError(f"{name}: labels of shape {lab.shape} are not {ndim}D")
    if image.shape[1:] != lab.shape:
        raise DataError(f"{name}: image spatial shape {image.shape[1:]} differs from labels shape {lab.shape}")
    fg = lab[lab != 0]
    if trim and fg.size and fg.min() != fg.max():  # one value only: a 0/1 mask is for the set-level check
        import warnings

        from cellseg.labels import keep_largest_parts

        check_instance_labels(lab, name)  # a semantic mask is refused, not cut down to one blob per value
        kept, removed = keep_largest_parts(lab)
        if removed:
            n = int(np.unique(lab[kept != lab]).size)
            warnings.warn(f"{name}: {n} object{'s' if n != 1 else ''} annotated in separate parts keep their "
                          f"largest part ({removed} px left out)", DataWarning, stacklevel=2)
            lab = kept
    return lab


def normalize_sample(x: np.ndarray, pmin: float, pmax: float, name: str) -> np.ndarray:
    """``x (C, *spatial)`` normalized per channel to its ``pmin``/``pmax`` percentiles (else a :class:`DataError`)."""
    from cellseg.preprocess import normalize_percentile

    try:
        return normalize_percentile(x, pmin, pmax, axis=tuple(range(1, x.ndim)), name=name)
    except ValueError as exc:
        raise DataError(str(exc)) from None


def _read_pair(ip, lp, ndim: int | None):
    """The image (:class:`cellseg.io.ImageData`) and labels of one training pair.

    The label image decides the dimensionality (``ndim=None``); an image file that does not
    name its axes is read as ``YX``/``ZYX`` when it has the labels' shape. A 2D label next to
    a 3D image (or the reverse) and images recorded as time series are refused, naming the file."""
    from cellseg import io

    try:
        lab = io.read_labels(lp)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    if lab.ndim not in (2, 3) or (ndim is not None and lab.ndim != ndim):
        want = "2D (YX) or 3D (ZYX)" if ndim is None else f"{ndim}D ({'ZYX'[3 - ndim:]})"
        raise DataError(f"{lp}: label image of shape {lab.shape} is not {want}")
    spatial = "ZYX"[3 - lab.ndim:]
    try:
        im = io.read_image(ip)
    except io.AxesError as exc:  # a plain TIFF stack: the labels say which axes it has
        try:
            im = io.read_image(ip, axes=spatial)
        except ValueError:
            raise DataError(f"{exc}; as training data it does not fit the {lab.ndim}D label image "
                            f"{Path(lp).name} of shape {lab.shape}") from None
    except ValueError as exc:
        raise DataError(str(exc)) from None
    img_sp = "".join(a for a in im.axes if a != "C")
    if "T" in img_sp:
        raise DataError(f"{ip}: image with axes {im.axes!r} is a time series: save each frame as its own "
                        "image (training pairs are YX images or ZYX volumes)")
    if len(img_sp) != lab.ndim:
        raise DataError(f"{lp}: a {lab.ndim}D label image (shape {lab.shape}) next to the {len(img_sp)}D image "
                        f"{Path(ip).name} (axes {im.axes!r}, shape {im.data.shape}): image and labels must both "
                        "be 2D (YX) or both 3D (ZYX)")
    return im, lab


def data_anisotropy(data: "TrainingData") -> tuple[float | None, dict | None]:
    """``(anisotropy, voxel size)`` of 3D training data from the voxel sizes its files record.

    ``anisotropy`` is the Z step over the X pixel size; ``(None, None)`` when no file records
    both (2D data, arrays, files without voxel size). Files that record different
    anisotropies raise :class:`DataError` naming two of them; Y and X must agree."""
    if data.ndim != 3:
        return None, None
    seen: dict[float, tuple[str, dict]] = {}
    for s in data.samples:
        ps = s.pixel_size or {}
        if not (ps.get("Z") and ps.get("X")):
            continue
        y, x = float(ps.get("Y", ps["X"])), float(ps["X"])
        if abs(y - x) > 1e-3 * x:
            raise DataError(f"{s.name}: pixel size Y {y:g} µm differs from X {x:g} µm; 3D training needs square "
                            "pixels in the YX plane (resample the volume)")
        a = round(float(ps["Z"]) / x, 4)
        if a not in seen:
            seen[a] = (s.name, {k: float(v) for k, v in ps.items() if k in "ZYX"})
    if not seen:
        return None, None
    if len(seen) > 1:
        (a1, (n1, _)), (a2, (n2, _)) = list(seen.items())[:2]
        raise DataError(f"{data.source}: the volumes have different voxel sizes: {n1} has a Z step of {a1:g} "
                        f"pixels, {n2} of {a2:g}; resample them to one voxel size (or train on one kind)")
    (a, (_, vs)), = seen.items()
    return a, vs


class TrainingData(Sequence):
    """Normalized images with their int32 labels, validated at construction.

    ``samples``: list of :class:`TrainingSample`; ``ndim`` (2/3), ``in_channels``,
    ``normalization`` (``{"pmin", "pmax"}``) and ``source`` (a description
    recorded in the model config).
    """

    def __init__(self, samples: Iterable[TrainingSample], ndim: int = 2, in_channels: int = 1,
                 normalization: Mapping[str, float] | None = None, source: str = "arrays",
                 check: bool = True):
        self.samples = list(samples)
        self.ndim = int(ndim)
        self.in_channels = int(in_channels)
        self.normalization = dict(normalization or {"pmin": 1.0, "pmax": 99.8})
        self.source = source
        if check:
            self._validate()

    def _validate(self) -> None:
        if not self.samples:
            raise DataError(f"{self.source}: the training set is empty")
        names = [s.name for s in self.samples]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise DataError(f"{self.source}: repeated sample names {dup[:5]}")
        stats = []
        max_id = 0
        for s in self.samples:
            if s.image.ndim != self.ndim + 1 or s.image.shape[0] != self.in_channels:
                raise DataError(f"{s.name}: image shape {s.image.shape} is not ({self.in_channels}, *{self.ndim}D)")
            if s.image.shape[1:] != s.labels.shape:
                raise DataError(
                    f"{s.name}: image spatial shape {s.image.shape[1:]} differs from labels {s.labels.shape}")
            try:
                stats.append(mask_stats(s.labels, s.name))
            except LabelError as exc:
                raise DataError(f"{exc} Training needs instance labels.") from None
            max_id = max(max_id, int(s.labels.max()))
        if max_id == 0:
            n = len(self.samples)
            raise DataError(f"{self.source}: no labelled objects in any of the {n} image{'s' if n != 1 else ''}")
        try:
            check_not_binary(stats, "label images")
        except LabelError as exc:
            raise DataError(f"{self.source}: {exc}; training needs instance labels") from None

    # -- constructors ------------------------------------------------------------------
    @classmethod
    def from_arrays(cls, pairs: Iterable[tuple[np.ndarray, np.ndarray]], names: Sequence[str] | None = None,
                    ndim: int = 2, in_channels: int = 1, normalization: Mapping[str, float] | None = None,
                    axes: str | None = None, source: str = "arrays") -> "TrainingData":
        """From raw (un-normalized) ``(image, labels)`` pairs; images ``(*sp)`` or ``(C, *sp)`` (or ``axes``)."""
        norm = dict(normalization or {"pmin": 1.0, "pmax": 99.8})
        pairs = list(pairs)
        if names is None:
            names = [f"{source}[{i}]" for i in range(len(pairs))]
        if len(names) != len(pairs):
            raise DataError(f"{source}: {len(names)} names for {len(pairs)} pairs")
        samples = []
        for (img, lab), name in zip(pairs, names):
            x = to_channels_first(img, axes, ndim, in_channels, name)
            lab = check_pair(x, lab, name, ndim)
            samples.append(TrainingSample(name, normalize_sample(x, norm["pmin"], norm["pmax"], name), lab))
        return cls(samples, ndim, in_channels, norm, source)

    @classmethod
    def _from_files(cls, items, ndim, in_channels, normalization, source, trim: bool = True) -> "TrainingData":
        """Read ``(name, image path, label path)`` items; ``ndim=None``: 2D or 3D as the label
        images are (all the same: a folder mixing 2D and 3D pairs is refused). ``trim``: objects
        annotated in separate parts keep their largest part (:func:`check_pair`); ``False`` keeps
        the labels as they are (test data, scored as annotated)."""
        norm = dict(normalization or {"pmin": 1.0, "pmax": 99.8})
        samples = []
        first = None  # (label path, ndim) of the first pair, for the mixed 2D/3D message
        for name, ip, lp in items:
            im, lab = _read_pair(ip, lp, ndim)
            nd = lab.ndim if ndim is None else ndim
            if first is None:
                first = (lp, nd)
            elif nd != first[1]:
                raise DataError(f"{lp}: a {lab.ndim}D label image ({'ZYX' if lab.ndim == 3 else 'YX'}, shape "
                                f"{lab.shape}) where {Path(first[0]).name} is {first[1]}D: training data must be "
                                "all 2D images or all 3D volumes")
            x = to_channels_first(im.data, im.axes, nd, in_channels, str(ip))
            lab = check_pair(x, lab, str(lp), nd, trim=trim)
            samples.append(TrainingSample(name, normalize_sample(x, norm["pmin"], norm["pmax"], str(ip)), lab,
                                          pixel_size=dict(im.pixel_size) if im.pixel_size else None))
        return cls(samples, first[1] if first is not None else (ndim or 2), in_channels, norm, source)

    @classmethod
    def from_ctc(cls, root: str | os.PathLike, sequences: Sequence[str] = ("01",), truth: str = "ST",
                 frames: Sequence[int] | None = None, ndim: int | None = 2, in_channels: int = 1,
                 normalization: Mapping[str, float] | None = None, trim: bool = True) -> "TrainingData":
        """Annotated frames of CTC ``sequences`` (``truth`` ``"GT"``, ``"ST"`` or ``"auto"``).

        Sample names are ``"<seq>/t<TTT>"``; ``frames`` restricts to those time points.
        ``ndim=None``: 2D images or 3D (ZYX) volumes as the label images are.
        """
        from cellseg.datasets import CTCDataset

        try:
            ds = CTCDataset(root)
            items = []
            for seq in sequences:
                for fr in ds.pairs(seq, truth=truth):
                    if frames is None or fr.t in frames:
                        items.append((f"{fr.seq}/t{fr.t:03d}", fr.image_path, fr.label_path))
        except (ValueError, FileNotFoundError) as exc:
            raise DataError(str(exc)) from None
        src = f"{Path(root)} sequences {','.join(map(str, sequences))} ({truth})"
        if not items:
            raise DataError(f"{src}: no annotated frames selected")
        return cls._from_files(items, ndim, in_channels, normalization, src, trim=trim)

    @classmethod
    def from_folder(cls, root: str | os.PathLike, names: Sequence[str] | None = None, ndim: int | None = 2,
                    in_channels: int = 1, normalization: Mapping[str, float] | None = None,
                    dataset=None, trim: bool = True) -> "TrainingData":
        """An ``images/`` + ``masks/`` folder (paired by file stem); ``names`` selects samples.
        ``ndim=None``: 2D images or 3D (ZYX) volumes as the label images are."""
        from cellseg.datasets import FolderDataset

        try:
            ds = dataset if dataset is not None else FolderDataset(root)
            if names is not None:
                ds = ds.subset(names)
            items = [(n, ds.image_path(n), ds.mask_path(n)) for n in ds.names]
        except (ValueError, FileNotFoundError, KeyError) as exc:
            raise DataError(str(exc)) from None
        return cls._from_files(items, ndim, in_channels, normalization, f"{Path(root)}", trim=trim)

    @classmethod
    def dsb2018(cls, root: str | os.PathLike, names: Sequence[str] | None = None, modality: str = "fluorescence",
                normalization: Mapping[str, float] | None = None) -> "TrainingData":
        """The DSB 2018 stage1_train images of one modality tag (default fluorescence)."""
        from cellseg.datasets import FolderDataset

        try:
            ds = FolderDataset.dsb2018(root, modality=modality)
        except (ValueError, FileNotFoundError) as exc:
            raise DataError(str(exc)) from None
        out = cls.from_folder(root, names=names, normalization=normalization, dataset=ds)
        out.source = f"{Path(root)} (DSB 2018, {modality})"
        return out

    # -- access ------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return TrainingData(self.samples[i], self.ndim, self.in_channels, self.normalization, self.source,
                                check=False)
        return self.samples[i]

    def __repr__(self) -> str:
        return f"TrainingData({len(self)} samples, {self.ndim}D, source={self.source!r})"

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.samples]

    def subset(self, names: Sequence[str]) -> "TrainingData":
        by = {s.name: s for s in self.samples}
        missing = [n for n in names if n not in by]
        if missing:
            raise DataError(f"{self.source}: unknown sample name(s) {missing[:5]}")
        return TrainingData([by[n] for n in names], self.ndim, self.in_channels, self.normalization,
                            self.source, check=False)

    def split(self, val_fraction: float = 0.1, seed: int = 0) -> tuple["TrainingData", "TrainingData"]:
        """Deterministic random split by sample name into ``(train, val)`` (both non-empty)."""
        if not 0.0 < float(val_fraction) < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        if len(self) < 2:
            raise DataError(f"{self.source}: need at least 2 samples to split off a validation set")
        names = sorted(self.names)
        n_val = min(len(names) - 1, max(1, int(round(len(names) * val_fraction))))
        perm = np.random.default_rng(seed).permutation(len(names))
        val = sorted(names[i] for i in perm[:n_val])
        train = sorted(names[i] for i in perm[n_val:])
        return self.subset(train), self.subset(val)

    def describe(self) -> dict[str, Any]:
        n_obj = [int(len(np.unique(s.labels)) - (s.labels.min() == 0)) for s in self.samples]
        return {"source": self.source, "n_images": len(self), "n_objects": int(sum(n_obj)),
                "names": self.names}


def load_training_data(path: str | os.PathLike, sequences: Sequence[str] | None = None, truth: str = "ST",
                       ndim: int | None = 2, in_channels: int = 1,
                       normalization: Mapping[str, float] | None = None) -> TrainingData:
    """A CTC dataset folder (``01/``, ``01_ST/SEG``...) or an ``images/`` + ``masks/`` folder.

    ``ndim=None`` takes the dimensionality from the data: 3D when the label images are ZYX
    volumes (every pair alike), else 2D."""
    p = Path(path)
    if not p.is_dir():
        raise DataError(f"{p}: training data folder does not exist")
    if (p / "images").is_dir() and (p / "masks").is_dir():
        if sequences:
            raise DataError(f"{p}: an images/ + masks/ folder has no sequences; drop --sequences")
        return TrainingData.from_folder(p, ndim=ndim, in_channels=in_channels, normalization=normalization)
    if any(d.is_dir() and d.name.isdigit() for d in p.iterdir()):
        seqs = list(sequences) if sequences else None
        if seqs is None:
            from cellseg.datasets import CTCDataset

            try:
                ds = CTCDataset(p)
            except ValueError as exc:
                raise DataError(str(exc)) from None
            seqs = [s for s in ds.sequences if ds.truths(s) and (truth == "auto" or truth in ds.truths(s))]
            if not seqs:
                raise DataError(f"{p}: no sequence has {truth} segmentation truth")
        return TrainingData.from_ctc(p, seqs, truth, ndim=ndim, in_channels=in_channels,
                                     normalization=normalization)
    raise DataError(f"{p}: not a CTC dataset (01/, 01_GT/SEG or 01_ST/SEG) nor an images/ + masks/ folder")


class PatchSampler:
    """Draws augmented training patches and their targets.

    Images are picked with probability proportional to their area (at least one
    patch area). With probability ``fg_prob`` the patch is placed around a random
    object of the picked image (its centroid plus a uniform offset of up to 40%
    of the patch size), otherwise uniformly; patch centres are kept inside the
    image where it is larger than the patch. Geometry and intensity augmentation
    follow (:mod:`cellseg.train.augment`), then ``rep.encode`` on the augmented
    labels.
    """

    def __init__(self, data: TrainingData, rep, patch_shape: Sequence[int], augment: AugmentConfig | None = None,
                 fg_prob: float = 0.9):
        if len(patch_shape) != data.ndim:
            raise ValueError(f"patch shape {tuple(patch_shape)} must have {data.ndim} axes")
        if not 0 <= fg_prob <= 1:
            raise ValueError(f"fg_prob must be in [0, 1], got {fg_prob}")
        self.data = data
        self.rep = rep
        self.patch_shape = tuple(int(p) for p in patch_shape)
        self.augment = augment if augment is not None else AugmentConfig()
        self.fg_prob = float(fg_prob)
        pa = float(np.prod(self.patch_shape))
        w = np.array([max(float(np.prod(s.shape)), pa) for s in data.samples])
        extra = getattr(data, "sample_weights", None)  # e.g. balancing several sources
        if extra is not None:
            w = w * np.asarray(extra, dtype=np.float64)
        self.weights = w / w.sum()
        self.centroids = []
        for s in data.samples:
            ids = np.unique(s.labels)
            ids = ids[ids > 0]
            c = np.array(ndi.center_of_mass(np.ones_like(s.labels), s.labels, ids), dtype=np.float64)
            c = c.reshape(-1, data.ndim)
            self.centroids.append(c)

    def _center(self, i: int, rng: np.random.Generator) -> np.ndarray:
        shape = np.array(self.data.samples[i].shape, dtype=np.float64)
        p = np.array(self.patch_shape, dtype=np.float64)
        cents = self.centroids[i]
        if len(cents) and rng.random() < self.fg_prob:
            c = cents[rng.integers(len(cents))] + rng.uniform(-0.4, 0.4, size=len(p)) * p
        else:
            c = rng.uniform(0, shape - 1)
        # a crop start ``c - (p-1)/2`` on the pixel grid, inside the image where it fits
        start = np.round(c - (p - 1) / 2)
        start = np.where(shape >= p, np.clip(start, 0, shape - p), np.floor((shape - p) / 2))
        return start + (p - 1) / 2

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        i = int(rng.choice(len(self.data), p=self.weights))
        s = self.data.samples[i]
        img, lab = sample_patch(s.image, s.labels, self.patch_shape, self._center(i, rng), rng, self.augment)
        img = augment_intensity(dim_objects(img, lab, rng, self.augment), rng, self.augment)
        targets = self.rep.encode(lab)
        return img, targets

    def batch(self, rng: np.random.Generator, batch_size: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``(float32 (B, C, *patch), {target: float32 (B, C_t, *patch)})``."""
        xs, ts = [], []
        for _ in range(batch_size):
            x, t = self.sample(rng)
            xs.append(x)
            ts.append(t)
        keys = list(ts[0])
        return np.stack(xs), {k: np.stack([np.asarray(t[k], dtype=np.float32) for t in ts]) for k in keys}
