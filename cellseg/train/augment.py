"""Data augmentation applied to an image and its labels together.

Geometry (flips, 90° rotations, small rotations, isotropic scaling, elastic
deformation) is expressed as one coordinate map from the output patch to the
input image; the image is resampled linearly (``image_order``) and the labels
with nearest neighbour from the *same* coordinates, so they stay aligned and
integer (int32). Points that fall outside the image read 0 in both (background
labels, zero intensity, i.e. the normalized background level).

Rotations and scaling act in the YX plane; in 3D, flips apply to every axis and
scaling to every axis. Intensity changes (gain, offset, gamma, Gaussian noise,
Gaussian blur) touch the image only. Targets are computed afterwards from the
augmented labels (``rep.encode``), so vector targets (flows, offsets) are
always consistent with the geometry.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import ndimage as ndi

__all__ = ["AugmentConfig", "augment_pair", "sample_patch", "augment_intensity", "dim_objects",
           "patch_coordinates"]


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation knobs; every probability is per sample. ``AugmentConfig.none()`` disables all."""

    flip: bool = True  # random flips of every spatial axis
    rot90: bool = True  # random multiples of 90° in the YX plane
    rotate: float = 20.0  # max |angle| (degrees) of small rotations
    rotate_prob: float = 0.5
    scale: tuple[float, float] = (0.8, 1.25)  # zoom factor range (>1 enlarges objects)
    scale_prob: float = 0.5
    elastic: float = 2.0  # std (pixels) of the elastic displacement; 0 disables
    elastic_spacing: float = 16.0  # control-point spacing (pixels) of the smooth displacement
    elastic_prob: float = 0.3
    gain: tuple[float, float] = (0.75, 1.33)
    offset: tuple[float, float] = (-0.1, 0.1)
    gamma: tuple[float, float] = (0.75, 1.33)
    intensity_prob: float = 0.8
    noise: float = 0.05  # max std of additive Gaussian noise
    noise_prob: float = 0.3
    blur: float = 1.0  # max sigma of Gaussian blur
    blur_prob: float = 0.2
    image_order: int = 1  # interpolation order for the image (labels always use 0)
    #: per-object dimming: with this probability a patch has some of its objects pulled
    #: towards the background level by a factor drawn log-uniformly from ``dim_objects``
    #: (dim nuclei next to bright ones, as in fields with a wide intensity range)
    dim_objects_prob: float = 0.0
    dim_objects: tuple[float, float] = (0.1, 1.0)

    def __post_init__(self):
        for f in fields(self):
            if f.name.endswith("_prob") and not 0 <= getattr(self, f.name) <= 1:
                raise ValueError(f"AugmentConfig.{f.name} must be in [0, 1], got {getattr(self, f.name)}")
        for name in ("scale", "gain", "gamma", "dim_objects"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"AugmentConfig.{name} must be (lo, hi) with 0 < lo <= hi, got {(lo, hi)}")
        lo, hi = self.offset
        if lo > hi:
            raise ValueError(f"AugmentConfig.offset must be (lo, hi) with lo <= hi, got {(lo, hi)}")
        for name in ("rotate", "elastic", "noise", "blur"):
            if getattr(self, name) < 0:
                raise ValueError(f"AugmentConfig.{name} must be >= 0")
        if self.elastic_spacing <= 0:
            raise ValueError("AugmentConfig.elastic_spacing must be > 0")
        if self.image_order not in (0, 1, 3):
            raise ValueError("AugmentConfig.image_order must be 0, 1 or 3")

    @classmethod
    def none(cls) -> "AugmentConfig":
        """No augmentation at all (plain crops)."""
        return cls(flip=False, rot90=False, rotate_prob=0.0, scale_prob=0.0, elastic_prob=0.0,
                   intensity_prob=0.0, noise_prob=0.0, blur_prob=0.0)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "AugmentConfig":
        d = dict(d or {})
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - valid)
        if unknown:
            raise ValueError(f"unknown augmentation option(s) {unknown}; valid names are {sorted(valid)}")
        for k in ("scale", "gain", "offset", "gamma", "dim_objects"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _geometry(ndim: int, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """Random linear map (output offset -> input offset), ``(ndim, ndim)``."""
    a = np.eye(ndim)
    y, x = ndim - 2, ndim - 1
    if cfg.rot90:
        k = int(rng.integers(4))
        r = np.eye(ndim)
        c, s = [(1, 0), (0, 1), (-1, 0), (0, -1)][k]
        r[y, y], r[y, x], r[x, y], r[x, x] = c, -s, s, c
        a = r @ a
    if cfg.flip:
        a = np.diag(np.where(rng.random(ndim) < 0.5, -1.0, 1.0)) @ a
    if cfg.rotate > 0 and rng.random() < cfg.rotate_prob:
        t = math.radians(rng.uniform(-cfg.rotate, cfg.rotate))
        r = np.eye(ndim)
        r[y, y], r[y, x], r[x, y], r[x, x] = math.cos(t), -math.sin(t), math.sin(t), math.cos(t)
        a = r @ a
    if rng.random() < cfg.scale_prob and cfg.scale != (1.0, 1.0):
        lo, hi = cfg.scale
        zoom = math.exp(rng.uniform(math.log(lo), math.log(hi)))
        a = a / zoom  # one output pixel covers 1/zoom input pixels
    return a


def patch_coordinates(
    patch_shape: Sequence[int], center: Sequence[float] | np.ndarray, rng: np.random.Generator | None,
    cfg: AugmentConfig,
) -> np.ndarray:
    """Input coordinates ``(ndim, *patch_shape)`` of every output pixel (random geometry around ``center``).

    ``center`` is the continuous input position of the patch centre: a plain crop
    starting at pixel ``s`` has ``center = s + (p - 1) / 2``. Flips and 90°
    rotations turn about the patch centre, so they permute pixels exactly.
    """
    nd = len(patch_shape)
    grids = np.meshgrid(*[np.arange(p, dtype=np.float64) - (p - 1) / 2 for p in patch_shape], indexing="ij")
    u = np.stack(grids).reshape(nd, -1)
    a = np.eye(nd) if rng is None else _geometry(nd, rng, cfg)
    coords = (a @ u).reshape((nd, *patch_shape)) + np.asarray(center, dtype=np.float64).reshape((nd,) + (1,) * nd)
    if rng is not None and cfg.elastic > 0 and rng.random() < cfg.elastic_prob:
        coarse = [max(2, int(math.ceil(p / cfg.elastic_spacing)) + 1) for p in patch_shape]
        for d in range(nd):
            field = rng.normal(0.0, cfg.elastic, size=coarse)
            zoom = [p / c for p, c in zip(patch_shape, coarse)]
            coords[d] += ndi.zoom(field, zoom, order=3, mode="nearest", grid_mode=True)[
                tuple(slice(0, p) for p in patch_shape)]
    return coords


def _is_identity_grid(coords: np.ndarray) -> tuple[slice, ...] | None:
    """Slices when ``coords`` is an in-bounds integer translation (then resampling is a crop)."""
    nd = coords.shape[0]
    starts = coords[(slice(None),) + (0,) * nd]
    if not np.all(starts == np.round(starts)):
        return None
    shape = coords.shape[1:]
    grids = np.meshgrid(*[np.arange(p, dtype=np.float64) for p in shape], indexing="ij")
    for d in range(nd):
        if not np.array_equal(coords[d], grids[d] + starts[d]):
            return None
    return tuple(slice(int(s), int(s) + p) for s, p in zip(starts, shape))


def sample_patch(
    image: np.ndarray,
    labels: np.ndarray,
    patch_shape: Sequence[int],
    center: Sequence[float] | np.ndarray,
    rng: np.random.Generator | None = None,
    cfg: AugmentConfig | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Resample ``image (C, *sp)`` and ``labels (*sp)`` at a (randomly transformed) patch around ``center``.

    ``rng=None`` gives a plain, untransformed crop. Returns ``(float32 (C, *patch), int32 (*patch))``.
    """
    cfg = cfg or AugmentConfig()
    image = np.asarray(image, dtype=np.float32)
    labels = np.asarray(labels)
    if image.shape[1:] != labels.shape:
        raise ValueError(f"image spatial shape {image.shape[1:]} differs from labels shape {labels.shape}")
    if len(patch_shape) != labels.ndim:
        raise ValueError(f"patch shape {tuple(patch_shape)} must have {labels.ndim} axes")
    coords = patch_coordinates(patch_shape, center, rng, cfg)
    crop = _is_identity_grid(coords)
    if crop is not None and all(s.start >= 0 and s.stop <= n for s, n in zip(crop, labels.shape)):
        img = np.ascontiguousarray(image[(slice(None),) + crop])
        lab = np.ascontiguousarray(labels[crop], dtype=np.int32)
        return img, lab
    lab = ndi.map_coordinates(labels.astype(np.int32, copy=False), coords, order=0, mode="constant", cval=0,
                              prefilter=False)
    img = np.stack([
        ndi.map_coordinates(ch, coords, order=cfg.image_order, mode="constant", cval=0.0,
                            prefilter=cfg.image_order > 1)
        for ch in image
    ]).astype(np.float32, copy=False)
    return img, lab.astype(np.int32, copy=False)


def augment_intensity(image: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """Random gamma, gain, offset, blur and noise on ``image (C, *sp)`` (a new float32 array)."""
    x: np.ndarray = np.array(image, dtype=np.float32, copy=True)
    if rng.random() < cfg.intensity_prob:
        lo, hi = float(x.min()), float(x.max())
        if hi > lo and cfg.gamma != (1.0, 1.0):
            g = math.exp(rng.uniform(math.log(cfg.gamma[0]), math.log(cfg.gamma[1])))
            x = lo + (hi - lo) * ((x - lo) / (hi - lo)) ** g
        x = x * rng.uniform(*cfg.gain) + rng.uniform(*cfg.offset)
    if cfg.blur > 0 and rng.random() < cfg.blur_prob:
        s = rng.uniform(0.0, cfg.blur)
        x = np.stack([ndi.gaussian_filter(ch, s) for ch in x])
    if cfg.noise > 0 and rng.random() < cfg.noise_prob:
        x = x + rng.normal(0.0, rng.uniform(0.0, cfg.noise), size=x.shape)
    return x.astype(np.float32, copy=False)


def dim_objects(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """Pull some objects of ``image (C, *sp)`` towards the background level (a new float32 array).

    With probability ``cfg.dim_objects_prob``, each object of ``labels`` is chosen with
    probability 1/2 and gets its own factor ``k`` (log-uniform in ``cfg.dim_objects``);
    ``x <- b + (x - b) * (1 - w (1 - k))`` where ``b`` is the median background
    intensity per channel and ``w`` the object's indicator, grown by 2 px and
    smoothed (sigma 1.5 px) so the halo dims with it. Works both ways: bright
    objects on a dark background and dark (stained) objects on a bright one.
    """
    x = np.array(image, dtype=np.float32, copy=True)
    if cfg.dim_objects_prob <= 0 or rng.random() >= cfg.dim_objects_prob:
        return x
    lab = np.asarray(labels)
    ids = np.unique(lab[lab > 0])
    if ids.size == 0 or not (lab == 0).any():
        return x
    chosen = ids[rng.random(ids.size) < 0.5]
    if chosen.size == 0:
        return x
    lo, hi = cfg.dim_objects
    k = np.exp(rng.uniform(math.log(lo), math.log(hi), size=chosen.size)).astype(np.float32)
    lut = np.zeros(int(lab.max()) + 1, np.float32)
    lut[chosen] = 1.0 - k
    amount = lut[lab]
    # grow into the background (nearest object's amount) and smooth the edge
    amount = ndi.grey_dilation(amount, size=(5,) * lab.ndim)
    amount = np.clip(ndi.gaussian_filter(amount, 1.5), 0.0, 1.0).astype(np.float32)
    bg = lab == 0
    for c in range(x.shape[0]):
        b = np.float32(np.median(x[c][bg]))
        x[c] = b + (x[c] - b) * (1.0 - amount)
    return x


def augment_pair(
    image: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    cfg: AugmentConfig | None = None,
    patch_shape: Sequence[int] | None = None,
    center: Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Augment an ``(image (C, *sp), labels (*sp))`` pair; by default the output has the input's shape.

    Geometry is sampled around ``center`` (continuous input position of the
    patch centre; default the image centre ``(n - 1) / 2``), then the
    intensity changes are applied to the image.
    """
    cfg = cfg or AugmentConfig()
    labels = np.asarray(labels)
    shape = tuple(patch_shape) if patch_shape is not None else labels.shape
    if center is None:
        center = [(n - 1) / 2 for n in labels.shape]
    img, lab = sample_patch(image, labels, shape, center, rng, cfg)
    return augment_intensity(img, rng, cfg), lab
