"""Building and running a segmentation for the Segment widget, and re-decoding its cached
head outputs with other decode parameters (no network call)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ._models import get_model

__all__ = ["build_segmenter", "SegmentRun", "segmentation_task", "redecode"]


def build_segmenter(model, params: dict | None = None, tile: int | None = None,
                    normalize: tuple[float, float] | None = None, augment: bool | None = None,
                    diameter: float | str | None = None, pixel_size: float | None = None,
                    denoise: bool = False, backend: str = "auto", precision: str = "auto",
                    flat_field: str = "auto", noise_filter: str = "auto"):
    """A :class:`cellseg.segmenter.Segmenter` that keeps head outputs (for re-decoding).

    ``tile`` None: frames larger than the segmenter's pixel budget go through the network in
    tiles, smaller ones at once (:data:`cellseg.segmenter.MAX_PIXELS`, same labels); 0: the
    whole image at once, whatever its size; ``augment`` None: the model's choice.
    ``diameter`` (px, ``"auto"``, ``"off"``; None: the model's default) and ``pixel_size``
    (µm/px, or None/0 when unknown) set the scale the image is segmented at. ``denoise``:
    also compute the denoised image (models with a denoising head, see :func:`cellseg_napari._layers.denoised_layer`).
    ``backend``/``precision``: what runs the network (``"auto"``: the device's default path,
    see :mod:`cellseg.models.inference`); ``flat_field``: the correction of uneven illumination
    (``"auto"``, ``"on"``, ``"off"``; see :class:`cellseg.segmenter.Segmenter`), and ``noise_filter``
    the filtering of pixel-wise noise (the same choices).
    """
    from cellseg.segmenter import Segmenter

    return Segmenter(model, params=params or None, tile=None if tile is None else int(tile),
                     normalize=normalize, keep_outputs=True, augment=augment, diameter=diameter,
                     pixel_size=pixel_size or None, denoise=bool(denoise), backend=backend, precision=precision,
                     flat_field=flat_field, noise_filter=noise_filter)


@dataclass


class SegmentRun:
    """What one segmentation produced, kept by the widget for re-decoding."""

    segmenter: Any
    result: Any
    link: bool = False
    stitch_iou: float = 0.3
    link_iou: float = 0.3
    meta: dict = field(default_factory=dict)


def segmentation_task(model_spec_or_model, image: np.ndarray, axes: str, channel: int | None = None,
                      channel_names: Sequence[str] | None = None, params: dict | None = None,
                      tile: int | None = None, normalize: tuple[float, float] | None = None,
                      link: bool = False, augment: bool | None = None, diameter: float | str | None = None,
                      pixel_size: float | None = None, denoise: bool = False,
                      flat_field: str = "auto", noise_filter: str = "auto") -> Iterator:
    """Generator for a thread worker: loads the model, yields
    :class:`cellseg.segmenter.Progress` events, returns a :class:`SegmentRun`.

    ``image`` with ``axes`` as the layer holds it (an RGB layer: ``...YXC``); ``denoise``: the
    result also holds the denoised image (:func:`cellseg_napari._layers.denoised_layer`)."""
    from cellseg.segmenter import Progress

    if isinstance(model_spec_or_model, (str, os.PathLike)):
        yield Progress("load", 0, 1, message=f"loading model {Path(str(model_spec_or_model)).name}")
        model = get_model(str(model_spec_or_model))
    else:
        model = model_spec_or_model
    seg = build_segmenter(model, params=params, tile=tile, normalize=normalize, augment=augment,
                          diameter=diameter, pixel_size=pixel_size, denoise=denoise, flat_field=flat_field,
                          noise_filter=noise_filter)
    result = yield from seg.iter_segment(np.asarray(image), axes=axes, channel=channel,
                                         channel_names=channel_names, link=link)
    return SegmentRun(seg, result, link=link, meta={"axes": axes})


def redecode(run: SegmentRun, params: dict | None = None) -> Any:
    """Decode the cached head outputs of ``run`` again with ``params`` (no network call).

    Returns a new :class:`cellseg.segmenter.SegmentationResult` assembled exactly as
    :meth:`Segmenter.iter_segment` does (see :meth:`Segmenter.redecode`).
    """
    res = run.segmenter.redecode(run.result, params)
    # the outputs are those of the first run: same resampling (Segmenter.redecode leaves
    # the result's scale and diameter at their defaults)
    res.scale = getattr(run.result, "scale", 1.0)
    res.diameter = getattr(run.result, "diameter", None)
    return res
