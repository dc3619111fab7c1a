"""Training: data sets, augmentation, losses, the training loop and threshold tuning.

Names are resolved lazily (PEP 562) so that ``cellseg.cli`` can build its
``train`` sub-command parser without importing torch.
"""
from __future__ import annotations

from cellseg._lazy import lazy_exports

_EXPORTS = {
    "fit": "loop",
    "TrainConfig": "loop",
    "TrainingWarning": "loop",
    "TrainingData": "dataset",
    "DataError": "dataset",
    "TrainingSample": "dataset",
    "PatchSampler": "dataset",
    "UnlabeledData": "denoiseg",
    "load_unlabeled": "denoiseg",
    "AugmentConfig": "augment",
    "augment_pair": "augment",
    "tune_thresholds": "tune",
    "tune_params": "tune",
    "TUNABLE": "tune",
    "representation_loss": "losses",
    "average_models": "average",
    "recompute_batchnorm": "average",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
