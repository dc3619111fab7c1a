"""Denoised images from a model with a DenoiSeg denoising head (``cellseg denoise``).

A model trained with ``TrainConfig(denoise=True)`` (``cellseg train ... --denoise``, see
:mod:`cellseg.train.denoiseg`) has a ``"denoised"`` head: the network's estimate of the
clean, *normalized* input. Here it is mapped back to the input's intensities: the
percentile normalization (and the segmenter's ``transform``) is undone per frame and
channel, so a denoised image can be compared with, and shown over, the raw one.

Output policy: the denoised image has the input's shape and axes and is float32 in the
input's intensity units (an integer input is not rounded back: the estimate lies between
the integer levels). A constant frame (or channel) is its own denoised version.
Frames (T, and Z for a 2D model) are denoised one by one; a multi-channel image given to
a one-channel model is denoised channel by channel. The network runs at the image's own
scale (Noise2Void learns the noise of the pixel grid it was trained on), with tiles when
``tile`` is given, and by itself for frames of more than the segmenter's ``max_pixels``
(:data:`cellseg.segmenter.MAX_PIXELS`) when not; ``tile=0`` runs each frame whole.
"""
from __future__ import annotations

import numpy as np

__all__ = ["NoDenoisingHead", "check_denoises", "denoise_image", "denoised_frame", "denoised_like"]

HEAD = "denoised"  # cellseg.models.heads.DENOISE_HEAD (not imported here: no torch at import)


class NoDenoisingHead(ValueError):
    """The model has no denoising head; the message names the model."""


def check_denoises(model, what: str | None = None) -> None:
    """Raise :class:`NoDenoisingHead` naming the model when it cannot denoise."""
    if not bool(getattr(model, "config", {}).get("denoise", False)):
        name = what or getattr(model, "name", None) or "the model"
        raise NoDenoisingHead(
            f"model {name} has no denoising head (it was trained without --denoise); train one with "
            "'cellseg train ... --denoise [--unlabeled DIR]' (TrainConfig(denoise=True))")


def _inverse_transform(y: np.ndarray, transform: str) -> np.ndarray:
    if transform == "sqrt":
        return np.sign(y) * y * y
    if transform == "log":
        return (np.power(np.float32(100.0), y) - 1) / np.float32(99.0)
    return y


def denoised_frame(segmenter, x: np.ndarray, outputs: dict | None = None, norm_range=None) -> np.ndarray:
    """The denoised version of one frame ``x`` (``(*spatial)`` or ``(C, *spatial)`` with the
    model's channels), float32 of ``x``'s shape in ``x``'s intensities.

    ``outputs``: head outputs of this frame at its own scale when the caller has them (else the
    network runs here, tiled as the segmenter says)."""
    from .segmenter import drain

    x = np.asarray(x)
    sp = segmenter.spatial_ndim
    if not np.any(x != x.flat[0]):
        return x.astype(np.float32)
    if outputs is None or HEAD not in outputs:
        outputs = drain(segmenter.predict(x, norm_range))
    y = _inverse_transform(np.asarray(outputs[HEAD], np.float32), segmenter.transform)
    xc = x if x.ndim > sp else x[None]
    xn = segmenter.normalized(x, norm_range)
    xn = xn if xn.ndim > sp else xn[None]
    if y.shape != xc.shape:
        raise ValueError(f"the denoising head gave shape {y.shape} for a frame of shape {xc.shape}")
    out = np.empty(xc.shape, np.float32)
    for c in range(xc.shape[0]):
        raw = xc[c].astype(np.float64)
        nrm = xn[c].astype(np.float64)
        span = float(nrm.max() - nrm.min())
        if span <= 0:  # a constant channel: nothing to denoise
            out[c] = xc[c]
            continue
        a = float(raw.max() - raw.min()) / span  # normalized = (raw - b) / a, exactly affine
        b = float(raw.min()) - a * float(nrm.min())
        out[c] = (a * y[c].astype(np.float64) + b).astype(np.float32)
    return out if x.ndim > sp else out[0]


def denoised_like(segmenter, raw: np.ndarray, x: np.ndarray, outputs: dict | None = None,
                  norm_range=None) -> np.ndarray:
    """:func:`denoised_frame` of ``x`` (the frame as given to the model) in the channels of ``raw``
    (the frame as read): a grey frame given to an RGB model gets the mean of the denoised
    channels, an RGBA frame its alpha channel back."""
    y = denoised_frame(segmenter, x, outputs, norm_range)
    raw = np.asarray(raw)
    if y.shape == raw.shape:
        return y
    sp = segmenter.spatial_ndim
    if raw.ndim == sp and y.ndim == sp + 1:
        return y.mean(axis=0)
    if raw.ndim == sp + 1 and y.ndim == sp + 1 and raw.shape[0] > y.shape[0]:
        return np.concatenate([y, raw[y.shape[0]:].astype(np.float32)], axis=0)
    raise ValueError(f"cannot map a denoised frame of shape {y.shape} onto the input frame {raw.shape}")


def _frames_layout(model, axes: str) -> tuple[list[str], bool]:
    """(the axes iterated frame by frame, whether the model takes C) for an image with ``axes``."""
    sp = int(model.config.get("ndim", 2))
    model_c = int(model.config.get("in_channels", 1)) > 1
    frame = [a for a in "TZC" if a in axes and not (a == "Z" and sp == 3) and not (a == "C" and model_c)]
    return frame, model_c


def denoise_image(model, image: np.ndarray, axes: str | None = None, tile=None, segmenter=None,
                  progress=None) -> np.ndarray:
    """Denoise ``image`` (any of ``YX``, ``ZYX``, ``TYX``, ``CYX``... with ``axes``; ``None`` means
    ``YX``) with ``model``'s denoising head; returns float32 of the image's shape (module doc).

    ``progress(done, total)`` is called after each frame."""
    from .segmenter import Segmenter, SegmenterError, resolve_axes

    check_denoises(model)
    image = np.asarray(image)
    if image.size == 0:
        raise SegmenterError("the image is empty (size 0)")
    axes = resolve_axes(image, axes)
    seg = segmenter or Segmenter(model, tile=tile, diameter="off")
    sp = seg.spatial_ndim
    space = "ZYX" if sp == 3 else "YX"
    if not set(space) <= set(axes):
        raise SegmenterError(f"this model denoises {space} {'volumes' if sp == 3 else 'images'}; the image has "
                             f"axes {axes!r}")
    frame_axes, model_c = _frames_layout(model, axes)
    order = frame_axes + (["C"] if model_c else []) + list(space)
    if model_c:
        want = int(model.config["in_channels"])
        have = image.shape[axes.index("C")] if "C" in axes else 0
        if have != want:
            raise SegmenterError(f"the model takes {want} channels; the image has {have or 'none'} (axes {axes!r})")
    perm = [axes.index(a) for a in order]
    data = np.transpose(image, perm)
    nf = len(frame_axes)
    out = np.empty(data.shape, np.float32)
    idxs = list(np.ndindex(*data.shape[:nf])) if nf else [()]
    for i, idx in enumerate(idxs):
        out[idx] = denoised_frame(seg, np.ascontiguousarray(data[idx]))
        if progress is not None:
            progress(i + 1, len(idxs))
    return np.ascontiguousarray(np.transpose(out, np.argsort(perm)))
