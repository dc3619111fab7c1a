"""What the dock widgets share: their base class (a scrollable Container holding the viewer),
the registry of models trained in a viewer, thread workers, and helpers that read layers,
add or update result layers and set combo choices."""
from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import ComboBox, Container, Label

from .._axes import axes_combo_choices, default_axis_labels, display_axis_labels
from .._models import TrainedModels

if TYPE_CHECKING:  # pragma: no cover
    import napari

__all__ = ["PROGRESS_MAX", "ViewerWidget", "trained_models_of", "thread_worker", "layer_names", "layer_data",
           "layer_data_shape", "scale_without_c", "set_or_add", "message_label", "set_choices", "layer_axis_labels",
           "layer_axes_combo_choices", "remember_axes"]

PROGRESS_MAX = 1000


#: the registry of each open viewer (dropped with the viewer)
_REGISTRIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def trained_models_of(viewer) -> TrainedModels:
    """The models trained in ``viewer``: one registry per viewer, shared by its Segment and
    Train widgets (napari hands each widget its own proxy of the viewer: the viewer itself
    is the key)."""
    real = getattr(viewer, "__wrapped__", viewer)
    reg = _REGISTRIES.get(real)
    if reg is None:
        reg = _REGISTRIES[real] = TrainedModels()
    return reg


def thread_worker(func, *args, **kwargs):
    """A napari worker for ``func(*args, **kwargs)`` (a generator function gives a
    GeneratorWorker, which can be cancelled at each ``yield``), not yet started."""
    from napari.qt.threading import create_worker

    return create_worker(func, *args, _start_thread=False, **kwargs)


def layer_names(viewer, kind: str) -> list[str]:
    import napari.layers

    cls = {"image": napari.layers.Image, "labels": napari.layers.Labels}[kind]
    return [lyr.name for lyr in viewer.layers if isinstance(lyr, cls)]


def layer_data(layer) -> np.ndarray:
    data = layer.data
    if getattr(layer, "multiscale", False):
        data = data[0]
    return np.asarray(data)


def scale_without_c(layer, axes: str) -> tuple | None:
    """The layer's per-axis scale for the axes without C (RGB layers have no scale entry for C)."""
    scale = tuple(float(s) for s in layer.scale)
    if getattr(layer, "rgb", False):
        return scale
    if len(scale) != len(axes):
        return None
    return tuple(s for s, a in zip(scale, axes) if a != "C")


def set_or_add(viewer, data, kwargs: dict, kind: str):
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


def message_label(value: str = "") -> Label:
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


def set_choices(combo: ComboBox, choices, keep: bool = True) -> None:
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


def layer_axis_labels(layer) -> tuple | None:
    """napari's axis labels of the layer's dimensions (an RGB layer: without its colour axis).
    Not the viewer's: those come from whichever layers have labels."""
    return tuple(getattr(layer, "axis_labels", ()) or ()) or None


def layer_axes_combo_choices(layer) -> list:
    if layer is None:
        return []
    try:
        return axes_combo_choices(layer_data_shape(layer), rgb=bool(getattr(layer, "rgb", False)),
                                  metadata=dict(layer.metadata),
                                  axis_labels=layer_axis_labels(layer))
    except ValueError:
        return []


def remember_axes(layer, axes: str) -> None:
    """Record the axes chosen for a layer: in its metadata (Segment and Train read them) and,
    when napari only numbers its axes, as its axis labels (the sliders show T or Z)."""
    layer.metadata["axes"] = axes
    own = tuple(getattr(layer, "axis_labels", ()) or ())
    dims = axes[:-1] if getattr(layer, "rgb", False) else axes
    if own and default_axis_labels(own) and len(own) == len(dims):
        try:
            layer.axis_labels = display_axis_labels(dims)
        except (AttributeError, ValueError, TypeError):  # napari without settable axis labels
            pass


def layer_data_shape(layer) -> tuple:
    data = layer.data
    if getattr(layer, "multiscale", False):
        data = data[0]
    return tuple(data.shape)


class ViewerWidget(Container):
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

    def _start_worker(self, worker, on_returned, button, status: str) -> None:
        """Run ``worker`` for a widget with a progress bar, a status line and a cancel button:
        its progress, result, error, cancellation and end go to the widget's handlers
        (``_on_progress``, ``on_returned``, ``_on_error``, ``_on_aborted``, ``_on_finished``),
        and ``button`` stays disabled until it ends."""
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(on_returned)
        worker.errored.connect(self._on_error)
        worker.aborted.connect(self._on_aborted)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        button.enabled = False
        self._cancel_button.enabled = True
        self._progress.value = 0
        self._status.value = status
        worker.start()

    def _on_error(self, exc):
        self._status.value = f"error: {exc}"
