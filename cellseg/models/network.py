"""The model's names under their former home (kept for code that imports them from here).

Each lives in its own module: the config in :mod:`cellseg.models.config`, the torch
module in :mod:`cellseg.models.module`, :class:`CellsegModel` in :mod:`cellseg.models.model`,
the model file in :mod:`cellseg.models.modelfile`, the device in :mod:`cellseg.models.device`
and :func:`load_model` in :mod:`cellseg.models.loading`.
"""
from __future__ import annotations

from .config import FORMAT_VERSION, ModelFormatError, make_config, validate_config
from .device import resolve_device
from .loading import load_model
from .model import CellsegModel
from .modelfile import read_model_file
from .module import Network

__all__ = [
    "FORMAT_VERSION",
    "ModelFormatError",
    "Network",
    "CellsegModel",
    "make_config",
    "validate_config",
    "load_model",
    "read_model_file",
    "resolve_device",
]
