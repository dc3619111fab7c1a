"""napari plugin for cellseg: segment, train and evaluate widgets, sample data, TIFF reader/writer.

The plugin is a thin layer over the library: the widgets (:mod:`cellseg_napari._widgets`)
call plain functions, which call ``cellseg``: model choices (``_models``), decode
parameters (``_params``), axes and channels (``_axes``), scale (``_scale``), running a
segmentation (``_run``), its output layers (``_layers``), evaluation (``_evaluation``),
training (``_training``) and TIFF files (``_io``). Nothing heavy is imported here:
napari reads ``napari.yaml`` at start-up without importing any plugin code, and torch is
imported only when a model is loaded or trained.
"""
from cellseg import __version__

__all__ = ["__version__"]
