"""DenoiSeg: joint Noise2Void denoising and segmentation (Buchholz et al. 2020).

One network learns the representation's heads and a *denoising head*
(``"denoised"``: one channel per input channel, identity activation) at once:

* **Noise2Void masking** (Krull et al. 2019) on every patch, annotated or not:
  :func:`n2v_mask` replaces a fraction of the pixels by a random neighbour
  inside a small window (never the pixel itself); the network sees the masked
  patch and the denoising head is trained to give back the *unmasked* values
  at the masked pixels only (:func:`masked_mse`). The noise of a pixel cannot be
  predicted from its neighbours, the signal can: the head learns to denoise.
* **Segmentation losses on annotated patches only**: every patch carries a flag;
  the representation's loss sees the annotated patches of the batch and nothing
  else (a batch without one contributes no segmentation term).
* The two are weighted as DenoiSeg's ``alpha``:
  ``total = alpha * segmentation + (1 - alpha) * denoising`` with
  ``alpha = 1 - TrainConfig.denoise_weight`` (default 0.5, the paper's choice).

Unlabelled images (:class:`UnlabeledData`, :func:`load_unlabeled`) enter the
pipeline without masks: patches are drawn uniformly from them with the same
geometric and intensity augmentation. ``TrainConfig.labeled_fraction`` is the
probability that a patch comes from an annotated image when unlabelled images
are given (so a handful of annotations still reaches the segmentation loss in
most batches).

Noise2Void assumes noise that is independent from pixel to pixel. Augmentations
that interpolate the image (small rotations, scaling, elastic deformation) or
blur it make neighbouring noise values alike; with ``denoise=True`` prefer flips
and 90° rotations (``AugmentConfig(rotate_prob=0, scale_prob=0, elastic_prob=0,
blur_prob=0)``), as the DenoiSeg paper does.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from cellseg.models.heads import DENOISE_HEAD

from .augment import AugmentConfig, augment_intensity, sample_patch
from .dataset import DataError, PatchSampler, normalize_sample, to_channels_first

__all__ = [
    "DENOISE_HEAD",
    "neighbour_offsets",
    "n2v_mask",
    "n2v_mask_batch",
    "masked_mse",
    "UnlabeledSample",
    "UnlabeledData",
    "load_unlabeled",
    "JointSampler",
    "JointLoss",
]

# ----------------------------------------------------------------------------- masking
def neighbour_offsets(ndim: int, radius: int) -> np.ndarray:
    """Every integer offset in ``[-radius, radius]^ndim`` except zero, in lexicographic order
    (``int64 (n, ndim)``, ``n = (2 radius + 1)^ndim - 1``)."""
    if ndim < 1 or radius < 1:
        raise ValueError(f"need ndim >= 1 and radius >= 1, got ndim={ndim}, radius={radius}")
    side = 2 * radius + 1
    grid = np.stack(np.unravel_index(np.arange(side ** ndim), (side,) * ndim), axis=1) - radius
    return grid[np.any(grid != 0, axis=1)].astype(np.int64)


def n2v_mask(image: np.ndarray, rng: np.random.Generator, fraction: float = 0.02,
             radius: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Noise2Void blind-spot masking of one image ``(C, *spatial)``.

    ``k = max(1, round(fraction * n_pixels))`` distinct pixels are drawn
    (``rng.choice(n_pixels, k, replace=False)`` over the C-order flat index), then
    for each one an offset among :func:`neighbour_offsets` (``rng.integers``);
    where the offset leaves the image along an axis, its sign is flipped on that axis
    (so the neighbour is never the pixel itself). Every channel of a drawn pixel takes
    the value of its neighbour in the *original* image.

    Returns ``(masked float32 copy, mask bool (*spatial))``. Every spatial size must be
    at least ``2 * radius + 1``.
    """
    x = np.asarray(image, dtype=np.float32)
    if x.ndim < 2:
        raise ValueError(f"n2v_mask expects an image (C, *spatial), got shape {x.shape}")
    if not 0.0 < float(fraction) <= 0.5:
        raise ValueError(f"fraction must be in (0, 0.5], got {fraction}")
    radius = int(radius)
    sp = x.shape[1:]
    if min(sp) < 2 * radius + 1:
        raise ValueError(f"image of spatial shape {sp} is too small for a window of radius {radius}")
    n = int(np.prod(sp))
    k = max(1, int(round(float(fraction) * n)))
    flat = rng.choice(n, size=k, replace=False)
    table = neighbour_offsets(len(sp), radius)
    off = table[rng.integers(0, len(table), size=k)]  # (k, ndim)
    coords = np.stack(np.unravel_index(flat, sp), axis=1)  # (k, ndim)
    nb = coords + off
    outside = (nb < 0) | (nb >= np.asarray(sp))
    nb = np.where(outside, coords - off, nb)
    masked = x.copy()
    src = (slice(None),) + tuple(nb.T)
    dst = (slice(None),) + tuple(coords.T)
    masked[dst] = x[src]
    mask = np.zeros(sp, bool)
    mask[tuple(coords.T)] = True
    return masked, mask


def n2v_mask_batch(x: np.ndarray, rng: np.random.Generator, fraction: float = 0.02,
                   radius: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """:func:`n2v_mask` on every sample of ``x (B, C, *spatial)``, in order; returns
    ``(masked float32 (B, C, *sp), mask float32 (B, 1, *sp))``."""
    x = np.asarray(x, dtype=np.float32)
    out = np.empty_like(x)
    mask = np.zeros((x.shape[0], 1) + x.shape[2:], np.float32)
    for i in range(x.shape[0]):
        out[i], m = n2v_mask(x[i], rng, fraction, radius)
        mask[i, 0] = m
    return out, mask


def masked_mse(pred, target, mask):
    """Mean squared error of ``pred`` against ``target`` (torch ``(B, C, *sp)``) over the pixels
    where ``mask`` (``(B, 1, *sp)``, 0/1) is set, every channel counted; 0 when none is set.
    The other pixels do not enter the value or the gradient."""
    import torch

    if tuple(pred.shape) != tuple(target.shape):
        raise ValueError(f"pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
    m = torch.broadcast_to(mask.to(pred.dtype), pred.shape)
    err = torch.where(m > 0, pred - target, torch.zeros_like(pred))
    return (err * err).sum() / m.sum().clamp_min(1.0)


# ----------------------------------------------------------------------------- unlabelled data
@dataclass
class UnlabeledSample:
    """One normalized image without annotation."""

    name: str
    image: np.ndarray  # float32 (C, *spatial), normalized


class UnlabeledData(Sequence):
    """Normalized images without annotations (``samples``: :class:`UnlabeledSample`)."""

    def __init__(self, samples: Iterable[UnlabeledSample], ndim: int = 2, in_channels: int = 1,
                 normalization: Mapping[str, float] | None = None, source: str = "arrays"):
        self.samples = list(samples)
        self.ndim = int(ndim)
        self.in_channels = int(in_channels)
        self.normalization = dict(normalization or {"pmin": 1.0, "pmax": 99.8})
        self.source = source
        if not self.samples:
            raise DataError(f"{source}: no unlabelled images")
        for s in self.samples:
            if s.image.ndim != self.ndim + 1 or s.image.shape[0] != self.in_channels:
                raise DataError(f"{s.name}: image shape {s.image.shape} is not ({self.in_channels}, *{self.ndim}D)")

    @classmethod
    def from_arrays(cls, images: Iterable[np.ndarray], names: Sequence[str] | None = None, ndim: int = 2,
                    in_channels: int = 1, normalization: Mapping[str, float] | None = None,
                    axes: str | None = None, source: str = "unlabeled") -> "UnlabeledData":
        """From raw (un-normalized) images ``(*sp)`` or ``(C, *sp)`` (or ``axes``)."""
        norm = dict(normalization or {"pmin": 1.0, "pmax": 99.8})
        images = list(images)
        names = list(names) if names is not None else [f"{source}[{i}]" for i in range(len(images))]
        if len(names) != len(images):
            raise DataError(f"{source}: {len(names)} names for {len(images)} images")
        samples = []
        for img, name in zip(images, names):
            x = to_channels_first(img, axes, ndim, in_channels, name)
            samples.append(UnlabeledSample(name, normalize_sample(x, norm["pmin"], norm["pmax"], name)))
        return cls(samples, ndim, in_channels, norm, source)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i]

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.samples]

    def __repr__(self) -> str:
        return f"UnlabeledData({len(self)} images, {self.ndim}D, source={self.source!r})"


def load_unlabeled(path: str | os.PathLike, ndim: int = 2, in_channels: int = 1,
                   normalization: Mapping[str, float] | None = None) -> UnlabeledData:
    """The images of a folder (``.tif``, ``.tiff``, ``.png``, ``.jpg``; its ``images/`` subfolder
    when it has one, so an ``images/`` + ``masks/`` folder can serve as well), without masks.
    A file that cannot be read is a :class:`~cellseg.train.dataset.DataError` naming it."""
    from cellseg import io
    from cellseg.datasets.folder import IMAGE_SUFFIXES

    p = Path(path)
    if not p.is_dir():
        raise DataError(f"{p}: unlabelled image folder does not exist")
    folder = p / "images" if (p / "images").is_dir() else p
    files = sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in the unlabelled folder")
    norm = dict(normalization or {"pmin": 1.0, "pmax": 99.8})
    samples = []
    for f in files:
        try:
            im = io.read_image(f)
        except (ValueError, OSError) as exc:
            raise DataError(f"{f}: cannot read the image ({exc})") from None
        x = to_channels_first(im.data, im.axes, ndim, in_channels, str(f))
        samples.append(UnlabeledSample(f.stem, normalize_sample(x, norm["pmin"], norm["pmax"], str(f))))
    return UnlabeledData(samples, ndim, in_channels, norm, str(folder))


# ----------------------------------------------------------------------------- sampling and loss
class JointSampler:
    """Batches for joint training: ``batch(rng, B) -> (masked x, targets, extra)``.

    Each patch comes from the annotated images (:class:`PatchSampler`) or, with
    probability ``1 - labeled_fraction`` when ``unlabeled`` is given, from an unlabelled
    image (placed uniformly, augmented alike; its targets are those of an empty label
    image and are never used). Then every patch is masked (:func:`n2v_mask_batch`).
    ``extra`` holds ``clean`` (the unmasked patches, the denoising target), ``mask``
    (``(B, 1, *sp)``) and ``labeled`` (bool ``(B,)``).
    """

    def __init__(self, sampler: PatchSampler, unlabeled: UnlabeledData | None = None,
                 labeled_fraction: float = 0.5, fraction: float = 0.02, radius: int = 2):
        if not 0.0 < float(labeled_fraction) <= 1.0:
            raise ValueError(f"labeled_fraction must be in (0, 1], got {labeled_fraction}")
        self.sampler = sampler
        self.unlabeled = unlabeled
        self.labeled_fraction = float(labeled_fraction) if unlabeled is not None else 1.0
        self.fraction = float(fraction)
        self.radius = int(radius)
        self.patch_shape = sampler.patch_shape
        self.augment: AugmentConfig = sampler.augment
        self._empty_targets: dict[str, np.ndarray] | None = None
        if unlabeled is not None:
            pa = float(np.prod(self.patch_shape))
            w = np.array([max(float(np.prod(s.image.shape[1:])), pa) for s in unlabeled.samples])
            self.weights = w / w.sum()

    def _unlabeled_patch(self, rng: np.random.Generator) -> np.ndarray:
        unlabeled = self.unlabeled
        assert unlabeled is not None  # only drawn from when there are unlabeled images
        i = int(rng.choice(len(unlabeled), p=self.weights))
        img = unlabeled.samples[i].image
        shape = np.array(img.shape[1:], dtype=np.float64)
        p = np.array(self.patch_shape, dtype=np.float64)
        start = np.round(rng.uniform(0, shape - 1) - (p - 1) / 2)
        start = np.where(shape >= p, np.clip(start, 0, shape - p), np.floor((shape - p) / 2))
        zeros = np.zeros(img.shape[1:], np.int32)
        patch, _ = sample_patch(img, zeros, self.patch_shape, start + (p - 1) / 2, rng, self.augment)
        return augment_intensity(patch, rng, self.augment)

    def _empty(self) -> dict[str, np.ndarray]:
        if self._empty_targets is None:
            t = self.sampler.rep.encode(np.zeros(self.patch_shape, np.int32))
            self._empty_targets = {k: np.zeros(np.shape(v), np.float32) for k, v in t.items()}
        return self._empty_targets

    def batch(self, rng: np.random.Generator, batch_size: int):
        xs, ts, labeled = [], [], []
        for _ in range(batch_size):
            if self.unlabeled is None or rng.random() < self.labeled_fraction:
                x, t = self.sampler.sample(rng)
                labeled.append(True)
            else:
                x, t = self._unlabeled_patch(rng), self._empty()
                labeled.append(False)
            xs.append(x)
            ts.append(t)
        clean = np.stack(xs).astype(np.float32, copy=False)
        masked, mask = n2v_mask_batch(clean, rng, self.fraction, self.radius)
        targets = {k: np.stack([np.asarray(t[k], dtype=np.float32) for t in ts]) for k in ts[0]}
        return masked, targets, {"clean": clean, "mask": mask, "labeled": np.array(labeled, bool)}


class JointLoss:
    """``loss(raw, targets, extra, device) -> (total, parts)``: the representation's loss
    (``seg_loss(raw, targets)``) on the annotated samples of the batch, :func:`masked_mse` of
    the denoising head on every sample, ``total = (1 - w) * seg + w * denoise`` with
    ``w = denoise_weight`` (DenoiSeg's ``alpha = 1 - w``). ``parts`` has the representation's
    terms (when the batch has an annotated sample), ``seg`` and ``denoise``."""

    def __init__(self, seg_loss, denoise_weight: float = 0.5):
        if not 0.0 <= float(denoise_weight) <= 1.0:
            raise ValueError(f"denoise_weight must be in [0, 1], got {denoise_weight}")
        self.seg_loss = seg_loss
        self.w = float(denoise_weight)

    def __call__(self, raw: Mapping[str, Any], targets: Mapping[str, Any], extra: Mapping[str, Any], device=None):
        import torch

        if DENOISE_HEAD not in raw:
            raise KeyError(f"the network has no {DENOISE_HEAD!r} head; got {sorted(raw)}")
        pred = raw[DENOISE_HEAD]
        dev = pred.device

        def t(a):
            return a if isinstance(a, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(a)).to(dev)

        den = masked_mse(pred, t(extra["clean"]).to(pred.dtype), t(extra["mask"]))
        labeled = t(extra["labeled"]).to(torch.bool)
        parts: dict[str, float] = {}
        if bool(labeled.any()):
            seg_raw = {k: v[labeled] for k, v in raw.items() if k != DENOISE_HEAD}
            seg_t = {k: t(v)[labeled] for k, v in targets.items()}
            seg, seg_parts = self.seg_loss(seg_raw, seg_t)
            parts = {k: float(v) for k, v in dict(seg_parts).items()}
        else:
            seg = pred.sum() * 0.0
        total = (1.0 - self.w) * seg + self.w * den
        return total, {**parts, "seg": float(seg.detach()), "denoise": float(den.detach())}

