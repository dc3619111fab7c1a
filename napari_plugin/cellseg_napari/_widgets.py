"""The dock widgets: Segment, Train and Evaluate (magicgui Containers).

The widgets move values between their controls, the viewer's layers and the plain
functions of :mod:`cellseg_napari._logic`; long work (model loading, segmentation,
re-decoding, training) runs in napari thread workers so the viewer never freezes.
torch is imported only when a model is loaded or trained, never at import.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    SpinBox,
    Table,
)

from . import _logic
from ._logic import CUSTOM_MODEL, FRESH_MODEL, TRAINED_MODELS

if TYPE_CHECKING:  # pragma: no cover
    import napari

__all__ = ["SegmentWidget", "TrainWidget", "EvaluateWidget"]

_PROGRESS_MAX = 1000


def _thread_worker(func, *args, **kwargs):
    """A napari worker for ``func(*args, **kwargs)`` (a generator function gives a
    GeneratorWorker, which can be cancelled at each ``yield``), not yet started."""
    from napari.qt.threading import create_worker

    return create_worker(func, *args, _start_thread=False, **kwargs)


def _layer_names(viewer, kind: str) -> list[str]:
    import napari.layers

    cls = {"image": napari.layers.Image, "labels": napari.layers.Labels}[kind]
    return [lyr.name for lyr in viewer.layers if isinstance(lyr, cls)]


def _layer_data(layer) -> np.ndarray:
    data = layer.data
    if getattr(layer, "multiscale", False):
        data = data[0]
    return np.asarray(data)


def _scale_without_c(layer, axes: str) -> tuple | None:
    """The layer's per-axis scale for the axes without C (RGB layers have no scale entry for C)."""
    scale = tuple(float(s) for s in layer.scale)
    if getattr(layer, "rgb", False):
        return scale
    if len(scale) != len(axes):
        return None
    return tuple(s for s, a in zip(scale, axes) if a != "C")


def _set_or_add(viewer, data, kwargs: dict, kind: str):
    """Replace the data of the layer named ``kwargs['name']`` when it has the same kind and
    shape, else (re)add it."""
    name = kwargs["name"]
    if name in viewer.layers:
        lyr = viewer.layers[name]
        same = type(lyr).__name__.lower() == kind and (
            kind == "shapes" or np.shape(lyr.data) == np.shape(data))
        if same and kind != "shapes":
            lyr.data = data
            meta = kwargs.get("metadata")
            if meta:
                lyr.metadata.update(meta)
            if "axis_labels" in kwargs:
                lyr.axis_labels = kwargs["axis_labels"]
            return lyr
        viewer.layers.remove(name)
    add = getattr(viewer, f"add_{kind}")
    kw = {k: v for k, v in kwargs.items()}
    return add(data, **kw)



def _message_label(value: str = "") -> Label:
    """A Label for messages (status, errors): it wraps at the dock's width instead of
    widening the dock (a long error was cut off at its edge), and its text can be
    selected and copied."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QSizePolicy

    lab = Label(label="", value=value)
    native = lab.native
    native.setWordWrap(True)
    native.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    policy = native.sizePolicy()
    policy.setHorizontalPolicy(QSizePolicy.Policy.Ignored)  # the text never sets the dock's width
    native.setSizePolicy(policy)
    return lab


def _set_choices(combo: ComboBox, choices, keep: bool = True) -> None:
    """Set ``(label, value)`` choices in their order, the first being the default (magicgui
    appends new items after the kept ones), keeping the chosen value when ``keep`` and it
    is still offered. The list becomes the combo's own (a callable), so a ``reset_choices``
    on layer changes keeps it, and the chosen value. One ``changed`` at most, at the end."""
    new = list(choices)
    labels = [combo.native.itemText(i) for i in range(combo.native.count())]
    if labels == [lab for lab, _ in new] and list(combo.choices) == [v for _, v in new]:
        if not keep and new and combo.value != new[0][1]:
            combo.value = new[0][1]
        return
    before = combo.value
    with combo.changed.blocked():
        combo.choices = []
        combo.choices = lambda w, new=new: new
        if keep and before in [v for _, v in new]:
            combo.value = before
    if combo.value != before:
        combo.changed.emit(combo.value)


def _layer_axis_labels(layer) -> tuple | None:
    """napari's axis labels of the layer's dimensions (an RGB layer: without its colour axis).
    Not the viewer's: those come from whichever layers have labels."""
    return tuple(getattr(layer, "axis_labels", ()) or ()) or None


def _axes_combo_choices(layer) -> list:
    if layer is None:
        return []
    try:
        return _logic.axes_combo_choices(_layer_data_shape(layer), rgb=bool(getattr(layer, "rgb", False)),
                                         metadata=dict(layer.metadata),
                                         axis_labels=_layer_axis_labels(layer))
    except ValueError:
        return []


def _remember_axes(layer, axes: str) -> None:
    """Record the axes chosen for a layer: in its metadata (Segment and Train read them) and,
    when napari only numbers its axes, as its axis labels (the sliders show T or Z)."""
    layer.metadata["axes"] = axes
    own = tuple(getattr(layer, "axis_labels", ()) or ())
    dims = axes[:-1] if getattr(layer, "rgb", False) else axes
    if own and _logic.default_axis_labels(own) and len(own) == len(dims):
        try:
            layer.axis_labels = _logic.display_axis_labels(dims)
        except (AttributeError, ValueError, TypeError):  # napari without settable axis labels
            pass


def _result_axis_labels(layer, axes: str, result_axes: str) -> tuple:
    """Axis labels for a result with ``result_axes`` made from ``layer`` with ``axes``: the
    layer's labels of those axes (one naming for the image and its labels), else letters."""
    own = tuple(getattr(layer, "axis_labels", ()) or ()) if layer is not None else ()
    dims = axes[:-1] if layer is not None and getattr(layer, "rgb", False) else axes
    names = dict(zip(dims, own)) if len(own) == len(dims) and not _logic.default_axis_labels(own) else {}
    return tuple(str(names.get(a, a.lower())) for a in result_axes)


def _show_decimals(w, value: float) -> None:
    """Let a float spin box hold ``value`` as given (tuned thresholds have up to 6
    decimals; Qt's spin box rounds to 2 by default, which would change the decoding)."""
    native = getattr(w, "native", None)
    if native is None or not hasattr(native, "setDecimals"):
        return
    need = _logic.float_decimals(value)
    if need > native.decimals():
        native.setDecimals(need)

class _ViewerWidget(Container):
    """A Container holding the viewer; subclasses call :meth:`_set_viewer` before
    creating controls whose choices read the viewer's layers."""

    def _set_viewer(self, napari_viewer):
        object.__setattr__(self, "viewer", napari_viewer)

    #: the widget scrolls in its dock, so a tall one (Segment, Train) can make room for
    #: another docked under it
    _scrollable = True

    @property
    def native(self):
        # napari docks ``native``; for a scrollable Container magicgui's ``native`` is the
        # inner widget, which napari would take out of its scroll area
        return self.root_native_widget

    def __init__(self, napari_viewer: "napari.viewer.Viewer", **kwargs):
        self._set_viewer(napari_viewer)
        super().__init__(scrollable=self._scrollable, **kwargs)
        ev = napari_viewer.layers.events
        for name in ("inserted", "removed", "reordered"):
            getattr(ev, name).connect(self._reset_choices_safe)

    def _reset_choices_safe(self, event=None):
        try:
            self.reset_choices()
        except RuntimeError:  # the Qt widget is gone (viewer closing)
            pass


# =========================================================================== Segment


class SegmentWidget(_ViewerWidget):
    """Segment an image layer with a cellseg model.

    Image layers may be 2D, stacks (T or Z) and multi-channel (an RGB layer or a
    channel axis, with a channel choice). The result is a Labels layer named
    ``<image> labels``; optionally the raw head outputs and StarDist polygons.
    Changing only decode thresholds re-decodes the cached head outputs at once
    (no network call).

    Scale: the object diameter (the model's default, ``auto`` to estimate it, ``off``
    for the image's own scale, or a number of pixels) and the pixel size (µm, from
    the layer's scale when it is not 1) go to the Segmenter, which resamples the
    image to the model's object size and maps the labels back onto the layer's grid;
    the diameter used is shown after each run.
    """

    def __init__(self, napari_viewer: "napari.viewer.Viewer"):
        self._set_viewer(napari_viewer)
        self._model = None          # the loaded model (CellsegModel)
        self._model_key = None      # the spec it was loaded from (name or path)
        self._run: _logic.SegmentRun | None = None
        self._run_info: dict = {}
        self._worker = None
        self._load_worker = None
        self._redecode_worker = None
        self._redecode_pending = False
        self._param_kinds: dict[str, str] = {}
        self._hidden_params: dict[str, Any] = {}
        self._has_polygons = False
        self._load_token = 0
        self._ps_default: float | None = None  # the pixel size set from the layer's scale
        self.n_predict_runs = 0     # finished segmentations (network runs)
        self.n_redecodes = 0

        self._image = ComboBox(label="image", choices=self._image_choices)
        # set by _reset_axes_choices: a stack whose axes napari does not know starts at CHOOSE_AXES
        self._axes = ComboBox(label="axes", choices=[],
                              tooltip="axes of the image data: T time (frames segmented one by one), Z depth "
                                      "(planes stitched into 3-D objects), C channel, Y, X")
        # set by _reset_channel_choices (in order, the default first), not by a callable
        self._channel = ComboBox(label="channel", choices=[])
        self._model_choice = ComboBox(label="model", choices=lambda w: _logic.model_choices(),
                                      value=_logic.default_model_choice())
        self._model_file = FileEdit(label="model file", mode="r", filter="*.pt", visible=False)
        self._model_status = _message_label()
        self._diameter = ComboBox(label="object diameter", choices=_logic.diameter_choices(None),
                                  tooltip="the objects' diameter in this image: the image is resampled so they "
                                          "get the size the model was trained on, and the labels are mapped back")
        self._diameter_px = FloatSpinBox(label="diameter (px)", value=0.0, min=0.0, max=100000.0, step=0.5,
                                         enabled=False,
                                         tooltip="the diameter used by the last run (estimated with 'auto'); "
                                                 "choose 'number of pixels' to set it yourself")
        self._pixel_size = FloatSpinBox(label="pixel size (µm)", value=0.0, min=0.0, max=100000.0, step=0.01,
                                        tooltip="µm per pixel (from the layer's scale when it is not 1); used "
                                                "with models that record their pixel size, instead of 'auto' "
                                                "(a diameter in pixels wins over it)")
        for w in (self._diameter_px, self._pixel_size):
            native = getattr(w, "native", None)
            if native is not None and hasattr(native, "setSpecialValueText"):
                native.setDecimals(4)
                native.setSpecialValueText("not set")
        self._scale_info = _message_label()
        self._params_header = Label(label="", value="decode thresholds (changes re-decode at once):")
        self._params = Container(label="", labels=True)
        self._tile = SpinBox(label="tile size", value=0, min=0, max=8192, step=64,
                             tooltip="tile size in pixels (0: the whole image at once)")
        self._pmin = FloatSpinBox(label="norm. pmin %", value=1.0, min=0.0, max=100.0, step=0.1)
        self._pmax = FloatSpinBox(label="norm. pmax %", value=99.8, min=0.0, max=100.0, step=0.1)
        self._augment = CheckBox(text="test-time augmentation (8x slower)", value=False,
                                 tooltip="average the network over the 8 flips/transposes of the image")
        self._link = CheckBox(text="link objects over time (T)", value=False, visible=False)
        self._show_outputs = CheckBox(text="add head outputs", value=False)
        self._show_polygons = CheckBox(text="add polygons (StarDist)", value=False, visible=False)
        # shown for models with a denoising head (trained with DenoiSeg, cellseg train --denoise)
        self._show_denoised = CheckBox(text="add denoised image", value=False, visible=False,
                                       tooltip="also add the image as the model's denoising head sees it clean "
                                               "(in the image's intensity units)")
        self._run_button = PushButton(text="Segment")
        self._cancel_button = PushButton(text="Cancel", enabled=False)
        self._progress = ProgressBar(label="progress", min=0, max=_PROGRESS_MAX, value=0)
        self._status = _message_label()
        super().__init__(
            napari_viewer,
            widgets=[self._image, self._axes, self._channel, self._model_choice, self._model_file,
                     self._model_status, self._diameter, self._diameter_px, self._pixel_size, self._scale_info,
                     self._params_header, self._params, self._tile, self._pmin, self._pmax, self._augment, self._link,
                     self._show_outputs, self._show_polygons, self._show_denoised, self._run_button,
                     self._cancel_button,
                     self._progress, self._status],
            labels=True,
        )
        self._image.changed.connect(self._on_image_changed)
        self._axes.changed.connect(self._on_axes_changed)
        self._diameter.changed.connect(self._on_diameter_mode)
        self._model_choice.changed.connect(self._on_model_choice)
        self._model_file.changed.connect(self._on_model_choice)
        self._run_button.changed.connect(self.run)
        self._cancel_button.changed.connect(self.cancel)
        TRAINED_MODELS.changed.connect(self._on_models_changed)
        self._on_image_changed()
        self._on_model_choice()

    # ---------------------------------------------------------------- choices
    def _image_choices(self, widget=None):
        return _layer_names(self.viewer, "image")

    def _image_layer(self):
        name = self._image.value
        if name is None or name not in self.viewer.layers:
            return None
        return self.viewer.layers[name]

    def _reset_axes_choices(self, keep: bool = True):
        """The axes of the chosen layer: its known axes first (metadata, axis labels, 2-D),
        else "choose the axes…" first; ``keep`` the chosen axes (same layer)."""
        _set_choices(self._axes, _axes_combo_choices(self._image_layer()), keep=keep)

    def _channel_choices(self, widget=None):
        layer = self._image_layer()
        axes = self._axes.value
        if layer is None or not axes:
            return []
        n_in = int(self._model.config.get("in_channels", 1)) if self._model is not None else 1
        shape = _layer_data_shape(layer)
        if len(axes) != len(shape):
            return []
        equal = False
        if n_in == 1 and "C" in axes and shape[axes.index("C")] in (3, 4):
            data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
            equal = _logic.channels_equal(data, axes.index("C"))  # in-memory arrays only
        return _logic.channel_choices(shape, axes, rgb=bool(getattr(layer, "rgb", False)),
                                      metadata=dict(layer.metadata), in_channels=n_in, equal=equal)

    def _on_image_changed(self, *_):
        self._ps_default = None  # a new layer: its own pixel size
        self._reset_axes_choices(keep=False)
        self._on_axes_changed()

    def _set_default_pixel_size(self):
        """The pixel size defaults to the layer's scale (napari's default scale 1: not known);
        known once the axes are. A value the user typed is kept."""
        if self._ps_default is not None and float(self._pixel_size.value) != self._ps_default:
            return
        layer = self._image_layer()
        axes = self._axes.value or ""
        ps = _logic.pixel_size_from_scale(_scale_without_c(layer, axes), axes) if layer is not None and axes else None
        self._pixel_size.value = float(ps) if ps else 0.0
        self._ps_default = float(self._pixel_size.value)

    def _on_diameter_mode(self, *_):
        self._diameter_px.enabled = self._diameter.value == "px"

    def diameter(self) -> float | str | None:
        """The ``diameter`` the Segmenter gets: None (the model's default), ``"auto"``,
        ``"off"`` or a number of pixels (raises ValueError for a non-positive number)."""
        return _logic.diameter_value(self._diameter.value, float(self._diameter_px.value))

    def pixel_size(self) -> float | None:
        """The pixel size (µm/px) the Segmenter gets; None when not set or when a diameter
        in pixels is given (an explicit diameter wins)."""
        ps = float(self._pixel_size.value)
        return ps if ps > 0 and self._diameter.value != "px" else None

    def _reset_channel_choices(self):
        """Offer the channels of the chosen layer for the model, the default first ("all
        channels" for a model that takes them, "grey" for grey stored as RGB); the chosen
        channel is kept only when the default did not change (another model or layer)."""
        new = self._channel_choices()
        old = list(self._channel.choices)
        keep = bool(old) and bool(new) and old[0] == new[0][1]
        _set_choices(self._channel, new, keep=keep)

    def reset_choices(self, *_):
        super().reset_choices()
        self._reset_axes_choices(keep=True)  # e.g. axis labels or axes given to the layer meanwhile
        self._reset_channel_choices()

    def _on_axes_changed(self, *_):
        self._reset_channel_choices()
        axes = self._axes.value or ""
        self._channel.visible = "C" in axes
        self._link.visible = "T" in axes
        self._set_default_pixel_size()

    def _on_models_changed(self):
        try:
            self._model_choice.reset_choices()
        except RuntimeError:
            pass

    # ---------------------------------------------------------------- model
    def _current_spec(self) -> str | None:
        choice = self._model_choice.value
        self._model_file.visible = choice == CUSTOM_MODEL
        try:
            return _logic.model_spec(choice, self._model_file.value)
        except (ValueError, FileNotFoundError):
            return None

    def _on_model_choice(self, *_):
        spec = self._current_spec()
        if spec is None:
            self._model_status.value = "choose a model file" if self._model_choice.value == CUSTOM_MODEL else ""
            return
        if spec == self._model_key and self._model is not None:
            return
        self.load_model(spec)

    def load_model(self, spec: str):
        """Load the model ``spec`` (bundled name or file) in a worker; rebuilds the thresholds."""
        self._model_status.value = f"loading {Path(spec).name}…"
        self._load_token += 1
        token = self._load_token
        worker = _thread_worker(_logic.get_model, spec)
        # a later choice (or use_model) supersedes this load
        worker.returned.connect(lambda model, spec=spec: self._on_loaded(token, model, spec))
        worker.errored.connect(self._on_load_error)
        self._load_worker = worker
        worker.finished.connect(lambda: setattr(self, "_load_worker", None))
        worker.start()

    def _on_loaded(self, token: int, model, spec: str):
        if token != self._load_token:
            return
        try:
            self.use_model(model, spec)
        except RuntimeError as exc:  # the widget was closed while the model was loading
            if "has been deleted" not in str(exc):
                raise

    def _on_load_error(self, exc):
        self._model_status.value = f"cannot load the model: {exc}"

    @property
    def model(self):
        """The loaded model (None until loaded)."""
        return self._model

    def use_model(self, model, spec: str | None = None):
        """Use an (already loaded) model: thresholds are rebuilt from its representation's
        ``Params`` with its tuned values, normalization percentiles set from its config."""
        self._load_token += 1
        self._model = model
        self._model_key = spec
        self._run = None  # outputs of another model cannot be re-decoded with this one
        rep = model.representation
        specs = _logic.param_specs(rep, getattr(model, "thresholds", None))
        self._rebuild_params(specs)
        norm = model.config.get("normalization", {}) if hasattr(model, "config") else {}
        self._pmin.value = float(norm.get("pmin", 1.0))
        self._pmax.value = float(norm.get("pmax", 99.8))
        self._augment.value = bool(getattr(model, "augment", False))
        ndim = int(model.config.get("ndim", 2))
        n_in = int(model.config.get("in_channels", 1))
        self._has_polygons = rep.name == "stardist" and ndim == 2
        self._show_polygons.visible = self._has_polygons
        denoises = _logic.model_denoises(model)
        self._show_denoised.visible = denoises
        if not denoises:
            self._show_denoised.value = False
        self._model_status.value = f"{rep.name}, {ndim}D, {n_in} channel{'s' if n_in > 1 else ''}"
        self._reset_channel_choices()
        had_size = self._diameter.enabled
        self._set_diameter_choices(_logic.diameter_choices(model))
        size = _logic.object_size(model)
        has_size = bool(size)
        if has_size and not had_size:
            self._diameter.value = "default"  # back from a model without a size (only 'off' was offered)
        # a model without an object size segments at the image's own scale: nothing to choose; the
        # pixel size counts only for a model that records its own (or its objects' size in µm)
        self._diameter.enabled = has_size
        self._pixel_size.enabled = bool(size.get("pixel_size") or size.get("diameter_um"))
        self._on_diameter_mode()
        self._scale_info.value = _logic.object_size_text(model)

    def _set_diameter_choices(self, choices):
        """Set the diameter combo's choices in their order (magicgui appends new items after
        the kept ones), keeping the chosen value when it is still offered."""
        value = self._diameter.value
        self._diameter.choices = []
        self._diameter.choices = choices
        if value in [v for _, v in choices]:
            self._diameter.value = value

    def _rebuild_params(self, specs):
        self._params.clear()
        self._param_kinds = {}
        # knobs this model's configuration does not use: no control, value kept as tuned
        self._hidden_params = {s.name: s.value for s in specs if not s.shown}
        for s in specs:
            if not s.shown:
                continue
            if s.kind == "bool":
                w = CheckBox(name=s.name, label=s.name, value=bool(s.value))
            elif s.kind == "int":  # the range is the knob's declared bounds
                w = SpinBox(name=s.name, label=s.name, value=int(s.value),
                            min=-(10 ** 9) if s.low is None else math.ceil(s.low),
                            max=10 ** 9 if s.high is None else math.floor(s.high))
            elif s.kind == "float":
                w = FloatSpinBox(name=s.name, label=s.name, min=-1e9 if s.low is None else float(s.low),
                                 max=1e9 if s.high is None else float(s.high), step=0.01)
                _show_decimals(w, float(s.value))
                w.value = float(s.value)
            else:
                w = LineEdit(name=s.name, label=s.name, value=_logic.param_text(s.value))
            if s.doc:
                w.tooltip = s.doc
            self._param_kinds[s.name] = s.kind
            w.changed.connect(self._on_param_changed)
            self._params.append(w)

    def params(self) -> dict[str, Any]:
        """The decode parameters as set in the controls."""
        shown = {w.name: _logic.coerce_param(self._param_kinds[w.name], w.value) for w in self._params}
        return {**self._hidden_params, **shown}

    def set_params(self, **values):
        """Set threshold controls by name (unknown names raise); triggers re-decoding."""
        for k, v in values.items():
            if k not in self._param_kinds:
                hint = (" (not used by this model's configuration)"
                        if k in self._hidden_params else "")
                raise KeyError(f"unknown decode parameter {k!r}{hint}; the model has {sorted(self._param_kinds)}")
            w = self._params[k]
            if self._param_kinds[k] == "float":
                _show_decimals(w, float(v))
            w.value = _logic.param_text(v) if self._param_kinds[k] == "text" else v

    # ---------------------------------------------------------------- running
    @property
    def busy(self) -> bool:
        return self._worker is not None or self._redecode_worker is not None or self._load_worker is not None

    def run(self, *_):
        """Segment the chosen image layer in a worker (the button)."""
        if self._worker is not None:
            return
        layer = self._image_layer()
        if layer is None:
            self._status.value = "choose an image layer"
            return
        spec = self._current_spec()
        if self._model is None and spec is None:
            self._status.value = "choose a model"
            return
        # the model in use is the last one loaded or given to use_model(); only while the load of a
        # newly chosen model is still running does the choice itself (loaded by the task) win
        model = self._model if (self._model is not None and self._load_worker is None) else spec
        if model is None:
            self._status.value = "choose a model"
            return
        axes = self._axes.value
        if not axes:
            self._status.value = (_logic.axes_hint(layer.name, _layer_data_shape(layer), self._axes.choices)
                                  if self._axes.choices else "cannot segment this layer: unsupported dimensions")
            return
        if int(getattr(model, "config", {}).get("ndim", 2)) == 3 and "Z" not in axes:
            self._status.value = (f"this model segments 3D volumes (ZYX): '{layer.name}' has no Z axis "
                                  f"(axes {axes}); choose ZYX if it is a volume, or a 2D model")
            return
        channel = self._channel.value if "C" in axes else None
        try:
            diameter = self.diameter()
        except ValueError as exc:
            self._status.value = f"error: {exc}"
            return
        data = _layer_data(layer)
        params = self.params() if self._model is not None and model is self._model else None
        tile = int(self._tile.value) or None
        link = bool(self._link.value) and "T" in axes
        worker = _thread_worker(
            _logic.segmentation_task, model, data, axes, channel=channel,
            params=params, tile=tile, normalize=(float(self._pmin.value), float(self._pmax.value)), link=link,
            augment=bool(self._augment.value), diameter=diameter, pixel_size=self.pixel_size(),
            denoise=bool(self._show_denoised.value),
        )
        _remember_axes(layer, axes)  # answered once: Segment and Train know the layer's axes from now on
        self._run_info = {"image": layer.name, "axes": axes, "scale": _scale_without_c(layer, axes),
                          "axis_labels": None, "translate": None, "t0": time.perf_counter(), "spec": spec}
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(self._on_segmented)
        worker.errored.connect(self._on_error)
        worker.aborted.connect(self._on_aborted)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self._run_button.enabled = False
        self._cancel_button.enabled = True
        self._progress.value = 0
        self._status.value = "segmenting…"
        worker.start()

    def cancel(self, *_):
        """Stop the running segmentation at its next progress step."""
        if self._worker is not None:
            self._worker.quit()
            self._status.value = "cancelling…"

    def _on_progress(self, p):
        if p.stage != "scale":  # the size estimate is a first pass over the first frame: no progress
            self._progress.value = int(round(p.fraction * _PROGRESS_MAX))
        if p.stage == "load":
            self._status.value = p.message
        else:
            frame = f" frame {p.frame + 1}/{p.n_frames}" if p.n_frames > 1 else ""
            self._status.value = f"{p.stage}{frame} {p.done}/{p.total}" + (f" – {p.message}" if p.message else "")

    def _on_segmented(self, run):
        info = self._run_info
        self.n_predict_runs += 1
        if run.segmenter.model is not self._model:
            # the worker loaded the model: adopt it (thresholds, normalization)
            self.use_model(run.segmenter.model, info.get("spec"))
        self._run = run
        info["labels"] = f"{info['image']} labels"
        self._show_result(run.result, outputs=bool(self._show_outputs.value))
        den = _logic.denoised_layer(run, info["image"], scale=info.get("scale"))
        if den is not None:
            _set_or_add(self.viewer, *den)
        dt = time.perf_counter() - info["t0"]
        d = getattr(run.result, "diameter", None)
        size = f"; diameter {d:.1f} px" if d is not None else ""
        self._status.value = f"{run.result.n_objects} objects ({dt:.1f} s{size})"
        layer = self.viewer.layers[info["image"]] if info["image"] in self.viewer.layers else None
        if layer is not None:  # a 3D model on a volume of another voxel shape
            note = _logic.z_step_note(run.segmenter.model, info["axes"], _logic.z_step_from_layer(
                info.get("scale"), info["axes"], dict(layer.metadata)))
            if note:
                self._status.value += f"; note: {note}"
        self._progress.value = _PROGRESS_MAX
        if d is not None and self._diameter.value != "px":
            # show the diameter used (estimated with auto); 'number of pixels' keeps it
            _show_decimals(self._diameter_px, round(float(d), 2))
            self._diameter_px.value = round(float(d), 2)
        self._scale_info.value = "last run: " + _logic.scale_summary(run.result, run.segmenter.model)

    def _show_result(self, result, outputs: bool = False):
        info = self._run_info
        scale = info.get("scale")
        kw = {"name": info["labels"],
              "metadata": {"axes": result.axes, "source": info["image"], "model": str(info.get("spec"))}}
        if scale is not None:
            kw["scale"] = scale
        if info.get("axis_labels") is None:
            layer = self.viewer.layers[info["image"]] if info["image"] in self.viewer.layers else None
            info["axis_labels"] = _result_axis_labels(layer, info["axes"], result.axes)
        kw["axis_labels"] = info["axis_labels"]  # the sliders say T or Z
        _set_or_add(self.viewer, result.labels, kw, "labels")
        run = self._run
        if outputs and run is not None:
            for data, okw, kind in _logic.output_layers(run, info["image"], scale=scale):
                _set_or_add(self.viewer, data, okw, kind)
        poly_name = f"{info['image']} polygons"
        if self._has_polygons and self._show_polygons.value and run is not None:
            pl = _logic.polygon_layer(run, info["image"], scale=scale)
            if pl is not None:
                _set_or_add(self.viewer, *pl)
            elif poly_name in self.viewer.layers:
                self.viewer.layers.remove(poly_name)

    def _on_error(self, exc):
        self._status.value = f"error: {exc}"

    def _on_aborted(self):
        self._status.value = "cancelled"
        self._progress.value = 0

    def _on_finished(self):
        self._worker = None
        self._run_button.enabled = True
        self._cancel_button.enabled = False

    # ---------------------------------------------------------------- re-decoding
    def _on_param_changed(self, *_):
        if self._run is None or self._worker is not None:
            return
        self.redecode()

    def redecode(self):
        """Decode the cached head outputs of the last run with the current thresholds
        (in a worker; no network call). Requests made while one runs are coalesced."""
        if self._run is None:
            return
        if self._redecode_worker is not None:
            self._redecode_pending = True
            return
        try:
            params = self.params()
        except (ValueError, TypeError, SyntaxError) as exc:
            self._status.value = f"invalid threshold: {exc}"
            return
        run = self._run
        worker = _thread_worker(_logic.redecode, run, params)
        worker.returned.connect(lambda res, run=run: self._on_redecoded(run, res))
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_redecode_finished)
        self._redecode_worker = worker
        self._status.value = "re-decoding…"
        worker.start()

    def _on_redecoded(self, run, result):
        if run is not self._run:
            return
        run.result = result
        self.n_redecodes += 1
        self._show_result(result, outputs=False)
        self._status.value = f"{result.n_objects} objects (re-decoded)"

    def _on_redecode_finished(self):
        self._redecode_worker = None
        if self._redecode_pending:
            self._redecode_pending = False
            self.redecode()


def _layer_data_shape(layer) -> tuple:
    data = layer.data
    if getattr(layer, "multiscale", False):
        data = data[0]
    return tuple(data.shape)


# =========================================================================== Evaluate


class EvaluateWidget(_ViewerWidget):
    """Compare a prediction Labels layer with a ground-truth Labels layer.

    The table lists AP at the chosen IoU thresholds (TP / (TP + FP + FN) after
    optimal one-to-one matching), precision, recall, F1 and PQ at IoU 0.5, the
    TP/FP/FN counts and CTC SEG. A Labels layer ``<prediction> errors`` marks
    the categories of :data:`cellseg_napari._logic.ERROR_CATEGORIES`: correct
    (green), false positive (red), false negative (blue, on GT pixels), merge
    (magenta) and split (orange).

    Not scrollable: the table keeps the height of all its rows, and the (scrollable)
    Segment and Train docks make room for it.
    """

    _scrollable = False

    def __init__(self, napari_viewer: "napari.viewer.Viewer"):
        self._set_viewer(napari_viewer)
        self._pred = ComboBox(label="prediction", choices=lambda w: _layer_names(self.viewer, "labels"))
        self._truth = ComboBox(label="ground truth", choices=lambda w: _layer_names(self.viewer, "labels"))
        self._thresholds = LineEdit(label="IoU thresholds", value="0.5, 0.6, 0.7, 0.8, 0.9")
        self._error_iou = FloatSpinBox(label="error map IoU", value=0.5, min=0.05, max=1.0, step=0.05)
        self._button = PushButton(text="Evaluate")
        self.table = Table(value={"data": [], "index": [], "columns": ["value"]}, label="")
        self._summary = _message_label()
        super().__init__(napari_viewer,
                         widgets=[self._pred, self._truth, self._thresholds, self._error_iou, self._button,
                                  self.table, self._summary],
                         labels=True)
        self._button.changed.connect(self.evaluate)
        self._fit_table(len(self._thresholds_list()) + 8)
        self.reset_choices()
        truth = [n for n in _layer_names(self.viewer, "labels") if "truth" in n.lower() or "gt" in n.lower()]
        if truth:
            self._truth.value = truth[0]
            others = [n for n in _layer_names(self.viewer, "labels") if n != truth[0]]
            if others:
                self._pred.value = others[0]
        self.rows: list[tuple[str, float]] = []
        self.counts: dict[str, int] = {}

    def _fit_table(self, n_rows: int) -> None:
        """Compact rows, and a minimum height that shows ``n_rows`` of them: docked under
        Segment the table got squeezed to one and a half rows."""
        t = self.table.native
        vh = t.verticalHeader()
        vh.setDefaultSectionSize(t.fontMetrics().height() + 6)
        for i in range(t.rowCount()):
            t.setRowHeight(i, vh.defaultSectionSize())
        header = t.horizontalHeader().sizeHint().height()
        t.setMinimumHeight(header + n_rows * vh.defaultSectionSize() + 2 * t.frameWidth() + 2)

    def _thresholds_list(self) -> list[float]:
        vals = [float(v) for v in self._thresholds.value.replace(";", ",").split(",") if v.strip()]
        if not vals or any(not 0 < v <= 1 for v in vals):
            raise ValueError("IoU thresholds must be numbers in (0, 1], separated by commas")
        return vals

    def evaluate(self, *_):
        """Fill the table and add/update the error-map layer."""
        from napari.utils.colormaps import DirectLabelColormap

        if self._pred.value is None or self._truth.value is None:
            self._summary.value = "choose a prediction and a ground-truth labels layer"
            return
        pred_layer = self.viewer.layers[self._pred.value]
        truth_layer = self.viewer.layers[self._truth.value]
        y_pred, y_true = _layer_data(pred_layer), _layer_data(truth_layer)
        axes = truth_layer.metadata.get("axes") or pred_layer.metadata.get("axes")
        try:
            thresholds = self._thresholds_list()
            rows = _logic.evaluation_rows(y_true, y_pred, thresholds, axes=axes)
            cat, counts = _logic.error_categories(y_true, y_pred, float(self._error_iou.value), axes=axes)
        except ValueError as exc:
            self._summary.value = f"error: {exc}"
            return
        self.rows, self.counts = rows, counts
        self.table.value = {"data": [[_fmt(v)] for _, v in rows], "index": [k for k, _ in rows],
                            "columns": ["value"]}
        self._fit_table(len(rows))
        cmap = DirectLabelColormap(color_dict={None: (0, 0, 0, 0), **_logic.ERROR_COLORS})
        kw = {"name": f"{pred_layer.name} errors", "colormap": cmap, "opacity": 0.8,
              "scale": tuple(pred_layer.scale), "metadata": {"categories": dict(_logic.ERROR_CATEGORIES)}}
        lyr = _set_or_add(self.viewer, cat, kw, "labels")
        lyr.colormap = cmap
        colours = {"correct": "green", "false positive": "red", "false negative": "blue", "merge": "magenta",
                   "split": "orange"}
        self._summary.value = "; ".join(f"{k} ({colours[k]}): {v}" for k, v in counts.items())


def _fmt(v: float) -> str:
    return f"{int(v)}" if float(v).is_integer() and abs(v) > 1 else f"{v:.3f}"


# =========================================================================== Train


#: the Train widget's choices for a layer with a Z axis
_TRAIN_DIMS = {2: "2D model: each plane", 3: "3D model: the volume"}


class TrainWidget(_ViewerWidget):
    """Train a model, fresh or fine-tuned from a bundled/trained one, on an image layer
    with its Labels layer (T frames and, for a 2D model, Z planes with labels become
    samples; "Z planes: 3D model" trains a 3D model on the volumes, with the Z step of the
    layer's scale) or on a folder (``images/`` + ``masks/``, or the Cell Tracking Challenge
    layout; ZYX volumes with 3D masks train a 3D model). Training runs
    in a worker with loss/validation progress; the model is saved to the chosen
    ``.pt`` file and registered, so the Segment widget lists it at once.

    The layer's axes are asked as in Segment (a stack napari does not label starts at
    "choose the axes…"); with a channel axis the channel choice says what the model
    gets: colour (RGB, alpha dropped) for an RGB(A) layer, all channels, or one channel.
    A model fine-tuned from a 3-channel model gets grey repeated to 3 channels."""

    def __init__(self, napari_viewer: "napari.viewer.Viewer"):
        self._set_viewer(napari_viewer)
        from cellseg import representations

        reps = representations.available()
        self._source = ComboBox(label="training data", choices=["layers", "folder"], value="layers")
        self._image = ComboBox(label="image", choices=lambda w: _layer_names(self.viewer, "image"))
        self._labels_layer = ComboBox(label="labels", choices=lambda w: _layer_names(self.viewer, "labels"))
        # both set in order by _set_choices (_on_image_changed, _reset_channel_choices)
        self._axes = ComboBox(label="axes", choices=[],
                              tooltip="axes of the image data: T time (frames become training samples), Z depth "
                                      "(planes for a 2D model, or the volume for a 3D model: see 'Z planes'), "
                                      "C channel, Y, X")
        self._channel = ComboBox(label="channel", choices=[], visible=False,
                                 tooltip="what the model gets from a layer with channels")
        # a layer with Z: planes for a 2D model, or volumes for a 3D model (with its Z step)
        self._dims = ComboBox(label="Z planes", choices=[(t, v) for v, t in _TRAIN_DIMS.items()], value=2,
                              visible=False,
                              tooltip="a layer with a Z axis trains a 2D model on its planes (a 2D model segments "
                                      "Z stacks plane by plane, stitching the planes) or a 3D model on the volume")
        self._z_step = FloatSpinBox(label="Z step (px)", value=1.0, min=0.01, max=1000.0, step=0.1, visible=False,
                                    tooltip="the Z step over the Y/X pixel size (anisotropy); from the file's "
                                            "voxel size or the layer's scale when they say")
        self._folder = FileEdit(label="folder", mode="d", visible=False)
        self._denoise = CheckBox(text="denoise (DenoiSeg)", value=False,
                                 tooltip="also train a denoising head (Noise2Void on every image; the "
                                         "segmentation learns from the annotated ones only)")
        self._unlabeled = FileEdit(label="unlabelled images", mode="d", visible=False,
                                   tooltip="optional folder of images without masks for the denoising head")
        self._start = ComboBox(label="start from",
                               choices=lambda w: [FRESH_MODEL] + [c for c in _logic.model_choices()
                                                                  if c != CUSTOM_MODEL])
        self._rep = ComboBox(label="representation", choices=reps,
                             value=_logic.DEFAULT_REPRESENTATION if _logic.DEFAULT_REPRESENTATION in reps else reps[0])
        self._network = ComboBox(label="network", choices=list(_logic.NETWORKS),
                                 value=next(iter(_logic.NETWORKS)))
        self._epochs = SpinBox(label="epochs", value=10, min=1, max=10000)
        self._steps = SpinBox(label="steps / epoch", value=20, min=1, max=100000)
        self._batch = SpinBox(label="batch size", value=4, min=1, max=256)
        self._patch = SpinBox(label="patch size", value=128, min=16, max=2048, step=16)
        self._out = FileEdit(label="save to", mode="w", filter="*.pt",
                             value=str(Path.home() / "cellseg_model.pt"))
        self._button = PushButton(text="Train")
        self._cancel_button = PushButton(text="Cancel", enabled=False)
        self._progress = ProgressBar(label="progress", min=0, max=_PROGRESS_MAX, value=0)
        self._status = _message_label()
        self._history = _message_label()
        super().__init__(napari_viewer,
                         widgets=[self._source, self._image, self._labels_layer, self._axes, self._channel,
                                  self._dims, self._z_step, self._folder, self._denoise, self._unlabeled,
                                  self._start, self._rep, self._network, self._epochs, self._steps, self._batch,
                                  self._patch, self._out,
                                  self._button, self._cancel_button, self._progress, self._status,
                                  self._history],
                         labels=True)
        self._source.changed.connect(self._on_source)
        self._denoise.changed.connect(self._on_denoise)
        self._image.changed.connect(self._on_image_changed)
        self._axes.changed.connect(self._on_axes_changed)
        self._dims.changed.connect(self._show_dims)
        self._start.changed.connect(self._on_start)
        self._button.changed.connect(self.train)
        self._cancel_button.changed.connect(self.cancel)
        self._worker = None
        self._job: _logic.TrainingJob | None = None
        self.saved_as: str | None = None
        self.registered_name: str | None = None
        self.events: list[dict] = []
        TRAINED_MODELS.changed.connect(self._on_models_changed)
        self._on_image_changed()

    def _on_models_changed(self):
        try:
            self._start.reset_choices()
        except RuntimeError:
            pass

    def _image_layer(self):
        name = self._image.value
        return self.viewer.layers[name] if name is not None and name in self.viewer.layers else None

    def _on_image_changed(self, *_):
        _set_choices(self._axes, _axes_combo_choices(self._image_layer()), keep=False)
        self._on_axes_changed()

    def _on_axes_changed(self, *_):
        self._reset_channel_choices()
        self._channel.visible = self._source.value == "layers" and "C" in (self._axes.value or "")
        layer, axes = self._image_layer(), self._axes.value or ""
        if layer is not None and "Z" in axes:  # the Z step the layer's file or scale says
            step = _logic.z_step_from_layer(_scale_without_c(layer, axes), axes, dict(layer.metadata))
            if step:
                self._z_step.value = round(step, 4)
        self._show_dims()

    def _dims_asked(self) -> bool:
        """Whether the Z planes choice applies: layers with a Z axis, a fresh model (a
        fine-tuned one keeps its dimensionality)."""
        return (self._source.value == "layers" and "Z" in (self._axes.value or "")
                and self._start.value == FRESH_MODEL)

    def _show_dims(self, *_):
        """The Z planes choice where it applies, and the Z step for a 3D model."""
        z = self._dims_asked()
        self._dims.visible = z
        self._z_step.visible = z and self._dims.value == 3

    def _reset_channel_choices(self):
        layer = self._image_layer()
        axes = self._axes.value or ""
        new = []
        if layer is not None and "C" in axes:
            shape = _layer_data_shape(layer)
            if len(shape) == len(axes):
                data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
                equal = shape[axes.index("C")] in (3, 4) and _logic.channels_equal(data, axes.index("C"))
                new = _logic.training_channel_choices(shape, axes, rgb=bool(getattr(layer, "rgb", False)),
                                                      metadata=dict(layer.metadata), equal=equal)
        old = list(self._channel.choices)
        _set_choices(self._channel, new, keep=bool(old) and bool(new) and old[0] == new[0][1])

    def reset_choices(self, *_):
        super().reset_choices()
        _set_choices(self._axes, _axes_combo_choices(self._image_layer()), keep=True)
        self._reset_channel_choices()

    def _on_source(self, *_):
        layers = self._source.value == "layers"
        self._image.visible = self._labels_layer.visible = self._axes.visible = layers
        self._channel.visible = layers and "C" in (self._axes.value or "")
        self._folder.visible = not layers
        self._show_dims()

    def _on_denoise(self, *_):
        self._unlabeled.visible = bool(self._denoise.value)

    def _on_start(self, *_):
        fresh = self._start.value == FRESH_MODEL
        # fine-tuning keeps the starting model's representation and network
        self._rep.enabled = self._network.enabled = fresh
        self._show_dims()

    @property
    def busy(self) -> bool:
        return self._worker is not None

    def make_job(self) -> _logic.TrainingJob:
        """The :class:`TrainingJob` for the current settings (raises ValueError on bad input)."""
        kw = {}
        if self._source.value == "layers":
            if self._image.value is None or self._labels_layer.value is None:
                raise ValueError("choose an image layer and a labels layer")
            img_layer = self.viewer.layers[self._image.value]
            lab_layer = self.viewer.layers[self._labels_layer.value]
            axes = self._axes.value
            if not axes:
                raise ValueError(_logic.axes_hint(img_layer.name, _layer_data_shape(img_layer), self._axes.choices)
                                 if self._axes.choices else "cannot train on this layer: unsupported dimensions")
            channel = self._channel.value if "C" in axes else None
            volume = self._dims_asked() and self._dims.value == 3
            pairs, names, n_in = _logic.training_pairs_from_layers(_layer_data(img_layer), _layer_data(lab_layer),
                                                                   axes, channel=channel, volume=volume)
            _remember_axes(img_layer, axes)
            data = pairs
            kw.update(names=names, in_channels=n_in)
            if volume:
                kw.update(ndim=3, anisotropy=float(self._z_step.value))
        else:
            folder = Path(self._folder.value)
            if not folder.is_dir():
                raise ValueError(f"{folder} is not a folder")
            data = folder
        start = self._start.value
        start_spec = None if start == FRESH_MODEL else _logic.model_spec(start)
        out = Path(self._out.value)
        if out.suffix != ".pt":
            out = out.with_suffix(".pt")
        # an empty field means no unlabelled folder (FileEdit's value would be the current folder)
        unlabeled = str(self._unlabeled.line_edit.value).strip() if self._denoise.value else ""
        return _logic.TrainingJob(
            data, out, representation=self._rep.value, start=start_spec, epochs=int(self._epochs.value),
            steps_per_epoch=int(self._steps.value), patch_size=int(self._patch.value),
            batch_size=int(self._batch.value), network=_logic.NETWORKS[self._network.value],
            denoise=bool(self._denoise.value), unlabeled=unlabeled or None, **kw)

    def train(self, *_):
        """Start training in a worker (the button)."""
        if self._worker is not None:
            return
        try:
            job = self.make_job()
        except (ValueError, FileNotFoundError, KeyError) as exc:
            self._status.value = f"error: {exc}"
            return
        worker = _thread_worker(job.run)
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(self._on_trained)
        worker.errored.connect(self._on_error)
        worker.aborted.connect(self._on_aborted)
        worker.finished.connect(self._on_finished)
        self._job, self._worker = job, worker
        self.events = []
        self._button.enabled = False
        self._cancel_button.enabled = True
        self._progress.value = 0
        self._status.value = "preparing…"
        worker.start()

    def cancel(self, *_):
        """Stop training after the current step; nothing is saved."""
        if self._job is not None:
            self._job.stop()
            self._status.value = "stopping…"

    def _on_progress(self, ev: dict):
        self.events.append(ev)
        if ev.get("fraction") is not None:
            self._progress.value = int(round(float(ev["fraction"]) * _PROGRESS_MAX))
        if ev.get("event") == "epoch":
            self._history.value = ev.get("summary", ev.get("message", ""))
        self._status.value = ev.get("message", "")

    def _on_trained(self, path):
        if path is None:
            self._status.value = "stopped; no model saved"
            return
        self.saved_as = str(path)
        self.registered_name = TRAINED_MODELS.add(path)
        self._progress.value = _PROGRESS_MAX
        self._status.value = f"saved {Path(path).name}: '{self.registered_name}' is now in the Segment widget"

    def _on_error(self, exc):
        self._status.value = f"error: {exc}"

    def _on_aborted(self):
        self._status.value = "stopped; no model saved"

    def _on_finished(self):
        self._worker = None
        self._job = None
        self._button.enabled = True
        self._cancel_button.enabled = False
