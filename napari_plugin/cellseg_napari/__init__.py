"""napari plugin for cellseg."""
