"""cellseg: bottom-up instance segmentation of cells.

The public names are resolved lazily (PEP 562): ``import cellseg`` imports
neither torch nor numba nor numpy; each name imports its module on first use::

    from cellseg import Segmenter, read_image, write_labels

    seg = Segmenter.from_pretrained("nuclei-flows")
    img = read_image("nuclei.tif")
    res = seg.segment(img.data, axes=img.axes)
    write_labels("nuclei_labels.tif", res.labels, axes=res.axes)
"""
import importlib as _importlib

__version__ = "0.1.0"
#: the distribution name (``pip install cellseg-toolkit``); the import name is ``cellseg``
__distribution__ = "cellseg-toolkit"

# public name -> (module, attribute in it)
_EXPORTS: dict[str, tuple[str, str]] = {
    "Segmenter": ("cellseg.segmenter", "Segmenter"),
    "SegmentationResult": ("cellseg.segmenter", "SegmentationResult"),
    "read_image": ("cellseg.io", "read_image"),
    "read_labels": ("cellseg.io", "read_labels"),
    "write_image": ("cellseg.io", "write_image"),
    "write_labels": ("cellseg.io", "write_labels"),
    "load_model": ("cellseg.models", "load_model"),
    "load_pretrained": ("cellseg.models", "load_pretrained"),
    "list_models": ("cellseg.models", "list_models"),
    "matching": ("cellseg.metrics", "matching"),
    "evaluate": ("cellseg.metrics", "evaluate"),
    "get_representation": ("cellseg.representations", "get"),
    "fit": ("cellseg.train", "fit"),
    "TrainConfig": ("cellseg.train", "TrainConfig"),
    "TrainingData": ("cellseg.train", "TrainingData"),
}

# subpackages reachable as attributes of ``cellseg`` without importing them first
_SUBMODULES = ("datasets", "io", "metrics", "models", "representations", "train")

# ``io`` stays out of ``__all__`` so that ``from cellseg import *`` does not shadow the
# standard library's ``io``; ``cellseg.io`` and ``from cellseg import io`` work as usual.
__all__ = sorted([*_EXPORTS, *(m for m in _SUBMODULES if m != "io")])


def __getattr__(name: str):
    if name in _SUBMODULES:
        return _importlib.import_module(f"{__name__}.{name}")
    try:
        module, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(_importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    public = {n for n in globals() if not n.startswith("_")}
    return sorted(public | set(_EXPORTS) | set(_SUBMODULES) | {"__version__"})
