"""Explicit intensity normalization and padding.

Normalization is never inferred from the dtype: a uint16 image with values
around 33000 (Fluo-N2DL-HeLa) and a uint8 DIC image both go through the same
named step, :func:`normalize_percentile` (the csbdeep/StarDist convention).
"""
from __future__ import annotations

from typing import Literal, Sequence, cast

import numpy as np
from scipy import ndimage as ndi

__all__ = ["EmptyImageError", "normalize_percentile", "pad_to_multiple", "PAD_MODES", "bright_background",
           "flat_field", "FLAT_FIELD_DEGREE", "noise_sigma", "noise_level", "denoise_frame", "NOISE_LEVEL", "luminance"]

PadMode = Literal["reflect", "symmetric", "edge", "constant"]
PAD_MODES: tuple[PadMode, ...] = ("reflect", "symmetric", "edge", "constant")


class EmptyImageError(ValueError):
    """The image (or one of its normalization groups) is constant: nothing to normalize."""


def _axis_tuple(axis, ndim: int, what: str):
    if axis is None:
        return None
    axes = (axis,) if np.isscalar(axis) else tuple(axis)
    out = []
    for a in axes:
        if not isinstance(a, (int, np.integer)) or not -ndim <= a < ndim:
            raise ValueError(f"{what}: axis {a!r} out of range for an image with {ndim} dimensions")
        out.append(int(a) % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"{what}: repeated axis in {axis!r}")
    return tuple(out)


#: magnitudes beyond which float64 data is normalized in float64 (float32 holds up to ~3.4e38)
_F32_SAFE = 1e37


def normalize_percentile(img, pmin: float = 1.0, pmax: float = 99.8, axis=None, clip: bool = False,
                         eps: float = 1e-20, name: str = "image") -> np.ndarray:
    """Percentile normalization: ``(img - p_lo) / (p_hi - p_lo + eps)`` as float32.

    ``p_lo``/``p_hi`` are the ``pmin``/``pmax`` percentiles over ``axis``
    (``None``: the whole image; e.g. ``axis=(1, 2)`` for one pair per channel
    of a ``CYX`` image). With ``clip=True`` the result is clipped to [0, 1].

    Constant input: when every group over ``axis`` is constant there is
    nothing to normalize and :class:`EmptyImageError` is raised, naming
    ``name`` and the value. When the percentiles coincide but the data is not
    constant (a few bright pixels on a flat background, fewer than
    ``100 - pmax`` percent), the group's maximum (or minimum) is used as the
    missing bound so the signal is kept. NaN or infinite values raise
    ``ValueError``. Computed in float32, or in float64 for float64 data whose
    values do not fit float32 (finite values up to 1e308 are fine).

    >>> import numpy as np
    >>> x = normalize_percentile(np.arange(101, dtype=np.uint16), 1, 99)
    >>> x.dtype, float(x[1]), float(x[99])
    (dtype('float32'), 0.0, 1.0)
    >>> float(normalize_percentile(np.arange(101.0), 1, 99, clip=True).max())
    1.0
    """
    x = np.asarray(img)
    if x.dtype == bool or x.dtype.kind not in "uif":
        raise ValueError(f"{name}: cannot normalize data of type {x.dtype}")
    if x.size == 0:
        raise EmptyImageError(f"{name}: image is empty (shape {x.shape})")
    if not (0.0 <= pmin < pmax <= 100.0):
        raise ValueError(f"{name}: need 0 <= pmin < pmax <= 100, got pmin={pmin}, pmax={pmax}")
    if eps < 0:
        raise ValueError(f"{name}: eps must be >= 0, got {eps}")
    ax = _axis_tuple(axis, x.ndim, name)
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    # float32 unless the values do not fit it (float64 data beyond ±3.4e38): then in float64
    wide = x.dtype.kind == "f" and x.dtype.itemsize > 4 and float(np.abs(x).max()) > _F32_SAFE
    ct: type[np.floating] = np.float64 if wide else np.float32
    xf = x.astype(ct, copy=False)
    lo, hi = np.percentile(xf, [pmin, pmax], axis=ax, keepdims=True)
    lo = lo.astype(ct)
    hi = hi.astype(ct)
    flat = hi <= lo
    if flat.any():
        mn = np.min(xf, axis=ax, keepdims=True)
        mx = np.max(xf, axis=ax, keepdims=True)
        if np.all(mx[flat] == mn[flat]) and flat.all():
            raise EmptyImageError(
                f"{name}: image is constant (all values {float(mn.ravel()[0]):g}); "
                "cannot normalize an empty image"
            )
        const = flat & (mx == mn)
        if const.any():
            raise EmptyImageError(
                f"{name}: {int(const.sum())} of {const.size} normalization groups (axis={axis!r}) are constant; "
                "cannot normalize them"
            )
        # percentiles collapsed onto the background: use max (or min) as the other bound
        up = flat & (mx > hi)
        hi = np.where(up, mx, hi)
        lo = np.where(flat & ~up, mn, lo)
    out = (xf - lo) / (hi - lo + ct(eps))
    if clip:
        np.clip(out, 0.0, 1.0, out=out)
    elif wide:  # outliers far beyond the percentiles stay finite in float32
        np.clip(out, -_F32_SAFE, _F32_SAFE, out=out)
    return out.astype(np.float32, copy=False)


def pad_to_multiple(img, multiple: int | Sequence[int], axes: Sequence[int] | None = None,
                    mode: PadMode = "reflect") -> tuple[np.ndarray, tuple[slice, ...]]:
    """Pad ``img`` at the end of ``axes`` so their sizes are multiples of ``multiple``.

    ``axes``: indices of the axes to pad (default: all). ``multiple``: one int
    for all of them or one per axis in ``axes``. ``mode``: one of
    :data:`PAD_MODES` (``constant`` pads with zeros; ``reflect`` works for any
    pad width, reflecting repeatedly, but needs the axis to have at least 2
    pixels). Returns ``(padded, crop)`` with ``padded[crop]`` equal to
    ``img``, so outputs computed on the padded image are cropped back with
    ``out[crop]``.
    """
    x = np.asarray(img)
    if mode not in PAD_MODES:
        raise ValueError(f"unknown pad mode {mode!r}; choose from {PAD_MODES}")
    ax = _axis_tuple(tuple(range(x.ndim)) if axes is None else axes, x.ndim, "pad_to_multiple")
    if np.isscalar(multiple):
        mult = (cast(int, multiple),) * len(ax)
    else:
        mult = tuple(cast(Sequence[int], multiple))
    if len(mult) != len(ax):
        raise ValueError(f"pad_to_multiple: {len(mult)} multiples given for {len(ax)} axes")
    pads = [(0, 0)] * x.ndim
    for a, m in zip(ax, mult):
        if not isinstance(m, (int, np.integer)) or m < 1:
            raise ValueError(f"pad_to_multiple: multiple must be a positive integer, got {m!r}")
        n = x.shape[a]
        if n == 0:
            raise ValueError(f"pad_to_multiple: axis {a} has size 0")
        extra = (-n) % int(m)
        if extra and mode == "reflect" and n < 2:
            raise ValueError(f"pad_to_multiple: cannot reflect-pad axis {a} of size {n}; use mode='edge'")
        pads[a] = (0, extra)
    crop = tuple(slice(0, n) for n in x.shape)
    if not any(p[1] for p in pads):
        return x, crop
    padded = np.pad(x, pads, mode=mode)
    return padded, crop


#: the illumination of a frame is a polynomial surface of this degree through its background
FLAT_FIELD_DEGREE = 3
#: the illumination is computed on a grid of about this many blocks across the frame's shorter side
_FLAT_FIELD_GRID = 64
#: each block's value is this percentile of its luminance: the bright field between dark objects
_FLAT_FIELD_PERCENTILE = 90.0
#: on the grid, dark regions up to this fraction of its shorter side (clusters of objects with no
#: field between them) are closed over by the background around them before the fit
_FLAT_FIELD_CLOSING = 9 / 64


def luminance(img: np.ndarray, channel_axis: int | None = None) -> np.ndarray:
    """A frame as float32, its colour channels (``channel_axis``) averaged."""
    x = np.asarray(img, np.float32)
    return x.mean(axis=channel_axis, dtype=np.float32) if channel_axis is not None else x


def bright_background(img: np.ndarray, channel_axis: int | None = None, pmin: float = 1.0,
                      pmax: float = 99.8) -> bool:
    """Whether a 2D frame (``channel_axis``: its colour channels, averaged) has a bright
    background, as transmitted-light images do (brightfield, H&E, other stains): its median
    lies in the upper half of its ``pmin``-``pmax`` percentile range. Fluorescence, with its
    dark background, does not; neither does a constant frame.

    >>> import numpy as np
    >>> dark = np.zeros((32, 32)); dark[8:12, 8:12] = 1
    >>> bright_background(dark), bright_background(1 - dark)
    (False, True)
    """
    lum = luminance(img, channel_axis)
    ok = np.isfinite(lum)
    finite = lum.ravel() if ok.all() else lum[ok]  # no copy of a finite frame
    if finite.size == 0:
        return False
    lo, hi = np.percentile(finite, (pmin, pmax))
    return bool(hi > lo and np.median(finite) >= (lo + hi) / 2)


def _poly_terms(shape: tuple[int, int], degree: int) -> np.ndarray:
    """The monomials ``y**i * x**j`` (``i + j <= degree``) of pixel-centre coordinates scaled to
    [-1, 1] on a grid of ``shape``, as columns ``(h * w, n_terms)``."""
    h, w = shape
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    return np.stack([(yy ** i * xx ** j).ravel() for i in range(degree + 1) for j in range(degree + 1 - i)], 1)


def _smooth_surface(x: np.ndarray, degree: int) -> np.ndarray:
    """The least-squares polynomial surface of ``degree`` through a 2D array (same shape)."""
    a = _poly_terms(x.shape, degree)
    coef, *_ = np.linalg.lstsq(a, np.asarray(x, np.float64).ravel(), rcond=None)
    return (a @ coef).reshape(x.shape)


def flat_field(img: np.ndarray, channel_axis: int | None = None, degree: int = FLAT_FIELD_DEGREE) -> np.ndarray:
    """A 2D frame (``channel_axis``: its channels) corrected for uneven illumination, as float32:
    every channel divided by the illumination and multiplied by its mean, so the intensities
    keep their range. The illumination is the background of the frame's luminance (the mean of
    its channels): the 90th percentile of each block of a grid about 64 blocks across (the bright
    field between dark objects), with dark regions up to 9/64 of the grid across closed over (a
    grey closing: the field around them fills them), fitted by a polynomial surface of
    ``degree`` (least squares; it follows a gradient or a vignette up to the edges and not the
    specimen's texture) and interpolated back. A transmitted-light image is the illumination
    times the specimen's transmission, and dividing by the illumination levels them.
    Frames whose illumination is not positive everywhere (fluorescence with an offset below
    zero, say) are returned unchanged.

    >>> import numpy as np
    >>> yy, xx = np.mgrid[0:64, 0:256]
    >>> img = (1.0 - 0.5 * xx / 255) * 200   # a flat specimen under a 2x illumination gradient
    >>> out = flat_field(img)
    >>> ratio = float(out[:, :32].mean() / out[:, -32:].mean())   # 2.0 before
    >>> 0.95 < ratio < 1.05
    True
    """
    from skimage.transform import resize

    x = np.asarray(img, np.float32)
    lum = luminance(x, channel_axis)
    if lum.ndim != 2:
        raise ValueError(f"flat_field: a 2D frame (with channel_axis for its channels), got shape {x.shape}")
    h, w = lum.shape
    b = max(1, round(min(h, w) / _FLAT_FIELD_GRID))  # block side
    gh, gw = -(-h // b), -(-w // b)
    padded = np.pad(lum, ((0, gh * b - h), (0, gw * b - w)), mode="edge")
    small = np.percentile(padded.reshape(gh, b, gw, b), _FLAT_FIELD_PERCENTILE, axis=(1, 3)).astype(np.float32)
    k = int(round(_FLAT_FIELD_CLOSING * min(gh, gw))) | 1
    small = ndi.grey_closing(small, size=(k, k), mode="reflect")
    small = _smooth_surface(small, degree).astype(np.float32)
    if not np.all(small > 0):
        return x
    # the grid's blocks centred on the padded frame, cropped back to the frame
    field = resize(small, (gh * b, gw * b), order=1, mode="edge", anti_aliasing=False,
                   preserve_range=True)[:h, :w].astype(np.float32)
    gain = np.float32(field.mean()) / np.maximum(field, np.float32(1e-3) * field.max())
    if channel_axis is not None:
        gain = np.expand_dims(gain, channel_axis)
    return (x * gain).astype(np.float32)


#: ``Segmenter(noise_filter="auto")`` filters a frame with a dark background (fluorescence) whose noise
#: (:func:`noise_level`) is above this fraction of its intensity range: clean fluorescence stays below
#: it (at most 0.021 on the DSB fluorescence training and validation images)
NOISE_LEVEL = 0.03
#: the non-local means filter's strength ``h`` in units of the frame's noise (:func:`denoise_frame`)
NOISE_FILTER_H = 0.6

#: Immerkær's mask: the difference of two Laplacians, blind to intensity planes and ramps, whose
#: response to pixel-wise noise of standard deviation s has standard deviation 6 s
_NOISE_MASK = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)


def noise_sigma(img: np.ndarray, channel_axis: int | None = None) -> float:
    """The standard deviation of the pixel-wise noise of a 2D frame (``channel_axis``: its
    channels, averaged): the median absolute response to Immerkær's mask (J. Immerkær, "Fast
    noise variance estimation", CVIU 64, 1996) over 0.6745 · 6, as for Gaussian noise. The median
    keeps edges and texture out of it; a smooth frame gives about 0.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> round(noise_sigma(100 + rng.normal(0, 5, (256, 256))), 1)
    5.0
    """
    lum = luminance(img, channel_axis)
    if lum.ndim != 2 or min(lum.shape) < 3:
        raise ValueError(f"noise_sigma takes a 2D frame of at least 3 x 3 pixels, got shape {lum.shape}")
    r = ndi.convolve(np.nan_to_num(lum), _NOISE_MASK, mode="reflect")[1:-1, 1:-1]
    return float(np.median(np.abs(r)) / (0.6745 * 6))


def noise_level(img: np.ndarray, channel_axis: int | None = None, pmin: float = 1.0, pmax: float = 99.8) -> float:
    """:func:`noise_sigma` of a 2D frame as a fraction of its ``pmin``-``pmax`` percentile range
    (0 for a constant frame): about 0.01 for clean fluorescence, 0.04-0.16 for DSB nuclei under
    Gaussian noise of a tenth of their range."""
    lum = luminance(img, channel_axis)
    finite = lum[np.isfinite(lum)]
    if finite.size == 0:
        return 0.0
    lo, hi = np.percentile(finite, (pmin, pmax))
    return noise_sigma(lum) / float(hi - lo) if hi > lo else 0.0


def denoise_frame(img: np.ndarray, channel_axis: int | None = None, sigma: float | None = None) -> np.ndarray:
    """A 2D frame (``channel_axis``: its colour channels) with its pixel-wise noise filtered, as
    float32: non-local means (``skimage.restoration.denoise_nl_means``, fast mode, 5 x 5 patches
    searched within 6 px) of strength :data:`NOISE_FILTER_H` times the noise ``sigma``
    (:func:`noise_sigma` when not given). It keeps edges where a Gaussian or median filter turns
    noise into blobs the size of nuclei. A frame without noise is returned as it is (float32)."""
    from skimage.restoration import denoise_nl_means

    x = np.asarray(img, np.float32)
    s = noise_sigma(x, channel_axis) if sigma is None else float(sigma)
    if not s > 0:
        return x
    y = denoise_nl_means(x, h=NOISE_FILTER_H * s, sigma=s, patch_size=5, patch_distance=6, fast_mode=True,
                         channel_axis=channel_axis, preserve_range=True)
    return np.asarray(y, np.float32)
