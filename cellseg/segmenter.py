"""The Segmenter: normalize → tile → network → decode, for single images and stacks.

:meth:`Segmenter.iter_segment` is a generator that yields :class:`Progress`
events and *returns* a :class:`SegmentationResult`, so the CLI's progress bars
and napari's thread worker share one code path (napari's ``thread_worker``
passes the generator's return value to ``returned``). :meth:`Segmenter.segment`
drives it to the end.

Stacks:

* ``T`` axes: frame by frame; ``link=True`` relabels so that a cell keeps its id
  from one frame to the next (greedy IoU matching above ``link_iou``).
* ``Z`` axes: a 3D model segments the volume at once; a 2D model segments slice
  by slice and the slices are stitched by IoU (``stitch_iou``).
* ``C`` axes: ``channel`` picks one channel by index or name (OME channel
  names) when the model takes one channel.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .labels import link_by_iou

__all__ = ["Segmenter", "Progress", "SegmentationResult", "SegmenterError"]


class SegmenterError(ValueError):
    """Unusable input for segmentation (axes, channels, empty image...)."""


@dataclass
class Progress:
    """A progress event: ``stage`` is 'predict' or 'decode' (per frame) or 'link'."""

    stage: str
    done: int
    total: int
    frame: int = 0
    n_frames: int = 1
    message: str = ""

    @property
    def fraction(self) -> float:
        f = (self.frame + (self.done / max(self.total, 1))) / max(self.n_frames, 1)
        return float(min(1.0, f))


@dataclass
class SegmentationResult:
    """Labels (int32, axes = input axes without C) and what produced them.

    ``frames`` lists, per 2D/3D frame segmented, a dict with ``index`` (the
    position in the stack), ``scores`` (per object, by id in ``labels``),
    ``extra`` (decoder extras, e.g. StarDist polygons) and, when
    ``keep_outputs`` was set, ``outputs`` (the head outputs, for re-decoding).
    """

    labels: np.ndarray
    axes: str
    frames: list[dict] = field(default_factory=list)
    params: Any = None
    #: frame axes + spatial axes in the order frames were indexed (``frames[i]["index"]``)
    canon_axes: str = ""
    link: bool = False
    link_iou: float = 0.3
    stitch_iou: float = 0.3

    @property
    def n_objects(self) -> int:
        return int(len(np.unique(self.labels[self.labels > 0])))

    def scores(self) -> dict[int, float]:
        out: dict[int, float] = {}
        for fr in self.frames:
            out.update(fr.get("id_scores", {}))
        return out


def _resolve_axes(image: np.ndarray, axes: str | None) -> str:
    if axes is None:
        if image.ndim == 2:
            return "YX"
        raise SegmenterError(
            f"image has shape {image.shape}: say which axes it has (axes='ZYX', 'TYX', 'CYX', 'YXC', ...)"
        )
    axes = axes.upper().replace("S", "C")
    if len(axes) != image.ndim:
        raise SegmenterError(f"axes {axes!r} do not match an image with {image.ndim} dimensions {image.shape}")
    if len(set(axes)) != len(axes) or not set(axes) <= set("TZCYX"):
        raise SegmenterError(f"axes {axes!r}: letters must be unique and from T, Z, C, Y, X")
    if "Y" not in axes or "X" not in axes:
        raise SegmenterError(f"axes {axes!r} must contain Y and X")
    return axes


class Segmenter:
    """Segment images with a :class:`cellseg.models.CellsegModel`.

    Parameters
    ----------
    model : CellsegModel
    params : decode parameter overrides (mapping or the representation's Params);
        defaults are the model's tuned thresholds.
    tile : tile size in pixels (per spatial axis, or one int); ``None`` runs the
        network on the whole image.
    margin : context per side for tiles; default from the receptive field.
    normalize : ``(pmin, pmax)`` percentiles; default the model's.
    blend : ``'crop'`` (default; equals the untiled run) or ``'linear'``.
    keep_outputs : keep head outputs in the result (for re-decoding).
    augment : test-time augmentation (mean over the 8 flips/transposes of each tile,
        8x the network time); default the model's choice (``model.augment``).
    """

    def __init__(
        self,
        model,
        params: Any = None,
        tile: int | Sequence[int] | None = None,
        margin: int | Sequence[int] | None = None,
        normalize: tuple[float, float] | None = None,
        blend: str = "crop",
        keep_outputs: bool = False,
        augment: bool | None = None,
    ):
        self.model = model
        self.rep = model.representation
        self.params = self.rep.params(self._default_params(), **({} if params is None else {}))
        if params is not None:
            self.params = self.rep.params({**dataclasses.asdict(self.params), **self._as_dict(params)})
        self.tile = tile
        self.margin = margin
        norm = model.config.get("normalization", {}) if hasattr(model, "config") else {}
        self.normalize = tuple(normalize) if normalize is not None else (
            float(norm.get("pmin", 1.0)),
            float(norm.get("pmax", 99.8)),
        )
        self.blend = blend
        self.keep_outputs = keep_outputs
        self.augment = bool(getattr(model, "augment", False)) if augment is None else bool(augment)

    # -- construction -------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, **kwargs) -> "Segmenter":
        """A bundled model by name (see ``cellseg.models.list_models()``) or a model file."""
        from .models import load_model

        return cls(load_model(name_or_path), **kwargs)

    def _default_params(self) -> dict:
        th = getattr(self.model, "thresholds", None) or {}
        return dict(th)

    @staticmethod
    def _as_dict(params) -> dict:
        if dataclasses.is_dataclass(params):
            return dataclasses.asdict(params)
        return dict(params)

    @property
    def spatial_ndim(self) -> int:
        return int(self.model.config.get("ndim", 2))

    def default_margin(self) -> int:
        rf = int(getattr(self.model, "receptive_field", 64))
        return int(math.ceil(rf / 2))

    # -- core ---------------------------------------------------------------------
    def predict(self, image: np.ndarray, norm_range: tuple[float, float] | None = None) -> Iterator:
        """Normalized, tiled network outputs of one frame; generator → returns outputs.

        ``norm_range=(lo, hi)`` normalizes with a given intensity range instead of
        the frame's own percentiles (block-wise runs use one range for the image).
        """
        from .preprocess import normalize_percentile
        from .tiling import predict_tiled

        if norm_range is None:
            # one percentile pair per channel for multi-channel input (C, *spatial)
            axis = tuple(range(1, image.ndim)) if image.ndim > self.spatial_ndim else None
            x = normalize_percentile(image, *self.normalize, axis=axis)
        else:
            lo, hi = (np.float32(v) for v in norm_range)
            x = (np.asarray(image, np.float32) - lo) / (hi - lo + np.float32(1e-20))
        margin = self.margin if self.margin is not None else self.default_margin()
        predict = functools.partial(self.model.predict, augment=self.augment)
        return (
            yield from predict_tiled(
                predict,
                x,
                spatial_ndim=self.spatial_ndim,
                tile=self.tile,
                margin=margin,
                div_by=int(getattr(self.model, "div_by", 1)),
                blend=self.blend,
            )
        )

    def decode(self, outputs: dict, params: Any = None, **overrides):
        """Decode cached head outputs (no network call) with the segmenter's params,
        updated by ``params`` / keyword overrides."""
        base = dataclasses.asdict(self.params)
        if params is not None:
            base.update(self._as_dict(params))
        return self.rep.decode(outputs, self.rep.params(base, **overrides))

    def _select_channel(self, image: np.ndarray, axes: str, channel, channel_names) -> tuple[np.ndarray, str]:
        if "C" not in axes:
            if getattr(self.model, "in_channels", 1) != 1:
                raise SegmenterError(f"the model takes {self.model.in_channels} channels; the image has none")
            return image, axes
        c = axes.index("C")
        n = image.shape[c]
        want = int(getattr(self.model, "in_channels", 1))
        if channel is None:
            if want == n:
                return image, axes  # the model takes all channels
            if n == 1:
                return np.take(image, 0, axis=c), axes.replace("C", "")
            raise SegmenterError(
                f"the image has {n} channels; choose one with channel= (index"
                + (f" or one of {list(channel_names)})" if channel_names else ")")
            )
        if isinstance(channel, str) and not channel.lstrip("-").isdigit():
            if not channel_names or channel not in list(channel_names):
                raise SegmenterError(f"no channel named {channel!r}; channels are {list(channel_names or [])}")
            idx = list(channel_names).index(channel)
        else:
            idx = int(channel)
        if not -n <= idx < n:
            raise SegmenterError(f"channel {idx} out of range: the image has {n} channels")
        return np.take(image, idx, axis=c), axes.replace("C", "")

    def iter_segment(
        self,
        image: np.ndarray,
        axes: str | None = None,
        channel: int | str | None = None,
        channel_names: Sequence[str] | None = None,
        link: bool = False,
        link_iou: float = 0.3,
        stitch_iou: float = 0.3,
        norm_range: tuple[float, float] | None = None,
        **overrides,
    ) -> Iterator[Progress]:
        """Generator yielding :class:`Progress`; returns a :class:`SegmentationResult`."""
        image = np.asarray(image)
        if image.size == 0:
            raise SegmenterError("the image is empty (size 0)")
        axes = _resolve_axes(image, axes)
        image, axes = self._select_channel(image, axes, channel, channel_names)
        params = self.rep.params({**dataclasses.asdict(self.params)}, **overrides) if overrides else self.params
        sp = self.spatial_ndim
        # frame axes: T always; Z too when the model is 2D
        if sp == 3:
            if "Z" not in axes:
                raise SegmenterError(f"this model segments 3D volumes (ZYX); the image has axes {axes!r}")
            frame_axes = [a for a in axes if a not in "ZYX" and a != "C"]
            space = "ZYX"
        else:
            frame_axes = [a for a in axes if a not in "YX" and a != "C"]
            space = "YX"
        if any(a not in "TZ" for a in frame_axes):
            raise SegmenterError(f"cannot segment axes {axes!r}")
        chan_last = "C" in axes
        # canonical order: frame axes (T then Z), [C], spatial
        order = [a for a in "TZ" if a in frame_axes] + (["C"] if chan_last else []) + list(space)
        perm = [axes.index(a) for a in order]
        data = np.transpose(image, perm)
        n_frame_dims = len(frame_axes)
        frame_shape = data.shape[:n_frame_dims]
        out_axes = "".join(a for a in order if a != "C")
        spatial_shape = data.shape[n_frame_dims + (1 if chan_last else 0):]
        labels = np.zeros(frame_shape + spatial_shape, np.int32)
        frames: list[dict] = []
        n_frames = int(np.prod(frame_shape)) if frame_shape else 1
        next_id = 1
        for fi, idx in enumerate(np.ndindex(*frame_shape) if frame_shape else [()]):
            x = data[idx]
            if chan_last:
                x = np.ascontiguousarray(x)  # (C, *spatial)
            if not np.any(x != x.flat[0]):
                frames.append(self._empty_frame(idx))
                yield Progress("decode", 1, 1, fi, n_frames, "constant frame: no objects")
                continue
            gen = self.predict(x, norm_range)
            while True:
                try:
                    done, total = next(gen)
                except StopIteration as stop:
                    outputs = stop.value
                    break
                yield Progress("predict", done, total, fi, n_frames)
            fr, next_id = self._decode_frame(idx, outputs, params, next_id, labels)
            if not self.keep_outputs:
                fr.pop("outputs")
            frames.append(fr)  # outputs of earlier frames are not kept unless asked: memory stays bounded
            yield Progress("decode", 1, 1, fi, n_frames)
        in_axes = "".join(a for a in axes if a != "C")
        return self._finish(labels, frames, out_axes, in_axes, params, link, link_iou, stitch_iou)

    @staticmethod
    def _empty_frame(idx) -> dict:
        return {"index": tuple(idx), "scores": np.zeros(0, np.float32), "extra": {}, "id_scores": {}, "empty": True}

    def _decode_frame(self, idx, outputs, params, next_id: int, labels: np.ndarray) -> tuple[dict, int]:
        """Decode one frame into ``labels[idx]`` with ids from ``next_id`` on."""
        dec = self.rep.decode(outputs, params)
        lab = dec.labels
        n = int(lab.max()) if lab.size else 0
        if n:
            lab = np.where(lab > 0, lab + (next_id - 1), 0).astype(np.int32)
        labels[tuple(idx)] = lab
        id_scores = {next_id + i: float(s) for i, s in enumerate(np.asarray(dec.scores).ravel())}
        fr = {"index": tuple(idx), "scores": dec.scores, "extra": dec.extra, "id_scores": id_scores,
              "outputs": outputs}
        return fr, next_id + n

    def _finish(self, labels: np.ndarray, frames: list[dict], canon_axes: str, in_axes: str, params,
                link: bool, link_iou: float, stitch_iou: float) -> SegmentationResult:
        """Stitch Z slices of a 2D model, link T frames, and return labels in the input's axis order."""
        if self.spatial_ndim == 2 and "Z" in canon_axes:
            labels = self._link(labels, canon_axes.index("Z"), stitch_iou, frames)
        if link and "T" in canon_axes:
            labels = self._link(labels, canon_axes.index("T"), link_iou, frames)
        back = [canon_axes.index(a) for a in in_axes]
        labels = np.ascontiguousarray(np.transpose(labels, back))
        return SegmentationResult(labels=labels, axes=in_axes, frames=frames, params=params,
                                  canon_axes=canon_axes, link=link, link_iou=link_iou, stitch_iou=stitch_iou)

    def redecode(self, result: SegmentationResult, params: Any = None, **overrides) -> SegmentationResult:
        """Decode the head outputs kept in ``result`` (``keep_outputs=True``) again with new
        decode parameters — no network call — assembling frames exactly as
        :meth:`iter_segment` does (id offsets, Z stitching, T linking)."""
        if any("outputs" not in fr and not fr.get("empty") for fr in result.frames):
            raise ValueError("this result kept no head outputs: segment with keep_outputs=True")
        base = dataclasses.asdict(self.params)
        if params is not None:
            base.update(self._as_dict(params))
        p = self.rep.params(base, **overrides)
        canon_shape = tuple(result.labels.shape[result.axes.index(a)] for a in result.canon_axes)
        labels = np.zeros(canon_shape, np.int32)
        frames, next_id = [], 1
        for fr in result.frames:
            if fr.get("empty"):
                frames.append(self._empty_frame(fr["index"]))
                continue
            new, next_id = self._decode_frame(fr["index"], fr["outputs"], p, next_id, labels)
            frames.append(new)
        return self._finish(labels, frames, result.canon_axes, result.axes, p, result.link, result.link_iou,
                            result.stitch_iou)

    @staticmethod
    def _link(labels: np.ndarray, axis: int, iou: float, frames: list[dict]) -> np.ndarray:
        stack = np.moveaxis(labels, axis, 0)
        linked, mapping = link_by_iou(stack, iou)
        for fr in frames:
            fr["id_scores"] = {int(mapping.get(k, k)): v for k, v in fr["id_scores"].items()}
        return np.ascontiguousarray(np.moveaxis(linked, 0, axis))

    def segment(self, image: np.ndarray, **kwargs) -> SegmentationResult:
        """Run :meth:`iter_segment` to the end and return its result."""
        gen = self.iter_segment(image, **kwargs)
        while True:
            try:
                next(gen)
            except StopIteration as stop:
                return stop.value
