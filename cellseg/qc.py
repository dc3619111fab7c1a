"""Does an image look like a model's training data? A cheap check behind a warning.

Three statistics of the percentile-normalized image tell the common modalities apart
(fluorescence: dark background, a long bright tail; DIC and phase contrast: mid-grey,
symmetric; H&E and brightfield: bright background, dark objects, colour):

* ``median``: the median normalized intensity,
* ``skew``: the skewness of the normalized intensities,
* ``colour``: the mean over pixels of the standard deviation across colour channels
  (0 for grey images).

A model records the range of each over its training images
(``config["image_stats"]``, see :func:`training_image_stats`);
:func:`unlike_training` names the statistics of an image that fall outside it by
more than a margin. It warns, it never refuses: the user may know better.
"""
from __future__ import annotations

import functools
from typing import Any, Iterable, Mapping

import numpy as np

__all__ = ["image_features", "training_image_stats", "merge_image_stats", "unlike_training", "suggest_model",
           "FEATURES"]

FEATURES = ("median", "skew", "colour")
#: absolute slack added to each side of a training range, and a relative one (of its width)
_ABS_MARGIN = {"median": 0.08, "skew": 0.75, "colour": 0.04}
_REL_MARGIN = 0.25
_DESCRIBE = {
    "median": "median intensity",
    "skew": "intensity skewness",
    "colour": "colour",
}
_MAX_SAMPLES = 65536


def image_features(x: np.ndarray, channel_axis: int | None = None, pmin: float = 1.0,
                   pmax: float = 99.8) -> dict[str, float]:
    """The statistics of one 2D/3D image (raw values; normalized here like the network's input).

    ``channel_axis``: the axis of colour channels, if any (each channel is normalized
    on its own, as the models do).
    """
    from .preprocess import normalize_percentile

    a = np.asarray(x)
    if channel_axis is not None:
        a = np.moveaxis(a, channel_axis, 0)
    else:
        a = a[None]
    flat = a.reshape(a.shape[0], -1)
    step = max(1, flat.shape[1] // _MAX_SAMPLES)
    # a sample of the pixels, in float64: finite float64 images beyond float32's range stay finite
    flat = flat[:, ::step].astype(np.float64)
    const = np.all(flat == flat[:, :1], axis=1)
    if const.all():
        return {"median": 0.0, "skew": 0.0, "colour": 0.0}
    norm = np.zeros(flat.shape, np.float64)
    norm[~const] = normalize_percentile(flat[~const], pmin, pmax, axis=1)
    grey = norm.mean(axis=0)
    med = float(np.median(grey))
    sd = float(grey.std())
    skew = float(np.mean((grey - grey.mean()) ** 3) / sd ** 3) if sd > 0 else 0.0
    colour = float(norm.std(axis=0).mean()) if norm.shape[0] > 1 else 0.0
    return {"median": med, "skew": float(np.clip(skew, -50, 50)), "colour": colour}


def training_image_stats(images: Iterable[np.ndarray], channel_axis: int | None = 0) -> dict[str, list[float] | int]:
    """``{feature: [low, high]}`` over training images: the 1st and 99th percentiles of
    each statistic (min and max for fewer than 100 images). Images are raw or already
    normalized (the statistics normalize again, which changes nothing for the latter)."""
    rows = [image_features(im, channel_axis=channel_axis) for im in images]
    if not rows:
        raise ValueError("no training images to describe")
    out: dict[str, list[float] | int] = {}
    for f in FEATURES:
        v = np.array([r[f] for r in rows])
        lo, hi = (np.percentile(v, [1, 99]) if v.size >= 100 else (v.min(), v.max()))
        out[f] = [round(float(lo), 4), round(float(hi), 4)]
    out["n_images"] = len(rows)
    return out


def merge_image_stats(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """The ranges of two :func:`training_image_stats` records together (a fine-tuned model
    knows both its original training images and the new ones).

    >>> merge_image_stats({"median": [0.1, 0.2], "n_images": 5}, {"median": [0.15, 0.4], "n_images": 2})
    {'median': [0.1, 0.4], 'n_images': 7}
    """
    out: dict[str, Any] = {}
    for f in FEATURES:
        ranges = [r[f] for r in (a, b) if f in r]
        if ranges:
            out[f] = [min(float(r[0]) for r in ranges), max(float(r[1]) for r in ranges)]
    out["n_images"] = int(a.get("n_images", 0)) + int(b.get("n_images", 0))
    return out


def unlike_training(features: Mapping[str, float], stats: Mapping[str, Iterable[float]] | None) -> list[str]:
    """The statistics of ``features`` outside the model's training ranges (with margins),
    as readable phrases; empty when the image looks like the training data (or the model
    records no ranges)."""
    if not stats:
        return []
    out = []
    for f in FEATURES:
        if f not in stats or f not in features:
            continue
        lo, hi = (float(v) for v in stats[f])
        m = _ABS_MARGIN[f] + _REL_MARGIN * (hi - lo)
        v = float(features[f])
        if v < lo - m or v > hi + m:
            out.append(f"{_DESCRIBE[f]} {v:.2f} (training images: {lo:.2f} to {hi:.2f})")
    return out


@functools.lru_cache(maxsize=1)
def _bundled_training_stats() -> tuple[tuple[str, str, dict], ...]:
    """``(name, objects, image_stats)`` of the bundled models that record what they segment and
    the statistics of their training images, the default model first (read once)."""
    from .models.registry import default_model_name, list_models, model_info

    rows = []
    try:
        default = default_model_name()
        names = sorted(list_models(), key=lambda n: (n != default, n))
    except Exception:  # noqa: BLE001  (no registry: nothing to suggest)
        names = []
    for name in names:
        info = model_info(name)
        if not info.get("objects"):
            continue
        stats = info.get("image_stats")
        if not stats:  # in the weights file's config
            try:
                from .models.modelfile import payload_config, read_model_file

                stats = payload_config(read_model_file(info["path"])).get("image_stats")
            except Exception:  # noqa: BLE001  (an unreadable file is reported when it is loaded)
                continue
        if stats:
            rows.append((name, str(info["objects"]), dict(stats)))
    return tuple(rows)


def _narrower(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether the training ranges ``a`` are within the width of ``b``'s in every statistic and
    narrower in one (more specific evidence when an image falls inside both)."""
    wa = [float(a[f][1]) - float(a[f][0]) for f in FEATURES if f in a and f in b]
    wb = [float(b[f][1]) - float(b[f][0]) for f in FEATURES if f in a and f in b]
    return bool(wa) and all(x <= y for x, y in zip(wa, wb)) and any(x < y for x, y in zip(wa, wb))


def suggest_model(features: Mapping[str, float], objects: str | None,
                  stats: Mapping[str, Any] | None) -> tuple[str, str] | None:
    """``(name, objects)`` of a bundled model for other objects than ``objects`` (what the running
    model segments) whose training images an image with ``features`` looks like, when that is
    the better evidence: the image is unlike the running model's training images (``stats``), or
    that model's ranges are narrower than the running model's in every statistic (a DIC or
    phase-contrast image falls inside the wide ranges of the ``nuclei`` model, whose training
    mixes fluorescence, brightfield and H&E, and inside the narrow ones of ``cells``). None when
    no such model exists or ``objects`` is unknown."""
    if not objects:
        return None
    off = bool(unlike_training(features, stats)) if stats else True
    for name, objs, other in _bundled_training_stats():
        if objs == objects or unlike_training(features, other):
            continue
        if off or (stats and _narrower(other, stats)):
            return name, objs
    return None

