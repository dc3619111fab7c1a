"""Test helpers (not used by the widgets): models that need no training.

:class:`OracleModel` stands in for a trained network: its ``predict`` returns the
representation's *encoded targets* of known labels (what a perfect network would
output), so segmenting through the plugin must give those labels back, and it
counts its calls, so tests can tell a re-decode from a network run.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["OracleModel"]


class OracleModel:
    """A duck-typed ``CellsegModel`` whose outputs are ``representation.encode(labels)``.

    ``labels`` is one label image, or a sequence of them returned one per
    ``predict`` call in turn (for stacks, which the Segmenter walks frame by
    frame); it must be used without tiling.

    ``in_channels=3`` makes an RGB model (it takes ``(3, Y, X)``). ``object_size``
    (``{"diameter": px, "pixel_size": µm/px or None, "default": "auto"|"off"}``) is
    recorded in ``config["object_size"]``; a model with one is a perfect network at
    every scale: an image resampled by the Segmenter gets the encoded targets of
    ``labels`` mapped onto its grid (:func:`cellseg.scale.resize_labels`), so the
    labels come back on the input's grid. ``inputs`` keeps the shape of every image
    ``predict`` got and ``last_input`` the last image.
    """

    def __init__(self, representation, labels: np.ndarray | Sequence[np.ndarray], thresholds: dict | None = None,
                 normalization=(1.0, 99.8), in_channels: int = 1, object_size: dict | None = None):
        from cellseg.representations import get

        self.representation = get(representation) if isinstance(representation, str) else representation
        frames = [labels] if isinstance(labels, np.ndarray) else list(labels)
        self._labels = [np.asarray(f, np.int32) for f in frames]
        self._targets = [self.representation.encode(f) for f in self._labels]
        self._resized: dict[tuple, dict] = {}
        self.config = {"ndim": int(np.ndim(frames[0])), "in_channels": int(in_channels),
                       "normalization": {"pmin": float(normalization[0]), "pmax": float(normalization[1])},
                       "thresholds": dict(thresholds or {})}
        if object_size is not None:
            self.config["object_size"] = dict(object_size)
        self.thresholds = dict(thresholds or {})
        self.receptive_field = 1
        self.div_by = 1
        self.in_channels = int(in_channels)
        self.n_predict = 0
        self.inputs: list[tuple] = []
        self.last_input: np.ndarray | None = None

    def _target(self, i: int, shape: tuple) -> dict[str, np.ndarray]:
        t = self._targets[i]
        if shape == self._labels[i].shape:
            return t
        if "object_size" not in self.config:
            raise ValueError(f"OracleModel: image of spatial shape {shape} does not match its labels "
                             f"{self._labels[i].shape}")
        key = (i, shape)
        if key not in self._resized:
            from cellseg.scale import resize_labels

            self._resized[key] = self.representation.encode(resize_labels(self._labels[i], shape))
        return self._resized[key]

    def predict(self, image: np.ndarray, augment: bool | None = None) -> dict[str, np.ndarray]:
        # ``augment`` is accepted for the Segmenter's sake: outputs encoded from the labels
        # are what every transform would give back, so there is nothing to average
        nd = self.config["ndim"]
        image = np.asarray(image)
        if self.in_channels > 1 and (image.ndim != nd + 1 or image.shape[0] != self.in_channels):
            raise ValueError(f"OracleModel: an image of shape {image.shape} for a model taking "
                             f"{self.in_channels} channel(s)")
        t = self._target(self.n_predict % len(self._targets), tuple(image.shape[-nd:]))
        self.n_predict += 1
        self.inputs.append(tuple(image.shape))
        self.last_input = image
        return {k: v.copy() for k, v in t.items()}
