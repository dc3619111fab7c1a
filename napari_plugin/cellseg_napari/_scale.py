"""The scale an image is segmented at: the object-diameter and pixel-size controls, the
Z step of a volume, and what a result says about its scale."""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["DIAMETER_CHOICES", "object_size", "diameter_choices", "diameter_value", "pixel_size_from_scale",
           "z_step_from_layer", "z_step_note", "object_size_text", "network_scale", "scale_summary"]


#: the object-diameter combo: (label, value); "px" takes the number of the diameter box
DIAMETER_CHOICES = [
    ("model default", "default"),
    ("auto (estimate it)", "auto"),
    ("off (image's own scale)", "off"),
    ("number of pixels:", "px"),
]


def object_size(model) -> dict:
    """The model's ``config["object_size"]`` (``{}`` when it records none, or no diameter)."""
    cfg = getattr(model, "config", None) or {}
    size = dict(cfg.get("object_size") or {})
    return size if size.get("diameter") else {}


def diameter_choices(model=None) -> list[tuple[str, str]]:
    """Choices of the object-diameter combo for ``model`` (None: not loaded yet, all
    choices). A model that records no object size segments at the image's own scale
    only: a diameter cannot be matched to it."""
    if model is None:
        return list(DIAMETER_CHOICES)
    size = object_size(model)
    if not size:
        return [("off (the model records no object size)", "off")]
    default = str(size.get("default") or "off")
    return [(f"model default ({default})", "default")] + list(DIAMETER_CHOICES[1:])


def diameter_value(choice: str | None, px: float | None = None) -> float | str | None:
    """What :class:`cellseg.segmenter.Segmenter` takes as ``diameter`` for a combo value
    (``"default"``/None → None, ``"auto"``, ``"off"``, ``"px"`` → ``px``)."""
    if choice in (None, "default"):
        return None
    if choice in ("auto", "off"):
        return choice
    if choice == "px":
        if px is None or not float(px) > 0:
            raise ValueError("enter the objects' diameter in pixels (a positive number)")
        return float(px)
    raise ValueError(f"unknown diameter choice {choice!r}")


def z_step_from_layer(scale: Sequence[float] | None, axes: str, metadata: dict | None = None) -> float | None:
    """The Z step over the X pixel size of a layer with ``axes``: from its ``metadata['pixel_size']``
    (this plugin's reader: the file's voxel size), else its ``scale`` (per axis of ``axes``
    without C) when it is not napari's default of ones; None when neither says."""
    ps = (metadata or {}).get("pixel_size") or {}
    if ps.get("Z") and ps.get("X"):
        return float(ps["Z"]) / float(ps["X"])
    axes = axes.replace("C", "")
    if scale is None or len(scale) != len(axes) or "Z" not in axes:
        return None
    z, x = float(scale[axes.index("Z")]), float(scale[axes.index("X")])
    if not (z > 0 and x > 0) or (z == 1.0 and x == 1.0):
        return None
    return z / x


def z_step_note(model, axes: str, z_step: float | None) -> str | None:
    """What to tell when a 3D ``model`` segments a volume whose Z step (``z_step``, from
    :func:`z_step_from_layer`) differs from the one it was trained with by more than 10 %
    (the network sees objects squashed or stretched in Z); None otherwise."""
    cfg = getattr(model, "config", {}) or {}
    if int(cfg.get("ndim", 2)) != 3 or "Z" not in axes or not z_step:
        return None
    trained = float(getattr(getattr(model, "representation", None), "anisotropy", 1.0))
    if abs(z_step - trained) <= 0.1 * trained:
        return None
    return (f"the model was trained on volumes with a Z step of {trained:g} px, this layer's is {z_step:.3g} px: "
            f"resample Z by {z_step / trained:.3g} for results like the model's")


def pixel_size_from_scale(scale: Sequence[float] | None, axes: str) -> float | None:
    """The pixel size (µm/px) a layer's ``scale`` (per axis of ``axes`` without C) implies:
    the geometric mean of its Y and X entries; None when the scale is 1 there (napari's
    default: no physical size known) or missing."""
    if scale is None:
        return None
    axes = axes.replace("C", "")
    if len(scale) != len(axes) or "Y" not in axes or "X" not in axes:
        return None
    sy, sx = float(scale[axes.index("Y")]), float(scale[axes.index("X")])
    if not (sy > 0 and sx > 0) or (sy == 1.0 and sx == 1.0):
        return None
    return float(np.sqrt(sy * sx))


def object_size_text(model) -> str:
    """What the model records about its objects' size, for the widget."""
    size = object_size(model)
    if not size:
        return "the model records no object size: images are segmented at their own scale"
    txt = f"the model's objects: {float(size['diameter']):.3g} px"
    if size.get("pixel_size"):
        txt += f" at {float(size['pixel_size']):.3g} µm/px"
    elif not size.get("diameter_um"):
        txt += " (no pixel size recorded: give a diameter)"
    return txt + f"; default: {size.get('default') or 'off'}"


def network_scale(result) -> float:
    """The factor the network's input was resampled by, from the kept head outputs (their
    X size over the labels' X size); ``result.scale`` when no outputs were kept."""
    axes = getattr(result, "axes", "")
    for fr in getattr(result, "frames", []):
        out = fr.outputs
        if out and "X" in axes:
            return float(np.shape(next(iter(out.values())))[-1]) / float(result.labels.shape[axes.index("X")])
    return float(getattr(result, "scale", 1.0) or 1.0)


def scale_summary(result, model=None) -> str:
    """One line on the scale a result was segmented at: ``result.diameter`` and the factor
    the network's input was resampled by (:func:`network_scale`)."""
    d = getattr(result, "diameter", None)
    if d is None:
        return "segmented at the image's own scale"
    f = network_scale(result)
    size = object_size(model) if model is not None else {}
    txt = f"object diameter {float(d):.1f} px"
    if f != 1.0:
        txt += f", image resampled ×{f:.3g}"
        if size:
            txt += f" to the model's {float(size['diameter']):.3g} px"
    else:
        txt += " (near the model's size: not resampled)"
    return txt
