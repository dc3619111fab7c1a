"""napari plugin for cellseg: segment, train and evaluate widgets, sample data, TIFF reader/writer.

The plugin is a thin layer over the library: the widgets (:mod:`cellseg_napari._widgets`)
call plain functions in :mod:`cellseg_napari._logic`, which call ``cellseg``. Nothing
heavy is imported here: napari reads ``napari.yaml`` at start-up without importing any
plugin code, and torch is imported only when a model is loaded or trained.
"""
from cellseg import __version__

__all__ = ["__version__"]
