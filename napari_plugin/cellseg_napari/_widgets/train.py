"""The Train dock widget: trains (or fine-tunes) a model on an image layer with its Labels
layer, or on a folder, in a thread worker; the saved model is registered for the viewer's
Segment widget."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from magicgui.widgets import CheckBox, ComboBox, FileEdit, FloatSpinBox, ProgressBar, PushButton, SpinBox

from .._axes import axes_hint, channels_equal, training_channel_choices
from .._models import CUSTOM_MODEL, FRESH_MODEL, TrainedModels, get_model, model_choices, model_spec
from .._scale import z_step_from_layer
from .._training import DEFAULT_REPRESENTATION, NETWORKS, TrainingJob, training_pairs_from_layers
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
    thread_worker,
    trained_models_of,
)

if TYPE_CHECKING:  # pragma: no cover
    import napari

__all__ = ["TrainWidget"]


#: the Train widget's choices for a layer with a Z axis
_TRAIN_DIMS = {2: "2D model: each plane", 3: "3D model: the volume"}


class TrainWidget(ViewerWidget):
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

    def __init__(self, napari_viewer: "napari.viewer.Viewer", trained_models: TrainedModels | None = None):
        self._set_viewer(napari_viewer)
        #: the models trained in this viewer: a trained model is added, the Segment widget lists it
        self.trained_models = trained_models if trained_models is not None else trained_models_of(napari_viewer)
        from cellseg import representations

        reps = representations.available()
        self._source = ComboBox(label="training data", choices=["layers", "folder"], value="layers")
        self._image = ComboBox(label="image", choices=lambda w: layer_names(self.viewer, "image"))
        self._labels_layer = ComboBox(label="labels", choices=lambda w: layer_names(self.viewer, "labels"))
        # both set in order by set_choices (_on_image_changed, _reset_channel_choices)
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
                               choices=lambda w: [FRESH_MODEL] + [c for c in model_choices(self.trained_models)
                                                                  if c != CUSTOM_MODEL])
        self._rep = ComboBox(label="representation", choices=reps,
                             value=DEFAULT_REPRESENTATION if DEFAULT_REPRESENTATION in reps else reps[0])
        self._network = ComboBox(label="network", choices=list(NETWORKS),
                                 value=next(iter(NETWORKS)))
        self._epochs = SpinBox(label="epochs", value=10, min=1, max=10000)
        self._steps = SpinBox(label="steps / epoch", value=20, min=1, max=100000)
        self._batch = SpinBox(label="batch size", value=4, min=1, max=256)
        self._patch = SpinBox(label="patch size", value=128, min=16, max=2048, step=16)
        self._out = FileEdit(label="save to", mode="w", filter="*.pt",
                             value=str(Path.home() / "cellseg_model.pt"))
        self._button = PushButton(text="Train")
        self._cancel_button = PushButton(text="Cancel", enabled=False)
        self._progress = ProgressBar(label="progress", min=0, max=PROGRESS_MAX, value=0)
        self._status = message_label()
        self._history = message_label()
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
        self._job: TrainingJob | None = None
        self.saved_as: str | None = None
        self.registered_name: str | None = None
        self.events: list[dict] = []
        self.trained_models.changed.connect(self._on_models_changed)
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
        set_choices(self._axes, layer_axes_combo_choices(self._image_layer()), keep=False)
        self._on_axes_changed()

    def _on_axes_changed(self, *_):
        self._reset_channel_choices()
        self._channel.visible = self._source.value == "layers" and "C" in (self._axes.value or "")
        layer, axes = self._image_layer(), self._axes.value or ""
        if layer is not None and "Z" in axes:  # the Z step the layer's file or scale says
            step = z_step_from_layer(scale_without_c(layer, axes), axes, dict(layer.metadata))
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
            shape = layer_data_shape(layer)
            if len(shape) == len(axes):
                data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
                equal = shape[axes.index("C")] in (3, 4) and channels_equal(data, axes.index("C"))
                new = training_channel_choices(shape, axes, rgb=bool(getattr(layer, "rgb", False)),
                                               metadata=dict(layer.metadata), equal=equal)
        old = list(self._channel.choices)
        set_choices(self._channel, new, keep=bool(old) and bool(new) and old[0] == new[0][1])

    def reset_choices(self, *_):
        super().reset_choices()
        set_choices(self._axes, layer_axes_combo_choices(self._image_layer()), keep=True)
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
        if not fresh:  # and starts from the patch size it was trained with (256 for the cells model)
            try:
                config = get_model(model_spec(self._start.value, trained=self.trained_models)).config
            except Exception:  # noqa: BLE001  (an unreadable model is reported when training starts)
                config = {}
            ps = ((config.get("training") or {}).get("train_config") or {}).get("patch_size")
            if isinstance(ps, (int, float)) and self._patch.min <= int(ps) <= self._patch.max:
                self._patch.value = int(ps)
        self._show_dims()

    @property
    def busy(self) -> bool:
        return self._worker is not None

    def make_job(self) -> TrainingJob:
        """The :class:`TrainingJob` for the current settings (raises ValueError on bad input)."""
        kw = {}
        if self._source.value == "layers":
            if self._image.value is None or self._labels_layer.value is None:
                raise ValueError("choose an image layer and a labels layer")
            img_layer = self.viewer.layers[self._image.value]
            lab_layer = self.viewer.layers[self._labels_layer.value]
            axes = self._axes.value
            if not axes:
                raise ValueError(axes_hint(img_layer.name, layer_data_shape(img_layer), self._axes.choices)
                                 if self._axes.choices else "cannot train on this layer: unsupported dimensions")
            channel = self._channel.value if "C" in axes else None
            volume = self._dims_asked() and self._dims.value == 3
            pairs, names, n_in = training_pairs_from_layers(layer_data(img_layer), layer_data(lab_layer),
                                                            axes, channel=channel, volume=volume)
            remember_axes(img_layer, axes)
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
        start_spec = None if start == FRESH_MODEL else model_spec(start, trained=self.trained_models)
        out = Path(self._out.value)
        if out.suffix != ".pt":
            out = out.with_suffix(".pt")
        # an empty field means no unlabelled folder (FileEdit's value would be the current folder)
        unlabeled = str(self._unlabeled.line_edit.value).strip() if self._denoise.value else ""
        return TrainingJob(
            data, out, representation=self._rep.value, start=start_spec, epochs=int(self._epochs.value),
            steps_per_epoch=int(self._steps.value), patch_size=int(self._patch.value),
            batch_size=int(self._batch.value), network=NETWORKS[self._network.value],
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
        self._job, self.events = job, []
        self._start_worker(thread_worker(job.run), self._on_trained, self._button, "preparing…")

    def cancel(self, *_):
        """Stop training after the current step; nothing is saved."""
        if self._job is not None:
            self._job.stop()
            self._status.value = "stopping…"

    def _on_progress(self, ev: dict):
        self.events.append(ev)
        if ev.get("fraction") is not None:
            self._progress.value = int(round(float(ev["fraction"]) * PROGRESS_MAX))
        if ev.get("event") == "epoch":
            self._history.value = ev.get("summary", ev.get("message", ""))
        self._status.value = ev.get("message", "")

    def _on_trained(self, path):
        if path is None:
            self._status.value = "stopped; no model saved"
            return
        self.saved_as = str(path)
        self.registered_name = self.trained_models.add(path)
        self._progress.value = PROGRESS_MAX
        self._status.value = f"saved {Path(path).name}: '{self.registered_name}' is now in the Segment widget"

    def _on_aborted(self):
        self._status.value = "stopped; no model saved"

    def _on_finished(self):
        self._worker = None
        self._job = None
        self._button.enabled = True
        self._cancel_button.enabled = False
