"""The dock widgets: Segment, Train and Evaluate (magicgui Containers), one module each,
with what they share in :mod:`.common`.

The widgets move values between their controls, the viewer's layers and the plain
functions of the plugin's modules (:mod:`cellseg_napari._models`, ``_params``, ``_axes``,
``_scale``, ``_run``, ``_layers``, ``_evaluation``, ``_training``); long work (model
loading, segmentation, re-decoding, training) runs in napari thread workers so the viewer
never freezes. torch is imported only when a model is loaded or trained, never at import.
"""
from .evaluate import EvaluateWidget
from .segment import SegmentWidget
from .train import TrainWidget

__all__ = ["SegmentWidget", "TrainWidget", "EvaluateWidget"]
