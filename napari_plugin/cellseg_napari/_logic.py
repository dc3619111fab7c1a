"""Plain functions behind the widgets: no Qt, no viewer, no torch at import.

Everything a widget does to data goes through here, so it is tested without a
viewer (``tests/test_napari_logic.py``) and the widgets only move values between
controls, layers and these functions.

Layer data is returned as napari "LayerData tuples" ``(data, kwargs, layer_type)``.
"""
from __future__ import annotations

import dataclasses
import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from cellseg.metrics import errors as _errors

__all__ = [
    "CUSTOM_MODEL",
    "TRAINED_MODELS",
    "TrainedModels",
    "model_choices",
    "model_spec",
    "get_model",
    "ParamSpec",
    "param_specs",
    "coerce_param",
    "param_text",
    "CHOOSE_AXES",
    "axes_from_labels",
    "known_axes",
    "axes_choices",
    "axes_label",
    "axes_combo_choices",
    "axes_hint",
    "z_step_from_layer",
    "z_step_note",
    "display_axis_labels",
    "default_axis_labels",
    "channel_choices",
    "training_channel_choices",
    "channels_equal",
    "DIAMETER_CHOICES",
    "object_size",
    "diameter_choices",
    "diameter_value",
    "pixel_size_from_scale",
    "object_size_text",
    "network_scale",
    "scale_summary",
    "build_segmenter",
    "model_denoises",
    "segmentation_task",
    "denoised_layer",
    "redecode",
    "output_layers",
    "polygon_layer",
    "flow_to_rgb",
    "ERROR_CATEGORIES",
    "ERROR_COLORS",
    "error_categories",
    "error_categories_frame",
    "NETWORKS",
    "COLOUR",
    "training_pairs_from_layers",
    "training_data",
    "DEFAULT_REPRESENTATION",
    "TrainingJob",
    "evaluation_rows",
    "looks_like_labels",
    "read_layers",
    "labels_axes",
    "write_labels_layer",
]

CUSTOM_MODEL = "custom file…"
FRESH_MODEL = "fresh (untrained)"


# --------------------------------------------------------------------------- models


class TrainedModels:
    """Models trained (or registered) in this session, by display name → file path.

    The train widget adds to it; the segment widget lists it and listens to
    :attr:`changed`. Kept in memory only: a model file stays usable later
    through "custom file…".
    """

    def __init__(self):
        from psygnal import Signal  # psygnal ships with napari; light

        class _Events:
            changed = Signal()

        self._events = _Events()
        self.changed = self._events.changed
        self._models: dict[str, Path] = {}

    def add(self, path: str | os.PathLike, name: str | None = None) -> str:
        p = Path(path).resolve()
        base = name or p.stem
        n = base
        for i in itertools.count(2):
            if n not in self._models or self._models[n] == p:
                break
            n = f"{base} ({i})"
        self._models[n] = p
        self.changed.emit()
        return n

    def remove(self, name: str) -> None:
        if self._models.pop(name, None) is not None:
            self.changed.emit()

    def names(self) -> list[str]:
        return list(self._models)

    def path(self, name: str) -> Path:
        return self._models[name]

    def __contains__(self, name) -> bool:
        return name in self._models


TRAINED_MODELS = TrainedModels()


def bundled_models() -> list[str]:
    """Names of the bundled models (reads the registry JSON; no torch)."""
    try:
        from cellseg.models import list_models
    except ImportError:  # models package not installed
        return []
    try:
        return list(list_models())
    except (OSError, ValueError):
        return []


def model_choices() -> list[str]:
    """Bundled models, then models trained in this session, then "custom file…"."""
    return bundled_models() + [n for n in TRAINED_MODELS.names()] + [CUSTOM_MODEL]


def default_model_choice() -> str:
    try:
        from cellseg.models import default_model_name

        return default_model_name()
    except Exception:  # noqa: BLE001 - no bundled model: fall back to the first choice
        return model_choices()[0]


def model_spec(choice: str, path: str | os.PathLike | None = None) -> str:
    """What :func:`cellseg.models.load_model` takes for a model combo choice."""
    if choice == CUSTOM_MODEL:
        if not path or not str(path).strip() or Path(path).is_dir():
            raise ValueError("choose a model file (.pt) for 'custom file…'")
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"model file {p} does not exist")
        return str(p)
    if choice in TRAINED_MODELS:
        return str(TRAINED_MODELS.path(choice))
    return str(choice)


_MODEL_CACHE: dict[tuple, Any] = {}


def get_model(spec: str):
    """Load a model by bundled name or file path, cached (a changed file is reloaded).

    Imports torch (through :mod:`cellseg.models`) on first use.
    """
    p = Path(spec)
    key = (str(p.resolve()), p.stat().st_mtime_ns) if p.exists() else (spec, None)
    model = _MODEL_CACHE.get(key)
    if model is None:
        from cellseg.models import load_model

        model = load_model(spec)
        if len(_MODEL_CACHE) > 4:
            _MODEL_CACHE.pop(next(iter(_MODEL_CACHE)))
        _MODEL_CACHE[key] = model
    return model


# --------------------------------------------------------------------------- decode params


@dataclass(frozen=True)
class ParamSpec:
    """One decode parameter control: ``kind`` is 'bool', 'int', 'float' or 'text'."""

    name: str
    kind: str
    value: Any
    doc: str = ""
    #: False for knobs the model's configuration does not use (e.g. the omnipose knobs of a
    #: cellpose-mode flows model): the widget keeps their value but shows no control
    shown: bool = True
    #: the control's range: the knob's declared bounds (None: unbounded on that side)
    low: float | None = None
    high: float | None = None


def _kind_of(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    if isinstance(value, (int, np.integer)):
        return "int"
    if isinstance(value, (float, np.floating)):
        return "float"
    return "text"  # None, tuples, strings: edited as a Python literal


def param_specs(representation, thresholds: dict | None = None) -> list[ParamSpec]:
    """Controls for the fields of ``representation.Params``, valued by the model's tuned
    ``thresholds`` (falling back to the dataclass defaults); tooltip and range are each
    knob's declared help and bounds (:mod:`cellseg.representations._params`)."""
    from cellseg.representations._params import knob_of

    params = representation.params(dict(thresholds or {}))
    used = set(representation.decode_param_names())
    specs = []
    for f in dataclasses.fields(params):
        k, value = knob_of(f), getattr(params, f.name)
        specs.append(ParamSpec(f.name, _kind_of(value), value, k.help, f.name in used, k.low, k.high))
    return specs


def param_text(value) -> str:
    """How a 'text' control shows a value: strings bare, None empty, others as literals."""
    if value is None:
        return ""
    return value if isinstance(value, str) else repr(value)


def coerce_param(kind: str, raw):
    """Turn a control's value back into a parameter value ('text' controls hold Python literals)."""
    if kind == "bool":
        return bool(raw)
    if kind == "int":
        return int(raw)
    if kind == "float":
        return float(raw)
    import ast

    s = str(raw).strip()
    if s in ("", "None"):
        return None
    try:
        return ast.literal_eval(s)
    except (ValueError, SyntaxError):
        return s


# --------------------------------------------------------------------------- image layers → axes


#: the first entry of the axes combo while napari cannot tell the layer's axes (T or Z, or C)
CHOOSE_AXES = "choose the axes…"

#: napari axis labels (lower case) that name one of cellseg's axes
_AXIS_WORDS = {
    "t": "T", "time": "T", "frame": "T", "frames": "T",
    "z": "Z", "depth": "Z", "plane": "Z", "planes": "Z", "slice": "Z", "slices": "Z",
    "c": "C", "ch": "C", "channel": "C", "channels": "C",
    "y": "Y", "x": "X",
}


def _fits(axes, nd: int, rgb: bool = False) -> bool:
    """Whether ``axes`` is a usable axes string for a layer with ``nd`` dimensions."""
    return (isinstance(axes, str) and len(axes) == nd and set(axes) <= set("TZCYX") and len(set(axes)) == nd
            and "Y" in axes and "X" in axes and (not rgb or axes.endswith("C")))


def axes_from_labels(labels: Sequence[str] | None) -> str | None:
    """Axes letters named by napari axis labels (``t``/``time``, ``z``/``depth``, ``c``/``channel``,
    ``y``, ``x``; any case); None when a label names none of them (napari's defaults
    ``-3``, ``-2``, ``-1`` or ``0``, ``1``, ``2``) or two labels name the same axis."""
    if not labels:
        return None
    letters = [_AXIS_WORDS.get(str(lab).strip().lower()) for lab in labels]
    if None in letters or len(set(letters)) != len(letters):
        return None
    return "".join(letters)


def known_axes(shape: Sequence[int], rgb: bool = False, metadata: dict | None = None,
               axis_labels: Sequence[str] | None = None) -> str | None:
    """The axes of an image layer when they are known, else None (the user must choose).

    Known: ``metadata['axes']`` (set by this plugin's reader, its samples, and a previous
    choice), napari's axis labels of the layer (``axis_labels``: one per dimension, an RGB
    layer's without its colour axis) when they name the axes (``t``, ``z``, ``c``, ``y``,
    ``x``...), a 2-D layer (``YX``; RGB: ``YXC``), and a 3-D layer whose
    ``metadata['channel_names']`` match its first axis (``CYX``). A stack napari labels
    only by number is not guessed: T or Z decides whether frames are segmented one by one
    or planes stitched into 3-D objects (the CLI asks for ``--axes`` as well)."""
    nd = len(shape)
    meta = metadata or {}
    if _fits(meta.get("axes"), nd, rgb):
        return meta["axes"]
    named = axes_from_labels(axis_labels)
    if named is not None:
        named = named + "C" if rgb and "C" not in named else named
        if _fits(named, nd, rgb):
            return named
    if nd == 2 and not rgb:
        return "YX"
    if nd == 3 and rgb:
        return "YXC"
    names = meta.get("channel_names")
    if nd == 3 and not rgb and isinstance(names, (list, tuple)) and len(names) == shape[0] > 1:
        return "CYX"
    return None


def axes_choices(shape: Sequence[int], rgb: bool = False, metadata: dict | None = None,
                 axis_labels: Sequence[str] | None = None) -> list[str]:
    """Plausible axes strings (letters TZCYX) for an image layer: its known axes first
    (:func:`known_axes`), then the others, the most likely first; RGB layers end in ``YXC``."""
    nd = len(shape)
    known = known_axes(shape, rgb, metadata, axis_labels)
    cands: list[str] = [known] if known else []
    if rgb:
        base = {3: ["YXC"], 4: ["TYXC", "ZYXC"], 5: ["TZYXC"]}.get(nd, [])
    else:
        if nd == 2:
            base = ["YX"]
        elif nd == 3:
            base = ["CYX", "ZYX", "TYX"] if shape[0] <= 4 else ["ZYX", "TYX", "CYX"]
            if shape[-1] in (3, 4):
                base.append("YXC")
        elif nd == 4:
            base = ["TZYX", "CZYX", "ZCYX", "TCYX"] if min(shape[:2]) > 4 else (
                ["CZYX", "ZCYX", "TCYX", "TZYX"] if shape[0] <= 4 else ["ZCYX", "TCYX", "TZYX", "CZYX"])
        elif nd == 5:
            base = ["TZCYX", "TCZYX"]
        else:
            base = []
    for a in base:
        if a not in cands:
            cands.append(a)
    if not cands:
        raise ValueError(f"cannot segment an image with {nd} dimensions {tuple(shape)}")
    return cands


def axes_label(axes: str) -> str:
    """How the axes combo shows ``axes``: the letters and what they mean (``TYX: time-lapse``)."""
    what = []
    if "T" in axes and "Z" in axes:
        what.append("time-lapse of z-stacks")
    elif "T" in axes:
        what.append("time-lapse")
    elif "Z" in axes:
        what.append("z-stack")
    if "C" in axes:
        what.append("colour" if axes.endswith("YXC") else "channels")
    return f"{axes}: {', '.join(what)}" if what else axes


def axes_combo_choices(shape: Sequence[int], rgb: bool = False, metadata: dict | None = None,
                       axis_labels: Sequence[str] | None = None) -> list[tuple[str, str | None]]:
    """``(label, axes)`` pairs for the axes combo: the known axes first; when napari cannot
    tell them (:func:`known_axes`), :data:`CHOOSE_AXES` (value None) first, so nothing runs
    until the user chooses."""
    known = known_axes(shape, rgb, metadata, axis_labels)
    out: list[tuple[str, str | None]] = [] if known else [(CHOOSE_AXES, None)]
    return out + [(axes_label(a), a) for a in axes_choices(shape, rgb, metadata, axis_labels)]


def axes_hint(name: str, shape: Sequence[int], choices: Sequence[str | None]) -> str:
    """The message when a layer's axes are not chosen yet: what each letter does."""
    cands = [a for a in choices if a]
    parts = []
    if any("T" in a for a in cands):
        parts.append("T for time (each frame segmented on its own, optionally linked)")
    if any("Z" in a for a in cands):
        parts.append("Z for depth (planes stitched into 3-D objects)")
    if any("C" in a for a in cands):
        parts.append("C for channels")
    return (f"choose the axes of '{name}' {tuple(int(n) for n in shape)} (napari does not say): "
            + ", ".join(parts))


def display_axis_labels(axes: str) -> tuple[str, ...]:
    """napari axis labels for data with ``axes`` (lower-case letters: ``t``, ``z``, ``y``, ``x``)."""
    return tuple(a.lower() for a in axes)


def default_axis_labels(labels: Sequence[str] | None) -> bool:
    """True for napari's default axis labels (numbers such as ``-3``, ``-2``, ``-1`` or ``0``, ``1``)."""
    import re

    return labels is None or all(re.fullmatch(r"-?\d+", str(lab).strip()) for lab in labels)


def channel_choices(shape: Sequence[int], axes: str, rgb: bool = False, metadata: dict | None = None,
                    in_channels: int = 1, equal: bool = False) -> list[tuple[str, int | None]]:
    """``(label, channel index or None)`` pairs for the channel combo; ``None`` hands the
    Segmenter all channels: offered first when the model takes as many channels as the
    image has (an RGB model also takes RGBA, alpha dropped), and for a 1-channel model
    when the colour channels are ``equal`` (grey stored as RGB, read as grey)."""
    if "C" not in axes:
        return []
    n = int(shape[axes.index("C")])
    names = _channel_names(shape, axes, rgb, metadata)
    out: list[tuple[str, int | None]] = []
    if in_channels == n and n > 1:
        out.append(("all channels", None))
    elif in_channels == 3 and n == 4:
        out.append(("all channels (alpha dropped)" if rgb else "channels 0-2 (the 4th dropped)", None))
    elif in_channels == 1 and n in (3, 4) and equal:
        out.append(("grey (equal colour channels)", None))
    out += [(str(nm), i) for i, nm in enumerate(names)]
    return out


def channels_equal(data, axis: int, max_size: int = 64_000_000) -> bool:
    """True when the first three channels of ``data`` along ``axis`` are identical (grey
    stored as RGB), as :class:`cellseg.segmenter.Segmenter` tests it. In-memory arrays of
    at most ``max_size`` elements only (others: False, nothing is loaded)."""
    if not isinstance(data, np.ndarray) or data.size > max_size:
        return False
    if not (-data.ndim <= axis < data.ndim) or data.shape[axis] not in (3, 4):
        return False
    first = np.take(data, 0, axis=axis)
    return all(np.array_equal(first, np.take(data, i, axis=axis)) for i in (1, 2))


# --------------------------------------------------------------------------- segmentation


def float_decimals(value: float, most: int = 6) -> int:
    """Decimals (2 to ``most``) a spin box needs to show ``value`` rounded to ``most`` decimals."""
    target = round(float(value), most)
    for d in range(2, most + 1):
        if round(target, d) == target:
            return d
    return most


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
        out = fr.get("outputs")
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


def build_segmenter(model, params: dict | None = None, tile: int | None = None,
                    normalize: tuple[float, float] | None = None, augment: bool | None = None,
                    diameter: float | str | None = None, pixel_size: float | None = None,
                    denoise: bool = False, backend: str = "auto", precision: str = "auto"):
    """A :class:`cellseg.segmenter.Segmenter` that keeps head outputs (for re-decoding).

    ``tile`` of 0 or None runs the whole image at once; ``augment`` None: the model's choice.
    ``diameter`` (px, ``"auto"``, ``"off"``; None: the model's default) and ``pixel_size``
    (µm/px, or None/0 when unknown) set the scale the image is segmented at. ``denoise``:
    also compute the denoised image (models with a denoising head, see :func:`denoised_layer`).
    ``backend``/``precision``: what runs the network (``"auto"``: the device's default path,
    see :mod:`cellseg.models.inference`).
    """
    from cellseg.segmenter import Segmenter

    return Segmenter(model, params=params or None, tile=int(tile) if tile else None,
                     normalize=normalize, keep_outputs=True, augment=augment, diameter=diameter,
                     pixel_size=pixel_size or None, denoise=bool(denoise), backend=backend, precision=precision)


def model_denoises(model) -> bool:
    """True when ``model`` has a DenoiSeg denoising head (trained with ``--denoise``)."""
    return bool(getattr(model, "config", {}).get("denoise", False))


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
                      pixel_size: float | None = None, denoise: bool = False) -> Iterator:
    """Generator for a thread worker: loads the model, yields
    :class:`cellseg.segmenter.Progress` events, returns a :class:`SegmentRun`.

    ``image`` with ``axes`` as the layer holds it (an RGB layer: ``...YXC``); ``denoise``: the
    result also holds the denoised image (:func:`denoised_layer`)."""
    from cellseg.segmenter import Progress

    if isinstance(model_spec_or_model, (str, os.PathLike)):
        yield Progress("load", 0, 1, message=f"loading model {Path(str(model_spec_or_model)).name}")
        model = get_model(str(model_spec_or_model))
    else:
        model = model_spec_or_model
    seg = build_segmenter(model, params=params, tile=tile, normalize=normalize, augment=augment,
                          diameter=diameter, pixel_size=pixel_size, denoise=denoise)
    result = yield from seg.iter_segment(np.asarray(image), axes=axes, channel=channel,
                                         channel_names=channel_names, link=link)
    return SegmentRun(seg, result, link=link, meta={"axes": axes})


def denoised_layer(run: SegmentRun, name: str, scale=None) -> tuple | None:
    """``(data, kwargs, "image")`` of the denoised image of ``run`` (None when it was not asked
    for): grey, on the image's grid, in the image's intensity units; it keeps a channel axis
    the model took (an RGB layer stays RGB)."""
    den = getattr(run.result, "denoised", None)
    if den is None:
        return None
    axes = run.result.axes
    if den.ndim != len(axes):  # the model took the channels: the layer's own axes (C included)
        axes = str(run.meta.get("axes", ""))
        if len(axes) != den.ndim or "C" not in axes:
            raise ValueError(f"denoised image of shape {den.shape} does not fit axes {axes!r}")
    kw = {"name": f"{name} denoised", "colormap": "gray", "metadata": {"axes": axes, "head": "denoised"}}
    c = axes.find("C")
    rgb = c == len(axes) - 1 and den.shape[c] in (3, 4)
    if rgb:
        kw["rgb"] = True
        lo, hi = float(den.min()), float(den.max())
        den = np.clip((den - lo) / (hi - lo), 0, 1).astype(np.float32) if hi > lo else np.zeros_like(den)
        del kw["colormap"]
    if scale is not None:
        sc = list(scale)
        if c >= 0 and not rgb:
            sc.insert(c, 1.0)
        kw["scale"] = tuple(sc)
    kw["axis_labels"] = display_axis_labels(axes[:-1] if rgb else axes)
    return den, kw, "image"


def _canonical(result, spatial_ndim: int) -> tuple[str, str]:
    """(canonical axes of the frame loop + space, space) as used by ``Segmenter.iter_segment``."""
    axes = result.axes
    if spatial_ndim == 3:
        space = "ZYX"
        frame_axes = [a for a in axes if a not in "ZYX"]
    else:
        space = "YX"
        frame_axes = [a for a in axes if a not in "YX"]
    order = [a for a in "TZ" if a in frame_axes] + list(space)
    return "".join(order), space


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


def flow_to_rgb(flow: np.ndarray) -> np.ndarray:
    """Colour image of a 2D flow field ``(2, Y, X)`` (dy, dx): hue = direction,
    brightness = magnitude (scaled by its 99th percentile). float32 ``(Y, X, 3)`` in [0, 1]."""
    from skimage.color import hsv2rgb

    flow = np.asarray(flow, np.float32)
    if flow.ndim != 3 or flow.shape[0] != 2:
        raise ValueError(f"flow_to_rgb expects a (2, Y, X) flow, got shape {flow.shape}")
    dy, dx = flow
    mag = np.hypot(dy, dx)
    scale = float(np.percentile(mag, 99)) if mag.size else 0.0
    hue = (np.arctan2(dy, dx) + np.pi) / (2 * np.pi)
    val = np.clip(mag / scale, 0, 1) if scale > 0 else np.zeros_like(mag)
    hsv = np.stack([hue % 1.0, np.ones_like(hue), val], axis=-1)
    return hsv2rgb(hsv).astype(np.float32)


def _stack_outputs(run: SegmentRun, head: str) -> tuple[np.ndarray, tuple[float, ...]] | None:
    """Head ``head`` of every frame as ``(C, *shape)`` in the labels' axis order, and per
    labels axis the ratio ``labels size / outputs size`` (1 for frame axes; above 1 where
    the image was shrunk to the model's object size). The outputs stay on the grid the
    network saw: a resampled run gives outputs of another spatial size than the labels."""
    res = run.result
    sp = run.segmenter.spatial_ndim
    canon, space = _canonical(res, sp)
    n_frame = len(canon) - len(space)
    frame_shape = tuple(res.labels.shape[res.axes.index(a)] for a in canon[:n_frame])
    full = None
    for fr in res.frames:
        out = fr.get("outputs")
        if out is None or head not in out:
            continue
        a = np.asarray(out[head], np.float32)
        if full is None:
            full = np.zeros((a.shape[0],) + frame_shape + a.shape[1:], np.float32)
        full[(slice(None),) + tuple(fr["index"])] = a
    if full is None:
        return None
    perm = [0] + [1 + canon.index(a) for a in res.axes]
    data = np.ascontiguousarray(np.transpose(full, perm))
    ratios = tuple(float(n) / float(m) for n, m in zip(res.labels.shape, data.shape[1:]))
    return data, ratios


def _grid_placement(scale, ratios: Sequence[float]) -> tuple[tuple | None, tuple | None]:
    """``(scale, translate)`` that put data sampled at ``ratios`` (labels pixels per data
    pixel, per axis) onto the labels' grid of layer ``scale`` (None: 1): data pixel ``i``
    lies at labels position ``(i + 0.5) * r - 0.5``, the pixel-centre convention of
    :func:`cellseg.scale.resize_labels`. ``(scale, None)`` when nothing was resampled."""
    if all(r == 1.0 for r in ratios):
        return (tuple(scale) if scale is not None else None), None
    base = tuple(float(v) for v in scale) if scale is not None else (1.0,) * len(ratios)
    return (tuple(b * r for b, r in zip(base, ratios)),
            tuple(b * (r - 1.0) / 2.0 for b, r in zip(base, ratios)))


def output_layers(run: SegmentRun, name: str, scale=None) -> list[tuple]:
    """Image layers of the raw head outputs: one channel → a single image
    ('magma' for probabilities / seeds), a 2-channel 2D flow → an RGB colour image
    (hue = direction), more channels (e.g. ray distances) → a stack with the channel
    axis first. Outputs of a resampled run stay at the model's scale and are placed
    over the image by the layers' scale and translate."""
    heads = [h.name for h in run.segmenter.rep.heads()]
    sp = run.segmenter.spatial_ndim
    layers = []
    for h in heads:
        stacked = _stack_outputs(run, h)
        if stacked is None:
            continue
        a, ratios = stacked
        lscale, ltrans = _grid_placement(scale, ratios)
        kw = {"name": f"{name} {h}", "blending": "additive", "visible": False,
              "metadata": {"axes": run.result.axes, "head": h}}
        if lscale is not None:
            kw["scale"] = lscale
        if ltrans is not None:
            kw["translate"] = ltrans
        if a.shape[0] == 1:
            data = a[0]
            kw["colormap"] = "magma"
        elif a.shape[0] == 2 and sp == 2 and "flow" in h.lower():
            flat = a.reshape(2, -1, *a.shape[-2:])
            data = np.stack([flow_to_rgb(flat[:, i]) for i in range(flat.shape[1])]).reshape(
                a.shape[1:] + (3,))
            kw["rgb"] = True
            kw["metadata"]["axes"] = run.result.axes + "C"
        else:
            data = a
            kw["colormap"] = "viridis"
            if lscale is not None:
                kw["scale"] = (1.0,) + tuple(lscale)
            if ltrans is not None:
                kw["translate"] = (0.0,) + tuple(ltrans)
            kw["metadata"]["axes"] = "C" + run.result.axes
        out_axes = kw["metadata"]["axes"]
        kw["axis_labels"] = display_axis_labels(out_axes[:-1] if kw.get("rgb") else out_axes)
        layers.append((data, kw, "image"))
    return layers


def polygon_layer(run: SegmentRun, name: str, scale=None) -> tuple | None:
    """StarDist polygons (``extra['polygons']``, ``(n, 2, n_rays)`` y/x) as a Shapes layer,
    vertices in the labels' axis order (frame index prepended for stacks). Polygons of
    a resampled run are mapped from the model's grid back onto the labels' grid."""
    res = run.result
    if run.segmenter.spatial_ndim != 2:
        return None
    canon, _ = _canonical(res, 2)
    ry = rx = 1.0
    for fr in res.frames:
        out = fr.get("outputs")
        if out:
            grid = np.shape(next(iter(out.values())))[-2:]
            ry = res.labels.shape[res.axes.index("Y")] / grid[0]
            rx = res.labels.shape[res.axes.index("X")] / grid[1]
            break
    polys = []
    for fr in res.frames:
        p = (fr.get("extra") or {}).get("polygons")
        if p is None:
            continue
        p = np.asarray(p, np.float32)
        if p.ndim != 3 or p.shape[1] != 2 or p.shape[0] == 0:
            continue
        idx = tuple(fr["index"])
        for poly in p:
            yx = poly.T  # (n_rays, 2)
            # pixel-centre convention of cellseg.scale.resize_labels (identity when not resampled)
            if ry != 1.0 or rx != 1.0:
                yx = np.stack([(yx[:, 0] + 0.5) * ry - 0.5, (yx[:, 1] + 0.5) * rx - 0.5], axis=1)
            coords = {"Y": yx[:, 0], "X": yx[:, 1]}
            for a, i in zip(canon, idx):
                coords[a] = np.full(len(yx), i, np.float32)
            polys.append(np.stack([coords[a] for a in res.axes], axis=1))
    if not polys:
        return None
    kw = {"name": f"{name} polygons", "shape_type": "polygon", "edge_color": "yellow",
          "face_color": "transparent", "edge_width": 1, "visible": True,
          "axis_labels": display_axis_labels(res.axes)}
    if scale is not None:
        kw["scale"] = tuple(scale)
    return (polys, kw, "shapes")


# --------------------------------------------------------------------------- evaluation

#: Categories of the error map (values of the evaluation Labels layer); see
#: :mod:`cellseg.metrics.errors`.
ERROR_CATEGORIES = _errors.ERROR_CATEGORIES
ERROR_COLORS = {
    0: (0, 0, 0, 0),
    1: (0.2, 0.85, 0.2, 1.0),   # green
    2: (1.0, 0.15, 0.15, 1.0),  # red
    3: (0.2, 0.5, 1.0, 1.0),    # blue
    4: (1.0, 0.2, 1.0, 1.0),    # magenta
    5: (1.0, 0.65, 0.0, 1.0),   # orange
}


error_categories = _errors.error_categories
error_categories_frame = _errors.error_categories_frame
_time_frames = _errors.paired_frames


def evaluation_rows(y_true: np.ndarray, y_pred: np.ndarray,
                    thresholds: Sequence[float] = (0.5, 0.6, 0.7, 0.8, 0.9),
                    axes: str | None = None) -> list[tuple[str, float]]:
    """Rows ``(metric, value)`` for the evaluation table, from :mod:`cellseg.metrics`:
    AP at each IoU threshold (TP / (TP + FP + FN) after optimal one-to-one matching,
    the DSB 2018 / StarDist convention), then precision, recall, F1, panoptic quality
    and the TP/FP/FN counts at IoU 0.5, and CTC SEG. With T in ``axes`` the frames
    are matched one by one and the counts pooled (SEG over all reference objects)."""
    from cellseg import metrics

    pairs, _ = _time_frames(y_true, y_pred, axes)
    thr = sorted({float(t) for t in thresholds} | {0.5})
    ms = dict(zip(thr, metrics.matching_dataset([p[0] for p in pairs], [p[1] for p in pairs], thresh=thr)))
    rows: list[tuple[str, float]] = [(f"AP@{float(t):.2f}", float(ms[float(t)].accuracy)) for t in thresholds]
    m5 = ms[0.5]
    rows += [("precision@0.50", float(m5.precision)), ("recall@0.50", float(m5.recall)),
             ("F1@0.50", float(m5.f1)), ("PQ@0.50", float(m5.panoptic_quality)),
             ("TP@0.50", float(m5.tp)), ("FP@0.50", float(m5.fp)), ("FN@0.50", float(m5.fn))]
    seg = metrics.seg_sequence([p[0] for p in pairs], [p[1] for p in pairs])
    rows.append(("SEG", float(seg.seg)))
    if len(pairs) > 1:
        rows.append(("frames", float(len(pairs))))
    return rows


# --------------------------------------------------------------------------- training

#: the representation the Train widget starts with: flows, the best of the bundled models (the
#: default nuclei-flows, and hela-dic-flows: SEG 0.864)
DEFAULT_REPRESENTATION = "flows"

#: backbone presets offered by the train widget (None: the library default)
NETWORKS = {
    "small (U-Net depth 2, width 16)": {"depth": 2, "width": 16},
    "default (U-Net depth 3, width 32)": None,
    "tiny (U-Net depth 1, width 8; for tests)": {"depth": 1, "width": 8},
}


#: the Train widget's channel choice that makes 3 colour channels (RGB kept, alpha dropped)
COLOUR = "rgb"


def _channel_names(shape: Sequence[int], axes: str, rgb: bool, metadata: dict | None) -> list[str]:
    n = int(shape[axes.index("C")])
    names = (metadata or {}).get("channel_names")
    if rgb and n in (3, 4):
        names = ["red", "green", "blue", "alpha"][:n]
    if not (isinstance(names, (list, tuple)) and len(names) == n):
        names = [f"channel {i}" for i in range(n)]
    return [str(nm) for nm in names]


def training_channel_choices(shape: Sequence[int], axes: str, rgb: bool = False, metadata: dict | None = None,
                             equal: bool = False) -> list[tuple[str, Any]]:
    """``(label, channel)`` pairs for the Train widget's channel combo, the default first:
    :data:`COLOUR` (3 colour channels: RGB kept, alpha dropped, by
    :func:`cellseg.train.general.to_rgb3`) for an RGB(A) layer, None (every channel an
    input channel of the model) for other multi-channel layers, then each channel by
    index (one channel: a grey model, or repeated for a 3-channel model). Colour channels
    that are ``equal`` (grey stored as RGB) offer grey (channel 0) first, then colour."""
    if "C" not in axes:
        return []
    n = int(shape[axes.index("C")])
    out: list[tuple[str, Any]] = []
    if equal and n in (3, 4):  # grey stored as colour: its channels are all the same
        return [("grey (equal colour channels)", 0), ("colour (3 equal channels)", COLOUR)]
    if rgb and n in (3, 4):
        out.append(("colour (RGB, alpha dropped)" if n == 4 else "colour (RGB)", COLOUR))
    elif n > 1:
        out.append((f"all {n} channels", None))
    names = _channel_names(shape, axes, rgb, metadata)
    return out + [(f"{nm} only", i) for i, nm in enumerate(names)]


def training_pairs_from_layers(image: np.ndarray, labels: np.ndarray, axes: str,
                               channel: int | str | None = None,
                               volume: bool = False) -> tuple[list, list[str], int]:
    """``(pairs, names, in_channels)`` for training from an image layer with ``axes``
    and a Labels layer: for 2D training T and Z planes become separate samples (planes
    without any label are skipped: not annotated); with ``volume`` (3D training) the Z axis
    stays: each T frame is one ZYX volume. With a C axis, ``channel`` says what the model
    gets: None every channel (``in_channels`` of them), an index that one channel,
    :data:`COLOUR` 3 colour channels (RGB kept, alpha dropped; a grey image repeated:
    :func:`cellseg.train.general.to_rgb3`)."""
    image = np.asarray(image)
    labels = np.asarray(labels)
    axes = axes.upper()
    if len(axes) != image.ndim:
        raise ValueError(f"axes {axes!r} do not fit the image of shape {image.shape}")
    shape0 = image.shape
    if "C" in axes and channel is not None and channel != COLOUR:
        c = axes.index("C")
        if not 0 <= int(channel) < image.shape[c]:
            raise ValueError(f"channel {channel} of an image with {image.shape[c]} channels (axes {axes!r})")
        image = np.take(image, int(channel), axis=c)
        axes = axes.replace("C", "")
    if volume and channel == COLOUR:
        raise ValueError("3D models take grey or multi-channel volumes, not RGB colour")
    if "C" in axes:  # channels first in each sample: (C, Y, X), or (C, Z, Y, X) for volumes
        c = axes.index("C")
        nsp = 3 if volume and "Z" in axes else 2
        image = np.moveaxis(image, c, -(nsp + 1))
        axes = axes.replace("C", "")
        axes = axes[:-nsp] + "C" + axes[-nsp:]
    spatial_axes = "".join(a for a in axes if a != "C")
    if labels.shape != tuple(image.shape[i] for i, a in enumerate(axes) if a != "C"):
        raise ValueError(f"labels of shape {labels.shape} do not match the image of shape {shape0} "
                         f"(axes {axes!r})")
    if volume and "Z" not in spatial_axes:
        raise ValueError(f"a 3D model trains on volumes: the image has no Z axis (axes {axes!r})")
    n_frame = len(spatial_axes) - (3 if volume else 2)
    pairs, names = [], []
    for idx in np.ndindex(*labels.shape[:n_frame]):
        lab = labels[idx]
        if n_frame and not lab.any():
            continue
        pairs.append((image[idx], lab))
        names.append("layer[" + ",".join(f"{a}={i}" for a, i in zip(spatial_axes, idx)) + "]" if n_frame
                     else "layer")
    if not pairs:
        raise ValueError("the labels layer has no labelled objects")
    if channel == COLOUR:
        from cellseg.train.general import to_rgb3

        pairs = [(to_rgb3(img, "CYX" if img.ndim == 3 else "YX", nm), lab) for (img, lab), nm in zip(pairs, names)]
    in_channels = pairs[0][0].shape[0] if pairs[0][0].ndim == (4 if volume else 3) else 1
    return pairs, names, in_channels


def training_data(pairs: Sequence, names: Sequence[str] | None = None, ndim: int = 2, in_channels: int = 1,
                  normalization: dict | None = None, source: str = "napari layers"):
    """:class:`cellseg.train.TrainingData` from raw ``(image, labels)`` pairs (images
    ``(Y, X)`` or ``(C, Y, X)``) for a model taking ``in_channels`` channels
    (:meth:`TrainingData.from_arrays`).

    For a 3-channel model a grey image is repeated and RGBA loses its alpha
    (:func:`cellseg.train.general.to_rgb3`). A constant channel of a colour image (no
    red, say) reads as background (0) and the others are normalized, as the Segmenter
    reads it (a constant channel cannot be normalized on its own)."""
    from cellseg.train import TrainingData, TrainingSample

    pairs = list(pairs)
    names = list(names) if names is not None else [f"{source}[{i}]" for i in range(len(pairs))]
    if in_channels == 3 and ndim == 2:
        from cellseg.train.general import to_rgb3

        def rgb3(img, name):
            img = np.asarray(img)
            if img.ndim == 2 or (img.ndim == 3 and img.shape[0] in (1, 4)):
                return to_rgb3(img, "YX" if img.ndim == 2 else "CYX", name)
            return img  # 3 channels already, or a mismatch TrainingData names

        pairs = [(rgb3(img, nm), lab) for (img, lab), nm in zip(pairs, names)]
    norm = dict(normalization or {"pmin": 1.0, "pmax": 99.8})
    plain, samples = [], {}
    for i, ((img, lab), nm) in enumerate(zip(pairs, names)):
        x = np.asarray(img)
        if in_channels > 1 and x.ndim == ndim + 1 and x.shape[0] == in_channels:
            flat = x.reshape(x.shape[0], -1)
            const = np.all(flat == flat[:, :1], axis=1)
            if const.any() and not const.all():
                one = TrainingData.from_arrays([(x[~const], lab)], [nm], ndim=ndim, in_channels=int((~const).sum()),
                                               normalization=norm, source=source).samples[0]
                full = np.zeros((x.shape[0],) + one.image.shape[1:], np.float32)
                full[~const] = one.image
                samples[i] = TrainingSample(nm, full, one.labels)
                continue
        plain.append(i)
    if plain:
        done = TrainingData.from_arrays([pairs[i] for i in plain], [names[i] for i in plain], ndim=ndim,
                                        in_channels=in_channels, normalization=norm, source=source)
        samples.update(zip(plain, done.samples))
    return TrainingData([samples[i] for i in range(len(pairs))], ndim, in_channels, norm, source)


class TrainingJob:
    """Train (or fine-tune) a model in a background thread and report progress.

    :meth:`run` is a generator for a napari thread worker: it yields progress dicts
    (``event``, ``fraction``, ``message`` and the training figures: ``loss``,
    ``val_loss``, ``val_ap50``...) and returns the path of the saved model. Stop
    with :meth:`stop` (the run stops after the current step; nothing is saved).

    ``data``: a list of raw ``(image, labels)`` pairs (see
    :func:`training_pairs_from_layers`) or a folder (``images/`` + ``masks/`` or the
    CTC layout; 2D or 3D as its label images are, with the anisotropy of the voxel size
    its files record).

    ``ndim``: 3 trains a 3D model on ``(Z, Y, X)`` volumes (pairs made with
    ``volume=True``) with ``anisotropy`` (Z step over the Y/X pixel size); a fine-tuned
    model keeps its own.
    """

    def __init__(self, data, out_path: str | os.PathLike, representation: str = DEFAULT_REPRESENTATION,
                 start: str | None = None, epochs: int = 10, steps_per_epoch: int = 20, patch_size: int = 128,
                 batch_size: int = 4, network: dict | None = None, names: Sequence[str] | None = None,
                 in_channels: int = 1, val_fraction: float = 0.2, seed: int = 0, denoise: bool = False,
                 unlabeled: str | os.PathLike | None = None, ndim: int = 2, anisotropy: float = 1.0):
        self.data = data
        if ndim not in (2, 3):
            raise ValueError(f"ndim must be 2 or 3, got {ndim!r}")
        if not (anisotropy > 0 and np.isfinite(anisotropy)):
            raise ValueError(f"the Z step (anisotropy) must be a positive number, got {anisotropy!r}")
        self.ndim, self.anisotropy = int(ndim), float(anisotropy)
        self.out_path = Path(out_path)
        if self.out_path.suffix != ".pt":
            raise ValueError(f"save the model as a .pt file, got {self.out_path.name}")
        self.representation = representation
        self.start = start
        self.epochs, self.steps_per_epoch = int(epochs), int(steps_per_epoch)
        self.patch_size, self.batch_size = int(patch_size), int(batch_size)
        self.network = network
        self.names = names
        self.in_channels = int(in_channels)
        self.val_fraction = float(val_fraction)
        self.seed = int(seed)
        # DenoiSeg: a denoising head, trained on every image and on the unlabelled folder's images
        self.denoise = bool(denoise)
        self.unlabeled = Path(unlabeled) if unlabeled else None
        if self.unlabeled is not None and not self.denoise:
            raise ValueError("unlabelled images train the denoising head only: tick 'denoise'")
        if self.unlabeled is not None and not self.unlabeled.is_dir():
            raise ValueError(f"{self.unlabeled} is not a folder")
        import threading

        self._stop = threading.Event()
        self.model = None
        self.history: list[dict] = []

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def _fit(self, emit):
        from cellseg import representations
        from cellseg.models import BackboneConfig, load_model
        from cellseg.train import TrainConfig, fit
        from cellseg.train.dataset import data_anisotropy, load_training_data

        model = load_model(self.start) if self.start else None  # a fresh copy: fit trains in place
        ndim = int(model.config.get("ndim", 2)) if model is not None else self.ndim
        anisotropy = self.anisotropy
        norm = model.config.get("normalization") if model is not None else None
        depth = (model.network.backbone_config if model is not None else BackboneConfig.from_dict(self.network)).depth
        div = 2 ** int(depth)
        if isinstance(self.data, (str, os.PathLike)):
            # a folder: 2D or 3D as its label images are, the Z step from its files' voxel size
            data = load_training_data(self.data, ndim=ndim if model is not None else None, normalization=norm)
            if model is None:
                ndim = data.ndim
                anisotropy = data_anisotropy(data)[0] or 1.0
        else:
            in_channels = int(model.config.get("in_channels", 1)) if model is not None else self.in_channels
            data = training_data(self.data, names=self.names, ndim=ndim, in_channels=in_channels,
                                 normalization=norm, source="napari layers")
        n_images = len(data)
        # the patch: the chosen size in Y/X, that size over the Z step in Z (3D)
        size = [self.patch_size] * ndim
        if ndim == 3:
            size[0] = max(16, int(round(self.patch_size / anisotropy)))
        if not isinstance(self.data, (str, os.PathLike)):  # layers: within the smallest sample
            size = np.minimum(size, np.min([s.labels.shape for s in data.samples], axis=0))
        patch = tuple(max(div, int(p) // div * div) for p in size)
        patch = patch[0] if len(set(patch)) == 1 else patch
        val_fraction = self.val_fraction if n_images >= 3 else None
        cfg = TrainConfig(epochs=self.epochs, steps_per_epoch=self.steps_per_epoch, batch_size=self.batch_size,
                          patch_size=patch, seed=self.seed, verbose=False, denoise=self.denoise)
        rep, backbone = self.representation, self.network
        if model is None and ndim == 3:
            rep = representations.get(self.representation, ndim=3, anisotropy=anisotropy)
            backbone = {**dict(self.network or {}), "ndim": 3}
        return fit(rep, data, config=cfg, model=model, backbone=backbone,
                   val_fraction=val_fraction, callback=emit, name=self.out_path.stem, unlabeled=self.unlabeled)

    def run(self) -> Iterator[dict]:
        import queue
        import threading

        q: queue.Queue = queue.Queue()
        total = max(1, self.epochs * self.steps_per_epoch)
        result: dict = {}

        def emit(ev):
            q.put(dict(ev))
            if ev.get("event") in ("step", "epoch"):  # returning False stops fit after a checkpoint
                return not self._stop.is_set()
            return None

        def target():
            try:
                result["model"] = self._fit(emit)
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                result["error"] = exc
            finally:
                q.put(None)

        th = threading.Thread(target=target, name="cellseg-train", daemon=True)
        th.start()
        completed = False
        try:
            while True:
                ev = q.get()
                if ev is None:
                    completed = True
                    break
                yield self._describe(ev, total)
        finally:
            if not completed:  # the consumer gave up: stop the run after its current step
                self._stop.set()
            th.join()
        if "error" in result:
            raise result["error"]
        model = result["model"]
        if self._stop.is_set() or model.config.get("training", {}).get("stopped_early"):
            return None
        self.model = model
        model.save(self.out_path)
        return str(self.out_path)

    def _describe(self, ev: dict, total: int) -> dict:
        kind = ev.get("event")
        if kind == "step":
            done = (ev["epoch"] - 1) * ev["steps_per_epoch"] + ev["step"]
            ev["fraction"] = min(1.0, done / total)
            ev["message"] = (f"epoch {ev['epoch']}/{self.epochs} step {ev['step']}/{ev['steps_per_epoch']}"
                             f"  loss {ev['loss']:.4f}")
        elif kind == "epoch":
            self.history.append(ev)
            ev["fraction"] = min(1.0, ev["epoch"] * self.steps_per_epoch / total)
            msg = f"epoch {ev['epoch']}/{self.epochs}  loss {ev['loss']:.4f}"
            if "val_ap50" in ev:
                msg += f"  val loss {ev['val_loss']:.4f}  AP50 {ev['val_ap50']:.3f}  SEG {ev['val_seg']:.3f}"
            ev["summary"] = msg  # the history line: no "finishing" once finished
            if ev["epoch"] == self.epochs:
                msg += "  (finishing…)"
            ev["message"] = msg
        elif kind == "done":
            ev["fraction"] = 1.0
            ev["message"] = "stopped" if ev.get("stopped") else "finished"
        else:
            ev["fraction"] = None
            ev["message"] = str(kind)
        return ev


# --------------------------------------------------------------------------- files


_LABEL_HINTS = ("label", "mask", "seg", "man_track", "_gt", "gt_", "annotation", "instances")


def looks_like_labels(data: np.ndarray, path: str | os.PathLike | None = None) -> bool:
    """Whether an array read from ``path`` is a label image rather than intensities.

    Integer, non-negative data only. Yes when the file name says so (``mask``,
    ``label``, ``seg``, ``man_track``...); otherwise when the data is piecewise
    constant: background 0 present and ≥ 95 % of the horizontally adjacent pairs of
    non-zero pixels equal (intensity images vary from pixel to pixel).
    """
    a = np.asarray(data)
    if a.dtype.kind not in "iub" or a.size == 0 or a.ndim < 2:
        return False
    if a.dtype.kind == "i" and a.min() < 0:
        return False
    name = Path(path).name.lower() if path is not None else ""
    if any(h in name for h in _LABEL_HINTS):
        return True
    sub = a.reshape(-1, a.shape[-2], a.shape[-1])[: 8]  # a few planes are enough
    if not (sub == 0).any():
        return False
    left, right = sub[..., :-1], sub[..., 1:]
    both = (left != 0) & (right != 0)
    if both.sum() < 16:
        return False
    same = (left == right) & both
    return bool(same.sum() / both.sum() >= 0.95)


def read_layers(path: str | os.PathLike) -> list[tuple]:
    """Read a TIFF with :mod:`cellseg.io` as an image or a labels layer (see
    :func:`looks_like_labels`); axes, channel names and pixel sizes go to the layer's
    metadata and scale; RGB(A) colour images become RGB layers, another channel axis
    becomes the layer's first."""
    from cellseg.io import read_image, read_labels

    p = Path(path)
    img = read_image(p)
    scale = None
    if img.pixel_size:
        scale = tuple(float(img.pixel_size.get(a, 1.0)) for a in img.axes if a != "C")
    meta = {"axes": img.axes, "path": str(p)}
    if img.channel_names:
        meta["channel_names"] = list(img.channel_names)
    if img.pixel_size:
        meta["pixel_size"] = dict(img.pixel_size)
    if "C" not in img.axes and looks_like_labels(img.data, p):
        labels = read_labels(p)
        kw = {"name": p.stem, "metadata": meta, "axis_labels": display_axis_labels(img.axes)}
        if scale:
            kw["scale"] = scale
        return [(labels, kw, "labels")]
    kw: dict[str, Any] = {"name": p.stem, "metadata": meta}
    data = img.data
    if "C" in img.axes:
        c = img.axes.index("C")
        n = data.shape[c]
        if c == data.ndim - 1 and n in (3, 4) and data.dtype == np.uint8:
            kw["rgb"] = True
            kw["axis_labels"] = display_axis_labels(img.axes[:-1])
            if scale:
                kw["scale"] = scale
            return [(data, kw, "image")]
        # keep the channel axis in the layer (a slider; the segment widget offers a channel
        # choice), moved first: napari aligns layers by their last axes, so the labels of a
        # ZCYX image (ZYX) would lie along its C axis. Its scale entry is 1.
        if c != 0:
            data = np.moveaxis(data, c, 0)
            meta["axes"] = "C" + img.axes.replace("C", "")
        kw["axis_labels"] = display_axis_labels(meta["axes"])
        if scale:
            kw["scale"] = (1.0,) + tuple(scale)
        return [(data, kw, "image")]
    kw["axis_labels"] = display_axis_labels(img.axes)
    if scale:
        kw["scale"] = scale
    return [(data, kw, "image")]


def labels_axes(ndim: int, metadata: dict | None = None) -> str:
    """Axes for writing a labels layer: ``metadata['axes']`` when it fits, else by ndim
    (YX, ZYX, TZYX)."""
    a = (metadata or {}).get("axes")
    if isinstance(a, str):
        a = a.replace("C", "")
        if len(a) == ndim and set(a) <= set("TZYX"):
            return a
    return {2: "YX", 3: "ZYX", 4: "TZYX"}.get(ndim) or _raise(ValueError(f"cannot write {ndim}D labels"))


def _raise(exc):
    raise exc


def write_labels_layer(path: str | os.PathLike, data: np.ndarray, meta: dict | None = None) -> list[str]:
    """Write labels with :func:`cellseg.io.write_labels` (atomic, compressed TIFF) in the
    canonical axis order TZYX."""
    from cellseg.io import transpose_axes, write_labels

    meta = meta or {}
    data = np.asarray(data)
    axes = labels_axes(data.ndim, meta.get("metadata"))
    canon = "".join(a for a in "TZYX" if a in axes)
    if canon != axes:
        data = transpose_axes(data, axes, canon)
        axes = canon
    ps = (meta.get("metadata") or {}).get("pixel_size")
    ps = {k: v for k, v in ps.items() if k in axes} if isinstance(ps, dict) else None
    if ps and not ("Y" in ps and "X" in ps):
        ps = None
    out = write_labels(path, data, axes=axes, pixel_size=ps or None)
    return [str(out)]
