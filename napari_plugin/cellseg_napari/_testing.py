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
    """

    def __init__(self, representation, labels: np.ndarray | Sequence[np.ndarray], thresholds: dict | None = None,
                 normalization=(1.0, 99.8)):
        from cellseg.representations import get

        self.representation = get(representation) if isinstance(representation, str) else representation
        frames = [labels] if isinstance(labels, np.ndarray) else list(labels)
        self._targets = [self.representation.encode(np.asarray(f, np.int32)) for f in frames]
        self.config = {"ndim": int(np.ndim(frames[0])), "in_channels": 1,
                       "normalization": {"pmin": float(normalization[0]), "pmax": float(normalization[1])},
                       "thresholds": dict(thresholds or {})}
        self.thresholds = dict(thresholds or {})
        self.receptive_field = 1
        self.div_by = 1
        self.in_channels = 1
        self.n_predict = 0

    def predict(self, image: np.ndarray, augment: bool | None = None) -> dict[str, np.ndarray]:
        # ``augment`` is accepted for the Segmenter's sake: outputs encoded from the labels
        # are what every transform would give back, so there is nothing to average
        t = self._targets[self.n_predict % len(self._targets)]
        if tuple(np.shape(image)[-t[next(iter(t))].ndim + 1:]) != t[next(iter(t))].shape[1:]:
            raise ValueError(f"OracleModel: image shape {np.shape(image)} does not match its labels")
        self.n_predict += 1
        return {k: v.copy() for k, v in t.items()}
