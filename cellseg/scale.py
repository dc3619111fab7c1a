"""Object size and resampling: bring an image to a model's object size and its labels back.

A model records the object size of its training data (``config["object_size"]``:
the median equivalent diameter in pixels of its training objects after the
training resampling). :class:`cellseg.segmenter.Segmenter` resamples each frame
by ``factor = model_diameter / image_diameter`` (>1 enlarges), segments it, and
maps the labels back onto the input grid with :func:`resize_labels`, which keeps
every object id and gives smooth boundaries (per-object linear interpolation of
the object's indicator, the strongest object wins, ``>= 0.5`` is foreground).

Coordinates follow the pixel-centre convention of ``skimage.transform.resize``:
output pixel ``i`` of an axis resized from ``n`` to ``m`` samples input position
``(i + 0.5) * n / m - 0.5``.
"""
from __future__ import annotations

import math
from typing import Sequence, cast

import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "equivalent_diameters",
    "median_diameter",
    "scaled_shape",
    "zoom_image",
    "resize_labels",
    "scale_factor",
]


def equivalent_diameters(labels: np.ndarray) -> np.ndarray:
    """Equivalent diameter (px) of every object of a label image, in id order.

    2D: the diameter of the disc of the same area, ``sqrt(4 A / pi)``; 3D: of the
    ball of the same volume, ``(6 V / pi) ** (1/3)``.

    >>> import numpy as np
    >>> lab = np.zeros((20, 20), np.int32); lab[2:12, 2:12] = 1; lab[15:17, 15:17] = 5
    >>> equivalent_diameters(lab).round(2)   # areas 100 and 4
    array([11.28,  2.26])
    """
    lab = np.asarray(labels)
    if lab.ndim not in (2, 3):
        raise ValueError(f"labels must be 2D or 3D, got shape {lab.shape}")
    counts = np.bincount(lab[lab > 0].ravel().astype(np.int64))
    counts = counts[counts > 0].astype(np.float64)
    if lab.ndim == 2:
        return np.sqrt(4.0 * counts / math.pi)
    return np.cbrt(6.0 * counts / math.pi)


def median_diameter(labels: np.ndarray, exclude_border: bool = False) -> float | None:
    """Median equivalent diameter (px) of the objects of ``labels``; ``None`` without objects.

    ``exclude_border=True`` leaves out objects touching the image border (cut objects
    look smaller) unless that would leave fewer than 3 objects.

    >>> import numpy as np
    >>> lab = np.zeros((30, 30), np.int32)
    >>> for i, (y, x) in enumerate([(2, 2), (2, 16), (16, 2)], start=1):
    ...     lab[y:y + 10, x:x + 10] = i
    >>> round(median_diameter(lab), 2), median_diameter(np.zeros((4, 4), int)) is None
    (11.28, True)
    """
    if exclude_border:
        return window_median_diameter(labels)[0]
    d = equivalent_diameters(np.asarray(labels))
    return float(np.median(d)) if d.size else None


def window_median_diameter(labels: np.ndarray) -> tuple[float | None, int]:
    """``(median_diameter(labels, exclude_border=True), n)``, ``n`` the number of objects that do
    not touch the image border (the median is theirs when ``n >= 3``, else all objects').

    >>> import numpy as np
    >>> lab = np.zeros((30, 30), np.int32); lab[0:10, 0:10] = 1; lab[12:22, 12:22] = 2
    >>> d, n = window_median_diameter(lab); round(d, 2), n
    (11.28, 1)
    """
    lab = np.asarray(labels)
    n = 0
    if lab.size:
        edge = np.unique(np.concatenate([np.take(lab, [0, -1], axis=a).ravel() for a in range(lab.ndim)]))
        d = equivalent_diameters(np.where(np.isin(lab, edge[edge > 0]), 0, lab))
        n = int(d.size)
        if n >= 3:
            return float(np.median(d)), n
    d = equivalent_diameters(lab)
    return (float(np.median(d)) if d.size else None), n


def scaled_shape(shape: Sequence[int], factor: float | Sequence[float]) -> tuple[int, ...]:
    """``round(n * factor)`` per axis, at least 1."""
    f = _factors(factor, len(shape))
    return tuple(max(1, int(round(n * fi))) for n, fi in zip(shape, f))


def _factors(factor: float | Sequence[float], n: int) -> tuple[float, ...]:
    if np.isscalar(factor):
        f = (float(cast(float, factor)),) * n
    else:
        f = tuple(float(v) for v in cast(Sequence[float], factor))
    if len(f) != n:
        raise ValueError(f"{len(f)} scale factors for {n} axes")
    if not all(math.isfinite(v) and v > 0 for v in f):
        raise ValueError(f"scale factors must be positive and finite, got {f}")
    return f


def zoom_image(image: np.ndarray, factor: float | Sequence[float], spatial_ndim: int | None = None,
               order: int = 1) -> np.ndarray:
    """Resample the last ``spatial_ndim`` axes of ``image`` (float32) by ``factor``.

    Leading axes (channels) are kept. Downsampling smooths first (Gaussian, sigma
    ``(1/f - 1) / 2`` per axis, as scikit-image's anti-aliasing) so small bright
    objects are not aliased away. The output shape is :func:`scaled_shape`.
    """
    x = np.asarray(image, dtype=np.float32)
    sp = x.ndim if spatial_ndim is None else int(spatial_ndim)
    f = _factors(factor, sp)
    lead = x.ndim - sp
    out_sp = scaled_shape(x.shape[lead:], f)
    if out_sp == x.shape[lead:]:
        return x.copy()
    sigma = [0.0] * lead + [max(0.0, (1.0 / fi - 1.0) / 2.0) for fi in f]
    if any(s > 0 for s in sigma):
        x = ndi.gaussian_filter(x, sigma, mode="nearest")
    zoom = [1.0] * lead + [o / n for o, n in zip(out_sp, x.shape[lead:])]
    out = ndi.zoom(x, zoom, order=order, mode="nearest", grid_mode=True, prefilter=order > 1)
    if out.shape[lead:] != out_sp:  # pragma: no cover - scipy computes round(n * zoom) as well
        raise AssertionError(f"zoom gave {out.shape}, expected {out_sp}")
    return np.ascontiguousarray(out, dtype=np.float32)


def _source_coords(n_src: int, n_dst: int, lo: int, hi: int) -> np.ndarray:
    """Input positions of output pixels ``lo..hi-1`` (pixel-centre convention)."""
    return (np.arange(lo, hi, dtype=np.float64) + 0.5) * (n_src / n_dst) - 0.5


def resize_labels(labels: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Map a label image onto a grid of ``shape`` (same number of axes), keeping every id.

    Each object's indicator is interpolated linearly on the new grid (within its
    box); a pixel takes the object of largest interpolated value if that value is
    ``>= 0.5``. An object that gets no pixel this way (smaller than an output pixel)
    keeps the output pixel under its centroid when that pixel is background, so ids
    survive downsampling where there is room. Ids are not renumbered.
    Same shape: a copy.

    >>> import numpy as np
    >>> lab = np.zeros((6, 6), np.int32); lab[0:2, 0:2] = 3; lab[3:6, 3:6] = 9
    >>> big = resize_labels(lab, (12, 12))
    >>> big.shape, sorted(np.unique(big).tolist()), int((big == 9).sum())
    ((12, 12), [0, 3, 9], 36)
    >>> sorted(np.unique(resize_labels(big, (6, 6))).tolist())   # and back: every id kept
    [0, 3, 9]
    """
    lab = np.asarray(labels)
    shape = tuple(int(s) for s in shape)
    if lab.ndim != len(shape):
        raise ValueError(f"labels with {lab.ndim} axes cannot be resized to shape {shape}")
    if any(s < 1 for s in shape):
        raise ValueError(f"target shape {shape} must be positive")
    if lab.dtype.kind not in "iu":
        raise ValueError(f"labels must be integers, got {lab.dtype}")
    if tuple(lab.shape) == shape:
        return lab.copy()
    out = np.zeros(shape, dtype=lab.dtype)
    if lab.size == 0 or lab.max() <= 0:
        return out
    best = np.zeros(shape, dtype=np.float32)
    boxes = ndi.find_objects(np.where(lab > 0, lab, 0).astype(np.int64, copy=False))
    scale = [d / s for d, s in zip(shape, lab.shape)]
    missing = []
    for i, box in enumerate(boxes):
        if box is None:
            continue
        oid = i + 1
        # output pixels whose source position lies within the box padded by one pixel
        o_lo = [max(0, int(math.floor((b.start - 1 + 0.5) * sc - 0.5))) for b, sc in zip(box, scale)]
        o_hi = [min(d, int(math.ceil((b.stop + 0.5) * sc - 0.5)) + 1) for b, d, sc in zip(box, shape, scale)]
        src_lo = [max(0, b.start - 1) for b in box]
        src_hi = [min(n, b.stop + 1) for b, n in zip(box, lab.shape)]
        crop = (lab[tuple(slice(a, b) for a, b in zip(src_lo, src_hi))] == oid).astype(np.float32)
        axes = [_source_coords(n, d, lo, hi) - s0 for n, d, lo, hi, s0 in zip(lab.shape, shape, o_lo, o_hi, src_lo)]
        grid = np.meshgrid(*axes, indexing="ij")
        # beyond the image the edge pixels continue (an object touching the border keeps its outer
        # half pixel when enlarged); inside it the box is padded by one pixel, so this reads 0 there
        val = ndi.map_coordinates(crop, grid, order=1, mode="nearest", prefilter=False)
        region = tuple(slice(a, b) for a, b in zip(o_lo, o_hi))
        win = (val >= 0.5) & (val > best[region])
        if not win.any():
            missing.append((oid, box))
            continue
        best[region][win] = val[win]
        out[region][win] = oid
    for oid, box in missing:
        sub = lab[box] == oid
        c = [float(np.mean(ix)) + b.start for ix, b in zip(np.nonzero(sub), box)]
        p = tuple(min(d - 1, max(0, int(round((ci + 0.5) * sc - 0.5)))) for ci, sc, d in zip(c, scale, shape))
        if out[p] == 0:
            out[p] = oid
    return out


def scale_factor(model_diameter: float | None, diameter: float | None = None,
                 pixel_size: float | None = None, model_pixel_size: float | None = None) -> float:
    """The factor that brings an image to the model's object size (>1 enlarges).

    A known ``pixel_size`` (µm/px of the image) together with the model's
    ``model_pixel_size`` wins; otherwise ``model_diameter / diameter``; 1.0 when
    neither is known.
    """
    if pixel_size is not None and model_pixel_size is not None:
        if not (pixel_size > 0 and model_pixel_size > 0):
            raise ValueError(f"pixel sizes must be positive, got {pixel_size} and {model_pixel_size}")
        return float(pixel_size) / float(model_pixel_size)
    if diameter is not None and model_diameter is not None:
        if not (diameter > 0 and math.isfinite(diameter)):
            raise ValueError(f"diameter must be a positive number of pixels, got {diameter}")
        return float(model_diameter) / float(diameter)
    return 1.0
