"""Datasets: the Cell Tracking Challenge layout, images/ + masks/ folders,
seeded synthetic cells, bundled samples and public dataset downloads.

Names are resolved lazily (PEP 562) so ``import cellseg.datasets`` stays cheap.
"""
from __future__ import annotations

from cellseg._lazy import lazy_exports

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


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
