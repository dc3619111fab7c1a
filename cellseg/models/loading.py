"""Load a model by what names it: a model file, a bioimage.io package or a bundled model."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .model import CellsegModel
from .registry import list_models, load_pretrained

__all__ = ["load_model"]


def load_model(name_or_path: str | os.PathLike, device: Any = "auto") -> CellsegModel:
    """A model file path, a ``.zip`` bioimage.io package that :func:`cellseg.export.export_bioimageio`
    wrote, or the name of a bundled model (see :func:`cellseg.models.list_models`).

    An argument that looks like a path (a ``PathLike``, or a string with a folder
    separator or a suffix such as ``.pt``) is a file; a bare name is a bundled
    model when one has that name, so a file or folder of that name in the current
    folder does not hide it (write ``./name`` for the file); otherwise an existing
    file of that name is loaded."""
    s = os.fspath(name_or_path)
    p = Path(s)
    if p.suffix.lower() == ".zip":  # a bioimage.io package written by cellseg export
        from cellseg.export import load_bioimageio

        return load_bioimageio(p, device=device)
    seps = {os.sep, "/"} | ({os.altsep} if os.altsep else set())
    if not isinstance(name_or_path, str) or any(c in s for c in seps) or p.suffix:
        return CellsegModel.load(p, device=device)
    if s not in list_models() and p.exists():
        return CellsegModel.load(p, device=device)
    return load_pretrained(s, device=device)
