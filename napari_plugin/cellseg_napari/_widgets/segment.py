"""The Segment dock widget: segments an image layer with a cellseg model in a thread worker,
adds the labels (and optionally head outputs, polygons, the denoised image), and re-decodes
the cached head outputs when only decode thresholds change."""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
)

from .._axes import (
    axes_hint,
    channel_choices,
    channel_names,
    channels_equal,
    composite_nuclear_channel,
    default_axis_labels,
    pseudo_colour,
)
from .._layers import denoised_layer, output_layers, polygon_layer
from .._models import (
    CUSTOM_MODEL,
    TrainedModels,
    default_model_choice,
    get_model,
    model_choices,
    model_denoises,
    model_spec,
)
from .._params import coerce_param, float_decimals, param_specs, param_text
from .._run import SegmentRun, redecode, segmentation_task
from .._scale import (
    diameter_choices,
    diameter_value,
    object_size,
    object_size_text,
    pixel_size_from_scale,
    scale_summary,
    z_step_from_layer,
    z_step_note,
)
from .common import (
    PROGRESS_MAX,
    ViewerWidget,
    layer_axes_combo_choices,
    layer_data,
    layer_data_shape,
    layer_names,
    message_label,
    remember_axes,
    scale_without_c,
    set_choices,
    set_or_add,
    thread_worker,
    trained_models_of,
)

if TYPE_CHECKING:  # pragma: no cover
    import napari

__all__ = ["SegmentWidget"]


def _result_axis_labels(layer, axes: str, result_axes: str) -> tuple:
    """Axis labels for a result with ``result_axes`` made from ``layer`` with ``axes``: the
    layer's labels of those axes (one naming for the image and its labels), else letters."""
    own = tuple(getattr(layer, "axis_labels", ()) or ()) if layer is not None else ()
    dims = axes[:-1] if layer is not None and getattr(layer, "rgb", False) else axes
    names = dict(zip(dims, own)) if len(own) == len(dims) and not default_axis_labels(own) else {}
    return tuple(str(names.get(a, a.lower())) for a in result_axes)


def _show_decimals(w, value: float) -> None:
    """Let a float spin box hold ``value`` as given (tuned thresholds have up to 6
    decimals; Qt's spin box rounds to 2 by default, which would change the decoding)."""
    native = getattr(w, "native", None)
    if native is None or not hasattr(native, "setDecimals"):
        return
    need = float_decimals(value)
    if need > native.decimals():
        native.setDecimals(need)


class SegmentWidget(ViewerWidget):
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

    def __init__(self, napari_viewer: "napari.viewer.Viewer", trained_models: TrainedModels | None = None):
        self._set_viewer(napari_viewer)
        #: the models trained in this viewer (listed after the bundled ones)
        self.trained_models = trained_models if trained_models is not None else trained_models_of(napari_viewer)
        self._model = None          # the loaded model (CellsegModel)
        self._model_key = None      # the spec it was loaded from (name or path)
        self._run: SegmentRun | None = None
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
        self._model_choice = ComboBox(label="model", choices=lambda w: model_choices(self.trained_models),
                                      value=default_model_choice(self.trained_models))
        self._model_file = FileEdit(label="model file", mode="r", filter="*.pt", visible=False)
        self._model_status = message_label()
        self._diameter = ComboBox(label="object diameter", choices=diameter_choices(None),
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
        self._scale_info = message_label()
        self._params_header = Label(label="", value="decode thresholds (changes re-decode at once):")
        self._params = Container(label="", labels=True)
        from cellseg.segmenter import MAX_PIXELS

        self._tile = SpinBox(label="tile size", value=0, min=0, max=8192, step=64,
                             tooltip=f"tile size in pixels (0: automatic: an image of up to {MAX_PIXELS / 1e6:g} Mpx "
                                     "after resampling goes through the network at once, a larger one in tiles of at "
                                     "most that, context included; the labels are the same)")
        self._pmin = FloatSpinBox(label="norm. pmin %", value=1.0, min=0.0, max=100.0, step=0.1)
        self._pmax = FloatSpinBox(label="norm. pmax %", value=99.8, min=0.0, max=100.0, step=0.1)
        self._flat_field = ComboBox(label="uneven illumination", choices=["auto", "on", "off"], value="auto",
                                    tooltip="divide each frame by its illumination (a smooth surface through "
                                            "its background) before segmenting: auto corrects images with a bright "
                                            "background (brightfield, H&E) and not fluorescence")
        self._noise_filter = ComboBox(label="noise filter", choices=["auto", "on", "off"], value="auto",
                                      tooltip="filter pixel-wise noise (non-local means) before segmenting: auto "
                                              "filters noisy fluorescence (noise above 3% of the intensity "
                                              "range); on: also transmitted light")
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
        self._progress = ProgressBar(label="progress", min=0, max=PROGRESS_MAX, value=0)
        self._status = message_label()
        super().__init__(
            napari_viewer,
            widgets=[self._image, self._axes, self._channel, self._model_choice, self._model_file,
                     self._model_status, self._diameter, self._diameter_px, self._pixel_size, self._scale_info,
                     self._params_header, self._params, self._tile, self._pmin, self._pmax, self._flat_field,
                     self._noise_filter, self._augment, self._link,
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
        self.trained_models.changed.connect(self._on_models_changed)
        self._on_image_changed()
        self._on_model_choice()

    # ---------------------------------------------------------------- choices
    def _image_choices(self, widget=None):
        return layer_names(self.viewer, "image")

    def _image_layer(self):
        name = self._image.value
        if name is None or name not in self.viewer.layers:
            return None
        return self.viewer.layers[name]

    def _reset_axes_choices(self, keep: bool = True):
        """The axes of the chosen layer: its known axes first (metadata, axis labels, 2-D),
        else "choose the axes…" first; ``keep`` the chosen axes (same layer)."""
        set_choices(self._axes, layer_axes_combo_choices(self._image_layer()), keep=keep)

    def _channel_choices(self, widget=None):
        layer = self._image_layer()
        axes = self._axes.value
        if layer is None or not axes:
            return []
        n_in = int(self._model.config.get("in_channels", 1)) if self._model is not None else 1
        shape = layer_data_shape(layer)
        if len(axes) != len(shape):
            return []
        equal, pseudo, composite = False, None, None
        nuclei = self._model is not None and self._model.config.get("objects") == "nuclei"
        if (n_in == 1 or nuclei) and "C" in axes and shape[axes.index("C")] in (3, 4):
            data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
            equal = channels_equal(data, axes.index("C"))  # in-memory arrays only
            pseudo = None if equal or n_in != 1 else pseudo_colour(data, axes.index("C"))
            if nuclei and not equal and pseudo is None:
                from cellseg.segmenter import nuclear_channel

                names = channel_names(shape, axes, bool(getattr(layer, "rgb", False)), dict(layer.metadata))
                if nuclear_channel(names, len(names)) is None:  # a channel named DAPI is taken by its name
                    composite = composite_nuclear_channel(data, axes.index("C"))
        return channel_choices(shape, axes, rgb=bool(getattr(layer, "rgb", False)), metadata=dict(layer.metadata),
                               in_channels=n_in, equal=equal, pseudo=pseudo, composite=composite)

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
        ps = pixel_size_from_scale(scale_without_c(layer, axes), axes) if layer is not None and axes else None
        self._pixel_size.value = float(ps) if ps else 0.0
        self._ps_default = float(self._pixel_size.value)

    def _on_diameter_mode(self, *_):
        self._diameter_px.enabled = self._diameter.value == "px"

    def diameter(self) -> float | str | None:
        """The ``diameter`` the Segmenter gets: None (the model's default), ``"auto"``,
        ``"off"`` or a number of pixels (raises ValueError for a non-positive number)."""
        return diameter_value(self._diameter.value, float(self._diameter_px.value))

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
        set_choices(self._channel, new, keep=keep)

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
            return model_spec(choice, self._model_file.value, trained=self.trained_models)
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
        worker = thread_worker(get_model, spec)
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
        specs = param_specs(rep, getattr(model, "thresholds", None))
        self._rebuild_params(specs)
        norm = model.config.get("normalization", {}) if hasattr(model, "config") else {}
        self._pmin.value = float(norm.get("pmin", 1.0))
        self._pmax.value = float(norm.get("pmax", 99.8))
        self._augment.value = bool(getattr(model, "augment", False))
        ndim = int(model.config.get("ndim", 2))
        n_in = int(model.config.get("in_channels", 1))
        self._has_polygons = rep.name == "stardist" and ndim == 2
        self._show_polygons.visible = self._has_polygons
        denoises = model_denoises(model)
        self._show_denoised.visible = denoises
        if not denoises:
            self._show_denoised.value = False
        self._model_status.value = f"{rep.name}, {ndim}D, {n_in} channel{'s' if n_in > 1 else ''}"
        self._reset_channel_choices()
        had_size = self._diameter.enabled
        self._set_diameter_choices(diameter_choices(model))
        size = object_size(model)
        has_size = bool(size)
        if has_size and not had_size:
            self._diameter.value = "default"  # back from a model without a size (only 'off' was offered)
        # a model without an object size segments at the image's own scale: nothing to choose; the
        # pixel size counts only for a model that records its own (or its objects' size in µm)
        self._diameter.enabled = has_size
        self._pixel_size.enabled = bool(size.get("pixel_size") or size.get("diameter_um"))
        self._on_diameter_mode()
        self._scale_info.value = object_size_text(model)

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
                w = LineEdit(name=s.name, label=s.name, value=param_text(s.value))
            if s.doc:
                w.tooltip = s.doc
            self._param_kinds[s.name] = s.kind
            w.changed.connect(self._on_param_changed)
            self._params.append(w)

    def params(self) -> dict[str, Any]:
        """The decode parameters as set in the controls."""
        shown = {w.name: coerce_param(self._param_kinds[w.name], w.value) for w in self._params}
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
            w.value = param_text(v) if self._param_kinds[k] == "text" else v

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
            self._status.value = (axes_hint(layer.name, layer_data_shape(layer), self._axes.choices)
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
        data = layer_data(layer)
        params = self.params() if self._model is not None and model is self._model else None
        tile = int(self._tile.value) or None
        link = bool(self._link.value) and "T" in axes
        worker = thread_worker(
            segmentation_task, model, data, axes, channel=channel,
            params=params, tile=tile, normalize=(float(self._pmin.value), float(self._pmax.value)), link=link,
            augment=bool(self._augment.value), diameter=diameter, pixel_size=self.pixel_size(),
            denoise=bool(self._show_denoised.value), flat_field=str(self._flat_field.value),
            noise_filter=str(self._noise_filter.value),
        )
        remember_axes(layer, axes)  # answered once: Segment and Train know the layer's axes from now on
        self._run_info = {"image": layer.name, "axes": axes, "scale": scale_without_c(layer, axes),
                          "axis_labels": None, "translate": None, "t0": time.perf_counter(), "spec": spec}
        self._start_worker(worker, self._on_segmented, self._run_button, "segmenting…")

    def cancel(self, *_):
        """Stop the running segmentation at its next progress step."""
        if self._worker is not None:
            self._worker.quit()
            self._status.value = "cancelling…"

    def _on_progress(self, p):
        if p.stage != "scale":  # the size estimate runs a few passes over the first frame: no progress
            self._progress.value = int(round(p.fraction * PROGRESS_MAX))
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
        den = denoised_layer(run, info["image"], scale=info.get("scale"))
        if den is not None:
            set_or_add(self.viewer, *den)
        dt = time.perf_counter() - info["t0"]
        d = getattr(run.result, "diameter", None)
        size = f"; diameter {d:.1f} px" if d is not None else ""
        self._status.value = f"{run.result.n_objects} objects ({dt:.1f} s{size})"
        layer = self.viewer.layers[info["image"]] if info["image"] in self.viewer.layers else None
        if layer is not None:  # a 3D model on a volume of another voxel shape
            note = z_step_note(run.segmenter.model, info["axes"], z_step_from_layer(
                info.get("scale"), info["axes"], dict(layer.metadata)))
            if note:
                self._status.value += f"; note: {note}"
        self._progress.value = PROGRESS_MAX
        if d is not None and self._diameter.value != "px":
            # show the diameter used (estimated with auto); 'number of pixels' keeps it
            _show_decimals(self._diameter_px, round(float(d), 2))
            self._diameter_px.value = round(float(d), 2)
        self._scale_info.value = "last run: " + scale_summary(run.result, run.segmenter.model)

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
        set_or_add(self.viewer, result.labels, kw, "labels")
        run = self._run
        if outputs and run is not None:
            for data, okw, kind in output_layers(run, info["image"], scale=scale):
                set_or_add(self.viewer, data, okw, kind)
        poly_name = f"{info['image']} polygons"
        if self._has_polygons and self._show_polygons.value and run is not None:
            pl = polygon_layer(run, info["image"], scale=scale)
            if pl is not None:
                set_or_add(self.viewer, *pl)
            elif poly_name in self.viewer.layers:
                self.viewer.layers.remove(poly_name)

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
        worker = thread_worker(redecode, run, params)
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
