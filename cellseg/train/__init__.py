"""Training: data sets, augmentation, losses, the training loop and threshold tuning.

Names are resolved lazily (PEP 562) so that ``cellseg.cli`` can build its
``train`` sub-command parser without importing torch.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "fit": "loop",
    "TrainConfig": "loop",
    "TrainingData": "dataset",
    "DataError": "dataset",
    "Sample": "dataset",
    "PatchSampler": "dataset",
    "AugmentConfig": "augment",
    "augment_pair": "augment",
    "tune_thresholds": "tune",
    "tune_params": "tune",
    "TUNABLE": "tune",
    "representation_loss": "losses",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'cellseg.train' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{mod}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
