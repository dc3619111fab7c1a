"""cellseg: bottom-up instance segmentation of cells."""
__version__ = "0.1.0"
