"""Reader and writer contributions: TIFF files through :mod:`cellseg.io`."""
from __future__ import annotations

from pathlib import Path

from ._logic import read_layers, write_labels_layer

__all__ = ["get_reader", "write_labels"]

_SUFFIXES = (".tif", ".tiff")


def get_reader(path):
    """npe2 reader: a function for ``.tif``/``.tiff`` paths (or lists of them), else None."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if not paths or not all(isinstance(p, (str, Path)) and Path(p).suffix.lower() in _SUFFIXES for p in paths):
        return None
    return _read_many


def _read_many(path):
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    out = []
    for p in paths:
        out.extend(read_layers(p))
    return out


def write_labels(path: str, data, meta: dict) -> list[str]:
    """npe2 single-layer writer: a Labels layer as a compressed TIFF (``cellseg.io.write_labels``)."""
    return write_labels_layer(path, data, meta)
