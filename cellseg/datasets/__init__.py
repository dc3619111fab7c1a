"""Datasets: the Cell Tracking Challenge layout, images/ + masks/ folders,
seeded synthetic cells, bundled samples and public dataset downloads.

Names are resolved lazily (PEP 562) so ``import cellseg.datasets`` stays cheap.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "CTCDataset": "ctc",
    "CTCFrame": "ctc",
    "pair_label_folders": "ctc",
    "write_result": "ctc",
    "PairingError": "ctc",
    "DatasetError": "ctc",
    "FolderDataset": "folder",
    "Sample": "folder",
    "synthetic_cells": "synthetic",
    "synthetic_cells_3d": "synthetic",
    "synthetic_stack": "synthetic",
    "Render": "synthetic",
    "sample": "samples",
    "list_samples": "samples",
    "list_datasets": "download",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'cellseg.datasets' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{mod}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
