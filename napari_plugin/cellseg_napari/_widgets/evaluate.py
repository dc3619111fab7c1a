"""The Evaluate dock widget: a prediction Labels layer against a ground-truth one, as a
table of metrics and an error-map Labels layer."""
from __future__ import annotations

from typing import TYPE_CHECKING

from magicgui.widgets import ComboBox, FloatSpinBox, LineEdit, PushButton, Table

from .._evaluation import ERROR_CATEGORIES, ERROR_COLORS, error_categories, evaluation_rows
from .common import ViewerWidget, layer_data, layer_names, message_label, set_or_add

if TYPE_CHECKING:  # pragma: no cover
    import napari

__all__ = ["EvaluateWidget"]


class EvaluateWidget(ViewerWidget):
    """Compare a prediction Labels layer with a ground-truth Labels layer.

    The table lists AP at the chosen IoU thresholds (TP / (TP + FP + FN) after
    optimal one-to-one matching), precision, recall, F1 and PQ at IoU 0.5, the
    TP/FP/FN counts and CTC SEG. A Labels layer ``<prediction> errors`` marks
    the categories of :data:`cellseg_napari._evaluation.ERROR_CATEGORIES`: correct
    (green), false positive (red), false negative (blue, on GT pixels), merge
    (magenta) and split (orange).

    Not scrollable: the table keeps the height of all its rows, and the (scrollable)
    Segment and Train docks make room for it.
    """

    _scrollable = False

    def __init__(self, napari_viewer: "napari.viewer.Viewer"):
        self._set_viewer(napari_viewer)
        self._pred = ComboBox(label="prediction", choices=lambda w: layer_names(self.viewer, "labels"))
        self._truth = ComboBox(label="ground truth", choices=lambda w: layer_names(self.viewer, "labels"))
        self._thresholds = LineEdit(label="IoU thresholds", value="0.5, 0.6, 0.7, 0.8, 0.9")
        self._error_iou = FloatSpinBox(label="error map IoU", value=0.5, min=0.05, max=1.0, step=0.05)
        self._button = PushButton(text="Evaluate")
        self.table = Table(value={"data": [], "index": [], "columns": ["value"]}, label="")
        self._summary = message_label()
        super().__init__(napari_viewer,
                         widgets=[self._pred, self._truth, self._thresholds, self._error_iou, self._button,
                                  self.table, self._summary],
                         labels=True)
        self._button.changed.connect(self.evaluate)
        self._fit_table(len(self._thresholds_list()) + 8)
        self.reset_choices()
        truth = [n for n in layer_names(self.viewer, "labels") if "truth" in n.lower() or "gt" in n.lower()]
        if truth:
            self._truth.value = truth[0]
            others = [n for n in layer_names(self.viewer, "labels") if n != truth[0]]
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
        y_pred, y_true = layer_data(pred_layer), layer_data(truth_layer)
        axes = truth_layer.metadata.get("axes") or pred_layer.metadata.get("axes")
        try:
            thresholds = self._thresholds_list()
            rows = evaluation_rows(y_true, y_pred, thresholds, axes=axes)
            cat, counts = error_categories(y_true, y_pred, float(self._error_iou.value), axes=axes)
        except ValueError as exc:
            self._summary.value = f"error: {exc}"
            return
        self.rows, self.counts = rows, counts
        self.table.value = {"data": [[_fmt(v)] for _, v in rows], "index": [k for k, _ in rows],
                            "columns": ["value"]}
        self._fit_table(len(rows))
        cmap = DirectLabelColormap(color_dict={None: (0, 0, 0, 0), **ERROR_COLORS})
        kw = {"name": f"{pred_layer.name} errors", "colormap": cmap, "opacity": 0.8,
              "scale": tuple(pred_layer.scale), "metadata": {"categories": dict(ERROR_CATEGORIES)}}
        lyr = set_or_add(self.viewer, cat, kw, "labels")
        lyr.colormap = cmap
        colours = {"correct": "green", "false positive": "red", "false negative": "blue", "merge": "magenta",
                   "split": "orange"}
        self._summary.value = "; ".join(f"{k} ({colours[k]}): {v}" for k, v in counts.items())


def _fmt(v: float) -> str:
    return f"{int(v)}" if float(v).is_integer() and abs(v) > 1 else f"{v:.3f}"
